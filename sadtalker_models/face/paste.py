"""Paste rendered face frames back into the original image (spec §15, modes full / extfull).

Each frame is resized to the paste box with OpenCV INTER_LINEAR and blended with
``cv2.seamlessClone(..., NORMAL_CLONE)`` using an all-255 mask centred on the box. Poisson
blending treats the three channels independently, so the frames and the original can stay RGB
(the reference converts both to BGR, which gives the same pixels). Pixels outside the box are
never changed; OpenCV also leaves the box's outer ring of about two pixels untouched.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

from ..options import is_full_frame
from .crop import CropInfo
from .landmarks import to_rgb_uint8


def _paste_box(info: CropInfo, original_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    if not is_full_frame(info.mode):
        raise ValueError(
            f"Paste-back is only for the 'full' and 'extfull' preprocess modes, not {info.mode!r}."
        )
    h0, w0 = original_hw
    if (w0, h0) != tuple(info.original_size):
        raise ValueError(
            f"The original image is {w0}x{h0} but the crop was made on a "
            f"{info.original_size[0]}x{info.original_size[1]} image."
        )
    x1, y1, x2, y2 = info.region
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(w0, x2), min(h0, y2)
    if x2 - x1 < 3 or y2 - y1 < 3:
        raise ValueError(f"The paste box {(x1, y1, x2, y2)} is too small to blend into.")
    return x1, y1, x2, y2


def paste_frame(frame: np.ndarray, original: np.ndarray, info: CropInfo) -> np.ndarray:
    """Blend one rendered frame into the original image.

    Args:
        frame: (h, w, 3) uint8 RGB rendered face (any size; resized to the box).
        original: (H0, W0, 3) uint8 RGB source image.
        info: CropInfo of a full/extfull crop of ``original``.
    Returns:
        (H0, W0, 3) uint8 RGB.
    """
    x1, y1, x2, y2 = _paste_box(info, original.shape[:2])
    bw, bh = x2 - x1, y2 - y1
    patch = cv2.resize(np.ascontiguousarray(frame), (bw, bh), interpolation=cv2.INTER_LINEAR)
    mask = np.full((bh, bw), 255, dtype=np.uint8)
    centre = ((x1 + x2) // 2, (y1 + y2) // 2)
    return cv2.seamlessClone(patch, np.ascontiguousarray(original), mask, centre, cv2.NORMAL_CLONE)


def iter_paste_back(
    frames: Iterable[np.ndarray], original: np.ndarray, info: CropInfo
) -> Iterator[np.ndarray]:
    """Lazily paste each (h, w, 3) uint8 RGB frame; yields (H0, W0, 3) uint8 RGB frames."""
    base = to_rgb_uint8(original, "original image")
    _paste_box(info, base.shape[:2])
    for frame in frames:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"Rendered frames must be (h, w, 3) uint8 RGB; got {tuple(frame.shape)} {frame.dtype}."
            )
        yield paste_frame(frame, base, info)


def paste_back(frames: np.ndarray | Iterable[np.ndarray], original: np.ndarray, info: CropInfo) -> np.ndarray:
    """Paste every rendered frame into the original image (§15).

    Args:
        frames: (T, h, w, 3) uint8 RGB (or an iterable of (h, w, 3) frames).
        original: (H0, W0, 3) uint8 RGB (any format :func:`to_rgb_uint8` accepts).
        info: CropInfo of a full/extfull crop of ``original``.
    Returns:
        (T, H0, W0, 3) uint8 RGB; pixels outside ``info.paste_box`` equal the original's.
    """
    out = list(iter_paste_back(frames, original, info))
    if not out:
        raise ValueError("No frames to paste back.")
    return np.stack(out)
