"""Reference video -> per-frame coeff_3dmm (N, 73): the real clip, faceless frames, bad videos."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from conftest import MEDIA

from sadtalker_models.face.reference_video import (
    REFERENCE_SIZE,
    reference_coefficients,
    reference_coefficients_with_stats,
)

from sadtalker_models.video import read_video

VIDEO = MEDIA / "ref_pose_blink_3s.mp4"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    out = list(read_video(VIDEO)[0])
    assert out, "the test video decoded to no frames"
    return out


@pytest.fixture(scope="module")
def crop_result(frames, detector, recon):
    return reference_coefficients_with_stats(frames, detector, recon, mode="crop")


def test_one_row_per_frame(frames, crop_result):
    assert len(frames) == 75  # 3 s at 25 fps
    assert frames[0].shape == (512, 512, 3) and frames[0].dtype == np.uint8
    coeff = crop_result.coeff_3dmm
    assert coeff.shape == (len(frames), 73) and coeff.dtype == torch.float32
    assert torch.isfinite(coeff).all()
    stats = crop_result.stats
    assert stats.frames == len(frames)
    assert stats.detected + stats.reused_previous + stats.fallback == len(frames)
    assert stats.detected >= len(frames) - 2
    assert stats.box_frame == 0


def test_matches_per_frame_extraction(frames, detector, recon, crop_result):
    """Frame k: cut with frame 0's box, resized to 256, landmarks re-detected, 3DMM extracted."""
    from sadtalker_models.face.crop import apply_crop, make_crop_info
    from sadtalker_models.face3dmm import extract_coeff_3dmm

    info = make_crop_info(detector.detect(frames[0]), (512, 512), "crop")
    assert info == crop_result.crop_info
    for k in (0, 37, 74):
        crop = cv2.resize(apply_crop(frames[k], info), (REFERENCE_SIZE, REFERENCE_SIZE), interpolation=cv2.INTER_LINEAR)
        _, coeff = extract_coeff_3dmm(recon, crop, detector.detect(crop))
        torch.testing.assert_close(crop_result.coeff_3dmm[k : k + 1], coeff, atol=1e-5, rtol=1e-5)


def test_plain_function_and_comfy_batch(frames, detector, recon, crop_result):
    """A ComfyUI IMAGE batch (B, H, W, 3) float 0..1 tensor works frame by frame."""
    batch = torch.from_numpy(np.stack(frames[:6])).float() / 255.0
    coeff = reference_coefficients(batch, detector, recon, mode="crop")
    assert coeff.shape == (6, 73)
    # same box (from frame 0) and same pixels -> same coefficients as the uint8 path
    torch.testing.assert_close(coeff, crop_result.coeff_3dmm[:6], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["extcrop", "resize", "full"])
def test_other_modes(frames, detector, recon, mode):
    res = reference_coefficients_with_stats(frames[:4], detector, recon, mode=mode)
    assert res.coeff_3dmm.shape == (4, 73)
    assert res.crop_info.mode == mode


def test_faceless_frames_reuse_previous_landmarks(frames, detector, recon, crop_result, caplog):
    blank = np.full_like(frames[0], 127)
    seq = [frames[0], frames[1], blank, blank, frames[4]]
    caplog.set_level(logging.WARNING, logger="sadtalker_models.face.reference_video")
    res = reference_coefficients_with_stats(seq, detector, recon, mode="crop")
    assert res.coeff_3dmm.shape == (5, 73)
    assert res.stats.reused_previous == 2 and res.stats.fallback == 0 and res.stats.detected == 3
    assert res.stats.without_face == 2
    assert "2 of 5 frames had no detectable face" in caplog.text
    # the blank frames were aligned with frame 1's landmarks: same alignment -> same s, tx, ty
    torch.testing.assert_close(res.coeff_3dmm[2, 70:], res.coeff_3dmm[1, 70:])
    torch.testing.assert_close(res.coeff_3dmm[3, 70:], res.coeff_3dmm[1, 70:])
    torch.testing.assert_close(res.coeff_3dmm[4], crop_result.coeff_3dmm[4], atol=1e-5, rtol=1e-5)


def test_leading_faceless_frames(frames, detector, recon, caplog):
    """No face in the first frames: the box comes from the first frame with one; earlier frames use
    the standard-point fallback."""
    blank = np.full_like(frames[0], 30)
    caplog.set_level(logging.WARNING, logger="sadtalker_models.face.reference_video")
    res = reference_coefficients_with_stats([blank, blank, frames[0], frames[1]], detector, recon, mode="crop")
    assert res.coeff_3dmm.shape == (4, 73)
    assert res.stats.box_frame == 2 and res.stats.fallback == 2 and res.stats.detected == 2
    assert "crop box comes from frame 2" in caplog.text


def test_video_without_faces(detector, recon):
    rng = np.random.default_rng(0)
    noise = [(rng.random((128, 160, 3)) * 255).astype(np.uint8) for _ in range(3)]
    with pytest.raises(ValueError, match="No face was found in any of the 3 frames"):
        reference_coefficients(noise, detector, recon)
    with pytest.raises(ValueError, match="No face was found in any of the 3 frames"):
        reference_coefficients(noise, detector, recon, mode="resize")


def test_empty_video_and_bad_frames(frames, detector, recon):
    with pytest.raises(ValueError, match="no frames"):
        reference_coefficients([], detector, recon)
    with pytest.raises(ValueError, match="same size"):
        reference_coefficients([frames[0], frames[1][:400]], detector, recon)
    with pytest.raises(ValueError, match="reference video frame 0"):
        reference_coefficients([np.zeros((1, 1, 3), np.uint8)], detector, recon)
