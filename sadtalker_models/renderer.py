"""Face renderer (spec §11-§13): source image + coefficient windows -> video frames.

`FaceRenderer` encodes the source once per clip (canonical and source keypoints, the 3D
appearance volume and the dense motion network's source-only inputs) and then renders the
driving frames in batches of any size; a frame does not depend on the batch it is rendered in.

The networks run in their own dtype (float32, or bfloat16/float16 for speed); the inputs are cast
to it. Keypoint geometry (head pose, rotation, the keypoint softmax expectation, grids and the
deformation) stays float32. Frames come out float32 in 0..1.

Typical use::

    renderer = FaceRenderer(nets.kp_detector, nets.generator, mapping).optimize()
    state = renderer.encode_source(source_image, inputs.source_semantics)
    for frames in renderer.iter_frames(state, inputs, batch_size=4, progress=callback):
        sink(frames)          # (b, 3, S, S) float32 on the CPU
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from .networks.keypoint_detector import KPDetector
from .networks.mapping_net import MappingNet
from .networks.spade_generator import GeneratorSource, OcclusionAwareSPADEGenerator

logger = logging.getLogger(__name__)

__all__ = [
    "FaceRenderer",
    "SourceState",
    "headpose_to_degrees",
    "rotation_matrix",
    "transform_keypoints",
]

_PI = 3.14  # the reference's approximation of pi (spec §11.2)
_NUM_BINS = 66

ProgressCallback = Callable[[int, int], Any]


class RenderInputsLike(Protocol):
    """What `iter_frames` reads from `sadtalker_models.render_data.RenderInputs`."""

    target_semantics: torch.Tensor
    yaw: torch.Tensor | None
    pitch: torch.Tensor | None
    roll: torch.Tensor | None


def headpose_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected angle of the 66-bin softmax: `(N, 66)` logits -> `(N,)` degrees, `3 * E[bin] - 99`."""
    prob = torch.softmax(logits.float(), dim=1)
    bins = torch.arange(_NUM_BINS, dtype=torch.float32, device=logits.device)
    return torch.sum(prob * bins, dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """`M = P @ Y @ R` from angles in degrees `(N,)` each -> `(N, 3, 3)` (pi taken as 3.14)."""
    yaw = (yaw / 180 * _PI).unsqueeze(1)
    pitch = (pitch / 180 * _PI).unsqueeze(1)
    roll = (roll / 180 * _PI).unsqueeze(1)
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    n = yaw.shape[0]
    p = torch.cat([one, zero, zero,
                   zero, torch.cos(pitch), -torch.sin(pitch),
                   zero, torch.sin(pitch), torch.cos(pitch)], dim=1).view(n, 3, 3)
    y = torch.cat([torch.cos(yaw), zero, torch.sin(yaw),
                   zero, one, zero,
                   -torch.sin(yaw), zero, torch.cos(yaw)], dim=1).view(n, 3, 3)
    r = torch.cat([torch.cos(roll), -torch.sin(roll), zero,
                   torch.sin(roll), torch.cos(roll), zero,
                   zero, zero, one], dim=1).view(n, 3, 3)
    return torch.einsum("bij,bjk,bkm->bim", p, y, r)


def transform_keypoints(kp_canonical: torch.Tensor, motion: dict[str, torch.Tensor],
                        yaw: torch.Tensor | None = None, pitch: torch.Tensor | None = None,
                        roll: torch.Tensor | None = None) -> torch.Tensor:
    """Pose, translate and deform canonical keypoints (spec §11.2).

    Args:
        kp_canonical: `(1, 15, 3)` or `(N, 15, 3)` canonical keypoints.
        motion: MappingNet output for N windows (yaw/pitch/roll `(N, 66)`, t `(N, 3)`, exp `(N, 45)`).
        yaw, pitch, roll: optional `(N,)` degrees that replace the predicted angles.
    Returns:
        `(N, 15, 3)` float32 keypoints: `K @ M^T + (0, t_y, 0) + exp`.
    """
    angles = []
    for name, override in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
        if override is not None:
            angles.append(override.to(device=kp_canonical.device, dtype=torch.float32).reshape(-1))
        else:
            angles.append(headpose_to_degrees(motion[name]))
    rot = rotation_matrix(*angles)
    kp = kp_canonical.float()
    n = rot.shape[0]
    if kp.shape[0] != n:
        kp = kp.expand(n, -1, -1)
    rotated = torch.einsum("bmp,bkp->bkm", rot, kp)
    t = motion["t"].float()
    t = torch.stack([torch.zeros_like(t[:, 1]), t[:, 1], torch.zeros_like(t[:, 1])], dim=1)
    exp = motion["exp"].float().view(n, -1, 3)
    return rotated + t.unsqueeze(1) + exp


@dataclass
class SourceState:
    """Everything the renderer computes once per clip from the source.

    kp_canonical: `(1, 15, 3)` float32; kp_source: `(1, 15, 3)` float32;
    generator: the generator's source state (appearance volume, dense-motion inputs);
    size: S.
    """

    kp_canonical: torch.Tensor
    kp_source: torch.Tensor
    generator: GeneratorSource
    size: int


class FaceRenderer:
    """Renders frames from a source image and MappingNet coefficient windows.

    Args:
        kp_detector: loaded `KPDetector` (eval mode).
        generator: loaded `OcclusionAwareSPADEGenerator` (eval mode).
        mapping: loaded `MappingNet` matching the preprocess mode (70 or 73 inputs).
    """

    def __init__(self, kp_detector: KPDetector, generator: OcclusionAwareSPADEGenerator,
                 mapping: MappingNet) -> None:
        self.kp_detector = kp_detector
        self.generator = generator
        self.mapping = mapping
        self._compiled_decoder: nn.Module | None = None
        #: windows per MappingNet call in `driving_keypoints` (fixed, so frames are batch-independent)
        self.mapping_chunk = 64

    # ------------------------------------------------------------------ properties / options
    @property
    def device(self) -> torch.device:
        """Device of the generator's weights."""
        return self.generator.fourth.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the generator (float32, bfloat16 or float16)."""
        return self.generator.fourth.weight.dtype

    def optimize(self, fuse: bool = True, compile: bool | str = False,
                 channels_last: bool | None = None) -> FaceRenderer:
        """Speed-ups that keep float32 output within the parity tolerance; returns `self`.

        * `fuse`: run the SPADE decoder on its merged path (`fuse_for_inference()` of the
          generator; see `networks/spade_generator.py`): the SPADE hidden maps of up-sampled blocks
          computed at the segmap's resolution, the up-sampled block inputs never built, the
          `1 + gamma` folded into the bias and the modulation done in place, float32 normalisation
          statistics from the batch-norm kernel, `conv_0`'s spectral division and bias folded into
          the following normalisation. Nothing is copied and the state dicts are unchanged.
        * `channels_last`: lay out the networks' weights and activations channels-last
          (`use_channels_last()` of the generator and the keypoint detector); `None` = on a CPU
          (where oneDNN runs channels-last convolutions natively: several times faster in bf16,
          ~1.1x in fp32, the same with AVX2 only), not on other devices.
        * `compile`: wrap the SPADE decoder in `torch.compile` (a string is its `mode`, e.g.
          `"reduce-overhead"` for CUDA graphs); each batch shape compiles on its first call. If
          compiling fails (no compiler, unsupported backend) that call logs a warning and the
          eager decoder is used. On a CPU it is not worth it: the eager path above is within a
          few percent of inductor's code (with or without weight freezing) after 20-40 s of
          compiling per batch shape (benchmarks/bench_render.py `--compile`).

        The networks are shared objects: this switches them for every renderer that uses them.
        """
        if fuse:
            self.generator.fuse_for_inference()
        else:
            self.generator.unfuse()
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        if channels_last != self.generator.channels_last:
            self.generator.use_channels_last(channels_last)
        if channels_last != self.kp_detector.channels_last:
            self.kp_detector.use_channels_last(channels_last)
        if compile:
            mode = compile if isinstance(compile, str) else None
            self._compiled_decoder = _CompiledOrEager(self.generator.decoder, mode)
        else:
            self._compiled_decoder = None
        return self

    # ------------------------------------------------------------------ stages
    def encode_source(self, source_image: torch.Tensor, source_semantics: torch.Tensor) -> SourceState:
        """Encode the source once per clip.

        Args:
            source_image: `(1, 3, S, S)` in 0..1 (S a multiple of 128).
            source_semantics: `(1, C, 27)` source coefficient window.
        Returns:
            `SourceState` with kp_canonical and kp_source `(1, 15, 3)` and the generator's
            source-only tensors.
        """
        if source_image.dim() != 4 or source_image.shape[0] != 1 or source_image.shape[1] != 3:
            raise ValueError(f"source_image must be (1, 3, S, S), got {tuple(source_image.shape)}")
        size = int(source_image.shape[-1])
        if source_image.shape[-2] != size or size % 128:
            raise ValueError(f"the source image must be square with a side that is a multiple of 128, got "
                             f"{tuple(source_image.shape[-2:])}; resize it to 256 or 512")
        with torch.inference_mode():
            image = source_image.to(self.device, self.dtype)
            kp_canonical = self.kp_detector(source_image.to(self.device, self._kp_dtype))
            motion = self._mapping(source_semantics)
            kp_source = transform_keypoints(kp_canonical, motion)
            generator_state = self.generator.encode_source(image, kp_source)
        return SourceState(kp_canonical=kp_canonical, kp_source=kp_source, generator=generator_state, size=size)

    def driving_keypoints(self, state: SourceState, target_semantics: torch.Tensor,
                          yaw: torch.Tensor | None = None, pitch: torch.Tensor | None = None,
                          roll: torch.Tensor | None = None) -> torch.Tensor:
        """Driving keypoints `(T, 15, 3)` float32 from windows `(T, C, 27)` and optional `(T,)` angles.

        The MappingNet runs on fixed chunks of `mapping_chunk` windows counted from the first
        one, so a frame's keypoints never depend on how the frames are later batched.
        """
        total = int(target_semantics.shape[0])
        out = []
        with torch.inference_mode():
            for start in range(0, total, self.mapping_chunk):
                end = min(start + self.mapping_chunk, total)
                motion = self._mapping(target_semantics[start:end])
                cams = [None if c is None else c.reshape(-1)[start:end] for c in (yaw, pitch, roll)]
                out.append(transform_keypoints(state.kp_canonical, motion, *cams))
            if not out:
                return torch.empty((0, 15, 3), dtype=torch.float32, device=self.device)
            return torch.cat(out)

    def render_keypoints(self, state: SourceState, kp_driving: torch.Tensor) -> torch.Tensor:
        """Frames for driving keypoints `(b, 15, 3)` -> `(b, 3, S, S)` float32 on the compute device."""
        with torch.inference_mode():
            kp = kp_driving.to(self.device, torch.float32)
            decoder = self._compiled_decoder if self._compiled_decoder is not None else self.generator.decoder
            frames = decoder(self.generator.decode_features(state.generator, kp))
            return frames.to(torch.float32, memory_format=torch.contiguous_format)

    def iter_frames(self, state: SourceState, inputs: RenderInputsLike | torch.Tensor, batch_size: int = 2,
                    progress: ProgressCallback | None = None,
                    out_device: torch.device | str | None = "cpu") -> Iterator[torch.Tensor]:
        """Render all frames, one batch at a time.

        Args:
            state: from `encode_source`.
            inputs: a `RenderInputs` (target_semantics `(T, C, 27)`, yaw/pitch/roll `(T,)` or None)
                or just the target windows `(T, C, 27)`.
            batch_size: frames per batch (>= 1); the frames do not depend on it.
            progress: `progress(done_frames, total_frames)` after each batch; raise to cancel.
            out_device: where each finished batch is moved before the next starts (None keeps it
                on the compute device).
        Yields:
            `(b, 3, S, S)` float32 frames in 0..1, in order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        target, cams = _unpack_inputs(inputs)
        total = int(target.shape[0])
        for name, seq in cams.items():
            if seq is not None and seq.reshape(-1).shape[0] != total:
                raise ValueError(f"the {name} sequence has {seq.numel()} values for {total} frames")
        kp_driving = self.driving_keypoints(state, target, **cams)  # (T, 15, 3): tiny
        # CUDA -> CPU: copy each batch into pinned memory without blocking and hand out the previous
        # batch while the GPU renders this one (one batch of look-ahead), so the GPU never waits
        overlap = out_device is not None and torch.device(out_device).type == "cpu" and self.device.type == "cuda"
        pending = None
        for start in range(0, total, batch_size):
            end = min(start + batch_size, total)
            frames = self.render_keypoints(state, kp_driving[start:end])
            if overlap:
                host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
                host.copy_(frames, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record()
                if pending is not None:
                    yield _finished(pending, progress, total)
                pending = (host, copied, end)
                continue
            if out_device is not None:
                frames = frames.to(out_device)
            if progress is not None:
                progress(end, total)
            yield frames
        if pending is not None:
            yield _finished(pending, progress, total)

    # ------------------------------------------------------------------ helpers
    @property
    def _kp_dtype(self) -> torch.dtype:
        return self.kp_detector.kp.weight.dtype

    def _mapping(self, semantics: torch.Tensor) -> dict[str, torch.Tensor]:
        weight = self.mapping.fc_t.weight
        return self.mapping(semantics.to(weight.device, weight.dtype))


def _finished(pending: tuple[torch.Tensor, "torch.cuda.Event", int], progress: ProgressCallback | None,
              total: int) -> torch.Tensor:
    """Wait for a batch's non-blocking copy to the host, report progress, return the host batch."""
    host, copied, end = pending
    copied.synchronize()
    if progress is not None:
        progress(end, total)
    return host


def _unpack_inputs(inputs: RenderInputsLike | torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    if isinstance(inputs, torch.Tensor):
        return inputs, {"yaw": None, "pitch": None, "roll": None}
    return inputs.target_semantics, {"yaw": inputs.yaw, "pitch": inputs.pitch, "roll": inputs.roll}


class _CompiledOrEager(nn.Module):
    """`torch.compile(module, mode=mode)`, falling back to the eager module (once, with a warning) on failure."""

    def __init__(self, module: nn.Module, mode: str | None = None) -> None:
        super().__init__()
        self.eager = module
        self._compiled: Callable[..., torch.Tensor] | None
        try:
            self._compiled = torch.compile(module, dynamic=False, mode=mode)
        except Exception as exc:  # noqa: BLE001 - any backend problem means "use eager"
            logger.warning("torch.compile is unavailable (%s); rendering without it", exc)
            self._compiled = None

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(*args)
            except Exception as exc:  # noqa: BLE001
                logger.warning("torch.compile failed (%s); rendering without it", exc)
                self._compiled = None
        return self.eager(*args)
