"""The coefficient file (sadtalker_models/coefficient_files.py): round trip, files of earlier versions,
and the CLI's --save-coefficients / --coefficients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MEDIA

from sadtalker_models.coefficient_files import is_coefficient_file, load_coefficients, save_coefficients
from sadtalker_models.pipeline import Audio, Coefficients

OLD_FILE = Path(__file__).parent / "data" / "coefficients" / "saved_before_the_move.safetensors"


def test_round_trip_keeps_every_field(tmp_path):
    gen = torch.Generator().manual_seed(0)
    coeffs = Coefficients(coeffs=torch.randn(5, 70, generator=gen), fps=25.0, still=True,
                          audio=Audio(torch.randn(2, 3200, generator=gen).numpy(), 16000),
                          blink=torch.rand(5, generator=gen), source="idle", info={"seed": 3, "idle_seconds": 0.2},
                          source_pose=torch.tensor([0.1, 0.2, -0.3]), source_expression=torch.linspace(-1, 1, 64))
    path = tmp_path / "sub" / "c.safetensors"
    save_coefficients(coeffs, path)
    assert is_coefficient_file(path) and not (tmp_path / "sub" / "c.safetensors.part").exists()
    back = load_coefficients(path)
    assert torch.equal(back.coeffs, coeffs.coeffs) and torch.equal(back.blink, coeffs.blink)
    assert torch.equal(back.source_pose, coeffs.source_pose)
    assert torch.equal(back.source_expression, coeffs.source_expression)      # the expression curve survives
    assert back.curves()["expression"] == coeffs.curves()["expression"]
    assert np.array_equal(back.audio.waveform, coeffs.audio.waveform) and back.audio.sample_rate == 16000
    assert (back.fps, back.still, back.source, back.info) == (25.0, True, "idle", {"seed": 3, "idle_seconds": 0.2})


def test_a_file_saved_before_the_move_loads_with_its_values():
    old = load_coefficients(OLD_FILE)
    assert torch.equal(old.coeffs, torch.arange(210, dtype=torch.float32).reshape(3, 70) / 1000)
    assert torch.equal(old.blink, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.equal(old.source_pose, torch.tensor([0.1, -0.2, 0.3]))
    assert np.array_equal(old.audio.waveform, (np.arange(1920, dtype=np.float32) / 1920).reshape(1, 1920))
    assert (old.audio.sample_rate, old.fps, old.still, old.info) == (16000, 25.0, True, {"pose_style": 3, "seed": 7})


def test_other_files_are_refused_with_a_hint(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    assert not is_coefficient_file(other) and not is_coefficient_file(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="not a SadTalker coefficient file.*--save-coefficients"):
        load_coefficients(other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="Could not read coefficient file broken.safetensors"):
        load_coefficients(broken)


def test_cli_renders_a_saved_coefficient_file(weights_dir, tmp_path):
    """--coefficients renders exactly the file's frames with its audio; --save-coefficients writes what
    was rendered (one CLI run: each run loads the models and renders, seconds per frame here)."""
    from test_cli import cli

    from sadtalker_models.video import load_audio, probe, read_video

    speech = (np.sin(np.arange(1280) * 0.05) * 0.5).astype(np.float32)[None]
    two = Coefficients(coeffs=torch.randn(2, 70, generator=torch.Generator().manual_seed(1)) * 0.05,
                       audio=Audio(speech, 16000), info={"made": "by the test"})
    save_coefficients(two, tmp_path / "two.safetensors")
    out, copy = tmp_path / "b.mp4", tmp_path / "copy.safetensors"
    proc = cli("--image", str(MEDIA / "art_0.png"), "--models-dir", str(weights_dir), "--device", "cpu",
               "--landmark-backend", "dlib", "--coefficients", str(tmp_path / "two.safetensors"),
               "--save-coefficients", str(copy), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames, _ = read_video(out)
    assert len(list(frames)) == 2 and len(probe(out).audio) == 1
    samples, rate = load_audio(out)
    assert samples.shape[1] == pytest.approx(2 * rate / 25, abs=rate * 0.005) and np.abs(samples).max() > 0.1
    again = load_coefficients(copy)
    assert torch.equal(again.coeffs, two.coeffs) and np.array_equal(again.audio.waveform, speech)
    assert again.info == {"made": "by the test"}


def test_cli_coefficients_and_audio_are_exclusive(tmp_path):
    from test_cli import cli

    proc = cli("--image", str(MEDIA / "art_0.png"), "--audio", str(MEDIA / "speech_en_16k_3s.wav"),
               "--coefficients", str(OLD_FILE), "--out", str(tmp_path / "x.mp4"))
    assert proc.returncode != 0 and "not allowed with argument" in proc.stderr
