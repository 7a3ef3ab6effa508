"""The coefficient file: :class:`~.pipeline.Coefficients` saved as a ``.safetensors`` file.

Tensors ``coeffs`` ``(T, 70)``, optional ``blink`` ``(T,)``, ``source_pose`` ``(3,)`` and ``audio``
``(1, C, n)`` (float32, the :class:`~.pipeline.Audio` waveform with a leading 1); JSON-able metadata ``format`` (:data:`COEFF_FORMAT`), ``fps``, ``still``,
``source``, ``info`` and, with audio, ``sample_rate``. Written by the Save Coefficients node and
``python -m sadtalker_models --save-coefficients``; read by Load Coefficients and ``--coefficients``.
"""

from __future__ import annotations

import json
import os

from .options import FPS

COEFF_FORMAT = "sadtalker-coefficients/1"


def save_coefficients(coeffs, path: str | os.PathLike) -> None:
    """Write ``coeffs`` (a :class:`~.pipeline.Coefficients`, with its blink, pose and audio) to ``path``.

    Written to ``path + ".part"`` and renamed, so a crash never leaves a half file under the name.
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    path = os.fspath(path)
    tensors = {"coeffs": coeffs.coeffs.detach().float().cpu().contiguous()}
    if coeffs.blink is not None:
        tensors["blink"] = coeffs.blink.detach().float().cpu().contiguous()
    if coeffs.source_pose is not None:
        tensors["source_pose"] = coeffs.source_pose.detach().float().cpu().reshape(3).contiguous()
    meta = {"format": COEFF_FORMAT, "fps": str(coeffs.fps), "still": str(bool(coeffs.still)), "source": coeffs.source,
            "info": json.dumps(coeffs.info, default=str)}
    if coeffs.audio is not None:   # stored (1, C, n), as files saved before the library's Audio held it
        tensors["audio"] = torch.from_numpy(np.ascontiguousarray(coeffs.audio.waveform, dtype=np.float32))[None]
        meta["sample_rate"] = str(int(coeffs.audio.sample_rate))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".part"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def load_coefficients(path: str | os.PathLike):
    """Read what :func:`save_coefficients` wrote -> :class:`~.pipeline.Coefficients`.

    Raises ValueError (naming the file and what to do) for another kind of file, a damaged one,
    coefficients that are not ``(T, 70)``, or a bad frame rate / NaN values (checked by Coefficients).
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
    coeffs = tensors["coeffs"].float()
    if coeffs.ndim != 2 or coeffs.shape[1] != 70 or coeffs.shape[0] < 1:
        raise ValueError(f"{name} holds coefficients of shape {tuple(coeffs.shape)}; expected (T, 70).")
    audio = None
    if "audio" in tensors and "sample_rate" in meta:
        audio = as_audio(tensors["audio"].float(), int(meta["sample_rate"]))
    try:
        info = json.loads(meta.get("info", "{}"))
    except json.JSONDecodeError:
        info = {}
    return Coefficients(coeffs=coeffs, fps=float(meta.get("fps", FPS)), still=meta.get("still") == "True",
                        audio=audio, blink=tensors.get("blink"), source=meta.get("source", "file"),
                        info=info, source_pose=tensors.get("source_pose"))


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
