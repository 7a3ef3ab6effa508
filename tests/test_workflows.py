"""The example workflows: valid UI-format JSON whose widgets line up with the nodes' inputs.

(Running them in a real ComfyUI is tests/test_real_comfyui.py.)
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))

# the core nodes the examples use, as ComfyUI 0.8's /object_info describes them (inputs only)
CORE = {
    "LoadImage": {"required": {"image": [["portrait.png", "full_body.png", "two_people.png", "happy.png", "sad.png"],
                                         {"image_upload": True}]}},
    "LoadAudio": {"required": {"audio": ["COMBO", {"options": ["speech.wav", "speech_b.wav"], "audio_upload": True}]}},
    "LoadVideo": {"required": {"file": ["COMBO", {"options": ["reference.mp4"], "video_upload": True}]}},
    "GetVideoComponents": {"required": {"video": ["VIDEO", {}]}},
    "CreateVideo": {"required": {"images": ["IMAGE", {}], "fps": ["FLOAT", {"default": 30.0}]},
                    "optional": {"audio": ["AUDIO", {}]}},
    "SaveVideo": {"required": {"video": ["VIDEO", {}], "filename_prefix": ["STRING", {}],
                               "format": ["COMBO", {"options": ["auto", "mp4"]}],
                               "codec": ["COMBO", {"options": ["auto", "h264"]}]}},
    "AudioMerge": {"required": {"audio1": ["AUDIO", {}], "audio2": ["AUDIO", {}],
                                "merge_method": ["COMBO", {"options": ["add", "mean", "subtract", "multiply"]}]}},
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
    # as in the runner's ComfyUI, where input/speeches holds the clips
    info["SadTalkerLoadAudioList"]["input"]["required"]["folder"] = [["speeches"], {}]
    return info


def test_there_are_eight_examples():
    names = {p.name for p in WORKFLOWS}
    assert names == {"sadtalker_image_audio_to_video.json", "sadtalker_full_body_enhanced.json",
                     "sadtalker_reference_video_pose_blink.json", "sadtalker_two_people_talking.json",
                     "sadtalker_idle_clip.json", "sadtalker_long_speech_to_video.json",
                     "sadtalker_speech_list_to_videos.json", "sadtalker_talk_with_expression.json"}


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
    streamed = [k for k, v in prompt.items() if v["class_type"] == "SadTalkerRenderVideo"]
    if streamed:   # the streamed VIDEO goes straight into Save Video (its audio is muxed already)
        save = [n for n in prompt.values() if n["class_type"] == "SaveVideo"][0]
        assert save["inputs"]["video"] == [streamed[0], 0]
        return
    renders = [k for k, v in prompt.items() if v["class_type"] == "SadTalkerRender"]
    create = [n for n in prompt.values() if n["class_type"] == "CreateVideo"][0]
    render_id = renders[-1]   # the last render (two people: the second face on the first one's frames)
    # the render node's fps and audio drive Create Video (two people: both renders' audio mixed)
    assert create["inputs"]["fps"] == [render_id, 2]
    audio = create["inputs"]["audio"]
    if prompt[audio[0]]["class_type"] == "AudioMerge":
        mixed = prompt[audio[0]]["inputs"]
        assert {mixed["audio1"][0], mixed["audio2"][0]} == set(renders) and mixed["audio1"][1] == mixed["audio2"][1] == 1
        assert prompt[render_id]["inputs"]["background"] == [renders[0], 0]
    else:
        assert audio == [render_id, 1]
    lists = [k for k, v in prompt.items() if v["class_type"] == "SadTalkerLoadAudioList"]
    if lists:   # one video per clip, each named after its clip
        coeffs = [n for n in prompt.values() if n["class_type"] == "SadTalkerAudioToCoefficients"][0]
        save = [n for n in prompt.values() if n["class_type"] == "SaveVideo"][0]
        assert coeffs["inputs"]["audio"] == [lists[0], 0] and save["inputs"]["filename_prefix"] == [lists[0], 1]


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


# the web extension run in node.js against a small stand-in of ComfyUI's front-end modules
WEB_STUB_APP = """
export const app = { extensions: [], graph: null, registerExtension(e) { this.extensions.push(e); } };
"""
WEB_STUB_API = """
export const api = {
  history: {}, asked: [],
  async fetchApi(path) { this.asked.push(path); return { ok: true, json: async () => this.history }; },
  apiURL(path) { return "/api" + path; },
};
"""
WEB_DRIVER = r"""
import { app } from "./scripts/app.js";
import { api } from "./scripts/api.js";
import { graphInputs, latestOutputs } from "./extensions/sadtalker/sadtalker.js";

globalThis.window = { devicePixelRatio: 1 };
globalThis.requestAnimationFrame = () => 0;
globalThis.document = { createElement: (tag) => ({ tag, style: {}, clientWidth: 0, clientHeight: 0 }) };

const [ext] = app.extensions;
const classes = {};
async function nodeClass(type) {   // what ComfyUI does per node type: a class, then beforeRegisterNodeDef
  if (!classes[type]) {
    classes[type] = class { onNodeCreated() { this.createdBefore = true; } };
    await ext.beforeRegisterNodeDef(classes[type], { name: type });
  }
  return classes[type];
}
async function makeNode(id, type, widgets) {   // LiteGraph.createNode: construct, then onNodeCreated
  const Node = await nodeClass(type);
  const node = Object.assign(new Node(), {
    id, type, size: [330, 100], widgets: widgets.map((name) => ({ name, value: name === "control_after_generate" ? "randomize" : 0 })),
    addDOMWidget(name, kind, element) { return { name, element }; },
    computeSize() { return [300, 400]; },
    setSize(size) { this.size = size; },
  });
  node.onNodeCreated();
  return node;
}
const out = {};

// item 4: fresh nodes default their seed control to "fixed"; the loader is wide enough for its label
const coeffs = await makeNode(5, "SadTalkerAudioToCoefficients", ["pose_style", "seed", "control_after_generate", "blink"]);
const simple = await makeNode(9, "SadTalkerSimple", ["seed", "control_after_generate"]);
const loader = await makeNode(1, "SadTalkerModelLoader", ["checkpoint", "precision"]);
out.controls = [coeffs, simple].map((n) => n.widgets.find((w) => w.name === "control_after_generate").value);
out.chained = coeffs.createdBefore === true;   // the node's own onNodeCreated still runs
out.loaderWidth = loader.size[0];

// item 2: after a reload the newest outputs of this workflow come back from /history
const render = await makeNode(6, "SadTalkerRender", []);
app.graph = { id: "wf-1", nodes: [coeffs, render, loader] };
const run = (number, workflow, outputs, types) => ({
  prompt: [number, "p" + number, Object.fromEntries(Object.entries(types).map(([k, v]) => [k, { class_type: v }])),
           { extra_pnginfo: { workflow: { id: workflow } } }, []],
  outputs,
});
const curves = (frames) => ({ sadtalker_curves: [{ frames, fps: 25, step: 1, mouth: [0], yaw: [0] }] });
const video = (name) => ({ sadtalker_video: [{ filename: name, subfolder: "sadtalker", type: "temp" }] });
const types = { 5: "SadTalkerAudioToCoefficients", 6: "SadTalkerRender" };
api.history = {
  p2: run(2, "wf-1", { 5: curves(2), 6: video("new.mp4") }, types),
  p1: run(1, "wf-1", { 5: curves(1), 6: video("old.mp4") }, types),
  p3: run(3, "other-workflow", { 5: curves(3), 6: video("other.mp4") }, types),
  p4: run(4, "wf-1", { 6: video("wrong-type.mp4") }, { 6: "SaveVideo" }),
};
await ext.afterConfigureGraph();
out.asked = api.asked;
out.curveFrames = coeffs._sadtalker?.curveData?.frames ?? null;
out.videoSrc = render._sadtalker?.video?.element?.src ?? null;
out.pure = [...latestOutputs(api.history, "wf-1", new Map([["6", "SadTalkerRender"]])).keys()];

// issue 21: the same example loaded again with another picture shows no frames of the earlier run
const staleRun = { prompt: [10, "p10", { 7: { class_type: "LoadImage", inputs: { image: "old.png", upload: "image" } },
                                        8: { class_type: "SadTalkerRender", inputs: { batch_size: 2, face: ["7", 0] } } },
                            { extra_pnginfo: { workflow: { id: "example" } } }, []],
                   outputs: { 8: video("stale.mp4") } };
const graphWith = (picture) => [{ id: 7, widgets: [{ name: "image", value: picture }, { name: "upload", value: "image" }] },
                                { id: 8, widgets: [{ name: "batch_size", value: 2 }] }];
const renderType = new Map([["8", "SadTalkerRender"]]);
out.stale = [...latestOutputs({ p10: staleRun }, "example", renderType, graphInputs(graphWith("new.png"))).keys()];
out.same = [...latestOutputs({ p10: staleRun }, "example", renderType, graphInputs(graphWith("old.png"))).keys()];
console.log(JSON.stringify(out));
"""


def run_web_driver(folder: Path, driver: str, *args: str, app_js: str = WEB_STUB_APP, api_js: str = WEB_STUB_API,
                   timeout: float = 60) -> dict:
    """Run ``driver`` (an ES module) in node.js beside web/sadtalker.js and small stand-ins of ComfyUI's
    front-end modules, in ``folder``; returns the JSON its last output line holds. Skips without node.js."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node.js is not installed; cannot run web/sadtalker.js")
    (folder / "scripts").mkdir()
    (folder / "extensions" / "sadtalker").mkdir(parents=True)
    (folder / "package.json").write_text('{"type": "module"}')
    (folder / "scripts" / "app.js").write_text(app_js)
    (folder / "scripts" / "api.js").write_text(api_js)
    shutil.copy(REPO / "web" / "sadtalker.js", folder / "extensions" / "sadtalker" / "sadtalker.js")
    (folder / "driver.js").write_text(driver)
    proc = subprocess.run([node, str(folder / "driver.js"), *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_web_extension_defaults_and_restores_outputs_after_reload(tmp_path):
    out = run_web_driver(tmp_path, WEB_DRIVER)
    assert out["controls"] == ["fixed", "fixed"] and out["chained"]
    assert out["loaderWidth"] >= 420
    assert out["asked"] and out["asked"][0].startswith("/history")
    assert out["curveFrames"] == 2                               # the newest run of this workflow
    assert "filename=new.mp4" in out["videoSrc"] and "type=temp" in out["videoSrc"]
    assert out["pure"] == ["6"]
    assert out["stale"] == [] and out["same"] == ["8"]          # restored only for the inputs it was made from


# --------------------------------------------------------------------------- layout after a run


def builder():
    spec = importlib.util.spec_from_file_location("build_workflows", REPO / "scripts" / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _after_run_size(build, node_type: str, info: dict) -> tuple[int, int]:
    """The size a node has after a run, from the node's real inputs and outputs (not the builder's tables)."""
    if node_type in build.CORE_SIZES or node_type == "Note":
        return None
    sockets = widgets = 0
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                widgets += 1 + bool(options.get("control_after_generate"))
            else:
                sockets += 1
    height = build.after_run_height(node_type, max(sockets, len(info["output"])), widgets)
    return build.MIN_WIDTH.get(node_type, 0), height


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_layout_after_a_run_has_no_overlaps_and_fits_the_default_view(path, object_info):
    build = builder()
    wf = json.loads(path.read_text())
    rects = {}
    for node in wf["nodes"]:
        need = _after_run_size(build, node["type"], object_info.get(node["type"], {}))
        if need is not None:   # room for the preview / curves the node shows after a run
            assert node["size"][0] >= need[0] and node["size"][1] >= need[1], (node["type"], node["size"], need)
        rects[node["id"]] = (node["type"], build.node_rect(node))
    items = list(rects.values())
    for i, (type_a, a) in enumerate(items):
        for type_b, b in items[i + 1:]:
            apart = a[2] + 10 <= b[0] or b[2] + 10 <= a[0] or a[3] + 10 <= b[1] or b[3] + 10 <= a[1]
            assert apart, f"{path.name}: {type_a} {a} overlaps {type_b} {b}"
    for kind, save in items:   # Save Video's player outgrows its node with a tall video: nothing below it
        if kind == "SaveVideo":
            below = [k for k, r in items if r[1] >= save[3] and r[0] < save[2] and save[0] < r[2]]
            assert not below, f"{path.name}: {below} below Save Video"
    ds = wf["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    assert scale >= build.MIN_SCALE   # ComfyUI still draws the widgets at this zoom
    width, height = build.VIEWPORT
    left, top, right, bottom = build.VIEW_MARGINS
    for kind, (x0, y0, x1, y1) in items:
        sx0, sy0, sx1, sy1 = (x0 + ox) * scale, (y0 + oy) * scale, (x1 + ox) * scale, (y1 + oy) * scale
        assert sx0 >= left - 0.5 and sy0 >= top - 0.5, (path.name, kind, sx0, sy0)
        assert sx1 <= width - right + 0.5 and sy1 <= height - bottom + 0.5, (path.name, kind, sx1, sy1)
        # and not under the minimap in the bottom-right corner
        assert sx1 <= width - build.MINIMAP[0] or sy1 <= height - build.MINIMAP[1], (path.name, kind, sx1, sy1)


def test_examples_have_template_thumbnails():
    from PIL import Image

    build = builder()
    for path in WORKFLOWS:
        thumb = path.with_suffix(".jpg")   # what ComfyUI's template browser asks for
        assert thumb.is_file(), thumb
        with Image.open(thumb) as image:
            assert image.format == "JPEG" and image.size == build.THUMBNAIL_SIZE


def test_examples_are_what_the_builder_writes():
    build = builder()
    for name, make in build.WORKFLOWS.items():
        assert make().to_json() == json.loads((REPO / "workflows" / name).read_text()), \
            f"{name} is stale: run python scripts/build_workflows.py"


def test_runner_derives_the_list_turns_and_mask_cases(object_info):
    """The real-ComfyUI runner's derived cases (run by tests/test_real_comfyui.py), built here without ComfyUI."""
    r = runner()
    cases = {c.name.split(" ->")[0]: c for c in r.build_cases(WORKFLOWS, object_info, 2, vhs=False, turn_seconds=0.6)}
    assert cases["sadtalker_speech_list_to_videos.json on short inputs"].videos == len(r.SPEECH_LIST) == 2  # a video a clip
    turns = cases["two people taking turns"]
    assert turns.frames == 45 and turns.voices == r.TURNS                                    # 3 x 0.6 s at 25 fps
    for node in (n for n in turns.prompt.values() if n["class_type"] == "SadTalkerAudioToCoefficients"):
        assert node["inputs"]["head_motion_scale"] == 0.0 and node["inputs"]["blink"] is False
        face_index = turns.prompt[node["inputs"]["face"][0]]["inputs"]["face_index"]
        assert turns.prompt[node["inputs"]["audio"][0]]["inputs"]["audio"] == r.TURNS[face_index]
    mask = cases["Load Image MASK"]
    crop = next(n for n in mask.prompt.values() if n["class_type"] == "SadTalkerFaceCrop")
    assert mask.chosen_face == "right" and crop["inputs"]["mask"][1] == 1 and crop["inputs"]["face_index"] == 0
    assert "two people taking turns" not in {c.name.split(" ->")[0] for c in
                                            r.build_cases(WORKFLOWS, object_info, 2, vhs=False, turn_seconds=0)}
    (vhs,) = [c for c in r.build_cases(WORKFLOWS, object_info, 2, vhs=True) if c.name.startswith("VHS")]
    (reference,) = [n for n in vhs.prompt.values() if n["class_type"] == "SadTalkerReferenceToCoefficients"]
    assert "video" not in reference["inputs"] and vhs.prompt[reference["inputs"]["images"][0]]["class_type"] \
        == "VHS_LoadVideo"                                     # VHS's IMAGE frames instead of core's VIDEO
    example = json.loads((REPO / "workflows" / "sadtalker_reference_video_pose_blink.json").read_text())
    assert "GetVideoComponents" not in {n["type"] for n in example["nodes"]}   # core Load Video -> 'video' directly


def test_runner_cancels_a_case_past_its_time_and_scales_the_time_with_frames(object_info, monkeypatch):
    """A case past its time is taken off the queue and interrupted, and the runner waits until
    ComfyUI is idle, so the next case does not queue behind it; the time grows with the frames."""
    r = runner()

    class FakeServer:
        def __init__(self):
            self.posted, self.polls = [], 0
            self.proc = type("Proc", (), {"poll": staticmethod(lambda: None)})()

        def post(self, path, body):
            self.posted.append((path, body))
            return {"prompt_id": "p1", "node_errors": {}} if path == "/prompt" else None

        def get(self, path):
            if path == "/queue":
                self.polls += 1
                return {"queue_running": [[0, "p1"]] if self.polls < 3 else [], "queue_pending": []}
            return {}   # /history/p1: not finished

    monkeypatch.setattr(r.time, "sleep", lambda seconds: None)
    server = FakeServer()
    case = r.Case("slow", {}, 10)
    problems = r.run_case(server, case, Path("/nonexistent"), 0.05, "ffmpeg")
    assert problems and "interrupted and removed from the queue" in problems[0]
    assert [p for p, _ in server.posted] == ["/prompt", "/queue", "/interrupt"]
    assert server.posted[1][1] == {"delete": ["p1"]} and server.polls == 3
    args = type("Args", (), {"timeout": 300.0, "timeout_per_frame": 30.0})()
    assert r.case_timeout(args, case) == 300 + 30 * 10
    assert r.case_timeout(args, r.Case("list", {}, 10, videos=2)) == 300 + 30 * 20


def test_runner_runs_the_examples_as_loaded_and_derives_the_rest_from_short_inputs(object_info, tmp_path):
    """Each example is queued unchanged (the pack's example inputs, no file picked by hand), expecting
    as many frames as its own speech or idle clip drives; the derived cases use the runner's short
    inputs; and a missing or changed example input in ComfyUI's input folder is reported."""
    r = runner()
    examples = REPO / "example_inputs"
    input_dir = tmp_path / "input"
    shutil.copytree(examples, input_dir, ignore=shutil.ignore_patterns("README.md"))
    assert r.check_example_inputs(examples, input_dir) == []
    cases = {c.name: c for c in r.build_cases(WORKFLOWS, object_info, 2, vhs=True, input_dir=input_dir)}
    for path in WORKFLOWS:
        case = cases[f"{path.name} as loaded"]
        assert case.prompt == r.ui_to_api(json.loads(path.read_text()), object_info)   # unchanged
    frames = {name.split(" as loaded")[0]: c.frames for name, c in cases.items() if name.endswith("as loaded")}
    assert frames["sadtalker_image_audio_to_video.json"] == 75            # 3 s of 16 kHz speech
    assert frames["sadtalker_two_people_talking.json"] == 75
    assert frames["sadtalker_idle_clip.json"] == 25                        # the example's 1 s
    assert frames["sadtalker_speech_list_to_videos.json"] == 37            # 1.5 s clips: floor(24000 / 640)
    odd = cases["odd 451x675 full -> CreateVideo -> SaveVideo"]
    audio = {n["inputs"].get("audio") for n in odd.prompt.values() if n["class_type"] == "LoadAudio"}
    assert audio == {"short_speech.wav"} and odd.frames == 2
    (vhs,) = [c for c in cases.values() if c.name.startswith("VHS")]
    assert {n["inputs"].get("video") for n in vhs.prompt.values() if n["class_type"] == "VHS_LoadVideo"} == \
        {"short_reference.mp4"}
    assert cases["sadtalker_full_body_enhanced.json as loaded, re-queued unchanged (cached)"].videos == 0
    quick = {c.name for c in r.build_cases(WORKFLOWS, object_info, 2, vhs=False)}
    assert "sadtalker_idle_clip.json on short inputs" in quick
    (input_dir / "speech.wav").unlink()
    (input_dir / "portrait.png").write_bytes(b"not the example")
    assert r.check_example_inputs(examples, input_dir) == [
        "portrait.png was not put in input/ by the pack", "speech.wav was not put in input/ by the pack"]


def _fake_comfyui_websocket(frames: list[bytes], received: list[bytes]):
    """A one-connection websocket server on a free port: answers the handshake, reads one masked text
    frame from the client (kept in ``received``), sends ``frames`` and closes. Returns its URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            head = conn.recv(2)
            size = head[1] & 0x7F
            mask = conn.recv(4)
            payload = b""
            while len(payload) < size:
                payload += conn.recv(size - len(payload))
            received.append(bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            for frame in frames:
                conn.sendall(frame)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}"


def _ws_frame(opcode: int, payload: bytes, final: bool = True) -> bytes:
    size = len(payload)
    length = bytes([size]) if size < 126 else bytes([126]) + struct.pack(">H", size) if size < 65536 \
        else bytes([127]) + struct.pack(">Q", size)
    return bytes([(0x80 if final else 0) | opcode]) + length + payload


def _preview(prompt_id: str, node_id: str, image: bytes) -> bytes:
    meta = json.dumps({"node_id": node_id, "prompt_id": prompt_id, "image_type": "image/jpeg"}).encode()
    return struct.pack(">I", 4) + struct.pack(">I", len(meta)) + meta + image   # PREVIEW_IMAGE_WITH_METADATA


def test_runner_sees_the_live_previews_comfyui_sends_over_its_websocket():
    """The runner's websocket client asks for previews with metadata (as the browser does, else
    ComfyUI sends none) and reads ComfyUI's binary preview messages per prompt and node: short and
    64-bit lengths, a fragmented end message; a Render node that sent no JPEG is a problem."""
    r = runner()
    jpeg = b"\xff\xd8\xff\xe0" + bytes(70_000)   # past 65535 bytes: the 64-bit length
    end = json.dumps({"type": "execution_success", "data": {"prompt_id": "p1"}}).encode()
    frames = [_ws_frame(2, _preview("p1", "6", jpeg)), _ws_frame(2, _preview("p2", "7", b"\xff\xd8\xff")),
              _ws_frame(2, _preview("p1", "9", b"\x89PNG")), _ws_frame(2, struct.pack(">I", 3) + b"text"),
              _ws_frame(1, end[:10], final=False), _ws_frame(0, end[10:]), _ws_frame(8, b"")]
    received = []
    listener = r.Listener(_fake_comfyui_websocket(frames, received), "client")
    try:
        previews = listener.previews_of("p1")
    finally:
        listener.close()
    assert json.loads(received[0]) == {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
    assert [(p["node_id"], len(p["image"])) for p in previews] == [("6", len(jpeg)), ("9", 4)]
    assert "p1" in listener.ended
    assert r.check_live_previews(previews, ["6"]) == []
    assert r.check_live_previews(previews, ["6", "9", "7"]) == [
        "node 9 sent no live preview frame while it rendered", "node 7 sent no live preview frame while it rendered"]


def test_examples_store_no_node_titles_so_comfyui_shows_them_in_the_users_language():
    """A stored title would win over the display name that ComfyUI translates (locales/zh)."""
    for path in WORKFLOWS:
        titled = [n["type"] for n in json.loads(path.read_text())["nodes"] if "title" in n]
        assert titled == [], f"{path.name}: {titled}"
