"""Crop geometry against the reference (face_crop.json), the five modes' outputs, aspect
restoration and paste-back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MEDIA, PARITY_CASES
from sadtalker_models.options import PREPROCESS_MODES as MODES
from sadtalker_models.face.crop import (
    apply_crop,
    crop_face,
    crop_geometry,
    make_crop_info,
)
from sadtalker_models.face.paste import iter_paste_back, paste_back

FACE_CROP = PARITY_CASES / "face_crop.json"


def fixture_image(name: str) -> Path:
    """An image named in face_crop.json: ``../media`` beside the cases folder, else the shared media."""
    for folder in (PARITY_CASES.parent / "media", PARITY_CASES.parent.parent / "media", MEDIA):
        if (folder / name).is_file():
            return folder / name
    raise AssertionError(f"image {name} of face_crop.json not found near {PARITY_CASES}")


def check_face_crop(path: Path) -> None:
    """Every case of a face_crop.json: rsize and crop exact, quad within 0.5 px (README tolerances)."""
    data = json.loads(Path(path).read_text())
    assert data["cases"], f"{path} has no cases"
    for name, case in data["cases"].items():
        h, w = case["image_hw"]
        geom = crop_geometry(np.asarray(case["lm68"]), (w, h))
        assert list(geom.rsize) == list(case["rsize"]), f"{name}: rsize {geom.rsize} != {case['rsize']}"
        assert list(geom.crop) == list(case["crop"]), f"{name}: crop {geom.crop} != {case['crop']}"
        err = np.abs(np.asarray(geom.quad) - np.asarray(case["quad"], dtype=np.float64)).max()
        assert err <= 0.5, f"{name}: quad off by {err} px"


def _cases() -> list[tuple[str, dict]]:
    return list(json.loads(FACE_CROP.read_text())["cases"].items())


def test_face_crop_fixture_all_cases():
    check_face_crop(FACE_CROP)


@pytest.mark.parametrize("name, case", _cases(), ids=[n for n, _ in _cases()])
def test_face_crop_geometry_exact(name, case):
    h, w = case["image_hw"]
    geom = crop_geometry(np.asarray(case["lm68"], dtype=np.float64), (w, h))
    assert geom.crop == tuple(case["crop"])
    np.testing.assert_allclose(geom.quad, case["quad"], atol=0.5, rtol=0)
    # the geometry is computed from float32 landmarks: float64 input gives the same numbers
    assert geom == crop_geometry(np.asarray(case["lm68"], dtype=np.float32), (w, h))


@pytest.mark.parametrize("name, case", _cases(), ids=[n for n, _ in _cases()])
def test_fixture_image_size_matches(name, case):
    img = cv2.imread(str(fixture_image(case["image"])))
    assert list(img.shape[:2]) == case["image_hw"]


def _case_image(case) -> tuple[np.ndarray, np.ndarray]:
    bgr = cv2.imread(str(fixture_image(case["image"])))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.asarray(case["lm68"], dtype=np.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [256, 512])
def test_mode_output_size_and_info(mode, size):
    name, case = _cases()[0]
    img, lm = _case_image(case)
    out, info = crop_face(img, lm, mode, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    h0, w0 = img.shape[:2]
    assert info.original_size == (w0, h0) and info.mode == mode
    x1, y1, x2, y2 = info.region
    assert 0 <= x1 < x2 <= w0 and 0 <= y1 < y2 <= h0
    if mode == "resize":
        assert info.crop is None and info.quad is None and info.box_size == (w0, h0)
        assert info.region == (0, 0, w0, h0)
    else:
        assert info.crop == tuple(case["crop"])
        lx, ly, rx, ry = info.quad
        assert info.box_size == (int(rx) - int(lx), int(ry) - int(ly))
        clx, cly, crx, cry = info.crop
        if mode.startswith("ext"):
            assert info.region == info.crop
        else:
            assert info.region[:2] == (clx + int(lx), cly + int(ly))
    assert (info.paste_box is not None) == (mode in ("full", "extfull"))
    # the kept region is exactly the pixels of the region box (no shrink here)
    kept = apply_crop(img, info)
    np.testing.assert_array_equal(kept, img[y1:y2, x1:x2])
    expected = cv2.resize(kept, (size, size), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, expected)


def test_crop_quad_bottom_clipped_with_width_quirk():
    """art_0 is portrait: the reference clips ry with the image width (640), not the height."""
    cases = dict(_cases())
    if "art_0" not in cases:
        pytest.skip("case art_0 not in this case set")
    case = cases["art_0"]
    h, w = case["image_hw"]
    geom = crop_geometry(np.asarray(case["lm68"]), (w, h))
    assert geom.quad[3] == w


def test_shrink_for_huge_faces():
    """A face with qsize >= 2048 px works on a shrunk copy; the region maps back to the original."""
    name, case = _cases()[0]
    img, lm = _case_image(case)
    factor = 4  # art_0: qsize ~612 px -> ~2450 px, shrink 2
    big = cv2.resize(img, (img.shape[1] * factor, img.shape[0] * factor), interpolation=cv2.INTER_LINEAR)
    big_lm = lm * factor
    info = make_crop_info(big_lm, (big.shape[1], big.shape[0]), "full")
    assert info.shrink >= 2
    assert info.rsize == (int(np.rint(big.shape[1] / info.shrink)), int(np.rint(big.shape[0] / info.shrink)))
    out, info2 = crop_face(big, big_lm, "full", 256)
    assert out.shape == (256, 256, 3) and info2 == info
    x1, y1, x2, y2 = info.region
    assert 0 <= x1 < x2 <= big.shape[1] and 0 <= y1 < y2 <= big.shape[0]
    # the region in original pixels covers roughly the un-shrunk crop of the same face
    small_info = make_crop_info(lm, (img.shape[1], img.shape[0]), "full")
    np.testing.assert_allclose(np.asarray(info.region) / factor, small_info.region, atol=3)
    frames = np.zeros((1, 256, 256, 3), np.uint8)
    pasted = paste_back(frames, big, info)
    assert pasted.shape == (1,) + big.shape


@pytest.mark.parametrize("mode", ["crop", "extcrop", "resize"])
def test_output_size_keeps_the_box_aspect(mode):
    from dataclasses import replace

    name, case = _cases()[0]
    img, lm = _case_image(case)
    _, info = crop_face(img, lm, mode, 256)
    w_box, h_box = info.box_size
    assert info.output_size(256) == (256, int(256 * h_box / w_box))
    if mode == "resize":
        assert info.output_size(256)[1] == int(256 * img.shape[0] / img.shape[1])
    assert replace(info, box_size=(1000, 1)).output_size(256) == (256, 1)      # at least one row
    with pytest.raises(ValueError, match="crop box 0x5 is empty"):
        replace(info, box_size=(0, 5)).output_size(256)


@pytest.mark.parametrize("name, case", _cases(), ids=[n for n, _ in _cases()])
@pytest.mark.parametrize("mode", ["full", "extfull"])
def test_paste_back_outside_untouched(name, case, mode):
    img, lm = _case_image(case)
    _, info = crop_face(img, lm, mode, 256)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 256, 256, 3), dtype=np.uint8)
    out = paste_back(frames, img, info)
    assert out.shape == (3,) + img.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = info.paste_box
    outside = np.ones(img.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    for frame in out:
        np.testing.assert_array_equal(frame[outside], img[outside])
        assert np.any(frame[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3] != img[y1 + 3 : y2 - 3, x1 + 3 : x2 - 3])


def test_paste_back_matches_reference_recipe_in_bgr():
    """Blending in RGB gives the same pixels as the reference's BGR round trip."""
    name, case = _cases()[-1]
    img, lm = _case_image(case)
    _, info = crop_face(img, lm, "full", 256)
    frame = np.random.default_rng(1).integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    ours = paste_back(frame[None], img, info)[0]
    x1, y1, x2, y2 = info.paste_box
    patch = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    ref = cv2.seamlessClone(
        patch, cv2.cvtColor(img, cv2.COLOR_RGB2BGR), np.full(patch.shape[:2], 255, np.uint8),
        ((x1 + x2) // 2, (y1 + y2) // 2), cv2.NORMAL_CLONE,
    )
    np.testing.assert_array_equal(ours, cv2.cvtColor(ref, cv2.COLOR_BGR2RGB))


def test_paste_box_at_image_corner():
    """A face touching the image's top-left corner still pastes (box clipped inside)."""
    name, case = _cases()[0]
    img, lm = _case_image(case)
    h, w = img.shape[:2]
    shift = lm.min(axis=0) + 5
    moved_img = np.zeros_like(img)
    dx, dy = int(shift[0]), int(shift[1])
    moved_img[: h - dy, : w - dx] = img[dy:, dx:]
    moved_lm = lm - np.float32([dx, dy])
    for mode in ("full", "extfull"):
        _, info = crop_face(moved_img, moved_lm, mode, 256)
        assert info.paste_box[0] == 0 and info.paste_box[1] == 0
        out = paste_back(np.zeros((1, 200, 200, 3), np.uint8), moved_img, info)
        assert out.shape == (1,) + moved_img.shape


def test_paste_back_errors():
    name, case = _cases()[0]
    img, lm = _case_image(case)
    _, crop_info = crop_face(img, lm, "crop", 256)
    with pytest.raises(ValueError, match="only for the 'full' and 'extfull'"):
        paste_back(np.zeros((1, 256, 256, 3), np.uint8), img, crop_info)
    _, info = crop_face(img, lm, "full", 256)
    with pytest.raises(ValueError, match="crop was made on"):
        paste_back(np.zeros((1, 256, 256, 3), np.uint8), img[:-10], info)
    with pytest.raises(ValueError, match="No frames"):
        paste_back(np.zeros((0, 256, 256, 3), np.uint8), img, info)
    with pytest.raises(ValueError, match="uint8 RGB"):
        next(iter_paste_back([np.zeros((256, 256, 3), np.float32)], img, info))


def test_bad_mode_and_missing_landmarks():
    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.raises(ValueError, match="Unknown preprocess mode"):
        crop_face(img, None, "zoom", 256)
    with pytest.raises(ValueError, match="needs face landmarks"):
        crop_face(img, None, "crop", 256)
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        crop_geometry(np.zeros((5, 2)), (100, 100))
