"""The vocabulary of the pack, in one torch-free place: the CLI, the nodes and the library import it.

Importing this module is cheap (no torch, no numpy), so ``--help`` and ComfyUI's node listing
can use it before anything heavy loads.
"""

from __future__ import annotations

#: Video frame rate of everything SadTalker makes (one frame per 640 samples at 16 kHz).
FPS = 25
#: Preprocess modes: how the face is cut out of the picture (§3).
PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")
#: Modes that render the whole picture: the face is pasted back into it (§15) and the renderer
#: gets 73 coefficients (the crop's scale and translation appended, §10.2).
FULL_FRAME_MODES = ("full", "extfull")
#: Render sizes; one official checkpoint each.
SIZES = (256, 512)
#: Renderer precisions (see :mod:`sadtalker_models.precision`).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: Landmark backends: ``auto`` = face-alignment when installed with its weights, else dlib.
LANDMARK_BACKENDS = ("auto", "dlib", "face_alignment")
#: Pose styles of the PoseVAE: 0 .. MAX_POSE_STYLE.
MAX_POSE_STYLE = 45
#: Longest idle clip without speech, in seconds (one hour).
MAX_IDLE_SECONDS = 3600.0


def is_full_frame(preprocess: str) -> bool:
    """True for ``full``/``extfull``: paste-back into the picture and the 73-input mapping."""
    return preprocess in FULL_FRAME_MODES


def check_choice(value, choices, what: str):
    """``value`` when it is one of ``choices``, else a ValueError that lists them."""
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; use one of {', '.join(map(str, choices))}.")
    return value
