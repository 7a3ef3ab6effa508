"""prepare_face: source image -> crop, crop info and 3DMM coefficients (dlib backend, stand-in
ReconNet), for every mode and the bad inputs."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
import torch

from conftest import MEDIA
from sadtalker_models.face.crop import crop_face
from sadtalker_models.options import PREPROCESS_MODES as MODES
from sadtalker_models.face.landmarks import MIN_FACE_SIZE, make_landmark_detector
from sadtalker_models.face.preprocess import FaceData, prepare_face


def load_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(MEDIA / name)), cv2.COLOR_BGR2RGB)


@pytest.mark.parametrize("mode", MODES)
def test_prepare_face_all_modes(mode, detector, recon):
    img = load_rgb("art_0.png")
    data = prepare_face(img, mode, 256, detector, recon)
    assert isinstance(data, FaceData)
    assert data.image.shape == (256, 256, 3) and data.image.dtype == np.uint8
    assert data.coeff_3dmm.shape == (1, 73) and data.coeff_3dmm.dtype == torch.float32
    assert data.full_coeff.shape == (1, 257)
    assert torch.isfinite(data.coeff_3dmm).all()
    assert data.lm68.shape == (68, 2) and data.source_lm68.shape == (68, 2)
    assert data.crop_info.mode == mode and data.crop_info.original_size == (640, 896)
    # the crop is exactly what crop_face gives for the source landmarks
    expected, info = crop_face(img, data.source_lm68 if mode != "resize" else None, mode, 256)
    np.testing.assert_array_equal(data.image, expected)
    assert info == data.crop_info
    if mode != "resize":
        assert data.redetected
        # coeff_3dmm's last three columns are the alignment's s, tx, ty
        assert data.coeff_3dmm[0, 70] > 0


def test_prepare_face_matches_direct_extraction(detector, recon):
    """Landmarks are re-detected on the S x S crop, and those feed the 3DMM extraction (§4.1)."""
    from sadtalker_models.face3dmm import extract_coeff_3dmm

    img = load_rgb("full_body_1.png")
    data = prepare_face(img, "crop", 256, detector, recon)
    lm = detector.detect(data.image)
    np.testing.assert_array_equal(lm, data.lm68)
    _, coeff = extract_coeff_3dmm(recon, data.image, lm)
    torch.testing.assert_close(coeff, data.coeff_3dmm, rtol=0, atol=0)


def test_prepare_face_512_and_input_formats(detector, recon):
    img = load_rgb("full3.png")
    a = prepare_face(img, "crop", 512, detector, recon)
    assert a.image.shape == (512, 512, 3)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    b = prepare_face(rgba.astype(np.float32) / 255.0, "crop", 256, detector, recon)
    c = prepare_face(img, "crop", 256, detector, recon)
    np.testing.assert_array_equal(b.image, c.image)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    d = prepare_face(grey, "extcrop", 256, detector, recon)
    assert d.image.shape == (256, 256, 3)


def test_redetection_failure_uses_fallback(recon):
    """A detector that finds the face on the full image but not on the crop -> -1 fallback (§4.8)."""

    class FirstOnly:
        name = "first-only"

        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def detect(self, image):
            self.calls += 1
            return self.inner.detect(image) if self.calls == 1 else None

    det = FirstOnly(make_landmark_detector("dlib"))
    data = prepare_face(load_rgb("art_0.png"), "crop", 256, det, recon)
    assert not data.redetected
    assert np.all(data.lm68 == -1)
    assert data.coeff_3dmm.shape == (1, 73) and torch.isfinite(data.coeff_3dmm).all()


def test_no_face_is_a_value_error(detector, recon):
    rng = np.random.default_rng(0)
    noise = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    for mode in ("crop", "resize", "full"):
        with pytest.raises(ValueError, match="No face was found in the source image"):
            prepare_face(noise, mode, 256, detector, recon)


def test_face_too_small(detector, recon):
    img = load_rgb("art_0.png")
    # shrink the picture until the face is below the threshold, on a larger canvas
    small = cv2.resize(img, (img.shape[1] // 12, img.shape[0] // 12), interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 200, np.uint8)
    canvas[100 : 100 + small.shape[0], 100 : 100 + small.shape[1]] = small

    class Scaled:
        """dlib on the full-size picture, landmarks mapped to the small copy (dlib can't see it)."""

        name = "scaled"

        def detect(self, image):
            lm = detector.detect(img)
            return lm / 12 + 100

    with pytest.raises(ValueError, match="too small"):
        prepare_face(canvas, "crop", 256, Scaled(), recon)
    assert MIN_FACE_SIZE >= 32


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((1, 1, 3), np.uint8), "1x1"),
        (np.zeros((5, 5), np.float32), "5x5"),
        (np.zeros((10, 10, 7), np.uint8), "shape"),
    ],
)
def test_bad_images(bad, words, detector, recon):
    with pytest.raises(ValueError, match=words):
        prepare_face(bad, "crop", 256, detector, recon)


def test_bad_mode_and_size(detector, recon):
    img = load_rgb("full3.png")
    with pytest.raises(ValueError, match="Unknown preprocess mode"):
        prepare_face(img, "square", 256, detector, recon)
    with pytest.raises(ValueError, match="too small"):
        prepare_face(img, "crop", 8, detector, recon)
