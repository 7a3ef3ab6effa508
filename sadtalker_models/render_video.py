"""Render straight into an mp4, batch by batch: the long-video path shared by the CLI and the
ComfyUI "SadTalker Render to Video" node.

Each rendered batch is (optionally) face-enhanced, written to the H.264 encoder, shrunk into an
optional small preview, and dropped before the next batch is rendered, so memory does not grow
with the clip: no list of frames and no ``(T, H, W, 3)`` array exist anywhere. The audio is muxed
when the video is complete (:class:`~sadtalker_models.video.Mp4Writer`: temporary file, then an
atomic rename; an error or a cancel leaves nothing behind).

With ``threaded=True`` the enhancer (when given) and the encoders run on their own thread, fed
through a queue of one batch, so the renderer (the GPU) never waits for the landmarks, the
restorer or ffmpeg; at most three batches are alive then (one being rendered, one queued, one
being enhanced and encoded).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .video import Mp4Writer

logger = logging.getLogger(__name__)

PREVIEW_MAX_SIDE = 512


@dataclass
class VideoResult:
    """What :func:`render_to_mp4` wrote."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    has_audio: bool
    preview: Path | None = None

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def preview_size(width: int, height: int, max_side: int = PREVIEW_MAX_SIDE) -> tuple[int, int]:
    """(w, h) with the long side at most ``max_side``, the aspect ratio kept and both sides even."""
    scale = min(1.0, max_side / max(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return min(w, max_side), min(h, max_side)


def shrink(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(b, H, W, 3)`` uint8 -> ``(b, h, w, 3)`` uint8 at ``size = (w, h)`` (area averaging)."""
    if (frames.shape[2], frames.shape[1]) == tuple(size):
        return frames
    import cv2

    out = np.empty((frames.shape[0], size[1], size[0], 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return out


class _Encoders:
    """The video writer and the optional preview writer, fed one batch at a time."""

    def __init__(self, video: Mp4Writer, preview: Mp4Writer | None, preview_max_side: int):
        self.video = video
        self.preview = preview
        self.preview_max_side = preview_max_side

    def write(self, batch: np.ndarray) -> None:
        self.video.write(batch)
        if self.preview is not None:
            size = preview_size(batch.shape[2], batch.shape[1], self.preview_max_side)
            self.preview.write(shrink(batch, size))


class _EncoderThread:
    """Runs ``write`` on a worker thread behind a one-batch queue; errors surface on the next
    :meth:`put` or on :meth:`join`."""

    _DONE = object()

    def __init__(self, write: Callable[[np.ndarray], None]):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sadtalker-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as err:  # noqa: BLE001 - handed to the rendering thread
                    self._error = err
            del item

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, batch: np.ndarray) -> None:
        self._raise()
        self._queue.put(batch)

    def join(self) -> None:
        """Wait until every queued batch is written (or dropped after an error)."""
        self._queue.put(self._DONE)
        self._thread.join()
        self._raise()


def render_to_mp4(models: Any, face: Any, coeffs: Any, path: str | Path, *, expression_scale: float = 1.0,
                  batch_size: int = 2, yaw: Any = None, pitch: Any = None, roll: Any = None,
                  paste_back: bool = True, progress: Callable[[int, int], None] | None = None,
                  check: Callable[[], None] | None = None,
                  on_batch: Callable[[np.ndarray, int], None] | None = None,
                  audio: tuple[np.ndarray, int] | None = None, restorer: Any = None, detector: Any = None,
                  enhance_strength: float = 1.0, enhance_upscale: int = 1,
                  preview_path: str | Path | None = None, preview_max_side: int = PREVIEW_MAX_SIDE,
                  threaded: bool = False, quality: float = 8.0) -> VideoResult:
    """Render ``coeffs`` on ``face`` into the mp4 ``path`` (H.264, yuv420p, AAC audio).

    Args:
        models, face, coeffs: a :class:`~.pipeline.SadTalkerModels`, :class:`~.pipeline.SourceFace`
            and :class:`~.pipeline.Coefficients`; ``expression_scale`` .. ``progress`` are passed to
            :func:`~.pipeline.render_frames` (``progress(done, total)`` may raise to cancel).
        check: called after each batch is handed to the encoder and once more before the audio
            is muxed; it may raise to cancel (a stop request that arrived while encoding).
        on_batch: ``on_batch(frames (b, H, W, 3) uint8, frames done)`` with each rendered batch (before
            enhancement), e.g. to show the newest frame while rendering; it may raise to cancel.
        audio: ``(waveform (C, n) float, sample_rate)`` muxed and cut to the video length;
            default: the coefficients' own audio; no audio stream when neither exists.
        restorer, detector: a face restorer (:func:`~.enhance.load_face_restorer`) and a landmark
            detector: every batch is enhanced (:func:`~.enhance.enhance_frames`) before encoding.
        enhance_strength, enhance_upscale: blend weight 0..1 and output scale (1 or 2).
        preview_path: also write a small copy (long side <= ``preview_max_side``, with the audio).
        threaded: enhance and encode on a worker thread, batch n while batch n+1 renders (useful
            when rendering on a GPU; on a small CPU the threads only compete for the same cores).

    Returns:
        :class:`VideoResult` (frame count, size, fps, paths). On an error or a cancel no output
        file is left (a file already at ``path`` is kept).
    """
    from . import pipeline

    if audio is None and coeffs.audio is not None:
        audio = coeffs.audio
    wave, rate = audio if audio is not None else (None, None)
    if restorer is not None and detector is None:
        raise ValueError("Face enhancement needs a landmark detector; pass detector=make_landmark_detector(...).")
    if restorer is not None:   # follow the face from batch to batch
        from .face.tracking import FaceTracker

        detector = FaceTracker(detector)
    video = Mp4Writer(path, fps=coeffs.fps, audio=wave, sample_rate=rate, quality=quality)
    preview = Mp4Writer(preview_path, fps=coeffs.fps, audio=wave, sample_rate=rate) if preview_path else None
    encoders = _Encoders(video, preview, preview_max_side)

    def finish(batch: np.ndarray) -> None:
        """A rendered batch (b, H, W, 3) uint8: enhanced when a restorer is given, then encoded."""
        if restorer is not None:
            from .enhance import enhance_frames

            batch, _ = enhance_frames(batch, restorer, detector, strength=float(enhance_strength),
                                      upscale=int(enhance_upscale), batch_size=len(batch))
        encoders.write(batch)

    # threaded: batch n is enhanced (landmarks on the CPU, the restorer on the device) and encoded on
    # the worker while batch n+1 renders; otherwise one after the other
    worker = _EncoderThread(finish) if threaded else None
    frames = 0
    try:
        for batch in pipeline.render_frames(models, face, coeffs, expression_scale=expression_scale,
                                            batch_size=batch_size, yaw=yaw, pitch=pitch, roll=roll,
                                            paste_back=paste_back, progress=progress):
            frames += len(batch)
            if on_batch is not None:
                on_batch(batch, frames)
            if worker is not None:
                worker.put(batch)
            else:
                finish(batch)
            del batch
            if check is not None:
                check()
        if worker is not None:
            worker.join()
            worker = None
        if check is not None:
            check()
        video.close()
    except BaseException:
        if worker is not None:
            try:
                worker.join()
            except BaseException:  # noqa: BLE001 - the first error is the one to report
                logger.debug("encoder thread failed while stopping", exc_info=True)
        video.abort()
        if preview is not None:
            preview.abort()
        raise
    if preview is not None:
        try:
            preview.close()
        except Exception:  # noqa: BLE001 - the preview is a convenience; the video is complete
            logger.warning("Could not finish the preview video %s", preview_path, exc_info=True)
            preview.abort()
            preview = None
    width, height = video.size
    return VideoResult(Path(path), frames, width, height, float(coeffs.fps), wave is not None,
                       Path(preview_path) if preview is not None else None)
