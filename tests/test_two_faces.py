"""Two faces of one picture talking (issue 11 item 4): Render pastes onto a background batch.

The second face is rendered onto given background frames (in a workflow: the first face's
render) instead of the still picture. Renders three 256 px frames, and 2 x 36 frames at 128 px
for the measurement of whose mouth moves when (about 75 s on a 2-core CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME, MEDIA
from sadtalker_models import pipeline
from test_feature_nodes import two_faces
from test_nodes import comfy_base, model as node_model, nodes, pack  # noqa: F401  (fixtures)


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


def test_rendered_two_people_video_each_mouth_moves_with_its_own_voice(nodes, node_model):
    """The two-people workflow over the comfy stand-in (Face Crop 0/1 -> Audio to Coefficients ->
    Render, the second Render on the first one's frames), speakers taking turns: A speaks frames
    0-11, both are silent for 12 frames, B speaks frames 24-35. Measured on the rendered frames
    (benchmarks/mouth_motion.py): the change of each mouth box (dlib lips of the still picture)
    against each voice's loudness. Head motion 0 and no blinks, so a change in a mouth box is lip
    motion. The renderer sees a 27-frame window of coefficients (13 each side), so a mouth settles
    13 + 2 (mel window) frames after its voice stops. Faces are rendered at 128 px (valid, see the
    parity cases) to keep the 2 x 36 renders short on a CPU."""
    import dataclasses

    import cv2

    from benchmarks.mouth_motion import (correlations, follows_own_voice, loudness, mouth_boxes, moves_in_own_turn,
                                         region_motion, solo_motion)
    from sadtalker_models.video import load_audio

    rate, turn = 16000, 12 * 640                                         # 12 frames a turn
    english, _ = load_audio(str(MEDIA / "speech_en_16k_3s.wav"))
    chinese, _ = load_audio(str(MEDIA / "speech_zh_48k_stereo_3s.wav"), sample_rate=rate)
    silence = np.zeros(2 * turn, np.float32)
    voices = [np.concatenate([english[0, :turn], silence]),
              np.concatenate([silence, chinese.mean(axis=0)[6 * 640: 6 * 640 + turn]])]
    picture = two_faces()
    background = None
    for index, voice in enumerate(voices):
        face = nodes["SadTalkerFaceCrop"]().prepare(node_model, picture, "full", "256", "dlib", index)[0]
        face = dataclasses.replace(face, crop=cv2.resize(face.crop, (128, 128), interpolation=cv2.INTER_AREA), size=128)
        audio = {"waveform": torch.from_numpy(voice)[None, None], "sample_rate": rate}
        coeffs = nodes["SadTalkerAudioToCoefficients"]().predict(node_model, face, audio, 0, index, False, False, None,
                                                                 None, 0.0, 0.0)["result"][0]
        background = nodes["SadTalkerRender"]().render(node_model, face, coeffs, 1.0, 4, True,
                                                       background=background)["result"][0]
    frames = (background * 255).round().to(torch.uint8).numpy()
    assert frames.shape == (36, 896, 1024, 3)

    boxes = mouth_boxes((picture[0] * 255).round().to(torch.uint8).numpy())
    assert len(boxes) == 2 and boxes[0][2] < 512 < boxes[1][0]            # one mouth in each half
    motion = region_motion(frames, boxes)
    loud = np.stack([loudness(v, rate, 36) for v in voices])
    table = correlations(motion, loud)
    # each mouth moves in its own turn and is still once only silence is in its window: A's up to a
    # rounding flip of a few pixels (the renderer's float noise); B's up to the seamless clone of its
    # paste, which takes its border from A's changing frames (A's crop box reaches into B's half)
    a_own, a_still = motion[0, 1:12].mean(), motion[0, 28:].max()
    b_own, b_other = motion[1, 24:].mean(), motion[1, 1:9].mean()
    assert a_own > 0.5 and a_still < 0.05, motion[0]
    assert b_own > 0.5 and b_other < 0.2 * b_own, motion[1]
    assert moves_in_own_turn(solo_motion(motion, loud)), solo_motion(motion, loud)
    # per-frame correlation is smeared by that window (a mouth still moves 15 frames after its voice):
    # seed-0 stand-in weights give A~A 0.21, A~B -0.50, B~A -0.45, B~B 0.70
    assert follows_own_voice(table) and table[0, 0] > 0 > table[0, 1] and table[1, 1] > 0 > table[1, 0], table
