"""OcclusionAwareSPADEGenerator (spec §13): source image + keypoints -> rendered frame.

Parameter names follow the `generator.` entries of the official checkpoint. The spectral-normed
decoder convs keep `weight_orig`/`weight_u`/`weight_v` so the official state dict loads strictly.

The work is split so that a renderer can encode the source once per clip:

* `encode_source(image, kp_source)` -> `GeneratorSource` (appearance volume V and the dense
  motion network's source-only quantities);
* `decode(source, kp_driving)` -> frames;
* `forward(image, kp_driving, kp_source)` = both in sequence (the reference behaviour).

`fuse_for_inference()` switches the SPADE decoder to a merged path that computes the same function
with less work, built from the parameters at each call (no second copy of any weight; the state
dict is untouched): the SPADE hidden map of an up-sampled block runs at the segmap's own
resolution as one transposed convolution with merged taps instead of a convolution on the
nearest-up-sampled map (`upsampled_conv3x3`); the `1 +` of each SPADE is folded into the gamma
bias and the modulation accumulates in place into beta; an up-sampled block never builds its
up-sampled input (its instance normalisation is computed at the low resolution and broadcast);
the normalisation statistics come from the batch-norm statistics kernel in float32
(`channel_stats`); `conv_0`'s spectral division and bias are folded into the normalisation that
follows it. `unfuse()` goes back to the reference arithmetic. Results agree to float32 rounding.

`use_channels_last()` lays out the per-frame networks channels-last (NHWC, and NDHWC for the dense
motion hourglass); every step above keeps that layout, so oneDNN runs its convolutions without
reordering their inputs and outputs (the main cost of bf16 on AMX CPUs otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dense_motion import DenseMotionNetwork, DenseMotionSource, sample_volume
from .render_blocks import DownBlock2d, ResBlock3d, SameBlock2d, SpectralNormConv2d, compiling, set_channels_last

__all__ = ["OcclusionAwareSPADEGenerator", "SPADEDecoder", "SPADEResnetBlock", "SPADE", "GeneratorSource",
           "upsampled_conv3x3", "modulate_", "relu_", "instance_norm_affine", "channel_stats", "is_channels_last"]

_RESHAPE_CHANNEL = 32
_RESHAPE_DEPTH = 16
_NUM_RESBLOCKS = 6
_LABEL_NC = 256
_HIDDEN = 128


def _merged_taps(factor: int) -> torch.Tensor:
    """`(factor + 2, 3)` 0/1 matrix: which of a 3-tap kernel's taps land on each tap of the merged kernel.

    On an input up-sampled by `factor` with nearest, output phase `a` of low-resolution sample `i`
    reads samples `i-1..i+1`: phase 0 reads `i-1` with tap 0 and `i` with taps 1 and 2; the inner
    phases read `i` with all three taps; the last phase reads `i` with taps 0 and 1 and `i+1` with
    tap 2. As a transposed convolution with stride `factor` and padding 1, that is the kernel
    `[w2, w1 + w2, (w0 + w1 + w2) * (factor - 2), w0 + w1, w0]`.
    """
    taps = torch.zeros(factor + 2, 3)
    taps[0, 2] = 1.0
    taps[1, 1:] = 1.0
    taps[2:factor] = 1.0
    taps[factor, :2] = 1.0
    taps[factor + 1, 0] = 1.0
    return taps


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D tensor `(N, C, H, W)` has its channels innermost (NHWC), as a channels-last
    tensor or a channel slice of one has (NCHW with C > 1 has not)."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1


def upsampled_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      size: tuple[int, int] | torch.Size, relu: bool = False) -> torch.Tensor:
    """`conv3x3(nearest_resize(x, size), weight, bias, padding=1)` without building the resized input.

    With an integer factor `r = size / x.size`, output pixel `(r*i + a, r*j + b)` reads only the
    low-resolution samples `i-1..i+1`, so the whole computation is one transposed convolution of
    `x` with stride `r` and a `(r+2, r+2)` kernel of merged taps (`_merged_taps`): 2.25x fewer
    multiply-adds than the convolution on the resized input for r = 2 and 4x fewer for r = 4,
    written in place in one call. Falls back to the plain computation for non-integer factors.

    Args:
        x: `(N, Cin, h, w)`; weight `(Cout, Cin, 3, 3)`; bias `(Cout,)` or None; size `(H, W)`;
        relu: apply a ReLU to the result.
    Returns:
        `(N, Cout, H, W)`, channels-last when `x` is.
    """
    h, w = x.shape[2:]
    big_h, big_w = int(size[0]), int(size[1])
    if big_h % h or big_w % w or big_h // h != big_w // w or big_h == h:
        if (big_h, big_w) != (h, w):
            x = F.interpolate(x, size=(big_h, big_w), mode="nearest")
        out = F.conv2d(x, weight, bias, padding=1)
        return relu_(out) if relu else out
    r = big_h // h
    taps = _merged_taps(r).to(weight.device)
    # (Cin, Cout, r+2, r+2): the layout of a transposed convolution's weight
    kernel = torch.einsum("pi,ocij,qj->copq", taps, weight.float(), taps).to(weight.dtype)
    if is_channels_last(x):
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    out = F.conv_transpose2d(x, kernel, bias, stride=r, padding=1)
    return relu_(out) if relu else out


def modulate_(beta: torch.Tensor, x_hat: torch.Tensor, gamma1: torch.Tensor, factor: int = 1) -> torch.Tensor:
    """SPADE modulation in place: `beta += nearest_up(x_hat, factor) * gamma1` (`gamma1` = 1 + gamma).

    Args:
        beta, gamma1: `(N, C, factor*h, factor*w)`; `beta` is overwritten (no new tensor, which
            for the large maps of the last blocks also saves the page faults of a fresh one).
        x_hat: `(N, C, h, w)` normalised input.
        factor: integer nearest up-sampling factor of `x_hat`. On channels-last tensors the
            up-sampling is a broadcast (never materialised).
    Returns:
        `beta`.
    """
    if factor == 1:
        return beta.addcmul_(x_hat, gamma1)
    if not is_channels_last(gamma1):
        return beta.addcmul_(F.interpolate(x_hat, scale_factor=float(factor), mode="nearest"), gamma1)
    h, w = x_hat.shape[2:]

    def phases(t: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C, h, r, w, r), a view
        return t.unflatten(3, (w, factor)).unflatten(2, (h, factor))

    phases(beta).addcmul_(x_hat[:, :, :, None, :, None], phases(gamma1))
    return beta


def relu_(x: torch.Tensor) -> torch.Tensor:
    """In-place ReLU. For bf16/fp16 on a CPU it clamps the int16 view at 0: the sign bit is the top
    bit and +0.0 is all zeros, so the result is bit-identical, and the integer kernel streams
    several times faster than the half-precision one on maps that do not fit the cache."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        x.view(torch.int16).clamp_min_(0)
        return x
    return x.relu_()


def instance_norm_affine(x: torch.Tensor, divisor: torch.Tensor | None = None,
                         eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel `scale`, `shift` with `x * scale + shift` = `instance_norm(x / divisor)`.

    Args:
        x: `(N, C, H, W)` in any layout.
        divisor: optional 0-dim tensor `s` (any sign): the normalisation of `x / s` is
            `sign(s) * (x - mean) / sqrt(var + eps * s**2)`, so `x / s` is never built.
        eps: added to the variance of `x / divisor`.
    Returns:
        `scale` and `shift`, `(N, C, 1, 1)` in `x`'s dtype (the statistics accumulate in float32
        and `scale`, `shift` are computed in float32).
    """
    mean, var = channel_stats(x)
    if divisor is None:
        scale = torch.rsqrt(var + eps)
    else:
        d = divisor.float()
        scale = torch.rsqrt(var + eps * d * d) * torch.sign(d)
    shift = -mean * scale
    n, c = x.shape[:2]
    return scale.view(n, c, 1, 1).to(x.dtype), shift.view(n, c, 1, 1).to(x.dtype)


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance over `(H, W)` of each sample and channel: `(N, C, H, W)` -> two `(N, C)` float32.

    Uses the batch-norm statistics kernel (`batch_norm_update_stats` with float32 running
    statistics and momentum 1): it accumulates in float32 whatever the input dtype, is vectorised
    for NCHW and channels-last, and on a CPU is tens of times faster than `var_mean` over two
    dimensions. An NCHW tensor is one `(1, N*C, H, W)` call; a channels-last one is one call per
    sample.
    """
    n, c, h, w = x.shape
    if compiling():  # inductor fuses this into one reduction (and cannot trace the in-place kernel)
        var, mean = torch.var_mean(x.float(), dim=(2, 3), correction=0)
        return mean, var
    mean = torch.zeros(n * c, dtype=torch.float32, device=x.device)
    var = torch.zeros(n * c, dtype=torch.float32, device=x.device)
    if x.is_contiguous():
        torch.batch_norm_update_stats(x.view(1, n * c, h, w), mean, var, 1.0)
    else:
        for i in range(n):
            torch.batch_norm_update_stats(x[i:i + 1], mean[i * c:(i + 1) * c], var[i * c:(i + 1) * c], 1.0)
    count = h * w
    if count > 1:
        var = var * ((count - 1) / count)  # the running variance is the unbiased one
    return mean.view(n, c), var.view(n, c)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: `IN(x) * (1 + gamma(seg)) + beta(seg)` (spec §13.5).

    x: `(N, c, h, w)`; seg: `(N, 256, hs, ws)`, resized to `(h, w)` with nearest.
    """

    def __init__(self, norm_nc: int, label_nc: int = _LABEL_NC) -> None:
        super().__init__()
        self.norm_nc = norm_nc
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, _HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(_HIDDEN, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(_HIDDEN, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        return F.instance_norm(x, eps=1e-5) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

    def hidden(self, segmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """`ReLU(mlp_shared(nearest_resize(segmap, size)))`: `(N, 128, *size)`, the resize never built
        (`upsampled_conv3x3`)."""
        conv = self.mlp_shared[0]
        return upsampled_conv3x3(segmap, conv.weight, conv.bias, size, relu=True)

    def gamma1_beta(self, actv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`1 + gamma` and `beta` `(N, c, H, W)` of the hidden map `actv` `(N, 128, H, W)`.

        The `1 +` is folded into the gamma bias (no extra pass over the map).
        """
        gamma = self.mlp_gamma
        gamma1 = F.conv2d(actv, gamma.weight, (gamma.bias.float() + 1.0).to(gamma.bias.dtype), padding=1)
        return gamma1, self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE residual block `(N, fin, h, w) -> (N, fout, h, w)` (spec §13.5), spectral-normed convs.

    `fused` (set by `fuse_for_inference()`) selects the merged-convolution path described in the
    module docstring; it holds no tensors.
    """

    def __init__(self, fin: int, fout: int, label_nc: int = _LABEL_NC) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)
        self.fused = False

    def fuse_for_inference(self) -> None:
        """Use the merged-convolution path (no weights are copied or changed)."""
        self.fused = True

    def unfuse(self) -> None:
        """Use the reference arithmetic."""
        self.fused = False

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """x `(N, fin, h, w)`, seg `(N, 256, hs, ws)` -> `(N, fout, h, w)`."""
        if self.fused:
            return self.forward_upsampled(x, seg, 1)
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx

    def forward_upsampled(self, x: torch.Tensor, seg: torch.Tensor, factor: int) -> torch.Tensor:
        """`self(nearest_up(x, factor), seg)` on the merged-convolution path.

        The up-sampled input is never built: the instance normalisation of a nearest up-sampled map
        is the up-sampled normalisation of the map (each value repeated `factor**2` times), so it is
        computed at the low resolution, once for `norm_0` and `norm_s`, and broadcast into the
        modulation, which accumulates in place into beta. Each SPADE hidden map is computed from
        the segmap at its own resolution (`SPADE.hidden`). `conv_0` runs on the stored weight
        without the spectral division and the bias: `norm_1` removes both
        (`IN(y / s + b) = sign(s) (y - mean) / sqrt(var + eps s**2)`). Works in NCHW or
        channels-last (which the result follows).

        Args:
            x: `(N, fin, h, w)`; seg: `(N, 256, hs, ws)`; factor: integer >= 1.
        Returns:
            `(N, fout, factor*h, factor*w)`.
        """
        size = (x.shape[2] * factor, x.shape[3] * factor)
        scale, shift = instance_norm_affine(x)
        x_hat = torch.addcmul(shift, x, scale)  # (N, fin, h, w)
        if self.learned_shortcut:
            gamma1, beta = self.norm_s.gamma1_beta(self.norm_s.hidden(seg, size))
            shortcut = modulate_(beta, x_hat, gamma1, factor)
            del gamma1, beta
            x_s = F.conv2d(shortcut, self.conv_s.conv_weight())
            del shortcut
        elif factor == 1:
            x_s = x
        else:
            x_s = F.interpolate(x, scale_factor=float(factor), mode="nearest")
        gamma1, beta = self.norm_0.gamma1_beta(self.norm_0.hidden(seg, size))
        h = F.leaky_relu_(modulate_(beta, x_hat, gamma1, factor), 0.2)
        del gamma1, beta, x_hat  # free them before the convolution (peak memory)
        dx = F.conv2d(h, self.conv_0.weight_orig, None, padding=1)  # sigma and bias: see above
        del h
        scale, shift = instance_norm_affine(dx, self.conv_0.sigma())
        dx_hat = torch.addcmul(shift, dx, scale, out=dx)  # in place
        del dx
        gamma1, beta = self.norm_1.gamma1_beta(self.norm_1.hidden(seg, size))
        h = F.leaky_relu_(modulate_(beta, dx_hat, gamma1), 0.2)
        del gamma1, beta, dx_hat
        return F.conv2d(h, self.conv_1.conv_weight(), self.conv_1.bias, padding=1).add_(x_s)


class SPADEDecoder(nn.Module):
    """`Phi` `(N, 256, F, F)` -> image `(N, 3, 4F, 4F)` in (0, 1) (spec §13.4)."""

    def __init__(self) -> None:
        super().__init__()
        ic, oc = 256, 64
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic))
        self.up_0 = SPADEResnetBlock(2 * ic, ic)
        self.up_1 = SPADEResnetBlock(ic, oc)
        self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """`feature` `(N, 256, F, F)` in the module dtype (NCHW or channels-last) -> `(N, 3, 4F, 4F)`."""
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        if self.up_0.fused:  # the 2x nearest up-sampling is done inside the blocks
            x = self.up_0.forward_upsampled(x, seg, 2)
            x = self.up_1.forward_upsampled(x, seg, 2)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.up_0(x, seg)
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.up_1(x, seg)
        x = self.conv_img(F.leaky_relu(x, 0.2))
        return torch.sigmoid(x)


@dataclass
class GeneratorSource:
    """Source-only state of the generator for `Ns` source images.

    feature: `(Ns, 32, 16, F, F)` appearance volume V in the module dtype.
    feature_f32: the same volume in float32 (the same tensor when the module is float32),
        sampled by the float32 deformation grid.
    motion: the dense motion network's source-only quantities.
    """

    feature: torch.Tensor
    feature_f32: torch.Tensor
    motion: DenseMotionSource


class OcclusionAwareSPADEGenerator(nn.Module):
    """Warp the source's 3D appearance volume by keypoint motion and decode it with SPADE."""

    def __init__(self) -> None:
        super().__init__()
        self.first = SameBlock2d(3, 64, kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList([DownBlock2d(64, 128), DownBlock2d(128, 256)])
        self.second = nn.Conv2d(256, _RESHAPE_CHANNEL * _RESHAPE_DEPTH, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(_NUM_RESBLOCKS):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(_RESHAPE_CHANNEL))
        self.dense_motion_network = DenseMotionNetwork()
        self.third = SameBlock2d(_RESHAPE_CHANNEL * _RESHAPE_DEPTH, 256, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(256, 256, kernel_size=1)
        self.decoder = SPADEDecoder()

    @property
    def dtype(self) -> torch.dtype:
        return self.fourth.weight.dtype

    def fuse_for_inference(self) -> None:
        """Switch the SPADE decoder to merged convolutions (see the module docstring)."""
        for module in self.decoder.modules():
            if isinstance(module, SPADEResnetBlock):
                module.fuse_for_inference()

    def unfuse(self) -> None:
        """Undo `fuse_for_inference()`."""
        for module in self.decoder.modules():
            if isinstance(module, SPADEResnetBlock):
                module.unfuse()

    @property
    def is_fused(self) -> bool:
        """Whether `fuse_for_inference()` is in effect."""
        return self.decoder.up_1.fused

    @property
    def channels_last(self) -> bool:
        """Whether the per-frame networks hold channels-last weights (see `use_channels_last`)."""
        return is_channels_last(self.third.conv.weight)

    def use_channels_last(self, enabled: bool = True) -> None:
        """Lay out every weight channels-last (NHWC, NDHWC for the 3D convolutions), or back to NCHW.

        The activations follow: the source encoder, the dense motion hourglass and the SPADE
        decoder then run channels-last end to end (`decode_features` hands the decoder a
        channels-last map), and oneDNN runs the convolutions in its native layout instead of
        reordering every input and output (on CPUs with AMX/AVX-512 bf16 convolutions get several
        times faster). Values, names and the state dict's contents do not change.
        """
        set_channels_last(self, enabled)

    def encode_appearance(self, image: torch.Tensor) -> torch.Tensor:
        """Appearance volume V: `(N, 3, S, S)` -> `(N, 32, 16, S/4, S/4)` in the module dtype (§13.1)."""
        out = self.first(image.to(self.dtype))
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        n, c, h, w = out.shape
        out = out.view(n, c // _RESHAPE_DEPTH, _RESHAPE_DEPTH, h, w)
        if self.channels_last:
            out = out.contiguous(memory_format=torch.channels_last_3d)
        return self.resblocks_3d(out)

    def encode_source(self, image: torch.Tensor, kp_source: torch.Tensor) -> GeneratorSource:
        """Everything that depends only on the source.

        Args:
            image: `(Ns, 3, S, S)` source image(s) in 0..1.
            kp_source: `(Ns, 15, 3)` source keypoints.
        """
        feature = self.encode_appearance(image).contiguous()
        motion = self.dense_motion_network.prepare_source(feature, kp_source)
        return GeneratorSource(feature=feature, feature_f32=feature.float(), motion=motion)

    def decode(self, source: GeneratorSource, kp_driving: torch.Tensor) -> torch.Tensor:
        """Render frames for driving keypoints.

        Args:
            source: from `encode_source` with `Ns` sources (1, or N).
            kp_driving: `(N, 15, 3)`; frame `i` uses source `i // (N / Ns)`.
        Returns:
            `(N, 3, S, S)` in (0, 1), module dtype.
        """
        return self.decoder(self.decode_features(source, kp_driving))

    def decode_features(self, source: GeneratorSource, kp_driving: torch.Tensor) -> torch.Tensor:
        """Dense motion, warp, `third`/`fourth` and occlusion: the decoder input `Phi` `(N, 256, F, F)` (§13.3).

        `Phi` is in the module dtype, channels-last when the weights are (`use_channels_last`).
        """
        motion = self.dense_motion_network.predict(source.motion, kp_driving)
        n = kp_driving.shape[0]
        ns, c, d, h, w = source.feature_f32.shape
        deformation = motion.deformation
        if deformation.shape[1:4] != (d, h, w):  # never with the official shapes (spec §13.3)
            deformation = F.interpolate(deformation.permute(0, 4, 1, 2, 3), size=(d, h, w),
                                        mode="trilinear", align_corners=False).permute(0, 2, 3, 4, 1)
        warped = sample_volume(source.feature_f32, deformation.reshape(ns, n // ns, d, h, w, 3))
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        out = warped.reshape(n, c * d, h, w).to(self.dtype, memory_format=layout)
        out = self.fourth(self.third(out))
        occlusion = motion.occlusion_map.to(out.dtype)
        if occlusion.shape[2:] != out.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear", align_corners=False)
        return out * occlusion

    def forward(self, image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """Reference behaviour: image `(N, 3, S, S)`, keypoints `(N, 15, 3)` -> frames `(N, 3, S, S)`."""
        return self.decode(self.encode_source(image, kp_source), kp_driving)
