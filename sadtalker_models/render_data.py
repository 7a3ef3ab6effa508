"""Renderer input assembly (spec §10.2-§10.4): semantics windows and camera sequences.

The reference pads the target windows to ``B*L`` and reshapes them to ``(B, L, C, 27)`` for its
batch loop; frames do not depend on the batch, so this module returns ``(T, C, 27)`` and
``(T,)`` camera sequences and the renderer batches them as it likes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .options import is_full_frame

logger = logging.getLogger(__name__)

SEMANTIC_RADIUS = 13
WINDOW = 2 * SEMANTIC_RADIUS + 1  # 27


@dataclass
class RenderInputs:
    """What the renderer needs besides the source image.

    source_semantics: ``(1, C, 27)`` float32, C = 70 (crop/extcrop/resize) or 73 (full/extfull).
    target_semantics: ``(T, C, 27)`` float32, window of radius 13 around each frame.
    yaw, pitch, roll: ``(T,)`` float32 degrees replacing the driving angles, or None.
    """

    source_semantics: torch.Tensor
    target_semantics: torch.Tensor
    yaw: torch.Tensor | None = None
    pitch: torch.Tensor | None = None
    roll: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.target_semantics.shape[0])


def camera_sequence(degrees: Sequence[float], num_frames: int) -> torch.Tensor:
    """Per-frame camera angles from a list of key angles in degrees (spec §10.4), ``(T,)`` float32.

    One value: constant. Several: the total absolute change spread evenly over ``T - 1`` steps;
    each segment is NumPy ``arange(d_j, d_{j+1}, ±step)`` (end excluded), the concatenation cut
    to T or padded with its last value. So ``[0, 20]`` over 8 frames gives
    ``0, 2.857, ..., 17.143, 17.143``.

    Where the reference divides by zero, this gives: ``T = 1`` -> ``[d_0]``; a zero-length segment
    (``d_{j+1} = d_j``) contributes no frames (it is skipped); all key angles equal -> constant.
    """
    t = int(num_frames)
    if t < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    d = [float(v) for v in degrees]
    if not d:
        raise ValueError("The camera angle list is empty; give at least one angle in degrees.")
    if not all(np.isfinite(d)):
        raise ValueError(f"Camera angles must be finite numbers of degrees; got {list(degrees)}.")
    if len(d) == 1 or t == 1:
        return torch.full((t,), d[0], dtype=torch.float64).to(torch.float32)
    total = 0.0
    for a, b in zip(d[:-1], d[1:]):
        total += abs(b - a)
    per_frame = total / (t - 1)
    values: list[float] = []
    for a, b in zip(d[:-1], d[1:]):
        if b == a:
            continue
        step = per_frame * abs(b - a) / (b - a)
        values.extend(np.arange(a, b, step).tolist())
    if not values:
        values = [d[-1]]
    if len(values) >= t:
        values = values[:t]
    else:
        values += [values[-1]] * (t - len(values))
    return torch.from_numpy(np.asarray(values, dtype=np.float64).astype(np.float32))


def semantic_windows(rows: torch.Tensor) -> torch.Tensor:
    """``(T, C)`` -> ``(T, C, 27)``: rows ``clamp(i-13 .. i+13, 0, T-1)``; column 13 is frame i."""
    t = rows.shape[0]
    idx = (torch.arange(t)[:, None] + torch.arange(-SEMANTIC_RADIUS, SEMANTIC_RADIUS + 1)[None, :]).clamp_(0, t - 1)
    return rows[idx].transpose(1, 2).contiguous()


def build_render_inputs(
    source_coeff: torch.Tensor,
    coeffs: torch.Tensor,
    preprocess: str = "crop",
    still: bool = False,
    expression_scale: float = 1.0,
    yaw: Sequence[float] | None = None,
    pitch: Sequence[float] | None = None,
    roll: Sequence[float] | None = None,
) -> RenderInputs:
    """Assemble source/target semantics and camera sequences (spec §10.2-§10.4).

    Args:
        source_coeff: the source ``coeff_3dmm`` ``(1, 73)``.
        coeffs: predicted coefficients ``(T, 70)`` (extra columns are ignored).
        preprocess: crop mode; any mode containing ``full`` gives C = 73.
        still: freeze the pose (and in full modes the crop scale/translation) to the source's.
        expression_scale: multiplies the 64 target expression coefficients (float32).
        yaw, pitch, roll: key angle lists in degrees (None or empty: no override).

    Returns:
        :class:`RenderInputs`.
    """
    full = is_full_frame(preprocess)
    c = 73 if full else 70
    src = torch.as_tensor(source_coeff).detach().to("cpu", torch.float32)
    if src.ndim == 1:
        src = src[None]
    if src.ndim != 2 or src.shape[1] < c:
        raise ValueError(
            f"source_coeff must be the source face's coeff_3dmm shaped (1, 73) (at least {c} columns for "
            f"preprocess {preprocess!r}); got {tuple(src.shape)}."
        )
    src = src[0:1, :c]
    gen = torch.as_tensor(coeffs).detach().to("cpu", torch.float32)
    if gen.ndim != 2 or gen.shape[1] < 70 or gen.shape[0] < 1:
        raise ValueError(f"coeffs must be per-frame coefficients shaped (T, 70) with T >= 1; got {tuple(gen.shape)}.")
    if not np.isfinite(float(expression_scale)):
        raise ValueError(f"expression_scale must be a finite number; got {expression_scale!r}.")
    t = gen.shape[0]

    target = gen[:, :70].numpy().copy()
    target[:, :64] = target[:, :64] * np.float32(expression_scale)
    src_np = src.numpy()
    if full:
        target = np.concatenate([target, np.repeat(src_np[:, 70:73], t, axis=0)], axis=1)
    if still:
        target[:, 64:] = src_np[:, 64:c]
    target_t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))

    def _cam(v: Sequence[float] | None) -> torch.Tensor | None:
        if v is None or len(v) == 0:
            return None
        return camera_sequence(v, t)

    return RenderInputs(
        source_semantics=src[:, :, None].repeat(1, 1, WINDOW).contiguous(),
        target_semantics=semantic_windows(target_t),
        yaw=_cam(yaw),
        pitch=_cam(pitch),
        roll=_cam(roll),
    )
