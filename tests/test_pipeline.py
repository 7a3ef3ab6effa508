"""The high-level pipeline (shared by nodes and CLI): reduced precision keeps the head-pose path in float32."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME, MEDIA
from sadtalker_models import pipeline
from sadtalker_models.precision import cpu_runs_natively


@pytest.fixture(scope="module")
def face_and_coeffs(weights_dir):
    models = pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="fp32", cache=None)
    image = cv2.cvtColor(cv2.imread(str(MEDIA / "art_0.png")), cv2.COLOR_BGR2RGB)
    face = pipeline.prepare_face(models, image, preprocess="crop", landmark_backend="dlib")
    wave = torch.sin(torch.arange(1920) / 7.0)[None] * 0.3  # 0.12 s at 16 kHz -> 3 frames
    coeffs = pipeline.audio_to_coefficients(models, face, wave, 16000, seed=1)
    return models, face, coeffs


@pytest.mark.skipif(not cpu_runs_natively(torch.bfloat16),
                    reason="this CPU has no native bf16 (oneDNN): a bf16 render would take ~200x the fp32 time; "
                           "the precision policy itself is tested in test_precision.py")
def test_bf16_renders_generator_only_in_bf16(weights_dir, face_and_coeffs):
    fp32_models, face, coeffs = face_and_coeffs
    models = pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="bf16", cache=None)
    assert models.dtype == torch.bfloat16
    assert next(models.nets.generator.parameters()).dtype == torch.bfloat16
    assert models.nets.kp_detector.kp.weight.dtype == torch.float32
    assert models.mapping("crop").fc_t.weight.dtype == torch.float32
    assert models.nets.expnet.mapping1.weight.dtype == torch.float32

    low = np.concatenate(list(pipeline.render_frames(models, face, coeffs, batch_size=3)))
    ref = np.concatenate(list(pipeline.render_frames(fp32_models, face, coeffs, batch_size=3)))
    width, height = pipeline.output_size(face)  # crop modes keep the crop's aspect ratio
    assert low.shape == ref.shape == (coeffs.num_frames, height, width, 3) and low.dtype == np.uint8
    diff = np.abs(low.astype(np.int16) - ref.astype(np.int16))
    # bf16 keeps 8 mantissa bits: a few grey levels on average, never a different picture
    assert diff.mean() < 6.0, diff.mean()
