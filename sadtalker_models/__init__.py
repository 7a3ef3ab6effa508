"""SadTalker inference as a plain torch/numpy library: one face picture + speech -> talking-head frames.

The stable entry points are the names in ``__all__`` (what the ComfyUI nodes and the CLI use);
everything else (the stage modules, the networks, names with a leading underscore) may change
freely. Importing the package is cheap: no torch, no numpy; each name below imports its module on
first access. The section numbers (§) in docstrings refer to docs/SADTALKER_INFERENCE.md; the
module map is docs/DESIGN.md.

Example::

    import sadtalker_models as st
    from sadtalker_models.video import load_audio, read_image

    models = st.load_models("ComfyUI/models/sadtalker/SadTalker_V0.0.2_256.safetensors", device="auto")
    face = st.prepare_face(models, read_image("face.png"), preprocess="crop")
    waveform, sample_rate = load_audio("speech.wav")                  # (C, n) float32, Hz
    coeffs = st.audio_to_coefficients(models, face, waveform, sample_rate, pose_style=0, seed=0)
    st.save_coefficients(coeffs, "speech.safetensors")                 # re-render later without audio
    for frames in st.render_frames(models, face, coeffs):              # (b, H, W, 3) uint8, in order
        ...
    st.render_to_mp4(models, face, coeffs, "talking.mp4")              # or straight to an mp4 with sound

The vocabulary (preprocess modes, sizes, precisions, landmark backends, fps) is
:mod:`sadtalker_models.options`, importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_ENTRY_POINTS = {
    "load_models": "pipeline", "SadTalkerModels": "pipeline", "resolve_device": "pipeline",
    "prepare_face": "pipeline", "SourceFace": "pipeline", "reference_coefficients": "pipeline",
    "audio_to_coefficients": "pipeline", "idle_coefficients": "pipeline",
    "coefficients_from_reference": "pipeline", "Coefficients": "pipeline", "Audio": "pipeline",
    "as_audio": "pipeline", "render_frames": "pipeline", "output_size": "pipeline",
    "save_coefficients": "coefficient_files", "load_coefficients": "coefficient_files",
    "render_to_mp4": "render_video", "VideoResult": "render_video",
    "load_face_restorer": "enhance", "enhance_frames": "enhance",
    "make_landmark_detector": "face.landmarks",
    "CheckpointError": "checkpoints",
    "MODEL_CACHE": "model_cache",
}

__all__ = ["options", *_ENTRY_POINTS]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562), so ``import sadtalker_models`` stays cheap."""
    if name == "options":
        return importlib.import_module(".options", __name__)
    module = _ENTRY_POINTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
