"""ComfyUI nodes for the extra features: idle clips and a folder of speech clips as a list;
thin adapters over the library.

Types are the ones of :mod:`.sadtalker_nodes`; this module only adds nodes.
"""

from __future__ import annotations

import os

from ..sadtalker_models import options
from . import comfy_glue
from .sadtalker_nodes import (CATEGORY, COEFFS, EXPRESSION_REFERENCE_INPUTS, FACE_INPUT, MAX_SEED, MODEL_INPUT,
                              MOTION_INPUTS, SEARCH_WORDS, _expression_face, _face, _model_handle, _pipeline)


class SadTalkerIdleCoefficients:
    DESCRIPTION = ("Makes N seconds of idle motion without speech: eye blinks, a slight head motion and a closed, "
                   "still mouth (SadTalker's audio networks are given silence). Seeded: the same seed gives the "
                   "same clip. Render it like any other coefficients; the audio output is silence of that length. "
                   "An optional expression reference (another picture's face) gives the resting face that "
                   "picture's expression.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (COEFFS,)
    RETURN_NAMES = ("coefficients",)
    OUTPUT_TOOLTIPS = ("Idle motion at 25 fps for that many seconds, with silence as its audio: connect it to Render "
                       "or Render to Video.",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "idle", "idle animation", "no speech", "silent", "pause", "blink", "still face",
                      "coefficients", "待机"]
    FUNCTION = "make"
    OUTPUT_NODE = True  # shows curves (see Audio to Coefficients)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "face": FACE_INPUT,
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.04, "max": options.MAX_IDLE_SECONDS, "step": 0.5,
                                      "tooltip": "Length of the idle clip (25 frames a second)."}),
                "pose_style": ("INT", {"default": 0, "min": 0, "max": options.MAX_POSE_STYLE, "step": 1,
                                       "tooltip": "One of SadTalker's 46 head-motion styles."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed for the head motion and the blink timing."}),
                "blink": ("BOOLEAN", {"default": True, "tooltip": "Add eye blinks."}),
            },
            "optional": {**MOTION_INPUTS, **EXPRESSION_REFERENCE_INPUTS},
        }

    def make(self, model, face, seconds: float = 1.0, pose_style: int = 0, seed: int = 0, blink: bool = True,
             head_motion_scale: float = 1.0, blinks_per_minute: float = 0.0, expression_reference=None,
             expression_strength: float = 1.0):
        handle = _model_handle(model)
        source = _face(face)
        expression = _expression_face(expression_reference)
        comfy_glue.check_interrupted()
        models = handle.ensure_loaded()
        coeffs = _pipeline().idle_coefficients(
            models, source, float(seconds), pose_style=int(pose_style), seed=int(seed), blink=bool(blink),
            blinks_per_minute=float(blinks_per_minute), head_motion_scale=float(head_motion_scale),
            expression_reference=expression, expression_strength=float(expression_strength))
        return {"ui": {"sadtalker_curves": [coeffs.curves()]}, "result": (coeffs,)}


NO_AUDIO_FOLDERS = "(no folder of audio clips in ComfyUI/input yet: make one, then press R)"


def _audio_folders(limit: int = 200, depth: int = 3) -> list[str]:
    """Folders under ComfyUI's input folder (``/``-separated, relative, at most ``depth`` levels down)
    that hold audio files, sorted. Bounded, since ComfyUI asks for the list on every page load."""
    import folder_paths

    from ..sadtalker_models.video import AUDIO_SUFFIXES

    base = folder_paths.get_input_directory()
    found = []
    for root, dirs, files in os.walk(base) if os.path.isdir(base) else ():
        level = 0 if root == base else os.path.relpath(root, base).count(os.sep) + 1
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if level < depth else []
        if root != base and any(f.lower().endswith(AUDIO_SUFFIXES) for f in files):
            found.append(os.path.relpath(root, base).replace(os.sep, "/"))
            if len(found) >= limit:
                break
    return sorted(found)


def _input_folder(name: str) -> str:
    """Full path of a folder listed by :func:`_audio_folders`; refuses names that leave the input folder."""
    import folder_paths

    base = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(base, name))
    if name == NO_AUDIO_FOLDERS or os.path.commonpath([base, path]) != base or path == base:
        shown = name if len(name) <= 80 else f"{name[:80]}... ({len(name)} characters)"
        raise ValueError(f"Pick a folder inside ComfyUI's input folder ({base}) that holds the speech clips "
                         f"(got {shown!r}); make one, put the clips in it and press R to refresh the list.")
    return path


def _input_audio_files(folder: str) -> list:
    """The audio files of a folder of ComfyUI's input folder, none of them a link to a file outside it."""
    import folder_paths

    from ..sadtalker_models.video import audio_files

    return audio_files(_input_folder(folder), within=folder_paths.get_input_directory())


class SadTalkerLoadAudioList:
    DESCRIPTION = ("Loads every audio file of a folder in ComfyUI/input as a list: the nodes after it run once per "
                   "clip, so one picture and a folder of speeches give one video each (the models load once). "
                   "'name' is each file's name without extension (after name_prefix): link it to Save Video's "
                   "filename_prefix to name each video after its speech.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AUDIO", "STRING")
    RETURN_NAMES = ("audio", "name")
    OUTPUT_IS_LIST = (True, True)
    OUTPUT_TOOLTIPS = ("One AUDIO per file, in natural name order (clip2 before clip10).",
                       "name_prefix + the file names without extension, in the same order.")
    SEARCH_ALIASES = [*SEARCH_WORDS, "batch audio", "audio folder", "audio list", "load audio", "many speeches",
                      "one video per clip", "批量音频"]
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": (_audio_folders() or [NO_AUDIO_FOLDERS], {
                "tooltip": "A folder inside ComfyUI/input holding the speech clips (wav, mp3, flac, m4a, ...). "
                           "Press R to refresh the list after adding one."}),
            "name_prefix": ("STRING", {"default": "", "tooltip": (
                "Put before each file name in the 'name' output; 'video/talk_' makes 'video/talk_clip1', which "
                "Save Video's filename_prefix turns into output/video/talk_clip1_00001_.mp4.")}),
        }}

    @classmethod
    def IS_CHANGED(cls, folder: str, name_prefix: str = ""):
        try:
            return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in _input_audio_files(folder)]
        except (ValueError, OSError):
            return float("nan")   # always run: load() gives the readable error

    def load(self, folder: str, name_prefix: str = ""):
        import torch

        from ..sadtalker_models.video import load_audio

        clips, names = [], []
        for path in _input_audio_files(folder):
            comfy_glue.check_interrupted()
            wave, rate = load_audio(path)
            clips.append({"waveform": torch.from_numpy(wave)[None], "sample_rate": int(rate)})
            names.append(f"{name_prefix}{path.stem}")
        return (clips, names)


NODE_CLASS_MAPPINGS = {"SadTalkerIdleCoefficients": SadTalkerIdleCoefficients,
                       "SadTalkerLoadAudioList": SadTalkerLoadAudioList}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerIdleCoefficients": "SadTalker Idle Coefficients (no speech)",
                              "SadTalkerLoadAudioList": "SadTalker Load Audio List (folder)"}
