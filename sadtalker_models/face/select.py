"""Choosing which face of a picture talks, and drawing the faces found.

Faces are ``(68, 2)`` float32 landmark sets in pixel ``(x, y)``. They are numbered from left to
right (by the centre of their landmark box), the numbering the preview and the error messages use.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Faces whose share of the mask is within this of the best one's are covered equally (ambiguous).
MASK_TIE = 0.01


def detect_all_faces(detector: Any, image: np.ndarray) -> list[np.ndarray]:
    """Every face of ``image`` (H, W, 3) uint8 as ``(68, 2)`` landmarks, left to right.

    Uses the detector's ``detect_all`` when it has one; otherwise its single (largest) face.
    """
    if hasattr(detector, "detect_all"):
        faces = list(detector.detect_all(image))
    else:
        one = detector.detect(image)
        faces = [] if one is None else [one]
    return sorted((np.asarray(f, dtype=np.float32) for f in faces), key=lambda f: float(f[:, 0].min() + f[:, 0].max()))


def face_box(lm68: np.ndarray) -> tuple[int, int, int, int]:
    """Integer landmark box ``(x0, y0, x1, y1)`` of ``(68, 2)`` landmarks."""
    x0, y0 = np.floor(lm68.min(axis=0)).astype(int)
    x1, y1 = np.ceil(lm68.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1), int(y1)


def _area(lm68: np.ndarray) -> float:
    span = lm68.max(axis=0) - lm68.min(axis=0)
    return float(span[0]) * float(span[1])


def mask_to_array(mask: Any, height: int, width: int) -> np.ndarray:
    """A mask as ``(height, width)`` bool (values 0..1, numpy or torch).

    Accepts ``(H, W)``, a ComfyUI MASK batch ``(B, H, W)`` (its first mask is used) and either with
    a trailing channel of 1 (``(H, W, 1)``, ``(B, H, W, 1)``). A mask of another size is stretched
    to the picture (nearest neighbour). ValueError, with the shape, for an empty batch or any
    other shape, and for NaN values.
    """
    if hasattr(mask, "detach"):
        mask = mask.detach().float().cpu().numpy()
    arr = np.asarray(mask, dtype=np.float32)
    shape = tuple(arr.shape)
    if arr.ndim in (3, 4) and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        if arr.shape[0] > 1:
            logger.info("The face mask batch has %d masks; the first is used.", arr.shape[0])
        arr = arr[0] if arr.shape[0] else arr.reshape(0, 0)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"The face mask must be one mask [H, W] (or a MASK batch [B, H, W]) with pixels; got shape "
                         f"{shape}.")
    if not np.isfinite(arr).all():
        raise ValueError("The face mask contains NaN or infinite values; paint it again.")
    if arr.shape != (height, width):
        logger.info("Face mask %dx%d stretched to the picture's %dx%d.", arr.shape[1], arr.shape[0], width, height)
        arr = cv2.resize(arr, (width, height), interpolation=cv2.INTER_NEAREST)
    return arr > 0.5


def choose_face(faces: Sequence[np.ndarray], index: int | None = None, mask: np.ndarray | None = None,
                what: str = "source image") -> int:
    """Which of ``faces`` (left to right) talks.

    Args:
        faces: landmark sets ``(68, 2)``, ordered left to right.
        index: ``None`` or negative = the largest face; ``0, 1, ...`` = that face from the left.
        mask: ``(H, W)`` bool; when given, the face with the largest part of its landmark box
            inside the mask (``index`` is then ignored).

    Returns:
        The position in ``faces``. Raises ValueError (saying how many faces were found) when the
        index is out of range or no face lies in the mask.
    """
    n = len(faces)
    if n == 0:
        raise ValueError(f"No face was found in the {what}. Use a picture with a clearly visible, roughly frontal face.")
    if mask is not None:
        shares = []
        for lm in faces:
            x0, y0, x1, y1 = face_box(lm)
            x0, y0 = max(x0, 0), max(y0, 0)
            region = mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
            shares.append(float(region.mean()) if region.size else 0.0)
        best = int(np.argmax(shares))
        if shares[best] <= 0.0:
            raise ValueError(f"None of the {n} face(s) found in the {what} lies inside the mask; paint the mask over "
                             "the face that should talk (the 'faces' preview numbers every face found).")
        tied = [i for i, share in enumerate(shares) if share >= shares[best] - MASK_TIE]
        if len(tied) > 1:
            raise ValueError(f"The mask covers faces {', '.join(map(str, tied))} of the {what} equally "
                             f"({shares[best]:.0%} of each); paint it over only the face that should talk, or leave "
                             "the mask out and pick the face with face_index.")
        return best
    if index is None or int(index) < 0:
        return int(np.argmax([_area(lm) for lm in faces]))
    index = int(index)
    if index >= n:
        raise ValueError(f"Face index {index} is out of range: {n} face(s) were found in the {what} (indices 0 to "
                         f"{n - 1}, left to right). Pick one of those, or -1 for the largest face.")
    return index


def draw_faces(image: np.ndarray, faces: Sequence[np.ndarray], chosen: int | None) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with every face's box and index; the chosen one in green.

    Returns ``(H, W, 3)`` uint8; the others are drawn in red with a thinner line.
    """
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 300))
    for i, lm in enumerate(faces):
        x0, y0, x1, y1 = face_box(lm)
        is_chosen = i == chosen
        color = (0, 255, 0) if is_chosen else (255, 40, 40)
        line = thick * 2 if is_chosen else thick
        cv2.rectangle(out, (x0, y0), (x1, y1), color, line)
        scale = max(0.5, (y1 - y0) / 160.0)
        label = str(i)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, line)
        ty = y0 - 4 if y0 - th - 4 >= 0 else min(h - 1, y1 + th + 4)
        cv2.rectangle(out, (x0, ty - th - base), (x0 + tw + 4, ty + base), color, -1)
        cv2.putText(out, label, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), line, cv2.LINE_AA)
    return out
