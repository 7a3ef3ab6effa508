"""PoseVAE (the ``audio2pose.`` model), test path only (spec §8).

Module tree (prefix ``audio2pose.`` stripped) reproduces the checkpoint exactly:

* ``audio_encoder.audio_encoder.{0..12}`` -- the shared 13-layer encoder (§8.1);
* ``netG.decoder`` -- CVAE decoder with ``MLP.L0/L1``, ``classbias`` (46, 64), ``linear_audio``,
  ``pose_linear`` and a ``resunet`` (§8.3, §8.4);
* ``netG.encoder`` -- training-only CVAE encoder, present only so strict loading works;
* ``netD_motion`` -- training-only motion discriminator, present only for strict loading.

The chunking over time and the noise draws live in ``sadtalker_models.coefficients``; this
module decodes one 32-frame chunk at a time.
"""

from __future__ import annotations

import torch
from torch import nn

from .audio_encoder import PoseAudioEncoder

SEQ_LEN = 32
LATENT_SIZE = 64
AUDIO_EMB_OUT = 6
NUM_CLASSES = 46


class ResidualConv(nn.Module):
    """main = BN, ReLU, conv3x3(stride), BN, ReLU, conv3x3; skip = conv3x3(stride), BN; out = sum."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, 3, stride, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    """ConvTranspose2d with kernel = stride = (2, 1) (doubles the time axis)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """``(N, 1, 32, 6) -> (N, 1, 32, 6)`` in (0, 1) (spec §8.4)."""

    def __init__(self) -> None:
        super().__init__()
        f = (32, 64, 128, 256)
        self.input_layer = nn.Sequential(
            nn.Conv2d(1, f[0], 3, 1, 1),
            nn.BatchNorm2d(f[0]),
            nn.ReLU(),
            nn.Conv2d(f[0], f[0], 3, 1, 1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(1, f[0], 3, 1, 1))
        self.residual_conv_1 = ResidualConv(f[0], f[1], (2, 1))
        self.residual_conv_2 = ResidualConv(f[1], f[2], (2, 1))
        self.bridge = ResidualConv(f[2], f[3], (2, 1))
        self.upsample_1 = Upsample(f[3], f[3])
        self.up_residual_conv1 = ResidualConv(f[3] + f[2], f[2], 1)
        self.upsample_2 = Upsample(f[2], f[2])
        self.up_residual_conv2 = ResidualConv(f[2] + f[1], f[1], 1)
        self.upsample_3 = Upsample(f[1], f[1])
        self.up_residual_conv3 = ResidualConv(f[1] + f[0], f[0], 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f[0], 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)


class CVAEEncoder(nn.Module):
    """Training-only CVAE encoder; never called at inference, kept for strict loading."""

    def __init__(self) -> None:
        super().__init__()
        self.resunet = ResUnet()
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(6 + LATENT_SIZE + 2 * SEQ_LEN * AUDIO_EMB_OUT, 128))
        self.MLP.add_module("A0", nn.ReLU())
        self.linear_means = nn.Linear(128, LATENT_SIZE)
        self.linear_logvar = nn.Linear(128, LATENT_SIZE)
        self.linear_audio = nn.Linear(512, AUDIO_EMB_OUT)
        self.classbias = nn.Parameter(torch.zeros(NUM_CLASSES, LATENT_SIZE))

    def forward(self, *args, **kwargs):  # pragma: no cover - training only
        raise RuntimeError("The PoseVAE encoder is training-only and is not used at inference.")


class CVAEDecoder(nn.Module):
    """``forward(audio_emb (N,32,512), z (N,64), pose_ref (N,6), style (N,) int) -> motion (N,32,6)``."""

    def __init__(self) -> None:
        super().__init__()
        self.resunet = ResUnet()
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(6 + LATENT_SIZE + SEQ_LEN * AUDIO_EMB_OUT, 128))
        self.MLP.add_module("A0", nn.ReLU())
        self.MLP.add_module("L1", nn.Linear(128, SEQ_LEN * 6))
        self.MLP.add_module("sigmoid", nn.Sigmoid())
        self.pose_linear = nn.Linear(6, 6)
        self.linear_audio = nn.Linear(512, AUDIO_EMB_OUT)
        self.classbias = nn.Parameter(torch.zeros(NUM_CLASSES, LATENT_SIZE))

    def forward(
        self, audio_emb: torch.Tensor, z: torch.Tensor, pose_ref: torch.Tensor, style: torch.Tensor
    ) -> torch.Tensor:
        n = audio_emb.shape[0]
        audio = self.linear_audio(audio_emb).reshape(n, -1)
        latent = z + self.classbias[style]
        x = self.MLP(torch.cat([pose_ref, latent, audio], dim=-1))
        x = self.resunet(x.reshape(n, 1, SEQ_LEN, 6)).reshape(n, SEQ_LEN, 6)
        return self.pose_linear(x)


class CVAE(nn.Module):
    """Holds ``encoder`` (unused) and ``decoder``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = CVAEEncoder()
        self.decoder = CVAEDecoder()


class _ConvNormRelu1d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - training only
        return nn.functional.leaky_relu(self.norm(self.conv(x)), 0.2)


class MotionDiscriminator(nn.Module):
    """Training-only discriminator; never called at inference, kept for strict loading."""

    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            _ConvNormRelu1d(6, 256, 4, 2, 1),
            _ConvNormRelu1d(256, 512, 4, 2, 1),
            _ConvNormRelu1d(512, 1024, 3, 1, 1),
            nn.Conv1d(1024, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - training only
        raise RuntimeError("The motion discriminator is training-only and is not used at inference.")


class PoseVAE(nn.Module):
    """Audio-to-pose CVAE (decoder path).

    ``decode_chunk(mels (1,L,1,80,16) with L <= 32, z (1,64), pose_ref (1,6), style int)
    -> motion (1,32,6)``; when ``L < 32`` the embedding sequence is left-padded with copies of
    its first embedding (spec §8.2).
    """

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = PoseAudioEncoder()
        self.netG = CVAE()
        self.netD_motion = MotionDiscriminator()

    def decode_chunk(
        self, mels: torch.Tensor, z: torch.Tensor, pose_ref: torch.Tensor, style: int
    ) -> torch.Tensor:
        emb = self.audio_encoder(mels)  # (1, L, 512)
        length = emb.shape[1]
        if length < SEQ_LEN:
            pad = emb[:, :1].expand(-1, SEQ_LEN - length, -1)
            emb = torch.cat([pad, emb], dim=1)
        elif length > SEQ_LEN:
            raise ValueError(f"PoseVAE decodes at most {SEQ_LEN} frames per chunk, got {length}.")
        style_t = torch.full((emb.shape[0],), int(style), dtype=torch.long, device=emb.device)
        return self.netG.decoder(emb, z, pose_ref, style_t)

    forward = decode_chunk
