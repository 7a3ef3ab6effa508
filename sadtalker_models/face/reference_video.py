"""Reference video -> per-frame 3DMM coefficients (spec §6.2, §9.3, §4.1, §4.8).

Used for ``ref_eyeblink`` (columns 0:64) and ``ref_pose`` (columns 64:70). As in the reference:
the crop box comes from the first frame (full-frame landmarks, the same preprocess mode as the
source image), every frame is cut with that box and resized to 256 x 256 (OpenCV INTER_LINEAR),
landmarks are detected again on each 256 crop, and a frame without a face there reuses the
previous frame's landmarks (or, before any face was seen, the standard-point fallback of §4.8).

Deviation from the reference, which aborts when the first frame has no face: the box comes from
the first frame that has one (searching at most :data:`MAX_FRAMES_BEFORE_FACE` frames).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

import cv2
import numpy as np
import torch

from .crop import CropInfo, apply_crop, check_mode, make_crop_info
from .landmarks import LandmarkDetector, check_face_size, to_rgb_uint8

logger = logging.getLogger(__name__)

#: Reference videos are always processed at this size (§4.1).
REFERENCE_SIZE = 256
#: How many leading frames may lack a face before the video is refused.
MAX_FRAMES_BEFORE_FACE = 100


@dataclass
class ReferenceStats:
    """Landmark statistics of one reference video.

    frames: frames processed; detected: frames whose 256 crop had a face; reused_previous:
    frames that reused the previous frame's landmarks; fallback: frames before any face that used
    the standard-point fallback; box_frame: index of the frame the crop box came from.
    """

    frames: int = 0
    detected: int = 0
    reused_previous: int = 0
    fallback: int = 0
    box_frame: int = 0

    @property
    def without_face(self) -> int:
        """Frames whose crop had no detectable face."""
        return self.reused_previous + self.fallback


@dataclass
class ReferenceCoefficients:
    """coeff_3dmm: (N, 73) float32 (CPU); stats: landmark statistics; crop_info: the box used."""

    coeff_3dmm: torch.Tensor
    stats: ReferenceStats
    crop_info: CropInfo


def _process(
    rgb: np.ndarray,
    info: CropInfo,
    detector: LandmarkDetector,
    prev: np.ndarray | None,
    stats: ReferenceStats,
    size: int,
) -> tuple[Any, np.ndarray | None]:
    """Crop one frame, detect at ``size``, align to 224. Returns (alignment, landmarks to carry)."""
    from ..face3dmm import align_to_224

    region = apply_crop(rgb, info)
    crop = cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=cv2.INTER_LINEAR)
    lm = detector.detect(crop)
    stats.frames += 1
    if lm is not None:
        stats.detected += 1
        prev = lm
    elif prev is not None:
        stats.reused_previous += 1
        lm = prev
    else:
        stats.fallback += 1
        lm = np.full((68, 2), -1.0, dtype=np.float32)
    return align_to_224(crop, lm), prev


def reference_coefficients_with_stats(
    frames: Iterable[Any],
    detector: LandmarkDetector,
    recon: torch.nn.Module,
    mode: str = "crop",
    size: int = REFERENCE_SIZE,
    batch_size: int = 16,
) -> ReferenceCoefficients:
    """Per-frame 3DMM coefficients of a reference video, streamed frame by frame.

    Args:
        frames: iterable of frames, each (H, W, 3) uint8 RGB (or any format accepted by
            :func:`to_rgb_uint8`, e.g. the items of a ComfyUI IMAGE batch), all the same size.
        detector: landmark detector.
        recon: ReconNet (eval mode, on its device).
        mode: preprocess mode of the run (the reference crops reference videos like the source).
        size: crop size for detection and alignment (256 in the reference).
        batch_size: frames per ReconNet call.
    Returns:
        :class:`ReferenceCoefficients` with coeff_3dmm (N, 73).
    Raises:
        ValueError: no frames, frames of different sizes, or no face in the video.
    """
    from ..face3dmm import extract_coeff_3dmm_batch

    check_mode(mode)
    stats = ReferenceStats()
    info: CropInfo | None = None
    pending: list[np.ndarray] = []
    prev: np.ndarray | None = None
    chunk: list[Any] = []
    outs: list[torch.Tensor] = []

    def flush() -> None:
        if chunk:
            outs.append(extract_coeff_3dmm_batch(recon, chunk, batch_size=batch_size)[1])
            chunk.clear()

    def run(rgb: np.ndarray) -> None:
        nonlocal prev
        assert info is not None
        alignment, prev = _process(rgb, info, detector, prev, stats, size)
        chunk.append(alignment)
        if len(chunk) >= batch_size:
            flush()

    seen = 0
    for idx, frame in enumerate(frames):
        seen += 1
        rgb = to_rgb_uint8(frame, f"reference video frame {idx}")
        if info is None:
            info = _crop_box(rgb, idx, mode, detector)
            if info is None:   # no face yet: these frames are cut once a later frame gives the box
                pending.append(rgb)
                if len(pending) > MAX_FRAMES_BEFORE_FACE:
                    raise ValueError(
                        f"No face was found in the first {len(pending)} frames of the reference "
                        f"video (landmark backend: {detector.name}); use a video that shows a face."
                    )
                continue
            stats.box_frame = idx
            if pending:
                logger.warning(
                    "Reference video: no face in the first %d frame(s); the crop box comes from frame %d.",
                    len(pending), idx,
                )
            for old in pending:
                run(old)
            pending.clear()
        run(rgb)
    if seen == 0:
        raise ValueError("The reference video has no frames.")
    if info is None or stats.detected == 0:
        raise ValueError(
            f"No face was found in any of the {seen} frames of the reference video "
            f"(landmark backend: {detector.name}); use a video that shows a face."
        )
    flush()
    _log_stats(stats)
    return ReferenceCoefficients(coeff_3dmm=torch.cat(outs, dim=0), stats=stats, crop_info=info)


def _crop_box(rgb: np.ndarray, idx: int, mode: str, detector: LandmarkDetector) -> CropInfo | None:
    """The crop box of the video from frame ``idx`` ``(H, W, 3)``: the whole frame in resize mode, else
    the face's box (None when the frame has no face; ValueError for a face too small)."""
    if mode == "resize":
        return make_crop_info(None, (rgb.shape[1], rgb.shape[0]), mode)
    lm = detector.detect(rgb)
    if lm is None:
        return None
    check_face_size(lm, f"reference video frame {idx}")
    return make_crop_info(lm, (rgb.shape[1], rgb.shape[0]), mode)


def _log_stats(stats: ReferenceStats) -> None:
    if stats.without_face:
        logger.warning(
            "Reference video: %d of %d frames had no detectable face (%d reused the previous "
            "frame's landmarks, %d used the standard-point fallback).",
            stats.without_face, stats.frames, stats.reused_previous, stats.fallback,
        )
    else:
        logger.info("Reference video: face found in all %d frames.", stats.frames)


def reference_coefficients(
    frames: Iterable[Any],
    detector: LandmarkDetector,
    recon: torch.nn.Module,
    mode: str = "crop",
    size: int = REFERENCE_SIZE,
) -> torch.Tensor:
    """Per-frame coeff_3dmm (N, 73) float32 of a reference video; see
    :func:`reference_coefficients_with_stats` (which also returns the statistics)."""
    return reference_coefficients_with_stats(frames, detector, recon, mode=mode, size=size).coeff_3dmm
