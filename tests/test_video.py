"""Video/audio I/O (imageio-ffmpeg) and the small pipeline helpers; no networks involved."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import MEDIA
import torch

from sadtalker_models import pipeline
from sadtalker_models.model_cache import ModelCache, make_key
from sadtalker_models.precision import cpu_has_amx, cpu_runs_natively
from sadtalker_models.video import Mp4Writer, fit_audio, load_audio, probe, read_image, read_video, write_wav

REPO = Path(__file__).resolve().parent.parent


def test_writer_streams_frames_and_muxes_trimmed_audio(tmp_path):
    rate = 22050
    tone = np.sin(np.linspace(0, 200, rate)).astype(np.float32)[None].repeat(2, 0) * 0.3   # 1 s stereo
    out = tmp_path / "clip.mp4"
    with Mp4Writer(out, fps=25, audio=tone, sample_rate=rate) as writer:
        for i in range(3):                                   # 3 batches of 2 frames, odd size 67x45
            writer.write(np.full((2, 45, 67, 3), 40 * i, dtype=np.uint8))
    info = probe(out)
    assert len(info.video) == 1 and len(info.audio) == 1
    frames, fps = read_video(out)
    frames = list(frames)
    assert len(frames) == 6 and fps == pytest.approx(25)
    audio, got_rate = load_audio(out)
    assert got_rate == rate and audio.shape[0] == 2
    assert audio.shape[1] / rate == pytest.approx(6 / 25, abs=0.003)
    assert not [p for p in tmp_path.iterdir() if p != out]   # temporary files are gone


def test_writer_removes_partial_output_on_error(tmp_path):
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, audio=np.zeros((1, 16000), np.float32), sample_rate=16000) as writer:
            writer.write(np.zeros((2, 32, 32, 3), np.uint8))
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_integer_pcm_audio_is_scaled_for_the_audio_output():
    pcm = (np.array([[0, 16384, -32768, 32767]], dtype=np.int16))
    wave, rate = pipeline.as_audio(pcm, 16000)
    assert wave.dtype == np.float32 and wave.shape == (1, 4) and rate == 16000
    assert wave.flatten().tolist() == [0.0, 0.5, -1.0, 32767 / 32768]
    same = pipeline.as_audio(torch.from_numpy(pcm)[None], 16000).waveform     # a (1, C, n) batch, as torch
    assert np.array_equal(same, wave)
    assert pipeline.as_audio(pcm[0], 8000).waveform.shape == (1, 4)           # mono (n,)
    with pytest.raises(ValueError, match="channels x samples"):
        pipeline.as_audio(np.zeros((1, 1, 1, 4)), 16000)


@pytest.mark.parametrize("with_audio", [True, False])
def test_failed_run_keeps_an_earlier_output(tmp_path, with_audio):
    """A run that fails before writing (or, with audio, before muxing) must not delete last run's video."""
    out = tmp_path / "talk.mp4"
    out.write_bytes(b"last run")
    audio = dict(audio=np.zeros((1, 16000), np.float32), sample_rate=16000) if with_audio else {}
    with pytest.raises(RuntimeError):
        with Mp4Writer(out, **audio) as writer:
            if with_audio:
                writer.write(np.zeros((2, 32, 32, 3), np.uint8))
            raise RuntimeError("stop")
    assert out.read_bytes() == b"last run"
    assert list(tmp_path.iterdir()) == [out]


def test_writer_rejects_bad_frames(tmp_path):
    with Mp4Writer(tmp_path / "x.mp4") as writer:
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((1, 32, 32, 3), np.float32))
        with pytest.raises(ValueError, match="RGB"):
            writer.write(np.zeros((1, 32, 32), np.uint8))
        writer.write(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="size changed"):
            writer.write(np.zeros((1, 34, 32, 3), np.uint8))


def test_fit_audio_cuts_and_pads():
    audio = np.ones((2, 1000), np.float32)
    assert fit_audio(audio, 16000, 1).shape == (2, 640)
    padded = fit_audio(audio, 16000, 3)
    assert padded.shape == (2, 1920) and padded[:, 1000:].max() == 0


def test_load_audio_keeps_rate_and_channels():
    audio, rate = load_audio(MEDIA / "speech_zh_48k_stereo_3s.wav")
    assert rate == 48000 and audio.shape[0] == 2 and audio.dtype == np.float32
    assert audio.shape[1] == pytest.approx(3 * 48000, abs=480)
    mono, rate16 = load_audio(MEDIA / "speech_zh_48k_stereo_3s.wav", sample_rate=16000)
    assert rate16 == 16000 and mono.shape[1] == pytest.approx(3 * 16000, abs=160)


def test_load_audio_errors_are_readable(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="no audio stream"):
        load_audio(MEDIA / "art_0.png")


def test_read_image_and_first_video_frame():
    image = read_image(MEDIA / "art_0.png")
    assert image.shape == (896, 640, 3) and image.dtype == np.uint8
    frame = read_image(MEDIA / "ref_pose_blink_3s.mp4")
    assert frame.ndim == 3 and frame.shape[2] == 3


def test_write_wav_round_trip(tmp_path):
    wave = (np.arange(1600, dtype=np.float32) / 1600 - 0.5)[None]
    write_wav(tmp_path / "a.wav", wave, 16000)
    back, rate = load_audio(tmp_path / "a.wav")
    assert rate == 16000 and np.allclose(back, wave, atol=1e-4)


# --------------------------------------------------------------------------- pipeline helpers


def test_parse_angles():
    assert pipeline.parse_angles("0,20,-10") == [0.0, 20.0, -10.0]
    assert pipeline.parse_angles(" 5 ") == [5.0]
    assert pipeline.parse_angles("") is None and pipeline.parse_angles(None) is None
    assert pipeline.parse_angles("0; 15 30") == [0.0, 15.0, 30.0]
    with pytest.raises(ValueError, match="0,20,-10"):
        pipeline.parse_angles("left")


def test_precision_and_device_choices():
    amx = cpu_has_amx(torch.bfloat16)   # auto is bf16 on a CPU with AMX-BF16 tiles, else fp32
    assert pipeline.resolve_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if amx else torch.float32)
    assert pipeline.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    native_bf16 = cpu_runs_natively(torch.bfloat16)
    assert pipeline.resolve_dtype("bf16", torch.device("cpu")) == (torch.bfloat16 if native_bf16 else torch.float32)
    assert pipeline.resolve_dtype("bf16", torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        pipeline.resolve_dtype("fp8", torch.device("cpu"))
    assert pipeline.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            pipeline.resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        pipeline.resolve_device("gpu-please")


def test_coefficients_refuse_audio_that_is_not_audio():
    with pytest.raises(ValueError, match="Audio\\(waveform, sample_rate\\)"):
        pipeline.Coefficients(coeffs=torch.zeros(5, 70), audio={"waveform": torch.ones(1, 2, 44100), "sample_rate": 44100})


def test_reference_coefficients_follow_audio_length_and_tile():
    ref = torch.arange(3 * 73, dtype=torch.float32).reshape(3, 73)
    audio = pipeline.Audio(np.zeros((1, 16000), np.float32), 16000)       # 1 s -> 25 frames
    coeffs = pipeline.coefficients_from_reference(ref, audio=audio)
    assert coeffs.num_frames == 25 and torch.equal(coeffs.coeffs[3], ref[0, :70])
    assert pipeline.coefficients_from_reference(ref).num_frames == 3
    with pytest.raises(ValueError, match="73"):
        pipeline.coefficients_from_reference(torch.zeros(3, 70))


def test_curves_are_small_and_json_ready():
    import json

    coeffs = pipeline.Coefficients(coeffs=torch.randn(1000, 70), blink=torch.zeros(1000))
    curves = coeffs.curves(max_points=100)
    assert curves["step"] == 10 and len(curves["yaw"]) == 100 and len(curves["blink"]) == 100
    json.dumps(curves)


def test_model_cache_keys_and_eviction(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for p in (a, b, c):
        p.write_bytes(b"x")
    cache = ModelCache(max_items=2)
    loads = []

    def loader(name):
        return lambda: loads.append(name) or name

    key_a = make_key("m", [a], "cpu", torch.float32)
    assert cache.get_or_load(key_a, loader("a")) == "a"
    assert cache.get_or_load(make_key("m", [a], "cpu", torch.float32), loader("a2")) == "a"
    assert cache.get_or_load(make_key("m", [a], "cpu", torch.float16), loader("a16")) == "a16"
    cache.get_or_load(make_key("m", [b], "cpu", torch.float32), loader("b"))
    assert key_a not in cache and len(cache) == 2                        # least recently used went
    a.write_bytes(b"changed")                                            # a replaced file reloads
    assert make_key("m", [a], "cpu", torch.float32) != key_a
    assert loads == ["a", "a16", "b"] and cache.loads == 3 and cache.hits == 1


def test_model_cache_kinds_do_not_evict_each_other():
    """The landmark detectors share the model cache: loading them never drops the SadTalker networks."""
    cache = ModelCache(max_items=1)
    cache.get_or_load(("sadtalker", 1), lambda: "nets")
    cache.get_or_load(("face detector", "dlib"), lambda: "dlib")
    cache.get_or_load(("face detector", "face_alignment"), lambda: "fa")
    assert ("sadtalker", 1) in cache and ("face detector", "dlib") not in cache and len(cache) == 2
    cache.clear("face detector")
    assert cache.values() == ["nets"]


def test_landmark_detectors_live_in_the_model_cache():
    from sadtalker_models.face import landmarks
    from sadtalker_models.model_cache import MODEL_CACHE

    landmarks.clear_detector_cache()
    det = landmarks.make_landmark_detector("dlib")
    assert det in MODEL_CACHE.values() and landmarks.make_landmark_detector("dlib") is det
    landmarks.clear_detector_cache()
    assert det not in MODEL_CACHE.values()


@pytest.mark.parametrize("writer", ["atomic_output", "Mp4Writer"])
def test_an_interrupt_while_the_temporary_file_is_created_leaves_nothing(tmp_path, monkeypatch, writer):
    """Ctrl-C/SIGTERM landing just after the temporary file exists (before its name is returned)."""
    import sadtalker_models.video as video

    out = tmp_path / "talk.mp4"
    out.write_bytes(b"the previous video")
    real_close = os.close

    def interrupted_close(fd):
        real_close(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(video.os, "close", interrupted_close)
    with pytest.raises(KeyboardInterrupt):
        if writer == "atomic_output":
            with video.atomic_output(out):
                pass
        else:
            with Mp4Writer(out, fps=25) as mp4:
                mp4.write(np.zeros((16, 16, 3), dtype=np.uint8))
    monkeypatch.setattr(video.os, "close", real_close)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]
    assert out.read_bytes() == b"the previous video"
