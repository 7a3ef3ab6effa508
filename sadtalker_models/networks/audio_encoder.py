"""The 13-layer convolutional audio encoder shared by ExpNet and PoseVAE (spec §7.1, §8.1).

Input: mel windows ``(N, 1, 80, 16)`` (80 mel bins = height, 16 time steps = width).
Output: ``(N, 512)``.

Parameter names: ``{n}.conv_block.0`` (Conv2d) and ``{n}.conv_block.1`` (BatchNorm2d) for
``n = 0..12``. ExpNet holds this module as ``audio_encoder`` (keys
``audio_encoder.{n}.conv_block...``); PoseVAE wraps it once more (keys
``audio_encoder.audio_encoder.{n}.conv_block...``), see :class:`PoseAudioEncoder`.
"""

from __future__ import annotations

import torch
from torch import nn

# (in, out, kernel, stride, padding, residual), spec §7.1
_LAYERS: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


class ConvBNReLU(nn.Module):
    """Conv2d -> BN -> (+ input when ``residual``) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride, padding: int, residual: bool) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding),
            nn.BatchNorm2d(cout),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return torch.relu(y)


class AudioEncoder(nn.Sequential):
    """13 conv layers; ``forward`` maps ``(N, 1, 80, 16)`` to ``(N, 512)``."""

    def __init__(self) -> None:
        super().__init__(*(ConvBNReLU(*spec) for spec in _LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        return super().forward(x).flatten(1)


class PoseAudioEncoder(nn.Module):
    """PoseVAE's wrapper (attribute ``audio_encoder``) around :class:`AudioEncoder`.

    ``forward`` maps mels ``(B, L, 1, 80, 16)`` to embeddings ``(B, L, 512)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = AudioEncoder()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        b, length = mels.shape[:2]
        emb = self.audio_encoder(mels.reshape(b * length, *mels.shape[2:]))
        return emb.reshape(b, length, -1)
