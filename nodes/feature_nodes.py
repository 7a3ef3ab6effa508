"""ComfyUI nodes for the extra features of issue 11 (idle clips); thin adapters over the pipeline.

Types are the ones of :mod:`.sadtalker_nodes`; this module only adds nodes.
"""

from __future__ import annotations

from ..sadtalker_models import options
from . import comfy_glue
from .sadtalker_nodes import CATEGORY, COEFFS, FACE, MAX_SEED, MODEL, MOTION_INPUTS, _face, _model_handle, _pipeline


class SadTalkerIdleCoefficients:
    DESCRIPTION = ("Makes N seconds of idle motion without speech: eye blinks, a slight head motion and a closed, "
                   "still mouth (SadTalker's audio networks are given silence). Seeded: the same seed gives the "
                   "same clip. Render it like any other coefficients; the audio output is silence of that length.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (COEFFS,)
    RETURN_NAMES = ("coefficients",)
    FUNCTION = "make"
    OUTPUT_NODE = True  # shows curves (see Audio to Coefficients)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL,),
                "face": (FACE,),
                "seconds": ("FLOAT", {"default": 5.0, "min": 0.04, "max": 600.0, "step": 0.5,
                                      "tooltip": "Length of the idle clip (25 frames a second)."}),
                "pose_style": ("INT", {"default": 0, "min": 0, "max": options.MAX_POSE_STYLE, "step": 1,
                                       "tooltip": "One of SadTalker's 46 head-motion styles."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed for the head motion and the blink timing."}),
                "blink": ("BOOLEAN", {"default": True, "tooltip": "Add eye blinks."}),
            },
            "optional": dict(MOTION_INPUTS),
        }

    def make(self, model, face, seconds: float = 5.0, pose_style: int = 0, seed: int = 0, blink: bool = True,
             head_motion_scale: float = 1.0, blinks_per_minute: float = 0.0):
        handle = _model_handle(model)
        source = _face(face)
        comfy_glue.check_interrupted()
        models = handle.ensure_loaded()
        coeffs = _pipeline().idle_coefficients(
            models, source, float(seconds), pose_style=int(pose_style), seed=int(seed), blink=bool(blink),
            blinks_per_minute=float(blinks_per_minute), head_motion_scale=float(head_motion_scale))
        return {"ui": {"sadtalker_curves": [coeffs.curves()]}, "result": (coeffs,)}


NODE_CLASS_MAPPINGS = {"SadTalkerIdleCoefficients": SadTalkerIdleCoefficients}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerIdleCoefficients": "SadTalker Idle Coefficients (no speech)"}
