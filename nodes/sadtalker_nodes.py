"""ComfyUI nodes for SadTalker: thin adapters over :mod:`sadtalker_models.pipeline`.

Data between nodes:

* ``SADTALKER_MODEL``: :class:`~.comfy_glue.ModelHandle` (models bundle + ModelPatcher);
* ``SADTALKER_FACE``: :class:`sadtalker_models.pipeline.SourceFace` (crop, crop info, source 3DMM);
* ``SADTALKER_COEFFS``: :class:`sadtalker_models.pipeline.Coefficients` (T x 70 at 25 fps + audio);
* ``SADTALKER_REFERENCE``: per-frame 3DMM coefficients ``(N, 73)`` of a reference video.

Torch, numpy and the library are imported inside the node functions, so loading the pack is
instant and a missing optional dependency only breaks the node that needs it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..sadtalker_models import options
from . import comfy_glue

logger = logging.getLogger(__name__)

CATEGORY = "SadTalker"
MODEL = "SADTALKER_MODEL"
FACE = "SADTALKER_FACE"
COEFFS = "SADTALKER_COEFFS"
REFERENCE = "SADTALKER_REFERENCE"

# ComfyUI's combo widgets are lists (of strings, for the sizes)
PREPROCESS_MODES = list(options.PREPROCESS_MODES)
SIZES = [str(size) for size in options.SIZES]
PRECISIONS = list(options.PRECISIONS)
LANDMARK_BACKENDS = list(options.LANDMARK_BACKENDS)
MAX_SEED = 0xFFFF_FFFF_FFFF_FFFF

# head-motion scale and blink rate: on Audio to Coefficients and the Idle Coefficients node
MOTION_INPUTS = {
    "head_motion_scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                    "tooltip": "Head motion around the source pose: 0 = still, 1 = as predicted, "
                                               "more = livelier. Works next to Render's expression_scale."}),
    "blinks_per_minute": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 1.0,
                                    "tooltip": "With blink on: 0 = SadTalker's natural random blinks (about 34 "
                                               "a minute), otherwise about this many blinks a minute."}),
}

# another picture's expression (happy, sad, surprised): on Audio to Coefficients and the Idle Coefficients node
EXPRESSION_REFERENCE_INPUTS = {
    "expression_reference": (FACE, {"tooltip": "Optional: the 'face' of a Face Crop + 3DMM node run on another "
                                               "picture (smiling, sad, surprised...). The lips still follow the "
                                               "speech, around that picture's expression; the source keeps its "
                                               "identity. Shows only with the official weights."}),
    "expression_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.5, "step": 0.05,
                                      "tooltip": "How much of the expression reference: 0 = the source's own "
                                                 "expression (as without a reference), 1 = the reference's, "
                                                 "1.5 = exaggerated. Ignored without expression_reference."}),
}

AUDIO_TOOLTIP = "Speech; any sample rate, channels are mixed down."
POSE_STYLE_TOOLTIP = "One of SadTalker's 46 head-motion styles."
SEED_TOOLTIP = ("Seed for the head-motion noise and the blink timing. Keep it fixed to re-use the cached result "
                "when you run again; change it for another take.")
EXPRESSION_TOOLTIP = "Scales the facial expression (mouth motion)."
BATCH_TOOLTIP = ("Frames rendered at once; higher is faster on a GPU with memory to spare. Cancelling stops after "
                 "the current batch.")
LANDMARK_TOOLTIP = "auto: face_alignment when installed with its weights, else dlib (bundled)."

# the links between the SadTalker nodes, with their tooltips
MODEL_INPUT = (MODEL, {"tooltip": "The SadTalker model: connect 'SadTalker Model Loader'."})
FACE_INPUT = (FACE, {"tooltip": "The prepared source face: the 'face' output of 'SadTalker Face Crop + 3DMM'."})
COEFFS_INPUT = (COEFFS, {"tooltip": "Per-frame motion at 25 fps (with its audio): from Audio to Coefficients, Video "
                                    "to Coefficients, Idle Coefficients or Load Coefficients."})

# Words ComfyUI's node search also matches (the SEARCH_ALIASES class attribute of newer ComfyUI; a plain class
# attribute that older servers never read). Every node gets these, then its own.
SEARCH_WORDS = ["sadtalker", "talking head", "talking face", "lip sync", "avatar", "speech to video",
                "audio to video", "portrait animation", "数字人", "对口型", "说话头像"]

# inputs both render nodes (Render, Render to Video) take
EXPRESSION_INPUT = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05, "tooltip": EXPRESSION_TOOLTIP})
PASTE_BACK_INPUT = ("BOOLEAN", {"default": True,
                                "tooltip": "full/extfull: paste the face back into the whole picture."})
ANGLE_INPUTS = {
    "yaw": ("STRING", {"default": "", "tooltip": "Head yaw path in degrees, e.g. 0,20,-10 (empty = as predicted)."}),
    "pitch": ("STRING", {"default": "", "tooltip": "Head pitch path in degrees, e.g. 0,10."}),
    "roll": ("STRING", {"default": "", "tooltip": "Head roll path in degrees, e.g. -5,5."}),
}

PREPROCESS_TOOLTIP = (
    "crop: the face only (fastest, square output). extcrop: the face with a margin. resize: the whole "
    "picture squashed to a square (for already-cropped portraits). full: animate the face and paste it "
    "back into the whole picture. extfull: like full with a larger pasted region."
)


def _pipeline():
    from ..sadtalker_models import pipeline

    return pipeline


def _require(value: Any, cls: type, what: str, hint: str) -> Any:
    if not isinstance(value, cls):
        raise ValueError(f"The {what} input got {type(value).__name__}; {hint}")
    return value


def _model_handle(model: Any) -> comfy_glue.ModelHandle:
    return _require(model, comfy_glue.ModelHandle, "model",
                    "connect the output of 'SadTalker Model Loader'.")


def _face(face: Any):
    return _require(face, _pipeline().SourceFace, "face", "connect the 'face' output of 'SadTalker Face Crop + 3DMM'.")


def _expression_face(face: Any):
    """The optional expression reference: None, or a prepared face (its coeff_3dmm is used)."""
    if face is None:
        return None
    return _require(face, _pipeline().SourceFace, "expression_reference",
                    "connect the 'face' output of a 'SadTalker Face Crop + 3DMM' node run on the expression picture.")


def _coeffs(coeffs: Any):
    return _require(coeffs, _pipeline().Coefficients, "coefficients",
                    "connect an 'Audio to Coefficients', 'Video to Coefficients' or 'Load Coefficients' node.")


def _reference(ref: Any, what: str):
    import torch

    if ref is None:
        return None
    if not isinstance(ref, torch.Tensor) or ref.ndim != 2 or ref.shape[1] != 73:
        raise ValueError(f"The {what} input must come from 'SadTalker Video to Coefficients'.")
    return ref


def _first_image(image: Any, what: str = "image"):
    """First frame of a ComfyUI IMAGE batch ``[B, H, W, C]`` as an ``(H, W, 3)`` uint8 array (refused
    before any model loads when it is too small, too large, or holds NaN)."""
    import torch

    if not isinstance(image, torch.Tensor):
        raise ValueError(f"The {what} input must be an IMAGE (connect a Load Image node), got {type(image).__name__}.")
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] == 0 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"The {what} must be an IMAGE batch [B, H, W, C]; got shape {tuple(image.shape)}.")
    if image.shape[0] > 1:
        logger.info("SadTalker: the %s batch has %d images; only the first is used.", what, image.shape[0])
    from ..sadtalker_models.face.landmarks import to_rgb_uint8
    from ..sadtalker_models.video import check_picture_pixels

    frame = image[0].detach().cpu()
    if not frame.is_floating_point():
        raise ValueError(f"The {what} must be a float IMAGE in 0..1 (connect a Load Image node), got {frame.dtype}.")
    if frame.dtype not in (torch.float32, torch.float64):
        frame = frame.float()
    width, height = frame.shape[1], frame.shape[0]
    check_picture_pixels(width, height, f"The {what}")
    return to_rgb_uint8(frame.numpy(), what)   # converted in blocks of rows: one uint8 copy of a huge picture


def _audio(audio: Any) -> tuple[Any, int]:
    """(waveform [1, C, n] tensor, sample rate) from ComfyUI's AUDIO dict, with readable errors."""
    import torch

    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError("The audio input must be ComfyUI AUDIO (connect a Load Audio node).")
    wave = audio["waveform"]
    if not isinstance(wave, torch.Tensor):
        raise ValueError(f"The audio waveform must be a tensor, got {type(wave).__name__}.")
    if wave.ndim == 3 and wave.shape[0] > 1:
        logger.info("SadTalker: the audio batch has %d clips; only the first is used.", wave.shape[0])
        wave = wave[:1]
    if wave.numel() == 0 or wave.shape[-1] == 0:
        raise ValueError("The audio is empty; load a speech clip of at least 40 ms.")
    return wave, int(audio["sample_rate"])


#: Longest side of the 'faces' preview; a larger picture's preview is scaled down (a 100-MP picture
#: would otherwise be a 1.2 GB float IMAGE just to show the boxes).
PREVIEW_MAX_SIDE = 2048


def _preview_size(image):
    """``(H, W, 3)`` uint8, scaled down (INTER_AREA) so its longer side is at most PREVIEW_MAX_SIDE."""
    import cv2

    h, w = image.shape[:2]
    scale = PREVIEW_MAX_SIDE / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _to_image_tensor(frames):
    """uint8 ``(T, H, W, 3)`` numpy -> ComfyUI IMAGE float32 ``[T, H, W, 3]`` in 0..1."""
    import torch

    return torch.from_numpy(frames).float().div_(255.0)


# --------------------------------------------------------------------------- model


class SadTalkerModelLoader:
    DESCRIPTION = ("Loads a SadTalker checkpoint from ComfyUI/models/sadtalker; the two mapping_*.pth.tar files "
                   "are read from the same folder when needed. Loaded models are cached and ComfyUI can move "
                   "them off the GPU when another model needs the memory.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The SadTalker networks for the other SadTalker nodes. Cached: the same file, device and "
                       "precision load once.",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "load sadtalker", "model loader", "checkpoint", "safetensors"]
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = comfy_glue.checkpoint_names()
        return {"required": {
            "checkpoint": (names or ["SadTalker_V0.0.2_256.safetensors"], {
                "tooltip": "SadTalker_V0.0.2_256 or _512.safetensors in ComfyUI/models/sadtalker, next to "
                           "mapping_00229-model.pth.tar and mapping_00109-model.pth.tar."}),
            "precision": (PRECISIONS, {
                "default": "auto",
                "tooltip": "Renderer precision. auto = fp16 where ComfyUI uses fp16 on this GPU, else fp32; on "
                           "a CPU bf16 where it has AMX (about 4.5x faster), else fp32. The audio-to-motion "
                           "networks always run in fp32."}),
        }}

    def load(self, checkpoint: str, precision: str = "auto"):
        from ..sadtalker_models.model_cache import MODEL_CACHE, make_key

        pipeline = _pipeline()
        path = comfy_glue.checkpoint_path(checkpoint)
        load_device, offload_device = comfy_glue.torch_devices()
        dtype = (comfy_glue.auto_dtype(load_device) if precision == "auto" else None) \
            or pipeline.resolve_dtype(precision, load_device)
        key = make_key("comfy-sadtalker", [path], load_device, dtype)

        def load() -> comfy_glue.ModelHandle:
            models = pipeline.load_models(path, device=offload_device, precision=dtype, cache=None)
            patcher = comfy_glue.make_patcher(models.container, load_device, offload_device)
            return comfy_glue.ModelHandle(models, patcher, load_device, offload_device, os.path.basename(path))

        return (MODEL_CACHE.get_or_load(key, load),)


# --------------------------------------------------------------------------- face


class SadTalkerFaceCrop:
    DESCRIPTION = ("Finds the face in the source picture, crops it as the chosen mode says and extracts its 3D face "
                   "coefficients. Only the first image of a batch is used. Outputs the face for the other "
                   "SadTalker nodes and the crop as an image for preview.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (FACE, "IMAGE", "IMAGE")
    RETURN_NAMES = ("face", "crop", "faces")
    OUTPUT_TOOLTIPS = ("The chosen face for the other SadTalker nodes.", "The face crop the renderer animates.",
                       "The picture with every face found and its index; the chosen face in green (at most "
                       f"{PREVIEW_MAX_SIDE} px on the longer side).")
    SEARCH_ALIASES = [*SEARCH_WORDS, "face crop", "face detect", "3dmm", "face reconstruction", "source face",
                      "face index", "choose face", "人脸裁剪"]
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": MODEL_INPUT,
            "image": ("IMAGE", {"tooltip": "The source picture with one visible face. Only the first image of a "
                                           "batch is used."}),
            "preprocess": (PREPROCESS_MODES, {"default": "crop", "tooltip": PREPROCESS_TOOLTIP}),
            "size": (SIZES, {"default": "256", "tooltip": "Crop/render size. Use the size of the checkpoint "
                                                          "(256 for SadTalker_V0.0.2_256)."}),
            "landmark_backend": (LANDMARK_BACKENDS, {
                "default": "auto", "tooltip": LANDMARK_TOOLTIP}),
        }, "optional": {
            "face_index": ("INT", {"default": -1, "min": -1, "max": 99, "step": 1,
                                   "tooltip": "Which face talks: -1 = the largest; 0, 1, 2, ... = faces from left to "
                                              "right (the numbers drawn on the 'faces' output)."}),
            "mask": ("MASK", {"tooltip": "Optional: the face inside this mask talks (overrides face_index)."}),
        }}

    def prepare(self, model, image, preprocess: str = "crop", size: str = "256", landmark_backend: str = "auto",
                face_index: int = -1, mask=None):
        from ..sadtalker_models.face.select import draw_faces, mask_to_array

        handle = _model_handle(model)
        picture = _first_image(image, "image")
        if mask is not None:   # any MASK shape; checked before the model loads
            mask = mask_to_array(mask, *picture.shape[:2])
        comfy_glue.check_interrupted()
        models = handle.ensure_loaded()
        face = _pipeline().prepare_face(models, picture, preprocess, int(size), landmark_backend,
                                        face_index=int(face_index), mask=mask)
        crop = _to_image_tensor(face.crop[None])
        faces = draw_faces(face.original, face.data.faces, face.data.face_index)
        return (face, crop, _to_image_tensor(_preview_size(faces)[None]))


# --------------------------------------------------------------------------- coefficients


class SadTalkerAudioToCoefficients:
    DESCRIPTION = ("Turns speech into per-frame motion (expression, head pose, eye blinks) at 25 fps with "
                   "SadTalker's ExpNet and PoseVAE. The audio travels with the coefficients so Render can output "
                   "it trimmed to the video length. Optional reference coefficients copy head motion and/or "
                   "blinks from a video; an optional expression reference (another picture's face) makes the face "
                   "talk with that picture's expression. The curves' 'expression Δ' line is each frame's L2 distance "
                   "from the source's own expression (64 coefficients).")
    CATEGORY = CATEGORY
    RETURN_TYPES = (COEFFS,)
    RETURN_NAMES = ("coefficients",)
    OUTPUT_TOOLTIPS = ("Per-frame motion at 25 fps (expression, head pose, blinks) carrying the speech: connect it "
                       "to Render, Render to Video or Save Coefficients.",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "coefficients", "3dmm", "audio to motion", "speech to motion", "head pose",
                      "blink", "expression", "expnet", "posevae", "音频驱动"]
    FUNCTION = "predict"
    OUTPUT_NODE = True  # its curves are an output: ComfyUI re-sends them when a re-run is served from cache

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "face": FACE_INPUT,
                "audio": ("AUDIO", {"tooltip": AUDIO_TOOLTIP}),
                "pose_style": ("INT", {"default": 0, "min": 0, "max": options.MAX_POSE_STYLE, "step": 1, "tooltip": POSE_STYLE_TOOLTIP}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": SEED_TOOLTIP}),
                "blink": ("BOOLEAN", {"default": True, "tooltip": "Add random eye blinks."}),
                "still": ("BOOLEAN", {"default": False,
                                      "tooltip": "Keep the head pose of the source picture (less head motion; best "
                                                 "with full/extfull)."}),
            },
            "optional": {
                "ref_pose": (REFERENCE, {"tooltip": "Add the head motion of a reference video."}),
                "ref_eyeblink": (REFERENCE, {"tooltip": "Take blinks and eye motion from a reference video."}),
                **MOTION_INPUTS,
                **EXPRESSION_REFERENCE_INPUTS,
            },
        }

    def predict(self, model, face, audio, pose_style: int = 0, seed: int = 0, blink: bool = True,
                still: bool = False, ref_pose=None, ref_eyeblink=None, head_motion_scale: float = 1.0,
                blinks_per_minute: float = 0.0, expression_reference=None, expression_strength: float = 1.0):
        handle = _model_handle(model)
        source = _face(face)
        expression = _expression_face(expression_reference)
        wave, rate = _audio(audio)
        comfy_glue.check_interrupted()
        models = handle.ensure_loaded()
        coeffs = _pipeline().audio_to_coefficients(
            models, source, wave, rate, pose_style=int(pose_style), seed=int(seed), blink=bool(blink),
            still=bool(still), ref_pose=_reference(ref_pose, "ref_pose"),
            ref_eyeblink=_reference(ref_eyeblink, "ref_eyeblink"), head_motion_scale=float(head_motion_scale),
            blinks_per_minute=float(blinks_per_minute), expression_reference=expression,
            expression_strength=float(expression_strength))
        return {"ui": {"sadtalker_curves": [coeffs.curves()]}, "result": (coeffs,)}


class SadTalkerReferenceToCoefficients:
    DESCRIPTION = ("Extracts per-frame 3D face coefficients from a reference video: core Load Video's VIDEO "
                   "(read frame by frame, never all at once), or an IMAGE batch (Get Video Components, or "
                   "VideoHelperSuite's Load Video). Connect 'reference' to the ref_pose / ref_eyeblink inputs of "
                   "Audio to Coefficients, or render 'coefficients' directly to copy the video's expression and pose.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (REFERENCE, COEFFS)
    RETURN_NAMES = ("reference", "coefficients")
    OUTPUT_TOOLTIPS = ("The video's per-frame 3D face coefficients: connect to ref_pose / ref_eyeblink of Audio to "
                       "Coefficients.",
                       "The video's expression and head pose as coefficients (with the audio when there is one): "
                       "render them to copy the video's motion.")
    SEARCH_ALIASES = [*SEARCH_WORDS, "reference video", "video to coefficients", "coefficients", "3dmm", "head pose",
                      "blink", "motion transfer", "face reenactment", "ref_pose", "ref_eyeblink", "参考视频"]
    FUNCTION = "extract"
    OUTPUT_NODE = True  # shows curves (see Audio to Coefficients)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "preprocess": (PREPROCESS_MODES, {"default": "crop",
                                                  "tooltip": "Crop the video like the source picture."}),
                "landmark_backend": (LANDMARK_BACKENDS, {"default": "auto", "tooltip": LANDMARK_TOOLTIP}),
                "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                       "tooltip": "Use at most this many frames (0 = all)."}),
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": "The reference video from core Load Video, read frame by frame "
                                               "(best at 25 fps). Its sound is carried with 'coefficients' when "
                                               "no audio is connected."}),
                "images": ("IMAGE", {"tooltip": "Or the frames of the reference video as an IMAGE batch (read at "
                                                "25 fps for best timing)."}),
                "audio": ("AUDIO", {"tooltip": "Optional: carried with 'coefficients' (whose length then follows "
                                               "the audio) so Render outputs it."}),
            },
        }

    def extract(self, model, images=None, preprocess: str = "crop", landmark_backend: str = "auto",
                max_frames: int = 0, audio=None, video=None):
        import torch

        handle = _model_handle(model)
        if video is not None and images is not None:
            raise ValueError("Connect either 'video' or 'images' to the reference node, not both.")
        if video is None:
            if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
                raise ValueError("Connect a reference video: core Load Video's VIDEO to 'video', or a non-empty IMAGE "
                                 "batch [frames, H, W, C] to 'images'.")
            frames, count, carried = iter(images), len(images), None
            source = None
        else:
            source = _VideoSource(video)
            frames, count, carried = source.frames(), source.frame_count, source.audio()
        try:
            comfy_glue.check_interrupted()
            models = handle.ensure_loaded()
            pipeline = _pipeline()
            limit = int(max_frames) or None
            total = min(count, limit or count)   # a VIDEO's count is estimated from its duration
            progress = comfy_glue.progress_callback(total)

            def reported():  # landmarks + ReconNet per frame: report progress and honour Cancel as it goes
                for i, frame in enumerate(frames):
                    if limit is not None and i >= limit:
                        break
                    if i % 8 == 0:
                        progress(min(i, total), total)
                    yield frame
                progress(total, total)

            ref = pipeline.reference_coefficients(models, reported(), landmark_backend,
                                                  max_frames=int(max_frames) or None, preprocess=preprocess)
        finally:
            if source is not None:
                source.close()
        if audio is not None:
            carried = pipeline.as_audio(*_audio(audio))
        coeffs = pipeline.coefficients_from_reference(ref, audio=carried)
        return {"ui": {"sadtalker_curves": [coeffs.curves()]}, "result": (ref, coeffs)}


class _VideoSource:
    """A ComfyUI VIDEO read frame by frame with ffmpeg: its file, or its in-memory bytes written once to a
    temporary file (removed by :meth:`close`)."""

    def __init__(self, video: Any) -> None:
        import tempfile

        from ..sadtalker_models.video import probe

        if not hasattr(video, "get_stream_source"):
            raise ValueError(f"The video input must be a VIDEO (connect core Load Video), got {type(video).__name__}.")
        stream = video.get_stream_source()
        self._temp = None
        if isinstance(stream, (str, os.PathLike)):
            self.path = os.fspath(stream)
        else:   # BytesIO: ffmpeg reads files
            with tempfile.NamedTemporaryFile(prefix="sadtalker_ref_", suffix=".mp4", delete=False) as handle:
                stream.seek(0)
                while chunk := stream.read(1 << 20):
                    handle.write(chunk)
            self.path = self._temp = handle.name
        info = probe(self.path)
        if not info.video:
            self.close()
            raise ValueError("The reference VIDEO has no video stream; load a video of a face.")
        self.info = info
        self.frame_count = max(1, round((info.duration or 0) * (info.fps or 25.0)))
        if info.fps and abs(info.fps - 25.0) > 0.01:
            logger.warning("SadTalker: the reference video runs at %.2f fps; its frames are used as 25-fps frames.",
                           info.fps)

    def frames(self):
        """RGB uint8 ``(H, W, 3)`` frames, decoded one at a time."""
        from ..sadtalker_models.video import read_video

        frames, _fps = read_video(self.path)
        return frames

    def audio(self):
        """The video's sound as the library's Audio, or None when it has none."""
        from ..sadtalker_models.video import load_audio

        if not self.info.audio:
            return None
        return _pipeline().as_audio(*load_audio(self.path))

    def close(self) -> None:
        if self._temp is not None:
            try:
                os.unlink(self._temp)
            except OSError:
                pass
            self._temp = None


# --------------------------------------------------------------------------- render


class SadTalkerRender:
    DESCRIPTION = ("Renders the talking-head frames. Outputs IMAGE frames, the audio trimmed to the frame count "
                   "and the frame rate (25) - plug them into Create Video -> Save Video, or VideoHelperSuite's "
                   "Video Combine. full/extfull faces are pasted back into the whole picture.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("The rendered frames as an IMAGE batch, one per coefficient frame.",
                       "The coefficients' audio cut or padded to the frames (silence when they carry none).",
                       "Frames per second (25): connect to Create Video's fps or Video Combine's frame_rate.")
    SEARCH_ALIASES = [*SEARCH_WORDS, "render", "animate face", "frames", "paste back", "two people", "渲染"]
    FUNCTION = "render"
    OUTPUT_NODE = True  # its preview video is an output: ComfyUI re-sends it when a re-run is served from cache

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "face": FACE_INPUT,
                "coefficients": COEFFS_INPUT,
                "expression_scale": EXPRESSION_INPUT,
                "batch_size": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": BATCH_TOOLTIP}),
                "paste_back": PASTE_BACK_INPUT,
            },
            "optional": {
                **ANGLE_INPUTS,
                "background": ("IMAGE", {"tooltip": "Optional (full/extfull): paste onto these frames instead of the "
                                                    "still picture - the images of another face's Render of the same "
                                                    "picture, so two faces talk. Frame i goes onto background frame i "
                                                    "(the last one when it runs out)."}),
            },
        }

    def render(self, model, face, coefficients, expression_scale: float = 1.0, batch_size: int = 2,
               paste_back: bool = True, yaw: str = "", pitch: str = "", roll: str = "", background=None):
        return _render_images(_model_handle(model), _face(face), _coeffs(coefficients), expression_scale, batch_size,
                              paste_back, yaw=yaw, pitch=pitch, roll=roll, background=background)


def _render_images(handle: comfy_glue.ModelHandle, source, coeffs, expression_scale: float = 1.0,
                   batch_size: int = 2, paste_back: bool = True, yaw: str = "", pitch: str = "", roll: str = "",
                   background=None) -> dict:
    """Render's work: frames as IMAGE ``[T, H, W, 3]``, the audio cut to them, the fps, and the preview."""
    import torch

    pipeline = _pipeline()
    comfy_glue.check_interrupted()
    models = handle.ensure_loaded()
    progress = comfy_glue.progress_callback(coeffs.num_frames)
    total = coeffs.num_frames
    width, height = pipeline.output_size(source, paste_back=bool(paste_back))
    # the IMAGE output is filled batch by batch: no list of batches, no concatenated copy
    images = torch.empty((total, height, width, 3), dtype=torch.float32)
    audio = _audio_output(coeffs, total)
    preview = _Preview(audio, coeffs.fps)
    done = 0
    try:
        for batch in pipeline.render_frames(
                models, source, coeffs, expression_scale=float(expression_scale), batch_size=int(batch_size),
                yaw=yaw, pitch=pitch, roll=roll, paste_back=bool(paste_back), progress=progress,
                background=background):
            images[done:done + len(batch)] = _to_image_tensor(batch)
            preview.write(batch)
            done += len(batch)
            progress.show(done, total, batch[-1])   # the video forms on the node as it renders
    except BaseException:
        preview.abort()
        raise
    finally:
        comfy_glue.release_cache()
    return {"ui": preview.close(), "result": (images, audio, float(coeffs.fps))}


def _audio_output(coeffs, num_frames: int) -> dict:
    """The coefficients' audio (silence when they carry none) cut or padded to ``num_frames`` frames,
    as ComfyUI AUDIO ``{"waveform": [1, C, n], "sample_rate"}``."""
    import numpy as np
    import torch

    from ..sadtalker_models.video import fit_audio

    wave, rate = coeffs.audio or (np.zeros((1, 0), np.float32), 16000)
    fitted = np.ascontiguousarray(fit_audio(wave, rate, num_frames, coeffs.fps))
    return {"waveform": torch.from_numpy(fitted)[None], "sample_rate": int(rate)}


class _Preview:
    """A small mp4 (with sound) in ComfyUI's temp folder for the node's preview widget, written batch by
    batch while rendering. The preview is a convenience: if it fails, rendering goes on without it."""

    def __init__(self, audio: dict, fps: float):
        self.fps = fps
        self.writer = None
        try:
            import folder_paths

            from ..sadtalker_models.video import Mp4Writer

            self.subfolder = "sadtalker"
            temp = os.path.join(folder_paths.get_temp_directory(), self.subfolder)
            os.makedirs(temp, exist_ok=True)
            self.name = f"sadtalker_preview_{os.getpid()}_{_next_preview_id()}.mp4"
            wave = audio["waveform"][0].detach().float().cpu().numpy()
            self.writer = Mp4Writer(os.path.join(temp, self.name), fps=fps, audio=wave,
                                    sample_rate=int(audio["sample_rate"]))
        except Exception:  # noqa: BLE001
            logger.warning("SadTalker: could not start the preview video", exc_info=True)

    def write(self, frames) -> None:
        if self.writer is None:
            return
        try:
            self.writer.write(frames)
        except Exception:  # noqa: BLE001
            logger.warning("SadTalker: could not write the preview video", exc_info=True)
            self.abort()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None

    def close(self) -> dict:
        """Finish the file; returns the node's ``ui`` entry (empty when there is no preview)."""
        if self.writer is None:
            return {}
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            logger.warning("SadTalker: could not finish the preview video", exc_info=True)
            return {}
        return {"sadtalker_video": [{"filename": self.name, "subfolder": self.subfolder, "type": "temp",
                                     "format": "video/mp4", "frame_rate": self.fps}]}


def _next_preview_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


# --------------------------------------------------------------------------- save / load


class SadTalkerSaveCoefficients:
    DESCRIPTION = ("Saves coefficients (and their audio) as a .safetensors file in ComfyUI's output folder, to "
                   "re-render later without the audio model. 'SadTalker Load Coefficients' lists the saved files "
                   "(press R to refresh its list).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()
    SEARCH_ALIASES = [*SEARCH_WORDS, "save coefficients", "save motion", "export motion", "coefficients",
                      "safetensors"]
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "coefficients": COEFFS_INPUT,
            "filename_prefix": ("STRING", {"default": "sadtalker/coeffs",
                                           "tooltip": "Where in ComfyUI/output to save: folder/name; a counter is "
                                                      "added (sadtalker/coeffs -> sadtalker/coeffs_00001_.safetensors)."}),
        }}

    def save(self, coefficients, filename_prefix: str = "sadtalker/coeffs"):
        import folder_paths

        from ..sadtalker_models.coefficient_files import save_coefficients

        coeffs = _coeffs(coefficients)
        out_dir = folder_paths.get_output_directory()
        folder, base, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir)
        name = f"{base}_{counter:05}_.safetensors"  # the trailing "_" lets ComfyUI's counter see this file
        path = os.path.join(folder, name)
        save_coefficients(coeffs, path)
        logger.info("SadTalker: saved %d frames of coefficients to %s; Load Coefficients lists it as %r "
                    "(press R to refresh)", coeffs.num_frames, path, _output_name(subfolder, name))
        return {"ui": {"sadtalker_files": [{"filename": name, "subfolder": subfolder, "type": "output"}],
                       "sadtalker_curves": [coeffs.curves()]}}


class SadTalkerLoadCoefficients:
    DESCRIPTION = ("Loads coefficients saved by 'SadTalker Save Coefficients': the files it wrote to ComfyUI's "
                   "output folder (marked [output]) and any copied into the input folder. Press R to refresh "
                   "the list after saving.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (COEFFS,)
    RETURN_NAMES = ("coefficients",)
    OUTPUT_TOOLTIPS = ("The saved motion with its audio, ready for Render or Render to Video.",)
    SEARCH_ALIASES = [*SEARCH_WORDS, "load coefficients", "load motion", "import motion", "coefficients",
                      "safetensors"]
    FUNCTION = "load"
    OUTPUT_NODE = True  # shows curves (see Audio to Coefficients)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": (_coefficient_files() or [NO_COEFFICIENT_FILES], {
                "tooltip": "A file saved by 'SadTalker Save Coefficients' (in ComfyUI/output, marked [output]) or "
                           "copied into ComfyUI/input. Press R to refresh the list after saving."}),
        }}

    @classmethod
    def IS_CHANGED(cls, file: str):
        path = _coefficient_path(file)
        return os.path.getmtime(path) if path and os.path.isfile(path) else float("nan")

    def load(self, file: str):
        from ..sadtalker_models.coefficient_files import load_coefficients

        path = _coefficient_path(file)
        if not path or not os.path.isfile(path):
            raise ValueError(f"Coefficient file {file!r} was not found in ComfyUI's output or input folder; run "
                             "'SadTalker Save Coefficients' first, then press R to refresh the list and pick the "
                             "saved file.")
        coeffs = load_coefficients(path)
        return {"ui": {"sadtalker_curves": [coeffs.curves()]}, "result": (coeffs,)}


NO_COEFFICIENT_FILES = "(no saved coefficients yet: run Save Coefficients, then press R)"


def _output_name(subfolder: str, filename: str) -> str:
    """How Load Coefficients lists a file Save wrote: ComfyUI's annotated name for the output folder."""
    return f"{os.path.join(subfolder, filename).replace(os.sep, '/')} [output]"


def _coefficient_path(name: str) -> str | None:
    """Full path of a listed name (``x.safetensors`` in input/, ``x.safetensors [output]`` in output/), or
    None when the name points outside its folder."""
    import folder_paths

    name, base = folder_paths.annotated_filepath(name)
    base = os.path.realpath(base or folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        return None
    return path


def _coefficient_files(limit: int = 500) -> list[str]:
    """Coefficient files Load can read: those in ComfyUI's output folder (where Save writes them, listed
    with ComfyUI's ' [output]' mark) and those in the input folder; each sorted by name."""
    import folder_paths

    from ..sadtalker_models.coefficient_files import is_coefficient_file

    listed = []
    for base, mark in ((folder_paths.get_output_directory(), " [output]"), (folder_paths.get_input_directory(), "")):
        found = []
        for root, dirs, files in os.walk(base) if os.path.isdir(base) else ():
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                path = os.path.join(root, f)
                if f.endswith(".safetensors") and is_coefficient_file(path):
                    found.append(os.path.relpath(path, base).replace(os.sep, "/") + mark)
            if len(found) > limit:
                break
        listed += sorted(found)
    return listed


# --------------------------------------------------------------------------- all in one


class SadTalkerSimple:
    DESCRIPTION = ("One-node SadTalker: picture + speech -> frames, audio and fps for Create Video. Uses the first "
                   "image of the batch. For reference videos, enhancement or saving coefficients use the separate "
                   "nodes.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    OUTPUT_TOOLTIPS = ("The rendered frames as an IMAGE batch (25 per second of speech).",
                       "The speech cut or padded to the frames.",
                       "Frames per second (25): connect to Create Video's fps or Video Combine's frame_rate.")
    SEARCH_ALIASES = [*SEARCH_WORDS, "one node", "all in one", "simple", "image and audio", "picture to video",
                      "图片说话"]
    FUNCTION = "run"
    OUTPUT_NODE = True  # preview and curves (see Render)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": MODEL_INPUT,
            "image": ("IMAGE", {"tooltip": "Source picture with one face (first image of the batch is used)."}),
            "audio": ("AUDIO", {"tooltip": AUDIO_TOOLTIP}),
            "preprocess": (PREPROCESS_MODES, {"default": "crop", "tooltip": PREPROCESS_TOOLTIP}),
            "still": ("BOOLEAN", {"default": False, "tooltip": "Keep the source head pose."}),
            "pose_style": ("INT", {"default": 0, "min": 0, "max": options.MAX_POSE_STYLE, "tooltip": POSE_STYLE_TOOLTIP}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": SEED_TOOLTIP}),
            "expression_scale": EXPRESSION_INPUT,
            "batch_size": ("INT", {"default": 2, "min": 1, "max": 64, "tooltip": BATCH_TOOLTIP}),
        }}

    def run(self, model, image, audio, preprocess: str = "crop", still: bool = False, pose_style: int = 0,
            seed: int = 0, expression_scale: float = 1.0, batch_size: int = 2):
        handle = _model_handle(model)
        picture = _first_image(image, "image")
        wave, rate = _audio(audio)
        comfy_glue.check_interrupted()
        models = handle.ensure_loaded()
        pipeline = _pipeline()
        face = pipeline.prepare_face(models, picture, preprocess, models.size, "auto")
        coeffs = pipeline.audio_to_coefficients(models, face, wave, rate, pose_style=int(pose_style), seed=int(seed),
                                                still=bool(still))
        out = _render_images(handle, face, coeffs, expression_scale, batch_size)
        out["ui"]["sadtalker_curves"] = [coeffs.curves()]
        return out


NODE_CLASS_MAPPINGS = {
    "SadTalkerModelLoader": SadTalkerModelLoader,
    "SadTalkerFaceCrop": SadTalkerFaceCrop,
    "SadTalkerAudioToCoefficients": SadTalkerAudioToCoefficients,
    "SadTalkerReferenceToCoefficients": SadTalkerReferenceToCoefficients,
    "SadTalkerRender": SadTalkerRender,
    "SadTalkerSaveCoefficients": SadTalkerSaveCoefficients,
    "SadTalkerLoadCoefficients": SadTalkerLoadCoefficients,
    "SadTalkerSimple": SadTalkerSimple,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SadTalkerModelLoader": "SadTalker Model Loader",
    "SadTalkerFaceCrop": "SadTalker Face Crop + 3DMM",
    "SadTalkerAudioToCoefficients": "SadTalker Audio to Coefficients",
    # was "SadTalker Reference Video to Coefficients" (cut off on the node); the class key stays for saved workflows
    "SadTalkerReferenceToCoefficients": "SadTalker Video to Coefficients",
    "SadTalkerRender": "SadTalker Render",
    "SadTalkerSaveCoefficients": "SadTalker Save Coefficients",
    "SadTalkerLoadCoefficients": "SadTalker Load Coefficients",
    "SadTalkerSimple": "SadTalker (image + audio)",
}
