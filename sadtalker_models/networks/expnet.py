"""ExpNet: audio window + reference expression + blink ratio -> expression (spec §7).

Keys (prefix ``audio2exp.`` stripped): ``audio_encoder.{0..12}.conv_block.{0,1}.*`` and
``mapping1.{weight,bias}`` (Linear 577 -> 64).
"""

from __future__ import annotations

import torch
from torch import nn

from .audio_encoder import AudioEncoder


class ExpNet(nn.Module):
    """Per-frame expression predictor.

    ``forward(mels (N,1,80,16), ref_exp (N,64), ratio (N,1)) -> exp (N,64)``; the head input is
    ``[audio 512 | ref_exp 64 | ratio 1]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = AudioEncoder()
        self.mapping1 = nn.Linear(512 + 64 + 1, 64)

    def forward(self, mels: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        audio = self.audio_encoder(mels)
        return self.mapping1(torch.cat([audio, ref_exp, ratio], dim=1))
