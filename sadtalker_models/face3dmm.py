"""3DMM coefficient extraction from a face crop and its 68 landmarks (spec §4.2-§4.8).

``image (S,S,3) uint8 RGB + lm68 (68,2)`` -> 5-point reduction (y flipped) -> POS least squares
(float64) -> PIL bicubic resize by ``s = 102/s_pos`` and crop to 224 (int32 truncation, black
outside) -> ``uint8/255`` -> :class:`~sadtalker_models.networks.recon_net.ReconNet` ->
``full_coeff (1,257)`` -> ``coeff_3dmm (1,73) = [exp 64 | angles 3 | trans 3 | s, tx, ty]``.

A landmark array whose mean is exactly -1 (the "no face found" marker of the landmark stage) makes
the alignment use the standard 3D points as five image points instead (§4.8).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .networks import device_and_dtype

logger = logging.getLogger(__name__)

TARGET_SIZE = 224
RESCALE = 102.0
MAX_RESIZED_SIDE = 16384

# The 5-point reduction of the 68 standard 3D landmarks of ``similarity_Lm3D_all.mat`` (spec §4.2),
# float32 values exactly as the reference computes them.
LM3D_STD = np.array(
    [
        [-0.3114865720272064, 0.29036077857017517, 0.13377952575683594],
        [0.30979886651039124, 0.289720356464386, 0.1317952573299408],
        [0.003253498813137412, -0.04617932438850403, 0.5524424314498901],
        [-0.25216928124427795, -0.3813391625881195, 0.22405731678009033],
        [0.24846619367599487, -0.38128235936164856, 0.22235769033432007],
    ],
    dtype=np.float32,
)


@dataclass
class Alignment:
    """Result of :func:`align_to_224`.

    aligned224: ``(224, 224, 3)`` uint8 RGB, the ReconNet input image.
    trans_params: ``(5,)`` float32 ``(W, H, s, tx, ty)``.
    lm3d_std: ``(5, 3)`` float32 standard 3D points used for the fit.
    lm5: ``(5, 2)`` float32 image points used for the fit (y up).
    """

    aligned224: np.ndarray
    trans_params: np.ndarray
    lm3d_std: np.ndarray
    lm5: np.ndarray


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"The face image must be RGB with shape (H, W, 3); got {tuple(image.shape)}.")
    if image.dtype != np.uint8:
        raise ValueError(f"The face image must be uint8 (0..255); got dtype {image.dtype}. Convert it first.")
    return np.ascontiguousarray(image)


def _check_landmarks(lm68: np.ndarray) -> np.ndarray:
    lm = np.asarray(lm68, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"Landmarks must have shape (68, 2); got {tuple(lm.shape)}.")
    if not np.all(np.isfinite(lm)):
        raise ValueError("The landmarks contain NaN or infinite values; re-run face detection.")
    return lm


def is_missing_landmarks(lm68: np.ndarray) -> bool:
    """True for the "no face found" marker: an array whose mean is exactly -1 (§4.8)."""
    return bool(np.mean(np.asarray(lm68)) == -1)


def five_points(lm68: np.ndarray, height: int) -> np.ndarray:
    """68 landmarks (y down) -> 5 points (y up, ``y' = H-1-y``), float32 ``(5, 2)``.

    Order: eye (36,39 mean), eye (42,45 mean), nose tip 30, mouth corners 48 and 54; means in
    float32. The missing-landmark fallback is handled by :func:`align_to_224`.
    """
    lm = np.array(lm68, dtype=np.float32, copy=True)
    lm[:, 1] = np.float32(height - 1) - lm[:, 1]
    return _reduce_68_to_5(lm)


def _reduce_68_to_5(lm: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            np.mean(lm[[36, 39]], axis=0),
            np.mean(lm[[42, 45]], axis=0),
            lm[30],
            lm[48],
            lm[54],
        ],
        axis=0,
    ).astype(lm.dtype, copy=False)


def pos_fit(lm5: np.ndarray, lm3d: np.ndarray = LM3D_STD) -> tuple[np.ndarray, float]:
    """POS least-squares similarity fit in float64 (spec §4.3).

    Returns ``t (2,)`` float64 and ``s_pos`` (mean norm of the two projection rows).
    """
    n = lm5.shape[0]
    a = np.zeros((2 * n, 8), dtype=np.float64)
    a[0::2, 0:3] = lm3d
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = lm3d
    a[1::2, 7] = 1.0
    b = np.asarray(lm5, dtype=np.float64).reshape(2 * n, 1)
    k = np.linalg.lstsq(a, b, rcond=None)[0][:, 0]
    s_pos = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0
    return np.array([k[3], k[7]], dtype=np.float64), float(s_pos)


def align_to_224(image: np.ndarray, lm68: np.ndarray) -> Alignment:
    """Similarity-align a face crop to the 224x224 ReconNet input (spec §4.2-§4.4, §4.8).

    Args:
        image: ``(H, W, 3)`` uint8 RGB (normally the ``S x S`` crop; an alpha channel is dropped).
        lm68: ``(68, 2)`` pixel landmarks of ``image`` (x right, y down), or the all -1 marker.

    Returns:
        :class:`Alignment` with ``aligned224 (224,224,3)`` uint8 and ``trans_params (5,)``.
    """
    image = _check_image(image)
    lm = _check_landmarks(lm68)
    h0, w0 = image.shape[:2]
    if is_missing_landmarks(lm):
        logger.info("no landmarks for this image: aligning with the standard 3D points (spec §4.8)")
        half = (LM3D_STD[:, :2] + np.float32(1)) / np.float32(2)
        lm5 = np.concatenate([half[:, :1] * np.float32(w0), half[:, 1:2] * np.float32(h0)], axis=1)
    else:
        lm5 = five_points(lm, h0)

    t, s_pos = pos_fit(lm5)
    if not np.isfinite(s_pos) or s_pos <= 0:
        raise ValueError("The landmarks are degenerate (the face fit has zero size); check the face detection.")
    s = RESCALE / s_pos

    w = int(np.int32(w0 * s)) if np.isfinite(w0 * s) and w0 * s < 2**31 else MAX_RESIZED_SIDE + 1
    h = int(np.int32(h0 * s)) if np.isfinite(h0 * s) and h0 * s < 2**31 else MAX_RESIZED_SIDE + 1
    if not (1 <= w <= MAX_RESIZED_SIDE and 1 <= h <= MAX_RESIZED_SIDE):
        raise ValueError(
            f"The landmarks imply a face {s:.3g} times its standard size (resize to {w}x{h}); "
            "the face is too small or the landmarks are wrong. Use a larger face or re-run detection."
        )
    left = int(np.trunc(w / 2 - TARGET_SIZE / 2 + float((t[0] - w0 / 2) * s)))
    up = int(np.trunc(h / 2 - TARGET_SIZE / 2 + float((h0 / 2 - t[1]) * s)))

    pil = Image.fromarray(image).resize((w, h), resample=Image.BICUBIC)
    aligned = np.asarray(pil.crop((left, up, left + TARGET_SIZE, up + TARGET_SIZE)), dtype=np.uint8)
    trans = np.array([w0, h0, s, t[0], t[1]], dtype=np.float64).astype(np.float32)
    return Alignment(aligned224=np.ascontiguousarray(aligned), trans_params=trans, lm3d_std=LM3D_STD.copy(), lm5=lm5)


def to_network_input(aligned224: np.ndarray) -> torch.Tensor:
    """``(224,224,3)`` uint8 (or ``(N,224,224,3)``) -> ``(N,3,224,224)`` float32 ``= float32(x/255)``."""
    x = np.asarray(aligned224)
    if x.ndim == 3:
        x = x[None]
    return torch.from_numpy((x / 255.0).astype(np.float32)).permute(0, 3, 1, 2).contiguous()


def coeff_3dmm_from_full(full_coeff: torch.Tensor, trans_params: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``full_coeff (N,257)`` + ``trans_params (N,5)`` or ``(5,)`` -> ``coeff_3dmm (N,73)`` float32.

    Columns: expression (80:144), angles (224:227), translation (254:257), then ``s, tx, ty``.
    """
    tp = torch.as_tensor(np.asarray(trans_params, dtype=np.float32)).to(full_coeff.device)
    if tp.ndim == 1:
        tp = tp[None].expand(full_coeff.shape[0], -1)
    full = full_coeff.float()
    return torch.cat([full[:, 80:144], full[:, 224:227], full[:, 254:257], tp[:, 2:5].float()], dim=1)


def extract_coeff_3dmm(
    recon: torch.nn.Module,
    image: np.ndarray,
    lm68: np.ndarray,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Single image -> ``(full_coeff (1,257), coeff_3dmm (1,73))`` float32 on the CPU.

    ``device``/``dtype`` default to those of ``recon``'s parameters (the network must already be
    there; inputs are moved to it).
    """
    al = align_to_224(image, lm68)
    full, coeff = extract_coeff_3dmm_batch(recon, [al], device=device, dtype=dtype)
    return full, coeff


def extract_coeff_3dmm_batch(
    recon: torch.nn.Module,
    alignments: Sequence[Alignment],
    batch_size: int = 16,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ReconNet on many aligned frames in batches (reference videos).

    Args:
        alignments: ``N`` results of :func:`align_to_224`.
        batch_size: frames per ReconNet call.

    Returns:
        ``full_coeff (N,257)`` and ``coeff_3dmm (N,73)``, float32 on the CPU.
    """
    if len(alignments) == 0:
        raise ValueError("No frames to extract 3DMM coefficients from.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    dev, dt = device_and_dtype(recon, device, dtype)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(alignments), batch_size):
            chunk = np.stack([a.aligned224 for a in alignments[i : i + batch_size]])
            x = to_network_input(chunk).to(device=dev, dtype=dt)
            outs.append(recon(x).float().cpu())
    full = torch.cat(outs, dim=0)
    trans = np.stack([a.trans_params for a in alignments])
    return full, coeff_3dmm_from_full(full, trans)
