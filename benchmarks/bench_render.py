"""Renderer benchmark (a script, not a test).

Renders frames with deterministic stand-in weights (``sadtalker_models/stand_in_weights.py``) and
prints, per size and configuration, frames/s, s/frame, speed-up over the baseline, peak host RSS,
peak device memory and the difference from our float32 frames in uint8 levels (mean and max):

* ``baseline``: behaves like the original frame loop (§11.3): batch 2, float32, the unfused
  networks in NCHW, the source image re-encoded by every generator call, every frame kept on the
  device and stacked at the end (nothing cached);
* ``ours fp32``: `FaceRenderer.optimize()` (merged SPADE path; channels-last on a CPU), the source
  encoded once, batches streamed to the CPU;
* reduced precision: ``ours bf16`` / ``ours fp16`` where the CPU runs them natively (oneDNN with
  AVX-512-BF16/AMX, AVX-512-FP16), both on CUDA;
* ``--layouts nchw`` adds the same renderers with NCHW weights; ``--compile`` adds
  `optimize(compile=True)` variants and reports their compile time.

The configurations are timed **interleaved**: every repeat runs each configuration once in turn,
and the best wall time of each counts (with the CPU time of that run and the load average seen),
so a machine shared with other jobs slows them alike.

It also measures memory flatness (peak memory streaming a long clip vs a short one to a sink that
discards the frames) and, when those modules import, the audio -> coefficients and face stages.

    .venv/bin/python -m benchmarks.bench_render --device cpu --frames 4 --sizes 256 --repeats 3

(run from the repository root so that `sadtalker_models` is importable).
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import platform
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
    "cpu_fp32_speedup": 1.2,
    "cpu_bf16_speedup": 6.0,
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
    cpu_seconds: float = math.inf  # process CPU time of the best run (all threads)
    loads: list[float] = field(default_factory=list)  # 1-minute load average after each run
    peak_rss_mib: float = 0.0
    rss_growth_mib: float = 0.0
    peak_device_mib: float | None = None
    max_err: float | None = None
    mean_err: float | None = None
    compile_seconds: float | None = None
    output: torch.Tensor | None = field(default=None, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def measure_once(res: Result, device: torch.device, run: Callable[[], torch.Tensor | None]) -> float:
    """One timed run of `run()` folded into `res` (best wall time, peak host RSS and device memory)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    reset_peak_rss()
    before = rss_kib()
    t0, c0 = time.perf_counter(), time.process_time()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = rss_kib("VmHWM")
    res.loads.append(load_average())
    if elapsed < res.seconds:
        res.seconds, res.cpu_seconds = elapsed, cpu
    res.peak_rss_mib = max(res.peak_rss_mib, peak / 1024)
    res.rss_growth_mib = max(res.rss_growth_mib, (peak - before) / 1024)
    if device.type == "cuda":
        res.peak_device_mib = max(res.peak_device_mib or 0.0, torch.cuda.max_memory_allocated(device) / 2**20)
    if out is not None:
        res.output = out.detach().float().cpu()
    del out
    return elapsed


def measure(label: str, size: int, frames: int, device: torch.device, repeats: int,
            run: Callable[[], torch.Tensor | None]) -> Result:
    """Best-of-`repeats` wall time of `run()` with peak host RSS and peak device memory."""
    res = Result(label, size, frames)
    for _ in range(repeats):
        measure_once(res, device, run)
    return res


def measure_interleaved(configs: list[tuple[str, Callable[[], torch.Tensor | None]]], size: int, frames: int,
                        device: torch.device, repeats: int) -> list[Result]:
    """`repeats` rounds, each running every configuration once in turn; the best run of each counts."""
    results = [Result(label, size, frames) for label, _ in configs]
    for _ in range(repeats):
        for res, (_, run) in zip(results, configs):
            measure_once(res, device, run)
    return results


def uint8_levels(frames: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Mean and max absolute difference of two `(T, 3, S, S)` 0..1 frame sets in uint8 levels."""
    diff = ((frames * 255).round() - (reference * 255).round()).abs()
    return diff.mean().item(), diff.max().item()


def cpu_name() -> str:
    """The CPU model and its reduced-precision features as the kernel reports them."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16") if f in flags]
    return f"{name} ({os.cpu_count()} CPUs; {' '.join(features) or 'flags unknown'})"


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
    """A generator copy in `dtype`, as `pipeline.load_models` makes it (the keypoint detector and the
    MappingNet stay float32: they are cheap and set the head pose)."""
    return Nets(copy.deepcopy(nets.kp), copy.deepcopy(nets.gen).to(dtype), nets.mapping)


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
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds (each runs every configuration once); the best run counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--layouts", nargs="+", default=["auto"], choices=("auto", "cl", "nchw"),
                        help="weight layouts of our renderers (auto: channels-last on a CPU, NCHW elsewhere)")
    parser.add_argument("--precisions", nargs="+", default=None, choices=("fp32", "bf16", "fp16"),
                        help="our precisions (default: fp32 and every reduced precision the device runs natively)")
    parser.add_argument("--compile", action="store_true",
                        help="also time optimize(compile=True) variants (and report their compile time)")
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

    where = torch.cuda.get_device_name(device) if cuda else cpu_name()
    print(f"device {device}: {where}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {frames} frames per run, our batch {batch}, "
          f"{args.repeats} interleaved round(s), load average before {load_average():.2f}")
    base = make_renderer_nets(args.seed)
    base = Nets(base.kp.to(device), base.gen.to(device), base.mapping.to(device))
    # on a CPU only the reduced precision it runs natively (elsewhere it is ~200x slower; see precision.py)
    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    native = [n for n in ("bf16", "fp16") if cuda or cpu_runs_natively(names[n])]
    precisions = [p for p in (args.precisions or ["fp32", *native]) if p == "fp32" or p in native]
    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"CPU vector ISA {cpu}; native reduced precision: {', '.join(native) or 'none (fp32 only)'}")

    header = f"{'size':>4} {'configuration':<24} {'frames/s':>9} {'s/frame':>8} {'speed-up':>8} {'cpu s/fr':>8} " \
             f"{'load':>9} {'peak RSS':>8} {'peak dev':>8} {'levels mean/max':>15}"
    summary: list[str] = []
    for size in args.sizes:
        image, src, tgt = make_inputs(size, frames)
        image, src, tgt = image.to(device), src.to(device), tgt.to(device)

        def warm(run: Callable[[], object]) -> float:
            """Run once untimed (oneDNN/cuDNN primitive creation, compiling); returns its seconds."""
            t0 = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize(device)
            return time.perf_counter() - t0

        configs: list[tuple[str, Callable[[], torch.Tensor | None]]] = []
        compile_seconds: dict[str, float] = {}
        if not args.skip_baseline:
            plain = Nets(copy.deepcopy(base.kp), copy.deepcopy(base.gen), base.mapping)  # unfused, NCHW
            if cuda:
                warm(lambda: baseline_render(plain, image, src, tgt[:2]))
            configs.append(("baseline (original)", lambda plain=plain: baseline_render(plain, image, src, tgt)))
        for precision in precisions:
            nets = low_precision_nets(base, names[precision])
            for layout in args.layouts:
                channels_last = None if layout == "auto" else layout == "cl"
                suffix = "" if layout == "auto" else f" {layout}"
                for compiled in (False, True) if args.compile else (False,):
                    gen = nets.gen if (layout, compiled) == (args.layouts[0], False) else copy.deepcopy(nets.gen)
                    renderer = FaceRenderer(nets.kp, gen, nets.mapping).optimize(
                        channels_last=channels_last, compile=compiled)
                    label = f"ours {precision}{suffix}" + (" compiled" if compiled else "")
                    run = (lambda r=renderer: ours_render(r, image, src, tgt, batch))
                    eager_first = warm(lambda r=renderer: ours_render(r, image, src, tgt[:batch], batch))
                    if compiled:  # every batch shape compiles once
                        if frames % batch:
                            eager_first += warm(lambda r=renderer: ours_render(r, image, src, tgt[:frames % batch], batch))
                        compile_seconds[label] = eager_first
                    configs.append((label, run))
        results = measure_interleaved(configs, size, frames, device, args.repeats)

        print()
        print(header)
        by_label = {r.label: r for r in results}
        reference = by_label.get("ours fp32", next((r for r in results if r.label.startswith("ours fp32")),
                                                   by_label.get("baseline (original)")))
        base_res = by_label.get("baseline (original)")
        for res in results:
            levels = "-"
            if res.output is not None and reference is not None and reference.output is not None:
                diff = (res.output - reference.output).abs()
                res.max_err, res.mean_err = diff.max().item(), diff.mean().item()
                mean_l, max_l = uint8_levels(res.output, reference.output)
                levels = f"{mean_l:.2f} / {max_l:.0f}"
            speed = f"{base_res.seconds / res.seconds:7.2f}x" if base_res else "      -"
            dev = f"{res.peak_device_mib:8.0f}" if res.peak_device_mib is not None else f"{'-':>8}"
            load = f"{min(res.loads):.1f}-{max(res.loads):.1f}" if res.loads else "-"
            print(f"{size:>4} {res.label:<24} {res.fps:9.3f} {res.seconds / res.frames:8.3f} {speed:>8} "
                  f"{res.cpu_seconds / res.frames:8.3f} {load:>9} {res.peak_rss_mib:8.0f} {dev} {levels:>15}")
        for label, seconds in compile_seconds.items():
            eager = by_label.get(label.removesuffix(" compiled"))
            extra = f" (an eager run takes {eager.seconds / frames * batch:.1f} s per batch)" if eager else ""
            print(f"     {label}: first run of each batch shape (compiling) took {seconds:.1f} s{extra}")
        for res in results:
            res.output = None
        print(f"     levels: uint8 levels (frames * 255, rounded) against '{reference.label if reference else '-'}'; "
              "cpu s/fr: process CPU time of the best run; load: 1-minute load average after each run")
        if base_res:
            if cuda:
                if "ours fp16" in by_label and size == 256:
                    fps = by_label["ours fp16"].fps
                    summary.append(f"CUDA fp16 at 256: {fps:.1f} frames/s (target >= {TARGETS['cuda_fp16_fps_256']:.0f})"
                                   f" {'OK' if fps >= TARGETS['cuda_fp16_fps_256'] else 'MISSED'}")
            else:
                for label, key in (("ours fp32", "cpu_fp32_speedup"), ("ours bf16", "cpu_bf16_speedup")):
                    if label in by_label:
                        x = base_res.seconds / by_label[label].seconds
                        summary.append(f"CPU {label[5:]} at {size}: {x:.2f}x baseline (target >= {TARGETS[key]}x) "
                                       f"{'OK' if x >= TARGETS[key] else 'MISSED'}")
        del configs, results

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
