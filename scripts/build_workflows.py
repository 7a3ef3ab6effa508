"""Write the example workflows in workflows/ (ComfyUI's UI format, version 0.4) and their thumbnails.

Run it after changing a node's inputs: ``python scripts/build_workflows.py``.
The files are what users drag into ComfyUI (and what its template browser lists, with the
``<name>.jpg`` thumbnail beside each); ``scripts/run_comfyui_workflows.py`` runs them in a real ComfyUI.

Layout: every node gets the size it has *after a run* (the web extension adds a 260 px video preview
to Render and a 170 px curve plot to the coefficient nodes, each with a 10 px margin on both sides),
nodes are stacked in columns with room for their title bars, and the saved view (``extra.ds``)
fits the whole graph into a 1600 x 860 browser window below ComfyUI's menu bar, at a zoom
where ComfyUI still draws the widgets.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "workflows"   # the folder ComfyUI's template browser reads

# widget order = the nodes' INPUT_TYPES order (required, then optional); "fixed" follows a seed
# (its control_after_generate value).
WIDGET_INPUTS = {
    "SadTalkerModelLoader": ["checkpoint", "precision"],
    "SadTalkerFaceCrop": ["preprocess", "size", "landmark_backend", "face_index"],
    "SadTalkerAudioToCoefficients": ["pose_style", "seed", None, "blink", "still", "head_motion_scale",
                                     "blinks_per_minute", "expression_strength"],
    "SadTalkerReferenceToCoefficients": ["preprocess", "landmark_backend", "max_frames"],
    "SadTalkerRender": ["expression_scale", "batch_size", "paste_back", "yaw", "pitch", "roll"],
    "SadTalkerRenderVideo": ["expression_scale", "batch_size", "paste_back", "enhance_strength", "enhance_upscale_2x",
                             "landmark_backend", "yaw", "pitch", "roll"],
    "SadTalkerFaceRestoreModelLoader": ["model_name", "precision"],
    "SadTalkerFaceEnhance": ["strength", "upscale_2x", "batch_size", "landmark_backend"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "LoadImage": ["image", None],
    "LoadAudio": ["audio", None, None],
    "LoadVideo": ["file", None],
    "GetVideoComponents": [],
    "AudioMerge": ["merge_method"],
    "SadTalkerIdleCoefficients": ["seconds", "pose_style", "seed", None, "blink", "head_motion_scale",
                                  "blinks_per_minute", "expression_strength"],
    "SadTalkerLoadAudioList": ["folder", "name_prefix"],
}

# sockets: node type -> (inputs [(name, type, optional)], outputs [(name, type)])
SOCKETS = {
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadAudio": ([], [("AUDIO", "AUDIO")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO", False)], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "SadTalkerModelLoader": ([], [("model", "SADTALKER_MODEL")]),
    "SadTalkerFaceCrop": ([("model", "SADTALKER_MODEL", False), ("image", "IMAGE", False), ("mask", "MASK", True)],
                          [("face", "SADTALKER_FACE"), ("crop", "IMAGE"), ("faces", "IMAGE")]),
    "SadTalkerAudioToCoefficients": ([("model", "SADTALKER_MODEL", False), ("face", "SADTALKER_FACE", False),
                                      ("audio", "AUDIO", False), ("ref_pose", "SADTALKER_REFERENCE", True),
                                      ("ref_eyeblink", "SADTALKER_REFERENCE", True),
                                      ("expression_reference", "SADTALKER_FACE", True)],
                                     [("coefficients", "SADTALKER_COEFFS")]),
    "SadTalkerReferenceToCoefficients": ([("model", "SADTALKER_MODEL", False), ("video", "VIDEO", True),
                                          ("images", "IMAGE", True), ("audio", "AUDIO", True)],
                                         [("reference", "SADTALKER_REFERENCE"), ("coefficients", "SADTALKER_COEFFS")]),
    "SadTalkerRender": ([("model", "SADTALKER_MODEL", False), ("face", "SADTALKER_FACE", False),
                         ("coefficients", "SADTALKER_COEFFS", False), ("background", "IMAGE", True)],
                        [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "SadTalkerRenderVideo": ([("model", "SADTALKER_MODEL", False), ("face", "SADTALKER_FACE", False),
                              ("coefficients", "SADTALKER_COEFFS", False),
                              ("face_restorer", "SADTALKER_FACE_RESTORER", True)],
                             [("video", "VIDEO")]),
    "SadTalkerFaceRestoreModelLoader": ([], [("face_restorer", "SADTALKER_FACE_RESTORER")]),
    "SadTalkerFaceEnhance": ([("images", "IMAGE", False), ("face_restorer", "SADTALKER_FACE_RESTORER", False)],
                             [("images", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", True)], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False)], []),
    "AudioMerge": ([("audio1", "AUDIO", False), ("audio2", "AUDIO", False)], [("AUDIO", "AUDIO")]),
    "SadTalkerIdleCoefficients": ([("model", "SADTALKER_MODEL", False), ("face", "SADTALKER_FACE", False),
                                   ("expression_reference", "SADTALKER_FACE", True)],
                                  [("coefficients", "SADTALKER_COEFFS")]),
    "SadTalkerLoadAudioList": ([], [("audio", "AUDIO"), ("name", "STRING")]),
}
WIDGET_SOCKETS = {("CreateVideo", "fps"): "FLOAT"}   # widgets that the examples drive from a link
LINKABLE_WIDGETS = {"filename_prefix": "STRING"}      # widgets one example drives from a link (add(linked=...))
TITLES = {   # the display names, as the thumbnails draw them (the workflows store no titles)
    "SadTalkerModelLoader": "SadTalker Model Loader", "SadTalkerFaceCrop": "SadTalker Face Crop + 3DMM",
    "SadTalkerAudioToCoefficients": "SadTalker Audio to Coefficients",
    "SadTalkerReferenceToCoefficients": "SadTalker Video to Coefficients",
    "SadTalkerRender": "SadTalker Render", "SadTalkerRenderVideo": "SadTalker Render to Video",
    "SadTalkerFaceRestoreModelLoader": "SadTalker Face Restore Model Loader",
    "SadTalkerFaceEnhance": "SadTalker Face Enhance",
    "SadTalkerIdleCoefficients": "SadTalker Idle Coefficients (no speech)",
    "SadTalkerLoadAudioList": "SadTalker Load Audio List (folder)",
}


# widget values the examples leave at the node's default
DEFAULT_WIDGETS = {"head_motion_scale": 1.0, "blinks_per_minute": 0.0, "face_index": -1, "expression_strength": 1.0}

# ----------------------------------------------------------------------------- sizes after a run
# LiteGraph's geometry (ComfyUI frontend 1.35): title bar above the node's pos, one row per socket,
# one row (plus spacing) per widget; the web extension's DOM widgets (web/sadtalker.js).
TITLE_H = 30
SLOT_H = 20
WIDGET_H = 24
NODE_PAD = 14            # LiteGraph's padding below the widgets
SLACK = 50               # room for one more widget and socket row without the layout breaking
VIDEO_H = 260 + 2 * 10   # VIDEO_HEIGHT + both WIDGET_MARGINs
CURVES_H = 170 + 2 * 10  # PLOT_HEIGHT + both WIDGET_MARGINs
SHOWS = {                # what the web extension adds to a node after it ran
    "SadTalkerAudioToCoefficients": CURVES_H, "SadTalkerReferenceToCoefficients": CURVES_H,
    "SadTalkerLoadCoefficients": CURVES_H, "SadTalkerSaveCoefficients": CURVES_H,
    "SadTalkerIdleCoefficients": CURVES_H,
    "SadTalkerRender": VIDEO_H, "SadTalkerRenderVideo": VIDEO_H, "SadTalkerSimple": VIDEO_H + CURVES_H,
}
NODE_WIDTH = 330
MIN_WIDTH = {"SadTalkerModelLoader": 420}   # the checkpoint name and its label side by side (web/sadtalker.js)
# core nodes: their own size with a picture/video/audio player loaded (Save Video's player grows with the
# video's aspect ratio past its node, so the examples keep it last in its column, with nothing below)
CORE_SIZES = {"LoadImage": (320, 330), "LoadAudio": (320, 136), "LoadVideo": (320, 420),
              "GetVideoComponents": (230, 90), "CreateVideo": (270, 80), "SaveVideo": (400, 420),
              "AudioMerge": (270, 80)}

GAP = 40                 # between a node's bottom edge and the next title bar / between columns
VIEWPORT = (1600, 860)   # the browser window the saved view is made for (as the screenshots)
MIN_SCALE = 0.6          # below it ComfyUI draws nodes without their widgets (low-quality zoom)
VIEW_MARGINS = (60, 100, 30, 60)  # left (side bar), top (tabs, workflow name, Run), right, bottom (canvas controls)
MINIMAP = (260, 260)     # the minimap's corner at the bottom right (width, height), kept free


def after_run_height(node_type: str, sockets: int, widgets: int) -> int:
    """Height (without the title bar) of a SadTalker node after a run: ``sockets`` = the larger of its
    input-socket and output counts, ``widgets`` = its widget rows (a seed's control counts as one)."""
    return max(sockets, 1) * SLOT_H + widgets * WIDGET_H + NODE_PAD + SHOWS.get(node_type, 0)


def node_size(node_type: str) -> tuple[int, int]:
    """The size the examples give a node: its size after a run, plus some slack for SadTalker nodes."""
    if node_type in CORE_SIZES:
        return CORE_SIZES[node_type]
    ins, outs = SOCKETS[node_type]
    height = after_run_height(node_type, max(len(ins), len(outs)), len(WIDGET_INPUTS[node_type]))
    return MIN_WIDTH.get(node_type, NODE_WIDTH), height + SLACK


def view_for(rects: list[tuple[float, float, float, float]]) -> dict:
    """``extra.ds`` (scale, offset) that shows every rectangle (x0, y0, x1, y1) inside the viewport's
    margins; on screen a canvas point p lands at ``(p + offset) * scale``."""
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[2] for r in rects), max(r[3] for r in rects)
    left, top, right, bottom = VIEW_MARGINS
    width, height = VIEWPORT[0] - left - right, VIEWPORT[1] - top - bottom
    scale = min(1.0, width / (x1 - x0), height / (y1 - y0))
    scale = int(scale * 100) / 100   # round down: stays inside
    return {"scale": scale, "offset": [round(left / scale - x0, 1), round(top / scale - y0, 1)]}


def node_rect(node: dict) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) a node covers on the canvas, title bar included."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x, y - TITLE_H, x + w, y + h


class Workflow:
    def __init__(self, note: str):
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.note = note

    def column(self, x: int, node_ids: list[int], y: int = 0) -> int:
        """Stack ``node_ids`` top to bottom at ``x``; returns the x where the next column starts."""
        for node_id in node_ids:
            node = self.nodes[node_id - 1]
            node["pos"] = [x, y]
            y += node["size"][1] + GAP + TITLE_H
        return x + max(self.nodes[i - 1]["size"][0] for i in node_ids) + GAP

    def add(self, node_type: str, widgets: dict, linked: tuple[str, ...] = ()) -> int:
        """Add a node with these widget values; ``linked`` widgets get an input socket for a link."""
        node_id = len(self.nodes) + 1
        ins, outs = SOCKETS[node_type]
        inputs = [{"name": n, "type": t, "link": None, **({"shape": 7} if opt else {})} for n, t, opt in ins]
        sockets = {w: t for (ntype, w), t in WIDGET_SOCKETS.items() if ntype == node_type}
        sockets.update({w: LINKABLE_WIDGETS[w] for w in linked})
        for wname, wtype in sockets.items():
            inputs.append({"name": wname, "type": wtype, "widget": {"name": wname}, "link": None})
        values = []
        for name in WIDGET_INPUTS[node_type]:
            if name is None:
                values.append("fixed" if node_type in ("SadTalkerAudioToCoefficients", "SadTalkerIdleCoefficients") else
                              ("image" if node_type in ("LoadImage", "LoadVideo") else None))
            else:
                values.append(widgets[name] if name in widgets else DEFAULT_WIDGETS[name])
        node = {
            "id": node_id, "type": node_type, "pos": [0, 0], "size": list(node_size(node_type)), "flags": {},
            "order": node_id - 1, "mode": 0, "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": []} for n, t in outs],
            "properties": {"Node name for S&R": node_type, **({"cnr_id": "comfy-core"} if not node_type.startswith("SadTalker") else {})},
            "widgets_values": values,
        }
        self.nodes.append(node)   # no stored title: ComfyUI shows the node's display name, in the user's language
        return node_id

    def link(self, src: int, src_slot: int, dst: int, dst_input: str) -> None:
        link_id = len(self.links) + 1
        src_node, dst_node = self.nodes[src - 1], self.nodes[dst - 1]
        slot_type = src_node["outputs"][src_slot]["type"]
        index = next(i for i, inp in enumerate(dst_node["inputs"]) if inp["name"] == dst_input)
        dst_node["inputs"][index]["link"] = link_id
        src_node["outputs"][src_slot]["links"].append(link_id)
        self.links.append([link_id, src, src_slot, dst, index, slot_type])

    def to_json(self) -> dict:
        for node in self.nodes:
            for out in node["outputs"]:
                if not out["links"]:
                    out["links"] = None
        note_size = [720, 110]
        note = {
            "id": len(self.nodes) + 1, "type": "Note", "pos": [0, -(note_size[1] + GAP + TITLE_H)],
            "size": note_size, "flags": {},
            "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [self.note], "color": "#432", "bgcolor": "#653",
        }
        nodes = self.nodes + [note]
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-sadtalker/" + self.note[:40])),
            "revision": 0,
            "last_node_id": len(self.nodes) + 1,
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": view_for([node_rect(n) for n in nodes])},
            "version": 0.4,
        }


CHECKPOINT = "SadTalker_V0.0.2_256.safetensors"


def link_talking_head(wf: Workflow, model: int, image: int, audio: int, face: int, coeffs: int, render: int) -> None:
    """The wiring every example shares: loader + picture -> face, + speech -> coefficients -> render."""
    wf.link(model, 0, face, "model")
    wf.link(image, 0, face, "image")
    wf.link(model, 0, coeffs, "model")
    wf.link(face, 0, coeffs, "face")
    wf.link(audio, 0, coeffs, "audio")
    wf.link(model, 0, render, "model")
    wf.link(face, 0, render, "face")
    wf.link(coeffs, 0, render, "coefficients")


RENDER_WIDGETS = {"expression_scale": 1.0, "batch_size": 2, "paste_back": True, "yaw": "", "pitch": "", "roll": ""}


SPEECH = ("LoadAudio", {"audio": "speech.wav"})


def talking_head(wf: Workflow, picture: str, preprocess: str, still: bool, render_type: str = "SadTalkerRender",
                 render_widgets: dict = RENDER_WIDGETS, speech: tuple[str, dict] = SPEECH) -> tuple[int, ...]:
    """The nodes every example has: loader, picture, speech (``speech``: its node type and widgets), face,
    coefficients, render (ids in that order)."""
    model = wf.add("SadTalkerModelLoader", {"checkpoint": CHECKPOINT, "precision": "auto"})
    image = wf.add("LoadImage", {"image": picture})
    audio = wf.add(*speech)
    face = wf.add("SadTalkerFaceCrop", {"preprocess": preprocess, "size": "256", "landmark_backend": "auto"})
    coeffs = wf.add("SadTalkerAudioToCoefficients", {"pose_style": 0, "seed": 0, "blink": True, "still": still})
    render = wf.add(render_type, render_widgets)
    link_talking_head(wf, model, image, audio, face, coeffs, render)
    return model, image, audio, face, coeffs, render


def video_out(wf: Workflow, images: int, render: int, prefix: str, linked: tuple[str, ...] = ()) -> tuple[int, int]:
    """Create Video (frames of ``images``, audio and fps of ``render``) -> Save Video; returns their ids.
    ``linked``: Save Video widgets that get a socket for a link."""
    video = wf.add("CreateVideo", {"fps": 25.0})
    save = wf.add("SaveVideo", {"filename_prefix": prefix, "format": "mp4", "codec": "h264"}, linked=linked)
    wf.link(images, 0, video, "images")
    wf.link(render, 1, video, "audio")
    wf.link(render, 2, video, "fps")
    wf.link(video, 0, save, "video")
    return video, save


def image_audio_to_video() -> Workflow:
    wf = Workflow("SadTalker: picture + speech -> mp4 with sound.\nWeights: ComfyUI/models/sadtalker "
                  "(python -m sadtalker_models download --models-dir ComfyUI/models/sadtalker).\n"
                  "Pick your picture and speech in the two load nodes.")
    model, image, audio, face, coeffs, render = talking_head(wf, "portrait.png", "crop", still=False)
    video, save = video_out(wf, render, render, "video/sadtalker")
    x = wf.column(0, [model, image, audio])
    x = wf.column(x, [face, coeffs])
    x = wf.column(x, [render])
    wf.column(x, [video, save])
    return wf


def full_body_enhanced() -> Workflow:
    wf = Workflow("SadTalker full body: the face is animated and pasted back into the whole picture (full / "
                  "extfull), then restored with GFPGAN.\nPut GFPGANv1.4.pth in ComfyUI/models/facerestore_models "
                  "(or models/gfpgan). 'still' keeps the body and head steady.")
    model, image, audio, face, coeffs, render = talking_head(wf, "full_body.png", "full", still=True)
    restorer = wf.add("SadTalkerFaceRestoreModelLoader", {"model_name": "GFPGANv1.4.pth", "precision": "fp32"})
    enhance = wf.add("SadTalkerFaceEnhance", {"strength": 1.0, "upscale_2x": False, "batch_size": 4,
                                              "landmark_backend": "auto"})
    wf.link(render, 0, enhance, "images")
    wf.link(restorer, 0, enhance, "face_restorer")
    video, save = video_out(wf, enhance, render, "video/sadtalker_full")
    x = wf.column(0, [model, image, audio])
    x = wf.column(x, [face, coeffs])
    x = wf.column(x, [render, restorer])
    x = wf.column(x, [enhance, video])
    wf.column(x, [save])
    return wf


def reference_video_pose_blink() -> Workflow:
    wf = Workflow("SadTalker with a reference video: head motion and eye blinks are copied from a video "
                  "(core Load Video's VIDEO, read frame by frame), the mouth follows the speech.\nFor "
                  "VideoHelperSuite, connect its Load Video's IMAGE output to 'images' instead.")
    model, image, audio, face, coeffs, render = talking_head(wf, "portrait.png", "crop", still=False)
    ref_video = wf.add("LoadVideo", {"file": "reference.mp4"})
    reference = wf.add("SadTalkerReferenceToCoefficients", {"preprocess": "crop", "landmark_backend": "auto",
                                                            "max_frames": 0})
    wf.link(ref_video, 0, reference, "video")
    wf.link(model, 0, reference, "model")
    wf.link(reference, 0, coeffs, "ref_pose")
    wf.link(reference, 0, coeffs, "ref_eyeblink")
    video, save = video_out(wf, render, render, "video/sadtalker_ref")
    x = wf.column(0, [model, image, audio])
    x = wf.column(x, [ref_video])
    x = wf.column(x, [face, reference])
    x = wf.column(x, [coeffs])
    x = wf.column(x, [render])
    wf.column(x, [video, save])
    return wf


def two_people_talking() -> Workflow:
    wf = Workflow("SadTalker, two people talking: each face of one picture (full mode, face_index 0 and 1) "
                  "gets its own speech. The second Render pastes its face onto the first Render's frames "
                  "('background'); Audio Merge mixes both voices.\nFor turns, start the second clip with "
                  "silence as long as the first speaker's part.")
    model = wf.add("SadTalkerModelLoader", {"checkpoint": CHECKPOINT, "precision": "auto"})
    image = wf.add("LoadImage", {"image": "two_people.png"})
    audio_a = wf.add("LoadAudio", {"audio": "speech.wav"})
    audio_b = wf.add("LoadAudio", {"audio": "speech_b.wav"})
    faces, coeffs, renders = [], [], []
    for index, audio in enumerate((audio_a, audio_b)):
        face = wf.add("SadTalkerFaceCrop", {"preprocess": "full", "size": "256", "landmark_backend": "auto",
                                            "face_index": index})
        coeff = wf.add("SadTalkerAudioToCoefficients", {"pose_style": 0, "seed": index, "blink": True,
                                                        "still": True})
        render = wf.add("SadTalkerRender", RENDER_WIDGETS)
        link_talking_head(wf, model, image, audio, face, coeff, render)
        faces.append(face)
        coeffs.append(coeff)
        renders.append(render)
    wf.link(renders[0], 0, renders[1], "background")
    mix = wf.add("AudioMerge", {"merge_method": "add"})
    wf.link(renders[1], 1, mix, "audio1")
    wf.link(renders[0], 1, mix, "audio2")
    video = wf.add("CreateVideo", {"fps": 25.0})
    save = wf.add("SaveVideo", {"filename_prefix": "video/sadtalker_two", "format": "mp4", "codec": "h264"})
    wf.link(renders[1], 0, video, "images")
    wf.link(mix, 0, video, "audio")
    wf.link(renders[1], 2, video, "fps")
    wf.link(video, 0, save, "video")
    x = wf.column(0, [model, image, audio_a, audio_b])
    x = wf.column(x, [faces[0], coeffs[0]])
    x = wf.column(x, [faces[1], coeffs[1]])
    x = wf.column(x, [renders[0], mix])
    x = wf.column(x, [renders[1], video])
    wf.column(x, [save])
    return wf


def idle_clip() -> Workflow:
    wf = Workflow("SadTalker idle clip: no speech - N seconds of blinks, a slight head motion and a closed mouth "
                  "(the audio networks are given silence). The same seed gives the same clip; the video's sound "
                  "track is silence. 1 s (25 frames) renders in about a minute on a CPU: raise 'seconds' for a "
                  "longer clip (each second is 25 more frames).")
    model = wf.add("SadTalkerModelLoader", {"checkpoint": CHECKPOINT, "precision": "auto"})
    image = wf.add("LoadImage", {"image": "portrait.png"})
    face = wf.add("SadTalkerFaceCrop", {"preprocess": "crop", "size": "256", "landmark_backend": "auto"})
    idle = wf.add("SadTalkerIdleCoefficients", {"seconds": 1.0, "pose_style": 0, "seed": 0, "blink": True})
    render = wf.add("SadTalkerRender", RENDER_WIDGETS)
    wf.link(model, 0, face, "model")
    wf.link(image, 0, face, "image")
    wf.link(model, 0, idle, "model")
    wf.link(face, 0, idle, "face")
    wf.link(model, 0, render, "model")
    wf.link(face, 0, render, "face")
    wf.link(idle, 0, render, "coefficients")
    video, save = video_out(wf, render, render, "video/sadtalker_idle")
    x = wf.column(0, [model, image])
    x = wf.column(x, [face, idle])
    x = wf.column(x, [render])
    wf.column(x, [video, save])
    return wf


def speech_list_to_videos() -> Workflow:
    wf = Workflow("SadTalker, one video per speech: Load Audio List reads every clip of a folder in ComfyUI/input "
                  "('speeches' here) as a list, so everything after it runs once per clip; the models load once. "
                  "Its 'name' output names each video after its clip (output/video/sadtalker_<clip>_00001_.mp4). "
                  "A list of pictures works the same way (core Load Image Dataset from Folder).")
    model, image, clips, face, coeffs, render = talking_head(
        wf, "portrait.png", "crop", still=False,
        speech=("SadTalkerLoadAudioList", {"folder": "speeches", "name_prefix": "video/sadtalker_"}))
    video, save = video_out(wf, render, render, "video/sadtalker", linked=("filename_prefix",))
    wf.link(clips, 1, save, "filename_prefix")
    x = wf.column(0, [model, image, clips])
    x = wf.column(x, [face, coeffs])
    x = wf.column(x, [render])
    wf.column(x, [video, save])
    return wf


def long_speech_to_video() -> Workflow:
    wf = Workflow("SadTalker for long speech (minutes): Render to Video encodes the frames into an mp4 batch by "
                  "batch while they render, so memory stays flat however long the speech is; its VIDEO goes "
                  "straight into Save Video. Connect a Face Restore Model Loader to its face_restorer input to "
                  "enhance every batch as it renders.")
    model, image, audio, face, coeffs, render = talking_head(
        wf, "portrait.png", "crop", still=False, render_type="SadTalkerRenderVideo",
        render_widgets={**RENDER_WIDGETS, "enhance_strength": 1.0, "enhance_upscale_2x": False, "landmark_backend": "auto"})
    save = wf.add("SaveVideo", {"filename_prefix": "video/sadtalker_long", "format": "mp4", "codec": "h264"})
    wf.link(render, 0, save, "video")
    x = wf.column(0, [model, image, audio])
    x = wf.column(x, [face, coeffs])
    x = wf.column(x, [render])
    wf.column(x, [save])
    return wf


def compact(wf: Workflow, node_ids: list[int]) -> None:
    """Give these SadTalker nodes their after-run size without SLACK, so two of them stack in one column of
    the default view (the layout test still checks that each keeps its after-run size)."""
    for node_id in node_ids:
        wf.nodes[node_id - 1]["size"][1] -= SLACK


def talk_with_expression() -> Workflow:
    wf = Workflow("SadTalker with an expression reference: one portrait and one speech, talking with the expression "
                  "of a smiling and of a sad picture (each through its own Face Crop + 3DMM into "
                  "'expression_reference'). The lips follow the speech; the portrait keeps its identity. "
                  "expression_strength 0 = its own expression, 1 = the picture's. Each Render plays its video; "
                  "the happy one is saved. The expression shows with the official weights only.")
    model = wf.add("SadTalkerModelLoader", {"checkpoint": CHECKPOINT, "precision": "auto"})
    image = wf.add("LoadImage", {"image": "portrait.png"})
    audio = wf.add(*SPEECH)
    face = wf.add("SadTalkerFaceCrop", {"preprocess": "crop", "size": "256", "landmark_backend": "auto"})
    wf.link(model, 0, face, "model")
    wf.link(image, 0, face, "image")
    pictures, refs, coeffs, renders = [], [], [], []
    for picture_name in ("sad.png", "happy.png"):   # the saved (happy) render last, as in the other examples
        picture = wf.add("LoadImage", {"image": picture_name})
        ref = wf.add("SadTalkerFaceCrop", {"preprocess": "crop", "size": "256", "landmark_backend": "auto"})
        coeff = wf.add("SadTalkerAudioToCoefficients", {"pose_style": 0, "seed": 0, "blink": True, "still": False,
                                                        "expression_strength": 1.0})
        render = wf.add("SadTalkerRender", RENDER_WIDGETS)
        for src, dst, socket in ((model, ref, "model"), (picture, ref, "image"), (model, coeff, "model"),
                                 (face, coeff, "face"), (audio, coeff, "audio"), (ref, coeff, "expression_reference"),
                                 (model, render, "model"), (face, render, "face"), (coeff, render, "coefficients")):
            wf.link(src, 0, dst, socket)
        for group, node in zip((pictures, refs, coeffs, renders), (picture, ref, coeff, render)):
            group.append(node)
    video, save = video_out(wf, renders[1], renders[1], "video/sadtalker_happy")
    compact(wf, coeffs + renders)
    # the note sits above the first two columns; the others start level with it
    top = -(110 + GAP + TITLE_H)
    x = wf.column(0, [model, image, audio])
    x = wf.column(x, pictures[::-1])
    x = wf.column(x, [face, *refs[::-1]], y=top)
    x = wf.column(x, coeffs[::-1], y=top)
    x = wf.column(x, renders[::-1], y=top)
    wf.column(x, [video, save], y=top)
    return wf


THUMBNAIL_SIZE = (512, 384)
LINK_COLORS = {"IMAGE": (100, 181, 246), "AUDIO": (240, 160, 80), "FLOAT": (170, 238, 136),
               "VIDEO": (220, 120, 220), "STRING": (119, 221, 119)}
TITLES_SHORT = {
    "sadtalker_image_audio_to_video.json": "picture + speech -> video",
    "sadtalker_full_body_enhanced.json": "full body, face restored",
    "sadtalker_reference_video_pose_blink.json": "pose + blinks from a video",
    "sadtalker_two_people_talking.json": "two people talking",
    "sadtalker_idle_clip.json": "idle clip, no speech",
    "sadtalker_long_speech_to_video.json": "long speech -> streamed video",
    "sadtalker_speech_list_to_videos.json": "speech folder -> one video each",
    "sadtalker_talk_with_expression.json": "happy or sad, from a picture",
}


def thumbnail(workflow: dict, caption: str):
    """A picture of the graph for ComfyUI's template browser: the nodes as laid out (after-run sizes),
    their titles and links, under a caption. Returns a PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = THUMBNAIL_SIZE
    caption_h = 44
    image = Image.new("RGB", (width, height), (32, 32, 32))
    draw = ImageDraw.Draw(image)
    rects = [node_rect(n) for n in workflow["nodes"]]
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[2] for r in rects), max(r[3] for r in rects)
    margin = 12
    scale = min((width - 2 * margin) / (x1 - x0), (height - caption_h - 2 * margin) / (y1 - y0))

    def at(x: float, y: float) -> tuple[float, float]:
        return margin + (x - x0) * scale, caption_h + margin + (y - y0) * scale

    nodes = {n["id"]: n for n in workflow["nodes"]}
    for _, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        a, b = nodes[src], nodes[dst]
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 10 + src_slot * SLOT_H)
        end = at(b["pos"][0], b["pos"][1] + 10 + dst_slot * SLOT_H)
        bend = max(20.0, (end[0] - start[0]) / 2)
        points = []
        for i in range(21):   # cubic Bezier, as LiteGraph draws links
            t = i / 20
            c = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3]
            xs = (start[0], start[0] + bend, end[0] - bend, end[0])
            ys = (start[1], start[1], end[1], end[1])
            points.append((sum(w * v for w, v in zip(c, xs)), sum(w * v for w, v in zip(c, ys))))
        draw.line(points, fill=LINK_COLORS.get(kind, (150, 150, 150)), width=2)
    font = ImageFont.load_default(size=max(8, int(22 * scale)))
    for node in workflow["nodes"]:
        rx0, ry0, rx1, ry1 = node_rect(node)
        (ax, ay), (bx, by) = at(rx0, ry0), at(rx1, ry1)
        body = (83, 51, 34) if node["type"] == "Note" else \
            (44, 62, 80) if node["type"].startswith("SadTalker") else (53, 53, 53)
        draw.rounded_rectangle((ax, ay, bx, by), radius=4, fill=body, outline=(20, 20, 20))
        draw.rectangle((ax, ay, bx, ay + TITLE_H * scale), fill=(34, 34, 34))
        title = node.get("title") or TITLES.get(node["type"], node["type"])
        while title and draw.textlength(title, font=font) > bx - ax - 6:
            title = title[:-1]
        draw.text((ax + 3, ay + 1), title, fill=(221, 221, 221), font=font)
        if node["type"] in SHOWS:   # where the preview / curves appear after a run
            draw.rectangle((ax + 4, by - SHOWS[node["type"]] * scale, bx - 4, by - 4), fill=(20, 20, 20))
    draw.rectangle((0, 0, width, caption_h - 6), fill=(24, 24, 24))
    draw.text((12, 8), "SadTalker: " + caption, fill=(240, 240, 240), font=ImageFont.load_default(size=22))
    return image


WORKFLOWS = {
    "sadtalker_image_audio_to_video.json": image_audio_to_video,
    "sadtalker_full_body_enhanced.json": full_body_enhanced,
    "sadtalker_reference_video_pose_blink.json": reference_video_pose_blink,
    "sadtalker_two_people_talking.json": two_people_talking,
    "sadtalker_idle_clip.json": idle_clip,
    "sadtalker_long_speech_to_video.json": long_speech_to_video,
    "sadtalker_speech_list_to_videos.json": speech_list_to_videos,
    "sadtalker_talk_with_expression.json": talk_with_expression,
}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        workflow = build().to_json()
        (OUT / name).write_text(json.dumps(workflow, indent=1) + "\n")
        # ComfyUI's template browser shows workflows/<name>.jpg beside <name>.json
        thumbnail(workflow, TITLES_SHORT[name]).save(OUT / (Path(name).stem + ".jpg"), quality=88)
        logging.info("wrote %s and its thumbnail", OUT / name)


if __name__ == "__main__":
    main()
