"""ComfyUI nodes for the face enhancer (spec §16): a restorer loader and "SadTalker Face Enhance".

Thin adapters over :mod:`sadtalker_models.enhance`. Nothing heavy is imported at module import:
torch, spandrel and the landmark backends are imported inside the node functions.
The ``facerestore_models`` folder (with ``models/gfpgan`` as an alias) is registered in
``folder_paths`` by the package's ``nodes/__init__.py``.
"""

from __future__ import annotations

import logging

from ..sadtalker_models.options import LANDMARK_BACKENDS
from . import comfy_glue
from .comfy_glue import FACE_RESTORE_FOLDER

logger = logging.getLogger(__name__)

FACE_RESTORER_TYPE = "SADTALKER_FACE_RESTORER"
# words ComfyUI's node search also matches (SEARCH_ALIASES; older servers never read it)
SEARCH_WORDS = ["sadtalker", "talking head", "face restore", "face restoration", "face enhance", "gfpgan",
                "codeformer", "restoreformer", "人脸修复"]
PRECISIONS = ("fp32", "bf16", "fp16")


def _library():
    """``sadtalker_models.enhance`` and ``sadtalker_models.face.landmarks``, imported on first use.

    The pack is always imported as a package (by ComfyUI, and by the tests the same way), so the
    library is reached relative to it.
    """
    from ..sadtalker_models import enhance
    from ..sadtalker_models.face import landmarks

    return enhance, landmarks


class SadTalkerFaceRestoreModelLoader:
    """Load GFPGANv1.4 (or another face-restoration model spandrel recognises) from models/facerestore_models."""

    CATEGORY = "SadTalker"
    RETURN_TYPES = (FACE_RESTORER_TYPE,)
    RETURN_NAMES = ("face_restorer",)
    OUTPUT_TOOLTIPS = ("The face restorer for 'SadTalker Face Enhance' or the face_restorer input of 'SadTalker Render "
                       "to Video' (kept on the CPU until a node uses it).",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "face restore model", "load gfpgan", "facerestore_models", "model loader"]
    FUNCTION = "load"
    DESCRIPTION = (
        "Loads a face-restoration model (GFPGANv1.4.pth as in the original SadTalker enhancer; "
        "RestoreFormer, or CodeFormer when spandrel_extra_arches is installed) from "
        "ComfyUI/models/facerestore_models or models/gfpgan."
    )

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {
            "required": {
                "model_name": (folder_paths.get_filename_list(FACE_RESTORE_FOLDER), {
                    "tooltip": "GFPGANv1.4.pth from https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
                }),
                "precision": (list(PRECISIONS), {
                    "default": "fp32",
                    "tooltip": "Weights dtype. GFPGAN has no fp16 support and falls back to fp32; bf16 is faster on recent GPUs.",
                }),
            }
        }

    def load(self, model_name: str, precision: str = "fp32"):
        import folder_paths

        enhance, _ = _library()
        path = folder_paths.get_full_path(FACE_RESTORE_FOLDER, model_name) if model_name else None
        if path is None:
            raise enhance.FaceRestorerError(enhance.missing_restorer_message(f"models/{FACE_RESTORE_FOLDER}/{model_name}"))
        # kept on the CPU until a Face Enhance node runs, so it holds no VRAM between runs
        from ..sadtalker_models.precision import resolve_dtype

        dtype = resolve_dtype(precision, comfy_glue.torch_devices()[0])  # fp32 where it would crawl
        restorer = enhance.load_face_restorer(path, device="cpu", dtype=dtype)
        return (restorer,)


class SadTalkerFaceEnhance:
    """Restore the face of every frame (GFPGAN & co.) and blend it back, optionally at twice the size."""

    CATEGORY = "SadTalker"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames with their faces restored (twice the size with upscale_2x); frames without a "
                       "face pass through unchanged.",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "enhancer", "sharpen face", "upscale face", "face fix", "人脸增强"]
    FUNCTION = "enhance"
    DESCRIPTION = (
        "Face enhancement of the original SadTalker (--enhancer gfpgan): each frame's face is "
        "aligned to the FFHQ template from its landmarks, restored, and blended back with a "
        "feathered mask. Frames without a face pass through unchanged."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to restore, e.g. the images output of SadTalker Render."}),
                "face_restorer": (FACE_RESTORER_TYPE, {
                    "tooltip": "The restorer from 'SadTalker Face Restore Model Loader' (GFPGANv1.4 or another).",
                }),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                    "tooltip": "Weight of the restored face in the blend; 0 leaves the frames unchanged.",
                }),
                "upscale_2x": ("BOOLEAN", {
                    # off by default (as in the example): frames keep Render's size, so memory and encoding
                    # time stay as they are; the original enhancer's doubled size is one click away
                    "default": False,
                    "tooltip": "Double the output size as the original SadTalker enhancer does (Lanczos "
                               "background). Off keeps Render's frame size: 4x less memory and encoding time.",
                }),
                "batch_size": ("INT", {
                    "default": 4, "min": 1, "max": 64,
                    "tooltip": "Faces restored per network call.",
                }),
            },
            "optional": {
                "landmark_backend": (list(LANDMARK_BACKENDS), {
                    "default": "auto",
                    "tooltip": "Face landmark detector used to align each frame.",
                }),
            },
        }

    def enhance(self, images, face_restorer, strength: float, upscale_2x: bool, batch_size: int,
                landmark_backend: str = "auto"):
        enhance, landmarks = _library()
        total = int(images.shape[0])
        detector = landmarks.make_landmark_detector(landmark_backend)
        progress = comfy_glue.progress_callback(total)

        comfy_glue.check_interrupted()
        device, offload_device = comfy_glue.torch_devices()
        comfy_glue.make_room(face_restorer.descriptor.model, device)
        face_restorer.to(device)
        try:
            frames, stats = enhance.enhance_frames(
                images, face_restorer, detector,
                strength=float(strength), upscale=2 if upscale_2x else 1,
                batch_size=int(batch_size), progress=progress,
            )
        finally:
            face_restorer.to(offload_device)
            comfy_glue.release_cache()
        if stats.skipped_frames:
            logger.warning(
                "SadTalker Face Enhance: %d of %d frames had no detectable face and were left unchanged",
                stats.skipped_frames, stats.total_frames,
            )
        return (frames.float(),)


NODE_CLASS_MAPPINGS = {
    "SadTalkerFaceRestoreModelLoader": SadTalkerFaceRestoreModelLoader,
    "SadTalkerFaceEnhance": SadTalkerFaceEnhance,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SadTalkerFaceRestoreModelLoader": "SadTalker Face Restore Model Loader",
    "SadTalkerFaceEnhance": "SadTalker Face Enhance",
}
