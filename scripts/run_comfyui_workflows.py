"""Run the example workflows in a real ComfyUI, headless, and check their outputs.

    python scripts/run_comfyui_workflows.py /path/to/ComfyUI [--python /path/to/comfy/venv/bin/python]

What it does:

1. makes a temporary ComfyUI base folder (models, input, output, temp, user, custom_nodes) with this
   pack symlinked into ``custom_nodes``; stand-in weights in the official layout go into
   ``models/sadtalker`` (``--weights-dir`` to reuse a folder, else written with the shared
   ``make_weights.py``) and a random-weight GFPGANv1.4 into ``models/facerestore_models``;
2. puts short inputs in ``input/`` under the names the workflows use (a fraction of a second of
   speech, so the CPU renders only a few frames);
3. starts ``main.py --cpu --listen 127.0.0.1 --port N`` with that base folder;
4. converts each ``workflows/*.json`` (UI format) into an API prompt, mapping ``widgets_values`` to
   input names with the server's ``/object_info``;
5. queues each prompt, waits for it, and checks the saved mp4 (video + audio streams, duration);
6. stops the server; exits non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SADTALKER_SHARED_DIR", REPO.parent / "shared"))
MEDIA = SHARED / "media"
PACK_DIR_NAME = "comfyui-sadtalker"
FPS = 25.0
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

log = logging.getLogger("run_comfyui_workflows")


# --------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_stand_in_weights(folder: Path, seed: int = 0) -> None:
    """The three official-layout SadTalker files from the shared manifests (random weights)."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("make_weights", SHARED / "parity" / "make_weights.py")
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    manifests = SHARED / "parity" / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    state = make_weights.make_state_dict(json.loads((manifests / "SadTalker_V0.0.2.safetensors.json").read_text()), seed)
    save_file(state, str(folder / "SadTalker_V0.0.2_256.safetensors"))
    for name in ("mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"):
        mapping = make_weights.make_state_dict(json.loads((manifests / f"{name}.json").read_text()), seed)
        torch.save({"mapping": mapping, "epoch": int(name[8:13])}, folder / name)


def write_stand_in_gfpgan(path: Path) -> None:
    """GFPGANv1.4's architecture with random weights, saved like the official file."""
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    module = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                    num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": module.state_dict()}, path)


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def prepare_inputs(input_dir: Path, seconds: float, ref_seconds: float) -> None:
    """Short copies of the shared media under the names the example workflows use."""
    input_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(MEDIA / "art_0.png", input_dir / "portrait.png")
    shutil.copy(MEDIA / "full_body_1.png", input_dir / "full_body.png")
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(MEDIA / "speech_en_16k_3s.wav"), "-t", f"{seconds:.3f}",
                    "-c:a", "pcm_s16le", str(input_dir / "speech.wav")], check=True)
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(MEDIA / "ref_pose_blink_3s.mp4"), "-t", f"{ref_seconds:.3f}",
                    "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(input_dir / "reference.mp4")], check=True)


# --------------------------------------------------------------------------- server


class Server:
    def __init__(self, comfyui: Path, python: str, base: Path, port: int, log_path: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
               "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
        log.info("starting ComfyUI: %s", " ".join(cmd))
        self.log_file = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=comfyui, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict, timeout: float = 30):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"POST {path} -> {err.code}: {err.read().decode(errors='replace')[:4000]}") from err

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()


# --------------------------------------------------------------------------- UI -> API


def _input_specs(info: dict) -> list[tuple[str, list]]:
    specs = []
    for section in ("required", "optional"):
        specs += list(info.get("input", {}).get(section, {}).items())
    order = info.get("input_order")
    if order:
        named = dict(specs)
        specs = [(n, named[n]) for sec in ("required", "optional") for n in order.get(sec, []) if n in named]
    return specs


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control(name: str, spec: list) -> bool:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if opts.get("control_after_generate"):
        return True
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow into an API prompt (``{id: {class_type, inputs}}``)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if node.get("mode", 0) in (2, 4):      # muted / bypassed
            continue
        if kind not in object_info:
            if kind in ("Note", "MarkdownNote"):
                continue
            raise RuntimeError(f"node type {kind!r} (node {node['id']}) is not known to this ComfyUI; "
                               "is the pack loaded? (see the server log)")
        linked = {inp["name"]: inp.get("link") for inp in node.get("inputs", []) if inp.get("link") is not None}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        cursor = 0
        for name, spec in _input_specs(object_info[kind]):
            if _is_widget(spec):
                value = values[cursor] if cursor < len(values) else None
                cursor += 1
                if _has_control(name, spec):
                    cursor += 1
                if name not in linked and value is not None:
                    inputs[name] = value
            if name in linked:
                link = links[linked[name]]
                inputs[name] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt


# --------------------------------------------------------------------------- checks


def probe(path: Path) -> dict:
    proc = subprocess.run([ffmpeg(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    text = proc.stderr
    match = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    duration = int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else None
    return {"duration": duration, "video": [ln for ln in text.splitlines() if "Video:" in ln],
            "audio": [ln for ln in text.splitlines() if "Audio:" in ln]}


def audio_seconds(path: Path) -> float:
    """Length of the decoded audio stream in seconds (16 kHz mono decode)."""
    proc = subprocess.run([ffmpeg(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1",
                           "-ar", "16000", "pipe:1"], capture_output=True, check=True)
    return len(proc.stdout) / 2 / 16000


def video_frames(path: Path) -> int:
    """Video packets in the file (one per frame for H.264 in mp4)."""
    proc = subprocess.run([ffmpeg(), "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
                          capture_output=True, text=True)
    found = re.findall(r"frame=\s*(\d+)", proc.stderr)
    return int(found[-1]) if found else -1


def run_workflow(server: Server, path: Path, object_info: dict, output_dir: Path, timeout: float,
                 expected_frames: int) -> list[str]:
    """Queue one workflow and check its mp4; returns a list of problems (empty = passed)."""
    workflow = json.loads(path.read_text())
    prompt = ui_to_api(workflow, object_info)
    before = set(output_dir.rglob("*.mp4"))
    client_id = uuid.uuid4().hex
    answer = server.post("/prompt", {"prompt": prompt, "client_id": client_id})
    if answer.get("node_errors"):
        return [f"validation errors: {json.dumps(answer['node_errors'])[:2000]}"]
    prompt_id = answer["prompt_id"]
    log.info("%s: queued as %s", path.name, prompt_id)
    deadline = time.time() + timeout
    history = None
    while time.time() < deadline:
        if server.proc.poll() is not None:
            return [f"ComfyUI died:\n{server.log_tail()}"]
        data = server.get(f"/history/{prompt_id}")
        if prompt_id in data and data[prompt_id].get("status", {}).get("completed") is not None:
            history = data[prompt_id]
            if history["status"].get("status_str") in ("success", "error"):
                break
        time.sleep(2)
    if history is None:
        return [f"did not finish within {timeout:.0f} s:\n{server.log_tail()}"]
    status = history["status"]
    if status.get("status_str") != "success":
        messages = [m for m in status.get("messages", []) if m[0] == "execution_error"]
        return [f"execution failed: {json.dumps(messages)[:4000]}"]
    problems = []
    new = sorted(set(output_dir.rglob("*.mp4")) - before)
    if len(new) != 1:
        return [f"expected one new mp4 in {output_dir}, found {[str(p) for p in new]}"]
    mp4 = new[0]
    info = probe(mp4)
    frames = video_frames(mp4)
    seconds = audio_seconds(mp4) if info["audio"] else 0.0
    log.info("%s: %s, %d frames, audio %.3f s, duration %s s", path.name, mp4.name, frames, seconds, info["duration"])
    if len(info["video"]) != 1:
        problems.append(f"{mp4.name}: expected one video stream, got {info['video']}")
    if len(info["audio"]) != 1:
        problems.append(f"{mp4.name}: expected one audio stream, got {info['audio']}")
    if frames != expected_frames:
        problems.append(f"{mp4.name}: {frames} frames, expected {expected_frames}")
    if info["audio"] and abs(seconds - expected_frames / FPS) > 0.03:
        problems.append(f"{mp4.name}: audio lasts {seconds:.3f} s, expected {expected_frames / FPS:.3f} s")
    ui_nodes = {k: v for k, v in history.get("outputs", {}).items()}
    render_ui = [v for v in ui_nodes.values() if "sadtalker_video" in v]
    curves_ui = [v for v in ui_nodes.values() if "sadtalker_curves" in v]
    if not render_ui:
        problems.append("the render node sent no preview video to the UI")
    if not curves_ui:
        problems.append("no coefficient curves were sent to the UI")
    return problems


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("comfyui", type=Path, help="ComfyUI folder (with main.py)")
    parser.add_argument("--python", default=sys.executable, help="Python of ComfyUI's environment")
    parser.add_argument("--pack", type=Path, default=REPO, help="pack folder to install (default: this checkout)")
    parser.add_argument("--weights-dir", type=Path, help="folder with stand-in (or real) SadTalker files to link")
    parser.add_argument("--workflows", type=Path, nargs="*", help="default: every workflows/*.json")
    parser.add_argument("--seconds", type=float, default=0.09, help="speech length (0.09 s = 2 frames)")
    parser.add_argument("--ref-seconds", type=float, default=0.2, help="reference video length")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=900, help="per workflow")
    parser.add_argument("--keep", action="store_true", help="keep the temporary base folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    comfyui = args.comfyui.resolve()
    if not (comfyui / "main.py").is_file():
        log.error("%s has no main.py; give the ComfyUI folder", comfyui)
        return 2
    pack = args.pack.resolve()
    workflows = args.workflows or sorted((pack / "workflows").glob("*.json"))
    base = Path(tempfile.mkdtemp(prefix="sadtalker_comfyui_"))
    server = None
    failures: dict[str, list[str]] = {}
    try:
        for sub in ("models", "input", "output", "temp", "user", "custom_nodes"):
            (base / sub).mkdir()
        (base / "custom_nodes" / PACK_DIR_NAME).symlink_to(pack, target_is_directory=True)
        weights = base / "models" / "sadtalker"
        if args.weights_dir:
            weights.symlink_to(args.weights_dir.resolve(), target_is_directory=True)
        else:
            log.info("writing stand-in SadTalker weights")
            write_stand_in_weights(weights)
        write_stand_in_gfpgan(base / "models" / "facerestore_models" / "GFPGANv1.4.pth")
        prepare_inputs(base / "input", args.seconds, args.ref_seconds)
        expected_frames = int(args.seconds * 16000) // 640

        server = Server(comfyui, args.python, base, free_port(), base / "comfyui.log")
        try:
            server.wait_ready(args.startup_timeout)
        except RuntimeError as err:
            log.error("%s", err)
            return 1
        object_info = server.get("/object_info", timeout=120)
        ours = sorted(k for k in object_info if k.startswith("SadTalker"))
        log.info("SadTalker nodes registered: %s", ", ".join(ours) or "NONE")
        if "SadTalkerRender" not in object_info:
            log.error("the pack did not load:\n%s", server.log_tail(120))
            return 1
        scripts = [u for u in server.get("/extensions") if f"/{PACK_DIR_NAME}/" in u]
        log.info("front-end extension files served: %s", ", ".join(scripts) or "NONE")
        if not any(u.endswith("/sadtalker.js") for u in scripts):
            failures["web extension"] = ["web/sadtalker.js is not served under /extensions"]
        else:
            with urllib.request.urlopen(server.url + scripts[0], timeout=30) as response:
                if b"registerExtension" not in response.read():
                    failures["web extension"] = [f"{scripts[0]} does not look like the extension"]
        for path in workflows:
            log.info("running %s", path.name)
            try:
                problems = run_workflow(server, path, object_info, base / "output", args.timeout, expected_frames)
            except Exception as err:  # noqa: BLE001 - report and continue with the next workflow
                problems = [f"{type(err).__name__}: {err}"]
            if problems:
                failures[path.name] = problems
                log.error("%s FAILED:\n  %s", path.name, "\n  ".join(problems))
            else:
                log.info("%s passed", path.name)
        warnings = [ln for ln in server.log_tail(400).splitlines() if "SadTalker" in ln and ("WARNING" in ln or "disabled" in ln)]
        for line in warnings:
            log.info("server: %s", line)
    finally:
        if server is not None:
            if failures:
                log.info("server log tail:\n%s", server.log_tail(80))
            server.stop()
        if args.keep:
            log.info("kept %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if failures:
        log.error("failed: %s", ", ".join(failures))
        return 1
    log.info("all %d workflows passed", len(workflows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
