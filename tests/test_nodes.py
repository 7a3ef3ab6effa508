"""The ComfyUI nodes, loaded the way ComfyUI loads a custom-node folder, against tests/comfy_stub.

Rendering is the expensive part (seconds per frame on a CPU), so the whole file renders only a
handful of frames: two in the shared render, one when cancelling, one for the one-node SadTalker.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import MEDIA
import torch

REPO = Path(__file__).resolve().parent.parent
STUB = REPO / "tests" / "comfy_stub"
PACK_NAME = "comfyui_sadtalker_under_test"


def load_pack(name: str = PACK_NAME):
    """Import the repo root as a package named ``name`` (what ComfyUI's custom-node loader does)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def comfy_base(tmp_path_factory, weights_dir):
    import folder_paths

    base = tmp_path_factory.mktemp("comfy")
    folder_paths.set_base(str(base))
    (base / "models").mkdir()
    (base / "models" / "sadtalker").symlink_to(weights_dir, target_is_directory=True)
    return base


@pytest.fixture(scope="module")
def pack(comfy_base):
    import folder_paths

    module = load_pack()
    # the registry ran at first import, possibly against another base: register again for this one
    module.nodes.comfy_glue.register_model_folders()
    assert folder_paths.get_filename_list("sadtalker") == ["SadTalker_V0.0.2_256.safetensors"]
    return module


@pytest.fixture(scope="module")
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


def image_tensor(path: Path) -> torch.Tensor:
    from PIL import Image

    arr = np.array(Image.open(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).float()[None] / 255.0


def speech(seconds: float) -> dict:
    """The first ``seconds`` of the shared English clip as ComfyUI AUDIO (stereo, to test the downmix)."""
    import wave

    with wave.open(str(MEDIA / "speech_en_16k_3s.wav")) as fh:
        rate = fh.getframerate()
        raw = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2").reshape(-1, fh.getnchannels())
    n = int(round(seconds * rate))
    mono = raw[:n, 0].astype(np.float32) / 32768.0
    wave_t = torch.from_numpy(np.stack([mono, mono * 0.5]))[None]
    return {"waveform": wave_t, "sample_rate": rate}


@pytest.fixture(scope="module")
def model(nodes):
    (handle,) = nodes["SadTalkerModelLoader"]().load("SadTalker_V0.0.2_256.safetensors", "fp32")
    return handle


@pytest.fixture(scope="module")
def face(nodes, model):
    face, crop, _faces = nodes["SadTalkerFaceCrop"]().prepare(model, image_tensor(MEDIA / "art_0.png"), "crop", "256",
                                                              "dlib")
    return face, crop


@pytest.fixture(scope="module")
def coefficients(nodes, model, face):
    # 0.09 s at 16 kHz = 1440 samples -> T = floor(1440 / 640) = 2 frames
    out = nodes["SadTalkerAudioToCoefficients"]().predict(model, face[0], speech(0.09), 3, 7, True, False)
    return out


@pytest.fixture(scope="module")
def rendered(nodes, model, face, coefficients):
    import comfy.utils

    comfy.utils.updates.clear()
    comfy.utils.previews.clear()
    out = nodes["SadTalkerRender"]().render(model, face[0], coefficients["result"][0], 1.0, 1, True)
    return out, list(comfy.utils.updates), list(comfy.utils.previews)


# --------------------------------------------------------------------------- registry and import


def test_registry_lists_every_node_in_the_sadtalker_category(pack):
    expected = {
        "SadTalkerModelLoader", "SadTalkerFaceCrop", "SadTalkerAudioToCoefficients",
        "SadTalkerReferenceToCoefficients", "SadTalkerRender", "SadTalkerSaveCoefficients",
        "SadTalkerLoadCoefficients", "SadTalkerSimple", "SadTalkerFaceRestoreModelLoader", "SadTalkerFaceEnhance",
    }
    assert expected <= set(pack.NODE_CLASS_MAPPINGS)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.CATEGORY == "SadTalker", key
        assert callable(getattr(cls(), cls.FUNCTION)), key
        types = cls.INPUT_TYPES()
        assert "required" in types, key
        assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES), key
    assert pack.WEB_DIRECTORY == "./web"
    assert (REPO / "web").is_dir()


def test_model_folders_are_registered(pack, comfy_base):
    import folder_paths

    assert str(comfy_base / "models" / "sadtalker") in folder_paths.get_folder_paths("sadtalker")
    restore = folder_paths.get_folder_paths("facerestore_models")
    assert str(comfy_base / "models" / "facerestore_models") in restore
    assert str(comfy_base / "models" / "gfpgan") in restore


def test_register_keeps_existing_folder_and_adds_alias(pack, comfy_base, tmp_path):
    import folder_paths

    other = str(tmp_path / "elsewhere")
    saved = folder_paths.folder_names_and_paths.pop("facerestore_models")
    try:
        folder_paths.folder_names_and_paths["facerestore_models"] = ([other], {".pth"})
        pack.nodes.comfy_glue.register_model_folders()
        paths = folder_paths.get_folder_paths("facerestore_models")
        assert paths[0] == other and str(comfy_base / "models" / "gfpgan") in paths
    finally:
        folder_paths.folder_names_and_paths["facerestore_models"] = saved


def test_importing_the_pack_builds_nothing_heavy(tmp_path):
    code = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path.insert(0, {str(STUB)!r})
        spec = importlib.util.spec_from_file_location("light_pack", {str(REPO / '__init__.py')!r},
                                                      submodule_search_locations=[{str(REPO)!r}])
        m = importlib.util.module_from_spec(spec); sys.modules["light_pack"] = m; spec.loader.exec_module(m)
        heavy = sorted(k for k in ("torch", "cv2", "dlib", "face_alignment", "spandrel", "scipy") if k in sys.modules)
        print("HEAVY", heavy, len(m.NODE_CLASS_MAPPINGS))
    """)
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY")][0]
    assert line.startswith("HEAVY []"), line


def _fallback_nodes(tree: ast.AST) -> set[int]:
    """Nodes in the ``else`` of an ``if`` whose body imports relatively (a guarded top-level fallback)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and any(isinstance(n, ast.ImportFrom) and n.level > 0
                                            for b in node.body for n in ast.walk(b)):
            skip.update(id(n) for b in node.orelse for n in ast.walk(b))
    return skip


def _absolute_self_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    skip = _fallback_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in ("sadtalker_models", "nodes"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module} import ...")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("sadtalker_models", "nodes"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} import {alias.name}")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("sadtalker_models"):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} import_module({arg.value!r})")
        elif isinstance(node, ast.Tuple) and any(
                isinstance(e, ast.Constant) and isinstance(e.value, str) and e.value.startswith("sadtalker_models.")
                for e in node.elts):
            found.append(f"{path.relative_to(REPO)}:{node.lineno} module path string used for import")
    return found


def test_pack_code_imports_itself_relatively():
    """Inside ComfyUI the pack is a package named after its folder: ``sadtalker_models`` is NOT importable
    top-level there, so the library and the nodes must import each other relatively (the CLI entry
    point ``sadtalker_models/__main__.py`` is the one exception: it always runs as top-level)."""
    offenders = []
    for path in sorted((REPO / "sadtalker_models").rglob("*.py")) + sorted((REPO / "nodes").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        offenders += _absolute_self_imports(path)
    assert not offenders, "absolute imports break the pack inside ComfyUI:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- the main chain


def test_face_crop_outputs_face_and_preview(face):
    source, crop = face
    assert crop.shape == (1, 256, 256, 3) and crop.dtype == torch.float32
    assert 0.0 <= float(crop.min()) and float(crop.max()) <= 1.0
    assert tuple(source.coeff_3dmm.shape) == (1, 73)
    assert source.preprocess == "crop" and source.size == 256


def test_audio_to_coefficients(coefficients):
    coeffs = coefficients["result"][0]
    assert coeffs.fps == 25.0 and coeffs.num_frames == 2
    assert tuple(coeffs.coeffs.shape) == (2, 70)
    assert coeffs.audio.sample_rate == 16000 and coeffs.audio.waveform.shape == (2, 1440)   # 0.09 s, stereo
    curves = coefficients["ui"]["sadtalker_curves"][0]
    assert curves["frames"] == 2 and len(curves["yaw"]) == 2 and len(curves["blink"]) == 2


def test_seed_makes_coefficients_reproducible(nodes, model, face):
    run = nodes["SadTalkerAudioToCoefficients"]().predict
    a = run(model, face[0], speech(0.09), 5, 11, True, False)["result"][0].coeffs
    b = run(model, face[0], speech(0.09), 5, 11, True, False)["result"][0].coeffs
    c = run(model, face[0], speech(0.09), 5, 12, True, False)["result"][0].coeffs
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_render_outputs_plug_into_create_video(rendered, coefficients):
    out, updates, _ = rendered
    images, audio, fps = out["result"]
    t = coefficients["result"][0].num_frames
    assert images.ndim == 4 and images.shape[0] == t and images.shape[-1] == 3
    assert images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert images.shape[2] == 256  # crop mode: width S, height from the face box's aspect ratio
    assert fps == 25.0 and isinstance(fps, float)
    assert set(audio) == {"waveform", "sample_rate"}
    assert audio["waveform"].ndim == 3 and audio["waveform"].shape[:2] == (1, 2)
    assert audio["waveform"].shape[-1] == round(t / 25.0 * audio["sample_rate"])
    assert updates and updates[-1] == (t, t)


def test_render_shows_each_batchs_newest_frame_while_it_renders(rendered, coefficients):
    """Live preview: after every batch (batch size 1 here) the progress bar carries that batch's last
    frame as a JPEG, as ComfyUI's samplers send theirs."""
    out, _, previews = rendered
    images = out["result"][0]
    t = coefficients["result"][0].num_frames
    assert [p[:3] for p in previews] == [(i, t, "JPEG") for i in range(1, t + 1)]
    assert all(p[3] == (images.shape[2], images.shape[1]) and p[4] == 512 for p in previews)


def test_render_writes_a_preview_with_sound(rendered):
    import folder_paths

    from sadtalker_models.video import probe

    (entry,) = rendered[0]["ui"]["sadtalker_video"]
    path = Path(folder_paths.get_temp_directory()) / entry["subfolder"] / entry["filename"]
    info = probe(path)
    assert info.video and info.audio


def test_second_load_reuses_the_cached_models(pack, nodes, model):
    """Same file, device and dtype: the cached models; auto on this CPU is the library's choice (bf16
    with AMX, else fp32), and is the fp32 entry where that is fp32."""
    cache = pack.sadtalker_models.model_cache.MODEL_CACHE
    loads = cache.loads
    (again,) = nodes["SadTalkerModelLoader"]().load("SadTalker_V0.0.2_256.safetensors", "fp32")
    assert again is model
    assert cache.loads == loads
    (auto,) = nodes["SadTalkerModelLoader"]().load("SadTalker_V0.0.2_256.safetensors", "auto")
    assert auto.models.dtype == pack.sadtalker_models.precision.auto_dtype("cpu")
    assert (auto is model) == (auto.models.dtype == torch.float32)


def test_cancel_stops_rendering_within_one_batch(nodes, model, face, coefficients, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    batches = []
    original = comfy.utils.ProgressBar.update_absolute

    def interrupt_after_first(self, value, total=None, preview=None):
        batches.append(value)
        original(self, value, total, preview)
        mm.interrupt_current_processing(True)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", interrupt_after_first)
    with pytest.raises(mm.InterruptProcessingException):
        nodes["SadTalkerRender"]().render(model, face[0], coefficients["result"][0], 1.0, 1, True)
    assert batches == [1]
    assert not mm.processing_interrupted()


def test_cancel_before_start_renders_nothing(nodes, model, face, coefficients):
    import comfy.model_management as mm
    import comfy.utils

    comfy.utils.updates.clear()
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        nodes["SadTalkerRender"]().render(model, face[0], coefficients["result"][0], 1.0, 2, True)
    assert comfy.utils.updates == []


def test_one_node_sadtalker_full_mode_pastes_back(nodes, model):
    image = image_tensor(MEDIA / "art_0.png")[:, :895, :639]   # odd sides, as many real pictures have
    # 0.05 s -> one frame; full mode pastes the face back into the whole picture, made even for video encoders
    out = nodes["SadTalkerSimple"]().run(model, image, speech(0.05), "full", True, 0, 0, 1.0, 2)
    frames, audio, fps = out["result"]
    assert frames.shape == (1, 896, 640, 3)
    assert torch.equal(frames[:, 895], frames[:, 894]) and torch.equal(frames[:, :, 639], frames[:, :, 638])
    assert audio["waveform"].shape[-1] == round(audio["sample_rate"] / 25.0)
    assert fps == 25.0


# --------------------------------------------------------------------------- reference video


def test_reference_node_reads_a_core_video_frame_by_frame(pack, nodes, model, monkeypatch, tmp_path):
    """core Load Video's VIDEO goes straight in (a file, or bytes in memory): the same reference as the
    IMAGE batch of its frames, decoded one frame at a time, with the video's own sound carried."""
    import io

    from comfy_api.input_impl import VideoFromFile
    from sadtalker_models import video as video_io

    clip = tmp_path / "ref.mp4"
    frames_iter, _ = video_io.read_video(MEDIA / "ref_pose_blink_3s.mp4", max_frames=4)
    frames = np.stack(list(frames_iter))
    wave = (0.1 * np.sin(np.arange(16000 * 4 // 25) / 5.0)).astype(np.float32)[None]
    with video_io.Mp4Writer(clip, fps=25, audio=wave, sample_rate=16000) as writer:
        writer.write(frames)
    decoded, _ = video_io.read_video(clip)
    images = torch.from_numpy(np.stack(list(decoded))).float() / 255.0
    node = nodes["SadTalkerReferenceToCoefficients"]()
    from_images = node.extract(model, images, "crop", "dlib", 0)["result"]

    held, peak = [], [0]
    real_read = video_io.read_video

    def counting(path, max_frames=None):   # how many decoded frames are alive at once
        inner, fps = real_read(path, max_frames)

        def gen():
            for frame in inner:
                held.append(frame)
                peak[0] = max(peak[0], len(held))
                yield frame
                held.pop()
        return gen(), fps

    monkeypatch.setattr(pack.sadtalker_models.video, "read_video", counting)   # the pack's own copy of the module
    for source in (VideoFromFile(str(clip)), VideoFromFile(io.BytesIO(clip.read_bytes()))):
        ref, coeffs = node.extract(model, None, "crop", "dlib", 0, video=source)["result"]
        assert torch.allclose(ref, from_images[0], atol=1e-5)
        assert coeffs.audio is not None and coeffs.num_frames == 4 and not held and peak[0] == 1
    assert not list(tmp_path.glob("sadtalker_ref_*"))
    with pytest.raises(ValueError, match="either 'video' or 'images'"):
        node.extract(model, images, "crop", "dlib", 0, video=VideoFromFile(str(clip)))
    with pytest.raises(ValueError, match="Connect a reference video"):
        node.extract(model, None, "crop", "dlib", 0)


def test_reference_video_to_coefficients(nodes, model, face):
    from sadtalker_models.video import read_video

    import comfy.model_management as mm
    import comfy.utils

    frames_iter, _ = read_video(MEDIA / "ref_pose_blink_3s.mp4", max_frames=3)
    frames = torch.from_numpy(np.stack(list(frames_iter))).float() / 255.0
    comfy.utils.updates.clear()
    ref, coeffs = nodes["SadTalkerReferenceToCoefficients"]().extract(
        model, frames, "crop", "dlib", 0, speech(0.13))["result"]
    assert tuple(ref.shape) == (3, 73)
    assert comfy.utils.updates[-1] == (3, 3)     # progress reported
    mm.interrupt_current_processing(True)        # and Cancel is honoured
    with pytest.raises(mm.InterruptProcessingException):
        nodes["SadTalkerReferenceToCoefficients"]().extract(model, frames, "crop", "dlib", 0)
    assert coeffs.num_frames == 3 and coeffs.audio is not None      # follows the audio: floor(0.13*25) = 3
    driven = nodes["SadTalkerAudioToCoefficients"]().predict(model, face[0], speech(0.09), 0, 0, True, False,
                                                             ref_pose=ref, ref_eyeblink=ref)["result"][0]
    assert driven.num_frames == 2 and driven.info["ref_pose"] and driven.info["ref_eyeblink"]


# --------------------------------------------------------------------------- save / load


def test_save_and_load_coefficients_round_trip(nodes, coefficients, comfy_base):
    import shutil

    import folder_paths

    coeffs = coefficients["result"][0]
    ui = nodes["SadTalkerSaveCoefficients"]().save(coeffs, "sadtalker/test")["ui"]
    (entry,) = ui["sadtalker_files"]
    saved = Path(folder_paths.get_output_directory()) / entry["subfolder"] / entry["filename"]
    assert saved.is_file()
    shutil.copy(saved, Path(folder_paths.get_input_directory()) / "coeffs.safetensors")
    assert "coeffs.safetensors" in nodes["SadTalkerLoadCoefficients"].INPUT_TYPES()["required"]["file"][0]
    loaded = nodes["SadTalkerLoadCoefficients"]().load("coeffs.safetensors")["result"][0]
    assert torch.equal(loaded.coeffs, coeffs.coeffs)
    assert np.array_equal(loaded.audio.waveform, coeffs.audio.waveform)
    assert loaded.fps == 25.0 and loaded.still == coeffs.still


def test_load_node_reads_a_file_saved_before_the_format_moved(nodes, comfy_base):
    import shutil

    import folder_paths

    old = REPO / "tests" / "data" / "coefficients" / "saved_before_the_move.safetensors"
    shutil.copy(old, Path(folder_paths.get_input_directory()) / "old_coeffs.safetensors")
    assert "old_coeffs.safetensors" in nodes["SadTalkerLoadCoefficients"].INPUT_TYPES()["required"]["file"][0]
    loaded = nodes["SadTalkerLoadCoefficients"]().load("old_coeffs.safetensors")["result"][0]
    assert torch.equal(loaded.coeffs, torch.arange(210, dtype=torch.float32).reshape(3, 70) / 1000)
    assert loaded.num_frames == 3 and loaded.still and loaded.info == {"pose_style": 3, "seed": 7}


def test_saving_twice_keeps_both_files(nodes, coefficients, comfy_base):
    """ComfyUI's counter only sees names whose digits end in '_': a second save must not overwrite."""
    coeffs = coefficients["result"][0]
    save = nodes["SadTalkerSaveCoefficients"]().save
    first = save(coeffs, "sadtalker/twice")["ui"]["sadtalker_files"][0]["filename"]
    second = save(coeffs, "sadtalker/twice")["ui"]["sadtalker_files"][0]["filename"]
    assert (first, second) == ("twice_00001_.safetensors", "twice_00002_.safetensors")


def test_load_coefficients_rejects_other_files(nodes, comfy_base):
    import folder_paths
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(Path(folder_paths.get_input_directory()) / "not_coeffs.safetensors"))
    with pytest.raises(ValueError, match="not a SadTalker coefficient file"):
        nodes["SadTalkerLoadCoefficients"]().load("not_coeffs.safetensors")
    with pytest.raises(ValueError, match="input folder"):
        nodes["SadTalkerLoadCoefficients"]().load("../escape.safetensors")


# --------------------------------------------------------------------------- readable errors


def test_errors_are_readable_sentences(nodes, model, face, coefficients):
    loader, crop, audio_node, render = (nodes[k]() for k in (
        "SadTalkerModelLoader", "SadTalkerFaceCrop", "SadTalkerAudioToCoefficients", "SadTalkerRender"))
    with pytest.raises(ValueError, match="not found in .*download"):
        loader.load("missing.safetensors", "auto")
    with pytest.raises(ValueError, match="Model Loader"):
        crop.prepare("not a model", image_tensor(MEDIA / "art_0.png"))
    with pytest.raises(ValueError, match="IMAGE"):
        crop.prepare(model, "not an image")
    with pytest.raises(ValueError, match="No face"):
        crop.prepare(model, torch.full((1, 320, 320, 3), 0.5), "crop", "256", "dlib")
    with pytest.raises(ValueError, match="empty"):
        audio_node.predict(model, face[0], {"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})
    with pytest.raises(ValueError, match="too short"):
        audio_node.predict(model, face[0], {"waveform": torch.zeros(1, 1, 100), "sample_rate": 16000})
    with pytest.raises(ValueError, match="Load Audio"):
        audio_node.predict(model, face[0], torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="face"):
        render.render(model, "face", coefficients["result"][0])
    with pytest.raises(ValueError, match="0,20,-10"):
        render.render(model, face[0], coefficients["result"][0], yaw="left then right")


# --------------------------------------------------------------------------- ModelPatcher


def test_model_patcher_is_used_when_comfy_has_one(pack, monkeypatch):
    import types

    import comfy.model_management as mm

    made = []

    class FakePatcher:
        def __init__(self, model, load_device, offload_device, size=0):
            self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
            made.append(self)

    fake = types.ModuleType("comfy.model_patcher")
    fake.ModelPatcher = FakePatcher
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", fake)
    glue = pack.nodes.comfy_glue
    module = torch.nn.Linear(2, 2)
    patcher = glue.make_patcher(module, torch.device("cpu"), torch.device("cpu"))
    assert made == [patcher] and patcher.model is module

    models = types.SimpleNamespace(container=module, device=None, current_device=lambda: torch.device("cpu"))
    handle = glue.ModelHandle(models, patcher, torch.device("cpu"), torch.device("cpu"))
    mm.loaded_models_calls.clear()
    handle.ensure_loaded()
    assert mm.loaded_models_calls == [[patcher]]


def test_missing_model_patcher_is_tolerated(pack, monkeypatch):
    monkeypatch.setitem(sys.modules, "comfy.model_patcher", None)   # import raises ImportError
    assert pack.nodes.comfy_glue.make_patcher(torch.nn.Linear(1, 1), "cpu", "cpu") is None


def test_missing_dependency_disables_only_its_nodes(pack, monkeypatch, caplog):
    registry = pack.nodes
    real_has = registry._has
    monkeypatch.setattr(registry, "_has", lambda name: False if name == "soxr" else real_has(name))
    with caplog.at_level("WARNING"):
        classes, names = registry.build_mappings()
    assert "SadTalkerAudioToCoefficients" not in classes and "SadTalkerSimple" not in classes
    assert "SadTalkerRender" in classes and "SadTalkerFaceCrop" in classes
    assert "soxr" in caplog.text
