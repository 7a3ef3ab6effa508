"""Frame post-processing shared by :mod:`.pipeline` (render_frames) and the writers above it:
float renderer output to uint8, even frame sides for video encoders, the output size of a face's
frames, and the background frames two-face renders paste onto (spec §14-§15).

``face`` arguments are :class:`~.pipeline.SourceFace` objects; only their attributes are read
(``original``, ``crop_info``, ``size``, ``paste_back_possible``), so this module imports nothing above it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .face.landmarks import to_rgb_uint8


def output_size(face: Any, paste_back: bool = True) -> tuple[int, int]:
    """(width, height) of the frames :func:`render_frames` yields; both always even.

    Video encoders (libx264/yuv420p, as in ComfyUI's Save Video) need even sides, so an odd side of
    the picture (full/extfull with paste-back) or of the crop's aspect ratio (``int(S * h / w)``
    rows) gets one more row/column at the bottom/right edge (see :func:`pad_to_even`).
    """
    width, height = natural_size(face, paste_back)
    return width + width % 2, height + height % 2


def natural_size(face: Any, paste_back: bool) -> tuple[int, int]:
    """(width, height) before evening: the picture's own size, or S by the crop's aspect (§14)."""
    if paste_back and face.paste_back_possible:
        h0, w0 = face.original.shape[:2]
        return w0, h0
    return face.crop_info.output_size(face.size)


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """``(b, H, W, 3)`` -> ``(b, H + H % 2, W + W % 2, 3)``: an odd side gets a copy of its last
    row/column at the bottom/right edge, so every pixel (and the face) stays where it was."""
    h, w = frames.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(b, 3, S, S)`` float 0..1 -> ``(b, S, S, 3)`` uint8 (round half to even in float32, §14)."""
    x = frames.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    return np.clip(np.rint(x * np.float32(255.0)), 0, 255).astype(np.uint8)


def background_frame(background: Any, index: int, face: Any) -> np.ndarray:
    """Frame ``min(index, N - 1)`` of ``background`` ``(N, H, W, 3)`` as ``(H0, W0, 3)`` uint8.

    ``H, W`` must be the picture's size, or its even-padded size (a render's output), which is cut
    back to the picture. Only that one frame is converted.
    """
    h0, w0 = face.original.shape[:2]
    n = len(background) if getattr(background, "ndim", 0) == 4 else 0
    if n == 0 or tuple(background.shape[1:3]) not in ((h0, w0), (h0 + h0 % 2, w0 + w0 % 2)) \
            or background.shape[3] != 3:
        raise ValueError(f"The background must be frames of the same picture, {w0}x{h0} pixels (a render of another "
                         f"face of it); got shape {tuple(getattr(background, 'shape', ()))}.")
    index = min(int(index), n - 1)
    frame = background[index, :h0, :w0]
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    return to_rgb_uint8(frame, f"background frame {index}")   # NaN or infinite pixels: a sentence, not black


def check_background(background: Any, face: Any) -> None:
    """Before any rendering: every frame of ``background`` ``(N, H, W, 3)`` fits the picture
    (:func:`background_frame`) and holds finite values (a NaN frame would be pasted as black)."""
    background_frame(background, 0, face)
    for index in range(len(background)):
        frame = background[index]
        finite = torch.isfinite(frame).all() if isinstance(frame, torch.Tensor) else np.isfinite(frame).all()
        if not bool(finite):
            raise ValueError(f"Background frame {index} contains NaN or infinite values, which would paste as black; "
                             "check the node that made the background frames.")
