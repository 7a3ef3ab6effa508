"""Two faces of one picture talking (issue 11 item 4): Render pastes onto a background batch.

The second face is rendered onto given background frames (in a workflow: the first face's
render) instead of the still picture. Renders three 256 px frames in all (CPU time).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME
from sadtalker_models import pipeline
from test_feature_nodes import two_faces


@pytest.fixture(scope="module")
def models(weights_dir):
    return pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="fp32", cache=None)


@pytest.fixture(scope="module")
def right_face(models):
    return pipeline.prepare_face(models, two_faces()[0], "full", landmark_backend="dlib", face_index=1)


def test_second_face_is_pasted_onto_the_background_frames(models, right_face):
    picture = right_face.original
    h, w = picture.shape[:2]
    # two distinct background frames, as ComfyUI IMAGE floats: the picture, and the picture darkened
    background = torch.from_numpy(np.stack([picture, picture // 2])).float() / 255.0
    wave = torch.sin(torch.arange(2 * 640) / 5.0)[None] * 0.3          # 2 frames of 25 fps
    coeffs = pipeline.audio_to_coefficients(models, right_face, wave, 16000, seed=1)
    frames = pipeline.render_all(models, right_face, coeffs, background=background, batch_size=2)
    assert frames.shape == (2, h, w, 3)
    x0, y0, x1, y1 = right_face.crop_info.region
    outside = np.ones((h, w), bool)
    outside[max(0, y0):y1, max(0, x0):x1] = False
    assert outside[:, :400].all()                                        # the left face is outside the box
    for frame, base in zip(frames, [picture, picture // 2]):
        assert np.array_equal(frame[outside], base[outside])
    # past its end the last background frame is used again; a render's even-padded frames fit too
    assert np.array_equal(pipeline.background_frame(background, 5, right_face), picture // 2)
    padded = torch.nn.functional.pad(background, (0, 0, 0, w % 2, 0, h % 2))
    assert np.array_equal(pipeline.background_frame(padded, 0, right_face), picture)
    inside = ~outside
    assert np.abs(frames[0][inside].astype(int) - picture[inside].astype(int)).mean() > 1  # the face was pasted


def test_background_errors_are_readable(models, right_face):
    coeffs = pipeline.coefficients_from_reference(torch.zeros(1, 73))
    with pytest.raises(ValueError, match="frames of the same picture, 1024x896 pixels"):
        next(pipeline.render_frames(models, right_face, coeffs, background=torch.zeros(1, 64, 64, 3)))
    crop = pipeline.prepare_face(models, two_faces()[0], "crop", landmark_backend="dlib", face_index=1)
    with pytest.raises(ValueError, match="use the full or extfull preprocess mode with paste_back on"):
        next(pipeline.render_frames(models, crop, coeffs, background=torch.zeros(1, 896, 1024, 3)))
