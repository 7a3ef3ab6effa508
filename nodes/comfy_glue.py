"""The few places where the pack talks to ComfyUI: model folders, devices, ModelPatcher, progress.

Every ``comfy`` import happens inside a function, so this module imports anywhere (and the
library under it never sees ComfyUI).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

SADTALKER_FOLDER = "sadtalker"
FACE_RESTORE_FOLDER = "facerestore_models"
SADTALKER_EXTENSIONS = {".safetensors"}
FACE_RESTORE_EXTENSIONS = {".pth", ".safetensors", ".ckpt", ".pt", ".bin"}


def register_model_folders() -> None:
    """Register ``models/sadtalker`` and ``models/facerestore_models`` (+ ``models/gfpgan``) with folder_paths.

    Paths already registered (by extra_model_paths.yaml or another pack) are kept; ours are added
    beside them, and file extensions are merged.
    """
    import folder_paths

    base = folder_paths.models_dir
    _add_folder(folder_paths, SADTALKER_FOLDER, [os.path.join(base, "sadtalker")], SADTALKER_EXTENSIONS)
    _add_folder(folder_paths, FACE_RESTORE_FOLDER,
                [os.path.join(base, "facerestore_models"), os.path.join(base, "gfpgan")], FACE_RESTORE_EXTENSIONS)


def _add_folder(folder_paths: Any, name: str, paths: list[str], extensions: set[str]) -> None:
    table = folder_paths.folder_names_and_paths
    if name in table:
        known, exts = table[name]
        for path in paths:
            if path not in known:
                known.append(path)
        if isinstance(exts, set) and exts:
            exts.update(extensions)
        elif isinstance(exts, set):
            # an empty set means "all files" to folder_paths; keep that meaning
            pass
    else:
        table[name] = (list(paths), set(extensions))
    cache = getattr(folder_paths, "filename_list_cache", None)
    if isinstance(cache, dict):
        cache.pop(name, None)


#: The pack's example inputs (the files the example workflows load), copied into ComfyUI/input.
EXAMPLE_INPUTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")


def install_example_inputs(source: str = EXAMPLE_INPUTS) -> list[str]:
    """Copy every example input into ComfyUI's input folder (same relative names) unless a file of that
    name is already there, so the example workflows run as loaded. A file is first written under a
    temporary name, then linked into place only if the name is still free: a user's file is never
    replaced. Returns the relative names copied. Skipped when $SADTALKER_NO_EXAMPLE_INPUTS is set."""
    import folder_paths

    from ..sadtalker_models.video import temp_path_beside

    if os.environ.get("SADTALKER_NO_EXAMPLE_INPUTS") or not os.path.isdir(source):
        return []
    target = folder_paths.get_input_directory()
    copied = []
    for root, _dirs, files in os.walk(source):
        for name in sorted(files):
            if name == "README.md":
                continue
            relative = os.path.relpath(os.path.join(root, name), source)
            dest = os.path.join(target, relative)
            if os.path.lexists(dest):
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = temp_path_beside(dest, "copy")
            try:
                shutil.copyfile(os.path.join(root, name), tmp)
                try:
                    os.link(tmp, dest)            # fails if the name was taken meanwhile: nothing replaced
                except FileExistsError:
                    continue
                except OSError:                   # no hard links on this file system
                    if os.path.lexists(dest):
                        continue
                    os.replace(tmp, dest)
                copied.append(relative.replace(os.sep, "/"))
            finally:
                tmp.unlink(missing_ok=True)
    if copied:
        logger.info("SadTalker: copied the example inputs %s into %s", ", ".join(copied), target)
    return copied


def checkpoint_names() -> list[str]:
    """SadTalker checkpoints found in the registered folders (official names first)."""
    import folder_paths

    try:
        names = list(folder_paths.get_filename_list(SADTALKER_FOLDER))
    except KeyError:
        names = []
    names = [n for n in names if n.lower().endswith(".safetensors")]
    return sorted(names, key=lambda n: (not os.path.basename(n).startswith("SadTalker_V0.0.2_"), n))


def checkpoint_path(name: str) -> str:
    """Full path of a checkpoint name from the dropdown, or a readable error naming the folders."""
    import folder_paths

    path = folder_paths.get_full_path(SADTALKER_FOLDER, name) if name else None
    if path is None or not os.path.isfile(path):
        from ..sadtalker_models.official_files import RELEASE_URL

        folders = ", ".join(folder_paths.get_folder_paths(SADTALKER_FOLDER))
        raise ValueError(
            f"SadTalker checkpoint {name!r} was not found in {folders}. Put SadTalker_V0.0.2_256.safetensors "
            f"and both mapping_*.pth.tar files there (from {RELEASE_URL}), or run "
            "`python -m sadtalker_models download --models-dir ComfyUI/models/sadtalker`, then press R to refresh."
        )
    return path


def torch_devices() -> tuple[Any, Any]:
    """(load device, offload device) from comfy.model_management."""
    import comfy.model_management as mm

    load = mm.get_torch_device()
    offload = mm.unet_offload_device() if hasattr(mm, "unet_offload_device") else load
    return load, offload


def auto_dtype(load_device: Any) -> Any | None:
    """On a GPU: fp16 where ComfyUI itself would use it on ``load_device`` (it knows the GPUs where
    fp16 is broken or slow), else fp32; None when this ComfyUI cannot say. On a CPU: the library's
    choice (bf16 with AMX-BF16, else fp32)."""
    import comfy.model_management as mm
    import torch

    from ..sadtalker_models.precision import auto_dtype as library_auto_dtype

    if torch.device(load_device).type == "cpu":
        return library_auto_dtype(load_device)
    should_use_fp16 = getattr(mm, "should_use_fp16", None)
    if should_use_fp16 is None:
        return None
    return torch.float16 if should_use_fp16(load_device) else torch.float32


def make_patcher(module: Any, load_device: Any, offload_device: Any) -> Any | None:
    """A ``comfy.model_patcher.ModelPatcher`` around ``module``, or None where there is none."""
    try:
        from comfy.model_patcher import ModelPatcher
    except ImportError:
        logger.debug("comfy.model_patcher is not available; SadTalker models stay where they are loaded")
        return None
    try:
        return ModelPatcher(module, load_device=load_device, offload_device=offload_device)
    except Exception:  # noqa: BLE001 - an unexpected ModelPatcher must not stop the pack
        logger.warning("Could not wrap the SadTalker models in a ModelPatcher; ComfyUI will not offload them",
                       exc_info=True)
        return None


@dataclass
class ModelHandle:
    """What the model loader outputs: the library's models bundle plus ComfyUI's patcher for it."""

    models: Any             # sadtalker_models.pipeline.SadTalkerModels
    patcher: Any | None     # comfy.model_patcher.ModelPatcher or None
    load_device: Any
    offload_device: Any
    name: str = ""

    def __repr__(self) -> str:
        return f"SadTalker model {self.name or self.models.checkpoint.name} ({self.models.dtype}, {self.load_device})"

    def ensure_loaded(self) -> Any:
        """Put the networks on the load device (through ComfyUI's model management); return the models."""
        import comfy.model_management as mm

        if self.patcher is not None:
            if hasattr(self.patcher, "size"):
                self.patcher.size = 0   # re-measure: a mapping net may have been added since
            try:
                mm.load_models_gpu([self.patcher], force_full_load=True)
            except TypeError:
                mm.load_models_gpu([self.patcher])
        else:
            self.models.container.to(self.load_device)
        self.models.device = self.models.current_device()
        return self.models


#: Longest side of the live frame shown on a node while it renders.
LIVE_PREVIEW_MAX_SIDE = 512


class Progress:
    """A ComfyUI ProgressBar for one node's run. ``progress(done, total)`` moves it (the library's
    progress callbacks); :meth:`show` also sends a frame as the node's live preview. Both raise when
    the user cancels."""

    def __init__(self, total: int) -> None:
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(max(1, int(total)))

    def __call__(self, done: int, of: int) -> None:
        import comfy.model_management as mm

        self.bar.update_absolute(int(done), max(1, int(of)))
        mm.throw_exception_if_processing_interrupted()

    def show(self, done: int, of: int, frame: Any) -> None:
        """Progress with ``frame`` ``(H, W, 3)`` uint8 as the preview (a JPEG at most
        LIVE_PREVIEW_MAX_SIDE px, as ComfyUI's samplers send theirs)."""
        import comfy.model_management as mm
        from PIL import Image

        image = Image.fromarray(frame)
        self.bar.update_absolute(int(done), max(1, int(of)), ("JPEG", image, LIVE_PREVIEW_MAX_SIDE))
        mm.throw_exception_if_processing_interrupted()


def progress_callback(total: int) -> Progress:
    """A :class:`Progress` for ``total`` steps: ``progress(done, total)`` moves ComfyUI's bar and
    raises when the user cancels; ``progress.show(done, total, frame)`` adds a live preview."""
    return Progress(total)


def make_room(module: Any, device: Any) -> None:
    """Ask ComfyUI to free memory on ``device`` for ``module`` (its weights plus working room)
    before it is moved there, the way ComfyUI frees room for its own models."""
    import comfy.model_management as mm

    free_memory = getattr(mm, "free_memory", None)
    if free_memory is not None:
        weights = sum(p.numel() * p.element_size() for p in module.parameters())
        free_memory(3 * weights + (1 << 30), device)


def check_interrupted() -> None:
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


def release_cache() -> None:
    """Give cached GPU blocks back after a render (ComfyUI's soft_empty_cache)."""
    import comfy.model_management as mm

    empty = getattr(mm, "soft_empty_cache", None)
    if empty is not None:
        empty()
