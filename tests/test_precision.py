"""The precision policy: reduced precision only where the device runs it fast, float32 elsewhere.

These tests never render a network in bf16/fp16 (on a CPU without native support that takes
~200x the fp32 time); they check which dtype each network gets and what the user is told.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

from conftest import CHECKPOINT_NAME, REPO
from sadtalker_models import pipeline, precision


@pytest.fixture
def cpu_without_native_half(monkeypatch):
    """Behave as on an AVX2-only CPU: no native bf16 or fp16."""
    monkeypatch.setattr(precision, "cpu_runs_natively", lambda dtype: dtype == torch.float32)


@pytest.fixture
def cpu_with_native_half(monkeypatch):
    """Behave as on a CPU with AVX-512-BF16/AMX: bf16 and fp16 run natively."""
    monkeypatch.setattr(precision, "cpu_runs_natively", lambda dtype: True)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_auto_picks_bf16_on_a_cpu_only_with_amx_tiles(cpu_with_native_half, monkeypatch):
    """Native bf16/fp16 without AMX (AVX-512-BF16/FP16 only) stays float32 under auto: fp16 there was
    measured slower than fp32; with AMX-BF16 tiles auto is bf16; CUDA is fp16 either way."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_dtype("auto", "cuda") == torch.float16
    assert precision.resolve_dtype("AUTO", torch.device("cuda:1")) == torch.float16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert precision.resolve_dtype("auto", "cuda") == torch.float16
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert precision.cpu_has_amx(torch.float16) and precision.auto_dtype("cpu") == torch.bfloat16


def test_auto_is_float32_on_an_avx2_only_cpu_and_follows_the_hardware_here():
    """In a process limited to AVX2 (the stand-in for an AVX2-only CPU) auto is float32 even where the
    chip has AMX; unlimited, auto is bf16 exactly when this CPU has AMX-BF16 tiles and oneDNN bf16."""
    code = ("import torch; from sadtalker_models.precision import resolve_dtype as r; print(r('auto', 'cpu'), "
            "torch.cpu._is_amx_tile_supported() and torch.ops.mkldnn._is_mkldnn_bf16_supported())")
    limited = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    for env, expect_amx in ((limited, False), (dict(os.environ), None)):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        dtype, amx = out.stdout.split()
        if expect_amx is False:
            assert dtype == "torch.float32"
        else:
            assert dtype == ("torch.bfloat16" if amx == "True" else "torch.float32")


@pytest.mark.parametrize("asked", ["bf16", "fp16", torch.bfloat16, torch.float16])
def test_slow_cpu_falls_back_to_fp32_with_one_warning(cpu_without_native_half, caplog, asked):
    with caplog.at_level(logging.WARNING, logger="sadtalker_models.precision"):
        got = precision.resolve_dtype(asked, "cpu")
    assert got == torch.float32
    messages = _warnings(caplog)
    assert len(messages) == 1, messages
    name = "bfloat16" if asked in ("bf16", torch.bfloat16) else "float16"
    assert name in messages[0] and "float32" in messages[0] and "native" in messages[0]


def test_reduced_precision_is_kept_where_it_is_fast(cpu_with_native_half, caplog):
    with caplog.at_level(logging.WARNING):
        assert precision.resolve_dtype("bf16", "cpu") == torch.bfloat16
        assert precision.resolve_dtype("fp16", "cpu") == torch.float16
        # GPUs are never second-guessed (this needs no GPU: only the device type is read)
        assert precision.resolve_dtype("bf16", "cuda") == torch.bfloat16
        assert precision.resolve_dtype(torch.float16, "cuda:0") == torch.float16
        assert precision.resolve_dtype("fp32", "cpu") == torch.float32
    assert _warnings(caplog) == []


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="fp32, fp16, bf16"):
        precision.resolve_dtype("fp8", "cpu")


def test_avx2_only_cpu_is_detected_as_not_native():
    """oneDNN limited to AVX2 (what an AVX2-only CPU has) reports neither bf16 nor fp16 support."""
    code = ("import torch; from sadtalker_models.precision import cpu_runs_natively as n; "
            "print(n(torch.bfloat16), n(torch.float16), n(torch.float32))")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]


@pytest.fixture(scope="module")
def bf16_models_on_native_cpu(weights_dir):
    """Models loaded with precision bf16 on a CPU that (as patched here) runs bf16 natively."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_runs_natively", lambda dtype: True)
        return pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="bf16", cache=None)


def test_only_the_generator_runs_in_reduced_precision(bf16_models_on_native_cpu):
    models = bf16_models_on_native_cpu
    assert models.dtype == torch.bfloat16
    assert {p.dtype for p in models.nets.generator.parameters()} == {torch.bfloat16}
    # head pose, expression and 3DMM paths stay float32 (they steer every frame)
    for net in (models.nets.kp_detector, models.nets.recon, models.nets.expnet, models.nets.posevae,
                models.mapping("crop"), models.mapping("full")):
        assert {p.dtype for p in net.parameters()} == {torch.float32}, type(net).__name__


def test_renderer_casts_inputs_to_the_generator_dtype(bf16_models_on_native_cpu, monkeypatch):
    """The keypoint path reads the source in float32; only the generator gets bf16 inputs.

    The generator's own convolutions are replaced by a recorder, so nothing runs in bf16 here.
    """
    from sadtalker_models.renderer import FaceRenderer

    models = bf16_models_on_native_cpu
    seen = {}
    monkeypatch.setattr(models.nets.generator, "encode_source",
                        lambda image, kp_source: seen.update(image=image.dtype, kp=kp_source.dtype))
    renderer = FaceRenderer(models.nets.kp_detector, models.nets.generator, models.mapping("crop"))
    assert renderer.dtype == torch.bfloat16
    state = renderer.encode_source(torch.rand(1, 3, 128, 128), torch.zeros(1, 70, 27))
    assert seen == {"image": torch.bfloat16, "kp": torch.float32}
    assert state.kp_canonical.dtype == state.kp_source.dtype == torch.float32
    assert renderer.driving_keypoints(state, torch.zeros(2, 70, 27)).dtype == torch.float32


def test_slow_cpu_loads_everything_in_fp32(cpu_without_native_half, weights_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="sadtalker_models.precision"):
        models = pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="bf16", cache=None)
    assert models.dtype == torch.float32
    assert {p.dtype for p in models.nets.generator.parameters()} == {torch.float32}
    assert len(_warnings(caplog)) == 1
