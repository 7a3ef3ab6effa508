"""The example workflows: valid UI-format JSON whose widgets line up with the nodes' inputs.

(Running them in a real ComfyUI is tests/test_real_comfyui.py.)
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))

# the core nodes the examples use, as ComfyUI 0.8's /object_info describes them (inputs only)
CORE = {
    "LoadImage": {"required": {"image": [["portrait.png", "full_body.png"], {"image_upload": True}]}},
    "LoadAudio": {"required": {"audio": ["COMBO", {"options": ["speech.wav"], "audio_upload": True}]}},
    "LoadVideo": {"required": {"file": ["COMBO", {"options": ["reference.mp4"], "video_upload": True}]}},
    "GetVideoComponents": {"required": {"video": ["VIDEO", {}]}},
    "CreateVideo": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0}]},
                    "optional": {"audio": ["AUDIO", {}]}},
    "SaveVideo": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                               "format": ["COMBO", {"options": ["auto", "mp4"]}],
                               "codec": ["COMBO", {"options": ["auto", "h264"]}]}},
}


def runner():
    spec = importlib.util.spec_from_file_location("run_comfyui_workflows", REPO / "scripts" / "run_comfyui_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_comfyui_workflows", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def object_info():
    from test_nodes import load_pack

    pack = load_pack()
    info = {name: {"input": spec} for name, spec in CORE.items()}
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        info[name] = {"input": {k: {n: list(v) for n, v in types.get(k, {}).items()} for k in ("required", "optional")},
                      "output": list(cls.RETURN_TYPES)}
    return info


def test_there_are_three_examples():
    names = {p.name for p in WORKFLOWS}
    assert names == {"sadtalker_image_audio_to_video.json", "sadtalker_full_body_enhanced.json",
                     "sadtalker_reference_video_pose_blink.json"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_is_valid_ui_format(path):
    wf = json.loads(path.read_text())
    assert wf["version"] == 0.4
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert wf["last_node_id"] >= max(nodes)
    assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for node in wf["nodes"]:
        for key in ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode", "order"):
            assert key in node, (node["id"], key)
    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id
        assert out["type"] == inp["type"] == kind


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_converts_to_a_complete_api_prompt(path, object_info):
    prompt = runner().ui_to_api(json.loads(path.read_text()), object_info)
    assert any(n["class_type"] == "SaveVideo" for n in prompt.values())
    for node_id, node in prompt.items():
        spec = object_info[node["class_type"]]["input"]
        for name, (kind, *rest) in spec.get("required", {}).items():
            assert name in node["inputs"], f"{path.name}: node {node_id} {node['class_type']} lacks {name}"
            value = node["inputs"][name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                assert value[0] in prompt, f"link to a missing node {value}"
                continue
            options = kind if isinstance(kind, list) else (rest[0].get("options") if kind == "COMBO" else None)
            if options is not None and name not in ("checkpoint", "model_name"):
                assert value in options, f"{path.name}: {node['class_type']}.{name}={value!r} not in {options}"
            if kind == "INT":
                assert isinstance(value, int)
            if kind == "BOOLEAN":
                assert isinstance(value, bool)
    render = [n for n in prompt.values() if n["class_type"] == "SadTalkerRender"][0]
    create = [n for n in prompt.values() if n["class_type"] == "CreateVideo"][0]
    render_id = next(k for k, v in prompt.items() if v is render)
    # the render node's fps and audio drive Create Video
    assert create["inputs"]["fps"] == [render_id, 2]
    assert create["inputs"]["audio"] == [render_id, 1]


def test_web_extension_is_valid_javascript(tmp_path):
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node.js is not installed; cannot syntax-check web/sadtalker.js")
    module = tmp_path / "sadtalker.mjs"
    module.write_text((REPO / "web" / "sadtalker.js").read_text())
    proc = subprocess.run([node, "--check", str(module)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = module.read_text()
    assert "registerExtension" in text and "sadtalker_curves" in text and "sadtalker_video" in text
