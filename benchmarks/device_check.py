"""Everything a GPU machine must show, in one call (< 8 min on a GPU), printed as one table.

* parity of every public case (``tests/data/cases``) with the networks on the device at fp32, to
  the test suite's tolerances (``tests/_parity_coeff.py``, ``tests/_parity_render.py``); the numpy
  stages (mel features, crop geometry) are device-independent and are checked on the CPU;
* fp16 (and bf16) frames against fp32 frames of the first 256 px render case, in 0..1 units and in
  uint8 levels;
* renderer speed: s/frame and fps at 256 and 512 px, batch 1/4/16, fp32 and fp16, with model load
  time (``--precisions``);
* renderer variants at 256 px (``--variant-precisions`` fp32/fp16/bf16, ``--layouts`` NCHW and
  channels-last): frames against fp32 in uint8 levels and fps at batch 1/4/16, then, for fp16 at
  batch 16 in the faster layout, ``torch.compile`` of the decoder (``--compile-modes``: ``default``,
  ``reduce-overhead`` = CUDA graphs through inductor) and the whole per-batch render captured as
  one CUDA graph (``cudagraph``), with their compile/capture times;
* peak device memory streaming 250 vs 2500 frames through ``render_video.render_to_mp4`` (the
  path of the CLI and of the Render to Video node), with its end-to-end fps and the growth;
* model load time.

Stand-in weights (deterministic, ``sadtalker_models/stand_in_weights.py``) are written to
``--weights`` first; parity cases use the weights of their ``weights_seed``.

    python -m benchmarks.device_check                       # on the GPU machine
    python -m benchmarks.device_check --device cpu --sizes 256 --batches 1 --precisions fp32 \\
        --frames 1 --vram-frames 1 2 --stages audio_features audio_to_coeff     # tiny, for a CPU

Exit status 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
CASES = TESTS / "data" / "cases"
MEDIA = TESTS / "data" / "media"
CHECKPOINT = "SadTalker_V0.0.2_{size}.safetensors"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

logger = logging.getLogger("device_check")


@dataclass
class Row:
    section: str
    item: str
    value: str
    ok: bool | None = None   # None: a measurement, not a pass/fail check


def _test_helper(name: str):
    """One of the test suite's parity helper modules (tests/_parity_*.py), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def weights_for(root: Path, seed: int, sizes: tuple[int, ...] = (256,)) -> Path:
    from sadtalker_models.stand_in_weights import write_stand_in_files

    return write_stand_in_files(root / f"seed{seed}", seed, sizes=sizes)


# ----------------------------------------------------------------------------- parity


def _case_meta(path: Path) -> dict:
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (torch.as_tensor(a).detach().float().cpu() - b.float()).abs().max().item()


def _close(name: str, got, want: torch.Tensor, atol: float, rtol: float) -> float:
    got = torch.as_tensor(got).detach().float().cpu()
    if got.shape != want.shape:
        raise AssertionError(f"{name} shape {tuple(got.shape)} != {tuple(want.shape)}")
    if not torch.allclose(got, want.float(), atol=atol, rtol=rtol):
        raise AssertionError(f"{name} max abs error {_max_err(got, want):.3g}")
    return _max_err(got, want)


def render_case_frames(t: dict, nets, mapping, device: torch.device, dtype: torch.dtype = torch.float32):
    """Keypoints and frames of one ``facerender_*`` case with the renderer on ``device``."""
    from sadtalker_models.render_data import RenderInputs
    from sadtalker_models.renderer import FaceRenderer

    nets.kp_detector.to(device)
    mapping.to(device)
    nets.generator.to(device=device, dtype=dtype)
    renderer = FaceRenderer(nets.kp_detector, nets.generator, mapping).optimize(fuse=True)
    cams = {k: (t[f"{k}_c_seq"].to(device) if f"{k}_c_seq" in t else None) for k in ("yaw", "pitch", "roll")}
    inputs = RenderInputs(source_semantics=t["source_semantics"].to(device),
                          target_semantics=t["target_semantics"].to(device), **cams)
    with torch.inference_mode():
        state = renderer.encode_source(t["source_image"].to(device), inputs.source_semantics)
        kp_driving = renderer.driving_keypoints(state, inputs.target_semantics, inputs.yaw, inputs.pitch, inputs.roll)
        frames = torch.cat(list(renderer.iter_frames(state, inputs, batch_size=2, out_device="cpu")))
    nets.generator.to(dtype=torch.float32)
    return state, kp_driving, frames


def check_case(path: Path, device: torch.device, weights_root: Path) -> str:
    """Run one case with the networks on ``device``; returns a short verdict or raises AssertionError."""
    from safetensors.torch import load_file

    from sadtalker_models import audio, coefficients, face3dmm
    from sadtalker_models.checkpoints import load_mapping, load_sadtalker, mapping_file_for

    if path.name == "face_crop.json":
        _test_helper("_parity_face").check_face_crop(path)
        return "pass (geometry, CPU)"
    meta = _case_meta(path)
    stage = meta.get("stage", "")
    coeff = _test_helper("_parity_coeff")
    t = load_file(str(path))
    if stage == "audio_features":
        num_frames = int(meta["num_frames"])
        mel = audio.mel_spectrogram(audio.crop_or_pad(t["wav"].numpy(), num_frames * audio.SAMPLES_PER_FRAME))
        err = _max_err(torch.from_numpy(audio.mel_windows(mel, num_frames)), t["indiv_mels"])
        if err > coeff.MEL_MAX_ABS:
            raise AssertionError(f"indiv_mels max abs error {err:.3g}")
        return f"pass (numpy, CPU; max err {err:.2g})"
    folder = weights_for(weights_root, int(meta.get("weights_seed", 0)))
    nets = load_sadtalker(folder / CHECKPOINT.format(size=256), size=256)
    if stage == "extract_3dmm":
        nets.recon.to(device)
        with torch.inference_mode():
            full, c3 = face3dmm.extract_coeff_3dmm(nets.recon, t["image"].numpy(), t["lm68"].numpy())
        err = max(_close("full_coeff", full, t["full_coeff"], coeff.ATOL, coeff.RTOL),
                  _close("coeff_3dmm", c3, t["coeff_3dmm"], coeff.ATOL, coeff.RTOL))
        return f"pass (max err {err:.2g})"
    if stage == "audio_to_coeff":
        nets.expnet.to(device)
        nets.posevae.to(device)
        result = coefficients.audio_to_coefficients(
            nets.expnet, nets.posevae, t["indiv_mels"], t["ref"][:, 0], int(t["pose_style"].reshape(-1)[0]),
            blink_ratio=t["blink_ratio"], z=t["z"])
        err = max(_close(n, getattr(result, n), t[n], coeff.ATOL, coeff.RTOL)
                  for n in ("exp", "pose_raw", "pose_smooth", "coeffs"))
        return f"pass (max err {err:.2g})"
    if stage.startswith("facerender"):
        render = _test_helper("_parity_render")
        mapping = load_mapping(folder / mapping_file_for(meta["preprocess"]))
        state, kp_driving, frames = render_case_frames(t, nets, mapping, device)
        for name, got in (("kp_canonical", state.kp_canonical), ("kp_source", state.kp_source),
                          ("kp_driving", kp_driving)):
            _close(name, got, t[name], render.KP_ATOL, render.KP_RTOL)
        render.check_frames(path.stem, meta["preprocess"], frames, t["frames"])
        err = (frames - t["frames"]).abs()
        return f"pass (frames max {err.max().item():.2g}, mean {err.mean().item():.2g})"
    raise AssertionError(f"unknown parity stage {stage!r}")


def parity_rows(device: torch.device, weights_root: Path, cases: Path, stages: list[str] | None) -> list[Row]:
    rows = []
    paths = sorted(cases.glob("*.safetensors")) + sorted(cases.glob("face_crop.json"))
    if not paths:
        return [Row("parity fp32", str(cases), "no cases found", False)]
    for path in paths:
        stage = "face_crop" if path.suffix == ".json" else _case_meta(path).get("stage", "")
        if stages and not any(stage.startswith(s) for s in stages):
            continue
        try:
            rows.append(Row("parity fp32", path.name, check_case(path, device, weights_root), True))
        except AssertionError as err:
            rows.append(Row("parity fp32", path.name, f"FAIL: {err}", False))
        except Exception as err:  # noqa: BLE001 - a crash is a failed check, reported in the table
            logger.debug("%s", traceback.format_exc())
            rows.append(Row("parity fp32", path.name, f"ERROR {type(err).__name__}: {err}", False))
    return rows


def reduced_precision_rows(device: torch.device, weights_root: Path, cases: Path, precisions: list[str]) -> list[Row]:
    """Frames of the first 256 px render case in each reduced precision against fp32 on the same device."""
    from safetensors.torch import load_file

    from sadtalker_models.checkpoints import load_mapping, load_sadtalker, mapping_file_for

    low = [p for p in precisions if p != "fp32"]
    if not low:
        return []
    for path in sorted(cases.glob("facerender_*.safetensors")):
        meta = _case_meta(path)
        if int(meta.get("size", 0)) == 256:
            break
    else:
        return [Row("fp16 vs fp32", "-", "no 256 px render case", None)]
    t = load_file(str(path))
    folder = weights_for(weights_root, int(meta.get("weights_seed", 0)))
    nets = load_sadtalker(folder / CHECKPOINT.format(size=256), size=256)
    mapping = load_mapping(folder / mapping_file_for(meta["preprocess"]))
    _, _, ref = render_case_frames(t, nets, mapping, device)
    rows = []
    for name in low:
        _, _, frames = render_case_frames(t, nets, mapping, device, DTYPES[name])
        err = (frames.float() - ref).abs()
        mean_l, max_l = uint8_levels(frames.float(), ref)
        rows.append(Row(f"{name} vs fp32", path.stem,
                        f"max {err.max().item():.3g}, mean {err.mean().item():.3g} (0..1 frames); "
                        f"uint8 levels mean {mean_l:.2f}, max {max_l:.0f}", None))
    return rows


def uint8_levels(frames: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean and max absolute difference of two 0..1 frame sets in uint8 levels (x * 255, rounded)."""
    diff = ((frames.float() * 255).round() - (reference.float() * 255).round()).abs()
    return diff.mean().item(), diff.max().item()


# ----------------------------------------------------------------------------- speed and memory


def speed_rows(device: torch.device, weights_root: Path, sizes: list[int], batches: list[int],
               precisions: list[str], frames: int, compile_decoder: bool) -> list[Row]:
    from sadtalker_models import pipeline

    folder = weights_for(weights_root, 0, tuple(sorted(set(sizes) | {256})))
    rows = []
    g = torch.Generator().manual_seed(0)
    for size in sizes:
        for precision in precisions:
            start = time.perf_counter()
            models = pipeline.load_models(folder / CHECKPOINT.format(size=size), device=device, precision=precision,
                                          mapping_dir=folder, cache=None)
            renderer = models.renderer("crop")
            sync(device)
            rows.append(Row("model load", f"{size} px {precision}", f"{time.perf_counter() - start:.2f} s", None))
            if compile_decoder:
                renderer.optimize(fuse=True, compile=True)
            source = torch.rand(1, 3, size, size, generator=g)
            semantics = torch.randn(1, 70, 27, generator=g) * 0.1
            with torch.inference_mode():
                state = renderer.encode_source(source.to(device), semantics.to(device))
                for batch in batches:
                    n = max(frames, batch)
                    target = (torch.randn(n + batch, 70, 27, generator=g) * 0.1).to(device)
                    for _ in renderer.iter_frames(state, target[:batch], batch_size=batch):
                        pass   # warm-up (and compile) at this batch shape
                    sync(device)
                    start = time.perf_counter()
                    for _ in renderer.iter_frames(state, target[batch:], batch_size=batch):
                        pass
                    sync(device)
                    per = (time.perf_counter() - start) / n
                    rows.append(Row("render speed", f"{size} px {precision} batch {batch}",
                                    f"{per:.4f} s/frame, {1 / per:.2f} fps", None))
            del models, renderer, state
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def _graphed_render(renderer, state, batch: int, device: torch.device):
    """The whole per-batch render (dense motion, warp, decoder) captured as one CUDA graph.

    Returns `render(kp_driving (batch, 15, 3)) -> frames` (the graph's static output: copy it before
    the next call) and the capture time in seconds.
    """
    static_kp = torch.zeros(batch, 15, 3, device=device)
    start = time.perf_counter()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the capture (kernel selection, cached sigmas)
            renderer.render_keypoints(state, static_kp)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = renderer.render_keypoints(state, static_kp)
    sync(device)

    def render(kp: torch.Tensor) -> torch.Tensor:
        static_kp.copy_(kp)
        graph.replay()
        return static_out

    return render, time.perf_counter() - start


def _time_batches(render, kp_driving: torch.Tensor, batch: int, device: torch.device) -> float:
    """Seconds per frame of `render(kp_batch)` over every full batch of `kp_driving` (synchronised once)."""
    n = kp_driving.shape[0] // batch * batch
    render(kp_driving[:batch])  # warm-up at this shape
    sync(device)
    start = time.perf_counter()
    for i in range(0, n, batch):
        render(kp_driving[i:i + batch])
    sync(device)
    return (time.perf_counter() - start) / n


def variant_rows(device: torch.device, weights_root: Path, precisions: list[str], layouts: list[str],
                 batches: list[int], frames: int, compile_modes: list[str], compile_batch: int,
                 size: int = 256) -> list[Row]:
    """Renderer variants at `size`: precision x layout x batch (eager), then compiled / graphed fp16.

    Times `FaceRenderer.render_keypoints` per batch (dense motion, warp, decoder; the frames stay on
    the device), so the variants compare the renderer itself; frames are compared with the fp32
    NCHW ones (uint8 levels).
    """
    from sadtalker_models import pipeline

    folder = weights_for(weights_root, 0, tuple(sorted({size, 256})))
    g = torch.Generator().manual_seed(2)
    source = torch.rand(1, 3, size, size, generator=g)
    semantics = torch.randn(1, 70, 27, generator=g) * 0.1
    target = torch.randn(max(frames, max(batches + [compile_batch])) + 1, 70, 27, generator=g) * 0.1
    rows: list[Row] = []
    reference: torch.Tensor | None = None
    fastest: dict[str, tuple[float, str]] = {}   # precision -> (s/frame at the compile batch, layout)
    for precision in precisions:
        models = pipeline.load_models(folder / CHECKPOINT.format(size=size), device=device, precision=precision,
                                      mapping_dir=folder, cache=None)
        if models.dtype != DTYPES[precision]:
            rows.append(Row("variants", f"{size} px {precision}", f"not run: {precision} fell back to {models.dtype}",
                            None))
            continue
        renderer = models.renderer("crop")
        for layout in layouts:
            renderer.optimize(fuse=True, channels_last=layout == "cl")
            with torch.inference_mode():
                state = renderer.encode_source(source.to(device), semantics.to(device))
                kp = renderer.driving_keypoints(state, target.to(device))
                frames_out = torch.cat([renderer.render_keypoints(state, kp[i:i + 4]).cpu()
                                        for i in range(0, min(8, kp.shape[0]), 4)])
                if reference is None and precision == "fp32":
                    reference = frames_out
                err = ""
                if reference is not None:
                    mean_l, max_l = uint8_levels(frames_out, reference[:frames_out.shape[0]])
                    err = f"; vs fp32 nchw: uint8 levels mean {mean_l:.2f}, max {max_l:.0f}"
                for batch in batches:
                    per = _time_batches(lambda k: renderer.render_keypoints(state, k), kp, batch, device)
                    rows.append(Row("variants", f"{size} px {precision} {layout} batch {batch}",
                                    f"{per:.4f} s/frame, {1 / per:.1f} fps{err if batch == batches[0] else ''}", None))
                    if batch == compile_batch and per < fastest.get(precision, (math.inf, ""))[0]:
                        fastest[precision] = (per, layout)
        if precision == "fp16" and device.type == "cuda" and compile_modes:
            per_eager, layout = fastest.get(precision, (math.inf, layouts[0]))
            renderer.optimize(fuse=True, channels_last=layout == "cl")
            with torch.inference_mode():
                state = renderer.encode_source(source.to(device), semantics.to(device))
                kp = renderer.driving_keypoints(state, target.to(device))
                for mode in compile_modes:
                    label = f"{size} px fp16 {layout} batch {compile_batch} {mode}"
                    try:
                        if mode == "cudagraph":
                            render, setup = _graphed_render(renderer, state, compile_batch, device)
                        else:
                            renderer.optimize(fuse=True, channels_last=layout == "cl",
                                              compile=True if mode == "default" else mode)
                            start = time.perf_counter()
                            renderer.render_keypoints(state, kp[:compile_batch])
                            sync(device)
                            setup = time.perf_counter() - start

                            def render(k: torch.Tensor) -> torch.Tensor:
                                return renderer.render_keypoints(state, k)
                        per = _time_batches(render, kp, compile_batch, device)
                        rows.append(Row("variants", label, f"{per:.4f} s/frame, {1 / per:.1f} fps "
                                        f"({per_eager / per:.2f}x eager; first call {setup:.1f} s)", None))
                    except Exception as err:  # noqa: BLE001 - one failed variant is a row, not the end
                        logger.debug("%s", traceback.format_exc())
                        rows.append(Row("variants", label, f"ERROR {type(err).__name__}: {err}", False))
                    finally:
                        renderer.optimize(fuse=True, channels_last=layout == "cl")
        models = renderer = None  # free the networks before the next precision
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def stream_rows(device: torch.device, weights_root: Path, frame_counts: list[int], precision: str,
                batch_size: int) -> list[Row]:
    """Peak device memory (CUDA) or peak RSS (CPU) streaming N frames into an mp4 with the audio."""
    import cv2

    from sadtalker_models import pipeline
    from sadtalker_models.render_video import render_to_mp4

    folder = weights_for(weights_root, 0)
    models = pipeline.load_models(folder / CHECKPOINT.format(size=256), device=device, precision=precision,
                                  mapping_dir=folder, cache=None)
    image = cv2.cvtColor(cv2.imread(str(MEDIA / "art_0.png")), cv2.COLOR_BGR2RGB)
    face = pipeline.prepare_face(models, image, "crop", 256, landmark_backend="dlib")
    g = torch.Generator().manual_seed(1)
    rows = []
    peaks: list[int | None] = []
    with tempfile.TemporaryDirectory(prefix="device_check_") as work:
        for n in frame_counts:
            coeffs = pipeline.Coefficients(coeffs=torch.randn(n, 70, generator=g) * 0.1,
                                           audio=pipeline.as_audio(np.zeros((1, n * 640), np.float32), 16000))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            result = render_to_mp4(models, face, coeffs, Path(work) / f"stream_{n}.mp4", batch_size=batch_size,
                                   threaded=device.type == "cuda")
            seconds = time.perf_counter() - start
            if device.type == "cuda":
                peak = f"peak VRAM {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
            else:
                peak = f"peak RSS {_peak_rss_mib():.0f} MiB"
            rows.append(Row("streamed mp4", f"{n} frames, 256 px {precision}, batch {batch_size}",
                            f"{peak}, {result.frames / seconds:.2f} fps end to end", result.frames == n))
            peaks.append(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
    if len(peaks) >= 2 and peaks[0]:
        growth = peaks[-1] / peaks[0] - 1
        rows.append(Row("streamed mp4", f"peak VRAM, {frame_counts[-1]} vs {frame_counts[0]} frames",
                        f"{growth * 100:+.1f} % (flat: within 10 %)", growth <= 0.10))
    return rows


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- table


def format_table(rows: list[Row], device: str) -> str:
    lines = [f"device check on {device}", "", "| section | item | result |", "|---|---|---|"]
    for row in rows:
        mark = "" if row.ok is None else (" ✓" if row.ok else " ✗")
        lines.append(f"| {row.section} | {row.item} | {row.value}{mark} |")
    return "\n".join(lines)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"{device.type}, torch {torch.__version__}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    p.add_argument("--cases", type=Path, default=CASES, help="parity case folder (default: tests/data/cases)")
    p.add_argument("--stages", nargs="*", help="only parity cases whose stage starts with one of these")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=(256, 512))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], choices=tuple(DTYPES))
    p.add_argument("--frames", type=int, default=48, help="timed frames per speed configuration")
    p.add_argument("--vram-frames", type=int, nargs="+", default=[250, 2500])
    p.add_argument("--stream-precision", default=None, choices=tuple(DTYPES),
                   help="precision of the streamed run (default: fp16 on CUDA, fp32 elsewhere)")
    p.add_argument("--stream-batch", type=int, default=16)
    p.add_argument("--compile", action="store_true", help="also torch.compile the SPADE decoder for the speed runs")
    p.add_argument("--variant-precisions", nargs="+", default=None, choices=tuple(DTYPES),
                   help="precisions of the renderer-variant rows at 256 px (default: fp32 fp16 bf16 on CUDA; "
                        "on a CPU they run only when named: benchmarks/bench_render.py times the CPU renderer)")
    p.add_argument("--layouts", nargs="+", default=["nchw", "cl"], choices=("nchw", "cl"),
                   help="weight/activation layouts of the renderer-variant rows (cl = channels-last)")
    p.add_argument("--compile-modes", nargs="*", default=["default", "reduce-overhead", "cudagraph"],
                   choices=("default", "reduce-overhead", "max-autotune", "cudagraph"),
                   help="fp16 variants on CUDA: torch.compile modes of the decoder, and 'cudagraph' (the whole "
                        "per-batch render captured as one CUDA graph); none to skip")
    p.add_argument("--compile-batch", type=int, default=16, help="batch size of the compiled/graphed rows")
    p.add_argument("--weights", type=Path, default=None, help="stand-in weights folder (default: a temporary one)")
    p.add_argument("--skip", nargs="*", default=[], choices=("parity", "precision", "speed", "variants", "stream"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from sadtalker_models.pipeline import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed batch shapes: let cuDNN pick its fastest kernels
    stream_precision = args.stream_precision or ("fp16" if device.type == "cuda" else "fp32")
    variant_precisions = args.variant_precisions or (["fp32", "fp16", "bf16"] if device.type == "cuda" else [])
    rows: list[Row] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device_check_weights_") as tmp:
        weights_root = args.weights or Path(tmp)
        steps = (("parity", lambda: parity_rows(device, weights_root, args.cases, args.stages)),
                 ("precision", lambda: reduced_precision_rows(device, weights_root, args.cases, args.precisions)),
                 ("speed", lambda: speed_rows(device, weights_root, args.sizes, args.batches, args.precisions,
                                              args.frames, args.compile)),
                 ("variants", lambda: variant_rows(device, weights_root, variant_precisions, args.layouts,
                                                   args.batches, args.frames, args.compile_modes,
                                                   args.compile_batch) if variant_precisions else
                  [Row("variants", "-", "not run on a CPU unless --variant-precisions is given "
                                        "(benchmarks/bench_render.py times the CPU renderer)", None)]),
                 ("stream", lambda: stream_rows(device, weights_root, args.vram_frames, stream_precision,
                                                args.stream_batch)))
        for name, step in steps:
            if name in args.skip:
                continue
            t0 = time.perf_counter()
            try:
                rows.extend(step())
            except Exception as err:  # noqa: BLE001 - keep the rest of the table
                logger.debug("%s", traceback.format_exc())
                rows.append(Row(name, "-", f"ERROR {type(err).__name__}: {err}", False))
            logger.info("%s took %.1f s", name, time.perf_counter() - t0)
    rows.append(Row("total", "wall time", f"{time.perf_counter() - started:.0f} s", None))
    print(format_table(rows, describe(device)))
    sys.stdout.flush()
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
