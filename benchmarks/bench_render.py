"""Renderer benchmark (a script, not a test).

Renders frames with deterministic stand-in weights (``sadtalker_models/stand_in_weights.py``) and
prints, per size and configuration, frames/s, peak host RSS, peak device memory and the max/mean
absolute difference from our float32 output:

* ``baseline``: behaves like the original frame loop (§11.3): batch 2, the unfused networks, the
  source image re-encoded by every generator call, every frame kept on the device and stacked at
  the end;
* ``ours fp32``: `FaceRenderer` with fused weights, the source encoded once, batches streamed to
  the CPU;
* reduced precision: ``ours bf16`` on the CPU; ``ours fp16`` and ``ours bf16`` on CUDA.

It also measures memory flatness (peak memory streaming a long clip vs a short one to a sink that
discards the frames) and, when those modules import, the audio -> coefficients and face stages.

    .venv/bin/python -m benchmarks.bench_render --device cpu --frames 4 --sizes 256 512

(run from the repository root so that `sadtalker_models` is importable).

Timings on a shared machine are noisy: ``--repeats`` keeps the best run of each configuration.
"""
from __future__ import annotations

import argparse
import copy
import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from sadtalker_models.networks.keypoint_detector import KPDetector
from sadtalker_models.networks.mapping_net import MappingNet
from sadtalker_models.networks.spade_generator import OcclusionAwareSPADEGenerator
from sadtalker_models.precision import cpu_runs_natively
from sadtalker_models.renderer import FaceRenderer, transform_keypoints
from sadtalker_models.stand_in_weights import SADTALKER_MANIFEST, read_manifest, stand_in_state_dict

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"  # the parity cases and media kept as test data

TARGETS = {
    "cpu_fp32_speedup": 1.1,
    "cpu_bf16_speedup": 1.8,
    "cuda_fp16_fps_256": 60.0,
    "memory_growth": 0.10,
}


# ----------------------------------------------------------------------------- weights and inputs
def stand_in_state(prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """Stand-in tensors of one safetensors prefix, with the prefix stripped."""
    manifest = read_manifest(SADTALKER_MANIFEST)
    wanted = {k: v for k, v in manifest.items() if k.startswith(prefix + ".")}
    state = stand_in_state_dict(wanted, seed)
    return {k[len(prefix) + 1:]: v for k, v in state.items()}


def build(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    module.load_state_dict(state, strict=True)
    return module.eval().requires_grad_(False)


@dataclass
class Nets:
    kp: KPDetector
    gen: OcclusionAwareSPADEGenerator
    mapping: MappingNet


def make_renderer_nets(seed: int) -> Nets:
    mapping_state = stand_in_state_dict(read_manifest("mapping_00229-model.pth.tar"), seed)
    return Nets(
        kp=build(KPDetector(), stand_in_state("kp_extractor", seed)),
        gen=build(OcclusionAwareSPADEGenerator(), stand_in_state("generator", seed)),
        mapping=build(MappingNet(70), mapping_state),
    )


def make_inputs(size: int, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source image `(1, 3, S, S)`, source windows `(1, 70, 27)`, target windows `(T, 70, 27)`."""
    case = DATA / "cases" / "facerender_crop256.safetensors"
    if case.exists():
        from safetensors.torch import load_file

        t = load_file(str(case))
        image = t["source_image"]
        if image.shape[-1] != size:
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        src, tgt = t["source_semantics"], t["target_semantics"]
    else:
        g = torch.Generator().manual_seed(0)
        image = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bilinear",
                              align_corners=False)
        src = (0.3 * torch.randn(1, 70, 1, generator=g)).repeat(1, 1, 27)
        tgt = src + 0.2 * torch.randn(5, 70, 27, generator=g)
    reps = math.ceil(frames / tgt.shape[0])
    return image, src, tgt.repeat(reps, 1, 1)[:frames].contiguous()


# ----------------------------------------------------------------------------- measurement
def rss_kib(field_name: str = "VmRSS") -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclass
class Result:
    label: str
    size: int
    frames: int
    seconds: float = math.inf
    peak_rss_mib: float = 0.0
    rss_growth_mib: float = 0.0
    peak_device_mib: float | None = None
    max_err: float | None = None
    mean_err: float | None = None
    output: torch.Tensor | None = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def measure(label: str, size: int, frames: int, device: torch.device, repeats: int,
            run: Callable[[], torch.Tensor | None]) -> Result:
    """Best-of-`repeats` wall time of `run()` with peak host RSS and peak device memory."""
    res = Result(label, size, frames)
    for _ in range(repeats):
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        reset_peak_rss()
        before = rss_kib()
        t0 = time.perf_counter()
        out = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        peak = rss_kib("VmHWM")
        if elapsed < res.seconds:
            res.seconds = elapsed
        res.peak_rss_mib = max(res.peak_rss_mib, peak / 1024)
        res.rss_growth_mib = max(res.rss_growth_mib, (peak - before) / 1024)
        if device.type == "cuda":
            res.peak_device_mib = max(res.peak_device_mib or 0.0, torch.cuda.max_memory_allocated(device) / 2**20)
        if out is not None:
            res.output = out.detach().float().cpu()
        del out
    return res


# ----------------------------------------------------------------------------- configurations
def baseline_render(nets: Nets, image: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor,
                    batch: int = 2) -> torch.Tensor:
    """The original loop (§11.3): (B, L) layout, source re-encoded per call, frames kept on the device."""
    with torch.inference_mode():
        kp_canonical = nets.kp(image)
        kp_source = transform_keypoints(kp_canonical, nets.mapping(src))
        total = tgt.shape[0]
        length = math.ceil(total / batch)
        padded = torch.cat([tgt, tgt[-1:].expand(batch * length - total, -1, -1)]).view(batch, length, *tgt.shape[1:])
        images = image.repeat(batch, 1, 1, 1)
        kc, ks = kp_canonical.repeat(batch, 1, 1), kp_source.repeat(batch, 1, 1)
        outs = []
        for step in range(length):
            kd = transform_keypoints(kc, nets.mapping(padded[:, step]))
            outs.append(nets.gen(images, kd, ks))
        frames = torch.stack(outs, dim=1).reshape(batch * length, *outs[0].shape[1:])[:total]
        return frames


def ours_render(renderer: FaceRenderer, image: torch.Tensor, src: torch.Tensor, tgt: torch.Tensor,
                batch: int, sink: bool = False) -> torch.Tensor | None:
    state = renderer.encode_source(image, src)
    if sink:
        for _ in renderer.iter_frames(state, tgt, batch_size=batch, out_device="cpu"):
            pass
        return None
    return torch.cat(list(renderer.iter_frames(state, tgt, batch_size=batch, out_device="cpu")))


def low_precision_nets(nets: Nets, dtype: torch.dtype) -> Nets:
    """Renderer networks in `dtype` (the MappingNet stays float32: it is cheap and sets the head pose)."""
    return Nets(copy.deepcopy(nets.kp).to(dtype), copy.deepcopy(nets.gen).to(dtype), nets.mapping)


# ----------------------------------------------------------------------------- other stages
def stage_net(prefix: str, seed: int, device: torch.device) -> torch.nn.Module:
    """A network of the checkpoint's table (`checkpoints.SUBMODELS`) with stand-in weights."""
    from sadtalker_models.checkpoints import SUBMODELS

    return build(SUBMODELS[prefix](), stand_in_state(prefix, seed)).to(device)


def time_other_stages(seed: int, device: torch.device) -> list[str]:
    """Audio -> coefficients and face (3DMM) stages, skipped when their modules are missing."""
    lines = []
    try:
        import wave

        import numpy as np

        from sadtalker_models.audio import audio_to_mel_windows
        from sadtalker_models.coefficients import audio_to_coefficients

        wav_path = DATA / "media" / "speech_en_16k_3s.wav"
        with wave.open(str(wav_path)) as fh:
            rate = fh.getframerate()
            pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
            pcm = pcm.reshape(-1, fh.getnchannels()).T
        expnet, posevae = stage_net("audio2exp", seed, device), stage_net("audio2pose", seed, device)
        t0 = time.perf_counter()
        mels = audio_to_mel_windows(pcm, rate)
        t1 = time.perf_counter()
        with torch.inference_mode():
            result = audio_to_coefficients(expnet, posevae, mels[None, :, None], torch.zeros(1, 73), generator=0)
        t2 = time.perf_counter()
        frames = result.coeffs.shape[0]
        lines.append(f"audio features   {frames} frames ({frames / 25:.1f} s of audio): {t1 - t0:.3f} s")
        lines.append(f"audio -> coeffs  {frames} frames: {t2 - t1:.3f} s ({frames / (t2 - t1):.1f} frames/s)")
        del expnet, posevae
    except Exception as exc:  # noqa: BLE001 - a missing or broken stage is reported, not fatal
        lines.append(f"audio -> coeffs  skipped ({type(exc).__name__}: {exc})")
    try:
        from safetensors.torch import load_file

        from sadtalker_models.face3dmm import extract_coeff_3dmm

        recon = stage_net("face_3drecon", seed, device)
        case = load_file(str(DATA / "cases" / "extract_3dmm.safetensors"))
        image, lm68 = case["image"].numpy(), case["lm68"].numpy()
        with torch.inference_mode():
            extract_coeff_3dmm(recon, image, lm68)  # warm-up
            t0 = time.perf_counter()
            extract_coeff_3dmm(recon, image, lm68)
            t1 = time.perf_counter()
        lines.append(f"face 3DMM        1 image (align + ReconNet): {t1 - t0:.3f} s")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"face 3DMM        skipped ({type(exc).__name__}: {exc})")
    return lines


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=None, help="frames per run (default 4 on CPU, 100 on CUDA)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=None, help="our batch size (default 2 on CPU, 16 on CUDA)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile on the decoder")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--flat-size", type=int, default=128)
    parser.add_argument("--flat-frames", type=int, nargs=2, default=None, metavar=("SHORT", "LONG"),
                        help="memory flatness frame counts (default 250 3000 on CUDA, 8 48 on CPU)")
    parser.add_argument("--skip-flat", action="store_true")
    parser.add_argument("--skip-stages", action="store_true", help="skip the audio and face stage timings")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = args.frames or (100 if cuda else 4)
    batch = args.batch or (16 if cuda else 2)
    flat = args.flat_frames or ([250, 3000] if cuda else [8, 48])
    if cuda:
        torch.backends.cudnn.benchmark = True

    print(f"device {device} ({torch.cuda.get_device_name(device) if cuda else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {frames} frames, our batch {batch}")
    base = make_renderer_nets(args.seed)
    base = Nets(base.kp.to(device), base.gen.to(device), base.mapping.to(device))
    # on a CPU only the reduced precision it runs natively (elsewhere it is ~200x slower; see precision.py)
    low_dtypes = [torch.float16, torch.bfloat16] if cuda else \
        [d for d in (torch.bfloat16, torch.float16) if cpu_runs_natively(d)]
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"CPU vector ISA {cpu}; native reduced precision: "
          f"{', '.join(str(d).removeprefix('torch.') for d in low_dtypes) or 'none (fp32 only)'}")

    header = f"{'size':>4} {'configuration':<22} {'frames/s':>9} {'s/frame':>8} {'speed-up':>8} " \
             f"{'peak RSS MiB':>12} {'RSS +MiB':>9} {'peak dev MiB':>12} {'max err':>9} {'mean err':>9}"
    summary: list[str] = []
    for size in args.sizes:
        image, src, tgt = make_inputs(size, frames)
        image, src, tgt = image.to(device), src.to(device), tgt.to(device)
        results: list[Result] = []

        def warm(run: Callable[[], object]) -> None:
            if cuda:  # cuDNN autotuning and lazy initialisation stay out of the timings
                run()
                torch.cuda.synchronize(device)

        if not args.skip_baseline:
            plain = Nets(copy.deepcopy(base.kp), copy.deepcopy(base.gen), base.mapping)
            warm(lambda: baseline_render(plain, image, src, tgt[:2]))
            results.append(measure("baseline (original)", size, frames, device, args.repeats,
                                   lambda: baseline_render(plain, image, src, tgt)))
            plain = None

        fused = FaceRenderer(copy.deepcopy(base.kp), copy.deepcopy(base.gen), base.mapping).optimize()
        warm(lambda: ours_render(fused, image, src, tgt[:batch], batch))
        ours = measure("ours fp32", size, frames, device, args.repeats,
                       lambda: ours_render(fused, image, src, tgt, batch))
        results.append(ours)
        if args.compile:
            fused.optimize(compile=True)
            for count in sorted({batch, frames % batch} - {0}):  # compile every batch shape first
                ours_render(fused, image, src, tgt[:count], batch)
            results.append(measure("ours fp32 compiled", size, frames, device, args.repeats,
                                   lambda: ours_render(fused, image, src, tgt, batch)))
        fused = None  # free its copy of the networks
        for dtype in low_dtypes:
            low = low_precision_nets(base, dtype)
            renderer = FaceRenderer(low.kp, low.gen, low.mapping).optimize()
            warm(lambda: ours_render(renderer, image, src, tgt[:batch], batch))
            name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
            results.append(measure(f"ours {name}", size, frames, device, args.repeats,
                                   lambda: ours_render(renderer, image, src, tgt, batch)))
            del low, renderer

        print()
        print(header)
        reference = ours.output
        base_time = results[0].seconds if not args.skip_baseline else None
        for res in results:
            if res.output is not None and reference is not None:
                diff = (res.output - reference).abs()
                res.max_err, res.mean_err = diff.max().item(), diff.mean().item()
            speed = f"{base_time / res.seconds:7.2f}x" if base_time else "      -"
            dev = f"{res.peak_device_mib:12.0f}" if res.peak_device_mib is not None else f"{'-':>12}"
            errs = f"{res.max_err:9.2e} {res.mean_err:9.2e}" if res.max_err is not None else f"{'-':>9} {'-':>9}"
            print(f"{size:>4} {res.label:<22} {res.fps:9.3f} {res.seconds / res.frames:8.3f} {speed:>8} "
                  f"{res.peak_rss_mib:12.0f} {res.rss_growth_mib:9.0f} {dev} {errs}")
            res.output = None
        if base_time:
            by_label = {r.label: r for r in results}
            if cuda:
                if "ours fp16" in by_label and size == 256:
                    fps = by_label["ours fp16"].fps
                    summary.append(f"CUDA fp16 at 256: {fps:.1f} frames/s (target >= {TARGETS['cuda_fp16_fps_256']:.0f})"
                                   f" {'OK' if fps >= TARGETS['cuda_fp16_fps_256'] else 'MISSED'}")
            else:
                for label, key in (("ours fp32", "cpu_fp32_speedup"), ("ours bf16", "cpu_bf16_speedup")):
                    if label in by_label:
                        s = base_time / by_label[label].seconds
                        summary.append(f"CPU {label[5:]} at {size}: {s:.2f}x baseline (target >= {TARGETS[key]}x) "
                                       f"{'OK' if s >= TARGETS[key] else 'MISSED'}")

    if not args.skip_flat:
        short, long = flat
        image, src, _ = make_inputs(args.flat_size, 1)
        image, src = image.to(device), src.to(device)
        renderer = FaceRenderer(copy.deepcopy(base.kp), copy.deepcopy(base.gen), base.mapping).optimize()
        print()
        print(f"memory flatness: size {args.flat_size}, batch {batch}, frames streamed to a discarding sink")
        peaks = {}
        for count in (short, long):
            _, _, tgt = make_inputs(args.flat_size, count)
            tgt = tgt.to(device)
            warm(lambda: ours_render(renderer, image, src, tgt[:batch], batch, sink=True))
            res = measure(f"{count} frames", args.flat_size, count, device, 1,
                          lambda: ours_render(renderer, image, src, tgt, batch, sink=True))
            peaks[count] = res
            dev = f", peak device {res.peak_device_mib:.0f} MiB" if res.peak_device_mib is not None else ""
            print(f"  {count:>5} frames ({count / 25:6.1f} s of video): {res.fps:7.2f} frames/s, "
                  f"peak RSS {res.peak_rss_mib:.0f} MiB (+{res.rss_growth_mib:.0f} MiB during the run){dev}")
        a, b = peaks[short], peaks[long]
        host = b.peak_rss_mib / a.peak_rss_mib - 1
        line = f"memory, {long} vs {short} frames: peak RSS {host * 100:+.1f} %"
        worst = host
        if a.peak_device_mib:
            devg = b.peak_device_mib / a.peak_device_mib - 1
            line += f", peak device {devg * 100:+.1f} %"
            worst = max(worst, devg)
        ok = worst <= TARGETS["memory_growth"]
        summary.append(f"{line} (target within {TARGETS['memory_growth'] * 100:.0f} %) {'OK' if ok else 'MISSED'}")
        del renderer

    if not args.skip_stages:
        print()
        print("other stages (stand-in weights):")
        for line in time_other_stages(args.seed, device):
            print("  " + line)

    print()
    print("targets:")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
