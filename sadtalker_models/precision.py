"""Which precision a network may run in on a device, so that reduced precision never silently crawls.

On a GPU, fp16 and bf16 are fast. On a CPU they are fast only where oneDNN runs them natively
(AVX-512 or AMX for bf16; AVX-512-FP16 or AMX-FP16 for fp16). Elsewhere, e.g. on an AVX2-only CPU,
torch falls back to scalar kernels and a bf16/fp16 convolution is about 200x slower than fp32.

Policy: asking for fp16/bf16 on a CPU that lacks native support **falls back to fp32 with one
logged warning** (the job still finishes, at fp32 speed). ``auto`` is fp16 on CUDA and, on a CPU,
bf16 only where the CPU has AMX-BF16 tiles (there the whole render stage ran 4.5x faster than fp32
at 256 px, with a frame error bounded in ``tests/test_bf16_render.py``; see the README's stage
table); elsewhere fp32. fp16 on a CPU without AMX-FP16 (AVX-512-FP16 only) is native but measured
slower than fp32, so ``auto`` never picks it there.
"""

from __future__ import annotations

import logging

import torch

from .options import PRECISIONS

logger = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_REDUCED = (torch.float16, torch.bfloat16)


def cpu_runs_natively(dtype: torch.dtype) -> bool:
    """True when this CPU runs ``dtype`` convolutions through oneDNN (float32 always is)."""
    if dtype not in _REDUCED:
        return True
    if not torch.backends.mkldnn.is_available():
        return False
    check = "_is_mkldnn_bf16_supported" if dtype == torch.bfloat16 else "_is_mkldnn_fp16_supported"
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):  # a torch without the query: assume the slow path
        return False


def usable_dtype(dtype: torch.dtype, device: str | torch.device, what: str = "the renderer") -> torch.dtype:
    """``dtype``, or float32 (with a warning) where ``device`` is a CPU that would run it very slowly."""
    if torch.device(device).type == "cpu" and not cpu_runs_natively(dtype):
        logger.warning("This CPU (%s) has no native %s support, so %s would run about 100x slower in it; "
                       "using float32 instead. Reduced precision helps on a GPU or on CPUs with AVX-512/AMX.",
                       torch.backends.cpu.get_cpu_capability(), str(dtype).removeprefix("torch."), what)
        return torch.float32
    return dtype


def cpu_has_amx(dtype: torch.dtype) -> bool:
    """True when oneDNN runs ``dtype`` natively here and the CPU has AMX tiles for it (AMX-BF16 for
    bf16, AMX-FP16 for fp16): where reduced precision is much faster than float32, not only native."""
    if dtype not in _REDUCED or not cpu_runs_natively(dtype):
        return False
    query = "_is_amx_tile_supported" if dtype == torch.bfloat16 else "_is_amx_fp16_supported"
    try:
        return bool(getattr(torch.cpu, query)())
    except (AttributeError, RuntimeError):  # a torch without the query: assume no AMX
        return False


def auto_dtype(device: str | torch.device) -> torch.dtype:
    """What ``auto`` means on ``device``: fp16 on CUDA, bf16 on a CPU with AMX-BF16, else float32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_has_amx(torch.bfloat16):
        return torch.bfloat16
    return torch.float32


def resolve_dtype(precision: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """``auto`` = :func:`auto_dtype`; ``fp32``/``fp16``/``bf16`` (or a dtype) as asked, except where
    :func:`usable_dtype` falls back to float32 on a CPU without native support."""
    if isinstance(precision, torch.dtype):
        dtype = precision
    else:
        name = (precision or "auto").lower()
        if name not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        if name == "auto":
            return auto_dtype(device)
        dtype = _DTYPES[name]
    return usable_dtype(dtype, device)
