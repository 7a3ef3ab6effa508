"""Behaviour of the coefficient stages (blink, ExpNet/PoseVAE driving, smoothing, reference
sequences) and of the renderer input assembly, beyond the parity cases.

The networks here are freshly initialised (no checkpoint needed): these tests check plumbing,
shapes, determinism and edge cases, not numbers (the parity suite does that).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sadtalker_models import coefficients as C
from sadtalker_models import render_data as R
from sadtalker_models.networks.expnet import ExpNet
from sadtalker_models.networks.pose_vae import PoseVAE


@pytest.fixture(scope="module")
def nets():
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        expnet, posevae = ExpNet().eval(), PoseVAE().eval()
    return expnet, posevae


def _mels(t: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, t, 1, 80, 16, generator=g) * 8 - 4


def _source(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 73, generator=g) * 0.1


# ----------------------------------------------------------------------------- blink

def test_short_clips_have_no_blink_and_t21_does_not_crash():
    for t in (1, 5, 20, 21):
        ratio = C.blink_schedule(t, 0)
        assert ratio.shape == (1, t, 1)
        assert torch.all(ratio == 0)


def test_blink_is_deterministic_per_seed_and_varies_between_seeds():
    a = C.blink_schedule(300, torch.Generator().manual_seed(7))
    b = C.blink_schedule(300, 7)
    assert torch.equal(a, b)
    others = [C.blink_schedule(300, s) for s in range(8, 14)]
    assert any(not torch.equal(a, o) for o in others)


def test_blink_pulses_follow_the_schedule_rules():
    for seed in range(20):
        t = 40 + 17 * seed
        r = C.blink_schedule(t, seed)[0, :, 0].numpy()
        assert r[-1] == 0
        starts = [i for i in range(t) if r[i] == 0.5 and (i == 0 or r[i - 1] == 0)]
        assert starts, f"no blink for T={t}"
        prev_end = 0
        for s in starts:
            assert np.allclose(r[s : s + 5], [0.5, 0.9, 1.0, 0.9, 0.5])
            gap = s - prev_end
            assert 10 <= gap <= min(t // 2, 70) - 1
            prev_end = s + 5
        assert np.count_nonzero(r) == 5 * len(starts)


def test_randomness_never_touches_global_rngs(nets):
    torch_state = torch.get_rng_state()
    py_state = random.getstate()
    C.blink_schedule(200, 3)
    C.audio_to_coefficients(*nets, _mels(22), _source(), 0, generator=3)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert py_state == random.getstate()


# ----------------------------------------------------------------------------- chunks / smoothing

def test_pose_chunk_count():
    assert [C.num_pose_chunks(t) for t in (1, 2, 32, 33, 34, 65, 66, 75)] == [0, 1, 1, 1, 2, 2, 3, 3]


def test_savgol_window_rule():
    assert [C.savgol_window(t) for t in (1, 2, 3, 4, 11, 12, 13, 100)] == [0, 0, 3, 3, 11, 11, 13, 13]


def test_smoothing_short_sequences():
    p2 = torch.randn(1, 2, 6)
    assert torch.equal(C.smooth_pose(p2), p2)  # T <= 2: unchanged (the reference crashes)
    quad = torch.arange(5, dtype=torch.float32)[None, :, None].repeat(1, 1, 6) ** 2
    assert torch.allclose(C.smooth_pose(quad), quad, atol=1e-4)  # order-2 fit keeps a parabola


def test_tile_to_length():
    seq = torch.arange(3)[:, None].float()
    assert C.tile_to_length(seq, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert C.tile_to_length(seq, 2)[:, 0].tolist() == [0, 1]
    with pytest.raises(ValueError, match="empty"):
        C.tile_to_length(seq[:0], 4)


# ----------------------------------------------------------------------------- audio_to_coefficients

@pytest.mark.parametrize("t", [1, 2, 3, 21, 34])
def test_shapes_and_reference_frame(nets, t):
    src = _source()
    res = C.audio_to_coefficients(*nets, _mels(t), src, 5, generator=0)
    assert res.exp.shape == (1, t, 64)
    assert res.pose_raw.shape == res.pose_smooth.shape == (1, t, 6)
    assert res.coeffs.shape == (t, 70)
    assert res.z.shape == (C.num_pose_chunks(t), 1, 64)
    assert torch.allclose(res.pose_raw[0, 0], src[0, 64:70])  # frame 0: zero motion
    assert torch.equal(res.coeffs[:, :64], res.exp[0])


def test_coefficients_deterministic_per_seed(nets):
    mels, src = _mels(24), _source()
    a = C.audio_to_coefficients(*nets, mels, src, 0, generator=11)
    b = C.audio_to_coefficients(*nets, mels, src, 0, generator=torch.Generator().manual_seed(11))
    c = C.audio_to_coefficients(*nets, mels, src, 0, generator=12)
    assert torch.equal(a.coeffs, b.coeffs)
    assert not torch.equal(a.z, c.z)
    # the explicit z reproduces the drawn one
    d = C.audio_to_coefficients(*nets, mels, src, 0, blink_ratio=a.ratio, z=a.z)
    assert torch.equal(a.coeffs, d.coeffs)


def test_bad_arguments(nets):
    with pytest.raises(ValueError, match="z must be shaped"):
        C.audio_to_coefficients(*nets, _mels(34), _source(), 0, z=torch.zeros(1, 1, 64))
    with pytest.raises(ValueError, match="pose_style"):
        C.audio_to_coefficients(*nets, _mels(4), _source(), 46)
    with pytest.raises(ValueError, match="indiv_mels"):
        C.audio_to_coefficients(*nets, torch.zeros(1, 4, 80, 16), _source(), 0)
    with pytest.raises(ValueError, match="blink_ratio"):
        C.audio_to_coefficients(*nets, _mels(4), _source(), 0, blink_ratio=torch.zeros(1, 5, 1))
    with pytest.raises(ValueError, match="ref_pose"):
        C.audio_to_coefficients(*nets, _mels(4), _source(), 0, ref_pose=torch.zeros(3, 6))


def test_ref_eyeblink_replaces_expression_and_zeroes_ratio(nets):
    expnet, posevae = nets
    t, mels, src = 12, _mels(12), _source()
    g = torch.Generator().manual_seed(5)
    eyeblink = torch.randn(4, 73, generator=g)
    res = C.audio_to_coefficients(expnet, posevae, mels, src, 0, generator=1, ref_eyeblink=eyeblink)
    assert torch.all(res.ratio == 0)
    tiled = eyeblink[torch.arange(t) % 4, :64]
    with torch.inference_mode():
        direct = expnet(mels[0], tiled, torch.zeros(t, 1))
    assert torch.allclose(res.exp[0], direct, atol=1e-5)
    # the pose still starts from the source's, not the reference video's
    assert torch.allclose(res.pose_raw[0, 0], src[0, 64:70])


def test_ref_pose_adds_relative_motion_tiled(nets):
    t, mels, src = 20, _mels(20), _source()
    ref_pose = torch.zeros(7, 73)
    ref_pose[:, 64:70] = torch.arange(7, dtype=torch.float32)[:, None] * torch.linspace(0.1, 0.6, 6) + 3.0
    base = C.audio_to_coefficients(*nets, mels, src, 0, generator=2)
    moved = C.audio_to_coefficients(*nets, mels, src, 0, generator=2, ref_pose=ref_pose)
    rp = ref_pose[torch.arange(t) % 7, 64:70]
    assert torch.allclose(moved.coeffs[:, 64:70] - base.coeffs[:, 64:70], rp - rp[0], atol=1e-5)
    assert torch.equal(moved.coeffs[:, :64], base.coeffs[:, :64])


# ----------------------------------------------------------------------------- render_data

def test_camera_sequence_known_values():
    seq = R.camera_sequence([0, 20], 8)
    assert seq.dtype == torch.float32 and seq.shape == (8,)
    expected = [0, 20 / 7, 40 / 7, 60 / 7, 80 / 7, 100 / 7, 120 / 7, 120 / 7]
    assert torch.allclose(seq, torch.tensor(expected), atol=1e-5)
    assert abs(seq[1].item() - 2.857) < 1e-3 and abs(seq[-1].item() - 17.143) < 1e-3


def test_camera_sequence_edge_cases():
    assert R.camera_sequence([5], 4).tolist() == [5, 5, 5, 5]
    assert R.camera_sequence([20, 0], 5).tolist() == [20, 15, 10, 5, 5]
    assert R.camera_sequence([0, 20], 1).tolist() == [0]  # T = 1: no division by zero
    assert R.camera_sequence([3, 3], 4).tolist() == [3, 3, 3, 3]
    assert R.camera_sequence([0, 0, 10], 5).tolist() == [0, 2.5, 5, 7.5, 7.5]  # zero segment skipped
    assert R.camera_sequence([0, 10, 0], 5).tolist() == [0, 5, 10, 5, 5]
    with pytest.raises(ValueError, match="empty"):
        R.camera_sequence([], 5)


def test_render_inputs_crop_mode():
    src = torch.arange(73, dtype=torch.float32)[None] / 100
    coeffs = torch.arange(5 * 70, dtype=torch.float32).reshape(5, 70) / 7
    ri = R.build_render_inputs(src, coeffs, "crop", False, 2.0, yaw=[0, 10], pitch=None, roll=[])
    assert ri.source_semantics.shape == (1, 70, 27)
    assert torch.equal(ri.source_semantics[0, :, 0], src[0, :70])
    assert ri.target_semantics.shape == (5, 70, 27)
    assert torch.equal(ri.target_semantics[2, :64, 13], coeffs[2, :64] * 2)
    assert torch.equal(ri.target_semantics[2, 64:, 13], coeffs[2, 64:])  # pose not scaled
    assert torch.equal(ri.target_semantics[0, :, 0], ri.target_semantics[0, :, 13])  # clamped at start
    assert torch.equal(ri.target_semantics[4, :, 26], ri.target_semantics[4, :, 13])  # clamped at end
    assert torch.equal(ri.target_semantics[1, :, 14], ri.target_semantics[2, :, 13])
    assert ri.yaw is not None and ri.yaw.shape == (5,)
    assert ri.pitch is None and ri.roll is None


def test_render_inputs_full_still_mode():
    src = torch.arange(73, dtype=torch.float32)[None] / 100
    coeffs = torch.randn(3, 70)
    ri = R.build_render_inputs(src, coeffs, "extfull", True, 1.0)
    assert ri.source_semantics.shape == (1, 73, 27)
    assert ri.target_semantics.shape == (3, 73, 27)
    assert torch.equal(ri.target_semantics[:, 64:, 13], src[:, 64:].expand(3, -1))
    assert torch.equal(ri.target_semantics[:, :64, 13], coeffs[:, :64])
    full_moving = R.build_render_inputs(src, coeffs, "full", False, 1.0)
    assert torch.equal(full_moving.target_semantics[:, 64:70, 13], coeffs[:, 64:70])
    assert torch.equal(full_moving.target_semantics[:, 70:, 13], src[:, 70:].expand(3, -1))


def test_render_inputs_single_frame_and_errors():
    ri = R.build_render_inputs(torch.zeros(1, 73), torch.ones(1, 70), "crop", False, 1.0, yaw=[0, 30])
    assert ri.target_semantics.shape == (1, 70, 27) and ri.yaw.tolist() == [0]
    with pytest.raises(ValueError, match="coeffs"):
        R.build_render_inputs(torch.zeros(1, 73), torch.ones(0, 70), "crop")
    with pytest.raises(ValueError, match="source_coeff"):
        R.build_render_inputs(torch.zeros(1, 70), torch.ones(2, 70), "full")
