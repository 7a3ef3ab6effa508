"""MappingNet (spec §11.1): a window of 3DMM coefficients -> head pose, translation, expression.

The network reads a window of 27 frames of `C` coefficients (C = 70, or 73 in the `full`
preprocess modes) and predicts, for the window's centre frame, 66-bin logits for yaw, pitch
and roll, a translation (3) and 15 keypoint offsets (45). The parameter names follow the
`mapping` entry of the official `mapping_*.pth.tar` files.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MappingNet"]

_DESCRIPTOR = 1024
_NUM_KP = 15
_NUM_BINS = 66
_ENCODER_LAYERS = 3
_DILATION = 3


class MappingNet(nn.Module):
    """Coefficient windows `(N, C, 27)` -> dict of yaw/pitch/roll logits, t and exp.

    Output dict (all float tensors in the module dtype):
      * ``yaw``, ``pitch``, ``roll``: `(N, 66)` bin logits;
      * ``t``: `(N, 3)` translation;
      * ``exp``: `(N, 45)` keypoint offsets (keypoint-major, reshape to `(N, 15, 3)`).
    """

    def __init__(self, coeff_nc: int) -> None:
        super().__init__()
        self.coeff_nc = int(coeff_nc)
        self.first = nn.Sequential(nn.Conv1d(self.coeff_nc, _DESCRIPTOR, kernel_size=7, bias=True))
        for i in range(_ENCODER_LAYERS):
            block = nn.Sequential(
                nn.LeakyReLU(0.1),
                nn.Conv1d(_DESCRIPTOR, _DESCRIPTOR, kernel_size=3, dilation=_DILATION),
            )
            self.add_module(f"encoder{i}", block)
        self.fc_roll = nn.Linear(_DESCRIPTOR, _NUM_BINS)
        self.fc_pitch = nn.Linear(_DESCRIPTOR, _NUM_BINS)
        self.fc_yaw = nn.Linear(_DESCRIPTOR, _NUM_BINS)
        self.fc_t = nn.Linear(_DESCRIPTOR, 3)
        self.fc_exp = nn.Linear(_DESCRIPTOR, 3 * _NUM_KP)

    def forward(self, semantics: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map coefficient windows to pose logits, translation and expression.

        Args:
            semantics: `(N, C, 27)` coefficient windows.
        Returns:
            dict with ``yaw``/``pitch``/``roll`` `(N, 66)`, ``t`` `(N, 3)`, ``exp`` `(N, 45)`.
        """
        out = self.first(semantics)
        crop = _DILATION  # each dilated k3 conv shortens the sequence by 2 * dilation
        for i in range(_ENCODER_LAYERS):
            encoder = getattr(self, f"encoder{i}")
            out = encoder(out) + out[:, :, crop:-crop]
        descriptor = out.mean(dim=-1)
        return {
            "yaw": self.fc_yaw(descriptor),
            "pitch": self.fc_pitch(descriptor),
            "roll": self.fc_roll(descriptor),
            "t": self.fc_t(descriptor),
            "exp": self.fc_exp(descriptor),
        }
