"""``python -m sadtalker_models``: a playable mp4 with an audio stream of the right length."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import MEDIA

from sadtalker_models.video import load_audio, probe, read_video

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sadtalker_models", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def short_wav(path: Path, seconds: float, rate: int = 44100, channels: int = 2) -> Path:
    """A clip of the shared speech, resampled crudely to ``rate`` and made stereo (the CLI must cope)."""
    with wave.open(str(MEDIA / "speech_en_16k_3s.wav")) as fh:
        src_rate = fh.getframerate()
        data = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").reshape(-1, fh.getnchannels())[:, 0]
    n = int(round(seconds * rate))
    idx = np.minimum((np.arange(n) * src_rate / rate).astype(int), len(data) - 1)
    mono = data[idx]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(mono[:, None], channels, axis=1).astype("<i2").tobytes())
    return path


def test_cli_writes_mp4_with_audio_of_the_video_length(weights_dir, tmp_path):
    audio = short_wav(tmp_path / "speech.wav", 0.09)           # 2 frames at 25 fps
    out = tmp_path / "talking.mp4"
    proc = cli("--image", str(MEDIA / "art_0.png"), "--audio", str(audio), "--out", str(out),
               "--models-dir", str(weights_dir), "--device", "cpu", "--landmark-backend", "dlib",
               "--seed", "1", "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file()
    info = probe(out)
    assert len(info.video) == 1 and "h264" in info.video[0]
    assert len(info.audio) == 1
    assert info.width == 256 and info.height % 2 == 0
    frames, fps = read_video(out)
    assert len(list(frames)) == 2 and fps == pytest.approx(25.0)
    samples, rate = load_audio(out)
    assert rate == 44100
    assert samples.shape[1] / rate == pytest.approx(2 / 25, abs=0.005)
    assert info.duration == pytest.approx(2 / 25, abs=0.03)


def test_cli_reports_a_missing_checkpoint_readably(tmp_path):
    audio = short_wav(tmp_path / "speech.wav", 0.09)
    proc = cli("--image", str(MEDIA / "art_0.png"), "--audio", str(audio), "--out", str(tmp_path / "x.mp4"),
               "--models-dir", str(tmp_path / "empty"), timeout=120)
    assert proc.returncode == 1
    assert "SadTalker_V0.0.2_256.safetensors" in proc.stderr and "download" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_reports_a_missing_image_readably(tmp_path):
    proc = cli("--image", str(tmp_path / "nope.png"), "--audio", str(tmp_path / "nope.wav"), timeout=120)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_help_lists_the_main_options():
    proc = cli("run", "--help", timeout=120)
    assert proc.returncode == 0
    for flag in ("--image", "--audio", "--preprocess", "--size", "--still", "--pose-style", "--seed", "--enhancer",
                 "--ref-video", "--yaw", "--batch-size", "--device", "--precision", "--models-dir",
                 "--landmark-backend"):
        assert flag in proc.stdout
