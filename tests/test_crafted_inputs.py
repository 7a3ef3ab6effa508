"""Issue 20: no crafted file or typo costs a user's files, browser tab or memory.

Each test is one repro of the issue, run against the CLI (in this process, on a corrupt checkpoint so
that any check made too late reports the checkpoint instead), the library, the nodes (over the
comfy stand-in) or the web extension (in node.js). Each failed on the code before the fix.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MEDIA
from test_cli_robustness import CORRUPT, corrupt_models, run_main  # noqa: F401  (fixture)
from test_nodes import comfy_base, model, nodes, pack  # noqa: F401  (fixtures)
from test_workflows import run_web_driver

from sadtalker_models import coefficient_files
from sadtalker_models.coefficient_files import load_coefficients, save_coefficients
from sadtalker_models.pipeline import Audio, Coefficients
from sadtalker_models.video import check_distinct_outputs


def cli_args(models: Path, out: Path, *extra: str, audio: Path | None = None) -> list[str]:
    return ["--image", str(MEDIA / "art_0.png"), "--audio", str(audio or MEDIA / "speech_en_16k_3s.wav"),
            "--out", str(out), "--models-dir", str(models), "--device", "cpu", *extra]


def sample_coefficients(frames: int = 4, channels: int = 1, rate: int = 16000) -> Coefficients:
    gen = torch.Generator().manual_seed(0)
    return Coefficients(coeffs=0.1 * torch.randn(frames, 70, generator=gen), blink=torch.rand(frames, generator=gen),
                        audio=Audio(0.1 * torch.randn(channels, frames * rate // 25, generator=gen).numpy(), rate),
                        source_pose=torch.tensor([0.1, 0.2, 0.3]))


# --------------------------------------------------------------------------- 1: --save-coefficients


@pytest.mark.parametrize("target", ["image", "audio"])
def test_save_coefficients_never_replaces_an_input(corrupt_models, tmp_path, caplog, target):
    """--save-coefficients naming the picture or the speech (here through a link with the right suffix)
    is refused before any work, and the input keeps its bytes."""
    image, audio = tmp_path / "face.png", tmp_path / "speech.wav"
    shutil.copyfile(MEDIA / "art_0.png", image)
    shutil.copyfile(MEDIA / "speech_en_16k_3s.wav", audio)
    link = tmp_path / "coeffs.safetensors"
    link.symlink_to(image if target == "image" else audio)
    before = (image.read_bytes(), audio.read_bytes())
    code, errors = run_main(caplog, "--image", str(image), "--audio", str(audio), "--out", str(tmp_path / "t.mp4"),
                            "--models-dir", str(corrupt_models), "--save-coefficients", str(link))
    assert code == 1 and f"is the same file as --{target}" in errors and CORRUPT not in errors, errors
    assert (image.read_bytes(), audio.read_bytes()) == before


def test_save_coefficients_and_out_must_be_different_files(corrupt_models, tmp_path, caplog):
    out = tmp_path / "t.mp4"
    out.write_bytes(b"an earlier video")
    code, errors = run_main(caplog, *cli_args(corrupt_models, out, "--save-coefficients", str(out)))
    assert code == 1 and "--save-coefficients must name a .safetensors file" in errors, errors
    link = tmp_path / "t.safetensors"
    link.symlink_to(out)
    code, errors = run_main(caplog, *cli_args(corrupt_models, out, "--save-coefficients", str(link)))
    assert code == 1 and "--save-coefficients and --out are the same file" in errors, errors
    assert out.read_bytes() == b"an earlier video"


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_an_unusable_save_coefficients_path_fails_before_any_work(corrupt_models, tmp_path, caplog, where):
    if where == "a folder":
        target = tmp_path / "c.safetensors"
        target.mkdir()
        expect = "is a folder"
    else:
        (tmp_path / "notes").write_text("a file")
        target = tmp_path / "notes" / "c.safetensors"
        expect = "Cannot create the output folder"
    started = time.monotonic()
    code, errors = run_main(caplog, *cli_args(corrupt_models, tmp_path / "t.mp4", "--save-coefficients", str(target)))
    assert code == 1 and expect in errors and CORRUPT not in errors, errors
    assert time.monotonic() - started < 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["models", target.name if where == "a folder"
                                                                 else "notes"])   # no .part, no lock left


def test_save_coefficients_is_atomic_and_a_full_disk_is_a_sentence(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_coefficients(sample_coefficients(), path)
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    with pytest.raises(ValueError, match=r"Could not save the coefficients to .*c.safetensors \(No space left"):
        save_coefficients(sample_coefficients(6), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_distinct_outputs_catch_hard_links_and_paths_spelled_differently(tmp_path):
    picture = tmp_path / "face.png"
    picture.write_bytes(b"png")
    (tmp_path / "hard.safetensors").hardlink_to(picture)
    with pytest.raises(ValueError, match="same file as --image"):
        check_distinct_outputs({"--save-coefficients": tmp_path / "hard.safetensors"}, {"--image": picture})
    with pytest.raises(ValueError, match="--save-coefficients and --out are the same file"):
        check_distinct_outputs({"--out": tmp_path / "x.mp4", "--save-coefficients": tmp_path / "sub" / ".." / "x.mp4"},
                               {})
    check_distinct_outputs({"--out": tmp_path / "x.mp4", "--save-coefficients": tmp_path / "x.safetensors"},
                           {"--image": picture, "--audio": None})


# --------------------------------------------------------------------------- 2: the curve drawing in the browser


WEB_CURVES_DRIVER = r"""
import { readFileSync } from "node:fs";
import { drawCurves } from "./extensions/sadtalker/sadtalker.js";

globalThis.window = { devicePixelRatio: 1 };
let calls = 0;
const ctx = new Proxy({}, {
  get(target, name) {
    if (name === "measureText") return () => ({ width: 30 });
    if (name in target) return target[name];
    return () => { calls += 1; };
  },
  set(target, name, value) { target[name] = value; return true; },
});
const canvas = { clientWidth: 400, clientHeight: 170, getContext: () => ctx };
const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const out = [];
for (const data of cases) {
  calls = 0;
  const started = Date.now();
  drawCurves(canvas, data, new Set());
  out.push({ calls, ms: Date.now() - started });
}
console.log(JSON.stringify(out));
"""


def test_the_curve_drawing_is_bounded_by_pixels_not_by_the_file(tmp_path):
    """fps 1e-6 made the grid loop run frames / fps = 3e8 times (a hung tab, again on every reload);
    a million points drew a million segments. Now both are bounded by the plot's 400 pixels."""
    normal = {"frames": 75, "fps": 25, "step": 1, "mouth": [0.1] * 75, "yaw": [1.0] * 75}
    crafted_fps = {"frames": 300, "fps": 1e-6, "step": 1, "mouth": [0.1] * 300}
    huge = {"frames": 10 ** 9, "fps": 25, "step": 1, "mouth": list(np.linspace(0, 1, 200_000)), "yaw": [0.0] * 200_000}
    odd = {"frames": "x", "fps": -3, "step": None, "mouth": [None, "a", 1.0]}
    (tmp_path / "cases.json").write_text(json.dumps([normal, crafted_fps, huge, odd]))
    results = run_web_driver(tmp_path, WEB_CURVES_DRIVER, str(tmp_path / "cases.json"), timeout=120,
                             app_js="export const app = { registerExtension() {} };", api_js="export const api = {};")
    assert results[0]["calls"] > 75                       # the normal plot: 3 s of grid plus both curves
    for result in results:
        assert result["calls"] < 8 * 400, result          # a few drawing calls per pixel of width at most
        assert result["ms"] < 5000, result


# --------------------------------------------------------------------------- 3: coefficient-file metadata


def crafted_file(path: Path, damage: str) -> Path:
    """A coefficient file of 4 frames, 1 channel of 16-kHz audio, with one field damaged."""
    from safetensors.torch import save_file

    tensors = {"coeffs": torch.zeros(4, 70), "blink": torch.zeros(4), "source_pose": torch.zeros(3),
               "audio": torch.zeros(1, 1, 2560)}
    meta = {"format": coefficient_files.COEFF_FORMAT, "fps": "25.0", "still": "False", "source": "audio",
            "info": "{}", "sample_rate": "16000"}
    key, _, value = damage.partition("=")
    if key in ("fps", "sample_rate", "still"):
        meta[key] = value
    elif key == "channels":
        tensors["audio"] = torch.zeros(1, int(value), 2560)
    elif key == "audio_nan":
        tensors["audio"][0, 0, 10] = float("nan")
    elif key == "audio_seconds":
        tensors["audio"] = torch.zeros(1, 1, int(float(value) * 16000))
    elif key == "source_pose":
        tensors["source_pose"] = torch.zeros(int(value))
    elif key == "blink":
        tensors["blink"] = torch.zeros(int(value))
    elif key == "source_expression":
        tensors["source_expression"] = torch.zeros(int(value))
    elif key == "no_sample_rate":
        del meta["sample_rate"]
    save_file(tensors, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("damage, field", [
    ("fps=1e-4", "'fps' is 0.0001"), ("fps=1e12", "'fps' is 1e+12"), ("fps=fast", "'fps' is 'fast', not a number"),
    ("fps=nan", "'fps' is 'nan'"), ("sample_rate=1099511627776", "'sample_rate' is 1.09951e+12"),
    ("sample_rate=0", "'sample_rate' is 0"), ("sample_rate=-16000", "'sample_rate' is -16000"),
    ("sample_rate=16000.5", "not a whole number"), ("no_sample_rate=", "audio without a 'sample_rate'"),
    ("channels=0", "audio channels' is 0"), ("channels=300", "audio channels' is 300"),
    ("audio_nan=", "'audio' holds NaN"), ("audio_seconds=3600", "its audio lasts 3600.000 s but its 4 frames"),
    ("audio_seconds=0.01", "its audio lasts 0.010 s"), ("source_pose=7", "'source_pose' has 7 values"),
    ("blink=5", "'blink' has 5 values for 4 frames"), ("still=maybe", "'still' is 'maybe'"),
    ("source_expression=63", "'source_expression' has 63 values"),
])
def test_every_field_of_a_coefficient_file_is_checked_when_loaded(tmp_path, damage, field):
    path = crafted_file(tmp_path / "crafted.safetensors", damage)
    with pytest.raises(ValueError, match="crafted.safetensors") as err:
        load_coefficients(path)
    assert field in str(err.value), str(err.value)


def test_a_sound_coefficient_file_still_loads(tmp_path):
    back = load_coefficients(crafted_file(tmp_path / "fine.safetensors", "none"))
    assert back.num_frames == 4 and back.audio.sample_rate == 16000 and back.audio.waveform.shape == (1, 2560)
    for channels, rate in ((1, 8000), (2, 48000), (8, 384000)):
        path = tmp_path / f"c{channels}.safetensors"
        save_coefficients(sample_coefficients(3, channels, rate), path)
        assert load_coefficients(path).audio.waveform.shape == (channels, 3 * rate // 25)


def test_the_load_node_and_the_cli_agree_on_a_7_value_source_pose(nodes, comfy_base, corrupt_models, tmp_path, caplog):
    crafted_file(comfy_base / "input" / "pose7.safetensors", "source_pose=7")
    with pytest.raises(ValueError, match="'source_pose' has 7 values"):
        nodes["SadTalkerLoadCoefficients"]().load("pose7.safetensors")
    code, errors = run_main(caplog, "--image", str(MEDIA / "art_0.png"), "--coefficients",
                            str(comfy_base / "input" / "pose7.safetensors"), "--out", str(tmp_path / "t.mp4"),
                            "--models-dir", str(corrupt_models), "--device", "cpu")
    assert code == 1 and "'source_pose' has 7 values" in errors and CORRUPT not in errors, errors


# --------------------------------------------------------------------------- 4 and 5: sentences, early


@pytest.mark.parametrize("flag, value, expect", [
    ("--idle", "inf", "--idle must be a finite number"), ("--idle", "nan", "--idle must be a finite number"),
    ("--idle", "1e308", "--idle needs a length between 0.04 seconds"), ("--idle", "0.01", "between 0.04 seconds"),
    ("--head-motion-scale", "nan", "--head-motion-scale must be a finite number"),
    ("--blink-rate", "inf", "--blink-rate must be a finite number"), ("--blink-rate", "-3", "--blink-rate must be 0"),
])
def test_numeric_arguments_reject_inf_and_nan_with_a_sentence(corrupt_models, tmp_path, caplog, flag, value, expect):
    args = ["--image", str(MEDIA / "art_0.png"), "--out", str(tmp_path / "t.mp4"), "--models-dir", str(corrupt_models)]
    if flag == "--idle":
        args += [f"--idle={value}"]
    else:
        args += ["--audio", str(MEDIA / "speech_en_16k_3s.wav"), f"{flag}={value}"]
    code, errors = run_main(caplog, *args)
    assert code == 1 and expect in errors and CORRUPT not in errors, errors
    assert "Traceback" not in caplog.text and not (tmp_path / "t.mp4").exists()


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that says it is ``width`` x ``height`` (a decompression bomb's header; no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)   # 1-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("size, expect", [((40000, 40000), "too large to decode (1600 MP)"),
                                          ((11000, 10000), "is 11000x10000 pixels (110 MP)"),
                                          ((1, 1), "only 1x1 pixels")])
def test_pictures_too_large_or_too_small_are_refused_before_the_models_load(corrupt_models, tmp_path, caplog, size,
                                                                             expect):
    picture = tmp_path / "picture.png"
    if size == (1, 1):
        from PIL import Image

        Image.new("RGB", size).save(picture)
    else:
        png_header(picture, *size)
    code, errors = run_main(caplog, "--image", str(picture), "--audio", str(MEDIA / "speech_en_16k_3s.wav"),
                            "--out", str(tmp_path / "t.mp4"), "--models-dir", str(corrupt_models), "--device", "cpu")
    assert code == 1 and expect in errors and CORRUPT not in errors, errors


def test_the_face_node_checks_the_picture_and_mask_before_the_model_loads(nodes, model, monkeypatch):
    def loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(model, "ensure_loaded", loading)
    node = nodes["SadTalkerFaceCrop"]()
    with pytest.raises(ValueError, match="only 1x1 pixels"):
        node.prepare(model, torch.zeros(1, 1, 1, 3), "crop", "256", "dlib")
    with pytest.raises(ValueError, match="NaN"):
        node.prepare(model, torch.full((1, 64, 64, 3), float("nan")), "crop", "256", "dlib")
    with pytest.raises(ValueError, match=r"one mask \[H, W\].*got shape \(0, 64, 64\)"):
        node.prepare(model, torch.zeros(1, 64, 64, 3), "crop", "256", "dlib", -1, torch.zeros(0, 64, 64))


def test_load_audio_list_turns_a_very_long_folder_name_into_a_sentence(nodes, comfy_base):
    node_cls = nodes["SadTalkerLoadAudioList"]
    name = "x" * 5000
    assert math.isnan(node_cls.IS_CHANGED(name))
    with pytest.raises(ValueError, match=r"Cannot read the audio folder|inside ComfyUI's input folder") as err:
        node_cls().load(name)
    assert len(str(err.value)) < 600


# --------------------------------------------------------------------------- 6: links out of the input folder


def test_load_audio_list_refuses_a_link_to_a_file_outside_the_input_folder(nodes, comfy_base, tmp_path):
    folder = comfy_base / "input" / "linked"
    folder.mkdir(parents=True)
    outside = tmp_path / "private.wav"
    shutil.copyfile(MEDIA / "speech_en_16k_3s.wav", outside)
    (folder / "clip.wav").symlink_to(outside)
    with pytest.raises(ValueError, match="clip.wav in .* is a link to a file outside"):
        nodes["SadTalkerLoadAudioList"]().load("linked")
    (folder / "clip.wav").unlink()
    shutil.copyfile(MEDIA / "speech_en_16k_3s.wav", comfy_base / "input" / "kept.wav")
    (folder / "inside.wav").symlink_to(comfy_base / "input" / "kept.wav")   # a link that stays inside is fine
    clips, names = nodes["SadTalkerLoadAudioList"]().load("linked")
    assert names == ["inside"] and clips[0]["waveform"].shape[-1] == 48000


# --------------------------------------------------------------------------- 7: silent garbage


def test_a_nan_background_is_a_sentence_not_black_frames():
    from sadtalker_models.pipeline import check_background

    face = type("Face", (), {"original": np.zeros((20, 30, 3), np.uint8)})()
    background = torch.rand(3, 20, 30, 3)
    check_background(background, face)
    background[2, 5, 5, 1] = float("nan")
    with pytest.raises(ValueError, match="Background frame 2 contains NaN"):
        check_background(background, face)


def test_float_audio_far_outside_one_moves_the_mouth_with_a_warning(caplog):
    from sadtalker_models.audio import audio_to_mel_windows, to_mono_16k

    rate = 16000
    t = np.arange(rate) / rate
    speech = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        loud = to_mono_16k(speech * np.float32(1e6), rate)
    assert "far outside -1..1" in caplog.text
    assert np.allclose(loud, speech / np.abs(speech).max(), atol=1e-6)
    windows = audio_to_mel_windows(loud, rate)
    assert float(windows.std(dim=0).mean()) > 0.1            # the mel varies frame to frame: the mouth moves
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert np.array_equal(to_mono_16k(speech, rate), speech)   # ordinary audio: untouched, no warning
    assert "far outside" not in caplog.text


def test_masks_of_every_comfyui_shape_are_read_and_an_ambiguous_one_is_a_sentence():
    from sadtalker_models.face.select import choose_face, mask_to_array

    plain = np.zeros((30, 40), np.float32)
    plain[5:15, 20:35] = 1.0
    want = plain > 0.5
    for shaped in (plain, plain[None], plain[..., None], plain[None, ..., None], torch.from_numpy(plain)[None]):
        assert np.array_equal(mask_to_array(shaped, 30, 40), want), np.shape(shaped)
    with pytest.raises(ValueError, match=r"got shape \(0, 30, 40\)"):
        mask_to_array(np.zeros((0, 30, 40)), 30, 40)
    left = np.array([[2.0, 2.0], [12.0, 12.0]] * 34, np.float32).reshape(68, 2)
    right = left + np.float32([20.0, 0.0])
    everything = np.ones((30, 40), bool)
    with pytest.raises(ValueError, match="covers faces 0, 1 of the source image equally"):
        choose_face([left, right], mask=everything)
    only_right = np.zeros((30, 40), bool)
    only_right[:, 21:] = True
    assert choose_face([left, right], mask=only_right) == 1


def test_a_huge_picture_becomes_uint8_without_float_copies():
    """Face Crop turned a 10000x10000 IMAGE into several float32 copies (5.3 GB) before detection; now
    it converts in blocks of rows, so the conversion needs about one uint8 copy."""
    from sadtalker_models.face.landmarks import to_rgb_uint8

    picture = torch.rand(3000, 2000, 3).numpy()           # 72 MB of float32; its uint8 copy is 18 MB
    tracemalloc.start()
    try:
        rgb = to_rgb_uint8(picture, "picture")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(rgb[:5], np.rint(picture[:5] * 255).astype(np.uint8))
    assert peak < rgb.nbytes + 16 * 1024 * 1024, peak / 2 ** 20
