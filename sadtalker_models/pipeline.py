"""High-level SadTalker: one models bundle and four calls, shared by the ComfyUI nodes and the CLI.

::

    models = load_models("ComfyUI/models/sadtalker/SadTalker_V0.0.2_256.safetensors")
    face = prepare_face(models, image, preprocess="crop", size=256)
    coeffs = audio_to_coefficients(models, face, waveform, sample_rate, pose_style=0, seed=0)
    for batch in render_frames(models, face, coeffs):      # (b, H, W, 3) uint8, batch by batch
        ...

Precision: the coefficient networks (ReconNet, ExpNet, PoseVAE), the keypoint detector and the
mapping nets always run in float32 (they are cheap, and their outputs set the head pose: full-mode
coefficients reach ~130, where bf16/fp16 rounding would move the head); the generator, which is
where the time goes, runs in the chosen dtype.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from .model_cache import MODEL_CACHE, ModelCache, make_key
from .options import (FPS, LANDMARK_BACKENDS, MAX_IDLE_SECONDS, MAX_POSE_STYLE, PREPROCESS_MODES, SIZES,
                      check_choice, is_full_frame)
from .frames import (background_frame, check_background, frames_to_uint8, natural_size, output_size,  # noqa: F401
                     pad_to_even)
from .precision import resolve_dtype

logger = logging.getLogger(__name__)


ProgressFn = Callable[[int, int], None]


# --------------------------------------------------------------------------- device / dtype


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> cuda if available, else mps, else cpu."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"Unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps.") from err
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda or getattr(torch.version, "hip", None):
            raise ValueError(f"Device {device!r} is not available: this torch supports CUDA but sees no usable GPU "
                             "(check the driver with nvidia-smi, and CUDA_VISIBLE_DEVICES); use auto or cpu.")
        raise ValueError(f"Device {device!r} is not available: this torch build has no CUDA support (a CPU-only "
                         "build); install a CUDA build of torch, or use auto or cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"Device {device!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise ValueError(f"Device {device!r} (Apple GPU) is not available on this machine or torch build; "
                         "use auto or cpu.")
    return dev


# --------------------------------------------------------------------------- models


def checkpoint_size(path: str | os.PathLike) -> int | None:
    """256 or 512 from an official file name (``SadTalker_V0.0.2_<size>.safetensors``), else None."""
    match = re.search(r"_(256|512)\.safetensors$", Path(path).name)
    return int(match.group(1)) if match else None


def find_checkpoint(models_dir: str | os.PathLike, size: int = 256) -> Path:
    """The ``SadTalker_V0.0.2_<size>.safetensors`` file of ``models_dir`` (a readable error if absent)."""
    from .checkpoints import CheckpointError, missing_file_message, sadtalker_file_for

    models_dir = Path(models_dir)
    path = models_dir / sadtalker_file_for(size)
    if not path.is_file():
        raise CheckpointError(missing_file_message(path))
    return path


class SadTalker(torch.nn.ModuleDict):
    """Every loaded network of one checkpoint in one module (what ComfyUI's ModelPatcher moves on and
    off the GPU). A ModuleDict named so that ComfyUI's log says "Requested to load SadTalker"."""


class SadTalkerModels:
    """The five networks of one checkpoint plus the two mapping nets (loaded on first use).

    Attributes ``device`` and ``dtype`` say where the renderer runs. ``container`` holds every
    loaded network in one ``nn.ModuleDict`` (what ComfyUI's ModelPatcher moves on and off the GPU).
    """

    def __init__(self, nets: Any, checkpoint: Path, mapping_dir: Path, device: torch.device, dtype: torch.dtype):
        self.nets = nets
        self.checkpoint = Path(checkpoint)
        self.mapping_dir = Path(mapping_dir)
        self.device = torch.device(device)
        self.dtype = dtype
        self.size = checkpoint_size(checkpoint) or 256
        self.container = SadTalker({
            "recon": nets.recon, "expnet": nets.expnet, "posevae": nets.posevae,
            "kp_detector": nets.kp_detector, "generator": nets.generator,
        })
        self._lock = threading.Lock()
        self._fused = False

    def __repr__(self) -> str:
        return f"SadTalkerModels({self.checkpoint.name}, device={self.device}, dtype={self.dtype})"

    def mapping(self, preprocess: str) -> torch.nn.Module:
        """The MappingNet for ``preprocess`` (70 inputs, or 73 for full/extfull), loaded once."""
        from .checkpoints import load_mapping, mapping_file_for

        name = mapping_file_for(preprocess)
        key = "mapping_full" if is_full_frame(preprocess) else "mapping"
        with self._lock:
            if key not in self.container:
                logger.info("Loading %s", name)
                net = load_mapping(self.mapping_dir / name, device="cpu", dtype=torch.float32)
                self.container[key] = net.to(device=self.device)  # float32: see the module docstring
            return self.container[key]

    def renderer(self, preprocess: str):
        """A FaceRenderer for ``preprocess`` (the renderer networks are fused for inference once)."""
        from .renderer import FaceRenderer

        mapping = self.mapping(preprocess)
        renderer = FaceRenderer(self.nets.kp_detector, self.nets.generator, mapping)
        if not self._fused:
            renderer.optimize(fuse=True)
            self._fused = True
        return renderer

    def current_device(self) -> torch.device:
        """Where the weights are now (ComfyUI may have moved them)."""
        return next(self.nets.generator.parameters()).device

    def to(self, device: str | torch.device) -> "SadTalkerModels":
        """Move every loaded network (renderer nets keep their dtype, coefficient nets float32)."""
        self.container.to(device)
        self.device = torch.device(device)
        return self


def load_models(checkpoint: str | os.PathLike, device: str | torch.device | None = "cpu",
                precision: str | torch.dtype = "fp32", mapping_dir: str | os.PathLike | None = None,
                cache: ModelCache | None = MODEL_CACHE) -> SadTalkerModels:
    """Load a SadTalker checkpoint (cached by files, device and dtype).

    Args:
        checkpoint: a ``SadTalker_V0.0.2_<size>.safetensors`` file, or a folder holding the 256 one.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ... (see :func:`resolve_device`).
        precision: ``auto``/``fp32``/``fp16``/``bf16`` or a torch dtype, for the renderer; reduced
            precision on a CPU without native support falls back to fp32 (see :mod:`.precision`).
        mapping_dir: folder of the two ``mapping_*.pth.tar`` files (default: beside the checkpoint).
        cache: where loaded models are kept; ``None`` loads afresh.
    """
    from .checkpoints import load_sadtalker

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = find_checkpoint(checkpoint, 256)
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    mapping_dir = Path(mapping_dir) if mapping_dir else checkpoint.parent

    def load() -> SadTalkerModels:
        nets = load_sadtalker(checkpoint, device="cpu", dtype=torch.float32, size=checkpoint_size(checkpoint))
        nets.recon.to(dev)
        nets.expnet.to(dev)
        nets.posevae.to(dev)
        nets.kp_detector.to(device=dev)
        nets.generator.to(device=dev, dtype=dtype)
        return SadTalkerModels(nets, checkpoint, mapping_dir, dev, dtype)

    if cache is None:
        return load()
    key = make_key("sadtalker", [checkpoint], dev, dtype, str(mapping_dir))
    return cache.get_or_load(key, load)


# --------------------------------------------------------------------------- face


@dataclass
class SourceFace:
    """A prepared source image: the face crop, how it was cut, and its 3DMM coefficients."""

    crop: np.ndarray          # (S, S, 3) uint8, the renderer's source image
    crop_info: Any            # face.crop.CropInfo
    coeff_3dmm: torch.Tensor  # (1, 73) float32, CPU
    original: np.ndarray      # (H0, W0, 3) uint8, the untouched input (paste-back target)
    preprocess: str
    size: int
    data: Any = None          # the face pipeline's FaceData: every face found (faces) and the one used (face_index)

    @property
    def paste_back_possible(self) -> bool:
        return is_full_frame(self.preprocess)


def prepare_face(models: SadTalkerModels, image: Any, preprocess: str = "crop", size: int | None = None,
                 landmark_backend: str = "auto", landmark_dir: str | None = None,
                 face_index: int | None = None, mask: Any = None) -> SourceFace:
    """Crop the face of ``image`` and extract its 3DMM coefficients.

    ``image``: RGB ``(H, W, 3)`` uint8 or float 0..1 (numpy or torch). ``size`` defaults to the
    checkpoint's size. Raises ValueError when no face is found.
    ``face_index``: None/-1 = the largest face, 0, 1, ... = that face from the left; ``mask``
    (``(H, W)`` 0..1): the face inside it (wins over ``face_index``). ``face.data.faces`` holds
    every face found and ``face.data.face_index`` the one used (see :func:`face.select.draw_faces`).
    """
    from .face.landmarks import make_landmark_detector, to_rgb_uint8
    from .face.preprocess import prepare_face as face_prepare

    check_choice(preprocess, PREPROCESS_MODES, "preprocess mode")
    size = int(size or models.size)
    check_choice(size, SIZES, "size")
    if size != models.size:
        logger.warning("Face size %d differs from the checkpoint's %d; the %d model renders best at %d.",
                       size, models.size, models.size, models.size)
    original = to_rgb_uint8(image, "source image")
    detector = make_landmark_detector(check_choice(landmark_backend, LANDMARK_BACKENDS, "landmark backend"),
                                      landmark_dir)
    with torch.inference_mode():
        data = face_prepare(original, preprocess, size, detector, models.nets.recon, face_index, mask)
    return SourceFace(np.ascontiguousarray(data.image), data.crop_info,
                      torch.as_tensor(data.coeff_3dmm).float().cpu().reshape(1, -1),
                      original, preprocess, size, data=data)


def reference_coefficients(models: SadTalkerModels, frames: Iterable[Any], landmark_backend: str = "auto",
                           landmark_dir: str | None = None, max_frames: int | None = None,
                           preprocess: str = "crop") -> torch.Tensor:
    """Per-frame 3DMM coefficients ``(N, 73)`` of a reference video (crop box from its first frame).

    Frames are cropped like a source image in ``preprocess`` mode, at 256 as the reference does.
    """
    from .face.landmarks import make_landmark_detector, to_rgb_uint8
    from .face.reference_video import reference_coefficients as face_reference

    detector = make_landmark_detector(check_choice(landmark_backend, LANDMARK_BACKENDS, "landmark backend"),
                                      landmark_dir)

    def rgb_frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(frames):
            if max_frames is not None and i >= max_frames:
                break
            yield to_rgb_uint8(frame, f"reference frame {i}")

    with torch.inference_mode():
        coeffs = face_reference(rgb_frames(), detector, models.nets.recon,
                                mode=check_choice(preprocess, PREPROCESS_MODES, "preprocess mode"))
    coeffs = torch.as_tensor(coeffs).float().cpu()
    if coeffs.ndim != 2 or coeffs.shape[0] == 0:
        raise ValueError("The reference video gave no frames; give a video with at least one frame.")
    return coeffs


# --------------------------------------------------------------------------- coefficients


class Audio(NamedTuple):
    """Sound carried with coefficients (and rendered as their sound track)."""

    waveform: np.ndarray   # (C, n) float32 in [-1, 1]
    sample_rate: int


def as_audio(waveform: Any, sample_rate: int) -> Audio:
    """``(n,)``, ``(C, n)`` or ``(1, C, n)`` float or integer PCM (numpy or torch) -> :class:`Audio`
    ``(C, n)`` float32 (integer PCM scaled to [-1, 1); of a batch of clips the first)."""
    from .audio import pcm_to_float32

    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    wave = pcm_to_float32(np.asarray(waveform))
    if wave.ndim == 3:
        wave = wave[0]
    elif wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f"Audio must be samples (n,), channels x samples (C, n) or (1, C, n); got shape "
                         f"{tuple(np.shape(waveform))}.")
    return Audio(np.ascontiguousarray(wave), int(sample_rate))


@dataclass
class Coefficients:
    """Per-frame motion coefficients at 25 fps, plus what rendering needs to know about them."""

    coeffs: torch.Tensor                 # (T, 70) float32 CPU: expression 64 | angles 3 | translation 3
    fps: float = float(FPS)
    still: bool = False
    audio: Audio | None = None           # the speech they came from (the sound track), or None
    blink: torch.Tensor | None = None    # (T,) blink ratio used (None for reference-driven)
    source: str = "audio"                # "audio" or "reference"
    info: dict = field(default_factory=dict)
    source_pose: torch.Tensor | None = None  # (3,) the source face's angles (radians), kept by ``still``
    source_expression: torch.Tensor | None = None  # (64,) the source face's expression (the 'expression' curve)

    def __post_init__(self) -> None:
        """Refuse coefficients that cannot render: a frame rate that is not a positive number, or
        NaN/infinite values (which would give black frames without an error)."""
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            fps = math.nan
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"The coefficients' frame rate must be a positive number of frames per second, got "
                             f"{self.fps!r}: they (or the file they were loaded from) are damaged; make them again.")
        self.fps = fps
        if self.audio is not None and not isinstance(self.audio, Audio):
            raise ValueError(f"The coefficients' audio must be an Audio(waveform, sample_rate) (see as_audio), got "
                             f"{type(self.audio).__name__}.")
        if not bool(torch.isfinite(torch.as_tensor(self.coeffs)).all()):
            raise ValueError("The coefficients contain NaN or infinite values, which would render black frames: "
                             "they (or the file they were loaded from) are damaged; make them again.")

    @property
    def num_frames(self) -> int:
        return int(self.coeffs.shape[0])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def curves(self, max_points: int = 400) -> dict:
        """Small JSON-able curves for plotting: mouth (expression 0), blink, yaw/pitch/roll in degrees,
        and, when the source's expression is known, ``expression``: each frame's expression offset, the
        L2 distance of its 64 expression coefficients from the source picture's own (0 = the source's
        expression; speech raises it a little, an expression reference lifts the whole curve).

        The pose is what will be rendered: with ``still`` (and a known ``source_pose``) the source's
        own angles on every frame, as :func:`render_data.build_render_inputs` uses them.
        """
        c = self.coeffs.detach().float().cpu()
        if self.still and self.source_pose is not None:
            c = c.clone()
            c[:, 64:67] = self.source_pose.detach().float().cpu().reshape(1, 3)
        t = c.shape[0]
        step = max(1, math.ceil(t / max_points))
        deg = 180.0 / math.pi
        out = {
            "fps": self.fps, "frames": t, "step": step,
            "mouth": c[::step, 0].tolist(),
            "pitch": (c[::step, 64] * deg).tolist(),
            "yaw": (c[::step, 65] * deg).tolist(),
            "roll": (c[::step, 66] * deg).tolist(),
        }
        if self.blink is not None:
            out["blink"] = self.blink.detach().float().cpu().reshape(-1)[::step].tolist()
        if self.source_expression is not None:
            source = self.source_expression.detach().float().cpu().reshape(1, 64)
            out["expression"] = (c[::step, :64] - source).norm(dim=1).tolist()
        return out


def audio_to_coefficients(models: SadTalkerModels, face: SourceFace, waveform: Any, sample_rate: int,
                          pose_style: int = 0, seed: int | None = 0, blink: bool = True, still: bool = False,
                          ref_pose: torch.Tensor | None = None,
                          ref_eyeblink: torch.Tensor | None = None, head_motion_scale: float = 1.0,
                          blinks_per_minute: float | None = None,
                          expression_reference: SourceFace | torch.Tensor | None = None,
                          expression_strength: float = 1.0) -> Coefficients:
    """Speech -> per-frame coefficients ``(T, 70)`` at 25 fps (ExpNet + PoseVAE, §5-§9).

    ``seed`` makes the blink schedule and the PoseVAE noise reproducible (``None``: random).
    ``ref_pose``/``ref_eyeblink``: ``(N, 73)`` coefficients of a reference video.
    ``head_motion_scale``: 0 = the source pose throughout, 1 = as predicted, > 1 = livelier
    (:func:`motion.scale_head_motion`, applied after any reference pose).
    ``blink``/``blinks_per_minute``: off (``blink=False``), the original's natural schedule (rate
    None or 0), or about that many blinks per minute (:func:`motion.blink_ratio_at_rate`).
    ``expression_reference``: another picture's face (:func:`prepare_face`) or its ``coeff_3dmm``
    ``(1, 73)`` / expression ``(1, 64)``: the lips follow the speech around that picture's expression
    (smiling, sad, ...) while the source keeps its identity; ExpNet's reference is ``source +
    expression_strength * (reference - source)`` (0 = the source's own, bit-identical to no reference).
    """
    from .audio import lazy_mel_windows
    from .coefficients import audio_to_coefficients as predict, expression_offset, make_generator
    from .motion import blink_ratio_at_rate, scale_head_motion

    pose_style = int(pose_style)
    if not 0 <= pose_style <= MAX_POSE_STYLE:
        raise ValueError(f"Pose style must be between 0 and {MAX_POSE_STYLE}, got {pose_style}.")
    if isinstance(expression_reference, SourceFace):
        expression_reference = expression_reference.coeff_3dmm
    expression_offset(face.coeff_3dmm, expression_reference, expression_strength)   # checked before the audio
    mels = lazy_mel_windows(waveform, sample_rate)   # T windows made chunk by chunk; ValueError on bad audio
    generator = make_generator(None if seed is None else int(seed))
    rate = float(blinks_per_minute or 0.0)
    ratio = None
    if blink and rate and ref_eyeblink is None:   # drawn first, like the natural schedule
        ratio = blink_ratio_at_rate(len(mels), rate, generator)
    with torch.inference_mode():
        result = predict(
            models.nets.expnet, models.nets.posevae, mels, face.coeff_3dmm, pose_style,
            generator=generator, blink=bool(blink), blink_ratio=ratio,
            ref_eyeblink=ref_eyeblink, ref_pose=ref_pose,
            expression_reference=expression_reference, expression_strength=expression_strength,
        )
    return Coefficients(
        coeffs=scale_head_motion(result.coeffs, face.coeff_3dmm, head_motion_scale),
        still=bool(still), audio=as_audio(waveform, sample_rate),
        blink=result.ratio.detach().float().reshape(-1).cpu(), source="audio",
        source_pose=face.coeff_3dmm[0, 64:67].detach().float().cpu().clone(),
        source_expression=face.coeff_3dmm[0, :64].detach().float().cpu().clone(),
        info={"pose_style": pose_style, "seed": seed, "blink": bool(blink),
              "blinks_per_minute": rate if blink else 0.0, "head_motion_scale": float(head_motion_scale),
              "ref_pose": ref_pose is not None, "ref_eyeblink": ref_eyeblink is not None,
              "expression_reference": expression_reference is not None,
              "expression_strength": float(expression_strength) if expression_reference is not None else 0.0},
    )


def idle_coefficients(models: SadTalkerModels, face: SourceFace, seconds: float, pose_style: int = 0,
                      seed: int | None = 0, blink: bool = True, blinks_per_minute: float | None = None,
                      head_motion_scale: float = 1.0, still: bool = False,
                      expression_reference: SourceFace | torch.Tensor | None = None,
                      expression_strength: float = 1.0) -> Coefficients:
    """``seconds`` of idle motion without speech: ``(T, 70)`` with ``T = round(seconds * 25)``.

    The audio networks are given silence (a zero waveform): ExpNet then sees the same mel window on
    every frame, so the mouth stays as it is at rest and only the blinks change the expression;
    PoseVAE still adds its seeded noise, a slight head motion (``head_motion_scale`` scales it).
    The coefficients carry that silence as their audio, so rendering gives a silent track of the
    same length. Same ``seed`` -> same clip. ``expression_reference``/``expression_strength`` as in
    :func:`audio_to_coefficients`: the resting face then holds that picture's expression (ExpNet's
    reference is the only expression input an idle clip has).
    """
    seconds = float(seconds)
    if not (math.isfinite(seconds) and 1.0 / FPS <= seconds <= MAX_IDLE_SECONDS):
        raise ValueError(f"The idle length must be between one frame (0.04 s) and {MAX_IDLE_SECONDS:.0f} s; got "
                         f"{seconds!r} seconds.")
    frames = int(round(seconds * FPS))
    rate = 16000
    silence = np.zeros((1, frames * rate // FPS), dtype=np.float32)
    coeffs = audio_to_coefficients(models, face, silence, rate, pose_style=pose_style, seed=seed, blink=blink,
                                   still=still, head_motion_scale=head_motion_scale,
                                   blinks_per_minute=blinks_per_minute, expression_reference=expression_reference,
                                   expression_strength=expression_strength)
    coeffs.source = "idle"
    coeffs.info["idle_seconds"] = seconds
    return coeffs


def coefficients_from_reference(ref: torch.Tensor, num_frames: int | None = None,
                                audio: Audio | None = None, still: bool = False) -> Coefficients:
    """Drive the face with a reference video's own expression and pose (no audio model).

    The length follows the audio (``T = floor(seconds*25)``) when given, else the reference's frames;
    a shorter reference is tiled.
    """
    from .coefficients import check_reference, tile_to_length

    ref = check_reference(ref, "The reference", 73)
    if num_frames is None and audio is not None:
        num_frames = int(audio.waveform.shape[-1] * FPS // int(audio.sample_rate))
    num_frames = int(num_frames or ref.shape[0])
    if num_frames < 1:
        raise ValueError("The audio is shorter than one video frame (40 ms).")
    coeffs = tile_to_length(ref[:, :70], num_frames).contiguous()
    return Coefficients(coeffs=coeffs, still=still, audio=audio, blink=None, source="reference",
                        info={"reference_frames": int(ref.shape[0])})


# --------------------------------------------------------------------------- rendering


def parse_angles(text: str | Sequence[float] | None, what: str = "angles") -> list[float] | None:
    """``"0,20,-10"`` -> ``[0.0, 20.0, -10.0]``; empty -> None. Readable error otherwise."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        values = [float(v) for v in text]
        return values or None
    text = str(text).strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[,\s;]+", text) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"The {what} path must be numbers in degrees separated by commas, like 0,20,-10; got {text!r}.") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"The {what} path contains a non-finite number: {text!r}.")
    return values


def render_frames(models: SadTalkerModels, face: SourceFace, coeffs: Coefficients, expression_scale: float = 1.0,
                  batch_size: int = 2, yaw: Sequence[float] | str | None = None,
                  pitch: Sequence[float] | str | None = None, roll: Sequence[float] | str | None = None,
                  paste_back: bool = True, progress: ProgressFn | None = None,
                  still: bool | None = None, background: Any = None) -> Iterator[np.ndarray]:
    """Render ``coeffs`` on ``face``: yields ``(b, H, W, 3)`` uint8 batches in frame order.

    ``background``: frames ``(N, H, W, 3)`` (uint8, or float 0..1 like ComfyUI's IMAGE) to paste
    onto instead of the still picture (full/extfull with paste-back): frame ``i`` goes onto
    background frame ``min(i, N - 1)``. Feed it the frames of another face's render of the same
    picture to make two faces talk (see :func:`background_frame`).

    Output frames are resized to the face box's aspect ratio (§14) or, for full/extfull with
    ``paste_back``, pasted into the original image (§15), then made even-sized (:func:`output_size`).
    ``progress(done, total)`` runs after every batch and may raise to cancel.
    """
    from .render_data import build_render_inputs

    if not isinstance(face, SourceFace):
        raise ValueError(f"The face must be a SourceFace made by prepare_face, got {type(face).__name__}.")
    if not isinstance(coeffs, Coefficients):
        raise ValueError(f"The coefficients must be Coefficients (from audio_to_coefficients, idle_coefficients, "
                         f"coefficients_from_reference or load_coefficients), got {type(coeffs).__name__}.")
    if batch_size < 1:
        raise ValueError(f"Batch size must be at least 1, got {batch_size}.")
    if not math.isfinite(float(expression_scale)):
        raise ValueError(f"The expression scale must be a finite number (1 = as predicted), got {expression_scale}.")
    t = coeffs.num_frames
    if t < 1:
        raise ValueError("The coefficients have no frames.")
    yaw, pitch, roll = (parse_angles(v, n) for v, n in ((yaw, "yaw"), (pitch, "pitch"), (roll, "roll")))
    still = coeffs.still if still is None else bool(still)
    inputs = build_render_inputs(face.coeff_3dmm, coeffs.coeffs, face.preprocess, still, float(expression_scale),
                                 yaw=yaw, pitch=pitch, roll=roll)
    renderer = models.renderer(face.preprocess)
    device = models.current_device()
    source = torch.from_numpy(face.crop).permute(2, 0, 1)[None].float() * np.float32(1.0 / 255.0)
    out_w, out_h = natural_size(face, paste_back=False)
    paste = paste_back and face.paste_back_possible
    if background is not None:
        if not paste:
            raise ValueError("A background needs the face pasted into the whole picture: use the full or extfull "
                             "preprocess mode with paste_back on.")
        check_background(background, face)   # size and values, before any rendering
    if paste:
        from .face.paste import FramePaster

        # whole batches on the render device; the picture's part of the blend is computed once here
        paster = FramePaster(face.original, face.crop_info, device)

    with torch.inference_mode():
        # float32 in: the renderer casts to each network's own dtype
        state = renderer.encode_source(source.to(device), inputs.source_semantics.to(device))
        done = 0
        for batch in renderer.iter_frames(state, inputs, batch_size=batch_size, progress=progress, out_device="cpu"):
            frames = frames_to_uint8(batch)
            if (out_w, out_h) != (frames.shape[2], frames.shape[1]):
                import cv2

                frames = np.stack([cv2.resize(f, (out_w, out_h), interpolation=cv2.INTER_LINEAR) for f in frames])
            if paste:
                destinations = None if background is None else \
                    np.stack([background_frame(background, done + j, face) for j in range(len(frames))])
                frames = paster(frames, destinations)
            done += len(frames)
            yield np.ascontiguousarray(pad_to_even(frames))
