"""SadTalker for ComfyUI: one face picture + speech -> talking-head video frames.

ComfyUI imports this file from ``ComfyUI/custom_nodes/<this folder>``. It registers the nodes
(category "SadTalker"), the ``models/sadtalker`` and ``models/facerestore_models`` folders and the
front-end extension in ``web/``. The same library runs headless: ``python -m sadtalker_models``.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
