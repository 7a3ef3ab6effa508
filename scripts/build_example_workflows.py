"""Write the example workflows in workflows/ (ComfyUI's UI format, version 0.4).

Run it after changing a node's inputs: ``python scripts/build_example_workflows.py``.
The files are what users drag into ComfyUI; ``scripts/run_comfyui_workflows.py`` runs them in a
real ComfyUI.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "workflows"

# widget order = the nodes' INPUT_TYPES order (required, then optional); "fixed" follows a seed
# (its control_after_generate value).
WIDGET_INPUTS = {
    "SadTalkerModelLoader": ["checkpoint", "precision"],
    "SadTalkerFaceCrop": ["preprocess", "size", "landmark_backend"],
    "SadTalkerAudioToCoefficients": ["pose_style", "seed", None, "blink", "still"],
    "SadTalkerReferenceToCoefficients": ["preprocess", "landmark_backend", "max_frames"],
    "SadTalkerRender": ["expression_scale", "batch_size", "paste_back", "yaw", "pitch", "roll"],
    "SadTalkerFaceRestoreModelLoader": ["model_name", "precision"],
    "SadTalkerFaceEnhance": ["strength", "upscale_2x", "batch_size", "landmark_backend"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "LoadImage": ["image", None],
    "LoadAudio": ["audio", None, None],
    "LoadVideo": ["file", None],
    "GetVideoComponents": [],
}

# sockets: node type -> (inputs [(name, type, optional)], outputs [(name, type)])
SOCKETS = {
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "LoadAudio": ([], [("AUDIO", "AUDIO")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO", False)], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "SadTalkerModelLoader": ([], [("model", "SADTALKER_MODEL")]),
    "SadTalkerFaceCrop": ([("model", "SADTALKER_MODEL", False), ("image", "IMAGE", False)],
                          [("face", "SADTALKER_FACE"), ("crop", "IMAGE")]),
    "SadTalkerAudioToCoefficients": ([("model", "SADTALKER_MODEL", False), ("face", "SADTALKER_FACE", False),
                                      ("audio", "AUDIO", False), ("ref_pose", "SADTALKER_REFERENCE", True),
                                      ("ref_eyeblink", "SADTALKER_REFERENCE", True)],
                                     [("coefficients", "SADTALKER_COEFFS")]),
    "SadTalkerReferenceToCoefficients": ([("model", "SADTALKER_MODEL", False), ("images", "IMAGE", False),
                                          ("audio", "AUDIO", True)],
                                         [("reference", "SADTALKER_REFERENCE"), ("coefficients", "SADTALKER_COEFFS")]),
    "SadTalkerRender": ([("model", "SADTALKER_MODEL", False), ("face", "SADTALKER_FACE", False),
                         ("coefficients", "SADTALKER_COEFFS", False)],
                        [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "SadTalkerFaceRestoreModelLoader": ([], [("face_restorer", "SADTALKER_FACE_RESTORER")]),
    "SadTalkerFaceEnhance": ([("images", "IMAGE", False), ("face_restorer", "SADTALKER_FACE_RESTORER", False)],
                             [("images", "IMAGE")]),
    "CreateVideo": ([("images", "IMAGE", False), ("audio", "AUDIO", True)], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO", False)], []),
}
WIDGET_SOCKETS = {("CreateVideo", "fps"): "FLOAT"}   # widgets that the examples drive from a link
TITLES = {
    "SadTalkerModelLoader": "SadTalker Model Loader", "SadTalkerFaceCrop": "SadTalker Face Crop + 3DMM",
    "SadTalkerAudioToCoefficients": "SadTalker Audio to Coefficients",
    "SadTalkerReferenceToCoefficients": "SadTalker Reference Video to Coefficients",
    "SadTalkerRender": "SadTalker Render", "SadTalkerFaceRestoreModelLoader": "SadTalker Face Restore Model Loader",
    "SadTalkerFaceEnhance": "SadTalker Face Enhance",
}


class Workflow:
    def __init__(self, note: str):
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.note = note

    def add(self, node_type: str, pos: tuple[int, int], widgets: dict, size: tuple[int, int] = (320, 130)) -> int:
        node_id = len(self.nodes) + 1
        ins, outs = SOCKETS[node_type]
        inputs = [{"name": n, "type": t, "link": None, **({"shape": 7} if opt else {})} for n, t, opt in ins]
        for (ntype, wname), wtype in WIDGET_SOCKETS.items():
            if ntype == node_type:
                inputs.append({"name": wname, "type": wtype, "widget": {"name": wname}, "link": None})
        values = []
        for name in WIDGET_INPUTS[node_type]:
            if name is None:
                values.append("fixed" if node_type == "SadTalkerAudioToCoefficients" else
                              ("image" if node_type in ("LoadImage", "LoadVideo") else None))
            else:
                values.append(widgets[name])
        node = {
            "id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {},
            "order": node_id - 1, "mode": 0, "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": []} for n, t in outs],
            "properties": {"Node name for S&R": node_type, **({"cnr_id": "comfy-core"} if not node_type.startswith("SadTalker") else {})},
            "widgets_values": values,
        }
        if node_type in TITLES:
            node["title"] = TITLES[node_type]
        self.nodes.append(node)
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
        note = {
            "id": len(self.nodes) + 1, "type": "Note", "pos": [0, -190], "size": [620, 150], "flags": {},
            "order": len(self.nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [self.note], "color": "#432", "bgcolor": "#653",
        }
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-sadtalker/" + self.note[:40])),
            "revision": 0,
            "last_node_id": len(self.nodes) + 1,
            "last_link_id": len(self.links),
            "nodes": self.nodes + [note],
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [60, 260]}},
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


def image_audio_to_video() -> Workflow:
    wf = Workflow("SadTalker: picture + speech -> mp4 with sound.\nWeights: ComfyUI/models/sadtalker "
                  "(python -m sadtalker_models download --models-dir ComfyUI/models/sadtalker).\n"
                  "Pick your picture and speech in the two load nodes.")
    model = wf.add("SadTalkerModelLoader", (0, 0), {"checkpoint": CHECKPOINT, "precision": "auto"}, (330, 82))
    image = wf.add("LoadImage", (0, 130), {"image": "portrait.png"}, (320, 330))
    audio = wf.add("LoadAudio", (0, 500), {"audio": "speech.wav"}, (320, 136))
    face = wf.add("SadTalkerFaceCrop", (380, 0), {"preprocess": "crop", "size": "256", "landmark_backend": "auto"},
                  (330, 150))
    coeffs = wf.add("SadTalkerAudioToCoefficients", (380, 220), {"pose_style": 0, "seed": 0, "blink": True,
                                                                  "still": False}, (330, 360))
    render = wf.add("SadTalkerRender", (760, 0), {"expression_scale": 1.0, "batch_size": 2, "paste_back": True,
                                                  "yaw": "", "pitch": "", "roll": ""}, (330, 520))
    video = wf.add("CreateVideo", (1140, 0), {"fps": 25.0}, (270, 80))
    save = wf.add("SaveVideo", (1140, 130), {"filename_prefix": "video/sadtalker", "format": "mp4", "codec": "h264"},
                  (400, 420))
    link_talking_head(wf, model, image, audio, face, coeffs, render)
    wf.link(render, 0, video, "images")
    wf.link(render, 1, video, "audio")
    wf.link(render, 2, video, "fps")
    wf.link(video, 0, save, "video")
    return wf


def full_body_enhanced() -> Workflow:
    wf = Workflow("SadTalker full body: the face is animated and pasted back into the whole picture (full / "
                  "extfull), then restored with GFPGAN.\nPut GFPGANv1.4.pth in ComfyUI/models/facerestore_models "
                  "(or models/gfpgan). 'still' keeps the body and head steady.")
    model = wf.add("SadTalkerModelLoader", (0, 0), {"checkpoint": CHECKPOINT, "precision": "auto"}, (330, 82))
    image = wf.add("LoadImage", (0, 130), {"image": "full_body.png"}, (320, 330))
    audio = wf.add("LoadAudio", (0, 500), {"audio": "speech.wav"}, (320, 136))
    face = wf.add("SadTalkerFaceCrop", (380, 0), {"preprocess": "full", "size": "256", "landmark_backend": "auto"},
                  (330, 150))
    coeffs = wf.add("SadTalkerAudioToCoefficients", (380, 220), {"pose_style": 0, "seed": 0, "blink": True,
                                                                  "still": True}, (330, 360))
    render = wf.add("SadTalkerRender", (760, 0), {"expression_scale": 1.0, "batch_size": 2, "paste_back": True,
                                                  "yaw": "", "pitch": "", "roll": ""}, (330, 520))
    restorer = wf.add("SadTalkerFaceRestoreModelLoader", (760, 580), {"model_name": "GFPGANv1.4.pth",
                                                                     "precision": "fp32"}, (330, 82))
    enhance = wf.add("SadTalkerFaceEnhance", (1140, 0), {"strength": 1.0, "upscale_2x": False, "batch_size": 4,
                                                         "landmark_backend": "auto"}, (320, 160))
    video = wf.add("CreateVideo", (1140, 220), {"fps": 25.0}, (270, 80))
    save = wf.add("SaveVideo", (1500, 0), {"filename_prefix": "video/sadtalker_full", "format": "mp4",
                                           "codec": "h264"}, (400, 420))
    link_talking_head(wf, model, image, audio, face, coeffs, render)
    wf.link(render, 0, enhance, "images")
    wf.link(restorer, 0, enhance, "face_restorer")
    wf.link(enhance, 0, video, "images")
    wf.link(render, 1, video, "audio")
    wf.link(render, 2, video, "fps")
    wf.link(video, 0, save, "video")
    return wf


def reference_video_pose_blink() -> Workflow:
    wf = Workflow("SadTalker with a reference video: head motion and eye blinks are copied from a video "
                  "(Load Video -> Get Video Components), the mouth follows the speech.\nFor VideoHelperSuite, "
                  "connect its Load Video's IMAGE output to 'images' instead.")
    model = wf.add("SadTalkerModelLoader", (0, 0), {"checkpoint": CHECKPOINT, "precision": "auto"}, (330, 82))
    image = wf.add("LoadImage", (0, 130), {"image": "portrait.png"}, (320, 330))
    audio = wf.add("LoadAudio", (0, 500), {"audio": "speech.wav"}, (320, 136))
    ref_video = wf.add("LoadVideo", (0, 680), {"file": "reference.mp4"}, (320, 330))
    components = wf.add("GetVideoComponents", (380, 680), {}, (220, 70))
    reference = wf.add("SadTalkerReferenceToCoefficients", (380, 440),
                       {"preprocess": "crop", "landmark_backend": "auto", "max_frames": 0}, (330, 200))
    face = wf.add("SadTalkerFaceCrop", (380, 0), {"preprocess": "crop", "size": "256", "landmark_backend": "auto"},
                  (330, 150))
    coeffs = wf.add("SadTalkerAudioToCoefficients", (760, 300), {"pose_style": 0, "seed": 0, "blink": True,
                                                                  "still": False}, (330, 360))
    render = wf.add("SadTalkerRender", (760, 0), {"expression_scale": 1.0, "batch_size": 2, "paste_back": True,
                                                  "yaw": "", "pitch": "", "roll": ""}, (330, 260))
    video = wf.add("CreateVideo", (1140, 0), {"fps": 25.0}, (270, 80))
    save = wf.add("SaveVideo", (1140, 130), {"filename_prefix": "video/sadtalker_ref", "format": "mp4",
                                             "codec": "h264"}, (400, 420))
    wf.link(ref_video, 0, components, "video")
    wf.link(model, 0, reference, "model")
    wf.link(components, 0, reference, "images")
    link_talking_head(wf, model, image, audio, face, coeffs, render)
    wf.link(reference, 0, coeffs, "ref_pose")
    wf.link(reference, 0, coeffs, "ref_eyeblink")
    wf.link(render, 0, video, "images")
    wf.link(render, 1, video, "audio")
    wf.link(render, 2, video, "fps")
    wf.link(video, 0, save, "video")
    return wf


WORKFLOWS = {
    "sadtalker_image_audio_to_video.json": image_audio_to_video,
    "sadtalker_full_body_enhanced.json": full_body_enhanced,
    "sadtalker_reference_video_pose_blink.json": reference_video_pose_blink,
}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    OUT.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        (OUT / name).write_text(json.dumps(build().to_json(), indent=1) + "\n")
        logging.info("wrote %s", OUT / name)


if __name__ == "__main__":
    main()
