"""Choosing which face talks (issue 11 item 1), on a real picture with two faces.

The picture is two real portraits of tests/data/media side by side, 1024x896 (no downscaling
before detection): ``art_0.png`` cut to its middle 512 columns on the left and ``full3.png``
(768x512, padded below to 896 rows) on the right, 512 px further (a multiple of dlib's 8 px HOG
cell, so each face is found on the same grid as on its own).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import MEDIA
from sadtalker_models.face.preprocess import prepare_face
from sadtalker_models.face.select import choose_face, detect_all_faces, draw_faces, face_box

OFFSET = 512


def read_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(MEDIA / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def pictures():
    left, right = np.ascontiguousarray(read_rgb("art_0.png")[:, 64:576]), read_rgb("full3.png")
    assert left.shape[:2] == (896, OFFSET)
    padded = np.zeros((896, right.shape[1], 3), np.uint8)
    padded[: right.shape[0]] = right
    return left, right, np.ascontiguousarray(np.concatenate([left, padded], axis=1))


def test_both_faces_are_found_left_to_right(pictures, detector):
    left, right, pair = pictures
    faces = detect_all_faces(detector, pair)
    assert len(faces) == 2
    (alone_left,) = detect_all_faces(detector, left)
    (alone_right,) = detect_all_faces(detector, right)
    # dlib's detection box depends a little on the whole picture (its pyramid): a few pixels on ~300 px faces
    for found, alone in ((faces[0], alone_left), (faces[1], alone_right + [OFFSET, 0])):
        err = np.abs(found - alone)
        assert err.mean() < 3.0 and err.max() < 12.0, (err.mean(), err.max())
    assert choose_face(faces) == 0          # the larger face (art_0's) is the default
    assert choose_face(faces, 1) == 1


def without_face(picture: np.ndarray, lm68: np.ndarray) -> np.ndarray:
    """``picture`` with the face of ``lm68`` painted over (its box grown by 15 %, in flat grey)."""
    x0, y0, x1, y1 = face_box(lm68)
    gx, gy = (x1 - x0) * 15 // 100, (y1 - y0) * 15 // 100
    out = picture.copy()
    out[max(0, y0 - gy):y1 + gy, max(0, x0 - gx):x1 + gx] = 128
    return out


@pytest.mark.parametrize("index, chosen", [(0, 0), (1, 1)])
def test_chosen_face_is_the_one_cropped(pictures, detector, recon, index, chosen):
    *_, pair = pictures
    data = prepare_face(pair, "crop", 256, detector, recon, face_index=index)
    assert len(data.faces) == 2 and data.face_index == chosen
    # the same picture with the other face painted over has one face: its crop is the same
    alone = prepare_face(without_face(pair, data.faces[1 - chosen]), "crop", 256, detector, recon)
    assert len(alone.faces) == 1
    diff = np.abs(data.image.astype(np.int16) - alone.image.astype(np.int16))
    assert diff.mean() < 3.0, diff.mean()
    other = prepare_face(without_face(pair, data.faces[chosen]), "crop", 256, detector, recon)
    assert np.abs(data.image.astype(np.int16) - other.image.astype(np.int16)).mean() > 25


def test_mask_picks_the_face_inside_it(pictures, detector, recon):
    *_, pair = pictures
    mask = np.zeros(pair.shape[:2], np.float32)
    mask[300:480, OFFSET + 150:OFFSET + 350] = 1.0      # over the right face
    data = prepare_face(pair, "crop", 256, detector, recon, face_index=0, mask=mask)
    assert data.face_index == 1
    half = cv2.resize(mask, (pair.shape[1] // 2, pair.shape[0] // 2))   # another size is stretched
    assert prepare_face(pair, "crop", 256, detector, recon, mask=half).face_index == 1
    empty = np.zeros_like(mask)
    empty[850:, :50] = 1.0
    with pytest.raises(ValueError, match="None of the 2 face.s. found in the source image lies inside the mask"):
        prepare_face(pair, "crop", 256, detector, recon, mask=empty)


def test_out_of_range_index_says_how_many_faces_were_found(pictures, detector, recon):
    *_, pair = pictures
    with pytest.raises(ValueError, match=r"Face index 2 is out of range: 2 face\(s\) were found .*indices 0 to 1"):
        prepare_face(pair, "crop", 256, detector, recon, face_index=2)
    with pytest.raises(ValueError, match=r"Face index 1 is out of range: 1 face\(s\) were found"):
        prepare_face(pictures[0], "crop", 256, detector, recon, face_index=1)


def test_preview_draws_every_face_with_the_chosen_one_in_green(pictures, detector):
    *_, pair = pictures
    faces = detect_all_faces(detector, pair)
    drawn = draw_faces(pair, faces, 1)
    assert drawn.shape == pair.shape and not np.shares_memory(drawn, pair)
    for i, colour in ((0, (255, 40, 40)), (1, (0, 255, 0))):
        x0, y0, x1, y1 = face_box(faces[i])
        edge = drawn[(y0 + y1) // 2, x0]                 # middle of the box's left side
        assert tuple(edge) == colour, (i, edge)
    # the index label sits above each box: dark text on the box colour
    x0, y0, _, _ = face_box(faces[1])
    label = drawn[max(0, y0 - 30):y0, x0:x0 + 30].reshape(-1, 3)
    assert (label == (0, 255, 0)).all(axis=1).any() and (label.sum(axis=1) < 100).any()
