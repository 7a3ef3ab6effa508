"""CLI flags of issue 11: --face-index / --face-mask, --idle, --head-motion-scale, --blink-rate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from conftest import MEDIA

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sadtalker_models", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_help_lists_the_new_flags():
    out = cli("run", "--help").stdout
    for flag in ("--face-index", "--face-mask", "--idle", "--head-motion-scale", "--blink-rate"):
        assert flag in out


def test_out_of_range_face_index_says_how_many_faces_were_found(weights_dir, tmp_path):
    proc = cli("--image", str(MEDIA / "art_0.png"), "--idle", "0.08", "--out", str(tmp_path / "x.mp4"),
               "--models-dir", str(weights_dir), "--device", "cpu", "--landmark-backend", "dlib",
               "--face-index", "3")
    assert proc.returncode == 1
    assert "Face index 3 is out of range: 1 face(s) were found" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_mask_without_a_face_is_a_readable_error(weights_dir, tmp_path):
    mask = np.zeros((896, 640), np.uint8)
    mask[:40, :40] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    proc = cli("--image", str(MEDIA / "art_0.png"), "--idle", "0.08", "--out", str(tmp_path / "x.mp4"),
               "--models-dir", str(weights_dir), "--device", "cpu", "--landmark-backend", "dlib",
               "--face-mask", str(tmp_path / "mask.png"))
    assert proc.returncode == 1
    assert "None of the 1 face(s) found in the source image lies inside the mask" in proc.stderr


def test_idle_and_audio_are_exclusive(tmp_path):
    proc = cli("--image", str(MEDIA / "art_0.png"), "--idle", "1", "--audio", str(MEDIA / "speech_en_16k_3s.wav"))
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_idle_clip_from_the_cli_is_silent_and_that_long(weights_dir, tmp_path):
    from sadtalker_models.video import load_audio, probe, read_video

    out = tmp_path / "idle.mp4"
    proc = cli("--image", str(MEDIA / "art_0.png"), "--idle", "0.04", "--out", str(out), "--models-dir",
               str(weights_dir), "--device", "cpu", "--landmark-backend", "dlib", "--head-motion-scale", "0.5",
               "--blink-rate", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(read_video(out)[0])) == 1 and len(probe(out).audio) == 1
    samples, rate = load_audio(out)
    assert abs(samples.shape[1] / rate - 0.04) < 0.005 and np.abs(samples).max() == 0
