"""68-point face landmarks behind one interface, with two backends.

* ``dlib``: dlib's HOG frontal-face detector plus the 68-point shape predictor that ships inside
  the ``face_recognition_models`` wheel. Works offline, needs no download. The predictor was
  trained on the iBUG 300-W data set, whose licence excludes commercial use (see
  docs/landmarks.md).
* ``face_alignment``: the ``face-alignment`` package (S3FD detector + 2D FAN). Its two weight
  files are looked up in a local folder (``model_dir``, flat or in a ``checkpoints/`` sub-folder,
  then the torch-hub cache); nothing is ever downloaded from here.
* ``auto``: ``face_alignment`` when the package and both weight files are present, else ``dlib``.

Every detector takes any supported image (see :func:`to_rgb_uint8`) and returns the landmarks of
the *largest* face as a ``(68, 2)`` float32 array of pixel ``(x, y)`` (y down, iBUG order), or
``None`` when no face is found. Big images are searched on a copy whose longer side is at most
:data:`DETECT_MAX_SIDE` pixels; the landmarks are mapped back to the input's pixel grid.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable

import cv2
import numpy as np

from ..options import LANDMARK_BACKENDS, check_choice

logger = logging.getLogger(__name__)

#: Longer side (pixels) of the copy that face detection runs on.
DETECT_MAX_SIDE = 1024
#: Smallest usable face: the landmark box's shorter side must be at least this many pixels.
MIN_FACE_SIZE = 40
#: Smallest accepted image side in pixels.
MIN_IMAGE_SIDE = 16


# File names and URLs used by the face-alignment package. The installed package's own URL table
# is preferred (versions < 1.5 use a TorchScript ``.zip`` FAN, 1.5 a ``.pth.tar`` state dict).
_FA_S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth"
_FA_FAN_URL_OLD = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip"
_FA_FAN_URL_NEW = "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar"
# Official sizes in bytes; a shorter file is an interrupted download and is ignored.
_FA_KNOWN_SIZES = {
    "s3fd-619a316812.pth": 89843225,
    "2DFAN4-cd938726ad.zip": 96316515,
}


# --------------------------------------------------------------------------------------------
# Input normalisation
# --------------------------------------------------------------------------------------------

def to_rgb_uint8(image: Any, what: str = "image") -> np.ndarray:
    """Convert a supported image to a contiguous RGB uint8 array.

    Accepts a numpy array (or CPU torch tensor) of shape (H, W), (H, W, 1), (H, W, 3) or
    (H, W, 4), dtype uint8 or float in 0..1 (values outside are clipped). Alpha is dropped,
    grey is replicated to three channels.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: empty, too small (< MIN_IMAGE_SIDE pixels a side), wrong shape or dtype,
        or non-finite values.
    """
    if image is None:
        raise ValueError(f"The {what} is missing (got None).")
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(
            f"The {what} has shape {tuple(arr.shape)}; expected (H, W), (H, W, 1), (H, W, 3) or "
            "(H, W, 4) (one image, channels last)."
        )
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"The {what} is empty ({w}x{h} pixels).")
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"The {what} is only {w}x{h} pixels; it must be at least {MIN_IMAGE_SIDE} pixels on "
            f"each side and contain a face of at least {MIN_FACE_SIZE} pixels."
        )
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"The {what} has unsupported dtype {arr.dtype}; use uint8 or float 0..1.")
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _float_to_uint8(arr, what)
    else:  # other integer types: accept only values already in 0..255
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(
                f"The {what} has dtype {arr.dtype} with values outside 0..255; use uint8 or float 0..1."
            )
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


#: Rows converted at once by :func:`_float_to_uint8` (bounds its temporary memory on huge pictures).
CONVERT_ROWS = 256


def _float_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    """Float ``(H, W[, C])`` in 0..1 -> uint8 (clipped, rounded), converted a block of rows at a time so that
    a huge picture needs one uint8 copy, not several float ones. ValueError for NaN or infinite values."""
    out = np.empty(arr.shape, dtype=np.uint8)
    for top in range(0, arr.shape[0], CONVERT_ROWS):
        block = arr[top:top + CONVERT_ROWS].astype(np.float32)
        if not np.isfinite(block).all():
            raise ValueError(f"The {what} contains NaN or infinite values.")
        np.clip(block, 0.0, 1.0, out=block)
        block *= np.float32(255.0)
        np.rint(block, out=block)
        out[top:top + CONVERT_ROWS] = block
    return out


def _detection_copy(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale ``image`` (H, W, 3) so its longer side is at most ``max_side``.

    Returns the (possibly unchanged) copy and the factor ``copy_px / image_px`` (<= 1).
    """
    h, w = image.shape[:2]
    longer = max(h, w)
    if longer <= max_side:
        return image, 1.0
    scale = max_side / float(longer)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small), scale


def landmark_box_size(lm68: np.ndarray) -> float:
    """Shorter side in pixels of the bounding box of (68, 2) landmarks."""
    span = lm68.max(axis=0) - lm68.min(axis=0)
    return float(min(span[0], span[1]))


def check_face_size(lm68: np.ndarray, what: str = "image") -> None:
    """Raise ValueError when the face of (68, 2) landmarks is smaller than MIN_FACE_SIZE px."""
    size = landmark_box_size(lm68)
    if size < MIN_FACE_SIZE:
        raise ValueError(
            f"The face in the {what} is too small to use ({size:.0f} pixels across; at least "
            f"{MIN_FACE_SIZE} are needed). Use a larger or closer-cropped picture of the face."
        )


# --------------------------------------------------------------------------------------------
# Interface
# --------------------------------------------------------------------------------------------

@runtime_checkable
class LandmarkDetector(Protocol):
    """Anything with a ``name`` and ``detect(image) -> (68, 2) float32 | None``."""

    name: str

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks (68, 2) float32 of the largest face in ``image``, or None."""
        ...


def _largest(candidates: list[np.ndarray]) -> np.ndarray | None:
    """Pick the (68, 2) landmark set with the largest bounding-box area."""
    best, best_area = None, -1.0
    for lm in candidates:
        span = lm.max(axis=0) - lm.min(axis=0)
        area = float(span[0]) * float(span[1])
        if area > best_area:
            best, best_area = lm, area
    return best


# --------------------------------------------------------------------------------------------
# dlib backend
# --------------------------------------------------------------------------------------------

def dlib_predictor_path() -> str:
    """Path of ``shape_predictor_68_face_landmarks.dat`` inside ``face_recognition_models``.

    The file is located without importing the package (its ``__init__`` needs the removed
    ``pkg_resources``).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise ValueError(
            "The dlib landmark backend needs the 'face_recognition_models' package "
            "(pip install face_recognition_models), which ships the 68-point predictor."
        )
    path = os.path.join(os.path.dirname(spec.origin), "models", "shape_predictor_68_face_landmarks.dat")
    if not os.path.isfile(path):
        raise ValueError(f"The dlib 68-point predictor is missing: {path}. Reinstall face_recognition_models.")
    return path


class DlibDetector:
    """dlib HOG face detector + 68-point shape predictor (offline)."""

    name = "dlib"

    def __init__(self, predictor_path: str | None = None, max_side: int = DETECT_MAX_SIDE) -> None:
        try:
            import dlib
        except ImportError as exc:  # pragma: no cover - dlib-bin is a requirement
            raise ValueError("The dlib landmark backend needs dlib (pip install dlib-bin).") from exc
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(predictor_path or dlib_predictor_path())
        self._rect = dlib.rectangle
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks (68, 2) float32 of the largest face in ``image``, or None.

        ``image``: any format accepted by :func:`to_rgb_uint8`.
        """
        rgb = to_rgb_uint8(image)
        rects = self._face_rects(rgb)
        if not rects:
            return None
        return self._landmarks(rgb, max(rects, key=lambda r: r.width() * r.height()))

    def detect_all(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks (68, 2) float32 of every face in ``image``, in detection order (maybe empty)."""
        rgb = to_rgb_uint8(image)
        return [self._landmarks(rgb, rect) for rect in self._face_rects(rgb)]

    def detect_box(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
        """Like :meth:`detect` on an (H, W, 3) uint8 RGB image, with the detector's face box
        ``(left, top, right, bottom)``; None when no face is found."""
        rects = self._face_rects(rgb)
        if not rects:
            return None
        rect = max(rects, key=lambda r: r.width() * r.height())
        return self._landmarks(rgb, rect), (rect.left(), rect.top(), rect.right(), rect.bottom())

    def landmarks_in_box(self, rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The shape predictor alone: (68, 2) float32 landmarks of the face assumed in ``box``
        ``(left, top, right, bottom)`` of an (H, W, 3) uint8 RGB image (no detection)."""
        return self._landmarks(rgb, self._rect(*(int(round(v)) for v in box)))

    def _face_rects(self, rgb: np.ndarray) -> list:
        """dlib rectangles of the faces, in ``rgb``'s pixel grid."""
        small, scale = _detection_copy(rgb, self.max_side)
        rects = list(self._detector(small, 0))
        if not rects and max(small.shape[:2]) <= 1024:
            rects = list(self._detector(small, 1))  # upsample once to find smaller faces
        if scale != 1.0:
            inv = 1.0 / scale
            rects = [self._rect(int(round(r.left() * inv)), int(round(r.top() * inv)),
                                int(round(r.right() * inv)), int(round(r.bottom() * inv))) for r in rects]
        return rects

    def _landmarks(self, rgb: np.ndarray, rect) -> np.ndarray:
        shape = self._predictor(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# face-alignment backend
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaceAlignmentFiles:
    """Where the two face-alignment weight files were found (absolute paths)."""

    detector: str  # s3fd-*.pth
    fan: str  # 2DFAN4-*.zip or 2DFAN4-*.pth.tar


def face_alignment_file_urls() -> dict[str, str]:
    """File name -> URL of the two weight files the installed face-alignment version loads.

    Falls back to the 1.5 names when the package is not installed.
    """
    s3fd_url, fan_url = _FA_S3FD_URL, _FA_FAN_URL_NEW
    try:
        from face_alignment import api as fa_api
        fan_url = fa_api.models_urls.get("2DFAN-4", fan_url)
    except Exception:  # not installed or another layout: keep the defaults
        pass
    try:
        from face_alignment.detection.sfd import sfd_detector
        s3fd_url = sfd_detector.models_urls.get("s3fd", s3fd_url)
    except Exception:
        pass
    return {os.path.basename(s3fd_url): s3fd_url, os.path.basename(fan_url): fan_url}


def face_alignment_search_dirs(model_dir: str | None) -> list[str]:
    """Folders searched for face-alignment weights, in order."""
    dirs: list[str] = []
    if model_dir:
        dirs += [os.path.join(model_dir, "checkpoints"), model_dir]
    try:
        import torch.hub
        dirs.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    except Exception:  # pragma: no cover
        pass
    return dirs


def find_face_alignment_files(model_dir: str | None) -> FaceAlignmentFiles | None:
    """Locate both weight files; None when either is missing or truncated."""
    names = list(face_alignment_file_urls())
    found: list[str] = []
    for name in names:
        for d in face_alignment_search_dirs(model_dir):
            path = os.path.join(d, name)
            if os.path.isfile(path):
                expected = _FA_KNOWN_SIZES.get(name)
                if expected is not None and os.path.getsize(path) < expected:
                    logger.warning(
                        "Ignoring %s: %d bytes, the official file has %d (incomplete download?)",
                        path, os.path.getsize(path), expected,
                    )
                    continue
                found.append(os.path.abspath(path))
                break
        else:
            return None
    return FaceAlignmentFiles(detector=found[0], fan=found[1])


def missing_face_alignment_message(model_dir: str | None) -> str:
    """Readable explanation of where to put which file for the face-alignment backend."""
    urls = face_alignment_file_urls()
    where = model_dir or "<ComfyUI>/models/face_alignment"
    lines = [
        "The face-alignment landmark backend needs two weight files that are not on this machine "
        "and are never downloaded automatically. Download them and put them in "
        f"{where} (or its 'checkpoints' sub-folder):",
    ]
    lines += [f"  {name}  <-  {url}" for name, url in urls.items()]
    searched = ", ".join(face_alignment_search_dirs(model_dir))
    lines.append(f"Searched: {searched}.")
    lines.append("Or use the 'dlib' landmark backend, which works offline.")
    return "\n".join(lines)


@contextlib.contextmanager
def _torch_hub_dir_with(files: FaceAlignmentFiles) -> Iterator[None]:
    """Temporarily point torch.hub at a folder whose ``checkpoints/`` holds both files."""
    import torch.hub

    det_dir, fan_dir = os.path.dirname(files.detector), os.path.dirname(files.fan)
    tmp = None
    if det_dir == fan_dir and os.path.basename(det_dir) == "checkpoints":
        hub_dir = os.path.dirname(det_dir)
    else:
        tmp = tempfile.mkdtemp(prefix="sadtalker_fa_")
        hub_dir = tmp
        ckpt = os.path.join(tmp, "checkpoints")
        os.makedirs(ckpt)
        for src in (files.detector, files.fan):
            dst = os.path.join(ckpt, os.path.basename(src))
            try:
                os.symlink(src, dst)
            except OSError:
                try:
                    os.link(src, dst)
                except OSError:
                    shutil.copyfile(src, dst)
    previous = getattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(hub_dir)
    try:
        yield
    finally:
        if hasattr(torch.hub, "_hub_dir"):
            torch.hub._hub_dir = previous
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load_face_alignment(model_dir: str | None = None, device: str | None = None) -> Any:
    """Build a ``face_alignment.FaceAlignment`` (2D, S3FD) from local weight files only.

    Raises:
        ValueError: the package is not installed, or a weight file is missing (the message
        names each file, its URL and the folder to put it in).
    """
    try:
        import face_alignment
    except ImportError as exc:
        raise ValueError(
            "The face-alignment landmark backend needs the 'face-alignment' package "
            "(pip install face-alignment). Or use the 'dlib' landmark backend."
        ) from exc
    files = find_face_alignment_files(model_dir)
    if files is None:
        raise ValueError(missing_face_alignment_message(model_dir))
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm_type = getattr(face_alignment.LandmarksType, "TWO_D", None)
    if lm_type is None:
        lm_type = getattr(face_alignment.LandmarksType, "_2D")
    kwargs: dict[str, Any] = {"device": device, "flip_input": False, "face_detector": "sfd"}
    params = inspect.signature(face_alignment.FaceAlignment.__init__).parameters
    if "compile" in params:
        kwargs["compile"] = False
    try:
        with _torch_hub_dir_with(files):
            return face_alignment.FaceAlignment(lm_type, **kwargs)
    except Exception as exc:
        raise ValueError(
            f"Could not load the face-alignment weights ({files.detector}, {files.fan}): {exc}. "
            "The files may be damaged or for another face-alignment version; download them again "
            "from the URLs in docs/landmarks.md, or use the 'dlib' landmark backend."
        ) from exc


class FaceAlignmentDetector:
    """Adapter over a ``face_alignment.FaceAlignment``-like object (anything with
    ``get_landmarks(image) -> list of (68, 2|3) arrays | None``)."""

    name = "face_alignment"

    def __init__(self, fa: Any, max_side: int = DETECT_MAX_SIDE) -> None:
        self._fa = fa
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks (68, 2) float32 of the largest face in ``image``, or None."""
        return _largest(self.detect_all(image))

    def detect_all(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks (68, 2) float32 of every face in ``image`` (maybe empty)."""
        rgb = to_rgb_uint8(image)
        small, scale = _detection_copy(rgb, self.max_side)
        result = self._fa.get_landmarks(small)
        candidates = []
        for lm in result or ():
            arr = np.asarray(lm, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[0] != 68 or arr.shape[1] < 2:
                continue
            arr = arr[:, :2]
            if np.all(np.isfinite(arr)):
                if scale != 1.0:
                    arr = arr / np.float32(scale)
                candidates.append(np.ascontiguousarray(arr, dtype=np.float32))
        return candidates


# --------------------------------------------------------------------------------------------
# Factory: detectors are kept in the library's one model cache
# --------------------------------------------------------------------------------------------

#: The kind of the detector entries in :data:`~..model_cache.MODEL_CACHE`.
DETECTOR_KIND = "face detector"


def clear_detector_cache() -> None:
    """Forget every cached detector (frees their models)."""
    from ..model_cache import MODEL_CACHE

    MODEL_CACHE.clear(DETECTOR_KIND)


def _cached_detector(key: str, model_dir: str | None, device: str | None,
                     why: str = "") -> LandmarkDetector:
    """The detector for ``key`` from the model cache; the first time it is made, log which backend
    it is (and ``why``, e.g. why auto chose it) once, instead of on every image."""
    from ..model_cache import MODEL_CACHE

    def load() -> LandmarkDetector:
        det = DlibDetector() if key == "dlib" else FaceAlignmentDetector(load_face_alignment(model_dir, device))
        logger.info("Landmark backend: %s%s", det.name, f" ({why})" if why else "")
        return det

    cache_key = (DETECTOR_KIND, key, os.path.abspath(model_dir) if model_dir and key != "dlib" else None,
                 device if key != "dlib" else None)
    return MODEL_CACHE.get_or_load(cache_key, load)


def make_landmark_detector(
    backend: str = "auto", model_dir: str | None = None, device: str | None = None
) -> LandmarkDetector:
    """Return a (cached) landmark detector.

    Args:
        backend: 'auto', 'dlib' or 'face_alignment' ('face-alignment' is accepted too).
        model_dir: folder with the face-alignment weights (flat or in ``checkpoints/``).
        device: torch device for face-alignment; default cuda when available.

    The returned object's ``.name`` says which backend is used ('dlib' or 'face_alignment').
    """
    key = str(backend).strip().lower().replace("-", "_")
    check_choice(key, LANDMARK_BACKENDS, "landmark backend")
    why = ""
    if key == "auto":
        has_pkg = importlib.util.find_spec("face_alignment") is not None
        if has_pkg and find_face_alignment_files(model_dir) is not None:
            key = "face_alignment"
        else:
            key = "dlib"
            why = "auto: face-alignment " + ("weights not found" if has_pkg else "package not installed")
        auto = True
    else:
        auto = False
    try:
        det = _cached_detector(key, model_dir, device, why)
    except ValueError as exc:
        if not (auto and key == "face_alignment"):
            raise
        logger.warning("Landmarks: face-alignment could not be loaded (%s); using dlib.", exc)
        det = _cached_detector("dlib", None, None, "auto: face-alignment could not be loaded")
    return det
