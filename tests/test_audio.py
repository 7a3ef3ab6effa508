"""Behaviour of the audio stage (sadtalker_models.audio) beyond the parity case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from conftest import MEDIA, PARITY_CASES
from sadtalker_models import audio


def _read_wav(name: str) -> tuple[int, np.ndarray]:
    sr, data = wavfile.read(str(MEDIA / name))
    return sr, data


def test_stereo_48k_resamples_to_expected_frame_count():
    sr, data = _read_wav("speech_zh_48k_stereo_3s.wav")
    assert sr == 48000 and data.ndim == 2
    n = data.shape[0]
    wav = audio.to_mono_16k(data.T, sr)
    assert wav.dtype == np.float32
    assert wav.shape == (math.ceil(n * 16000 / sr),)
    windows = audio.audio_to_mel_windows(data.T, sr)
    assert windows.shape == (wav.shape[0] // 640, 80, 16)
    assert windows.dtype == torch.float32
    assert float(windows.min()) >= -4 and float(windows.max()) <= 4


def test_comfy_layout_torch_equals_numpy_channels_first():
    sr, data = _read_wav("speech_zh_48k_stereo_3s.wav")
    as_numpy = audio.to_mono_16k(data.T.astype(np.float32) / 32768.0, sr)
    comfy = torch.from_numpy(data.T.astype(np.float32) / 32768.0)[None]  # (1, C, n)
    assert np.array_equal(audio.to_mono_16k(comfy, sr), as_numpy)
    # integer PCM is scaled like a sound-file reader would
    assert np.array_equal(audio.to_mono_16k(data.T, sr), as_numpy)


def test_resampled_sine_matches_native_16k_sine():
    t48 = np.arange(48000) / 48000.0
    t16 = np.arange(16000) / 16000.0
    x48 = (0.5 * np.sin(2 * np.pi * 440 * t48)).astype(np.float32)
    y = audio.to_mono_16k(x48, 48000)
    ref = 0.5 * np.sin(2 * np.pi * 440 * t16)
    assert y.shape == (16000,)
    assert np.abs(y[200:-200] - ref[200:-200]).max() < 1e-3


def test_16k_file_matches_parity_windows():
    """The file the parity case was made from gives the case's windows through the one-call path."""
    from safetensors.torch import load_file

    case = PARITY_CASES / "audio_features.safetensors"
    if not case.exists():
        pytest.skip("no audio_features parity case")
    sr, data = _read_wav("speech_en_16k_3s.wav")
    expected = load_file(str(case))["indiv_mels"]
    got = audio.audio_to_mel_windows(data, sr)
    if got.shape != expected.shape:
        pytest.skip("the parity case was made from another clip")
    assert (got - expected).abs().max().item() <= 1e-3


def test_silent_audio_hits_the_floor():
    windows = audio.audio_to_mel_windows(np.zeros(16000, dtype=np.float32), 16000)
    assert windows.shape == (25, 80, 16)
    assert torch.all(windows == -4.0)


def test_mel_frame_count_and_window_starts():
    for t in (1, 2, 7, 75):
        mel = audio.mel_spectrogram(np.zeros(640 * t, dtype=np.float32))
        assert mel.shape == (math.floor(3.2 * t) + 1, 80)
    assert audio.window_starts(8).tolist() == [-6, -3, 0, 3, 6, 9, 12, 16]


def test_windows_clamp_to_the_mel_edges():
    mel = np.arange(5 * 80, dtype=np.float64).reshape(5, 80)
    w = audio.mel_windows(mel, 2)
    assert w.shape == (2, 80, 16)
    # frame 0 starts at row -6: rows 0..9 clamp to [0, 4]
    assert w[0, 0].tolist() == [0.0] * 7 + [80.0, 160.0, 240.0] + [320.0] * 6


def test_shortest_valid_clip_is_one_frame():
    assert audio.audio_to_mel_windows(np.full(640, 0.1, dtype=np.float32), 16000).shape == (1, 80, 16)


@pytest.mark.parametrize(
    ("waveform", "sr", "message"),
    [
        (np.zeros(0, dtype=np.float32), 16000, "empty"),
        (np.zeros((2, 0), dtype=np.float32), 16000, "empty"),
        (np.zeros(639, dtype=np.float32), 16000, "too short"),
        (np.zeros(1900, dtype=np.float32), 48000, "too short"),
        (np.array([0.0, np.nan] * 800, dtype=np.float32), 16000, "NaN"),
        (np.array([0.0, np.inf] * 800, dtype=np.float32), 16000, "infinite"),
        (np.zeros(16000, dtype=np.float32), 0, "sample rate"),
        (np.zeros(16000, dtype=np.float32), -8000, "sample rate"),
        (np.zeros(16000, dtype=np.float32), float("nan"), "sample rate"),
        (np.zeros((1, 1, 1, 16000), dtype=np.float32), 16000, "shape"),
        (np.zeros((2, 1, 16000), dtype=np.float32), 16000, "batch"),
        (np.zeros((16000, 2), dtype=np.float32), 16000, "transpose"),
        ([0.0] * 16000, 16000, "tensor"),
    ],
)
def test_bad_audio_gives_clear_value_error(waveform, sr, message):
    with pytest.raises(ValueError, match=message):
        audio.audio_to_mel_windows(waveform, sr)
