"""Node behaviour a ComfyUI user sees (issue 13): even frame sizes, outputs that survive a page reload,
defaults, tooltips, the coefficient files Load can see, the curves of ``still``, log messages.

Over the comfy stand-in (tests/comfy_stub), with the pack loaded as ComfyUI loads it. Frame geometry is
checked with a renderer that echoes the source crop (the real networks take seconds per frame here and
are covered by tests/test_nodes.py); everything after the networks (aspect resize, paste-back, evening,
the IMAGE output and the preview) is the real code.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MEDIA
from test_nodes import comfy_base, model, nodes, pack, speech  # noqa: F401 - shared fixtures


class EchoRenderer:
    """Stands in for FaceRenderer: every frame is the source crop itself (so the face stays put)."""

    def encode_source(self, source_image, source_semantics):
        return source_image

    def iter_frames(self, state, inputs, batch_size=2, progress=None, out_device="cpu"):
        total = int(inputs.target_semantics.shape[0])
        for start in range(0, total, batch_size):
            count = min(batch_size, total - start)
            yield state.expand(count, -1, -1, -1).clone()
            if progress is not None:
                progress(start + count, total)


def odd_picture(width: int = 225, height: int = 337) -> torch.Tensor:
    """A real face picture (tests/data/media/full3.png) scaled to odd width and height, as IMAGE."""
    import cv2
    from PIL import Image

    rgb = np.array(Image.open(MEDIA / "full3.png").convert("RGB"))
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).float()[None] / 255.0


# --------------------------------------------------------------------------- item 1: even frame sizes


@pytest.mark.parametrize("mode", ["crop", "extcrop", "resize", "full", "extfull"])
def test_render_outputs_even_frames_for_an_odd_picture(pack, nodes, model, mode, monkeypatch):
    picture = odd_picture()
    face = nodes["SadTalkerFaceCrop"]().prepare(model, picture, mode, "256", "dlib")[0]
    pipeline = importlib.import_module(pack.__name__ + ".sadtalker_models.pipeline")
    coeffs = pipeline.Coefficients(coeffs=torch.zeros(2, 70), audio=pipeline.as_audio(speech(0.09)["waveform"], 16000))
    monkeypatch.setattr(model.models, "renderer", lambda preprocess: EchoRenderer())
    out = nodes["SadTalkerRender"]().render(model, face, coeffs, 1.0, 2, True)
    images = out["result"][0]
    h, w = images.shape[1:3]
    assert h % 2 == 0 and w % 2 == 0, (mode, h, w)

    if mode in ("full", "extfull"):
        natural_w, natural_h = picture.shape[2], picture.shape[1]     # the picture's own 225 x 337
    else:
        natural_w, natural_h = face.crop_info.output_size(256)        # S by the crop's aspect ratio
    assert (w, h) == (natural_w + natural_w % 2, natural_h + natural_h % 2)
    # the added row/column is a copy of the edge: nothing moved
    assert torch.equal(images[:, natural_h:], images[:, natural_h - 1:natural_h].expand_as(images[:, natural_h:]))
    assert torch.equal(images[:, :, natural_w:], images[:, :, natural_w - 1:natural_w].expand_as(images[:, :, natural_w:]))
    if mode in ("full", "extfull"):
        # outside the paste box the picture is untouched, pixel for pixel, at the same place
        x1, y1, x2, y2 = face.crop_info.paste_box
        original = picture[0]
        diff = (images[0, :natural_h, :natural_w] - original).abs().amax(-1)
        diff[y1:y2, x1:x2] = 0
        assert float(diff.max()) == 0.0
    # the preview video is written from the same frames
    assert "sadtalker_video" in out["ui"]


# --------------------------------------------------------------------------- item 2: outputs after a reload


def test_nodes_that_show_something_are_output_nodes(pack, nodes, model, monkeypatch):
    """ComfyUI re-sends a node's ``ui`` on a cached re-run (and keeps it in /history) only for output
    nodes: every node whose result carries a ``ui`` payload must declare OUTPUT_NODE."""
    import folder_paths

    monkeypatch.setattr(model.models, "renderer", lambda preprocess: EchoRenderer())
    picture = odd_picture()
    face = nodes["SadTalkerFaceCrop"]().prepare(model, picture, "crop", "256", "dlib")[0]
    coeffs_out = nodes["SadTalkerAudioToCoefficients"]().predict(model, face, speech(0.09), 0, 0, True, False)
    coeffs = coeffs_out["result"][0]
    saved = nodes["SadTalkerSaveCoefficients"]().save(coeffs, "sadtalker/ui")
    listed = nodes["SadTalkerLoadCoefficients"].INPUT_TYPES()["required"]["file"][0]
    outputs = {
        "SadTalkerAudioToCoefficients": coeffs_out,
        "SadTalkerReferenceToCoefficients": nodes["SadTalkerReferenceToCoefficients"]().extract(
            model, picture, "crop", "dlib", 1),
        "SadTalkerRender": nodes["SadTalkerRender"]().render(model, face, coeffs, 1.0, 2, True),
        "SadTalkerSaveCoefficients": saved,
        "SadTalkerLoadCoefficients": nodes["SadTalkerLoadCoefficients"]().load(listed[0]),
        "SadTalkerSimple": nodes["SadTalkerSimple"]().run(model, picture, speech(0.05), "crop", False, 0, 0, 1.0, 2),
    }
    for key, out in outputs.items():
        assert isinstance(out, dict) and out.get("ui"), key
        assert getattr(nodes[key], "OUTPUT_NODE", False) is True, f"{key} shows {sorted(out['ui'])} but is no output node"
    for key in ("SadTalkerRender", "SadTalkerSimple"):
        (entry,) = outputs[key]["ui"]["sadtalker_video"]
        assert (Path(folder_paths.get_temp_directory()) / entry["subfolder"] / entry["filename"]).is_file()
    assert outputs["SadTalkerSimple"]["ui"]["sadtalker_curves"][0]["frames"] == 1
    # nodes without anything to show stay plain (ComfyUI would run them even when nothing uses their output)
    for key in ("SadTalkerModelLoader", "SadTalkerFaceCrop"):
        assert not getattr(nodes[key], "OUTPUT_NODE", False), key


# --------------------------------------------------------------------------- item 6: Load sees what Save wrote


def test_load_coefficients_lists_what_save_wrote(pack, nodes, comfy_base):
    import folder_paths
    from safetensors.torch import save_file

    load = nodes["SadTalkerLoadCoefficients"]
    pipeline = importlib.import_module(pack.__name__ + ".sadtalker_models.pipeline")
    made = pipeline.Coefficients(coeffs=torch.randn(2, 70, generator=torch.Generator().manual_seed(0)),
                                 audio=pipeline.as_audio(speech(0.09)["waveform"], 16000))
    entry = nodes["SadTalkerSaveCoefficients"]().save(made, "sadtalker/listed")["ui"]["sadtalker_files"][0]
    # another model's safetensors in output/ is not offered
    other = Path(folder_paths.get_output_directory()) / "checkpoints" / "model.safetensors"
    other.parent.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(other))

    listed = load.INPUT_TYPES()["required"]["file"][0]
    name = f"{entry['subfolder']}/{entry['filename']} [output]"
    assert name in listed
    assert not any("model.safetensors" in n for n in listed)
    loaded = load().load(name)["result"][0]
    assert torch.equal(loaded.coeffs, made.coeffs) and loaded.num_frames == made.num_frames
    assert load.IS_CHANGED(name) == (Path(folder_paths.get_output_directory()) / entry["subfolder"] /
                                       entry["filename"]).stat().st_mtime
    with pytest.raises(ValueError, match="Save Coefficients.*press R"):
        load().load("missing.safetensors [output]")
    with pytest.raises(ValueError, match="not found"):
        load().load("../../escape.safetensors [output]")


def test_load_coefficients_placeholder_says_what_to_do(nodes, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path / "out"))
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path / "in"))
    (only,) = nodes["SadTalkerLoadCoefficients"].INPUT_TYPES()["required"]["file"][0]
    assert "Save Coefficients" in only
    with pytest.raises(ValueError, match="Save Coefficients"):
        nodes["SadTalkerLoadCoefficients"]().load(only)


# --------------------------------------------------------------------------- item 7: curves of `still`


def test_curves_show_the_pose_that_will_be_rendered(nodes, model):
    face = nodes["SadTalkerFaceCrop"]().prepare(model, odd_picture(), "full", "256", "dlib")[0]
    audio = speech(0.2)
    moving = nodes["SadTalkerAudioToCoefficients"]().predict(model, face, audio, 3, 5, True, False)
    still = nodes["SadTalkerAudioToCoefficients"]().predict(model, face, audio, 3, 5, True, True)
    moving_curves, still_curves = moving["ui"]["sadtalker_curves"][0], still["ui"]["sadtalker_curves"][0]
    # the predicted head moves; with still the render keeps the source's angles (render_data: target[:, 64:] = source)
    assert len(set(moving_curves["yaw"])) > 1
    source_deg = (face.coeff_3dmm[0, 64:67] * 180.0 / np.pi).tolist()
    for name, value in zip(("pitch", "yaw", "roll"), source_deg):
        assert still_curves[name] == pytest.approx([value] * still_curves["frames"], abs=1e-4), name
    assert still_curves["mouth"] == moving_curves["mouth"]   # the expression is not affected
    # a saved still clip plots the same after loading it back
    entry = nodes["SadTalkerSaveCoefficients"]().save(still["result"][0], "sadtalker/still")["ui"]["sadtalker_files"][0]
    loaded = nodes["SadTalkerLoadCoefficients"]().load(f"{entry['subfolder']}/{entry['filename']} [output]")
    assert loaded["ui"]["sadtalker_curves"][0]["yaw"] == pytest.approx(still_curves["yaw"])


# --------------------------------------------------------------------------- item 8: tooltips


def test_every_widget_a_user_sets_has_a_tooltip(pack):
    missing = []
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                kind = spec[0]
                is_widget = isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "AUDIO", "IMAGE")
                options = spec[1] if len(spec) > 1 else {}
                if is_widget and not options.get("tooltip"):
                    missing.append(f"{key}.{name}")
    assert not missing, "inputs without a tooltip: " + ", ".join(missing)


# --------------------------------------------------------------------------- item 9: log messages


def test_landmark_backend_is_logged_once(pack, caplog):
    landmarks = importlib.import_module(pack.__name__ + ".sadtalker_models.face.landmarks")
    landmarks.clear_detector_cache()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            landmarks.make_landmark_detector("auto")
            landmarks.make_landmark_detector("dlib")
    lines = [r.getMessage() for r in caplog.records if "andmark" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Landmark backend: dlib")


def test_model_load_is_logged_by_file_and_named_for_comfyui(pack, weights_dir, caplog):
    cache_module = importlib.import_module(pack.__name__ + ".sadtalker_models.model_cache")
    pipeline = importlib.import_module(pack.__name__ + ".sadtalker_models.pipeline")
    cache = cache_module.ModelCache()
    path = weights_dir / "SadTalker_V0.0.2_256.safetensors"
    with caplog.at_level(logging.INFO):
        models = pipeline.load_models(path, device="cpu", precision="fp32", cache=cache)
    assert any(r.getMessage() == "Loading SadTalker_V0.0.2_256.safetensors (cpu, torch.float32)"
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    # ComfyUI's model management logs the class name of what the ModelPatcher holds
    assert type(models.container).__name__ == "SadTalker"
    assert isinstance(models.container, torch.nn.ModuleDict)
    assert set(models.container.keys()) >= {"recon", "expnet", "posevae", "kp_detector", "generator"}


# --------------------------------------------------------------------------- item 10: one Face Enhance default


def test_face_enhance_default_matches_the_example(nodes):
    import json

    from test_workflows import WORKFLOWS

    default = nodes["SadTalkerFaceEnhance"].INPUT_TYPES()["required"]["upscale_2x"][1]["default"]
    assert default is False   # keeps Render's frame size (see the tooltip)
    used = [n["widgets_values"][1] for p in WORKFLOWS for n in json.loads(p.read_text())["nodes"]
            if n["type"] == "SadTalkerFaceEnhance"]
    assert used == [default]
