"""The pack's node registry: SadTalker nodes plus the face-enhancer nodes.

A node whose Python dependencies are missing is left out with one logged message naming the
package to install; the rest of the pack still loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re

logger = logging.getLogger(__name__)

REQUIREMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "requirements.txt")


def read_requirements(path: str = REQUIREMENTS) -> dict[str, str]:
    """Module name -> pip requirement (``"cv2": "opencv-python-headless>=4.8"``) from the pack's
    requirements.txt, the one list of dependencies; a line's ``# import X`` comment names its module
    (default: the package name with ``-`` as ``_``)."""
    found = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            requirement, _, comment = line.partition("#")
            requirement = requirement.strip()
            if not requirement:
                continue
            named = re.match(r"\s*import\s+(\w+)", comment)
            package = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
            found[named.group(1) if named else package.replace("-", "_")] = requirement
    return found


_ANY_LANDMARKS = ("dlib", "face_alignment")

# node -> modules it needs ("landmarks": dlib or face_alignment)
_NEEDS = {
    "SadTalkerModelLoader": ("numpy", "safetensors"),
    "SadTalkerFaceCrop": ("numpy", "cv2", "PIL", "landmarks"),
    "SadTalkerAudioToCoefficients": ("numpy", "scipy", "soxr"),
    "SadTalkerReferenceToCoefficients": ("numpy", "cv2", "PIL", "landmarks"),
    "SadTalkerRender": ("numpy", "cv2"),
    "SadTalkerRenderVideo": ("numpy", "cv2", "imageio_ffmpeg"),
    "SadTalkerSaveCoefficients": ("safetensors",),
    "SadTalkerLoadCoefficients": ("safetensors",),
    "SadTalkerSimple": ("numpy", "cv2", "PIL", "scipy", "soxr", "landmarks"),
    "SadTalkerIdleCoefficients": ("numpy", "scipy", "soxr"),
    "SadTalkerLoadAudioList": ("numpy", "imageio_ffmpeg"),
    "SadTalkerFaceRestoreModelLoader": ("spandrel",),
    "SadTalkerFaceEnhance": ("numpy", "cv2", "landmarks"),
}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_requirements(node: str) -> list[str]:
    """pip packages a node needs that are not installed (empty when it can run)."""
    requirements = read_requirements()
    missing = []
    for need in _NEEDS.get(node, ()):
        if need == "landmarks":
            if not any(_has(m) for m in _ANY_LANDMARKS):
                missing.append(f"{requirements['dlib']} (or face-alignment)")
        elif not _has(need):
            missing.append(requirements[need])
    return missing


def _merge(source_classes: dict, source_names: dict, classes: dict, names: dict) -> None:
    for key, cls in source_classes.items():
        missing = missing_requirements(key)
        if missing:
            logger.warning("SadTalker: node %s is disabled; install %s (pip install -r requirements.txt).",
                           key, ", ".join(missing))
            continue
        classes[key] = cls
        if key in source_names:
            names[key] = source_names[key]


def build_mappings() -> tuple[dict, dict]:
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS of every node that can run here."""
    classes: dict = {}
    names: dict = {}
    try:
        from . import comfy_glue

        comfy_glue.register_model_folders()
    except Exception:  # noqa: BLE001 - e.g. folder_paths missing outside ComfyUI
        logger.warning("SadTalker: could not register the model folders with ComfyUI", exc_info=True)
    try:
        from . import comfy_glue

        comfy_glue.install_example_inputs()
    except Exception as err:  # noqa: BLE001 - a read-only input folder must not stop the pack from loading
        logger.warning("SadTalker: could not copy the example inputs into ComfyUI's input folder (%s).", err)

    from . import sadtalker_nodes

    _merge(sadtalker_nodes.NODE_CLASS_MAPPINGS, sadtalker_nodes.NODE_DISPLAY_NAME_MAPPINGS, classes, names)
    from . import video_nodes

    _merge(video_nodes.NODE_CLASS_MAPPINGS, video_nodes.NODE_DISPLAY_NAME_MAPPINGS, classes, names)
    from . import feature_nodes

    _merge(feature_nodes.NODE_CLASS_MAPPINGS, feature_nodes.NODE_DISPLAY_NAME_MAPPINGS, classes, names)
    try:
        enhance_nodes = importlib.import_module(".enhance_nodes", __name__)
    except Exception as err:  # noqa: BLE001 - the enhancer is optional
        logger.warning("SadTalker: face-enhancer nodes are disabled (%s: %s).", type(err).__name__, err)
    else:
        _merge(getattr(enhance_nodes, "NODE_CLASS_MAPPINGS", {}), getattr(enhance_nodes, "NODE_DISPLAY_NAME_MAPPINGS", {}),
               classes, names)
    return classes, names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = build_mappings()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
