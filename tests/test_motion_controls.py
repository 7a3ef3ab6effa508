"""Head-motion scale, blink rate and idle clips (issue 11): library functions and the pipeline.

The pipeline tests run ExpNet/PoseVAE with stand-in weights on the real speech clip and the real
portrait; no frame is rendered here.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME, MEDIA
from sadtalker_models import pipeline
from sadtalker_models.coefficients import BLINK_PULSE, blink_schedule, make_generator
from sadtalker_models.motion import blink_ratio_at_rate, count_blinks, scale_head_motion


@pytest.fixture(scope="module")
def models(weights_dir):
    return pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="fp32", cache=None)


@pytest.fixture(scope="module")
def face(models):
    image = cv2.cvtColor(cv2.imread(str(MEDIA / "art_0.png")), cv2.COLOR_BGR2RGB)
    return pipeline.prepare_face(models, image, preprocess="crop", landmark_backend="dlib")


@pytest.fixture(scope="module")
def speech():
    from sadtalker_models.video import load_audio

    wave, rate = load_audio(str(MEDIA / "speech_en_16k_3s.wav"))  # (C, n) float32, rate
    return wave[:, : int(1.2 * rate)], rate                         # 30 frames keep the networks quick


# --------------------------------------------------------------------------- head-motion scale


def test_head_motion_scale_known_values():
    src = torch.zeros(1, 73)
    src[0, 64:70] = torch.tensor([0.1, -0.2, 0.05, 1.0, 2.0, 3.0])
    coeffs = torch.randn(5, 70, generator=torch.Generator().manual_seed(0))
    still = scale_head_motion(coeffs, src, 0.0)
    assert torch.equal(still[:, :64], coeffs[:, :64])          # expression untouched
    assert torch.allclose(still[:, 64:70], src[:, 64:70].expand(5, -1))
    double = scale_head_motion(coeffs, src, 2.0)
    assert torch.allclose(double[:, 64:70] - src[:, 64:70], 2 * (coeffs[:, 64:70] - src[:, 64:70]), atol=1e-6)
    assert torch.equal(scale_head_motion(coeffs, src, 1.0), coeffs)
    with pytest.raises(ValueError, match="head-motion scale must be a number >= 0"):
        scale_head_motion(coeffs, src, -1.0)
    with pytest.raises(ValueError, match="head-motion scale"):
        scale_head_motion(coeffs, src, float("nan"))


def test_pipeline_head_motion_scale(models, face, speech):
    wave, rate = speech
    base = pipeline.audio_to_coefficients(models, face, wave, rate, seed=5)
    still = pipeline.audio_to_coefficients(models, face, wave, rate, seed=5, head_motion_scale=0.0)
    lively = pipeline.audio_to_coefficients(models, face, wave, rate, seed=5, head_motion_scale=2.0)
    src_pose = face.coeff_3dmm[:, 64:70]
    motion = base.coeffs[:, 64:70] - src_pose
    assert motion.abs().max() > 1e-3                       # the stand-in PoseVAE does move the head
    assert torch.allclose(still.coeffs[:, 64:70], src_pose.expand_as(motion), atol=1e-6)
    assert torch.allclose(lively.coeffs[:, 64:70] - src_pose, 2 * motion, atol=1e-5)
    assert torch.equal(still.coeffs[:, :64], base.coeffs[:, :64])   # lips do not depend on it
    # the curves the web widget draws show it: yaw is flat at the source yaw, or swings twice as far
    deg = 180 / math.pi
    flat = still.curves()["yaw"]
    assert max(flat) - min(flat) < 1e-4 and abs(flat[0] - float(src_pose[0, 1]) * deg) < 1e-3
    swing = np.ptp(lively.curves()["yaw"]) / np.ptp(base.curves()["yaw"])
    assert abs(swing - 2.0) < 1e-3
    assert lively.info["head_motion_scale"] == 2.0


# --------------------------------------------------------------------------- blinks


def test_blink_rate_gives_that_many_blinks_per_minute():
    one_minute = 60 * 25
    for rate in (6, 12, 20, 40):
        ratio = blink_ratio_at_rate(one_minute, rate, 3)
        assert abs(count_blinks(ratio) - rate) <= max(1, rate // 10), (rate, count_blinks(ratio))
    ratio = blink_ratio_at_rate(10 * one_minute, 15, 1)
    assert abs(count_blinks(ratio) / 10 - 15) < 1.0
    # every blink is the natural 5-frame pulse
    r = ratio.reshape(-1)
    starts = torch.nonzero((r[1:] > 0) & (r[:-1] == 0)).reshape(-1) + 1
    for s in starts[:5].tolist():
        assert torch.equal(r[s:s + 5], torch.tensor(BLINK_PULSE))
        assert r[s + 5] == 0
    # seeded: the same seed gives the same schedule, another seed another one
    assert torch.equal(blink_ratio_at_rate(500, 20, 7), blink_ratio_at_rate(500, 20, 7))
    assert not torch.equal(blink_ratio_at_rate(500, 20, 7), blink_ratio_at_rate(500, 20, 8))
    assert count_blinks(blink_ratio_at_rate(500, 0, 7)) == 0
    with pytest.raises(ValueError, match="between 0 and 120 blinks per minute"):
        blink_ratio_at_rate(100, 500)


def test_natural_blinks_are_about_34_per_minute():
    # the tooltip's figure: gaps uniform over 10..69 frames plus a 5-frame pulse
    rates = [count_blinks(blink_schedule(60 * 25, seed)) for seed in range(20)]
    assert 31 <= np.mean(rates) <= 37, np.mean(rates)


def test_pipeline_blink_off_natural_and_rate(models, face, speech):
    wave, rate = speech
    off = pipeline.audio_to_coefficients(models, face, wave, rate, seed=2, blink=False)
    natural = pipeline.audio_to_coefficients(models, face, wave, rate, seed=2)
    fast = pipeline.audio_to_coefficients(models, face, wave, rate, seed=2, blinks_per_minute=100)
    t = off.num_frames
    assert count_blinks(off.blink) == 0
    assert torch.equal(natural.blink, blink_schedule(t, make_generator(2)).reshape(-1))
    assert torch.equal(fast.blink, blink_ratio_at_rate(t, 100, make_generator(2)).reshape(-1))
    assert abs(count_blinks(fast.blink) - 100 * t / 1500) <= 1
    # ExpNet sees the ratio: expression changes on blink frames only when blinking
    closed = fast.blink > 0
    diff = (fast.coeffs[:, :64] - off.coeffs[:, :64]).abs().amax(dim=1)
    assert diff[closed].min() > 1e-4 and diff[~closed].max() < 1e-6
    curves = fast.curves()
    assert curves["blink"] == fast.blink.tolist()


# --------------------------------------------------------------------------- idle


def test_idle_clip_is_silent_seeded_and_keeps_the_mouth_still(models, face):
    idle = pipeline.idle_coefficients(models, face, 2.0, seed=11)
    again = pipeline.idle_coefficients(models, face, 2.0, seed=11)
    other = pipeline.idle_coefficients(models, face, 2.0, seed=12)
    assert idle.num_frames == 50 and idle.source == "idle"
    assert torch.equal(idle.coeffs, again.coeffs) and torch.equal(idle.blink, again.blink)
    assert not torch.equal(idle.coeffs, other.coeffs)
    # silence in, silence out, exactly as long as the clip
    wave, rate = idle.audio
    assert abs(wave).max() == 0 and wave.shape[-1] == 2 * rate
    # blinks (the natural schedule always has one in 2 s)
    assert count_blinks(idle.blink) >= 1
    # the mouth does not move: on open-eye frames every expression row is the same
    exp = idle.coeffs[:, :64]
    open_eyes = idle.blink == 0
    assert (exp[open_eyes] - exp[open_eyes][0]).abs().max() < 1e-5
    assert (exp[~open_eyes] - exp[open_eyes][0]).abs().max() > 1e-4   # the blinks do show
    # slight head motion, scaled like speech-driven motion
    pose = idle.coeffs[:, 64:70] - face.coeff_3dmm[:, 64:70]
    assert pose.abs().max() > 1e-4
    calm = pipeline.idle_coefficients(models, face, 2.0, seed=11, head_motion_scale=0.5)
    assert torch.allclose(calm.coeffs[:, 64:70] - face.coeff_3dmm[:, 64:70], 0.5 * pose, atol=1e-5)
    with pytest.raises(ValueError, match="idle length must be between one frame"):
        pipeline.idle_coefficients(models, face, 0.0)
