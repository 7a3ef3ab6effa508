"""The accelerator path without an accelerator.

* Device mismatches: the renderer's networks on torch's ``meta`` device (shapes only, no data)
  are fed exactly what ``pipeline.render_frames`` feeds them on a GPU (CPU-built render inputs,
  the source moved to the model's device). Any tensor left on the CPU next to a device tensor
  raises there, as it would on CUDA, so a missing ``.to(device)`` cannot hide until a user with a
  GPU finds it.
* ``benchmarks/device_check.py``: its parity, table and exit-status logic, run on the CPU with
  tiny settings.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from conftest import PARITY_CASES
from sadtalker_models.render_data import build_render_inputs
from sadtalker_models.renderer import FaceRenderer

META = torch.device("meta")


@pytest.fixture(scope="module")
def meta_renderer(parity_models):
    """A FaceRenderer whose networks (copies of the stand-in ones) live on the meta device."""
    models = parity_models(0)
    kp = copy.deepcopy(models.nets.kp_detector).to(META)
    generator = copy.deepcopy(models.nets.generator).to(META)
    mapping_crop = copy.deepcopy(models.mapping("crop")).to(META)
    mapping_full = copy.deepcopy(models.mapping("full")).to(META)
    return kp, generator, {"crop": mapping_crop, "full": mapping_full}


def test_meta_networks_really_refuse_cpu_tensors():
    with pytest.raises(RuntimeError, match="device"):
        torch.nn.Linear(3, 3).to(META)(torch.zeros(1, 3))


@pytest.mark.parametrize("preprocess, cameras", [("crop", False), ("crop", True), ("full", False)])
def test_render_path_keeps_every_tensor_on_the_model_device(meta_renderer, preprocess, cameras):
    kp, generator, mappings = meta_renderer
    renderer = FaceRenderer(kp, generator, mappings[preprocess])
    assert renderer.device == META
    g = torch.Generator().manual_seed(0)
    source_coeff = torch.randn(1, 73, generator=g) * 0.1
    coeffs = torch.randn(5, 70, generator=g) * 0.1
    angles = dict(yaw=[0.0, 20.0, -10.0], pitch=[5.0], roll=[-5.0, 5.0]) if cameras else {}
    # what pipeline.render_frames does: inputs built on the CPU, source image and semantics moved
    inputs = build_render_inputs(source_coeff, coeffs, preprocess, False, 1.0, **angles)
    source = torch.rand(1, 3, 256, 256, generator=g)
    state = renderer.encode_source(source.to(renderer.device), inputs.source_semantics.to(renderer.device))
    batches = list(renderer.iter_frames(state, inputs, batch_size=2, out_device=None))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 256, 256), (2, 3, 256, 256), (1, 3, 256, 256)]
    assert all(b.device == META for b in batches)


# ----------------------------------------------------------------------------- device_check on the CPU


def _device_check():
    from benchmarks import device_check

    return device_check


def test_device_check_defaults_cover_what_a_gpu_machine_must_show():
    args = _device_check().build_parser().parse_args([])
    assert args.device == "cuda" and args.sizes == [256, 512] and args.batches == [1, 4, 16]
    assert args.precisions == ["fp32", "fp16"] and args.vram_frames == [250, 2500]


def test_device_check_runs_parity_on_the_cpu_and_prints_one_table(weights_dir, capsys):
    code = _device_check().main(["--device", "cpu", "--stages", "audio_features", "audio_to_coeff",
                                 "--skip", "precision", "speed", "stream", "--weights", str(weights_dir.parent)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("device check on cpu") == 1
    assert "| parity fp32 | audio_features.safetensors | pass" in out
    assert "| parity fp32 | audio_to_coeff.safetensors | pass" in out


def test_device_check_reports_a_failed_case_and_exits_1(weights_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    source = PARITY_CASES / "audio_to_coeff.safetensors"
    if not source.exists():
        pytest.skip(f"no audio_to_coeff case in {PARITY_CASES}")
    tensors = load_file(str(source))
    with safe_open(str(source), framework="pt") as handle:
        meta = handle.metadata()
    tensors["coeffs"] = tensors["coeffs"] + 0.01   # a wrong expectation the check must catch
    save_file(tensors, str(tmp_path / "audio_to_coeff.safetensors"), metadata=meta)
    shutil.copy(PARITY_CASES / "audio_features.safetensors", tmp_path)
    code = _device_check().main(["--device", "cpu", "--cases", str(tmp_path), "--skip", "precision", "speed",
                                 "stream", "--weights", str(weights_dir.parent)])
    out = capsys.readouterr().out
    assert code == 1
    assert "| parity fp32 | audio_to_coeff.safetensors | FAIL: coeffs max abs error" in out
    assert "| parity fp32 | audio_features.safetensors | pass" in out
