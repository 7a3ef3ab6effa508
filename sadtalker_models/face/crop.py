"""Face crop geometry and the five preprocess modes (spec §3, §4.1, §14 step 2).

The geometry reproduces the reference's FFHQ-style alignment box exactly, including its dtype
rules (float32 landmarks, float64 direction vector) and its quirk of clipping the quad's bottom
with the working image *width* (§3.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..options import PREPROCESS_MODES, check_choice, is_full_frame

#: Side of the alignment template used for the shrink factor (§3.2).
OUTPUT_SIZE = 512


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a preprocess mode, else raise ValueError."""
    return check_choice(mode, PREPROCESS_MODES, "preprocess mode")


@dataclass(frozen=True)
class CropGeometry:
    """Reference crop geometry for one image (§3.2-§3.4).

    rsize: (Wr, Hr) working size after the shrink; crop: (clx, cly, crx, cry) ints in the
    working image; quad: (lx, ly, rx, ry) floats inside the crop box; shrink: the integer shrink
    factor (1 when not shrunk).
    """

    rsize: tuple[int, int]
    crop: tuple[int, int, int, int]
    quad: tuple[float, float, float, float]
    shrink: int


def crop_geometry(lm68: np.ndarray, image_size: tuple[int, int], output_size: int = OUTPUT_SIZE) -> CropGeometry:
    """Compute the reference crop box and quad from 68 landmarks.

    Args:
        lm68: (68, 2) pixel landmarks (x, y) of the full image; cast to float32 as the
            reference does.
        image_size: (W0, H0) of the full image.
        output_size: alignment template size (512 in the reference).
    """
    lm = np.asarray(lm68, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"Expected 68 landmarks of shape (68, 2), got {lm.shape}.")
    w0, h0 = int(image_size[0]), int(image_size[1])

    # §3.2: eye and mouth anchors stay float32, as the reference computes them.
    left_eye, right_eye = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eyes = (left_eye + right_eye) * 0.5
    across = right_eye - left_eye                    # eye to eye
    mouth = (lm[48] + lm[54]) * 0.5
    down = mouth - eyes                              # eye centre to mouth centre
    # The half-width vector of the quad: `across` turned towards `down`, in float64.
    half_w = np.array([np.float64(across[0]) + np.float64(down[1]),
                       np.float64(across[1]) - np.float64(down[0])])
    half_w /= np.hypot(half_w[0], half_w[1])
    # float32 scale (NEP 50 keeps the two float32 norms float32) times the float64 unit vector
    half_w = half_w * max(np.hypot(across[0], across[1]) * 2.0, np.hypot(down[0], down[1]) * 1.8)
    half_h = np.array([-half_w[1], half_w[0]])       # rotated +90 degrees: points down the face
    centre = eyes + down * 0.1
    corners = np.stack([centre - half_w - half_h, centre - half_w + half_h,
                        centre + half_w + half_h, centre + half_w - half_h])
    side = np.hypot(half_w[0], half_w[1]) * 2

    # §3.3: very large faces are measured on a shrunk copy of the image.
    shrink = int(np.floor(side / output_size * 0.5))
    if shrink > 1:
        wr, hr = int(np.rint(float(w0) / shrink)), int(np.rint(float(h0) / shrink))
        corners, side = corners / shrink, side / shrink
    else:
        wr, hr, shrink = w0, h0, 1

    # §3.3: the tight box around the quad, grown by a border and clipped to the image.
    border = max(int(np.rint(side * 0.1)), 3)
    lo = np.floor(corners.min(axis=0)).astype(int) - border
    hi = np.ceil(corners.max(axis=0)).astype(int) + border
    crop = (max(int(lo[0]), 0), max(int(lo[1]), 0), min(int(hi[0]), wr), min(int(hi[1]), hr))

    # §3.4: the quad's box inside the crop, +0.5; the bottom is clipped with the width (reference quirk).
    q = corners - np.array(crop[:2]) + 0.5
    lx = max(min(q[0, 0], q[1, 0]), 0)
    ly = max(min(q[0, 1], q[3, 1]), 0)
    rx = min(max(q[2, 0], q[3, 0]), wr)
    ry = min(max(q[1, 1], q[2, 1]), wr)
    return CropGeometry(
        rsize=(int(wr), int(hr)),
        crop=tuple(int(v) for v in crop),  # type: ignore[arg-type]
        quad=(float(lx), float(ly), float(rx), float(ry)),
        shrink=shrink,
    )


@dataclass(frozen=True)
class CropInfo:
    """Everything needed to restore the output's aspect ratio or paste it back.

    box_size: (w_box, h_box) = quad box size (§3.6; the original size in resize mode); drives
        the output aspect ratio (§14).
    crop: (clx, cly, crx, cry) crop box in the working image, None in resize mode.
    quad: (lx, ly, rx, ry) floats inside the crop box, None in resize mode.
    rsize: (Wr, Hr) working image size (the original unless shrunk).
    original_size: (W0, H0) of the source image.
    mode: the preprocess mode.
    region: (x1, y1, x2, y2) of the kept region in original-image coordinates, inside the image
        (the whole image in resize mode). For full/extfull this is the paste-back box.
    shrink: the reference's integer shrink factor (1 when not shrunk).
    """

    box_size: tuple[int, int]
    crop: tuple[int, int, int, int] | None
    quad: tuple[float, float, float, float] | None
    rsize: tuple[int, int]
    original_size: tuple[int, int]
    mode: str
    region: tuple[int, int, int, int]
    shrink: int = 1

    @property
    def paste_box(self) -> tuple[int, int, int, int] | None:
        """(x1, y1, x2, y2) paste-back box in the original image for full/extfull, else None."""
        return self.region if is_full_frame(self.mode) else None

    def output_size(self, size: int) -> tuple[int, int]:
        """(width, height) of the aspect-restored frames for render size ``size`` (§14 step 2):
        ``(S, int(S * h_box / w_box))``, at least one row. ValueError for an empty box."""
        w_box, h_box = (int(v) for v in self.box_size)
        if w_box <= 0 or h_box <= 0:
            raise ValueError(f"The face crop box {w_box}x{h_box} is empty; try another preprocess mode.")
        return size, max(1, int(size * h_box / w_box))


def _kept_region_working(geom: CropGeometry, mode: str) -> tuple[int, int, int, int]:
    """Kept region (x1, y1, x2, y2) in working-image coordinates, clipped like NumPy slicing."""
    clx, cly, crx, cry = geom.crop
    if mode in ("extcrop", "extfull"):
        return clx, cly, crx, cry
    lx, ly, rx, ry = (int(v) for v in geom.quad)
    cw, ch = crx - clx, cry - cly

    def clip(a: int, n: int) -> int:
        return min(max(a, 0), n)

    return clx + clip(lx, cw), cly + clip(ly, ch), clx + clip(rx, cw), cly + clip(ry, ch)


def make_crop_info(lm68: np.ndarray | None, image_size: tuple[int, int], mode: str) -> CropInfo:
    """Build the CropInfo of ``mode`` for an image of (W0, H0) = ``image_size``.

    ``lm68`` (68, 2) landmarks of the full image; ignored (may be None) in resize mode.
    """
    check_mode(mode)
    w0, h0 = int(image_size[0]), int(image_size[1])
    if mode == "resize":
        return CropInfo(
            box_size=(w0, h0), crop=None, quad=None, rsize=(w0, h0), original_size=(w0, h0),
            mode=mode, region=(0, 0, w0, h0), shrink=1,
        )
    if lm68 is None:
        raise ValueError(f"Preprocess mode {mode!r} needs face landmarks.")
    geom = crop_geometry(lm68, (w0, h0))
    lx, ly, rx, ry = geom.quad
    box_size = (int(rx) - int(lx), int(ry) - int(ly))
    x1, y1, x2, y2 = _kept_region_working(geom, mode)
    if x2 <= x1 or y2 <= y1:
        raise ValueError("The face crop box is empty; the face is probably cut off at the image border.")
    wr, hr = geom.rsize
    if (wr, hr) != (w0, h0):
        # Map the working-image box back to the original pixel grid.
        sx, sy = w0 / wr, h0 / hr
        x1, x2 = int(math.floor(x1 * sx)), int(math.ceil(x2 * sx))
        y1, y2 = int(math.floor(y1 * sy)), int(math.ceil(y2 * sy))
    region = (max(x1, 0), max(y1, 0), min(x2, w0), min(y2, h0))
    return CropInfo(
        box_size=box_size, crop=geom.crop, quad=geom.quad, rsize=geom.rsize,
        original_size=(w0, h0), mode=mode, region=region, shrink=geom.shrink,
    )


def apply_crop(image: np.ndarray, info: CropInfo) -> np.ndarray:
    """Cut the kept region out of an RGB frame as the reference does (§3.5).

    Args:
        image: (H0, W0, 3) uint8 RGB, the size the CropInfo was made for.
    Returns:
        (h, w, 3) uint8: the kept region (the whole image in resize mode).
    """
    h0, w0 = image.shape[:2]
    if (w0, h0) != tuple(info.original_size):
        raise ValueError(
            f"Frame size {w0}x{h0} differs from the first frame's {info.original_size[0]}x"
            f"{info.original_size[1]}; all frames must have the same size."
        )
    if info.mode == "resize" or info.crop is None:
        return image
    work = image
    if tuple(info.rsize) != (w0, h0):
        work = cv2.resize(image, tuple(info.rsize), interpolation=cv2.INTER_LINEAR)
    clx, cly, crx, cry = info.crop
    out = work[cly:cry, clx:crx]
    if info.mode in ("crop", "full"):
        lx, ly, rx, ry = info.quad  # type: ignore[misc]
        out = out[int(ly):int(ry), int(lx):int(rx)]
    if out.size == 0:
        raise ValueError("The face crop is empty; the face is probably cut off at the image border.")
    return out


def crop_face(
    image: np.ndarray, lm68: np.ndarray | None, mode: str, size: int
) -> tuple[np.ndarray, CropInfo]:
    """Crop (or resize) the source image for rendering (§3.5, §4.1).

    Args:
        image: (H0, W0, 3) uint8 RGB.
        lm68: (68, 2) landmarks of ``image`` (None allowed in resize mode).
        mode: one of options.PREPROCESS_MODES.
        size: render size S.
    Returns:
        ``I_c`` (S, S, 3) uint8 RGB (OpenCV INTER_LINEAR resize of the kept region) and its CropInfo.
    """
    h0, w0 = image.shape[:2]
    info = make_crop_info(lm68, (w0, h0), mode)
    region = apply_crop(image, info)
    resized = cv2.resize(np.ascontiguousarray(region), (int(size), int(size)), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized), info
