"""Batch throughput (a script, not a test): videos per hour for N short rows, here and on Ray actors.

Writes a manifest of ``--rows`` rows (the test picture, a short clip of the test speech, a different
seed per row) and runs ``python -m sadtalker_models batch`` on it once per configuration, each in a
fresh child process (so each pays its own model load and, for Ray, its own Ray start, as a real
batch does):

* ``local``: the rows one after another in one process (torch uses every core);
* ``ray1``: one Ray actor holding all the cores;
* ``ray2``: two Ray actors, half the cores each (the cores split, not added).

For each: the wall time of the whole command, videos per hour from it, and the mean time per video
inside the actors (``seconds`` in results.csv, which includes the first row's model load).

    .venv/bin/python -m benchmarks.bench_batch                       # 10 rows, 2 frames each
    .venv/bin/python -m benchmarks.bench_batch --rows 10 --seconds 0.2 --configs local ray2

Stand-in weights (``sadtalker_models/stand_in_weights.py``; the same network sizes as the official
256 checkpoint, so the same speed) are written to ``--weights`` once; ``--models-dir`` takes real ones.

Extrapolating to N GPUs (an assumption, not a measurement): with one actor per GPU each actor renders
its own rows, so videos per hour grow about linearly with N, ``N * 3600 / t_gpu`` (``t_gpu``: one
video's time on one GPU, mostly the render stage), until the host CPU's per-video stages (reading
the audio, face detection on the picture, H.264 encoding and muxing: ``c`` core-seconds per video)
fill the host's cores: at most ``cores * 3600 / c`` videos per hour per host. Give each GPU actor
enough cores (``--cpus-per-actor``) for its encoding to keep up with its GPU.

Last run (Intel Xeon Processor, AVX-512, 2 cores, shared with other work: load average 4-6 during the
run; stand-in weights, 10 rows of 2 frames at 256 px, CPU only)::

    local   10 videos in 262.4 s: 137 videos/hour; 25.9 s per video
    ray1    10 videos in 218.6 s: 165 videos/hour; 20.7 s per video (1 actor, 2 cores)
    ray2    10 videos in 231.5 s: 156 videos/hour; 43.1 s per video (2 actors, 1 core each)

On two cores the render is CPU bound, so two actors share the same cores and add nothing; the
differences between the three are within this machine's noise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
from benchmarks.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
MEDIA = REPO / "tests" / "data" / "media"


def speech_clip(path: Path, seconds: float) -> Path:
    """The first ``seconds`` of the 16 kHz test speech as a wav file."""
    with wave.open(str(MEDIA / "speech_en_16k_3s.wav")) as fh:
        rate, channels = fh.getframerate(), fh.getnchannels()
        data = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").reshape(-1, channels)[:, 0]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data[: int(round(seconds * rate))].astype("<i2").tobytes())
    return path


def write_manifest(folder: Path, rows: int, seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MEDIA / "art_0.png", folder / "face.png")
    speech_clip(folder / "speech.wav", seconds)
    manifest = folder / "jobs.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "audio", "out", "seed"])
        for row in range(rows):
            writer.writerow(["face.png", "speech.wav", f"video_{row:03d}.mp4", row])
    return manifest


def config_args(name: str, cores: int) -> list[str]:
    if name == "local":
        return []
    if name == "ray1":
        return ["--ray", "--actors", "1", "--cpus-per-actor", str(cores)]
    if name == "ray2":
        return ["--ray", "--actors", "2", "--cpus-per-actor", str(max(1, cores // 2))]
    raise ValueError(f"unknown configuration {name}")


def run_config(name: str, manifest: Path, out_dir: Path, models_dir: Path, size: int, cores: int) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "sadtalker_models", "-q", "batch", str(manifest), "--out-dir", str(out_dir),
           "--models-dir", str(models_dir), "--size", str(size), "--device", "cpu", "--landmark-backend", "dlib",
           *config_args(name, cores)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    with open(out_dir / "results.csv", newline="") as fh:
        records = list(csv.DictReader(fh))
    ok = [r for r in records if r["status"] == "ok"]
    if proc.returncode != 0 or len(ok) != len(records):
        print(proc.stderr[-2000:], file=sys.stderr)
    row_seconds = [float(r["seconds"]) for r in ok]
    return {"config": name, "exit": proc.returncode, "videos": len(ok), "frames": sum(int(r["frames"]) for r in ok),
            "wall_s": round(wall, 1), "videos_per_hour": round(len(ok) / wall * 3600, 1),
            "mean_row_s": round(sum(row_seconds) / max(1, len(row_seconds)), 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def extrapolation(gpu_seconds: float | None, core_seconds: float | None, cores: int) -> str:
    """The N-GPU estimate (module docstring): ``min(N * 3600 / T, cores * 3600 / C)`` videos per hour."""
    text = ("N GPUs (one actor each), assuming the render stage scales linearly with actors until the host's CPU "
            "stages saturate: videos/hour ~= min(N * 3600 / T, host cores * 3600 / C)")
    if not gpu_seconds:
        return text + " (give --gpu-video-seconds T and --host-core-seconds C for numbers)."
    rows = []
    for n in (1, 2, 4, 8):
        linear = n * 3600 / gpu_seconds
        ceiling = cores * 3600 / core_seconds if core_seconds else float("inf")
        rows.append(f"  {n} GPU{'s' * (n > 1)}: {min(linear, ceiling):8.0f} videos/hour"
                    + (" (host CPU bound)" if ceiling < linear else ""))
    return text + f"; T = {gpu_seconds:g} s, C = {core_seconds or 0:g} s, {cores} cores:\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=0.09, help="speech per row (0.09 s: 2 frames)")
    parser.add_argument("--configs", nargs="+", default=["local", "ray1", "ray2"], choices=("local", "ray1", "ray2"))
    parser.add_argument("--size", type=int, default=256, choices=(256, 512))
    parser.add_argument("--models-dir", type=Path, help="real weights (default: stand-in weights in --weights)")
    parser.add_argument("--weights", type=Path, default=REPO / ".pytest_cache" / "sadtalker-weights" / "bench")
    parser.add_argument("--work", type=Path, default=REPO / ".pytest_cache" / "bench_batch")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--gpu-video-seconds", type=float, metavar="T",
                        help="for the extrapolation: one video's time on one GPU (measure it with one GPU actor)")
    parser.add_argument("--host-core-seconds", type=float, metavar="C",
                        help="for the extrapolation: CPU core-seconds per video of the host stages (decode, face "
                             "detection, encoding)")
    parser.add_argument("--host-cores", type=int, default=os.cpu_count() or 1,
                        help="for the extrapolation: the GPU host's cores (default: this machine's)")
    args = parser.parse_args(argv)

    models_dir = args.models_dir
    if models_dir is None:
        from sadtalker_models.stand_in_weights import write_stand_in_files

        models_dir = write_stand_in_files(args.weights, seed=0, sizes=(args.size,))
    cores = os.cpu_count() or 1
    manifest = write_manifest(args.work / "jobs", args.rows, args.seconds)
    print(f"CPU: {cpu_name()}, {cores} cores; {args.rows} rows of {args.seconds:g} s speech at {args.size} px; "
          f"load average {os.getloadavg()[0]:.2f} (a shared machine makes these numbers noisy)")
    results = []
    for name in args.configs:
        result = run_config(name, manifest, args.work / f"out-{name}", models_dir, args.size, cores)
        results.append(result)
        print(f"{name:6s} {result['videos']:3d} videos ({result['frames']} frames) in {result['wall_s']:7.1f} s: "
              f"{result['videos_per_hour']:7.1f} videos/hour; {result['mean_row_s']:.1f} s per video in its worker "
              f"(load {result['load_before']:.1f} -> {result['load_after']:.1f})", flush=True)
    print(extrapolation(args.gpu_video_seconds, args.host_core_seconds, args.host_cores))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "cores": cores, "rows": args.rows,
                                         "seconds": args.seconds, "results": results}, indent=2))
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
