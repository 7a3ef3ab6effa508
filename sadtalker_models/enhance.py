"""Face enhancement of finished frames (spec §16) with a face-restoration network loaded by spandrel.

The original SadTalker runs GFPGAN v1.4 through the ``gfpgan``/``facexlib`` packages. This module
does the same job with spandrel (the loader ComfyUI itself uses) and plain numpy/cv2 geometry:

1. per frame, the 5 alignment points (eye centres, nose tip, mouth corners) are taken from the 68
   landmarks of the face pipeline (a :class:`LandmarkDetector` or precomputed landmarks);
2. the face is warped by a similarity transform onto the 512×512 FFHQ template;
3. the crops of a batch of frames are restored together on the model's device;
4. each restored crop is warped back (optionally into a ×2 Lanczos-upscaled frame, as the original
   does) and blended in with a feathered mask scaled by ``strength``.

Frames without a usable face pass through unchanged (only upscaled when asked) and are reported in
:class:`EnhanceStats`. GFPGAN's StyleGAN decoder draws fresh noise on every call, as in the
original, so results are not bit-reproducible between runs.

Nothing here imports comfy; spandrel is imported when a model is loaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import cv2
import numpy as np
import torch

from .checkpoints import CheckpointError
from .face.tracking import FaceTracker
from .official_files import GFPGAN
from .precision import usable_dtype

if TYPE_CHECKING:  # pragma: no cover - typing only
    from spandrel import ImageModelDescriptor

logger = logging.getLogger(__name__)

#: Side of the aligned face crop fed to the restorer.
TEMPLATE_SIZE = 512

#: FFHQ 5-point template for a 512×512 crop (x, y): image-left eye centre, image-right eye centre,
#: nose tip, image-left mouth corner, image-right mouth corner.
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float32,
)

#: ComfyUI model folders searched by the node layer (``gfpgan`` is an alias).
FACE_RESTORE_FOLDERS = ("facerestore_models", "gfpgan")

#: The restorer used by the original ``--enhancer gfpgan``.

#: Faces whose eye centres are closer than this (pixels) are skipped, as facexlib does.
MIN_EYE_DISTANCE = 5.0

#: Fill colour (RGB, 0..255) for template pixels that fall outside the frame (facexlib's value).
_BORDER_RGB = (132.0, 133.0, 135.0)

#: CodeFormer's fidelity weight ``w`` (0 = most restoration, 1 = most faithful) when one is loaded.
CODEFORMER_FIDELITY = 0.5

ProgressCallback = Callable[[int, int], None]


class FaceRestorerError(CheckpointError):
    """A face-restoration checkpoint is missing, unreadable or not a face-restoration model."""


class LandmarkDetector(Protocol):
    """The face pipeline's detector (``sadtalker_models.face.landmarks``)."""

    name: str

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """RGB uint8 (H, W, 3) -> (68, 2) float32 landmarks of the largest face, or None."""
        ...


class Restorer(Protocol):
    """Anything that restores aligned 512×512 face crops (:class:`FaceRestorer` or a test double)."""

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, 512, 512) float RGB in 0..1 -> (B, 3, 512, 512) float RGB in 0..1."""
        ...


@dataclass
class EnhanceStats:
    """What :func:`enhance_frames` did.

    ``frames_without_face`` lists the indices of frames passed through unchanged because no face
    (or a face too small to align) was found.
    """

    total_frames: int
    enhanced_frames: int
    frames_without_face: list[int] = field(default_factory=list)
    architecture: str = ""
    upscale: int = 1

    @property
    def skipped_frames(self) -> int:
        return len(self.frames_without_face)


# ---------------------------------------------------------------------------------------------
# Loading


def missing_restorer_message(path: str) -> str:
    return (
        f"Face restoration model not found: {path!r}. Put {GFPGAN.name} (the model of the original "
        f"SadTalker enhancer) or another face-restoration model that spandrel can load (GFPGAN, "
        f"RestoreFormer, CodeFormer with spandrel_extra_arches) into ComfyUI/models/"
        f"{FACE_RESTORE_FOLDERS[0]} (or ComfyUI/models/{FACE_RESTORE_FOLDERS[1]}). Download: "
        f"{GFPGAN.url} ({GFPGAN.size} bytes, sha256 {GFPGAN.sha256})."
    )


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors on the CPU without running pickled code."""
    extension = os.path.splitext(path)[1].lower()
    try:
        if extension == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(path, device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, truncated, or pickled objects other than tensors
        raise FaceRestorerError(
            f"Cannot read the face restoration model {path!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. It is either damaged (download it "
            f"again: {GFPGAN.url}) or not a plain weights file (files that need arbitrary pickled "
            f"code are refused)."
        ) from exc
    if not isinstance(raw, dict):
        raise FaceRestorerError(
            f"{path!r} holds a {type(raw).__name__}, not a state dict, so it is not a face "
            f"restoration model. Use {GFPGAN.name} ({GFPGAN.url})."
        )
    return raw  # type: ignore[return-value]


def _arch_registry():
    """spandrel's registry, plus spandrel_extra_arches (CodeFormer) when that package is installed.

    The main registry is copied, never modified.
    """
    from spandrel import MAIN_REGISTRY

    try:
        from spandrel_extra_arches import EXTRA_REGISTRY  # type: ignore[import-not-found]
    except ImportError:
        return MAIN_REGISTRY
    missing = [support for support in EXTRA_REGISTRY if support.architecture.id not in MAIN_REGISTRY]
    if not missing:
        return MAIN_REGISTRY
    registry = MAIN_REGISTRY.copy()
    registry.add(*missing)
    return registry


class FaceRestorer:
    """A loaded face-restoration network (a spandrel ``ImageModelDescriptor`` with purpose FaceSR).

    :meth:`restore` takes and returns crops in 0..1. GFPGAN, RestoreFormer and CodeFormer are
    called on their raw modules with input in [-1, 1], as they were trained (spandrel's GFPGAN
    wrapper passes its 0..1 input through unchanged and clamps the output to 0..1, which would
    lose the lower half of the range); any other FaceSR architecture goes through spandrel's
    0..1 call.
    """

    _RAW_ARCHS = ("GFPGAN", "RestoreFormer", "CodeFormer")

    def __init__(self, descriptor: "ImageModelDescriptor", path: str = "") -> None:
        self.descriptor = descriptor
        self.path = path

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.id)

    @property
    def device(self) -> torch.device:
        return self.descriptor.device

    @property
    def dtype(self) -> torch.dtype:
        return self.descriptor.dtype

    @property
    def input_size(self) -> int:
        return TEMPLATE_SIZE

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FaceRestorer":
        """Move (in place) to ``device`` and/or ``dtype``; an unsupported half type falls back to float32."""
        if device is not None:
            self.descriptor.to(torch.device(device))
        if dtype is not None:
            dtype = usable_dtype(self._supported_dtype(dtype), self.device, "the face restorer")
        if dtype is not None and dtype != self.descriptor.dtype:
            self.descriptor.to(dtype)
        return self

    def _supported_dtype(self, dtype: torch.dtype) -> torch.dtype:
        if dtype == torch.float16 and not self.descriptor.supports_half:
            logger.warning("%s does not support float16; using float32", self.architecture)
            return torch.float32
        if dtype == torch.bfloat16 and not self.descriptor.supports_bfloat16:
            logger.warning("%s does not support bfloat16; using float32", self.architecture)
            return torch.float32
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"Unsupported dtype {dtype} for the face restorer; use float32, float16 or bfloat16.")
        return dtype

    @torch.inference_mode()
    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, 512, 512) RGB in 0..1 (any device/dtype) -> (B, 3, 512, 512) float32 RGB in 0..1 on the model's device.

        The networks were trained on RGB crops (the reference converts its BGR frames first).
        """
        if faces.ndim != 4 or faces.shape[1] != 3:
            raise ValueError(f"Expected faces of shape (B, 3, H, W), got {tuple(faces.shape)}")
        x = faces.to(device=self.device, dtype=self.dtype).contiguous()  # NCHW; GFPGAN .view()s its features
        model = self.descriptor.model
        if model.training:
            model.eval()
        arch = self.architecture
        if arch in self._RAW_ARCHS:
            x = x * 2.0 - 1.0
            if arch == "GFPGAN":
                out = model(x, return_rgb=False)[0]
            elif arch == "CodeFormer":
                out = model(x, w=CODEFORMER_FIDELITY, adain=True)[0]
            else:
                out = model(x)[0]
            out = (out.float().clamp(-1.0, 1.0) + 1.0) * 0.5
        else:
            out = self.descriptor(x).float().clamp(0.0, 1.0)
        return out


def load_face_restorer(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FaceRestorer:
    """Load a face-restoration checkpoint (GFPGANv1.4 ``.pth`` and anything spandrel tags ``FaceSR``).

    The file is read with ``torch.load(weights_only=True)`` (or safetensors), its layout is
    recognised by spandrel, and the model is put in eval mode on ``device``/``dtype`` (float16 falls
    back to float32 for architectures that do not support it).

    Raises:
        FaceRestorerError: the file is missing or unreadable, spandrel does not recognise it, or
            it is a model of another kind (e.g. an upscaler).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FaceRestorerError(missing_restorer_message(path))

    from spandrel import ImageModelDescriptor, UnsupportedModelError, canonicalize_state_dict

    state_dict = canonicalize_state_dict(_read_state_dict(path))
    name = os.path.basename(path)
    try:
        descriptor = _arch_registry().load(state_dict)
    except UnsupportedModelError as exc:
        raise FaceRestorerError(
            f"{name} is not a model spandrel recognises, so it is not a face restoration model "
            f"(is it a SadTalker or other checkpoint put in the wrong folder?). Use {GFPGAN.name} "
            f"({GFPGAN.url})."
        ) from exc
    except (RuntimeError, KeyError, ValueError) as exc:  # recognised keys, wrong shapes
        raise FaceRestorerError(
            f"{name} looks like a {type(exc).__name__} while building the network: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. The file is damaged or a variant "
            f"spandrel cannot load; use {GFPGAN.name} ({GFPGAN.url})."
        ) from exc
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "FaceSR":
        raise FaceRestorerError(
            f"{name} is a {descriptor.architecture.name} model for {descriptor.purpose!r}, not a "
            f"face restoration model (purpose 'FaceSR'). Put upscalers in models/upscale_models and "
            f"use a face model such as {GFPGAN.name} ({GFPGAN.url})."
        )
    restorer = FaceRestorer(descriptor, path)
    descriptor.eval()
    restorer.to(device, dtype)
    logger.info("loaded face restorer %s (%s) on %s/%s", name, restorer.architecture, restorer.device, restorer.dtype)
    return restorer


# ---------------------------------------------------------------------------------------------
# Geometry


def five_points_from_68(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG landmarks -> (5, 2) float32: eye centres (means of 36-41 and 42-47), nose tip
    (30), mouth corners (48, 54), in the order of :data:`FFHQ_TEMPLATE_512`."""
    lm = np.asarray(lm68, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"Expected (68, 2) landmarks, got {lm.shape}")
    return np.stack(
        [lm[36:42].mean(axis=0), lm[42:48].mean(axis=0), lm[30], lm[48], lm[54]]
    ).astype(np.float32)


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst, (2, 3)."""
    n = src.shape[0]
    a = np.zeros((2 * n, 4), dtype=np.float64)
    a[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    a[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    b = dst.astype(np.float64).reshape(-1)
    (p, q, tx, ty), *_ = np.linalg.lstsq(a, b, rcond=None)
    return np.array([[p, -q, tx], [q, p, ty]], dtype=np.float64)


def alignment_transform(points5: np.ndarray, template: np.ndarray = FFHQ_TEMPLATE_512) -> np.ndarray:
    """(5, 2) frame points -> (2, 3) similarity matrix mapping frame pixels onto the template.

    Uses ``cv2.estimateAffinePartial2D`` with LMEDS (as facexlib does) and falls back to a plain
    least-squares fit when that fails.
    """
    src = np.asarray(points5, dtype=np.float32).reshape(-1, 2)
    dst = np.asarray(template, dtype=np.float32).reshape(-1, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None or not np.all(np.isfinite(matrix)):
        matrix = _similarity_lstsq(src, dst)
    return matrix.astype(np.float64)


def feather_mask(size: int = TEMPLATE_SIZE) -> np.ndarray:
    """(size, size) float32 blend mask in template space: 1 over the face, fading to 0 outside.

    The original pastes with a face-parsing mask (skin, features and hair, not the background);
    without a parsing network this is a feathered ellipse over the face and the hair line of the
    FFHQ template, forced to 0 near the crop's border.
    """
    s = size / 512.0
    mask = np.zeros((size, size), dtype=np.float32)
    cv2.ellipse(
        mask, (int(round(256 * s)), int(round(276 * s))), (int(round(176 * s)), int(round(212 * s))),
        0.0, 0.0, 360.0, 1.0, thickness=-1, lineType=cv2.LINE_AA,
    )
    sigma = 16.0 * s
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    edge = max(1, int(round(8 * s)))
    mask[:edge], mask[-edge:], mask[:, :edge], mask[:, -edge:] = 0.0, 0.0, 0.0, 0.0
    return np.clip(mask, 0.0, 1.0)


def _scale_pixels(matrix: np.ndarray, factor: float) -> np.ndarray:
    """Compose a (2, 3) map into a frame with an up-scaling of that frame by ``factor``
    (pixel-centre convention of cv2.resize: x' = f·x + (f − 1)/2)."""
    out = matrix * factor
    out[:, 2] += 0.5 * (factor - 1.0)
    return out


def _paste_geometry(to_template: np.ndarray, size: int, canvas_hw: tuple[int, int], upscale: int
                    ) -> tuple[int | None, np.ndarray, tuple[int, int, int, int]] | None:
    """Where a restored ``size`` x ``size`` crop goes in the canvas: the side to shrink it to first
    (None: no shrink; a face drawn under 0.75 of its size is area-averaged before the warp so that it
    does not alias), the (2, 3) map from the (shrunk) crop to the canvas box, and that box
    ``(x0, y0, x1, y1)``; None when the face lies entirely outside the canvas."""
    back = _scale_pixels(cv2.invertAffineTransform(to_template).astype(np.float64), float(upscale))
    scale = float(np.sqrt(abs(np.linalg.det(back[:, :2]))))
    small = None
    if scale < 0.75:
        small = max(8, int(round(size * scale)))
        a = size / small
        back = back @ np.array([[a, 0.0, 0.5 * a - 0.5], [0.0, a, 0.5 * a - 0.5], [0.0, 0.0, 1.0]])
    src = small or size
    corners = np.array([[-0.5, -0.5, 1], [src - 0.5, -0.5, 1], [-0.5, src - 0.5, 1], [src - 0.5, src - 0.5, 1]])
    mapped = corners @ back.T
    height, width = canvas_hw
    x0 = max(int(np.floor(mapped[:, 0].min())), 0)
    y0 = max(int(np.floor(mapped[:, 1].min())), 0)
    x1 = min(int(np.ceil(mapped[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(mapped[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    roi_map = back.copy()
    roi_map[:, 2] -= (x0, y0)
    return small, roi_map, (x0, y0, x1, y1)


def _paste_face_torch(canvas: torch.Tensor, face: torch.Tensor, to_template: np.ndarray, mask: torch.Tensor,
                      strength: float, upscale: int = 1) -> bool:
    """:func:`paste_face` on the device: ``canvas`` (3, H, W) float32 changed in place, ``face``
    (3, 512, 512) and ``mask`` (1, 512, 512) float32 on the same device."""
    from .face.affine_warp import warp_affine

    geometry = _paste_geometry(to_template, face.shape[-1], tuple(canvas.shape[-2:]), upscale)
    if geometry is None:
        return False
    small, roi_map, (x0, y0, x1, y1) = geometry
    src = torch.cat([face, mask])[None]
    if small is not None:
        src = torch.nn.functional.interpolate(src, size=(small, small), mode="area")
    warped = warp_affine(src[:, :3], [roi_map], (x1 - x0, y1 - y0))[0]               # BORDER_REPLICATE
    alpha = warp_affine(src[:, 3:], [roi_map], (x1 - x0, y1 - y0), (0.0,))[0] * float(strength)
    roi = canvas[:, y0:y1, x0:x1]
    roi.copy_((roi * (1.0 - alpha) + warped * alpha).clamp_(0.0, 1.0))
    return True


def paste_face(
    canvas: np.ndarray,
    face: np.ndarray,
    to_template: np.ndarray,
    mask: np.ndarray,
    strength: float,
    upscale: int = 1,
) -> bool:
    """Blend a restored template crop back into ``canvas`` in place.

    Args:
        canvas: (H·upscale, W·upscale, 3) float32 0..1, the (already up-scaled) frame.
        face: (512, 512, 3) float32 0..1, the restored crop.
        to_template: (2, 3) similarity that mapped the original frame onto the template.
        mask: (512, 512) float32 feather mask from :func:`feather_mask`.
        strength: blend weight 0..1 applied to the mask.
        upscale: factor between the original frame and ``canvas``.

    Returns:
        False when the face lies entirely outside the canvas, else True.
    """
    geometry = _paste_geometry(to_template, face.shape[0], canvas.shape[:2], upscale)
    if geometry is None:
        return False
    small, roi_map, (x0, y0, x1, y1) = geometry
    src_face, src_mask = face, mask
    if small is not None:   # shrink with area averaging first so that the bilinear warp does not alias
        src_face = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
        src_mask = cv2.resize(mask, (small, small), interpolation=cv2.INTER_AREA)
    box = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(src_face, roi_map, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(src_mask, roi_map, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    alpha = (alpha * np.float32(strength))[..., None]
    roi = canvas[y0:y1, x0:x1]
    roi[...] = roi * (1.0 - alpha) + warped * alpha
    np.clip(roi, 0.0, 1.0, out=roi)
    return True


# ---------------------------------------------------------------------------------------------
# Frames


def _frame_points(
    index: int,
    frame_u8: Callable[[], np.ndarray],
    detector: LandmarkDetector | None,
    landmarks: Sequence[np.ndarray | None] | np.ndarray | None,
) -> np.ndarray | None:
    """The 5 alignment points of frame ``index``, or None when it has no usable face."""
    if landmarks is not None:
        lm = landmarks[index]
    else:
        assert detector is not None
        lm = detector.detect(frame_u8())
    if lm is None:
        return None
    lm = np.asarray(lm, dtype=np.float32)
    if lm.size == 0 or not np.all(np.isfinite(lm)):
        return None
    if lm.shape == (68, 2):
        points = five_points_from_68(lm)
    elif lm.shape == (5, 2):
        points = lm
    else:
        raise ValueError(f"Landmarks of frame {index} have shape {lm.shape}; expected (68, 2) or (5, 2).")
    if float(np.linalg.norm(points[1] - points[0])) < MIN_EYE_DISTANCE:
        return None
    return points


def enhance_frames(
    frames: np.ndarray | torch.Tensor,
    restorer: Restorer,
    detector: LandmarkDetector | None = None,
    *,
    landmarks: Sequence[np.ndarray | None] | np.ndarray | None = None,
    strength: float = 1.0,
    upscale: int = 1,
    batch_size: int = 4,
    progress: ProgressCallback | None = None,
    track: bool = True,
    warp: str = "auto",
) -> tuple[np.ndarray | torch.Tensor, EnhanceStats]:
    """Restore the face in every frame and blend it back.

    Args:
        frames: (T, H, W, 3) RGB, float in 0..1 or uint8, numpy array or CPU/GPU tensor.
        restorer: a :class:`FaceRestorer` (or any object with the same ``restore``).
        detector: finds (68, 2) landmarks per frame; used when ``landmarks`` is None.
        landmarks: per-frame (68, 2) or (5, 2) points in frame pixels, None (or NaN) for frames
            without a face; a sequence of length T or an array (T, 68|5, 2).
        strength: 0..1, weight of the restored face in the blend (0 returns the input unchanged,
            up-scaled when asked).
        upscale: integer factor of the output size; 2 reproduces the original (Lanczos background).
        batch_size: frames whose faces are restored in one network call.
        progress: ``progress(done_frames, total_frames)`` after each batch; may raise to cancel.
        track: follow the face from frame to frame with a :class:`~.face.tracking.FaceTracker`
            around ``detector`` (a full detection only every 25 frames, at a cut or when the face
            jumps), about 9x cheaper per frame at 512 px; False detects every frame. A
            ``FaceTracker`` passed as ``detector`` is used as it is (to follow the face across calls).
        warp: where the faces are aligned and pasted back: ``"torch"`` on the restorer's device
            (:mod:`.face.affine_warp`), ``"cv2"`` on the CPU, ``"auto"`` = torch when the restorer is
            on a GPU, else cv2 (faster on a CPU). The up-scaling of the background stays OpenCV's.

    Returns:
        (frames, stats): frames of shape (T, H·upscale, W·upscale, 3) with the input's kind
        (numpy/torch) and dtype (uint8 or float, 0..1), and :class:`EnhanceStats`.
    """
    upscale = _check_enhance_args(strength, upscale, batch_size, detector, landmarks)
    if track and landmarks is None and not isinstance(detector, FaceTracker):
        detector = FaceTracker(detector)
    array, out_device = _frames_as_numpy(frames)
    total, height, width = array.shape[:3]
    if landmarks is not None and len(landmarks) != total:
        raise ValueError(f"Got landmarks for {len(landmarks)} frames but there are {total} frames.")
    pixels = _Pixels(array.dtype)
    out = np.empty((total, height * upscale, width * upscale, 3), dtype=pixels.out_dtype)
    mask = feather_mask(TEMPLATE_SIZE)
    device = _warp_device(warp, restorer)
    architecture = str(getattr(restorer, "architecture", type(restorer).__name__))
    stats = EnhanceStats(total_frames=total, enhanced_frames=0, architecture=architecture, upscale=upscale)

    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        floats, crops, transforms = _align_batch(array, range(start, stop), pixels, strength, detector, landmarks,
                                                 stats, warp_crops=device is None)
        if device is not None:
            for offset, canvas in enumerate(_enhance_on_device(floats, transforms, restorer, mask, strength,
                                                               upscale, device, stats, start)):
                out[start + offset] = pixels.store(canvas)
            if progress is not None:
                progress(stop, total)
            continue
        restored = _restore(restorer, crops)
        face_index = 0
        for offset, (frame, matrix) in enumerate(zip(floats, transforms)):
            if upscale > 1:
                canvas = _upscaled(frame, upscale)
            else:
                canvas = frame.copy() if not pixels.is_uint8 else frame
            if matrix is not None and restored is not None:
                if paste_face(canvas, restored[face_index], matrix, mask, strength, upscale):
                    stats.enhanced_frames += 1
                else:
                    stats.frames_without_face.append(start + offset)
                face_index += 1
            out[start + offset] = pixels.store(canvas)
        if progress is not None:
            progress(stop, total)

    _log_stats(stats)
    if out_device is not None:
        return torch.from_numpy(out).to(out_device), stats
    return out, stats


WARP_BACKENDS = ("auto", "torch", "cv2")


def _upscaled(frame: np.ndarray, upscale: int) -> np.ndarray:
    """The background of an up-scaled frame: (H, W, 3) float32 -> (H·upscale, W·upscale, 3), Lanczos, 0..1."""
    height, width = frame.shape[:2]
    canvas = cv2.resize(frame, (width * upscale, height * upscale), interpolation=cv2.INTER_LANCZOS4)
    return np.clip(canvas, 0.0, 1.0, out=canvas)


def _warp_device(warp: str, restorer: Restorer) -> torch.device | None:
    """The device the torch warps run on, or None for OpenCV (see ``enhance_frames``' ``warp``)."""
    if warp not in WARP_BACKENDS:
        raise ValueError(f"Unknown warp backend {warp!r}; use one of {', '.join(WARP_BACKENDS)}.")
    device = torch.device(getattr(restorer, "device", None) or "cpu")
    if warp == "cv2" or (warp == "auto" and device.type == "cpu"):
        return None
    return device


def _enhance_on_device(floats: list[np.ndarray], transforms: list, restorer: Restorer, mask: np.ndarray,
                       strength: float, upscale: int, device: torch.device, stats: EnhanceStats,
                       start: int) -> np.ndarray:
    """One batch with the alignment and the paste on ``device``: float32 frames (H, W, 3) and their
    alignment matrices (or None) -> (b, H·upscale, W·upscale, 3) float32 enhanced frames."""
    from .face.affine_warp import warp_affine

    frames = torch.from_numpy(np.stack(floats)).to(device).permute(0, 3, 1, 2)
    if upscale > 1:   # the background: OpenCV's Lanczos, as on the CPU path
        canvases = torch.from_numpy(np.stack([_upscaled(f, upscale) for f in floats])).to(device)
        canvases = canvases.permute(0, 3, 1, 2).contiguous()
    else:
        canvases = frames.clone()
    with_face = [i for i, matrix in enumerate(transforms) if matrix is not None]
    if with_face:
        border = [v / 255.0 for v in _BORDER_RGB]
        crops = warp_affine(frames[with_face], [transforms[i] for i in with_face], (TEMPLATE_SIZE, TEMPLATE_SIZE),
                            border)
        restored = restorer.restore(crops).to(device=device, dtype=torch.float32).clamp(0.0, 1.0)
        weights = torch.from_numpy(mask)[None].to(device)
        for face, index in zip(restored, with_face):
            if _paste_face_torch(canvases[index], face, transforms[index], weights, strength, upscale):
                stats.enhanced_frames += 1
            else:
                stats.frames_without_face.append(start + index)
    return canvases.permute(0, 2, 3, 1).cpu().numpy()


def _check_enhance_args(strength: float, upscale: int, batch_size: int, detector: LandmarkDetector | None,
                        landmarks: Sequence[np.ndarray | None] | np.ndarray | None) -> int:
    """Readable errors for enhance_frames' settings; returns ``upscale`` as an int."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be within 0..1, got {strength}")
    upscale = int(upscale)
    if upscale < 1 or upscale > 8:
        raise ValueError(f"upscale must be an integer factor 1..8, got {upscale}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if detector is None and landmarks is None:
        raise ValueError("enhance_frames needs a landmark detector or precomputed landmarks.")
    return upscale


def _frames_as_numpy(frames: np.ndarray | torch.Tensor) -> tuple[np.ndarray, torch.device | None]:
    """(T, H, W, 3) frames as a numpy array, and the tensor's device to return to (None for numpy)."""
    if isinstance(frames, torch.Tensor):
        array, device = frames.detach().cpu().numpy(), frames.device
    else:
        array, device = np.asarray(frames), None
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"Expected frames of shape (T, H, W, 3), got {array.shape}")
    return array, device


class _Pixels:
    """The input's pixel format (uint8 0..255 or float 0..1): work in float32, give back the input's kind."""

    def __init__(self, dtype: np.dtype):
        self.is_uint8 = dtype == np.uint8
        self.out_dtype = np.uint8 if self.is_uint8 else (dtype if np.issubdtype(dtype, np.floating) else np.float32)

    def as_float(self, frame: np.ndarray) -> np.ndarray:
        if self.is_uint8:
            return frame.astype(np.float32) * np.float32(1.0 / 255.0)
        return frame.astype(np.float32, copy=False)

    def as_uint8(self, frame: np.ndarray) -> np.ndarray:
        if self.is_uint8:
            return frame
        return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def store(self, canvas: np.ndarray) -> np.ndarray:
        """A float32 result frame in the output's format."""
        if self.is_uint8:
            return np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
        return canvas


def _align_batch(array: np.ndarray, indices: range, pixels: _Pixels, strength: float,
                 detector: LandmarkDetector | None, landmarks: Sequence[np.ndarray | None] | np.ndarray | None,
                 stats: EnhanceStats, warp_crops: bool = True) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """For frames ``indices``: float32 frames ``(H, W, 3)``, the aligned 512 face crops of those with a
    usable face (OpenCV; none when not ``warp_crops``), and per frame its alignment matrix (2, 3) or
    None (noted in ``stats``)."""
    border = tuple(v / 255.0 for v in _BORDER_RGB)
    floats: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    transforms: list[np.ndarray | None] = []
    for index in indices:
        frame = pixels.as_float(array[index])
        floats.append(frame)
        if strength == 0.0:  # nothing to blend: skip detection and the network
            transforms.append(None)
            continue
        points = _frame_points(index, lambda i=index: pixels.as_uint8(array[i]), detector, landmarks)
        if points is None:
            transforms.append(None)
            stats.frames_without_face.append(index)
            continue
        matrix = alignment_transform(points)
        transforms.append(matrix)
        if warp_crops:
            crops.append(cv2.warpAffine(frame, matrix, (TEMPLATE_SIZE, TEMPLATE_SIZE), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=border))
    return floats, crops, transforms


def _restore(restorer: Restorer, crops: list[np.ndarray]) -> np.ndarray | None:
    """Aligned crops ``(512, 512, 3)`` float 0..1 -> restored ``(n, 512, 512, 3)`` float32 (None for none)."""
    if not crops:
        return None
    batch = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
    result = restorer.restore(batch)
    return result.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()


def _log_stats(stats: EnhanceStats) -> None:
    stats.frames_without_face.sort()
    total = stats.total_frames
    if stats.frames_without_face:
        shown = ", ".join(str(i) for i in stats.frames_without_face[:10])
        more = "" if stats.skipped_frames <= 10 else ", ..."
        logger.info(
            "face enhance: %d of %d frames had no usable face and passed through unchanged (frames %s%s)",
            stats.skipped_frames, total, shown, more,
        )
    logger.info("face enhance: restored %d of %d frames with %s (upscale x%d)", stats.enhanced_frames, total,
                stats.architecture, stats.upscale)
