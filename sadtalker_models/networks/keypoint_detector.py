"""KPDetector (spec §12): source image -> 15 canonical 3D keypoints.

Parameter names follow the `kp_extractor.` entries of the official checkpoint, including the
stored anti-aliasing kernel `down.weight` (a buffer).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .render_blocks import DownBlock2d, UpBlock3d, make_coordinate_grid, set_channels_last

__all__ = ["KPDetector", "AntiAliasDownsample", "KPHourglass"]

_NUM_KP = 15
_TEMPERATURE = 0.1
_BLOCK_EXPANSION = 32
_MAX_FEATURES = 1024
_NUM_BLOCKS = 5
_RESHAPE_CHANNEL = 16384
_RESHAPE_DEPTH = 16
_SCALE = 0.25


def gaussian_kernel(channels: int, scale: float) -> torch.Tensor:
    """The depth-wise anti-aliasing kernel `(channels, 1, k, k)` for down-scaling by `scale` (§12.1)."""
    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    k = k / k.sum()
    return k.view(1, 1, size, size).repeat(channels, 1, 1, 1)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (zero padding) then keep every 4th pixel: `(N, 3, S, S) -> (N, 3, S/4, S/4)`.

    The kernel is the stored buffer `weight` `(3, 1, 13, 13)`. A stride-4 convolution computes
    exactly the samples the reference keeps after its full-resolution blur.
    """

    def __init__(self, channels: int = 3, scale: float = _SCALE) -> None:
        super().__init__()
        self.register_buffer("weight", gaussian_kernel(channels, scale))
        self.stride = int(round(1.0 / scale))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.weight.shape[-1] // 2
        return F.conv2d(x, self.weight, padding=pad, stride=self.stride, groups=self.channels)


class KPHourglass(nn.Module):
    """2D encoder -> 1x1 conv lifted to 3D -> 3D up-sampling decoder (no skips).

    `(N, 3, H, W) -> (N, 32, 16, H, W)` for H, W divisible by 32.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(_NUM_BLOCKS):
            cin = 3 if i == 0 else min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** i))
            cout = min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** (i + 1)))
            self.down_blocks.add_module(f"down{i}", DownBlock2d(cin, cout))
        self.conv = nn.Conv2d(_MAX_FEATURES, _RESHAPE_CHANNEL, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(_NUM_BLOCKS):
            cin = min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** (_NUM_BLOCKS - i)))
            cout = min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** (_NUM_BLOCKS - i - 1)))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        n, c, h, w = out.shape
        out = out.view(n, c // _RESHAPE_DEPTH, _RESHAPE_DEPTH, h, w)  # channel index c*16 + d
        if not out.is_contiguous():  # channels-last weights: continue in NDHWC
            out = out.contiguous(memory_format=torch.channels_last_3d)
        return self.up_blocks(out)


class KPDetector(nn.Module):
    """Canonical keypoints of a source image: `(N, 3, S, S)` in 0..1 -> `(N, 15, 3)` float32.

    Each keypoint is the softmax-weighted (temperature 0.1) expectation of the (x, y, z) voxel
    coordinates over the `16 x S/4 x S/4` heat-map volume. The convolutions run in the module
    dtype; the softmax and the expectation run in float32.
    """

    def __init__(self) -> None:
        super().__init__()
        self.predictor = KPHourglass()
        self.kp = nn.Conv3d(_BLOCK_EXPANSION, _NUM_KP, kernel_size=3, padding=1)
        self.down = AntiAliasDownsample(3, _SCALE)

    @property
    def channels_last(self) -> bool:
        """Whether the weights are laid out channels-last (see `use_channels_last`)."""
        w = self.kp.weight
        return not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last_3d)

    def use_channels_last(self, enabled: bool = True) -> None:
        """Lay out the weights channels-last (NHWC / NDHWC) or back; the activations follow, and
        oneDNN runs the convolutions in its native layout. The state dict's contents do not change."""
        set_channels_last(self, enabled)

    def heatmap_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Keypoint logits `(N, 15, 16, S/4, S/4)` (before the temperature softmax)."""
        x = self.down(image)
        return self.kp(self.predictor(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Canonical keypoints.

        Args:
            image: `(N, 3, S, S)` in 0..1 (any float dtype; cast to the module dtype).
        Returns:
            `(N, 15, 3)` float32 keypoints in (x, y, z) order, each in [-1, 1].
        """
        dtype = self.kp.weight.dtype
        logits = self.heatmap_logits(image.to(dtype)).float()
        n, k, d, h, w = logits.shape
        prob = F.softmax(logits.reshape(n, k, -1) / _TEMPERATURE, dim=2)
        grid = make_coordinate_grid(d, h, w, device=prob.device).reshape(-1, 3)
        return torch.matmul(prob, grid)
