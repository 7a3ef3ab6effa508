"""Motion controls applied to predicted coefficients: head-motion scale and blink rate.

These are post-processing steps around :func:`coefficients.audio_to_coefficients`: they never
change what the networks predict, only the pose that is rendered (``scale_head_motion``) or the
blink ratio fed to ExpNet (``blink_ratio_at_rate``).

Coefficients are ``(T, 70) = [expression 64 | angles 3 | translation 3]`` at 25 fps.
"""

from __future__ import annotations

import math

import torch

from .coefficients import BLINK_PULSE, make_generator
from .options import FPS

#: Highest blink rate accepted (a 5-frame pulse plus 2 open frames is 7 frames: ~214 per minute).
MAX_BLINKS_PER_MINUTE = 120.0
#: Each gap between blink starts is the mean gap times a factor drawn uniformly from this range.
BLINK_JITTER = (0.7, 1.3)


def scale_head_motion(coeffs: torch.Tensor, source_coeff: torch.Tensor, scale: float) -> torch.Tensor:
    """Scale the head motion around the source picture's pose.

    Args:
        coeffs: ``(T, 70)`` per-frame coefficients; columns 64:70 are angles (radians) and translation.
        source_coeff: the source face's ``coeff_3dmm`` ``(1, 73)`` (or ``(1, 70)``).
        scale: 0 = the source pose on every frame (a still head), 1 = unchanged, > 1 = livelier.

    Returns:
        A new ``(T, 70)`` float32 tensor: ``pose' = source_pose + scale * (pose - source_pose)``;
        the expression columns are copied unchanged.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"The head-motion scale must be a number >= 0 (0 = still, 1 = as predicted); got {scale!r}.")
    out = torch.as_tensor(coeffs).detach().to("cpu", torch.float32).clone()
    if out.ndim != 2 or out.shape[1] < 70:
        raise ValueError(f"coeffs must be per-frame coefficients shaped (T, 70); got {tuple(out.shape)}.")
    src = torch.as_tensor(source_coeff).detach().to("cpu", torch.float32).reshape(1, -1)
    if src.shape[1] < 70:
        raise ValueError(f"source_coeff must be the (1, 73) coeff_3dmm of the source face; got {tuple(src.shape)}.")
    if scale != 1.0:
        pose0 = src[:, 64:70]
        out[:, 64:70] = pose0 + (out[:, 64:70] - pose0) * scale
    return out


def blink_ratio_at_rate(num_frames: int, blinks_per_minute: float,
                        generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Blink ratio ``(1, T, 1)`` float32 with about ``blinks_per_minute`` blinks.

    Each blink is the same 5-frame pulse as the natural schedule (``0.5, 0.9, 1.0, 0.9, 0.5``).
    Blink starts are ``60 * 25 / rate`` frames apart on average, each gap scaled by a factor drawn
    uniformly from :data:`BLINK_JITTER` on ``generator`` (so a seed reproduces it); the first
    blink comes after a random part of one gap. As in the natural schedule, a pulse is written only
    if it ends before the last frame. A rate of 0 gives no blink.
    """
    t = int(num_frames)
    if t < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    rate = float(blinks_per_minute)
    if not math.isfinite(rate) or not 0 <= rate <= MAX_BLINKS_PER_MINUTE:
        raise ValueError(f"The blink rate must be between 0 and {MAX_BLINKS_PER_MINUTE:g} blinks per minute; "
                         f"got {blinks_per_minute!r}.")
    ratio = torch.zeros(1, t, 1, dtype=torch.float32)
    if rate == 0:
        return ratio
    gen = make_generator(generator)
    pulse = torch.tensor(BLINK_PULSE, dtype=torch.float32)
    width = len(BLINK_PULSE)
    gap = 60.0 * FPS / rate
    low, high = BLINK_JITTER

    def draw(a: float, b: float) -> float:
        return a + (b - a) * float(torch.rand(1, generator=gen).item())

    start = int(round(gap * draw(0.2, 1.0)))
    while start + width <= t - 1:
        ratio[0, start:start + width, 0] = pulse
        start += max(width + 2, int(round(gap * draw(low, high))))
    return ratio


def count_blinks(ratio: torch.Tensor) -> int:
    """Number of blink pulses in a blink ratio (any shape holding T values): rises from 0."""
    r = torch.as_tensor(ratio).detach().float().reshape(-1)
    closed = r > 0
    return int((closed[1:] & ~closed[:-1]).sum().item() + int(bool(closed[:1].any())))
