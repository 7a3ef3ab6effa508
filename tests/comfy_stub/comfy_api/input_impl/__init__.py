"""Stand-in for ``comfy_api.input_impl`` (ComfyUI 0.8.0): ``VideoFromFile``, the VIDEO that core Load
Video returns and Save Video / Preview Video / Get Video Components take.

The real class reads the file with PyAV; this one answers the same methods through the ffmpeg binary of
imageio-ffmpeg. ``save_to`` with the default ``auto`` format and codec copies the streams (the real one
remuxes them packet by packet), which is what core Save Video does with an mp4.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass
class VideoComponents:
    images: Any
    audio: Any
    frame_rate: Fraction
    metadata: dict | None = None


class VideoFromFile:
    def __init__(self, file):
        self.__file = file

    def get_stream_source(self):
        return self.__file

    def _info(self):
        from sadtalker_models.video import probe

        return probe(self.__file)

    def get_dimensions(self) -> tuple[int, int]:
        info = self._info()
        if not info.video:
            raise ValueError(f"No video stream found in file '{self.__file}'")
        return info.width, info.height

    def get_duration(self) -> float:
        duration = self._info().duration
        if duration is None:
            raise ValueError(f"Could not determine duration for file '{self.__file}'")
        return float(duration)

    def get_frame_rate(self) -> Fraction:
        fps = self._info().fps
        return Fraction(fps).limit_denominator(1001) if fps else Fraction(1)

    def get_frame_count(self) -> int:
        from sadtalker_models.video import read_video

        frames, _ = read_video(self.__file)
        return sum(1 for _ in frames)

    def get_container_format(self) -> str:
        return "mov,mp4,m4a,3gp,3g2,mj2" if str(self.__file).lower().endswith(".mp4") else "unknown"

    def get_components(self):
        """Every frame as an IMAGE ``[T, H, W, 3]`` float 0..1, the audio as AUDIO, and the frame rate
        (what core Get Video Components outputs; it holds the whole video in memory, as the real one does)."""
        import numpy as np
        import torch

        from sadtalker_models.video import load_audio, read_video

        frames, _ = read_video(self.__file)
        images = torch.from_numpy(np.stack(list(frames))).float() / 255.0
        audio = None
        if self._info().audio:
            wave, rate = load_audio(self.__file)
            audio = {"waveform": torch.from_numpy(wave)[None], "sample_rate": rate}
        return VideoComponents(images=images, audio=audio, frame_rate=self.get_frame_rate())

    def save_to(self, path, format="auto", codec="auto", metadata=None) -> None:
        if str(format) not in ("auto", "mp4") or str(codec) not in ("auto", "h264"):
            raise NotImplementedError("The comfy_api stand-in only copies the streams (format/codec auto).")
        shutil.copyfile(self.__file, path)
