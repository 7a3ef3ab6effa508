"""Building blocks shared by the renderer networks (KPDetector, dense motion, SPADE generator).

Every block keeps the official parameter names (`conv`, `norm`, ...). BatchNorm always runs
with the stored running statistics (spec §0), whatever the module's train/eval flag, and the
spectral-normed conv never runs a power iteration (spec §13.6).

No BatchNorm folding is done here: the blocks with BatchNorm run once per clip (source encoder,
keypoint detector) or cost little next to their convolutions (dense motion), and a folded copy
of their weights would add hundreds of MB for no measurable speed-up.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "make_coordinate_grid",
    "batch_norm_eval",
    "set_channels_last",
    "ConvNorm",
    "DownBlock2d",
    "SameBlock2d",
    "UpBlock3d",
    "DownBlock3d",
    "avg_pool_hw",
    "ResBlock3d",
    "SpectralNormConv2d",
    "compiling",
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


def set_channels_last(module: nn.Module, enabled: bool = True) -> None:
    """Lay out every 4-D parameter and buffer of `module` channels-last and every 5-D one
    channels-last-3d (NHWC / NDHWC), or back to contiguous NCHW / NCDHW.

    Values, names and the state dict's contents do not change; a convolution whose weight is
    channels-last returns a channels-last result, so the activations follow.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d} if enabled else \
        {4: torch.contiguous_format, 5: torch.contiguous_format}
    with torch.no_grad():
        for sub in module.modules():
            for param in sub.parameters(recurse=False):
                if param.dim() in formats:
                    param.data = param.data.contiguous(memory_format=formats[param.dim()])
            for name, buffer in list(sub.named_buffers(recurse=False)):
                if buffer.dim() in formats:
                    setattr(sub, name, buffer.contiguous(memory_format=formats[buffer.dim()]))


def batch_norm_eval(x: torch.Tensor, norm: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """Inference-mode batch normalisation with the stored running statistics, any tensor rank."""
    return F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                        training=False, momentum=0.0, eps=norm.eps)


class ConvNorm(nn.Module):
    """Base class for `conv -> BatchNorm` pairs (`self.conv`, `self.norm`)."""

    conv: nn.Conv2d | nn.Conv3d
    norm: nn.modules.batchnorm._BatchNorm

    def conv_norm(self, x: torch.Tensor) -> torch.Tensor:
        """`BN(conv(x))` with the running statistics."""
        return batch_norm_eval(self.conv(x), self.norm)


class DownBlock2d(ConvNorm):
    """conv3x3 p1 -> BN -> ReLU -> 2x2 average pool: `(N, Cin, H, W) -> (N, Cout, H/2, W/2)`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.conv_norm(x)), kernel_size=(2, 2))


class SameBlock2d(ConvNorm):
    """conv -> BN -> ReLU (or LeakyReLU 0.01): `(N, Cin, H, W) -> (N, Cout, H, W)`."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_norm(x)
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class UpBlock3d(ConvNorm):
    """nearest x(1,2,2) -> conv3x3x3 p1 -> BN3d -> ReLU: `(N, Cin, D, H, W) -> (N, Cout, D, 2H, 2W)`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.conv_norm(out))


class DownBlock3d(ConvNorm):
    """conv3x3x3 p1 -> BN3d -> ReLU -> average pool (1,2,2): `(N, Cin, D, H, W) -> (N, Cout, D, H/2, W/2)`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool_hw(F.relu(self.conv_norm(x)))


def avg_pool_hw(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pool of every depth slice: `(N, C, D, H, W) -> (N, C, D, H/2, W/2)`, layout kept.

    A (1, 2, 2) 3D pool is a 2D pool of the depth slices (and the 2D pool has bf16 CPU kernels,
    `avg_pool3d` has none): of the `(N*C*D, H, W)` planes for a contiguous volume, of the
    `(N*D, C, H, W)` channels-last images for a `channels_last_3d` one (both views, no copy).
    """
    n, c, d, h, w = x.shape
    if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last_3d):
        return F.avg_pool2d(x.reshape(n, c * d, h, w), kernel_size=(2, 2)).view(n, c, d, h // 2, w // 2)
    slices = x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)  # channels-last images, a view
    pooled = F.avg_pool2d(slices, kernel_size=(2, 2))
    return pooled.view(n, d, c, h // 2, w // 2).permute(0, 2, 1, 3, 4)


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block: `x + conv2(ReLU(BN2(conv1(ReLU(BN1(x))))))`, shape kept."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(batch_norm_eval(x, self.norm1)))
        out = self.conv2(F.relu(batch_norm_eval(out, self.norm2)))
        return out + x


def compiling() -> bool:
    """Whether torch.compile is tracing the caller."""
    check = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return bool(check()) if check is not None else False


def _spectral_sigma(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`u . (reshape(weight, (O, -1)) @ v)` in float32 (float64 for float64 tensors): a 0-dim tensor."""
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w2d = weight.reshape(weight.shape[0], -1).to(dtype)
    return torch.dot(u.to(dtype), torch.mv(w2d, v.to(dtype)))


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is `weight_orig / (u . (W v))` with the stored `u`, `v` (spec §13.6).

    Parameters/buffers: `weight_orig` `(O, I, k, k)`, `bias` `(O,)` or absent, `weight_u` `(O,)`,
    `weight_v` `(I*k*k,)`. No power iteration ever runs. The effective weight is computed at each
    call (a few microseconds next to the convolution, and no second copy of the weights).
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
        self._sigma_cache: tuple[tuple, torch.Tensor] | None = None
        self._reset()

    def _reset(self) -> None:
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        with torch.no_grad():
            u = torch.randn(self.weight_u.shape)
            v = torch.randn(self.weight_v.shape)
            self.weight_u.copy_(u / u.norm())
            self.weight_v.copy_(v / v.norm())

    def sigma(self) -> torch.Tensor:
        """`sigma = u . (reshape(weight_orig, (O, -1)) @ v)` as a 0-dim float32 tensor (float64 for a
        float64 module), computed in float32 whatever the module dtype.

        The value is kept until the weight, `u` or `v` change (another tensor, another dtype or
        device, or an in-place write such as `load_state_dict`), so a reduced-precision module does
        not copy its weight to float32 at every call. Under `torch.compile` it is computed inline.
        """
        tensors = (self.weight_orig, self.weight_u, self.weight_v)
        if compiling():
            return _spectral_sigma(*tensors)
        try:
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        except RuntimeError:  # an inference-mode tensor has no version counter: nothing is kept
            return _spectral_sigma(*tensors)
        cached = self._sigma_cache
        if cached is None or cached[0] != key:
            cached = self._sigma_cache = (key, _spectral_sigma(*tensors))
        return cached[1]

    def conv_weight(self) -> torch.Tensor:
        """`weight_orig / sigma`: `(O, I, k, k)` in the module dtype and memory format.

        A reduced-precision weight is multiplied by the float32 `1 / sigma` in one pass (the
        product is formed in float32 and rounded once).
        """
        w = self.weight_orig
        if w.dtype in (torch.float32, torch.float64):
            return w / self.sigma()
        return w * (1.0 / self.sigma())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.conv_weight(), self.bias, padding=self.padding)
