"""Long-clip memory benchmark (a script, not a test): is memory flat in the clip length?

Two measurements, each run in a fresh child process so that every figure is that run's own peak:

``coeffs``: the coefficient stage (``pipeline.audio_to_coefficients``: mel windows, ExpNet, PoseVAE,
smoothing) on 10 s, 60 s and 10 min of speech (the test clip tiled), time and peak RSS; with
``--whole`` also the old path that builds every mel window first, for comparison.

``stream``: the ComfyUI nodes over the comfy stand-in (``tests/comfy_stub``): *SadTalker Render to
Video* (streamed VIDEO) against *SadTalker Render* (IMAGE output), for N and 10*N frames, in crop
mode (128 px frames) and in full mode pasted onto a 1920x1080 picture (the face rendered at 128 px,
the frames 1920x1080). The render outputs are kept alive until the peak is read, as ComfyUI keeps
node outputs.

Peak RSS is the kernel's high-water mark (VmHWM), reset after the models are loaded and the inputs
prepared (``/proc/self/clear_refs``), so it covers the measured stage only (plus what was already
resident). Linux only.

    .venv/bin/python -m benchmarks.bench_long_video coeffs --seconds 10 60 600
    .venv/bin/python -m benchmarks.bench_long_video stream --frames 2 20

Stand-in weights (``sadtalker_models/stand_in_weights.py``) are written to ``--weights`` once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "data" / "media"
STUB = REPO / "tests" / "comfy_stub"
CHECKPOINT = "SadTalker_V0.0.2_256.safetensors"


# ----------------------------------------------------------------------------- measuring


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> int:
    """Reset the peak-RSS mark to the current RSS; returns the current RSS in KiB."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kib("VmRSS")


def peak_kib() -> int:
    return _status_kib("VmHWM")


def speech(seconds: float):
    """The 16 kHz test clip tiled to ``seconds``, as ComfyUI AUDIO ``(1, 1, n)``."""
    import numpy as np
    import torch
    from scipy.io import wavfile

    rate, data = wavfile.read(str(MEDIA / "speech_en_16k_3s.wav"))
    mono = (data if data.ndim == 1 else data[:, 0]).astype(np.float32) / 32768.0
    n = int(round(seconds * rate))
    wave = np.resize(mono, n)
    return {"waveform": torch.from_numpy(wave)[None, None], "sample_rate": int(rate)}


# ----------------------------------------------------------------------------- children


def child_coeffs(args: argparse.Namespace) -> dict:
    import torch

    from sadtalker_models import audio, pipeline

    models = pipeline.load_models(Path(args.weights) / CHECKPOINT, device="cpu", precision="fp32", cache=None)

    class Face:  # audio_to_coefficients needs only the source coefficients
        coeff_3dmm = torch.zeros(1, 73)

    clip = speech(args.seconds)
    if args.whole:   # the old path: every mel window built first, then the networks
        def lazy(waveform, sample_rate):
            return audio.audio_to_mel_windows(waveform, sample_rate)[None, :, None]

        audio.lazy_mel_windows = lazy
    base = reset_peak()
    start = time.perf_counter()
    coeffs = pipeline.audio_to_coefficients(models, Face(), clip["waveform"], clip["sample_rate"], seed=0)
    seconds = time.perf_counter() - start
    return {"stage": "coeffs", "path": "whole" if args.whole else "chunked", "audio_s": args.seconds,
            "frames": coeffs.num_frames, "time_s": seconds, "base_mib": base / 1024, "peak_mib": peak_kib() / 1024}


def _load_pack():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sadtalker_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["sadtalker_pack"] = module
    spec.loader.exec_module(module)
    return module


def _picture(mode: str):
    """crop: the test portrait; full: the portrait scaled into the middle of a 1920x1080 picture."""
    import cv2
    import numpy as np
    import torch

    image = cv2.cvtColor(cv2.imread(str(MEDIA / "art_0.png")), cv2.COLOR_BGR2RGB)
    if mode == "full":
        h = 1080
        w = int(round(image.shape[1] * h / image.shape[0]))
        canvas = np.full((1080, 1920, 3), 200, dtype=np.uint8)
        x = (1920 - w) // 2
        canvas[:, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        image = canvas
    return torch.from_numpy(image).float()[None] / 255.0


def child_stream(args: argparse.Namespace) -> dict:
    import dataclasses

    import cv2

    import folder_paths

    base_dir = Path(args.workdir)
    folder_paths.set_base(str(base_dir))
    models_dir = base_dir / "models" / "sadtalker"
    models_dir.parent.mkdir(parents=True, exist_ok=True)
    if not models_dir.exists():
        models_dir.symlink_to(Path(args.weights).resolve(), target_is_directory=True)
    pack = _load_pack()
    pack.nodes.comfy_glue.register_model_folders()
    nodes = pack.NODE_CLASS_MAPPINGS

    (model,) = nodes["SadTalkerModelLoader"]().load(CHECKPOINT, "fp32")
    face = nodes["SadTalkerFaceCrop"]().prepare(model, _picture(args.mode), args.mode, "256", "dlib")[0]
    # 128 px renders (valid, see the parity cases) keep this CPU's time reasonable; full mode still
    # pastes them into the 1920x1080 picture
    face = dataclasses.replace(face, crop=cv2.resize(face.crop, (128, 128), interpolation=cv2.INTER_AREA), size=128)
    coeffs = nodes["SadTalkerAudioToCoefficients"]().predict(model, face, speech(args.frames * 0.04 + 0.01),
                                                             0, 0, True, False)["result"][0]
    assert coeffs.num_frames == args.frames, coeffs.num_frames
    base = reset_peak()
    start = time.perf_counter()
    if args.path == "video":
        out = nodes["SadTalkerRenderVideo"]().render(model, face, coeffs, 1.0, args.batch_size, True)
        video = out["result"][0]
        size = video.get_dimensions()
    else:
        out = nodes["SadTalkerRender"]().render(model, face, coeffs, 1.0, args.batch_size, True)
        images = out["result"][0]
        size = (int(images.shape[2]), int(images.shape[1]))
    seconds = time.perf_counter() - start
    peak = peak_kib()
    return {"stage": "stream", "mode": args.mode, "path": args.path, "frames": args.frames, "size": list(size),
            "time_s": seconds, "base_mib": base / 1024, "peak_mib": peak / 1024}


# ----------------------------------------------------------------------------- parent


def run_child(argv: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(STUB), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_long_video", "--child", *argv], cwd=REPO,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict], keys: list[str]) -> str:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key, "")
            cells.append(f"{value:.1f}" if isinstance(value, float) else
                         "x".join(map(str, value)) if isinstance(value, list) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth(rows: list[dict], small: float, large: float, key: str, **match) -> str:
    pick = {r[key]: r["peak_mib"] for r in rows if all(r.get(k) == v for k, v in match.items())}
    if small in pick and large in pick:
        return f"{(pick[large] / pick[small] - 1) * 100:+.1f} %"
    return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="what", required=True)
    co = sub.add_parser("coeffs", help="coefficient stage on long audio")
    co.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0, 600.0])
    co.add_argument("--whole", action="store_true", help="(child) / also measure the old whole-window path")
    st = sub.add_parser("stream", help="streamed VIDEO node vs IMAGE node")
    st.add_argument("--frames", type=int, nargs="+", default=[2, 20])
    st.add_argument("--modes", nargs="+", default=["crop", "full"], choices=("crop", "full"))
    st.add_argument("--paths", nargs="+", default=["video", "image"], choices=("video", "image"))
    st.add_argument("--batch-size", type=int, default=2)
    st.add_argument("--mode", default="crop", help=argparse.SUPPRESS)
    st.add_argument("--path", default="video", help=argparse.SUPPRESS)
    st.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    for p in (co, st):
        p.add_argument("--weights", default=str(REPO / ".pytest_cache" / "bench-weights"),
                       help="folder for the stand-in weight files (written once)")
    args = parser.parse_args(argv)

    if args.child:
        if args.what == "coeffs":
            args.seconds = args.seconds[0]
            result = child_coeffs(args)
        else:
            args.frames = args.frames[0]
            result = child_stream(args)
        print(json.dumps(result))
        return 0

    from sadtalker_models.stand_in_weights import write_stand_in_files

    write_stand_in_files(args.weights, 0)
    rows = []
    if args.what == "coeffs":
        for whole in ([False, True] if args.whole else [False]):
            for seconds in args.seconds:
                rows.append(run_child(["coeffs", "--seconds", str(seconds), "--weights", args.weights]
                                      + (["--whole"] if whole else [])))
                print(json.dumps(rows[-1]), flush=True)
        print(table(rows, ["path", "audio_s", "frames", "time_s", "base_mib", "peak_mib"]))
        if len(args.seconds) >= 2:
            a, b = sorted(args.seconds)[-2:]
            print(f"chunked peak growth {a:g} s -> {b:g} s: {growth(rows, a, b, 'audio_s', path='chunked')}")
        return 0

    import tempfile

    with tempfile.TemporaryDirectory(prefix="sadtalker_bench_") as work:
        for mode in args.modes:
            for path in args.paths:
                for frames in args.frames:
                    rows.append(run_child(["stream", "--frames", str(frames), "--mode", mode, "--path", path,
                                           "--batch-size", str(args.batch_size), "--workdir", work,
                                           "--weights", args.weights]))
                    print(json.dumps(rows[-1]), flush=True)
    print(table(rows, ["mode", "path", "frames", "size", "time_s", "base_mib", "peak_mib"]))
    small, large = min(args.frames), max(args.frames)
    for mode in args.modes:
        for path in args.paths:
            print(f"{mode} {path}: peak growth {small} -> {large} frames: "
                  f"{growth(rows, small, large, 'frames', mode=mode, path=path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
