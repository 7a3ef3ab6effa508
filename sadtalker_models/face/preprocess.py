"""Source image -> face crop, crop info and 3DMM coefficients (spec §3, §4.1, §4.8).

Steps: normalise the image to RGB uint8; detect the 68 landmarks of the largest face (all modes,
so that an image without a usable face is refused early); crop per mode and resize to S x S
(OpenCV INTER_LINEAR); detect the landmarks again on that S x S crop, as the reference does; run
the 3DMM extraction. If the re-detection on the crop fails, the all -1 landmarks make the
extraction use the reference's standard-point fallback (§4.8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .crop import CropInfo, check_mode, crop_face
from .landmarks import LandmarkDetector, check_face_size, to_rgb_uint8
from .select import choose_face, detect_all_faces, mask_to_array

logger = logging.getLogger(__name__)

#: Render sizes the pipeline accepts.
MIN_RENDER_SIZE = 64


@dataclass
class FaceData:
    """Everything the later stages need from the source image.

    image: (S, S, 3) uint8 RGB crop ``I_c`` (the renderer's source image).
    crop_info: geometry to restore the aspect ratio or paste back.
    coeff_3dmm: (1, 73) float32 = exp 64 | angles 3 | trans 3 | s, tx, ty.
    full_coeff: (1, 257) float32 ReconNet output.
    lm68: (68, 2) float32 landmarks of ``image`` (all -1 when re-detection failed).
    source_lm68: (68, 2) float32 landmarks of the original image.
    redetected: False when the fallback of §4.8 was used.
    faces: (68, 2) landmarks of every face found in the original image, left to right.
    face_index: which of ``faces`` was used.
    """

    image: np.ndarray
    crop_info: CropInfo
    coeff_3dmm: torch.Tensor
    full_coeff: torch.Tensor
    lm68: np.ndarray
    source_lm68: np.ndarray
    redetected: bool
    faces: list = field(default_factory=list)
    face_index: int = 0


def detect_source_landmarks(image: np.ndarray, detector: LandmarkDetector, what: str = "source image") -> np.ndarray:
    """Landmarks (68, 2) float32 of the largest face in ``image`` (H, W, 3) uint8 RGB.

    Raises:
        ValueError: no face, or a face smaller than MIN_FACE_SIZE pixels.
    """
    lm = detector.detect(image)
    if lm is None:
        raise ValueError(
            f"No face was found in the {what} (landmark backend: {detector.name}). Use a picture "
            "with a clearly visible, roughly frontal face."
        )
    check_face_size(lm, what)
    return lm


def prepare_face(
    image: np.ndarray,
    mode: str,
    size: int,
    detector: LandmarkDetector,
    recon: torch.nn.Module,
    face_index: int | None = None,
    mask: np.ndarray | None = None,
) -> FaceData:
    """Crop the source image and extract its 3DMM coefficients.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 or float 0..1.
        mode: 'crop', 'extcrop', 'resize', 'full' or 'extfull'.
        size: render size S (256 or 512).
        detector: landmark detector (see :func:`make_landmark_detector`).
        recon: ReconNet (already on its device, eval mode).
        face_index: which face talks: None/-1 = the largest, 0, 1, ... = from left to right.
        mask: (H, W) mask (0..1); when given, the face inside it talks (see :func:`select.choose_face`).
    Returns:
        :class:`FaceData`.
    """
    from ..face3dmm import extract_coeff_3dmm

    check_mode(mode)
    if int(size) < MIN_RENDER_SIZE:
        raise ValueError(f"Render size {size} is too small; use 256 or 512.")
    rgb = to_rgb_uint8(image, "source image")
    faces = detect_all_faces(detector, rgb)
    if not faces:
        detect_source_landmarks(rgb, detector)  # raises the usual no-face error
    chosen = choose_face(faces, face_index, None if mask is None else mask_to_array(mask, *rgb.shape[:2]))
    source_lm = faces[chosen]
    check_face_size(source_lm, "source image")
    crop, info = crop_face(rgb, source_lm if mode != "resize" else None, mode, int(size))
    lm_crop = detector.detect(crop)
    redetected = lm_crop is not None
    if lm_crop is None:
        logger.warning(
            "No face found again on the %dx%d crop; using the reference's standard-point fallback.",
            size, size,
        )
        lm_crop = np.full((68, 2), -1.0, dtype=np.float32)
    full_coeff, coeff_3dmm = extract_coeff_3dmm(recon, crop, lm_crop)
    logger.info(
        "Source face: mode %s, region %s of %dx%d, backend %s",
        mode, info.region, info.original_size[0], info.original_size[1], detector.name,
    )
    return FaceData(
        image=crop, crop_info=info, coeff_3dmm=coeff_3dmm, full_coeff=full_coeff,
        lm68=np.asarray(lm_crop, dtype=np.float32), source_lm68=source_lm, redetected=redetected,
        faces=faces, face_index=chosen,
    )
