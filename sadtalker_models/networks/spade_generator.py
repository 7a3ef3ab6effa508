"""OcclusionAwareSPADEGenerator (spec §13): source image + keypoints -> rendered frame.

Parameter names follow the `generator.` entries of the official checkpoint. The spectral-normed
decoder convs keep `weight_orig`/`weight_u`/`weight_v` so the official state dict loads strictly.

The work is split so that a renderer can encode the source once per clip:

* `encode_source(image, kp_source)` -> `GeneratorSource` (appearance volume V and the dense
  motion network's source-only quantities);
* `decode(source, kp_driving)` -> frames;
* `forward(image, kp_driving, kp_source)` = both in sequence (the reference behaviour).

`fuse_for_inference()` switches the SPADE decoder to merged convolutions, built from the
parameters at each call (so there is no second copy of any weight and the state dict is
untouched): the `mlp_shared` convs of a residual block, which read the same segmentation map, run
as one conv; on an up-sampled block that conv runs at the segmap's own resolution with merged
taps instead of on the nearest-up-sampled map (`upsampled_conv3x3`); the `1 +` of each SPADE is
folded into the gamma bias and the modulation accumulates in place; and the instance
normalisation of the block input is shared by `norm_0` and `norm_s`. `unfuse()` goes back to the reference
arithmetic. Results agree to float32 rounding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dense_motion import DenseMotionNetwork, DenseMotionSource, sample_volume
from .render_blocks import DownBlock2d, ResBlock3d, SameBlock2d, SpectralNormConv2d

__all__ = ["OcclusionAwareSPADEGenerator", "SPADEDecoder", "SPADEResnetBlock", "SPADE", "GeneratorSource"]

_RESHAPE_CHANNEL = 32
_RESHAPE_DEPTH = 16
_NUM_RESBLOCKS = 6
_LABEL_NC = 256
_HIDDEN = 128


# Tap-merging matrices for a 3-tap kernel axis read on a nearest-upsampled input (see
# `upsampled_conv3x3`): which low-resolution samples the taps of an output phase fall on.
_TAP_GROUPS = {
    "L": ((1.0, 0.0, 0.0), (0.0, 1.0, 1.0)),  # first phase: samples i-1 and i
    "C": ((1.0, 1.0, 1.0),),                  # inner phases: all three taps on sample i
    "R": ((1.0, 1.0, 0.0), (0.0, 0.0, 1.0)),  # last phase: samples i and i+1
}
_TAP_PAD = {"L": (1, 0), "C": (0, 0), "R": (0, 1)}


def _phase_kind(phase: int, factor: int) -> str:
    return "L" if phase == 0 else ("R" if phase == factor - 1 else "C")


def upsampled_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      size: tuple[int, int] | torch.Size, relu: bool = False) -> torch.Tensor:
    """`conv3x3(nearest_resize(x, size), weight, bias, padding=1)` without building the resized input.

    With an integer factor `r = size / x.size`, output pixel `(r*i + a, r*j + b)` reads only the
    low-resolution samples `i-1..i+1`: the first phase `a = 0` reads `(i-1, i)`, the last phase
    `a = r-1` reads `(i, i+1)` and the inner phases read `i` alone. Merging the taps that fall on
    the same sample gives small kernels (2x2, 2x1, 1x1) applied at low resolution: 2.25x fewer
    multiply-adds for r = 2 and 5.8x fewer for r = 4 (the inner phases share one result). Each
    low-resolution result is written into its phases of the output as soon as it is computed.
    Falls back to the plain computation for non-integer factors.

    Args:
        x: `(N, Cin, h, w)`; weight `(Cout, Cin, 3, 3)`; bias `(Cout,)` or None; size `(H, W)`;
        relu: apply a ReLU to the result.
    Returns:
        `(N, Cout, H, W)`.
    """
    h, w = x.shape[2:]
    big_h, big_w = int(size[0]), int(size[1])
    if big_h % h or big_w % w or big_h // h != big_w // w or big_h == h:
        if (big_h, big_w) != (h, w):
            x = F.interpolate(x, size=(big_h, big_w), mode="nearest")
        out = F.conv2d(x, weight, bias, padding=1)
        return out.relu_() if relu else out
    r = big_h // h
    phases: dict[str, list[int]] = {}
    for a in range(r):
        phases.setdefault(_phase_kind(a, r), []).append(a)
    w32 = weight.float()
    n = x.shape[0]
    out = x.new_empty((n, weight.shape[0], h, r, w, r))
    for ky, rows in phases.items():
        ay = torch.tensor(_TAP_GROUPS[ky], dtype=torch.float32, device=weight.device)
        for kx, cols in phases.items():
            ax = torch.tensor(_TAP_GROUPS[kx], dtype=torch.float32, device=weight.device)
            kernel = torch.einsum("pi,ocij,qj->ocpq", ay, w32, ax).to(weight.dtype)
            res = F.conv2d(F.pad(x, (*_TAP_PAD[kx], *_TAP_PAD[ky])), kernel, bias)
            if relu:
                res.relu_()
            for a in rows:
                for b in cols:
                    out[:, :, :, a, :, b] = res
            del res
    return out.view(n, weight.shape[0], big_h, big_w)


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

    def modulate(self, x: torch.Tensor, actv: torch.Tensor, normalized: torch.Tensor | None = None,
                 merged: bool = False) -> torch.Tensor:
        """Normalise `x` `(N, c, h, w)` and modulate it with the hidden map `actv` `(N, 128, h, w)`.

        `normalized`, when given, is `x`'s instance normalisation computed by the caller; `merged`
        folds the `1 +` into the gamma bias and accumulates into beta in place (less memory).
        """
        if normalized is None:
            normalized = F.instance_norm(x, eps=1e-5)
        if merged:
            gamma = self.mlp_gamma
            gamma1 = F.conv2d(actv, gamma.weight, (gamma.bias.float() + 1.0).to(gamma.bias.dtype), padding=1)
            return self.mlp_beta(actv).addcmul_(normalized, gamma1)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        return self.modulate(x, self.mlp_shared(seg))


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

    def _norms(self) -> list[SPADE]:
        return [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """x `(N, fin, h, w)`, seg `(N, 256, hs, ws)` -> `(N, fout, h, w)`."""
        if not self.fused:
            x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
            dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
            dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
            return x_s + dx
        # the hidden maps of norm_0 (and norm_s) first; norm_1's only when it is needed
        first = [self.norm_0] + ([self.norm_s] if self.learned_shortcut else [])
        a = self._hidden(first, seg, x.shape[2:]).split(_HIDDEN, dim=1)
        x_hat = F.instance_norm(x, eps=1e-5)  # shared by norm_0 and norm_s
        x_s = self.conv_s(self.norm_s.modulate(x, a[1], x_hat, merged=True)) if self.learned_shortcut else x
        h = F.leaky_relu(self.norm_0.modulate(x, a[0], x_hat, merged=True), 0.2, inplace=True)
        del x_hat, a  # free them before the convolution (peak memory)
        dx = self.conv_0(h)
        del h
        h = self._hidden([self.norm_1], seg, dx.shape[2:])
        h = F.leaky_relu(self.norm_1.modulate(dx, h, merged=True), 0.2, inplace=True)
        return x_s + self.conv_1(h)

    @staticmethod
    def _hidden(norms: list[SPADE], seg: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """ReLU(mlp_shared(seg resized to `size`)) of several SPADEs as one conv: `(N, 128 * len, *size)`."""
        convs = [n.mlp_shared[0] for n in norms]
        weight = convs[0].weight if len(convs) == 1 else torch.cat([c.weight for c in convs])
        bias = convs[0].bias if len(convs) == 1 else torch.cat([c.bias for c in convs])
        return upsampled_conv3x3(seg, weight, bias, size, relu=True)


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
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
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

    def encode_appearance(self, image: torch.Tensor) -> torch.Tensor:
        """Appearance volume V: `(N, 3, S, S)` -> `(N, 32, 16, S/4, S/4)` in the module dtype (§13.1)."""
        out = self.first(image.to(self.dtype))
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        n, c, h, w = out.shape
        out = out.view(n, c // _RESHAPE_DEPTH, _RESHAPE_DEPTH, h, w)
        return self.resblocks_3d(out)

    def encode_source(self, image: torch.Tensor, kp_source: torch.Tensor) -> GeneratorSource:
        """Everything that depends only on the source.

        Args:
            image: `(Ns, 3, S, S)` source image(s) in 0..1.
            kp_source: `(Ns, 15, 3)` source keypoints.
        """
        feature = self.encode_appearance(image)
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
        """Dense motion, warp, `third`/`fourth` and occlusion: the decoder input `Phi` `(N, 256, F, F)` (§13.3)."""
        motion = self.dense_motion_network.predict(source.motion, kp_driving)
        n = kp_driving.shape[0]
        ns, c, d, h, w = source.feature_f32.shape
        deformation = motion.deformation
        if deformation.shape[1:4] != (d, h, w):  # never with the official shapes (spec §13.3)
            deformation = F.interpolate(deformation.permute(0, 4, 1, 2, 3), size=(d, h, w),
                                        mode="trilinear", align_corners=False).permute(0, 2, 3, 4, 1)
        warped = sample_volume(source.feature_f32, deformation.reshape(ns, n // ns, d, h, w, 3))
        out = warped.reshape(n, c * d, h, w).to(self.dtype)
        out = self.fourth(self.third(out))
        occlusion = motion.occlusion_map.to(out.dtype)
        if occlusion.shape[2:] != out.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear", align_corners=False)
        return out * occlusion

    def forward(self, image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """Reference behaviour: image `(N, 3, S, S)`, keypoints `(N, 15, 3)` -> frames `(N, 3, S, S)`."""
        return self.decode(self.encode_source(image, kp_source), kp_driving)
