"""Landmarks of a video's face frame after frame, without a face detection on every frame.

dlib's HOG face detector costs 9, 23 and 89 ms on a 256, 512 and 1080-p frame (Intel Xeon,
Sapphire-Rapids class, 2 cores); its 68-point shape predictor, given the face's box, costs about
1.6 ms at any size. In a rendered video the face moves little from one frame to the next, so
:class:`FaceTracker` detects the face on the first frame, then runs only the shape predictor in the
box that the previous frame's landmarks give (placed relative to the landmarks as the detector's
box was), and detects again:

* every ``redetect`` frames;
* when a frame differs much from the previous one (a cut, or an unrelated picture in the batch):
  the mean absolute difference of 16x16 grey thumbnails above ``max_scene_change`` levels;
* when the fitted landmarks moved or changed size by more than ``max_change`` of the face size.

Detectors without a separate shape predictor (face-alignment) detect every frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from .landmarks import LandmarkDetector, to_rgb_uint8

THUMBNAIL = 16


def _centre_and_size(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The centre (2,) and side (the geometric mean of width and height) of a landmark box."""
    low, high = points.min(axis=0), points.max(axis=0)
    width, height = np.maximum(high - low, 1.0)
    return (low + high) / 2.0, float(np.sqrt(width * height))


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA).astype(np.float32)


class FaceTracker:
    """A stateful landmark detector for consecutive frames of one video (see the module docstring).

    Args:
        detector: the landmark detector used for full detections (see ``make_landmark_detector``).
        redetect: a full detection at least every this many frames.
        max_change: largest move or size change of the face between two frames, as a share of its
            size, for a fit to be kept.
        max_scene_change: largest mean grey-level difference (0..255) of two frames' thumbnails for
            the previous frame's face to be followed.
    """

    def __init__(self, detector: LandmarkDetector, redetect: int = 25, max_change: float = 0.2,
                 max_scene_change: float = 12.0) -> None:
        if redetect < 1:
            raise ValueError(f"redetect must be at least 1, got {redetect}")
        self.detector = detector
        self.name = getattr(detector, "name", "tracker")
        self.redetect = redetect
        self.max_change = max_change
        self.max_scene_change = max_scene_change
        self.detections = 0          # full detections run so far
        self._can_track = hasattr(detector, "detect_box") and hasattr(detector, "landmarks_in_box")
        self._last: np.ndarray | None = None     # the previous frame's landmarks (68, 2)
        self._thumb: np.ndarray | None = None
        self._box_offset = np.zeros(2)          # detector box centre - landmark centre, in face sizes
        self._box_scale = 1.0                   # detector box side / landmark box side
        self._since = 0

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """(68, 2) float32 landmarks of the followed face in this frame, or None."""
        rgb = to_rgb_uint8(image)
        thumb = _thumbnail(rgb) if self._can_track else None
        if self._last is not None and self._since + 1 < self.redetect \
                and float(np.abs(thumb - self._thumb).mean()) <= self.max_scene_change:
            points = self._follow(rgb)
            if points is not None:
                self._last, self._thumb = points, thumb
                self._since += 1
                return points
        return self._detect(rgb, thumb)

    def _follow(self, rgb: np.ndarray) -> np.ndarray | None:
        centre, size = _centre_and_size(self._last)
        box_centre = centre + self._box_offset * size
        half = self._box_scale * size / 2.0
        box = (box_centre[0] - half, box_centre[1] - half, box_centre[0] + half, box_centre[1] + half)
        points = self.detector.landmarks_in_box(rgb, box)
        new_centre, new_size = _centre_and_size(points)
        moved = float(np.linalg.norm(new_centre - centre)) / size
        if not np.all(np.isfinite(points)) or moved > self.max_change or abs(new_size / size - 1.0) > self.max_change:
            return None
        return points

    def _detect(self, rgb: np.ndarray, thumb: np.ndarray | None) -> np.ndarray | None:
        self.detections += 1
        self._since = 0
        if not self._can_track:
            return self.detector.detect(rgb)
        found = self.detector.detect_box(rgb)
        if found is None:
            self._last = None
            return None
        points, (left, top, right, bottom) = found
        centre, size = _centre_and_size(points)
        self._box_offset = (np.array([(left + right) / 2.0, (top + bottom) / 2.0]) - centre) / size
        self._box_scale = float(np.sqrt(max(right - left, 1) * max(bottom - top, 1))) / size
        self._last, self._thumb = points, thumb
        return points
