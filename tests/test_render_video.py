"""Streaming render into an mp4 (sadtalker_models.render_video), the path behind the CLI and the
"SadTalker Render to Video" node: frame count, audio stream and duration read back with ffmpeg, a
small preview, face enhancement per batch, cancel, and that no more than one rendered batch (three
with the encoder thread) is ever alive.

Frames are 128 px (the face crop shrunk; the parity cases show 128 px renders are valid) to keep
the renders to a few seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import cv2
import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME, MEDIA
from sadtalker_models import pipeline, render_video
from sadtalker_models.video import probe, read_video

FRAMES = 4


@pytest.fixture(scope="module")
def small_job(weights_dir):
    """Models, a 128 px face and 4 frames of coefficients with 16 kHz speech-like audio."""
    models = pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="fp32", cache=None)
    image = cv2.cvtColor(cv2.imread(str(MEDIA / "art_0.png")), cv2.COLOR_BGR2RGB)
    face = pipeline.prepare_face(models, image, preprocess="crop", landmark_backend="dlib")
    face = dataclasses.replace(face, crop=cv2.resize(face.crop, (128, 128), interpolation=cv2.INTER_AREA), size=128)
    t = torch.arange(FRAMES * 640) / 16000.0
    wave = (0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t))[None]
    coeffs = pipeline.audio_to_coefficients(models, face, wave, 16000, seed=1)
    assert coeffs.num_frames == FRAMES
    return models, face, coeffs


class _BatchWatch:
    """Wraps pipeline.render_frames: records how many earlier batches are still alive at each yield."""

    def __init__(self, monkeypatch):
        self.refs: list[weakref.ref] = []
        self.alive_at_yield: list[int] = []
        real = pipeline.render_frames

        def watched(*args, **kwargs):
            for batch in real(*args, **kwargs):
                gc.collect()
                self.alive_at_yield.append(sum(r() is not None for r in self.refs))
                self.refs.append(weakref.ref(batch))
                yield batch

        monkeypatch.setattr(pipeline, "render_frames", watched)


def _check_mp4(path, frames: int, size: tuple[int, int], audio: bool = True) -> None:
    info = probe(path)
    assert (info.width, info.height) == size
    stream, _ = read_video(path)
    assert sum(1 for _ in stream) == frames
    assert bool(info.audio) == audio
    assert info.duration == pytest.approx(frames / 25.0, abs=0.03)


@pytest.fixture(scope="module")
def streamed(small_job, tmp_path_factory):
    """The clip streamed one frame per batch, with a 64 px preview, watching the batches."""
    models, face, coeffs = small_job
    folder = tmp_path_factory.mktemp("streamed")
    seen = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        watch = _BatchWatch(monkeypatch)
        result = render_video.render_to_mp4(models, face, coeffs, folder / "out.mp4", batch_size=1,
                                            progress=lambda done, total: seen.append((done, total)),
                                            preview_path=folder / "preview.mp4", preview_max_side=64)
    return result, watch, seen


def test_streamed_mp4_has_every_frame_audio_and_a_small_preview(small_job, streamed):
    models, face, coeffs = small_job
    result, watch, seen = streamed
    assert (result.frames, result.fps, result.has_audio) == (FRAMES, 25.0, True)
    width, height = pipeline.output_size(face)
    assert (result.width, result.height) == (width, height)
    _check_mp4(result.path, FRAMES, (width, height))
    _check_mp4(result.preview, FRAMES, render_video.preview_size(width, height, 64))
    assert max(render_video.preview_size(width, height, 64)) <= 64
    assert seen == [(i, FRAMES) for i in range(1, FRAMES + 1)]
    # memory: when a batch is made, at most the one before it (the encoder's last frame) is alive
    assert watch.alive_at_yield[0] == 0 and max(watch.alive_at_yield) <= 1
    # the video's first frame is the rendered first frame, up to H.264 loss (stand-in weights render
    # noise-like texture, which H.264 keeps less well than faces: compare with the mirrored frame)
    frames = pipeline.render_frames(models, face, coeffs, batch_size=1)
    first = next(frames)[0].astype(np.int16)
    frames.close()
    decoded = next(read_video(result.path)[0]).astype(np.int16)
    assert np.abs(decoded - first).mean() < 0.5 * np.abs(decoded - first[:, ::-1]).mean()


def test_encoder_thread_gives_the_same_video_and_bounded_batches(small_job, tmp_path, monkeypatch):
    models, face, coeffs = small_job
    watch = _BatchWatch(monkeypatch)
    result = render_video.render_to_mp4(models, face, coeffs, tmp_path / "threaded.mp4", batch_size=1, threaded=True)
    _check_mp4(result.path, FRAMES, (result.width, result.height))
    assert max(watch.alive_at_yield) <= 2   # one queued, one held by the encoder, besides the new one


def test_cancel_leaves_no_file_and_keeps_an_existing_one(small_job, tmp_path):
    models, face, coeffs = small_job
    out = tmp_path / "kept.mp4"
    out.write_bytes(b"earlier result")

    def cancel(done, total):
        raise KeyboardInterrupt

    for threaded in (False, True):
        with pytest.raises(KeyboardInterrupt):
            render_video.render_to_mp4(models, face, coeffs, out, batch_size=1, progress=cancel, threaded=threaded,
                                       preview_path=tmp_path / "p.mp4", preview_max_side=64)
        assert out.read_bytes() == b"earlier result"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.mp4"]


class _Brighten:
    """A stand-in restorer: the aligned 512 px face brightened, so the blend shows in the output."""

    architecture = "test"

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        assert faces.shape[1:] == (3, 512, 512)
        return (faces + 0.3).clamp(0, 1)


class _FixedLandmarks:
    """The face crop's own landmarks, scaled to the frames: every frame has a face where the renderer put it."""

    name = "fixed"

    def __init__(self, lm68: np.ndarray, scale: float):
        self.lm68 = np.asarray(lm68, dtype=np.float32) * scale

    def detect(self, image: np.ndarray) -> np.ndarray:
        return self.lm68


def test_face_enhancement_runs_batch_by_batch_inside_the_stream(small_job, streamed, tmp_path):
    models, face, coeffs = small_job
    plain = streamed[0]
    two = dataclasses.replace(coeffs, coeffs=coeffs.coeffs[:2])
    detector = _FixedLandmarks(face.data.lm68, plain.width / 256.0)
    enhanced = render_video.render_to_mp4(models, face, two, tmp_path / "enh.mp4", batch_size=1,
                                          restorer=_Brighten(), detector=detector, enhance_upscale=2)
    assert (enhanced.width, enhanced.height) == (2 * plain.width, 2 * plain.height)
    _check_mp4(enhanced.path, 2, (enhanced.width, enhanced.height))
    a = np.stack(list(read_video(plain.path)[0])[:2]).astype(np.float32).mean()
    b = np.stack(list(read_video(enhanced.path)[0])).astype(np.float32).mean()
    assert b > a + 2.0   # the brightened faces were blended into both frames


def test_threaded_enhancement_overlaps_the_render_and_gives_the_same_video(small_job, streamed, tmp_path):
    """threaded=True enhances and encodes batch n on the worker while batch n+1 renders: the frames of
    the video are those of the one-thread run, and the enhancer ran off the rendering thread."""
    import threading

    models, face, coeffs = small_job
    plain = streamed[0]
    two = dataclasses.replace(coeffs, coeffs=coeffs.coeffs[:2])
    detector = _FixedLandmarks(face.data.lm68, plain.width / 256.0)
    threads = []

    class Watched(_Brighten):
        def restore(self, faces):
            threads.append(threading.current_thread().name)
            return super().restore(faces)

    videos = [render_video.render_to_mp4(models, face, two, tmp_path / f"enh{threaded}.mp4", batch_size=1,
                                         restorer=Watched(), detector=detector, threaded=threaded)
              for threaded in (False, True)]
    decoded = [np.stack(list(read_video(v.path)[0])) for v in videos]
    assert np.array_equal(decoded[0], decoded[1])
    assert threads == ["MainThread"] * 2 + ["sadtalker-encoder"] * 2


def test_preview_size_caps_the_long_side_and_keeps_sides_even():
    assert render_video.preview_size(1920, 1080) == (512, 288)
    assert render_video.preview_size(1080, 1920) == (288, 512)
    assert render_video.preview_size(256, 256) == (256, 256)
    w, h = render_video.preview_size(1001, 333)
    assert w <= 512 and w % 2 == 0 and h % 2 == 0


def test_wav_is_converted_in_blocks_with_the_same_samples(tmp_path):
    """The muxed audio is converted a block at a time (flat memory for long speech), sample for sample
    the same 16-bit PCM as one whole-clip conversion, across block boundaries."""
    import wave

    from sadtalker_models.video import WAV_BLOCK, write_wav

    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((2, 2 * WAV_BLOCK + 5)) * 0.6).astype(np.float32)   # some samples clip
    write_wav(tmp_path / "a.wav", audio, 48000)
    with wave.open(str(tmp_path / "a.wav")) as fh:
        assert (fh.getnchannels(), fh.getframerate(), fh.getnframes()) == (2, 48000, audio.shape[1])
        data = fh.readframes(fh.getnframes())
    assert data == (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").T.tobytes()
