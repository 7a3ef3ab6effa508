"""Run the example workflows in a real ComfyUI, headless, and check every video they save.

    python scripts/run_comfyui_workflows.py /path/to/ComfyUI --python /path/to/comfy/venv/bin/python \\
        [--extra-node /path/to/ComfyUI-VideoHelperSuite] [--quick]

It works from any checkout of the pack (also an installed copy in ``ComfyUI/custom_nodes``) and
needs nothing beside it; the runner itself uses only the standard library (and Playwright, when it
is installed, for the browser case), everything else runs in ComfyUI's Python (``--python``,
default: the Python running this script).

1. makes a temporary ComfyUI base folder (models, input, output, temp, user, custom_nodes) with
   this pack (and every ``--extra-node`` folder) symlinked into ``custom_nodes``; deterministic
   stand-in weights in the official layout go into ``models/sadtalker`` (written with
   ``sadtalker_models/stand_in_weights.py``; ``--weights-dir`` reuses a folder) and a random-weight
   GFPGANv1.4 into ``models/facerestore_models``;
2. puts the runner's own inputs in ``input/`` under names the examples do not use: short cuts of the
   example speech and reference video (a fraction of a second, so the CPU renders only a few
   frames), odd-sized pictures (451x675, 211x317, 221x333), a masked two-people picture, two
   speakers' turns;
3. starts ``main.py --cpu`` on a free port with that base folder; the pack copies its
   ``example_inputs`` into ``input/`` as it loads (checked: every file, same bytes);
4. converts each example workflow (UI format) into an API prompt, mapping ``widgets_values`` to
   input names with the server's ``/object_info``, and runs it **as loaded**: unchanged, on the
   pack's example inputs, no file picked by hand (``--quick``: on the short inputs instead); then
   derived cases on the short inputs: odd-sized pictures in ``full``, ``crop`` and ``resize`` mode
   with paste-back through core Create Video -> Save Video, a list of pictures, a Load Image MASK
   choosing a face, two speakers taking turns, and (when VideoHelperSuite is loaded) VHS Load Video
   -> Reference Video to Coefficients and Render -> VHS Video Combine;
5. queues each prompt as one websocket client, waits for it, and checks every video it saved: one
   video stream with even width and height, the expected frame count, an audio stream as long as
   the frames, the container duration, the previews/curves in the run's UI outputs, and that every
   Render node sent live JPEG frames over the websocket while it ran; the first example is
   re-queued unchanged right after its run (ComfyUI serves it from its cache): it must save no
   second video and must re-send the previews and curves (as after a page reload and Run);
6. with Playwright and Chromium (else left out with a warning): the stale-preview case in a
   browser: the plain example loaded as it ran shows its previews again, loaded with another
   picture it shows none;
7. stops the server and ends with ``all N cases passed`` (exit 0) or ``failed: <cases>`` (exit 1).
"""

from __future__ import annotations

import argparse
import base64
import copy
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "comfyui-sadtalker"
FPS = 25.0
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov")
ODD_FULL = (451, 675)     # full mode, paste-back: the output must be even and about this size
ODD_CROP = (211, 317)     # crop mode, paste-back
PLAIN_EXAMPLE = "sadtalker_image_audio_to_video.json"   # the browser case loads this example
ODD_RESIZE = (221, 333)   # resize mode: the crop's aspect gives int(256 * 333 / 221) = 385 rows before evening

log = logging.getLogger("run_comfyui_workflows")


class SetupError(RuntimeError):
    """Something the user must fix before the check can run; the message says what."""


# --------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(python: str, cwd: Path, code: str, *args: str, what: str) -> str:
    """Run ``code`` in ComfyUI's Python with ``cwd`` as the working folder; returns its stdout."""
    try:
        proc = subprocess.run([python, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    except OSError as err:
        raise SetupError(f"Could not start {python} to {what} ({err}); pass ComfyUI's Python with --python.") from err
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SetupError(f"Could not {what} with {python}: {last}. Install the pack's requirements into that "
                         "Python (pip install -r requirements.txt).")
    return proc.stdout


WRITE_WEIGHTS = ("import sys\n"
                 "from sadtalker_models.stand_in_weights import write_stand_in_files\n"
                 "write_stand_in_files(sys.argv[1], int(sys.argv[2]))\n")

WRITE_GFPGAN = ("import sys, torch\n"
                "from spandrel.architectures.GFPGAN import GFPGAN\n"
                "torch.manual_seed(0)\n"
                "net = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,\n"
                "             fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1,\n"
                "             sft_half=True)\n"
                "torch.save({'params_ema': net.state_dict()}, sys.argv[1])\n")

TURNS = ("turn_a.wav", "turn_b.wav")        # input/: speaker A speaks, then B (the turn-taking case)
SPEECH_LIST = ("clip1.wav", "clip2.wav")   # input/speeches/, read by SadTalker Load Audio List
# the examples' long inputs -> the runner's short cuts of them (derived cases, --quick)
SHORT = {"speech.wav": "short_speech.wav", "speech_b.wav": "short_speech_b.wav",
         "reference.mp4": "short_reference.mp4", "speeches": "short_speeches"}
FIND_FFMPEG = "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"


def media_dir(pack: Path) -> Path:
    folder = pack / "tests" / "data" / "media"
    needed = ["art_0.png", "full_body_1.png", "full3.png"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise SetupError(f"{folder} lacks {', '.join(missing)}: this check needs a full clone of the pack "
                         "(git clone, not a copy without tests/); or give --pack a full clone.")
    return folder


def examples_dir(pack: Path) -> Path:
    folder = pack / "example_inputs"
    missing = [name for name in ("two_people.png", *SHORT) if not (folder / name).exists()]
    if missing:
        raise SetupError(f"{folder} lacks {', '.join(missing)}: give --pack a full clone of the pack.")
    return folder


def ffmpeg_run(ffmpeg: str, *args: str, what: str) -> None:
    proc = subprocess.run([ffmpeg, "-v", "error", "-y", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"ffmpeg could not {what}: {proc.stderr.strip()[-500:]}")


def prepare_inputs(ffmpeg: str, media: Path, examples: Path, input_dir: Path, seconds: float, ref_seconds: float,
                   turn_seconds: float = 0.0) -> None:
    """The runner's own inputs, under names the examples do not use (the examples' own inputs are the
    pack's ``example_inputs``, which the pack copies into ``input/`` when ComfyUI loads it):

    * short cuts of the examples' speech, speech list and reference video (``SHORT`` maps the names),
      so the derived cases (and ``--quick``) render only a few frames;
    * odd-sized pictures, a list of pictures, the two-people picture with a painted mask, and the
      two speakers' turns.

    Speech and the reference video come from ``media`` when present, else they are generated
    (a tone; the portrait held still), so only the pictures are required.
    """
    input_dir.mkdir(parents=True, exist_ok=True)
    (input_dir / "pictures").mkdir(exist_ok=True)   # a list of pictures: one video each
    shutil.copy(media / "art_0.png", input_dir / "pictures" / "a.png")
    shutil.copy(media / "full3.png", input_dir / "pictures" / "b.png")
    for name in ("speech.wav", "speech_b.wav"):
        ffmpeg_run(ffmpeg, "-i", str(examples / name), "-t", f"{seconds:.3f}", "-c:a", "pcm_s16le",
                   str(input_dir / SHORT[name]), what=f"cut {name}")
    # the example's two-people picture with ComfyUI's mask-editor paint (alpha 0) over the right face:
    # Load Image's MASK
    ffmpeg_run(ffmpeg, "-i", str(examples / "two_people.png"), "-vf", "format=rgba,geq=r='r(X,Y)':g='g(X,Y)':"
               "b='b(X,Y)':a='if(gt(X,560)*between(Y,250,600),0,255)'", str(input_dir / "two_people_mask.png"),
               what="paint a mask over the right face")
    if turn_seconds > 0:   # two speakers taking turns: A, a pause, then B (each a voiced stretch of its clip)
        turn = f"{turn_seconds:.3f}"
        ffmpeg_run(ffmpeg, "-i", str(media / "speech_en_16k_3s.wav"), "-af", f"atrim=0:{turn},apad",
                   "-t", f"{3 * turn_seconds:.3f}", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le",
                   str(input_dir / TURNS[0]), what="make the first speaker's turn")
        ffmpeg_run(ffmpeg, "-f", "lavfi", "-t", f"{2 * turn_seconds:.3f}", "-i", "anullsrc=r=16000:cl=mono", "-i",
                   str(media / "speech_zh_48k_stereo_3s.wav"), "-filter_complex",
                   f"[1]atrim=0.24:{0.24 + turn_seconds:.3f},asetpts=PTS-STARTPTS,aresample=16000,"
                   "pan=mono|c0=0.5*c0+0.5*c1[b];[0][b]concat=n=2:v=0:a=1", "-c:a", "pcm_s16le",
                   str(input_dir / TURNS[1]), what="make the second speaker's turn")
    (input_dir / SHORT["speeches"]).mkdir(exist_ok=True)   # a list of speech clips: one video each
    for name, clip in zip(SPEECH_LIST, ("speech.wav", "speech_b.wav")):
        shutil.copy(input_dir / SHORT[clip], input_dir / SHORT["speeches"] / name)
    ffmpeg_run(ffmpeg, "-i", str(examples / "reference.mp4"), "-t", f"{ref_seconds:.3f}", "-an", "-c:v", "libx264",
               "-pix_fmt", "yuv420p", str(input_dir / SHORT["reference.mp4"]), what="cut the reference video")
    for (width, height) in (ODD_FULL, ODD_CROP, ODD_RESIZE):
        ffmpeg_run(ffmpeg, "-i", str(media / "full_body_1.png"), "-vf", f"scale={width}:{height}:flags=bicubic",
                   str(input_dir / f"odd_{width}x{height}.png"), what="make an odd-sized picture")


def check_example_inputs(examples: Path, input_dir: Path) -> list[str]:
    """Every file of the pack's ``example_inputs`` must be in ComfyUI's ``input/`` with the same bytes
    once the pack has loaded (it copies them there), so the examples run as loaded."""
    problems = []
    for source in sorted(p for p in examples.rglob("*") if p.is_file() and p.name != "README.md"):
        target = input_dir / source.relative_to(examples)
        if not target.is_file() or target.read_bytes() != source.read_bytes():
            problems.append(f"{target.relative_to(input_dir)} was not put in input/ by the pack")
    return problems


def install_node(custom_nodes: Path, folder: Path, name: str | None = None) -> None:
    folder = folder.resolve()
    if not folder.is_dir():
        raise SetupError(f"--extra-node {folder} is not a folder; give a custom node folder such as "
                         "ComfyUI-VideoHelperSuite.")
    (custom_nodes / (name or folder.name)).symlink_to(folder, target_is_directory=True)


# --------------------------------------------------------------------------- server


class Server:
    def __init__(self, comfyui: Path, python: str, base: Path, port: int, log_path: Path):
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
               "--disable-auto-launch", "--database-url", "sqlite:///:memory:"]
        log.info("starting ComfyUI: %s", " ".join(cmd))
        self.log_file = open(log_path, "w")
        env = {k: v for k, v in os.environ.items() if k != "SADTALKER_NO_EXAMPLE_INPUTS"}   # the pack copies them
        self.proc = subprocess.Popen(cmd, cwd=comfyui, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict, timeout: float = 30):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read()
                return json.loads(data) if data else None
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"POST {path} -> {err.code}: {err.read().decode(errors='replace')[:4000]}") from err

    def wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SetupError(f"ComfyUI exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                time.sleep(1)
        raise SetupError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

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


def _masked(payload: bytes, mask: bytes) -> bytes:
    """A websocket payload XOR-ed with its 4-byte mask (the same operation masks and unmasks)."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Listener:
    """ComfyUI's websocket as one client (``client_id``), read on a thread: the preview images sent to
    it (the live frames on a node's progress bar) and when each of its prompts ended. Plain RFC 6455
    over a socket, so the runner needs nothing beyond the standard library."""

    def __init__(self, url: str, client_id: str):
        parts = urllib.parse.urlsplit(url)
        self.client_id = client_id
        self.previews: list[dict] = []        # {"prompt_id", "node_id", "image"} in arrival order
        self.ended: set[str] = set()           # prompt ids whose execution_success/error/interrupted came
        self.lock = threading.Lock()
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SetupError("ComfyUI closed its websocket during the handshake")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise SetupError(f"ComfyUI refused the websocket: {head[:200]!r}")
        # as the browser does: ask for previews with their node and prompt (else none are sent)
        self.send(1, json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}).encode())
        self.sock.settimeout(None)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        length = (bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack(">H", size)
                  if size < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", size))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + _masked(payload, mask))

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def _read(self) -> None:
        kind, message = 0, b""
        try:
            while True:
                first, second = self._exactly(2)
                opcode, size = first & 0x0F, second & 0x7F
                if size >= 126:
                    size = struct.unpack(">H" if size == 126 else ">Q", self._exactly(2 if size == 126 else 8))[0]
                mask = self._exactly(4) if second & 0x80 else b""
                payload = self._exactly(size)
                if mask:
                    payload = _masked(payload, mask)
                if opcode == 8:
                    return
                if opcode == 9:
                    self.send(10, payload)
                    continue
                if opcode in (1, 2):
                    kind, message = opcode, payload
                elif opcode == 0:
                    message += payload
                if first & 0x80 and opcode in (0, 1, 2):
                    self._handle(kind, message)
        except (OSError, ConnectionError, ValueError, struct.error):
            return

    def _handle(self, kind: int, message: bytes) -> None:
        if kind == 1:
            data = json.loads(message)
            if data.get("type") in ("execution_success", "execution_error", "execution_interrupted"):
                with self.lock:
                    self.ended.add(str(data.get("data", {}).get("prompt_id")))
            return
        if len(message) < 8 or struct.unpack(">I", message[:4])[0] != 4:   # PREVIEW_IMAGE_WITH_METADATA
            return
        length = struct.unpack(">I", message[4:8])[0]
        meta = json.loads(message[8:8 + length])
        with self.lock:
            self.previews.append({"prompt_id": str(meta.get("prompt_id")), "node_id": str(meta.get("node_id")),
                                  "image": message[8 + length:]})

    def previews_of(self, prompt_id: str, wait: float = 10.0) -> list[dict]:
        """The previews of one prompt that came before it ended (waits for its end message)."""
        deadline = time.time() + wait
        while time.time() < deadline and self.thread.is_alive():
            with self.lock:
                if prompt_id in self.ended:
                    break
            time.sleep(0.2)
        with self.lock:
            return [p for p in self.previews if p["prompt_id"] == prompt_id]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


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
            raise SetupError(f"node type {kind!r} (node {node['id']}) is not known to this ComfyUI; "
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


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One API prompt to queue and what its saved videos must look like."""

    name: str
    prompt: dict
    frames: int
    size: tuple[int, int] | None = None          # about (width, height) of the source picture; output is even
    videos: int = 1                              # videos it must save (0: served from the cache)
    ui: dict[str, str] = field(default_factory=dict)   # ui key the history must hold -> why
    voices: tuple[str, ...] = ()                 # input audio per face, left to right: measure whose mouth moves
    chosen_face: str = ""                        # "left"/"right": the face the saved faces preview must mark

    @property
    def renderers(self) -> list[str]:
        """The node ids that must show live frames while the case runs (none when served from the cache)."""
        if not self.videos:
            return []
        return nodes_of(self.prompt, "SadTalkerRender") + nodes_of(self.prompt, "SadTalkerRenderVideo")


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return [key for key, node in prompt.items() if node["class_type"] == class_type]


def set_inputs(prompt: dict, class_type: str, **values) -> None:
    ids = nodes_of(prompt, class_type)
    if not ids:
        raise SetupError(f"the base workflow has no {class_type} node; the derived case cannot be built")
    for key in ids:
        prompt[key]["inputs"].update(values)


def expected_ui(prompt: dict) -> dict[str, str]:
    kinds = {node["class_type"] for node in prompt.values()}
    ui = {}
    if "SadTalkerRender" in kinds:
        ui["sadtalker_video"] = "the Render node's preview"
    if "SadTalkerRenderVideo" in kinds:
        ui["sadtalker_video"] = "the Render to Video node's preview"
    if kinds & {"SadTalkerAudioToCoefficients", "SadTalkerReferenceToCoefficients", "SadTalkerIdleCoefficients"}:
        ui["sadtalker_curves"] = "the coefficient curves"
    return ui


def shorten(prompt: dict, frames: int) -> dict:
    """A copy of an example's prompt on the runner's short inputs (``SHORT``); an idle clip of ``frames``."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value in SHORT:
                node["inputs"][name] = SHORT[value]
    for key in nodes_of(prompt, "SadTalkerIdleCoefficients"):
        prompt[key]["inputs"]["seconds"] = frames / FPS
    return prompt


def audio_frames(path: Path) -> int:
    """25-fps frames a WAV file drives: ``floor(n16k / 640)``, as the pipeline counts them."""
    try:
        with wave.open(str(path)) as wav:
            return wav.getnframes() * 16000 // wav.getframerate() // 640
    except (OSError, wave.Error, EOFError) as err:
        raise SetupError(f"could not read {path} as a WAV file ({err})") from err


def expected_frames(prompt: dict, input_dir: Path) -> int:
    """Frames each video of a prompt run as loaded must have: its idle clip's seconds, or the length of
    the speech it loads (every clip of a speech list and every voice of a prompt must agree)."""
    for key in nodes_of(prompt, "SadTalkerIdleCoefficients"):
        return int(round(float(prompt[key]["inputs"]["seconds"]) * FPS))
    files = [input_dir / prompt[key]["inputs"]["audio"] for key in nodes_of(prompt, "LoadAudio")]
    for key in nodes_of(prompt, "SadTalkerLoadAudioList"):
        files += sorted((input_dir / prompt[key]["inputs"]["folder"]).glob("*.wav"))
    counts = {audio_frames(path) for path in files}
    if len(counts) != 1:
        raise SetupError(f"cannot tell the frame count of an example run as loaded from {files}: {counts}")
    return counts.pop()


def picture_list_case(base: dict, frames: int) -> Case:
    """The base example fed a list of two pictures (core Load Image Dataset from Folder): ComfyUI runs
    the chain once per picture, so two videos are saved; the model loader runs once."""
    prompt = copy.deepcopy(base)
    for key in nodes_of(prompt, "LoadImage"):
        prompt[key] = {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": "pictures"}}
    set_inputs(prompt, "SaveVideo", filename_prefix="video/list")
    return Case("list of 2 pictures (Load Image Dataset from Folder) -> one video each", prompt, frames, videos=2,
                ui=expected_ui(prompt))


def turns_case(base: dict, turn_seconds: float) -> Case:
    """The two-people example with the speakers taking turns (A, a pause as long, then B), head motion 0
    and no blinks,
    so that a change in a mouth box is lip motion; the saved video is measured with
    ``benchmarks/mouth_motion.py``: each mouth must follow its own voice."""
    prompt = copy.deepcopy(base)
    for key in nodes_of(prompt, "SadTalkerAudioToCoefficients"):
        inputs = prompt[key]["inputs"]
        face_index = prompt[inputs["face"][0]]["inputs"].get("face_index", -1)
        if face_index not in (0, 1):
            raise SetupError("the two-people example's Face Crop nodes must use face_index 0 and 1")
        prompt[inputs["audio"][0]]["inputs"]["audio"] = TURNS[face_index]
        inputs.update(head_motion_scale=0.0, blink=False)
    set_inputs(prompt, "SaveVideo", filename_prefix="video/turns")
    frames = int(round(3 * turn_seconds * 16000)) // 640
    return Case("two people taking turns -> whose mouth moves when (benchmarks/mouth_motion.py)", prompt, frames,
                ui=expected_ui(prompt), voices=TURNS)


def mask_case(base: dict) -> Case:
    """Load Image's MASK (paint over the right face of the two-people picture) into Face Crop's
    ``mask`` with ``face_index`` 0: the mask wins, so the ``faces`` preview (saved by core Save
    Image) must mark the right face as the chosen one."""
    (loader,) = nodes_of(base, "SadTalkerModelLoader")
    prompt = {
        "1": copy.deepcopy(base[loader]),
        "2": {"class_type": "LoadImage", "inputs": {"image": "two_people_mask.png"}},
        "3": {"class_type": "SadTalkerFaceCrop", "inputs": {
            "model": ["1", 0], "image": ["2", 0], "mask": ["2", 1], "preprocess": "crop", "size": "256",
            "landmark_backend": "auto", "face_index": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "faces_mask"}},
    }
    return Case("Load Image MASK -> Face Crop mask (face_index 0 overridden) -> faces preview -> Save Image",
                prompt, 0, videos=0, chosen_face="right")


CHOSEN_FACE = """
import sys
import numpy as np
from PIL import Image
rgb = np.asarray(Image.open(sys.argv[1]).convert("RGB")).astype(int)
green = (rgb[..., 0] < 60) & (rgb[..., 1] > 200) & (rgb[..., 2] < 60)
half = rgb.shape[1] // 2
print(int(green[:, :half].sum()), int(green[:, half:].sum()))
"""


def check_chosen_face(python: str, pack: Path, base: Path, case: Case) -> list[str]:
    """The saved faces preview marks the chosen face in green: it must be in ``case.chosen_face``'s half."""
    saved = sorted((base / "output").glob("faces_mask_*.png"))
    if not saved:
        return ["Save Image wrote no faces_mask_*.png"]
    left, right = map(int, run_python(python, pack, CHOSEN_FACE, str(saved[-1]), what="read the faces preview").split())
    log.info("  %s: green (chosen) box pixels left %d, right %d", saved[-1].name, left, right)
    inside, outside = (right, left) if case.chosen_face == "right" else (left, right)
    if inside < 100 or outside > 0:
        return [f"the faces preview marks the wrong face (green pixels: left {left}, right {right}; the mask "
                f"is over the {case.chosen_face} face)"]
    return []


def odd_picture_case(base: dict, frames: int, mode: str, size: tuple[int, int]) -> Case:
    """The base example with an odd-sized picture, ``mode`` and paste-back, into core Save Video.

    Every saved frame size must be even (libx264 refuses odd ones); with ``full``/``extfull`` the
    face is pasted back, so the video must also have about the picture's size.
    """
    prompt = copy.deepcopy(base)
    set_inputs(prompt, "LoadImage", image=f"odd_{size[0]}x{size[1]}.png")
    set_inputs(prompt, "SadTalkerFaceCrop", preprocess=mode)
    set_inputs(prompt, "SadTalkerRender", paste_back=True)
    set_inputs(prompt, "SaveVideo", filename_prefix=f"video/odd_{mode}")
    return Case(f"odd {size[0]}x{size[1]} {mode} -> CreateVideo -> SaveVideo", prompt, frames,
                size=size if "full" in mode else None, ui=expected_ui(prompt))


def vhs_case(base: dict, frames: int) -> Case:
    """The reference example with VHS Load Video's IMAGE frames into the reference node's 'images'
    (instead of core Load Video's VIDEO) and VHS Video Combine instead of Create Video + Save Video."""
    prompt = copy.deepcopy(base)
    (loader,) = nodes_of(prompt, "LoadVideo")
    (reference,) = nodes_of(prompt, "SadTalkerReferenceToCoefficients")
    (create,) = nodes_of(prompt, "CreateVideo")
    (save,) = nodes_of(prompt, "SaveVideo")
    if prompt[reference]["inputs"].get("video") != [loader, 0]:
        raise SetupError("the reference example does not feed Load Video's VIDEO to the reference node; the VHS "
                         "case only replaces that link")
    del prompt[save], prompt[reference]["inputs"]["video"]
    prompt[loader] = {"class_type": "VHS_LoadVideo", "inputs": {
        "video": SHORT["reference.mp4"], "force_rate": 25, "custom_width": 0, "custom_height": 0, "frame_load_cap": 0,
        "skip_first_frames": 0, "select_every_nth": 1, "format": "AnimateDiff"}}
    prompt[reference]["inputs"]["images"] = [loader, 0]
    wiring = prompt.pop(create)["inputs"]
    prompt[create] = {"class_type": "VHS_VideoCombine", "inputs": {
        "images": wiring["images"], "audio": wiring["audio"], "frame_rate": 25, "loop_count": 0,
        "filename_prefix": "video/vhs", "format": "video/h264-mp4", "pingpong": False, "save_output": True,
        "pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "trim_to_audio": False}}
    return Case("VHS Load Video -> Video to Coefficients; Render -> VHS Video Combine", prompt, frames,
                ui=expected_ui(prompt))


def build_cases(workflows: list[Path], object_info: dict, frames: int, vhs: bool, turn_seconds: float = 0.0,
                input_dir: Path | None = None) -> list[Case]:
    """Each example as loaded (``input_dir``: ComfyUI's input folder holding the pack's example inputs;
    None: on the runner's short inputs instead, ``frames`` long), then the derived cases, which are
    built from the examples on the short inputs."""
    cases = []
    prompts = {}
    for path in workflows:
        try:
            workflow = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SetupError(f"{path} is not a readable workflow JSON ({err})") from err
        loaded = ui_to_api(workflow, object_info)
        prompts[path.name] = shorten(loaded, frames)
        prompt = loaded if input_dir else prompts[path.name]
        saves = len(nodes_of(prompt, "SaveVideo")) + len(nodes_of(prompt, "VHS_VideoCombine"))
        if nodes_of(prompt, "SadTalkerLoadAudioList"):   # a list: the chain runs once per clip
            saves *= len(SPEECH_LIST)
        name = f"{path.name} as loaded" if input_dir else f"{path.name} on short inputs"
        cases.append(Case(name, prompt, expected_frames(prompt, input_dir) if input_dir else frames, videos=saves,
                          ui=expected_ui(prompt)))
    # the first example again, unchanged and straight after it (ComfyUI's cache keeps the last prompt
    # only): served from the cache, as when a user reloads the page and presses Run
    first = cases[0]
    # and the previews/curves must come back: ComfyUI re-sends the UI of cached output nodes only
    requeue = Case(f"{first.name}, re-queued unchanged (cached)", first.prompt, first.frames, videos=0,
                   ui={key: f"{why}, re-sent from the cache (is its node an output node?)"
                       for key, why in first.ui.items()})
    cases.insert(1, requeue)
    plain = [p for p in prompts.values() if {"LoadImage", "SadTalkerFaceCrop", "SadTalkerRender", "CreateVideo",
                                             "SaveVideo"} <= {n["class_type"] for n in p.values()}
             and not {"SadTalkerFaceEnhance", "SadTalkerReferenceToCoefficients", "SadTalkerLoadAudioList"}
             & {n["class_type"] for n in p.values()}]
    if not plain:
        raise SetupError("no example workflow has the plain Load Image -> Face Crop -> Render -> Create Video -> "
                         "Save Video chain the odd-size cases are built from")
    plain.sort(key=lambda p: not nodes_of(p, "LoadAudio"))   # a speech-driven example first (stable)
    cases.append(odd_picture_case(plain[0], frames, "full", ODD_FULL))
    cases.append(odd_picture_case(plain[0], frames, "crop", ODD_CROP))
    resize = odd_picture_case(plain[0], frames, "resize", ODD_RESIZE)
    resize.size = (256, 386)   # 256 x int(256 * 333 / 221) = 385 rows, made even
    cases.append(resize)
    if "LoadImageDataSetFromFolder" in object_info:
        cases.append(picture_list_case(plain[0], frames))
    cases.append(mask_case(plain[0]))
    two = [p for p in prompts.values() if len(nodes_of(p, "SadTalkerRender")) == 2
           and any("background" in p[k]["inputs"] for k in nodes_of(p, "SadTalkerRender"))]
    if turn_seconds > 0 and two:
        cases.append(turns_case(two[0], turn_seconds))
    reference = [p for p in prompts.values() if nodes_of(p, "SadTalkerReferenceToCoefficients")
                 and nodes_of(p, "LoadVideo") and nodes_of(p, "CreateVideo")]
    if vhs and reference:
        cases.append(vhs_case(reference[0], frames))
    elif vhs:
        log.warning("no reference-video example with Load Video; the VHS case is left out")
    else:
        log.warning("VideoHelperSuite is not loaded (add --extra-node /path/to/ComfyUI-VideoHelperSuite); "
                    "the VHS case is left out")
    return cases


# --------------------------------------------------------------------------- checks


@dataclass
class Probe:
    streams_video: list[str]
    streams_audio: list[str]
    width: int
    height: int
    duration: float | None
    frames: int
    audio_seconds: float


def probe(ffmpeg: str, path: Path) -> Probe:
    """Streams, frame size, container duration, video packets and decoded audio length of a video file."""
    text = subprocess.run([ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    video = [ln.strip() for ln in text.splitlines() if "Stream #" in ln and "Video:" in ln]
    audio = [ln.strip() for ln in text.splitlines() if "Stream #" in ln and "Audio:" in ln]
    size = re.search(r", (\d{2,5})x(\d{2,5})[ ,\[]", video[0]) if video else None
    match = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    duration = int(match[1]) * 3600 + int(match[2]) * 60 + float(match[3]) if match else None
    counted = subprocess.run([ffmpeg, "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
                             capture_output=True, text=True).stderr
    found = re.findall(r"frame=\s*(\d+)", counted)
    seconds = 0.0
    if audio:
        pcm = subprocess.run([ffmpeg, "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1",
                              "-ar", "16000", "pipe:1"], capture_output=True)
        seconds = len(pcm.stdout) / 2 / 16000
    return Probe(video, audio, int(size[1]) if size else 0, int(size[2]) if size else 0, duration,
                 int(found[-1]) if found else -1, seconds)


def check_video(ffmpeg: str, path: Path, case: Case) -> list[str]:
    info = probe(ffmpeg, path)
    seconds = case.frames / FPS
    log.info("  %s: %dx%d, %d frames, audio %s, audio %.3f s, duration %s s", path.name, info.width, info.height,
             info.frames, "yes" if info.streams_audio else "NO", info.audio_seconds, info.duration)
    problems = []
    if len(info.streams_video) != 1:
        problems.append(f"{path.name}: expected one video stream, got {info.streams_video}")
    if info.width % 2 or info.height % 2 or not info.width:
        problems.append(f"{path.name}: frame size {info.width}x{info.height} is not even")
    if case.size and (abs(info.width - case.size[0]) > 1 or abs(info.height - case.size[1]) > 1):
        problems.append(f"{path.name}: frame size {info.width}x{info.height}, expected the picture's "
                        f"{case.size[0]}x{case.size[1]} made even")
    if info.frames != case.frames:
        problems.append(f"{path.name}: {info.frames} frames, expected {case.frames}")
    if len(info.streams_audio) != 1:
        problems.append(f"{path.name}: expected one audio stream, got {info.streams_audio}")
    elif abs(info.audio_seconds - seconds) > 0.03:
        problems.append(f"{path.name}: audio lasts {info.audio_seconds:.3f} s, expected {seconds:.3f} s")
    if info.duration is None or abs(info.duration - seconds) > 0.05:
        problems.append(f"{path.name}: container duration {info.duration} s, expected {seconds:.3f} s")
    return problems


def measure_mouths(python: str, pack: Path, base: Path, case: Case) -> list[str]:
    """Run benchmarks/mouth_motion.py on the case's saved video; a problem when a mouth follows
    another voice more than its own."""
    (video,) = sorted((base / "output" / "video").glob("turns_*.mp4"))[-1:]
    cmd = [python, "-m", "benchmarks.mouth_motion", "--video", str(video), "--picture",
           str(base / "input" / "two_people.png"), "--audio", *(str(base / "input" / v) for v in case.voices)]
    proc = subprocess.run(cmd, cwd=pack, capture_output=True, text=True)
    for line in proc.stdout.strip().splitlines():
        log.info("  %s", line)
    if proc.returncode != 0:
        return [f"mouth motion: {(proc.stdout + proc.stderr).strip()[-1500:]}"]
    return []


def videos_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES}


def execution_errors(status: dict) -> list[str]:
    errors = []
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            errors.append(f"{data.get('node_type')} (node {data.get('node_id')}) raised "
                          f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}")
    return errors or [f"status {status.get('status_str')}"]


def run_case(server: Server, case: Case, output_dir: Path, timeout: float, ffmpeg: str,
             listener: Listener | None = None) -> list[str]:
    """Queue one prompt, wait for it and check what it saved and (with a ``listener``) the live frames
    its Render nodes sent while it ran; returns the problems (empty = passed)."""
    before = videos_in(output_dir)
    client_id = listener.client_id if listener else uuid.uuid4().hex
    answer = server.post("/prompt", {"prompt": case.prompt, "client_id": client_id})
    if answer.get("node_errors"):
        return [f"validation errors: {json.dumps(answer['node_errors'])[:2000]}"]
    prompt_id = answer["prompt_id"]
    started = time.time()
    history = None
    while time.time() < started + timeout:
        if server.proc.poll() is not None:
            return [f"ComfyUI died:\n{server.log_tail()}"]
        data = server.get(f"/history/{prompt_id}")
        if prompt_id in data and data[prompt_id].get("status", {}).get("completed") is not None:
            history = data[prompt_id]
            break
        time.sleep(1)
    if history is None:
        cancel(server, prompt_id)
        return [f"did not finish within {timeout:.0f} s (interrupted and removed from the queue)"]
    log.info("  finished in %.1f s", time.time() - started)
    if history["status"].get("status_str") != "success":
        return execution_errors(history["status"])
    problems = []
    new = sorted(videos_in(output_dir) - before)
    with_audio = [p for p in new if p.stem.endswith("-audio")]   # VHS keeps a silent copy beside the muxed one
    checked = with_audio or new
    if len(checked) != case.videos:
        problems.append(f"expected {case.videos} new video(s), found {[p.name for p in new]}")
    for path in checked:
        problems += check_video(ffmpeg, path, case)
    outputs = history.get("outputs", {})
    for key, why in case.ui.items():
        if not any(key in node_ui for node_ui in outputs.values()):
            problems.append(f"no '{key}' in the run's UI outputs ({why})")
    if listener and case.renderers:
        problems += check_live_previews(listener.previews_of(prompt_id), case.renderers)
    return problems


def check_live_previews(previews: list[dict], renderers: list[str]) -> list[str]:
    """Every Render node of a run must have sent at least one JPEG frame over the websocket before the
    run ended (ComfyUI's progress-bar preview: what the user watches form during a long render)."""
    problems = []
    for node_id in renderers:
        frames = [p["image"] for p in previews if p["node_id"] == node_id]
        jpegs = [f for f in frames if f[:3] == b"\xff\xd8\xff"]
        log.info("  live previews from node %s: %d (%d JPEG)", node_id, len(frames), len(jpegs))
        if not jpegs:
            problems.append(f"node {node_id} sent no live preview frame while it rendered")
    return problems


def cancel(server: Server, prompt_id: str, wait: float = 120.0) -> None:
    """Stop a prompt that ran past its time: take it off the queue if it is still waiting, interrupt
    it if it runs, and wait until ComfyUI is idle, so the next case does not queue behind it."""
    try:
        server.post("/queue", {"delete": [prompt_id]})
        server.post("/interrupt", {"prompt_id": prompt_id})
    except (OSError, ValueError, RuntimeError) as err:
        log.warning("could not cancel prompt %s: %s", prompt_id, err)
        return
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            queue = server.get("/queue")
        except (OSError, ValueError) as err:
            log.warning("could not read the queue while cancelling %s: %s", prompt_id, err)
            return
        busy = [item for item in queue.get("queue_running", []) + queue.get("queue_pending", [])
                if len(item) > 1 and item[1] == prompt_id]
        if not busy:
            return
        time.sleep(1)
    log.warning("prompt %s was still running %.0f s after it was interrupted", prompt_id, wait)


def case_timeout(args, case: Case) -> float:
    """``--timeout`` plus ``--timeout-per-frame`` for every frame the case renders (each of its videos)."""
    return args.timeout + args.timeout_per_frame * case.frames * max(1, case.videos)


# --------------------------------------------------------------------------- in a browser (optional)

SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the SadTalker nodes of the open graph that show frames or curves (restored or from a run)
SHOWN_PREVIEWS = """() => window.app.graph._nodes
    .filter((n) => n.type?.startsWith("SadTalker") && (n._sadtalker?.curveData || n._sadtalker?.video?.element?.src))
    .map((n) => String(n.id))"""


def plain_example(workflows: list[Path]) -> Path:
    """The example the browser cases open: :data:`PLAIN_EXAMPLE`, else the first one."""
    return next((p for p in workflows if p.name == PLAIN_EXAMPLE), workflows[0])


def chromium_path(given: str | None) -> str | None:
    """The given Chromium (None when it does not exist), else the first one on PATH."""
    if given:
        return shutil.which(given)
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def browser_missing(chromium: str | None) -> str:
    """Why the browser cases cannot run here ('' when they can)."""
    if importlib.util.find_spec("playwright") is None:
        return f"Playwright is not installed in {sys.executable} (pip install playwright)"
    if not chromium:
        return "no Chromium found (apt-get install chromium, or pass --chromium)"
    return ""


def wait_app(page) -> None:
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
    page.wait_for_timeout(2000)


def load_workflow(page, workflow: dict, name: str) -> None:
    """Open a workflow as a user does (a new tab), then give the pack's extension time to restore."""
    page.evaluate("([graph, name]) => window.app.loadGraphData(graph, true, true, name)", [workflow, name])
    page.wait_for_timeout(3000)


def on_short_inputs(workflow: dict) -> dict:
    """A copy of a UI workflow that loads the runner's short inputs (``SHORT``) instead of the examples'."""
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        values = node.get("widgets_values") or []
        node["widgets_values"] = [SHORT.get(v, v) if isinstance(v, str) else v for v in values]
    return workflow


def with_widget(workflow: dict, node_type: str, value) -> dict:
    """A copy of a UI workflow whose ``node_type`` nodes have ``value`` as their first widget value."""
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        if node["type"] == node_type:
            node["widgets_values"][0] = value
    return workflow


def stale_preview_problems(page, server: Server, path: Path, quick: bool) -> list[str]:
    """An example run earlier, loaded again as it ran: its previews come back (the control); loaded
    again with another picture: no node may show the earlier run's frames or curves."""
    workflow = json.loads(path.read_text())
    if quick:   # it ran on the short inputs
        workflow = on_short_inputs(workflow)
    page.goto(server.url)
    wait_app(page)
    load_workflow(page, workflow, path.stem)
    same = page.evaluate(SHOWN_PREVIEWS)
    load_workflow(page, with_widget(workflow, "LoadImage", "happy.png"), path.stem)
    stale = page.evaluate(SHOWN_PREVIEWS)
    log.info("  loaded as it ran: previews on nodes %s; with another picture: on nodes %s", same, stale)
    problems = []
    if not same:
        problems.append("loaded exactly as it ran, the example showed no restored preview (the check sees none)")
    if stale:
        problems.append(f"loaded with another picture, nodes {stale} showed the earlier run's frames or curves")
    return problems


def browser_cases(server: Server, args, plain: Path) -> dict[str, list[str]]:
    """The cases that need a browser (Playwright driving Chromium); {case: problems}."""
    from playwright.sync_api import Error as PlaywrightError, sync_playwright

    name = f"stale previews: {plain.name} loaded twice, the second time with another picture"
    log.info("case: %s", name)
    server.post("/settings", SETTINGS)   # no first-visit template browser
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 860})
                page.on("pageerror", lambda err: log.warning("page error: %s", err))
                problems = stale_preview_problems(page, server, plain, args.quick)
            finally:
                browser.close()
    except PlaywrightError as err:
        problems = [f"the browser failed: {str(err).splitlines()[0]}"]
    log.log(logging.ERROR if problems else logging.INFO, "%s %s%s", "FAILED" if problems else "PASSED", name,
            "".join(f"\n  {p}" for p in problems))
    return {name: problems}


# --------------------------------------------------------------------------- main


def find_workflows(pack: Path) -> list[Path]:
    found = sorted((pack / "workflows").glob("*.json"))
    if not found:
        raise SetupError(f"{pack} has no workflows/*.json; give --pack a full clone")
    return found


def check_extension(server: Server) -> list[str]:
    scripts = [u for u in server.get("/extensions") if f"/{PACK_DIR_NAME}/" in u]
    log.info("front-end extension files served: %s", ", ".join(scripts) or "NONE")
    main_js = [u for u in scripts if u.endswith("/sadtalker.js")]
    if not main_js:
        return ["web/sadtalker.js is not served under /extensions"]
    with urllib.request.urlopen(server.url + main_js[0], timeout=30) as response:
        if b"registerExtension" not in response.read():
            return [f"{main_js[0]} does not look like the extension"]
    return []


def prepare_base(args, base: Path, ffmpeg: str) -> None:
    for sub in ("models", "input", "output", "temp", "user", "custom_nodes"):
        (base / sub).mkdir()
    install_node(base / "custom_nodes", args.pack, PACK_DIR_NAME)
    for folder in args.extra_node:
        install_node(base / "custom_nodes", folder)
    weights = base / "models" / "sadtalker"
    if args.weights_dir:
        weights.symlink_to(args.weights_dir.resolve(), target_is_directory=True)
    else:
        log.info("writing stand-in SadTalker weights")
        run_python(args.python, args.pack, WRITE_WEIGHTS, str(weights), "0", what="write the stand-in weights")
    restorer = base / "models" / "facerestore_models" / "GFPGANv1.4.pth"
    restorer.parent.mkdir(parents=True)
    run_python(args.python, args.pack, WRITE_GFPGAN, str(restorer), what="write a stand-in GFPGANv1.4")
    prepare_inputs(ffmpeg, media_dir(args.pack), examples_dir(args.pack), base / "input", args.seconds,
                   args.ref_seconds, args.turn_seconds)


def run_all(args, base: Path) -> tuple[dict[str, list[str]], int]:
    """Set up, start ComfyUI, run every case; returns the failures (case -> problems) and the case count."""
    comfyui = args.comfyui.resolve()
    if not (comfyui / "main.py").is_file():
        raise SetupError(f"{comfyui} has no main.py; give the ComfyUI folder as the first argument")
    workflows = args.workflows or find_workflows(args.pack)
    ffmpeg = run_python(args.python, args.pack, FIND_FFMPEG, what="find ffmpeg (imageio-ffmpeg)").strip()
    prepare_base(args, base, ffmpeg)
    frames = int(args.seconds * 16000) // 640
    server = Server(comfyui, args.python, base, free_port(), base / "comfyui.log")
    failures: dict[str, list[str]] = {}
    try:
        server.wait_ready(args.startup_timeout)
        object_info = server.get("/object_info", timeout=120)
        ours = sorted(k for k in object_info if k.startswith("SadTalker"))
        log.info("SadTalker nodes registered: %s", ", ".join(ours) or "NONE")
        if "SadTalkerRender" not in object_info:
            raise SetupError(f"the pack did not load in ComfyUI; the server log says:\n{server.log_tail(120)}")
        problems = check_extension(server)
        if problems:
            failures["web extension"] = problems
        if not args.quick:
            problems = check_example_inputs(examples_dir(args.pack), base / "input")
            if problems:
                raise SetupError("the pack did not put its example inputs in place: " + "; ".join(problems))
        cases = build_cases(workflows, object_info, frames, vhs="VHS_VideoCombine" in object_info,
                            turn_seconds=args.turn_seconds, input_dir=None if args.quick else base / "input")
        listener = Listener(server.url, uuid.uuid4().hex)
        for case in cases:
            log.info("case: %s", case.name)
            try:
                problems = run_case(server, case, base / "output", case_timeout(args, case), ffmpeg, listener)
                if case.voices and not problems:
                    problems = measure_mouths(args.python, args.pack, base, case)
                if case.chosen_face and not problems:
                    problems = check_chosen_face(args.python, args.pack, base, case)
            except (OSError, RuntimeError, ValueError) as err:   # report and go on with the next case
                problems = [f"{type(err).__name__}: {err}"]
            if problems:
                failures[case.name] = problems
                log.error("FAILED %s:\n  %s", case.name, "\n  ".join(problems))
            else:
                log.info("PASSED %s", case.name)
        listener.close()
        missing = browser_missing(args.chromium)
        if missing:
            log.warning("left out: the stale-preview case, which needs a browser: %s", missing)
        else:
            browser = browser_cases(server, args, plain_example(workflows))
            cases += [Case(name, {}, 0) for name in browser]
            failures.update({name: problems for name, problems in browser.items() if problems})
        server_log = server.log_tail(100000).splitlines()
        for line in server_log:
            if "SadTalker" in line and ("WARNING" in line or "disabled" in line):
                log.info("server: %s", line)
        loads = [line for line in server_log if line.startswith("Loading SadTalker_")]
        log.info("SadTalker checkpoint loads over all %d cases: %d", len(cases), len(loads))
        if len(loads) > 1:   # the model cache must keep the models across prompts and list items
            failures["model cache"] = [f"the SadTalker checkpoint was loaded {len(loads)} times: {loads}"]
        if failures:
            log.info("server log tail:\n%s", server.log_tail(80))
    finally:
        server.stop()
    return failures, len(cases)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the temporary ComfyUI set-up (shared with screenshot_comfyui_workflows.py)."""
    parser.add_argument("comfyui", type=Path, help="ComfyUI folder (with main.py)")
    parser.add_argument("--python", default=sys.executable,
                        help="Python of ComfyUI's environment (with the pack's requirements); default: this one")
    parser.add_argument("--pack", type=Path, default=REPO, help="pack folder to install (default: this checkout)")
    parser.add_argument("--extra-node", type=Path, action="append", default=[],
                        help="another custom node folder to install beside the pack (repeatable), "
                             "e.g. ComfyUI-VideoHelperSuite")
    parser.add_argument("--weights-dir", type=Path, help="folder with stand-in (or real) SadTalker files to link")
    parser.add_argument("--workflows", type=Path, nargs="*", help="default: the pack's example workflows")
    parser.add_argument("--seconds", type=float, default=0.09, help="speech length (0.09 s = 2 frames)")
    parser.add_argument("--ref-seconds", type=float, default=0.2, help="reference video length")
    parser.add_argument("--turn-seconds", type=float, default=0.6,
                        help="each speaker's turn (and the pause between) in the two-people turn-taking case "
                             "(0: leave the case out)")
    parser.add_argument("--quick", action="store_true",
                        help="run the examples on the short inputs too (minutes on a CPU) instead of as loaded "
                             "with the pack's example inputs (3 s of speech each: about an hour on a 2-core CPU)")
    parser.add_argument("--chromium", help="Chromium for the browser cases (default: found on PATH; they are left "
                                           "out, with a warning, without Playwright or Chromium)")
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--timeout", type=float, default=300,
                        help="per run, in seconds, plus --timeout-per-frame for each frame it renders; a run "
                             "past it is interrupted and taken off the queue")
    parser.add_argument("--timeout-per-frame", type=float, default=30.0,
                        help="seconds added to --timeout for every frame a case renders (CPU: ~4 s a frame)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setup_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the temporary base folder (and its server log)")
    args = parser.parse_args(argv)
    args.chromium = chromium_path(args.chromium)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.pack = args.pack.resolve()
    base = Path(tempfile.mkdtemp(prefix="sadtalker_comfyui_"))
    try:
        failures, count = run_all(args, base)
    except SetupError as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    finally:
        if args.keep:
            log.info("kept %s", base)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if failures:
        log.error("failed: %s", "; ".join(failures))
        return 1
    log.info("all %d cases passed", count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
