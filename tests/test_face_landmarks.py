"""Landmark backends: dlib on the real media, face-alignment adapter (mocked model), offline
weight handling, input normalisation and bad inputs."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sadtalker_models.face import landmarks as lmk
from sadtalker_models.face.landmarks import (
    MIN_FACE_SIZE,
    FaceAlignmentDetector,
    check_face_size,
    make_landmark_detector,
    to_rgb_uint8,
)

from conftest import MEDIA, PARITY_CASES


def load_rgb(name: str) -> np.ndarray:
    bgr = cv2.imread(str(MEDIA / name), cv2.IMREAD_COLOR)
    assert bgr is not None, f"missing test image {name}"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fixture_image(name: str) -> Path:
    """An image named in face_crop.json: ``../media`` beside the cases folder, else the shared media."""
    for folder in (PARITY_CASES.parent / "media", PARITY_CASES.parent.parent / "media", MEDIA):
        if (folder / name).is_file():
            return folder / name
    raise AssertionError(f"image {name} of face_crop.json not found near {PARITY_CASES}")


@pytest.fixture(scope="module")
def dlib_detector():
    return make_landmark_detector("dlib")


def _eye_centres(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)


@pytest.mark.parametrize("name", ["art_0.png", "full3.png", "full_body_1.png"])
def test_dlib_finds_68_landmarks(dlib_detector, name):
    img = load_rgb(name)
    lm = dlib_detector.detect(img)
    assert lm is not None and lm.shape == (68, 2) and lm.dtype == np.float32
    h, w = img.shape[:2]
    assert np.all(lm[:, 0] > -20) and np.all(lm[:, 0] < w + 20)
    assert np.all(lm[:, 1] > -20) and np.all(lm[:, 1] < h + 20)
    left, right = _eye_centres(lm)
    assert left[0] < right[0]  # image-left eye first (iBUG order)
    mouth = (lm[48] + lm[54]) / 2
    assert mouth[1] > max(left[1], right[1])  # upright face: mouth below the eyes
    assert dlib_detector.name == "dlib"


def test_landmarks_close_to_fixture(dlib_detector):
    """dlib lands near the reference landmarks of face_crop.json (different detector, so loose)."""
    import json

    data = json.loads((PARITY_CASES / "face_crop.json").read_text())
    for case in data["cases"].values():
        bgr = cv2.imread(str(fixture_image(case["image"])))
        assert bgr is not None, case["image"]
        lm = dlib_detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ref = np.asarray(case["lm68"], dtype=np.float32)
        ref_eye = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
        err = np.linalg.norm(lm - ref, axis=1).mean()
        assert err < 0.25 * ref_eye, f"{case['image']}: mean landmark error {err:.1f} px"


def test_big_image_detects_on_downscaled_copy(dlib_detector):
    """A 4K-wide image: detection on a downscaled copy, landmarks in full-resolution pixels."""
    img = load_rgb("full3.png")
    lm_small = dlib_detector.detect(img)
    factor = 3840 / img.shape[1]
    big = cv2.resize(img, (3840, int(round(img.shape[0] * factor))), interpolation=cv2.INTER_LINEAR)
    lm_big = dlib_detector.detect(big)
    assert lm_big is not None
    left, right = _eye_centres(lm_small)
    eye_dist = np.linalg.norm(right - left) * factor
    err = np.linalg.norm(lm_big - lm_small * factor, axis=1).mean()
    assert err < 0.1 * eye_dist


def test_largest_face_is_used(dlib_detector):
    img = load_rgb("art_0.png")
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
    canvas = np.full((h, w + w // 3 + 20, 3), 128, np.uint8)
    canvas[:, :w] = img
    canvas[: h // 3, w + 20 :] = small
    lm = dlib_detector.detect(canvas)
    assert lm is not None
    assert lm[:, 0].max() < w  # the big face on the left, not the small one on the right


def test_no_face_returns_none(dlib_detector):
    rng = np.random.default_rng(0)
    assert dlib_detector.detect(np.full((300, 300, 3), 90, np.uint8)) is None
    assert dlib_detector.detect((rng.random((240, 320)) * 255).astype(np.uint8)) is None


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a,
        lambda a: a.astype(np.float32) / 255.0,
        lambda a: np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2),
        lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
        lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)[:, :, None],
        lambda a: (cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) / 255.0).astype(np.float64),
    ],
    ids=["rgb_u8", "rgb_f32", "rgba_u8", "grey_hw", "grey_hw1", "grey_f64"],
)
def test_input_formats(dlib_detector, convert):
    img = load_rgb("full3.png")
    lm = dlib_detector.detect(convert(img))
    assert lm is not None and lm.shape == (68, 2)


def test_to_rgb_uint8_conversions():
    f = np.array([[0.0, 0.5, 1.0, 2.0] * 5] * 20, dtype=np.float32)
    out = to_rgb_uint8(f)
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out[0, :4, 0].tolist() == [0, 128, 255, 255]
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 7
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [7, 0, 0]


@pytest.mark.parametrize(
    "bad, words",
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((1, 1, 3), np.uint8), "1x1"),
        (np.zeros((1, 1), np.uint8), "1x1"),
        (np.zeros((50, 50, 2), np.uint8), "shape"),
        (np.zeros((2, 50, 50, 3), np.uint8), "shape"),
        (np.full((50, 50, 3), np.nan, np.float32), "NaN"),
        (np.zeros((50, 50, 3), np.complex64), "dtype"),
        (None, "missing"),
    ],
)
def test_bad_images_raise_value_error(dlib_detector, bad, words):
    with pytest.raises(ValueError, match=words):
        dlib_detector.detect(bad)


def test_face_too_small():
    lm = np.zeros((68, 2), np.float32)
    lm[:, 0] = np.linspace(100, 100 + MIN_FACE_SIZE - 5, 68)
    lm[:, 1] = np.linspace(50, 50 + MIN_FACE_SIZE - 5, 68)
    with pytest.raises(ValueError, match="too small"):
        check_face_size(lm)
    lm[:, 1] = np.linspace(50, 50 + MIN_FACE_SIZE + 5, 68)
    lm[:, 0] = np.linspace(100, 100 + MIN_FACE_SIZE + 5, 68)
    check_face_size(lm)


# ---------------------------------------------------------------------------------- face-alignment


class FakeFA:
    """Stands in for face_alignment.FaceAlignment: returns preset landmarks, records inputs."""

    def __init__(self, result):
        self.result = result
        self.shapes: list[tuple[int, ...]] = []

    def get_landmarks(self, image):
        self.shapes.append(image.shape)
        return self.result


def _face(x0: float, y0: float, size: float, with_z: bool = False) -> np.ndarray:
    rng = np.random.default_rng(int(x0))
    pts = np.column_stack([x0 + rng.random(68) * size, y0 + rng.random(68) * size])
    pts[0] = (x0, y0)
    pts[1] = (x0 + size, y0 + size)
    if with_z:
        pts = np.column_stack([pts, rng.random(68)])
    return pts.astype(np.float32)


def test_face_alignment_adapter_picks_largest_and_converts():
    small, big = _face(10, 10, 50), _face(100, 80, 120, with_z=True)
    det = FaceAlignmentDetector(FakeFA([small, big]))
    lm = det.detect(np.zeros((300, 400, 3), np.uint8))
    assert det.name == "face_alignment"
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    np.testing.assert_array_equal(lm, big[:, :2])


def test_face_alignment_adapter_none_and_empty():
    assert FaceAlignmentDetector(FakeFA(None)).detect(np.zeros((64, 64, 3), np.uint8)) is None
    assert FaceAlignmentDetector(FakeFA([])).detect(np.zeros((64, 64, 3), np.uint8)) is None
    bad = np.full((68, 2), np.nan, np.float32)
    assert FaceAlignmentDetector(FakeFA([bad])).detect(np.zeros((64, 64, 3), np.uint8)) is None


def test_face_alignment_adapter_scales_back_from_downscaled_copy():
    face = _face(100, 100, 200)
    fake = FakeFA([face])
    det = FaceAlignmentDetector(fake, max_side=1024)
    lm = det.detect(np.zeros((1080, 2048, 3), np.uint8))
    assert fake.shapes == [(540, 1024, 3)]
    np.testing.assert_allclose(lm, face * 2.0, rtol=1e-6)


def test_face_alignment_adapter_accepts_grey_float():
    fake = FakeFA([_face(5, 5, 40)])
    FaceAlignmentDetector(fake).detect(np.zeros((64, 80), np.float32))
    assert fake.shapes == [(64, 80, 3)]


@pytest.fixture
def isolated_hub(tmp_path, monkeypatch):
    """An empty torch-hub cache and no network: any download attempt fails the test."""
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"), raising=False)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    try:
        import face_alignment.utils as fa_utils

        monkeypatch.setattr(fa_utils, "download_url_to_file", no_download)
    except ImportError:
        pass
    lmk.clear_detector_cache()
    yield tmp_path
    lmk.clear_detector_cache()


def test_face_alignment_missing_weights_message(isolated_hub):
    model_dir = isolated_hub / "face_alignment"
    model_dir.mkdir()
    with pytest.raises(ValueError) as info:
        make_landmark_detector("face_alignment", model_dir=str(model_dir))
    msg = str(info.value)
    urls = lmk.face_alignment_file_urls()
    if "not installed" in msg or "pip install face-alignment" in msg:
        pytest.skip("face-alignment is not installed")
    for name, url in urls.items():
        assert name in msg and url in msg
    assert "s3fd-619a316812.pth" in msg
    assert str(model_dir) in msg
    assert "dlib" in msg


def test_auto_falls_back_to_dlib(isolated_hub, caplog):
    caplog.set_level("INFO", logger="sadtalker_models.face.landmarks")
    det = make_landmark_detector("auto", model_dir=str(isolated_hub / "nothing_here"))
    assert det.name == "dlib"
    assert "dlib" in caplog.text


def test_unknown_backend():
    with pytest.raises(ValueError, match="Unknown landmark backend"):
        make_landmark_detector("retina")


def test_truncated_weight_file_is_ignored(isolated_hub):
    model_dir = isolated_hub / "fa"
    model_dir.mkdir()
    for name in lmk.face_alignment_file_urls():
        (model_dir / name).write_bytes(b"x" * 10)
    if "s3fd-619a316812.pth" in lmk.face_alignment_file_urls():
        assert lmk.find_face_alignment_files(str(model_dir)) is None


def test_face_alignment_loads_offline_from_model_dir(isolated_hub):
    """Weights in a flat folder load without any download; torch.hub's folder is restored."""
    pytest.importorskip("face_alignment")
    import torch
    import torch.hub
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    names = list(lmk.face_alignment_file_urls())
    if not names[1].endswith(".pth.tar"):
        pytest.skip("this face-alignment version uses a TorchScript FAN file")
    model_dir = isolated_hub / "models" / "face_alignment"
    model_dir.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), model_dir / names[0])
    torch.save(FAN(4).state_dict(), model_dir / names[1])
    hub_before = torch.hub.get_dir()
    det = make_landmark_detector("auto", model_dir=str(model_dir), device="cpu")
    assert det.name == "face_alignment"
    assert torch.hub.get_dir() == hub_before
    # the same files in a checkpoints/ sub-folder (torch-hub layout) work too
    lmk.clear_detector_cache()
    ckpt = model_dir / "checkpoints"
    ckpt.mkdir()
    for name in names:
        os.replace(model_dir / name, ckpt / name)
    assert make_landmark_detector("face_alignment", model_dir=str(model_dir), device="cpu").name == "face_alignment"


def test_damaged_face_alignment_weights(isolated_hub):
    pytest.importorskip("face_alignment")
    model_dir = isolated_hub / "fa"
    model_dir.mkdir()
    for name in lmk.face_alignment_file_urls():
        with open(model_dir / name, "wb") as handle:  # sparse file, bigger than the official size
            handle.truncate(100_000_000)
    with pytest.raises(ValueError, match="Could not load the face-alignment weights"):
        make_landmark_detector("face_alignment", model_dir=str(model_dir), device="cpu")


def test_detector_cache_returns_same_object():
    a = make_landmark_detector("dlib")
    b = make_landmark_detector("dlib")
    assert a is b


def test_auto_falls_back_to_dlib_when_face_alignment_fails_to_load(isolated_hub, caplog):
    pytest.importorskip("face_alignment")
    model_dir = isolated_hub / "fa_bad"
    model_dir.mkdir()
    for name in lmk.face_alignment_file_urls():
        with open(model_dir / name, "wb") as handle:
            handle.truncate(100_000_000)
    caplog.set_level("WARNING", logger="sadtalker_models.face.landmarks")
    det = make_landmark_detector("auto", model_dir=str(model_dir), device="cpu")
    assert det.name == "dlib"
    assert "could not be loaded" in caplog.text
