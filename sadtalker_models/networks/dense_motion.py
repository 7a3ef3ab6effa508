"""DenseMotionNetwork (spec §13.2): keypoints + compressed appearance volume -> deformation, occlusion.

Parameter names follow `generator.dense_motion_network.*` of the official checkpoint.

The work is split in two so that a renderer can do the source-only part once per clip:

* `prepare_source(feature, kp_source)` -> `DenseMotionSource`: the compressed volume, the
  identity grid, the background motion's deformed features and the source Gaussians;
* `predict(source, kp_driving)` -> `DenseMotion`: everything that depends on the driving
  keypoints.

`forward(feature, kp_driving, kp_source)` is the two in sequence (the reference behaviour).

Geometry (grids, Gaussians, the mask softmax and the deformation) is float32 whatever the module
dtype; the convolutions run in the module dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .render_blocks import ConvNorm, DownBlock3d, UpBlock3d, batch_norm_eval, make_coordinate_grid, set_channels_last

__all__ = ["DenseMotionNetwork", "DenseMotionSource", "DenseMotion", "sample_volume"]

_NUM_KP = 15
_FEATURE_CHANNELS = 32
_COMPRESS = 4
_BLOCK_EXPANSION = 32
_MAX_FEATURES = 1024
_NUM_BLOCKS = 5
_KP_VARIANCE = 0.01
_MASK_THRESHOLD = 1e-3


def sample_volume(volume: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Trilinear `grid_sample` (zeros padding, align_corners False) of a few source volumes.

    Args:
        volume: `(Ns, C, D, H, W)` source volumes.
        grids: `(Ns, G, d, h, w, 3)` sampling grids in (x, y, z) order; grid group `g` of
            source `s` samples volume `s`. `G` grids share one source without repeating it.
    Returns:
        `(Ns, G, C, d, h, w)` in the grids' dtype (the volume is cast to it).
    """
    ns, g, d, h, w, _ = grids.shape
    volume = volume.to(grids.dtype)
    c = volume.shape[1]
    if ns == 1:
        # each grid group as its own batch entry over the same (expanded, not copied) volume: the
        # CPU kernel parallelises over the batch only, and the result needs no transpose
        sampled = F.grid_sample(volume.expand(g, -1, -1, -1, -1), grids.reshape(g, d, h, w, 3),
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.view(1, g, c, d, h, w)
    sampled = F.grid_sample(volume, grids.reshape(ns, g * d, h, w, 3),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(ns, c, g, d, h, w).transpose(1, 2)


def gaussian_heatmaps(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`exp(-0.5 * |grid - kp|^2 / 0.01)` per keypoint: kp `(N, K, 3)`, grid `(D, H, W, 3)` -> `(N, K, D, H, W)`."""
    diff = grid.unsqueeze(0).unsqueeze(0) - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / _KP_VARIANCE)


@dataclass
class DenseMotionSource:
    """Source-only quantities of the dense motion network (float32 unless noted).

    compressed: `(Ns, 4, D, H, W)` compressed appearance volume.
    grid: `(D, H, W, 3)` identity grid.
    kp_source: `(Ns, 15, 3)`.
    gauss_source: `(Ns, 15, D, H, W)` source Gaussians.
    deformed_background: `(Ns, 1, 4, D, H, W)` the compressed volume sampled on the identity grid.
    """

    compressed: torch.Tensor
    grid: torch.Tensor
    kp_source: torch.Tensor
    gauss_source: torch.Tensor
    deformed_background: torch.Tensor


@dataclass
class DenseMotion:
    """Dense motion outputs for `N` driving frames.

    deformation: `(N, D, H, W, 3)` float32 sampling grid into the appearance volume.
    occlusion_map: `(N, 1, H, W)` in the module dtype, in (0, 1).
    mask: `(N, 16, D, H, W)` float32 motion weights after the 1e-3 threshold.
    """

    deformation: torch.Tensor
    occlusion_map: torch.Tensor
    mask: torch.Tensor


class HourglassEncoder(nn.Module):
    """Five DownBlock3d; returns the input and every block output (6 tensors)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(_NUM_BLOCKS):
            cin = in_features if i == 0 else min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** i))
            cout = min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** (i + 1)))
            blocks.append(DownBlock3d(cin, cout))
        self.down_blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(ConvNorm):
    """Five UpBlock3d with skip concatenation, then conv3x3x3 -> BN3d -> ReLU (112 channels)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        blocks = []
        for i in range(_NUM_BLOCKS)[::-1]:
            cin = (1 if i == _NUM_BLOCKS - 1 else 2) * min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** (i + 1)))
            cout = min(_MAX_FEATURES, _BLOCK_EXPANSION * (2 ** i))
            blocks.append(UpBlock3d(cin, cout))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = _BLOCK_EXPANSION + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        skips = list(skips)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.conv_norm(out))


class Hourglass(nn.Module):
    """3D U-Net: `(N, 80, D, H, W) -> (N, 112, D, H, W)`."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(in_features)
        self.decoder = HourglassDecoder(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class DenseMotionNetwork(nn.Module):
    """Occlusion-aware dense motion from 15 keypoint pairs (spec §13.2)."""

    def __init__(self) -> None:
        super().__init__()
        in_features = (_NUM_KP + 1) * (_COMPRESS + 1)
        self.hourglass = Hourglass(in_features)
        out_filters = self.hourglass.decoder.out_filters
        self.mask = nn.Conv3d(out_filters, _NUM_KP + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(_FEATURE_CHANNELS, _COMPRESS, kernel_size=1)
        self.norm = nn.BatchNorm3d(_COMPRESS, affine=True)
        self.occlusion = nn.Conv2d(out_filters * 16, 1, kernel_size=7, padding=3)

    @property
    def channels_last(self) -> bool:
        """Whether the hourglass and the mask convolution hold `channels_last_3d` weights."""
        w = self.mask.weight
        return not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last_3d)

    def use_channels_last(self, enabled: bool = True) -> None:
        """Lay out the weights channels-last (NDHWC; NHWC for the occlusion conv), or back.

        The per-frame hourglass input follows them, and the occlusion convolution reads the
        channels-last prediction as a 3D convolution (see `occlusion_logits`).
        """
        set_channels_last(self, enabled)

    def occlusion_logits(self, prediction: torch.Tensor) -> torch.Tensor:
        """The occlusion convolution over the hourglass output's (channel, depth) planes.

        Args:
            prediction: `(1, 112, D, H, W)`, contiguous or `channels_last_3d`.
        Returns:
            `(1, 1, H, W)` logits. The reference reshapes the prediction to `(1, 112*D, H, W)`
            (channel index `c*D + d`) for a 7x7 2D convolution; on a channels-last prediction the
            same sum is a 3D convolution with a `(D, 7, 7)` kernel and no depth padding, which
            needs no reshaping copy.
        """
        n, c, d, h, w = prediction.shape
        conv = self.occlusion
        if prediction.is_contiguous():
            return conv(prediction.reshape(n, c * d, h, w))
        weight = conv.weight.reshape(1, c, d, *conv.weight.shape[2:])
        pad = conv.weight.shape[-1] // 2
        return F.conv3d(prediction, weight, conv.bias, padding=(0, pad, pad)).view(n, 1, h, w)

    def compress_volume(self, feature: torch.Tensor) -> torch.Tensor:
        """`ReLU(BN(conv1x1x1(V)))`: `(N, 32, D, H, W) -> (N, 4, D, H, W)` in the module dtype."""
        return F.relu(batch_norm_eval(self.compress(feature), self.norm))

    def prepare_source(self, feature: torch.Tensor, kp_source: torch.Tensor) -> DenseMotionSource:
        """Source-only part: compress the volume, identity grid, background sampling, source Gaussians.

        Args:
            feature: `(Ns, 32, D, H, W)` appearance volume V.
            kp_source: `(Ns, 15, 3)` source keypoints.
        """
        compressed = self.compress_volume(feature.to(self.compress.weight.dtype))
        compressed = compressed.to(torch.float32, memory_format=torch.contiguous_format)
        _, _, d, h, w = compressed.shape
        grid = make_coordinate_grid(d, h, w, device=compressed.device)
        kp_source = kp_source.float()
        ns = compressed.shape[0]
        background = sample_volume(compressed, grid.expand(ns, 1, d, h, w, 3))
        return DenseMotionSource(
            compressed=compressed,
            grid=grid,
            kp_source=kp_source,
            gauss_source=gaussian_heatmaps(kp_source, grid),
            deformed_background=background,
        )

    def sparse_motions(self, source: DenseMotionSource, kp_driving: torch.Tensor) -> torch.Tensor:
        """Per-keypoint backward motions `(N, 15, D, H, W, 3)`: `grid - kp_driving[k] + kp_source[k]`."""
        n = kp_driving.shape[0]
        ns = source.kp_source.shape[0]
        kp_src = source.kp_source.repeat_interleave(n // ns, dim=0) if ns != n else source.kp_source
        shifted = source.grid.unsqueeze(0).unsqueeze(0) - kp_driving[:, :, None, None, None, :]
        return shifted + kp_src[:, :, None, None, None, :]

    def predict(self, source: DenseMotionSource, kp_driving: torch.Tensor) -> DenseMotion:
        """Driving-dependent part.

        Args:
            source: from `prepare_source` with `Ns` sources (1, or `N`).
            kp_driving: `(N, 15, 3)` driving keypoints; frame `i` uses source `i // (N / Ns)`.
        Returns:
            `DenseMotion` with deformation `(N, D, H, W, 3)` and occlusion `(N, 1, H, W)`.
        """
        kp_driving = kp_driving.float()
        n = kp_driving.shape[0]
        ns = source.compressed.shape[0]
        if n % ns:
            raise ValueError(f"{n} driving frames cannot be split over {ns} sources")
        per = n // ns
        _, c, d, h, w = source.compressed.shape
        motions = self.sparse_motions(source, kp_driving)  # (N, 15, D, H, W, 3)
        deformed = sample_volume(source.compressed, motions.view(ns, per * _NUM_KP, d, h, w, 3))
        deformed = deformed.reshape(n, _NUM_KP, c, d, h, w)
        background = source.deformed_background.repeat_interleave(per, dim=0)
        deformed = torch.cat([background, deformed], dim=1)  # (N, 16, 4, D, H, W)

        gauss_source = source.gauss_source.repeat_interleave(per, dim=0) if per > 1 else source.gauss_source
        heat = gaussian_heatmaps(kp_driving, source.grid) - gauss_source
        heat = torch.cat([heat.new_zeros(n, 1, d, h, w), heat], dim=1).unsqueeze(2)

        dtype = self.mask.weight.dtype
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        hourglass_in = torch.cat([heat, deformed], dim=2).view(n, -1, d, h, w).to(dtype, memory_format=layout)
        # One frame at a time: the small 3D convolutions of the hourglass pick batch-size
        # dependent kernels, and frames must not depend on how they are batched.
        mask_logits, occlusion = [], []
        for i in range(n):
            prediction = self.hourglass(hourglass_in[i:i + 1])
            mask_logits.append(self.mask(prediction).to(torch.float32, memory_format=torch.contiguous_format))
            occlusion.append(torch.sigmoid(self.occlusion_logits(prediction)))
            del prediction
        mask = F.softmax(torch.cat(mask_logits), dim=1)
        mask = torch.where(mask < _MASK_THRESHOLD, torch.zeros_like(mask), mask)
        return DenseMotion(deformation=self.deformation(source, kp_driving, mask),
                           occlusion_map=torch.cat(occlusion), mask=mask)

    @staticmethod
    def deformation(source: DenseMotionSource, kp_driving: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`sum_k mask_k * motion_k` over the identity motion and the 15 sparse motions: `(N, D, H, W, 3)`.

        Every motion is the grid plus a per-keypoint offset (zero for the identity, `kp_source[k] -
        kp_driving[k]` for the others), so the sum is `grid * sum_k mask_k + sum_k mask_k * offset_k`:
        a `(D*H*W, 15) @ (15, 3)` product per frame instead of the `(N, 16, D, H, W, 3)` motions.

        Args:
            source: its grid `(D, H, W, 3)` and `kp_source` `(Ns, 15, 3)`.
            kp_driving: `(N, 15, 3)`; mask: `(N, 16, D, H, W)` float32.
        """
        n, k1, d, h, w = mask.shape
        ns = source.kp_source.shape[0]
        kp_src = source.kp_source.repeat_interleave(n // ns, dim=0) if ns != n else source.kp_source
        offsets = kp_src - kp_driving  # (N, 15, 3)
        weighted = torch.bmm(mask[:, 1:].reshape(n, k1 - 1, -1).transpose(1, 2), offsets)  # (N, DHW, 3)
        return torch.addcmul(weighted.view(n, d, h, w, 3), source.grid, mask.sum(dim=1).unsqueeze(-1))

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> DenseMotion:
        """Reference behaviour: `feature` `(N, 32, D, H, W)`, keypoints `(N, 15, 3)` -> `DenseMotion`."""
        return self.predict(self.prepare_source(feature, kp_source), kp_driving)
