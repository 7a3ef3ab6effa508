"""The SadTalker networks, one module per network; parameter names follow the official checkpoints."""

from __future__ import annotations

import torch


def device_and_dtype(net: torch.nn.Module, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> tuple[torch.device, torch.dtype]:
    """Where to run ``net``: the given device/dtype, or else those of its parameters."""
    param = next(net.parameters())
    return (torch.device(device) if device is not None else param.device), (dtype if dtype is not None else param.dtype)
