"""Building blocks shared by the renderer networks (KPDetector, dense motion, SPADE generator).

Every block keeps the official parameter names (`conv`, `norm`, ...). BatchNorm always runs
with the stored running statistics (spec §0), whatever the module's train/eval flag, and the
spectral-normed conv never runs a power iteration (spec §13.6).

Blocks that have a conv directly followed by a BatchNorm can fold the two into one conv with
`fuse_for_inference()`; the folded weights live in non-persistent buffers, so the state dict
(and strict loading) is unchanged. Loading a state dict into a fused block drops the folded
weights again (they would be stale).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "make_coordinate_grid",
    "batch_norm_eval",
    "fold_batch_norm",
    "FusableConvNorm",
    "DownBlock2d",
    "SameBlock2d",
    "UpBlock3d",
    "DownBlock3d",
    "ResBlock3d",
    "SpectralNormConv2d",
    "set_fused",
]


def make_coordinate_grid(depth: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised voxel-centre coordinates `(D, H, W, 3)` in (x, y, z) order, -1 and +1 at the ends.

    `x = 2 * w / (W - 1) - 1` varies along the width, `y` along the height, `z` along the depth
    (spec §12.3).
    """
    def axis(n: int) -> torch.Tensor:
        a = torch.arange(n, dtype=dtype, device=device)
        return 2 * (a / (n - 1)) - 1

    z = axis(depth).view(-1, 1, 1).expand(depth, height, width)
    y = axis(height).view(1, -1, 1).expand(depth, height, width)
    x = axis(width).view(1, 1, -1).expand(depth, height, width)
    return torch.stack([x, y, z], dim=-1)


def batch_norm_eval(x: torch.Tensor, norm: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Inference-mode batch normalisation with the stored running statistics, any tensor rank."""
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                        training=False, momentum=0.0, eps=norm.eps)


def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor | None,
                    norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval BatchNorm that follows a conv into the conv's weight `(O, ...)` and bias `(O,)`.

    Computed in float64 and returned in the weight's dtype.
    """
    w = weight.double()
    b = bias.double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    fused_w = w * scale.view(-1, *([1] * (w.dim() - 1)))
    fused_b = (b - norm.running_mean.double()) * scale + norm.bias.double()
    return fused_w.to(weight.dtype), fused_b.to(weight.dtype)


class FusableConvNorm(nn.Module):
    """Base class for `conv -> BatchNorm` pairs (`self.conv`, `self.norm`) that can be folded."""

    conv: nn.Conv2d | nn.Conv3d
    norm: nn.modules.batchnorm._BatchNorm

    def _init_fusion(self) -> None:
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)
        self.register_load_state_dict_pre_hook(_drop_fusion_hook)

    def fuse_for_inference(self) -> None:
        """Fold the BatchNorm into the conv (non-persistent buffers; state dict unchanged)."""
        w, b = fold_batch_norm(self.conv.weight.detach(), _detached(self.conv.bias), self.norm)
        self.fused_weight = w
        self.fused_bias = b

    def unfuse(self) -> None:
        """Forget the folded weights and go back to `conv -> BatchNorm`."""
        self.fused_weight = None
        self.fused_bias = None

    def conv_norm(self, x: torch.Tensor) -> torch.Tensor:
        """`BN(conv(x))`, from the folded weights when fused."""
        if self.fused_weight is not None:
            return self.conv._conv_forward(x, self.fused_weight, self.fused_bias)
        return batch_norm_eval(self.conv(x), self.norm)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _drop_fusion_hook(module: nn.Module, *args, **kwargs) -> None:
    unfuse = getattr(module, "unfuse", None)
    if unfuse is not None:
        unfuse()


def set_fused(root: nn.Module, fused: bool) -> None:
    """Call `fuse_for_inference()` (or `unfuse()`) on every submodule of `root` that offers it."""
    for module in root.modules():
        method = getattr(module, "fuse_for_inference" if fused else "unfuse", None)
        if method is not None and module is not root:
            method()


class DownBlock2d(FusableConvNorm):
    """conv3x3 p1 -> BN -> ReLU -> 2x2 average pool: `(N, Cin, H, W) -> (N, Cout, H/2, W/2)`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self._init_fusion()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.conv_norm(x)), kernel_size=(2, 2))


class SameBlock2d(FusableConvNorm):
    """conv -> BN -> ReLU (or LeakyReLU 0.01): `(N, Cin, H, W) -> (N, Cout, H, W)`."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu
        self._init_fusion()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_norm(x)
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class UpBlock3d(FusableConvNorm):
    """nearest x(1,2,2) -> conv3x3x3 p1 -> BN3d -> ReLU: `(N, Cin, D, H, W) -> (N, Cout, D, 2H, 2W)`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self._init_fusion()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.conv_norm(out))


class DownBlock3d(FusableConvNorm):
    """conv3x3x3 p1 -> BN3d -> ReLU -> average pool (1,2,2): `(N, Cin, D, H, W) -> (N, Cout, D, H/2, W/2)`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self._init_fusion()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv_norm(x))
        n, c, d, h, w = out.shape
        # a (1, 2, 2) 3D pool is a 2x2 pool of the depth slices (and this one has bf16 CPU kernels)
        return F.avg_pool2d(out.reshape(n, c * d, h, w), kernel_size=(2, 2)).view(n, c, d, h // 2, w // 2)


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block: `x + conv2(ReLU(BN2(conv1(ReLU(BN1(x))))))`, shape kept.

    Fusion folds `norm2` into `conv1` (`norm1` precedes a ReLU and stays a BatchNorm).
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)
        self.register_load_state_dict_pre_hook(_drop_fusion_hook)

    def fuse_for_inference(self) -> None:
        """Fold `norm2` into `conv1`."""
        self.fused_weight, self.fused_bias = fold_batch_norm(
            self.conv1.weight.detach(), _detached(self.conv1.bias), self.norm2)

    def unfuse(self) -> None:
        self.fused_weight = None
        self.fused_bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(batch_norm_eval(x, self.norm1))
        if self.fused_weight is not None:
            out = self.conv1._conv_forward(out, self.fused_weight, self.fused_bias)
        else:
            out = batch_norm_eval(self.conv1(out), self.norm2)
        out = self.conv2(F.relu(out))
        return out + x


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is `weight_orig / (u . (W v))` with the stored `u`, `v` (spec §13.6).

    Parameters/buffers: `weight_orig` `(O, I, k, k)`, `bias` `(O,)` or absent, `weight_u` `(O,)`,
    `weight_v` `(I*k*k,)`. No power iteration ever runs. `fuse_for_inference()` computes the
    effective weight once (float64) and keeps it in a non-persistent buffer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.padding = padding
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_channels))
        else:
            self.register_parameter("bias", None)
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_load_state_dict_pre_hook(_drop_fusion_hook)
        self._reset()

    def _reset(self) -> None:
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        with torch.no_grad():
            u = torch.randn(self.weight_u.shape)
            v = torch.randn(self.weight_v.shape)
            self.weight_u.copy_(u / u.norm())
            self.weight_v.copy_(v / v.norm())

    def effective_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`weight_orig / sigma` with `sigma = u . (reshape(weight_orig, (O, -1)) @ v)`, shape `(O, I, k, k)`.

        Low-precision modules compute it in float32 and cast the result back.
        """
        w = self.weight_orig
        compute = dtype or (w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32)
        wc = w.to(compute)
        sigma = torch.dot(self.weight_u.to(compute), torch.mv(wc.reshape(wc.shape[0], -1), self.weight_v.to(compute)))
        return (wc / sigma).to(w.dtype)

    def fuse_for_inference(self) -> None:
        """Compute the effective weight once (in float64) and reuse it."""
        self.fused_weight = self.effective_weight(torch.float64).detach()

    def unfuse(self) -> None:
        self.fused_weight = None

    def conv_weight(self) -> torch.Tensor:
        """The effective conv weight in the module dtype."""
        return self.fused_weight if self.fused_weight is not None else self.effective_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.conv_weight(), self.bias, padding=self.padding)
