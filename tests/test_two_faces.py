"""Two faces of one picture talking (issue 11 item 4): Render pastes onto a background batch.

The second face is rendered onto given background frames (in a workflow: the first face's
render) instead of the still picture. Renders three 256 px frames in all (CPU time).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME, MEDIA
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
    frames = np.concatenate(list(pipeline.render_frames(models, right_face, coeffs, background=background, batch_size=2)))
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


def test_in_turns_each_mouth_moves_only_while_its_own_voice_speaks(models, right_face):
    """Two speakers taking turns (A speaks the first second, B the second): per-frame mouth motion of
    each face (change of its expression coefficients) against each audio's loudness."""
    from sadtalker_models.video import load_audio

    left_face = pipeline.prepare_face(models, two_faces()[0], "full", landmark_backend="dlib", face_index=0)
    wave, rate = load_audio(str(MEDIA / "speech_en_16k_3s.wav"))
    speech = torch.from_numpy(wave[:1, :rate])                       # 1 s of speech, 16 kHz
    silence = torch.zeros_like(speech)
    voices = {"A": torch.cat([speech, silence], 1), "B": torch.cat([silence, speech], 1)}
    faces = {"A": left_face, "B": right_face}
    motion, loudness = {}, {}
    for who, voice in voices.items():
        coeffs = pipeline.audio_to_coefficients(models, faces[who], voice, rate, seed=3, blink=False)
        exp = coeffs.coeffs[:, :64]
        motion[who] = torch.cat([torch.zeros(1), (exp[1:] - exp[:-1]).norm(dim=1)]).numpy()
        frames = voice[0, : coeffs.num_frames * 640].reshape(coeffs.num_frames, 640)
        loudness[who] = frames.pow(2).mean(dim=1).sqrt().numpy()
    first, second = slice(2, 17), slice(33, 50)                      # away from the 0.2 s mel window at the turn
    assert motion["A"][first].mean() > 1e-3 and motion["A"][second].max() < 1e-5
    assert motion["B"][second].mean() > 1e-3 and motion["B"][first].max() < 1e-5
    corr = {(m, v): np.corrcoef(motion[m], loudness[v])[0, 1] for m in "AB" for v in "AB"}
    # measured with the seed-0 stand-in weights: A~A 0.52, A~B -0.63, B~A -0.71, B~B 0.54
    assert corr["A", "A"] > 0.3 > corr["A", "B"] and corr["B", "B"] > 0.3 > corr["B", "A"], corr
