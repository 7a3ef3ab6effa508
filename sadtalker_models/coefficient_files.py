"""The coefficient file: :class:`~.pipeline.Coefficients` saved as a ``.safetensors`` file.

Tensors ``coeffs`` ``(T, 70)``, optional ``blink`` ``(T,)``, ``source_pose`` ``(3,)``, ``source_expression``
``(64,)`` (the source face's expression, for the expression curve) and ``audio``
``(1, C, n)`` (float32, the :class:`~.pipeline.Audio` waveform with a leading 1); JSON-able metadata ``format`` (:data:`COEFF_FORMAT`), ``fps``, ``still``,
``source``, ``info`` and, with audio, ``sample_rate``. Written by the Save Coefficients node and
``python -m sadtalker_models --save-coefficients``; read by Load Coefficients and ``--coefficients``.
"""

from __future__ import annotations

import json
import math
import os

from .options import FPS

COEFF_FORMAT = "sadtalker-coefficients/1"


#: Accepted ranges of a coefficient file's metadata (the frames are made at 25 fps).
FPS_RANGE = (1.0, 240.0)
SAMPLE_RATE_RANGE = (8000, 384000)
CHANNEL_RANGE = (1, 8)


def save_coefficients(coeffs, path: str | os.PathLike) -> None:
    """Write ``coeffs`` (a :class:`~.pipeline.Coefficients`, with its blink, pose and audio) to ``path``.

    Written under a temporary name beside ``path`` and renamed (:func:`~.video.atomic_output`), so a
    failure or an interrupt never leaves a half file and a file already at ``path`` stays as it was.
    Raises ValueError (naming the file) when it cannot be written.
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from .video import atomic_output

    path = os.fspath(path)
    tensors = {"coeffs": coeffs.coeffs.detach().float().cpu().contiguous()}
    if coeffs.blink is not None:
        tensors["blink"] = coeffs.blink.detach().float().cpu().reshape(-1).contiguous()
    if coeffs.source_pose is not None:
        tensors["source_pose"] = coeffs.source_pose.detach().float().cpu().reshape(3).contiguous()
    if getattr(coeffs, "source_expression", None) is not None:
        tensors["source_expression"] = coeffs.source_expression.detach().float().cpu().reshape(64).contiguous()
    meta = {"format": COEFF_FORMAT, "fps": str(coeffs.fps), "still": str(bool(coeffs.still)), "source": coeffs.source,
            "info": json.dumps(coeffs.info, default=str)}
    if coeffs.audio is not None:   # stored (1, C, n), as files saved before the library's Audio held it
        tensors["audio"] = torch.from_numpy(np.ascontiguousarray(coeffs.audio.waveform, dtype=np.float32))[None]
        meta["sample_rate"] = str(int(coeffs.audio.sample_rate))
    if os.path.isdir(path):
        raise ValueError(f"Cannot save the coefficients to {path}: it is a folder; give a file name ending in "
                         ".safetensors.")
    try:
        with atomic_output(path) as tmp:
            save_file(tensors, os.fspath(tmp), metadata=meta)
    except Exception as err:  # noqa: BLE001 - OSError, or safetensors' own error for a full disk
        raise ValueError(f"Could not save the coefficients to {path} ({getattr(err, 'strerror', None) or err}); "
                         "check that the folder is writable and the disk has room.") from err


def _number(meta: dict, field: str, name: str, default: str | None = None) -> float:
    """A metadata field as a finite float; ValueError naming the file and the field."""
    text = meta.get(field, default)
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value):
        raise ValueError(f"Coefficient file {name} is damaged: its '{field}' is {text!r}, not a number; save the "
                         "coefficients again.")
    return value


def _check_range(value: float, bounds: tuple, field: str, name: str, unit: str) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"Coefficient file {name} is damaged: its '{field}' is {value:g} {unit}, outside "
                         f"{bounds[0]:g}..{bounds[1]:g}; save the coefficients again.")


def _validated(tensors: dict, meta: dict, name: str) -> dict:
    """Every value of a read coefficient file checked (shapes, ranges, finiteness) -> the fields of a
    :class:`~.pipeline.Coefficients` (audio as ``(waveform (C, n) float32, sample_rate)`` or None)."""
    import torch

    def damaged(what: str) -> ValueError:
        return ValueError(f"Coefficient file {name} is damaged: {what}; save the coefficients again.")

    coeffs = tensors["coeffs"]
    if coeffs.ndim != 2 or coeffs.shape[1] != 70 or coeffs.shape[0] < 1:
        raise ValueError(f"{name} holds coefficients of shape {tuple(coeffs.shape)}; expected (T, 70).")
    coeffs = coeffs.float()
    if not bool(torch.isfinite(coeffs).all()):
        raise damaged("its 'coeffs' contain NaN or infinite values, which would render black frames")
    frames = coeffs.shape[0]
    fps = _number(meta, "fps", name, str(FPS))
    _check_range(fps, FPS_RANGE, "fps", name, "frames per second")
    def vector(key: str, size: int, expected: str):
        """Optional tensor ``key`` as ``(size,)`` float32, or None; its length and values checked."""
        value = tensors.get(key)
        if value is None:
            return None
        if value.numel() != size:
            raise damaged(f"its '{key}' has {value.numel()} values{expected}")
        value = value.float().reshape(size)
        if not bool(torch.isfinite(value).all()):
            raise damaged(f"its '{key}' holds NaN or infinite values")
        return value

    blink = vector("blink", frames, f" for {frames} frames")
    pose = vector("source_pose", 3, "; it must be 3 angles (pitch, yaw, roll)")
    expression = vector("source_expression", 64, "; it must be 64")
    audio = None
    if "audio" in tensors:
        if "sample_rate" not in meta:
            raise damaged("it holds audio without a 'sample_rate'")
        rate = _number(meta, "sample_rate", name)
        _check_range(rate, SAMPLE_RATE_RANGE, "sample_rate", name, "Hz")
        if rate != int(rate):
            raise damaged(f"its 'sample_rate' {rate:g} is not a whole number of samples per second")
        wave = tensors["audio"]
        if wave.ndim == 3 and wave.shape[0] == 1:
            wave = wave[0]
        if wave.ndim != 2 or wave.shape[1] < 1:
            raise damaged(f"its 'audio' has shape {tuple(tensors['audio'].shape)}; expected (1, channels, samples)")
        _check_range(wave.shape[0], CHANNEL_RANGE, "audio channels", name, "channels")
        if not wave.is_floating_point():
            raise damaged(f"its 'audio' is {wave.dtype}, not float samples")
        wave = wave.float()
        if not bool(torch.isfinite(wave).all()):
            raise damaged("its 'audio' holds NaN or infinite samples")
        seconds, video = wave.shape[1] / rate, frames / fps
        if not video - 1.0 / fps - 1e-6 <= seconds <= video + 2.0 / fps + 1e-6:
            raise damaged(f"its audio lasts {seconds:.3f} s but its {frames} frames at {fps:g} fps last {video:.3f} s")
        audio = (wave.numpy(), int(rate))
    still = meta.get("still", "False")
    if still not in ("True", "False"):
        raise damaged(f"its 'still' is {still!r}, not True or False")
    try:
        info = json.loads(meta.get("info", "{}"))
    except json.JSONDecodeError:
        info = {}
    return dict(coeffs=coeffs, fps=fps, still=still == "True", audio=audio, blink=blink,
                source=str(meta.get("source", "file")), info=info if isinstance(info, dict) else {}, source_pose=pose,
                source_expression=expression)


def load_coefficients(path: str | os.PathLike):
    """Read what :func:`save_coefficients` wrote -> :class:`~.pipeline.Coefficients`.

    The one place a coefficient file is checked (the CLI's ``--coefficients`` and the Load
    Coefficients node both read through here): ValueError, naming the file and the field, for
    another kind of file, a damaged one, shapes that do not fit (coefficients ``(T, 70)``, blink
    ``(T,)``, source pose 3 values, audio ``(1, C, n)`` with 1-8 channels), a frame rate outside
    1-240 fps, a sample rate outside 8-384 kHz, NaN or infinite values, or audio whose length does
    not match ``T / fps``.
    """
    from safetensors import safe_open

    from .pipeline import Coefficients, as_audio

    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with safe_open(path, framework="pt") as handle:
            meta = handle.metadata() or {}
            keys = set(handle.keys())
            if meta.get("format") != COEFF_FORMAT or "coeffs" not in keys:
                raise ValueError(f"{name} is not a SadTalker coefficient file; save coefficients first (Save "
                                 "Coefficients, or --save-coefficients on the command line) and give that file.")
            tensors = {k: handle.get_tensor(k) for k in keys}
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise ValueError(f"Could not read coefficient file {name}: {err}; save the coefficients again.") from err
    fields = _validated(tensors, meta, name)
    if fields["audio"] is not None:
        fields["audio"] = as_audio(*fields["audio"])
    return Coefficients(**fields)


def is_coefficient_file(path: str | os.PathLike) -> bool:
    """Whether a ``.safetensors`` file's header says :func:`save_coefficients` wrote it (reads the
    header only, not the tensors)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size < (1 << 20):
                return False
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and (header.get("__metadata__") or {}).get("format") == COEFF_FORMAT
