"""FaceTracker: the landmarks of a real talking-head video followed frame to frame (a detection
only now and then) stay within 1.5 % of the face size of a detection on every frame; cuts, jumps
and detectors without a separate shape predictor fall back to full detections."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sadtalker_models.face.landmarks import make_landmark_detector
from sadtalker_models.face.tracking import FaceTracker
from sadtalker_models.video import read_image, read_video

from conftest import MEDIA


@pytest.fixture(scope="module")
def detector():
    return make_landmark_detector("dlib")


@pytest.fixture(scope="module")
def video() -> list[np.ndarray]:
    """The 75 frames (512x512) of a real talking head with head motion and blinks."""
    frames, _fps = read_video(MEDIA / "ref_pose_blink_3s.mp4")
    return list(frames)


def _error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean landmark distance as a share of the face size (the landmark box's geometric side)."""
    size = float(np.sqrt(np.prod(a.max(axis=0) - a.min(axis=0))))
    return float(np.linalg.norm(a - b, axis=1).mean()) / size


class Counting:
    """A detector wrapper that counts full detections (and can hide the shape-predictor-only path)."""

    def __init__(self, inner, predictor: bool = True):
        self.inner, self.full = inner, 0
        if predictor:
            self.detect_box = self._detect_box
            self.landmarks_in_box = inner.landmarks_in_box

    def detect(self, image):
        self.full += 1
        return self.inner.detect(image)

    def _detect_box(self, rgb):
        self.full += 1
        return self.inner.detect_box(rgb)


def test_tracked_landmarks_match_detection_on_every_frame(detector, video):
    every = [detector.detect(frame) for frame in video]
    counting = Counting(detector)
    tracker = FaceTracker(counting)
    tracked = [tracker.detect(frame) for frame in video]
    errors = [_error(a, b) for a, b in zip(every, tracked)]
    # measured: mean 0.45 %, max 0.93 % of the face size, 3 detections for 75 frames
    assert max(errors) < 0.015 and float(np.mean(errors)) < 0.008, (max(errors), np.mean(errors))
    assert counting.full == tracker.detections == 3                     # frames 0, 25, 50
    assert all(np.array_equal(every[i], tracked[i]) for i in (0, 25, 50))  # the detections themselves


def test_a_cut_or_a_jump_is_detected_in_full(detector, video):
    other = cv2.resize(read_image(MEDIA / "art_0.png"), (512, 512 * 896 // 640))[:512]
    shifted = np.roll(video[1], (60, 90), axis=(0, 1))   # the same face moved by a third of its size
    for frame in (other, shifted):
        counting = Counting(detector)
        tracker = FaceTracker(counting)
        tracker.detect(video[0])
        got = tracker.detect(frame)
        assert counting.full == 2
        assert np.array_equal(got, detector.detect(frame))


def test_redetects_at_the_given_period_and_without_a_shape_predictor(detector, video):
    counting = Counting(detector)
    tracker = FaceTracker(counting, redetect=5)
    for frame in video[:20]:
        tracker.detect(frame)
    assert counting.full == 4
    plain = Counting(detector, predictor=False)   # e.g. face-alignment: detect every frame
    tracker = FaceTracker(plain)
    assert [np.array_equal(tracker.detect(f), detector.detect(f)) for f in video[:4]] == [True] * 4
    assert plain.full == 4
    with pytest.raises(ValueError, match="redetect"):
        FaceTracker(detector, redetect=0)


def test_no_face_then_a_face(detector, video):
    tracker = FaceTracker(detector)
    assert tracker.detect(np.zeros((256, 256, 3), np.uint8)) is None
    assert np.array_equal(tracker.detect(video[0]), detector.detect(video[0]))


def test_enhance_frames_follows_the_face_by_default(detector, video):
    """enhance_frames detects once for a short clip (track=True) instead of on every frame
    (track=False), and the restored faces land in the same place within a uint8 level on average."""
    import torch

    from sadtalker_models.enhance import enhance_frames

    class Darken:   # a stand-in restorer whose change is easy to see: the aligned face at half brightness
        architecture = "darken"

        def restore(self, faces: torch.Tensor) -> torch.Tensor:
            return faces * 0.5

    frames = np.stack(video[:6])
    results = {}
    for track in (True, False):
        counting = Counting(detector)
        results[track], stats = enhance_frames(frames, Darken(), counting, track=track)
        assert stats.enhanced_frames == 6
        assert counting.full == (1 if track else 6)
    assert np.abs(results[True].astype(int) - frames).mean() > 10     # the faces were pasted
    assert np.abs(results[True].astype(int) - results[False]).mean() < 1.0
