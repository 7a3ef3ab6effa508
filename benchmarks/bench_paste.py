"""Paste-back benchmark (a script, not a test): seconds per frame of ``cv2.seamlessClone`` against the
batched torch Poisson blend (``sadtalker_models/face/seamless_clone.py``).

A real picture (tests/data/media/full_body_1.png) resized to 1080p or 4K is the destination; the box
is a typical full-mode face box (600x700 at 1080p, scaled with the picture); the patches are shifted,
recoloured crops of the picture. Torch times run from uint8 numpy patches to uint8 numpy frames
(uploads and downloads included, as in the pipeline), after one warm-up call; the one-time setup
(destination's part, sine-transform matrices) is printed separately. OpenCV's time per frame does not
depend on the batch. Each table row also gives the largest and mean difference from OpenCV in uint8
levels inside the box (outside it both keep the picture), over the first ``--cv2-frames`` frames.

    .venv/bin/python -m benchmarks.bench_paste                       # cpu (+ cuda when available)
    .venv/bin/python -m benchmarks.bench_paste --devices cpu --sizes 1080p --batches 1 2 4

(run from the repository root so that `sadtalker_models` is importable). Timings on a shared machine
are noisy: ``--repeats`` keeps the best run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sadtalker_models.face.seamless_clone import SeamlessCloner
from benchmarks.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
PICTURE = REPO / "tests" / "data" / "media" / "full_body_1.png"

#: (width, height) of the picture and (width, height) of the face box at each size.
SIZES = {"1080p": ((1920, 1080), (600, 700)), "4k": ((3840, 2160), (1200, 1400))}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_name()}, {torch.get_num_threads()} torch threads"


def make_inputs(size: str, batch: int) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """(picture (H, W, 3) uint8 RGB, box, patches (batch, bh, bw, 3) uint8)."""
    (w0, h0), (bw, bh) = SIZES[size]
    picture = cv2.resize(cv2.imread(str(PICTURE))[:, :, ::-1], (w0, h0), interpolation=cv2.INTER_LINEAR)
    x1, y1 = (w0 - bw) // 2, (h0 - bh) // 3
    box = (x1, y1, x1 + bw, y1 + bh)
    patches = []
    for i in range(batch):
        sx, sy = x1 + 11 * (i % 5) - 20, y1 + 7 * (i % 3) - 7
        crop = picture[sy:sy + bh, sx:sx + bw].astype(np.float32) * np.float32(1.0 + 0.03 * (i % 4)) + 3.0
        patches.append(np.clip(crop, 0, 255).astype(np.uint8))
    return np.ascontiguousarray(picture), box, np.stack(patches)


def cv2_clone(patch: np.ndarray, picture: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    mask = np.full(patch.shape[:2], 255, np.uint8)
    return cv2.seamlessClone(patch, picture, mask, ((x1 + x2) // 2, (y1 + y2) // 2), cv2.NORMAL_CLONE)


def best_of(repeats: int, run) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--methods", nargs="+", default=["matmul", "fft"], choices=["matmul", "fft"])
    parser.add_argument("--cv2-frames", type=int, default=2, help="frames OpenCV's time per frame is taken over")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    print(f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), torch {torch.__version__}")
    for device in args.devices:
        print(f"{device}: {device_name(device)}")
    print()
    header = f"{'size':>6} {'box':>10} {'batch':>5} {'device':>6} {'method':>7} {'s/frame':>8} {'cv2 s/frame':>11} " \
             f"{'speed-up':>8} {'setup s':>7} {'max lvl':>7} {'mean lvl':>8}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        picture, box, patches = make_inputs(size, max(args.batches))
        n_cv2 = max(1, min(args.cv2_frames, len(patches)))
        refs = [cv2_clone(p, picture, box) for p in patches[:n_cv2]]          # warm-up and reference
        t_cv2 = best_of(args.repeats, lambda: [cv2_clone(p, picture, box) for p in patches[:n_cv2]]) / n_cv2
        refs = np.stack(refs)
        box_text = f"{box[2] - box[0]}x{box[3] - box[1]}"
        for device in args.devices:
            for method in args.methods:
                start = time.perf_counter()
                cloner = SeamlessCloner(picture, box, device, method=method)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                setup = time.perf_counter() - start
                for batch in args.batches:
                    chunk = patches[:batch]
                    out = cloner(chunk).cpu().numpy()                              # warm-up
                    t = best_of(args.repeats, lambda: cloner(chunk).cpu().numpy()) / batch
                    k = min(len(refs), batch)
                    x1, y1, x2, y2 = box
                    diff = np.abs(out[:k, y1:y2, x1:x2].astype(np.int16) - refs[:k, y1:y2, x1:x2])
                    print(f"{size:>6} {box_text:>10} {batch:>5} {device:>6} {method:>7} {t:>8.4f} {t_cv2:>11.4f} "
                          f"{t_cv2 / t:>7.1f}x {setup:>7.3f} {int(diff.max()):>7} {diff.mean():>8.5f}")
                del cloner
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
