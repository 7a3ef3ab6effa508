"""Behaviour of the 3DMM extraction stage (sadtalker_models.face3dmm) beyond the parity case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import PARITY_CASES
from sadtalker_models import face3dmm as F
from sadtalker_models.networks.recon_net import ReconNet


@pytest.fixture(scope="module")
def recon():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = ReconNet().eval()
    return net


@pytest.fixture(scope="module")
def parity_face():
    from safetensors.torch import load_file

    path = PARITY_CASES / "extract_3dmm.safetensors"
    if not path.exists():
        pytest.skip("no extract_3dmm parity case")
    t = load_file(str(path))
    return t["image"].numpy(), t["lm68"].numpy()


def _image(size: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_missing_landmarks_use_the_standard_points():
    al = F.align_to_224(_image(), np.full((68, 2), -1.0, dtype=np.float32))
    # the synthetic points are an exact affine image of the standard points: k = [128,0,0,128, 0,128,0,128]
    assert np.allclose(al.trans_params, [256, 256, 102 / 128, 128, 128], atol=1e-5)
    assert al.aligned224.shape == (224, 224, 3) and al.aligned224.dtype == np.uint8
    assert np.array_equal(al.lm3d_std, F.LM3D_STD)


def test_five_point_reduction_flips_y():
    lm = np.zeros((68, 2), dtype=np.float32)
    lm[36], lm[39], lm[42], lm[45] = (10, 20), (20, 22), (40, 20), (50, 22)
    lm[30], lm[48], lm[54] = (30, 40), (15, 60), (45, 60)
    p = F.five_points(lm, 100)
    assert p.dtype == np.float32
    assert p.tolist() == [[15, 78], [45, 78], [30, 59], [15, 39], [45, 39]]


def test_alignment_is_translation_equivariant_in_the_fit(parity_face):
    image, lm = parity_face
    a = F.align_to_224(image, lm)
    assert a.aligned224.shape == (224, 224, 3)
    # the parity image's face fills the aligned crop: not mostly black
    assert (a.aligned224.sum(axis=2) > 0).mean() > 0.5
    shifted = F.align_to_224(image, lm + np.float32([3, 0]))
    assert np.isclose(shifted.trans_params[3], a.trans_params[3] + 3, atol=1e-3)
    assert np.isclose(shifted.trans_params[2], a.trans_params[2], rtol=1e-5)


def test_alpha_channel_is_dropped(parity_face):
    image, lm = parity_face
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(F.align_to_224(rgba, lm).aligned224, F.align_to_224(image, lm).aligned224)


def test_network_input_is_a_true_division():
    x = F.to_network_input(np.array([[[0, 1, 255]]], dtype=np.uint8))
    assert x.shape == (1, 3, 1, 1) and x.dtype == torch.float32
    assert x.flatten().tolist() == [0.0, float(np.float32(1 / 255)), 1.0]


def test_coeff_3dmm_columns():
    full = torch.arange(257, dtype=torch.float32)[None]
    coeff = F.coeff_3dmm_from_full(full, np.array([256, 256, 0.5, 10, 20], dtype=np.float32))
    assert coeff.shape == (1, 73)
    assert coeff[0, :64].tolist() == list(range(80, 144))
    assert coeff[0, 64:70].tolist() == [224, 225, 226, 254, 255, 256]
    assert coeff[0, 70:].tolist() == [0.5, 10, 20]


def test_batched_extraction_matches_single(recon, parity_face):
    image, lm = parity_face
    frames = [image, image[:, ::-1].copy()]
    lms = [lm, np.full((68, 2), -1.0, dtype=np.float32)]
    alignments = [F.align_to_224(f, lm) for f, lm in zip(frames, lms)]
    batched = F.extract_coeff_3dmm_batch(recon, alignments, batch_size=2)[1]
    assert batched.shape == (2, 73)
    for i in range(2):
        full, single = F.extract_coeff_3dmm(recon, frames[i], lms[i])
        assert full.shape == (1, 257)
        assert torch.allclose(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("image", "lm", "message"),
    [
        (np.zeros((64, 64), np.uint8), np.zeros((68, 2)), "RGB"),
        (np.zeros((64, 64, 3), np.float32), np.zeros((68, 2)), "uint8"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((5, 2)), r"\(68, 2\)"),
        (np.zeros((64, 64, 3), np.uint8), np.full((68, 2), np.nan), "NaN"),
        (np.zeros((64, 64, 3), np.uint8), np.full((68, 2), 7.0), "too small|degenerate"),
    ],
)
def test_bad_inputs_give_clear_errors(image, lm, message):
    with pytest.raises(ValueError, match=message):
        F.align_to_224(image, lm)


def test_tiny_face_is_rejected():
    lm = np.full((68, 2), 50.0, dtype=np.float32)
    lm[36], lm[39], lm[42], lm[45] = (50, 50), (50.001, 50), (50.002, 50), (50.003, 50)
    lm[30], lm[48], lm[54] = (50.0015, 50.001), (50.001, 50.002), (50.002, 50.002)
    with pytest.raises(ValueError, match="too small"):
        F.align_to_224(np.zeros((64, 64, 3), np.uint8), lm)

