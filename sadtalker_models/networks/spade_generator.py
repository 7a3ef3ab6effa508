"""OcclusionAwareSPADEGenerator (spec §13): source image + keypoints -> rendered frame.

Parameter names follow the `generator.` entries of the official checkpoint. The spectral-normed
decoder convs keep `weight_orig`/`weight_u`/`weight_v` so the official state dict loads strictly.

The work is split so that a renderer can encode the source once per clip:

* `encode_source(image, kp_source)` -> `GeneratorSource` (appearance volume V and the dense
  motion network's source-only quantities);
* `decode(source, kp_driving)` -> frames;
* `forward(image, kp_driving, kp_source)` = both in sequence (the reference behaviour).

`fuse_for_inference()` folds BatchNorm and spectral norm into plain weights, merges each SPADE's
gamma/beta convs into one conv (with the `1 +` folded into the gamma bias) and the `mlp_shared`
convs of a residual block that read the same segmentation map into one conv. It keeps the state
dict unchanged; `unfuse()` goes back to the reference arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dense_motion import DenseMotionNetwork, DenseMotionSource, sample_volume
from .render_blocks import (
    DownBlock2d,
    ResBlock3d,
    SameBlock2d,
    SpectralNormConv2d,
    set_fused,
)

__all__ = ["OcclusionAwareSPADEGenerator", "SPADEDecoder", "SPADEResnetBlock", "SPADE", "GeneratorSource"]

_RESHAPE_CHANNEL = 32
_RESHAPE_DEPTH = 16
_NUM_RESBLOCKS = 6
_LABEL_NC = 256
_HIDDEN = 128


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
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)

    def _load_from_state_dict(self, *args, **kwargs):
        self.unfuse()
        super()._load_from_state_dict(*args, **kwargs)

    def fuse_for_inference(self) -> None:
        """One conv `128 -> 2c` producing `(1 + gamma, beta)`."""
        w = torch.cat([self.mlp_gamma.weight.detach(), self.mlp_beta.weight.detach()], dim=0)
        b = torch.cat([self.mlp_gamma.bias.detach().double() + 1.0, self.mlp_beta.bias.detach().double()])
        self.fused_weight = w.contiguous()
        self.fused_bias = b.to(w.dtype)

    def unfuse(self) -> None:
        self.fused_weight = None
        self.fused_bias = None

    def modulate(self, x: torch.Tensor, actv: torch.Tensor) -> torch.Tensor:
        """Normalise `x` `(N, c, h, w)` and modulate it with the hidden map `actv` `(N, 128, h, w)`."""
        normalized = F.instance_norm(x, eps=1e-5)
        if self.fused_weight is not None:
            gb = F.conv2d(actv, self.fused_weight, self.fused_bias, padding=1)
            gamma1, beta = gb[:, : self.norm_nc], gb[:, self.norm_nc:]
            return torch.addcmul(beta, normalized, gamma1)
        gamma = self.mlp_gamma(actv)
        beta = self.mlp_beta(actv)
        return normalized * (1 + gamma) + beta

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        return self.modulate(x, self.mlp_shared(seg))


class SPADEResnetBlock(nn.Module):
    """SPADE residual block `(N, fin, h, w) -> (N, fout, h, w)` (spec §13.5), spectral-normed convs."""

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
        self.register_buffer("shared_weight", None, persistent=False)
        self.register_buffer("shared_bias", None, persistent=False)

    def _norms(self) -> list[SPADE]:
        return [self.norm_0, self.norm_1] + ([self.norm_s] if self.learned_shortcut else [])

    def _load_from_state_dict(self, *args, **kwargs):
        self.shared_weight = None
        self.shared_bias = None
        super()._load_from_state_dict(*args, **kwargs)

    def fuse_for_inference(self) -> None:
        """Fuse the sub-modules and merge the `mlp_shared` convs that read the same segmap."""
        for module in (self.conv_0, self.conv_1, *self._norms()):
            module.fuse_for_inference()
        if self.learned_shortcut:
            self.conv_s.fuse_for_inference()
        convs = [n.mlp_shared[0] for n in self._norms()]
        self.shared_weight = torch.cat([c.weight.detach() for c in convs], dim=0).contiguous()
        self.shared_bias = torch.cat([c.bias.detach() for c in convs], dim=0)

    def unfuse(self) -> None:
        for module in (self.conv_0, self.conv_1, *self._norms()):
            module.unfuse()
        if self.learned_shortcut:
            self.conv_s.unfuse()
        self.shared_weight = None
        self.shared_bias = None

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """x `(N, fin, h, w)`, seg `(N, 256, hs, ws)` -> `(N, fout, h, w)`."""
        if self.shared_weight is None:
            x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
            dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
            dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
            return x_s + dx
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = F.relu(F.conv2d(seg, self.shared_weight, self.shared_bias, padding=1))
        a = actv.split(_HIDDEN, dim=1)
        x_s = self.conv_s(self.norm_s.modulate(x, a[2])) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0.modulate(x, a[0]), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1.modulate(dx, a[1]), 0.2))
        return x_s + dx


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
        """Fold BatchNorm/spectral norm and merge SPADE convs (state dict unchanged)."""
        set_fused(self, True)

    def unfuse(self) -> None:
        """Undo `fuse_for_inference()`."""
        set_fused(self, False)

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
