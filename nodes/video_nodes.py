"""ComfyUI node "SadTalker Render to Video": renders straight into an mp4 and outputs ComfyUI's native VIDEO.

The long-video path: frames are encoded batch by batch while they render (with the audio muxed,
optionally face-enhanced per batch), so memory stays flat however long the speech is. The output
is ``comfy_api.input_impl.VideoFromFile``, the type core Load Video returns, so it goes straight
into core Save Video, Preview Video and Get Video Components. The streaming itself lives in the
library (:mod:`sadtalker_models.render_video`), shared with the CLI.
"""

from __future__ import annotations

import logging
import os
import uuid

from . import comfy_glue
from .sadtalker_nodes import (ANGLE_INPUTS, CATEGORY, COEFFS_INPUT, EXPRESSION_INPUT, FACE_INPUT, LANDMARK_BACKENDS,
                              MODEL_INPUT, PASTE_BACK_INPUT, SEARCH_WORDS, _coeffs, _face, _model_handle)

logger = logging.getLogger(__name__)

FACE_RESTORER = "SADTALKER_FACE_RESTORER"   # what SadTalker Face Restore Model Loader outputs
SUBFOLDER = "sadtalker"


def _video_from_file(path: str):
    """ComfyUI's native VIDEO for an mp4 on disk."""
    try:
        from comfy_api.input_impl import VideoFromFile
    except ImportError as err:
        raise ValueError("This ComfyUI has no native VIDEO type (comfy_api.input_impl); update ComfyUI, or use "
                         "'SadTalker Render' with Create Video / Video Combine instead.") from err
    return VideoFromFile(path)


class SadTalkerRenderVideo:
    DESCRIPTION = ("Renders the talking head straight into an mp4 with the speech, batch by batch, and outputs a "
                   "VIDEO for core Save Video / Preview Video / Get Video Components. Memory stays flat however "
                   "long the audio is: use this for minutes of speech. An optional face restorer enhances every "
                   "batch as it renders. Use 'SadTalker Render' when you need the frames as IMAGE.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    OUTPUT_TOOLTIPS = ("An H.264 mp4 with the speech as ComfyUI's native VIDEO: connect to Save Video, Preview Video "
                       "or Get Video Components.",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "render to video", "mp4", "long video", "save video", "streaming render",
                      "face restore", "gfpgan", "长视频"]
    FUNCTION = "render"
    OUTPUT_NODE = True  # its preview is an output: ComfyUI re-sends it when a re-run is served from cache

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "face": FACE_INPUT,
                "coefficients": COEFFS_INPUT,
                "expression_scale": EXPRESSION_INPUT,
                "batch_size": ("INT", {"default": 2, "min": 1, "max": 64,
                                       "tooltip": "Frames rendered (and encoded) at once; memory holds about one "
                                                  "batch. Cancelling stops after the current batch."}),
                "paste_back": PASTE_BACK_INPUT,
            },
            "optional": {
                "face_restorer": (FACE_RESTORER, {"tooltip": "From 'SadTalker Face Restore Model Loader': "
                                                             "enhance every batch before it is encoded."}),
                "enhance_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                               "tooltip": "Weight of the restored face (with a face restorer)."}),
                "enhance_upscale_2x": ("BOOLEAN", {"default": False,
                                                   "tooltip": "Double the video size as the original enhancer "
                                                              "does (with a face restorer)."}),
                "landmark_backend": (LANDMARK_BACKENDS, {"default": "auto",
                                                         "tooltip": "Landmarks that align faces for the restorer."}),
                **ANGLE_INPUTS,
            },
        }

    def render(self, model, face, coefficients, expression_scale: float = 1.0, batch_size: int = 2,
               paste_back: bool = True, face_restorer=None, enhance_strength: float = 1.0,
               enhance_upscale_2x: bool = False, landmark_backend: str = "auto", yaw: str = "", pitch: str = "",
               roll: str = ""):
        import folder_paths

        from ..sadtalker_models import pipeline
        from ..sadtalker_models.render_video import PREVIEW_MAX_SIDE, render_to_mp4

        handle = _model_handle(model)
        source = _face(face)
        coeffs = _coeffs(coefficients)
        if face_restorer is not None and not hasattr(face_restorer, "restore"):
            raise ValueError("The face_restorer input must come from 'SadTalker Face Restore Model Loader'.")
        comfy_glue.check_interrupted()

        folder = os.path.join(folder_paths.get_temp_directory(), SUBFOLDER)
        os.makedirs(folder, exist_ok=True)
        stem = f"sadtalker_video_{os.getpid()}_{uuid.uuid4().hex[:12]}"
        path = os.path.join(folder, stem + ".mp4")
        upscale = 2 if face_restorer is not None and enhance_upscale_2x else 1
        width, height = pipeline.output_size(source, paste_back=bool(paste_back))
        small = max(width, height) * upscale <= PREVIEW_MAX_SIDE   # the video itself is small enough to preview
        preview_path = None if small else os.path.join(folder, stem + "_preview.mp4")

        models = handle.ensure_loaded()
        detector = None
        if face_restorer is not None:
            from ..sadtalker_models.face.landmarks import make_landmark_detector

            detector = make_landmark_detector(landmark_backend)
            face_restorer.to(models.device)
        progress = comfy_glue.progress_callback(coeffs.num_frames)
        try:
            result = render_to_mp4(
                models, source, coeffs, path, expression_scale=float(expression_scale),
                batch_size=int(batch_size), yaw=yaw, pitch=pitch, roll=roll, paste_back=bool(paste_back),
                progress=progress, on_batch=lambda batch, done: progress.show(done, coeffs.num_frames, batch[-1]),
                restorer=face_restorer,
                detector=detector, enhance_strength=float(enhance_strength), enhance_upscale=upscale,
                preview_path=preview_path, threaded=models.device.type == "cuda")
        finally:
            if face_restorer is not None:
                face_restorer.to(handle.offload_device)
            comfy_glue.release_cache()
        logger.info("SadTalker: wrote %s (%d frames, %dx%d, %.2f s)", result.path, result.frames, result.width,
                    result.height, result.duration)
        shown = result.preview or result.path
        ui = {"sadtalker_video": [{"filename": os.path.basename(shown), "subfolder": SUBFOLDER, "type": "temp",
                                   "format": "video/mp4", "frame_rate": result.fps}]}
        return {"ui": ui, "result": (_video_from_file(str(result.path)),)}


NODE_CLASS_MAPPINGS = {"SadTalkerRenderVideo": SadTalkerRenderVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"SadTalkerRenderVideo": "SadTalker Render to Video"}
