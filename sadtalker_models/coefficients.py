"""Stages 5-8: blink schedule, ExpNet, PoseVAE, pose smoothing and assembly (spec §6-§9).

``audio_to_coefficients`` turns mel windows ``(1,T,1,80,16)`` and the source ``coeff_3dmm`` into
per-frame coefficients ``(T,70) = [expression 64 | angles 3 | translation 3]``.

Randomness (the blink gaps and the PoseVAE latent noise) comes only from an explicit
``torch.Generator`` (or an int seed): never from Python's ``random`` module nor torch's global RNG.
The reference drew blink gaps with ``random.choice``; here the same distribution (uniform over the
integer range) is drawn with ``torch.randint`` on the generator, so a given seed is reproducible
but does not give the reference's exact blink positions. Draw order: blink gaps first, then one
``randn(1, 64)`` per pose chunk in chunk order (as the reference's CPU generator did).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.signal import savgol_filter

from .audio import MelWindows
from .networks import device_and_dtype

logger = logging.getLogger(__name__)

BLINK_PULSE = (0.5, 0.9, 1.0, 0.9, 0.5)
EXP_CHUNK = 10
POSE_SEQ_LEN = 32
POSE_CHUNKS_PER_CALL = 4
LATENT_SIZE = 64
NUM_POSE_STYLES = 46
SAVGOL_WINDOW = 13
SAVGOL_ORDER = 2


@dataclass
class CoeffResult:
    """Output of :func:`audio_to_coefficients` (all float32, CPU).

    exp: ``(1, T, 64)`` ExpNet expression.
    pose_raw: ``(1, T, 6)`` source pose + PoseVAE motion, before smoothing.
    pose_smooth: ``(1, T, 6)`` after Savitzky-Golay (and before any reference pose is added).
    coeffs: ``(T, 70)`` ``[exp | pose_smooth]`` (+ reference pose motion when given).
    ratio: ``(1, T, 1)`` blink ratio fed to ExpNet.
    z: ``(chunks, 1, 64)`` PoseVAE noise used, one per decoded chunk.
    """

    exp: torch.Tensor
    pose_raw: torch.Tensor
    pose_smooth: torch.Tensor
    coeffs: torch.Tensor
    ratio: torch.Tensor
    z: torch.Tensor


def make_generator(seed_or_generator: torch.Generator | int | None) -> torch.Generator:
    """A CPU generator: the one given, one seeded with the int given, or a freshly seeded one."""
    if isinstance(seed_or_generator, torch.Generator):
        if seed_or_generator.device.type != "cpu":
            raise ValueError("Pass a CPU torch.Generator (torch.Generator() or torch.Generator('cpu')).")
        return seed_or_generator
    gen = torch.Generator()
    if seed_or_generator is None:
        gen.seed()  # non-deterministic, but local to this generator
    else:
        gen.manual_seed(int(seed_or_generator) & 0xFFFF_FFFF_FFFF_FFFF)
    return gen


# ----------------------------------------------------------------------------- blink (§6)

def blink_schedule(num_frames: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Random eye-blink ratio ``(1, T, 1)`` float32 (spec §6.1).

    5-frame pulses ``0.5, 0.9, 1.0, 0.9, 0.5``; before each pulse a gap ``g`` drawn uniformly from
    ``10 .. min(T//2, 70) - 1``; a pulse is written only if it ends before the last frame. ``T <= 20``
    gives no blink; when the gap range is empty (``T = 21``, where the reference crashes) there is
    no blink either.
    """
    t = int(num_frames)
    if t < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
    ratio = torch.zeros(1, t, 1, dtype=torch.float32)
    if t <= 20:
        return ratio
    low, high = min(10, t), min(t // 2, 70)
    if high <= low:
        return ratio
    gen = make_generator(generator)
    pulse = torch.tensor(BLINK_PULSE, dtype=torch.float32)
    f = 0
    while f < t:
        g = int(torch.randint(low, high, (1,), generator=gen).item())
        if f + g + 5 <= t - 1:
            ratio[0, f + g : f + g + 5, 0] = pulse
            f += g + 5
        else:
            break
    return ratio


def tile_to_length(seq: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Repeat rows of ``seq (N, ...)`` to exactly ``num_frames`` rows: ``floor(T/N)`` copies then
    the first ``T mod N`` rows (or just the first ``T`` rows when ``N >= T``) (spec §6.2, §9.3)."""
    n = seq.shape[0]
    if n == 0:
        raise ValueError("The reference sequence is empty; give a reference video with at least one frame.")
    if n >= num_frames:
        return seq[:num_frames]
    idx = torch.arange(num_frames) % n
    return seq[idx]


def check_reference(ref: torch.Tensor | np.ndarray, name: str, min_cols: int) -> torch.Tensor:
    """A reference video's per-frame coefficients as ``(N, >= min_cols)`` float32 CPU (a leading batch
    of 1 dropped); ValueError naming ``name`` for another shape, no frames, or NaN/infinite values."""
    r = torch.as_tensor(ref).detach().to("cpu", torch.float32)
    if r.ndim == 3 and r.shape[0] == 1:
        r = r[0]
    if r.ndim != 2 or r.shape[1] < min_cols or r.shape[0] < 1:
        raise ValueError(
            f"{name} must be per-frame 3DMM coefficients shaped (N, 73) (at least {min_cols} columns, N >= 1); "
            f"got {tuple(r.shape)}."
        )
    if not torch.isfinite(r).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return r


# ----------------------------------------------------------------------------- smoothing (§9.1)

def savgol_window(num_frames: int) -> int:
    """Savitzky-Golay window: 13 if ``T >= 13``, else the largest odd ``<= T``; 0 (no smoothing) for ``T <= 2``."""
    if num_frames <= 2:
        return 0
    if num_frames >= SAVGOL_WINDOW:
        return SAVGOL_WINDOW
    return num_frames if num_frames % 2 == 1 else num_frames - 1


def smooth_pose(pose: torch.Tensor) -> torch.Tensor:
    """Savitzky-Golay (order 2, ``interp`` edges) along time of ``pose (1, T, 6)`` -> ``(1, T, 6)`` float32.

    ``T <= 2`` is returned unchanged (the reference crashes there: no order-2 fit exists).
    """
    window = savgol_window(pose.shape[1])
    if window == 0:
        return pose.clone()
    out = savgol_filter(pose.detach().cpu().numpy(), window, SAVGOL_ORDER, axis=1, mode="interp")
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


# ----------------------------------------------------------------------------- networks (§7, §8)

def num_pose_chunks(num_frames: int) -> int:
    """Number of 32-frame PoseVAE chunks (and noise vectors) for ``T`` frames: ``ceil((T-1)/32)``."""
    return -(-(max(int(num_frames), 1) - 1) // POSE_SEQ_LEN)


def _windows(indiv_mels: torch.Tensor | MelWindows, start: int, stop: int) -> torch.Tensor:
    """Frames ``start .. stop-1`` of ``indiv_mels`` as ``(n, 1, 80, 16)``: a slice of a
    ``(1, T, 1, 80, 16)`` tensor, or windows computed on request by a :class:`MelWindows`."""
    if isinstance(indiv_mels, MelWindows):
        return indiv_mels.get(start, stop)[:, None]
    return indiv_mels[0, start:stop]


def _num_frames(indiv_mels: torch.Tensor | MelWindows) -> int:
    return indiv_mels.num_frames if isinstance(indiv_mels, MelWindows) else indiv_mels.shape[1]


def run_expnet(
    expnet: torch.nn.Module,
    indiv_mels: torch.Tensor | MelWindows,
    ref_exp: torch.Tensor,
    ratio: torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """ExpNet over all frames in chunks of 10 (spec §7.2).

    Args:
        indiv_mels: ``(1, T, 1, 80, 16)``, or a :class:`MelWindows` (then only one chunk of
            windows exists at a time); ref_exp: ``(1, T, 64)``; ratio: ``(1, T, 1)``.

    Returns:
        ``(1, T, 64)`` float32 on the CPU.
    """
    dev, dt = device_and_dtype(expnet, device, dtype)
    t = _num_frames(indiv_mels)
    out = torch.empty(1, t, ref_exp.shape[2])
    for i in range(0, t, EXP_CHUNK):
        mel = _windows(indiv_mels, i, i + EXP_CHUNK).to(dev, dt)
        ref = ref_exp[0, i : i + EXP_CHUNK].to(dev, dt)
        rat = ratio[0, i : i + EXP_CHUNK].to(dev, dt)
        out[0, i : i + EXP_CHUNK] = expnet(mel, ref, rat).float().cpu()
    return out


def run_posevae(
    posevae: torch.nn.Module,
    indiv_mels: torch.Tensor | MelWindows,
    pose_ref: torch.Tensor,
    pose_style: int,
    z: torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """PoseVAE motion for every frame, chunked as in spec §8.2.

    Args:
        indiv_mels: ``(1, T, 1, 80, 16)`` or a :class:`MelWindows` (windows made per call).
        pose_ref: ``(1, 6)`` source angles + translation.
        pose_style: 0..45.
        z: ``(num_pose_chunks(T), 1, 64)`` noise, one per chunk in order.

    Returns:
        ``pose = pose_ref + motion`` ``(1, T, 6)`` float32 on the CPU; frame 0 has zero motion.
    """
    dev, dt = device_and_dtype(posevae, device, dtype)
    t = _num_frames(indiv_mels)
    n_full, rem = divmod(t - 1, POSE_SEQ_LEN)
    ref_d = pose_ref.to(dev, dt)
    motion = torch.zeros(1, t, 6)  # frame 0 has no motion
    # Full chunks: windows 1+32c .. 32+32c, decoded a few chunks per call (per-sample ops only).
    for c0 in range(0, n_full, POSE_CHUNKS_PER_CALL):
        c1 = min(c0 + POSE_CHUNKS_PER_CALL, n_full)
        first, stop = 1 + POSE_SEQ_LEN * c0, 1 + POSE_SEQ_LEN * c1
        mels = _windows(indiv_mels, first, stop).reshape(c1 - c0, POSE_SEQ_LEN, 1, 80, 16)
        out = posevae.decode_chunk(mels.to(dev, dt), z[c0:c1, 0].to(dev, dt), ref_d.expand(c1 - c0, -1), pose_style)
        motion[:, first:stop] = out.float().cpu().reshape(1, -1, 6)
    if rem > 0:
        # Remainder: the last 32 windows among 1..T-1 (fewer when T-1 < 32; left-padded in the net).
        mels = _windows(indiv_mels, max(1, t - POSE_SEQ_LEN), t)[None]
        out = posevae.decode_chunk(mels.to(dev, dt), z[n_full].to(dev, dt), ref_d, pose_style)
        motion[:, t - rem :] = out.float().cpu()[:, -rem:]
    return pose_ref.float().cpu()[:, None, :] + motion


# ----------------------------------------------------------------------------- all of §6-§9

def audio_to_coefficients(
    expnet: torch.nn.Module,
    posevae: torch.nn.Module,
    indiv_mels: torch.Tensor | MelWindows,
    source_coeff: torch.Tensor,
    pose_style: int = 0,
    generator: torch.Generator | int | None = None,
    blink: bool = True,
    blink_ratio: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    ref_eyeblink: torch.Tensor | None = None,
    ref_pose: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    expression_reference: torch.Tensor | None = None,
    expression_strength: float = 1.0,
) -> CoeffResult:
    """Mel windows + source coefficients -> per-frame coefficients (spec §6-§9).

    Args:
        indiv_mels: ``(1, T, 1, 80, 16)`` (``(T, 80, 16)`` is accepted too), or a :class:`MelWindows`
            for long audio: its windows are made chunk by chunk, so memory stays bounded, and the
            results are identical to passing all the windows as one tensor.
        source_coeff: the source ``coeff_3dmm`` ``(1, 73)`` (``(1, 70)`` also works).
        pose_style: PoseVAE style 0..45.
        generator: CPU ``torch.Generator`` or int seed for the blink gaps and the pose noise
            (None: a fresh non-deterministic generator).
        blink: draw a random blink schedule (ignored when ``blink_ratio`` or ``ref_eyeblink`` is given).
        blink_ratio: explicit ratio ``(1, T, 1)`` (or ``(T,)``/``(T, 1)``).
        z: explicit pose noise ``(num_pose_chunks(T), 1, 64)``; drawn from ``generator`` when None.
        ref_eyeblink: ``(N, 73)`` coefficients of a reference video; its expression (cols 0:64),
            tiled to T, replaces the source expression fed to ExpNet, and the blink ratio is zero.
        ref_pose: ``(N, 73)``; its pose motion relative to its first frame (cols 64:70, tiled to T)
            is added to the smoothed pose.
        device, dtype: where the networks run (default: where their parameters are).
        expression_reference: the 3DMM expression of another picture, ``(1, 64)`` or its whole
            ``coeff_3dmm`` ``(1, 73)``/``(1, 70)`` (only columns 0:64 are used): the expression ExpNet
            moves the lips around. ExpNet's reference becomes ``source + expression_strength *
            (reference - source)`` on every frame (with ``ref_eyeblink``, that offset is added to the
            video's per-frame expression). The pose is not touched.
        expression_strength: 0 = the source's own expression (the result is bit-identical to no
            reference), 1 = the reference's expression, in between a blend, above 1 exaggerated.

    Returns:
        :class:`CoeffResult`; ``coeffs`` is ``(T, 70)`` float32.
    """
    mels = _mel_input(indiv_mels)
    t = _num_frames(mels)
    src = torch.as_tensor(source_coeff).detach().to("cpu", torch.float32).reshape(1, -1)
    if src.shape[1] < 70:
        raise ValueError(f"source_coeff must be the (1, 73) coeff_3dmm of the source face; got {tuple(source_coeff.shape)}.")
    if not 0 <= int(pose_style) < NUM_POSE_STYLES:
        raise ValueError(f"pose_style must be between 0 and {NUM_POSE_STYLES - 1}; got {pose_style}.")

    gen = None

    def _gen() -> torch.Generator:   # made on first use: the blink schedule draws first, then the pose noise
        nonlocal gen
        if gen is None:
            gen = make_generator(generator)
        return gen

    ref_pose_t = None
    if ref_pose is not None:
        ref_pose_t = tile_to_length(check_reference(ref_pose, "ref_pose", 70)[:, 64:70], t)
    offset = expression_offset(src, expression_reference, expression_strength)
    ref, ratio = _expression_reference(src, t, ref_eyeblink, blink_ratio, blink, _gen)
    if offset is not None:
        ref[0, :, :64] += offset
    z_t = _pose_noise(z, t, _gen)

    with torch.inference_mode():
        exp = run_expnet(expnet, mels, ref[:, :, :64], ratio, device, dtype)
        pose_raw = run_posevae(posevae, mels, ref[:, 0, 64:70], int(pose_style), z_t, device, dtype)
    pose_smooth = smooth_pose(pose_raw)
    coeffs = torch.cat([exp, pose_smooth], dim=2)[0].clone()
    if ref_pose_t is not None:
        coeffs[:, 64:70] += ref_pose_t - ref_pose_t[0:1]
    return CoeffResult(exp=exp, pose_raw=pose_raw, pose_smooth=pose_smooth, coeffs=coeffs, ratio=ratio, z=z_t)


def _mel_input(indiv_mels: torch.Tensor | MelWindows) -> torch.Tensor | MelWindows:
    """:class:`MelWindows` as they are; a tensor ``(T, 80, 16)`` or ``(1, T, 1, 80, 16)`` as the latter
    (float32, CPU), with a readable error for other shapes."""
    if isinstance(indiv_mels, MelWindows):
        return indiv_mels
    mels = torch.as_tensor(indiv_mels).detach().to("cpu", torch.float32)
    if mels.ndim == 3:
        mels = mels[None, :, None]
    if mels.ndim != 5 or mels.shape[0] != 1 or mels.shape[2:] != (1, 80, 16) or mels.shape[1] < 1:
        raise ValueError(f"indiv_mels must be shaped (1, T, 1, 80, 16) with T >= 1; got {tuple(indiv_mels.shape)}.")
    return mels


def _expression_reference(src: torch.Tensor, t: int, ref_eyeblink: torch.Tensor | None,
                          blink_ratio: torch.Tensor | None, blink: bool,
                          generator: Callable[[], torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """ExpNet's reference ``(1, T, 70)`` (the source's coefficients, with a reference video's expression
    when ``ref_eyeblink`` is given) and the blink ratio ``(1, T, 1)`` (zero with ``ref_eyeblink``)."""
    ref = src[:, :70].expand(t, -1).clone()[None]
    if ref_eyeblink is not None:
        eb = tile_to_length(check_reference(ref_eyeblink, "ref_eyeblink", 64), t)
        ref[0, :, :64] = eb[:, :64]
        return ref, torch.zeros(1, t, 1)
    if blink_ratio is not None:
        ratio = torch.as_tensor(blink_ratio).detach().to("cpu", torch.float32).reshape(1, -1, 1)
        if ratio.shape[1] != t:
            raise ValueError(f"blink_ratio has {ratio.shape[1]} frames but the audio has {t}.")
        return ref, ratio
    return ref, blink_schedule(t, generator()) if blink else torch.zeros(1, t, 1)


def check_expression_reference(expression_reference: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A picture's expression as ``(1, 64)`` float32 CPU, from ``(1, 64)``/``(64,)`` or a whole
    ``coeff_3dmm`` ``(1, 73)``/``(1, 70)``; ValueError with a sentence for another shape or NaN/infinite values."""
    ref = torch.as_tensor(expression_reference).detach().to("cpu", torch.float32)
    if ref.ndim == 2 and ref.shape[0] == 1:
        ref = ref[0]
    if ref.ndim != 1 or ref.shape[0] not in (64, 70, 73):
        raise ValueError("The expression reference must be a picture's 3DMM expression shaped (1, 64), or its whole "
                         f"coeff_3dmm (1, 73) (prepare the picture's face first); got {tuple(ref.shape)}.")
    if not torch.isfinite(ref).all():
        raise ValueError("The expression reference contains NaN or infinite values; prepare the reference "
                         "picture's face again.")
    return ref[None, :64].clone()


def expression_offset(source: torch.Tensor, expression_reference: torch.Tensor | np.ndarray | None,
                      strength: float = 1.0) -> torch.Tensor | None:
    """``strength * (reference - source)`` over the 64 expression coefficients, ``(1, 64)`` float32, or
    None (nothing to add) without a reference or with strength 0. ``source``: the source's coeff_3dmm
    ``(1, >= 64)``. The reference and the strength are checked even when the result is None."""
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        strength = math.nan
    if not math.isfinite(strength):
        raise ValueError(f"The expression strength must be a finite number (0 = the source's own expression, 1 = "
                         f"the reference's); got {strength!r}.")
    if expression_reference is None:
        return None
    ref = check_expression_reference(expression_reference)
    if strength == 0.0:
        return None
    src = torch.as_tensor(source).detach().to("cpu", torch.float32).reshape(1, -1)[:, :64]
    return (ref - src) * strength


def _pose_noise(z: torch.Tensor | None, t: int, generator: Callable[[], torch.Generator]) -> torch.Tensor:
    """PoseVAE noise ``(num_pose_chunks(T), 1, 64)``: ``z`` checked, or drawn from ``generator()``."""
    chunks = num_pose_chunks(t)
    if z is None:
        if not chunks:
            return torch.zeros(0, 1, LATENT_SIZE)
        g = generator()
        return torch.stack([torch.randn(1, LATENT_SIZE, generator=g) for _ in range(chunks)])
    z_t = torch.as_tensor(z).detach().to("cpu", torch.float32)
    if z_t.ndim == 2:
        z_t = z_t[:, None]
    if z_t.shape != (chunks, 1, LATENT_SIZE):
        raise ValueError(f"z must be shaped ({chunks}, 1, {LATENT_SIZE}) for {t} frames; got {tuple(z_t.shape)}.")
    return z_t
