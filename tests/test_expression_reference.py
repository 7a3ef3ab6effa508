"""Expression from a reference picture (issue 22): ExpNet's reference expression blended toward
another picture's, through the library, the nodes and the CLI.

Real pictures (``art_0.png`` talks; ``happy1.png`` and ``sad.png`` give the expression) and the
real speech clip, with the stand-in weights: they cannot show a smile (the stand-in ReconNet gives
nearly the same expression for every picture and the stand-in ExpNet's head is a random matrix),
so the checks are what holds for any weights:

* strength 0 (or no reference) gives today's coefficients bit for bit;
* ExpNet's head is linear, so the reference moves every frame's expression by the same offset:
  at strength 1 the prediction *is* the one made for the reference picture itself (the distance
  to it drops by 100 %, by 50 % at strength 0.5), while the speech-driven part (the mouth) is
  untouched: the offset is constant over the frames to 1e-6 and the mouth coefficient's
  correlation with the speech loudness stays what it was;
* the pose, the source face and its crop are untouched.
"""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest
import torch

from conftest import CHECKPOINT_NAME, MEDIA
from sadtalker_models import pipeline
from sadtalker_models.coefficients import check_expression_reference, expression_offset
from sadtalker_models.model_cache import ModelCache
from test_nodes import comfy_base, image_tensor, model, nodes, pack, speech  # noqa: F401  (fixtures)

EXPNET_REF = slice(512, 576)   # ExpNet's head input is [audio 512 | reference expression 64 | blink ratio 1]


@pytest.fixture(scope="module")
def cache():
    return ModelCache()


@pytest.fixture(scope="module")
def models(weights_dir, cache):
    # loaded as the CLI loads them (auto precision, mapping files beside the checkpoint), into a cache of
    # this module's own that the CLI test hands to the CLI
    return pipeline.load_models(weights_dir / CHECKPOINT_NAME, device="cpu", precision="auto",
                                mapping_dir=weights_dir, cache=cache)


def read_face(models, name: str) -> pipeline.SourceFace:
    image = cv2.cvtColor(cv2.imread(str(MEDIA / name)), cv2.COLOR_BGR2RGB)
    return pipeline.prepare_face(models, image, preprocess="crop", landmark_backend="dlib")


@pytest.fixture(scope="module")
def faces(models):
    return {name: read_face(models, f"{name}.png") for name in ("art_0", "happy1", "sad")}


@pytest.fixture(scope="module")
def clip():
    from sadtalker_models.video import load_audio

    return load_audio(str(MEDIA / "speech_en_16k_3s.wav"))   # (1, 48000) float32, 16 kHz: 75 frames


def short(clip, seconds: float = 0.2):
    wave, rate = clip
    return wave[:, : int(seconds * rate)], rate


@pytest.fixture(scope="module")
def whole(models, faces, clip):
    """The whole 3-s clip: today's coefficients and the same with the smiling picture at strength 1."""
    source = faces["art_0"]
    before = copy.deepcopy(source)
    out = {"today": pipeline.audio_to_coefficients(models, source, *clip, seed=0),
           "happy": pipeline.audio_to_coefficients(models, source, *clip, seed=0,
                                                   expression_reference=faces["happy1"], expression_strength=1.0)}
    out["before"] = before
    return out


def frame_rms(wave: np.ndarray, rate: int, frames: int) -> np.ndarray:
    """Loudness of each 40-ms video frame of the speech (mono mix)."""
    mono = wave.mean(axis=0)
    step = rate // 25
    return np.array([np.sqrt(np.mean(mono[i * step:(i + 1) * step] ** 2)) for i in range(frames)])


def mean_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over frames of the L2 distance between two (T, >= 64) expression tracks."""
    return float((a[:, :64] - b[:, :64]).norm(dim=1).mean())


# --------------------------------------------------------------------------- library


def test_strength_zero_or_no_reference_gives_todays_coefficients_bit_for_bit(models, faces, clip):
    source, wave = faces["art_0"], short(clip)
    today = pipeline.audio_to_coefficients(models, source, *wave, seed=3)
    zero = pipeline.audio_to_coefficients(models, source, *wave, seed=3, expression_reference=faces["happy1"],
                                          expression_strength=0.0)
    assert torch.equal(zero.coeffs, today.coeffs) and torch.equal(zero.blink, today.blink)
    idle = pipeline.idle_coefficients(models, source, 0.2, seed=3)
    idle_zero = pipeline.idle_coefficients(models, source, 0.2, seed=3, expression_reference=faces["sad"].coeff_3dmm,
                                           expression_strength=0.0)
    assert torch.equal(idle_zero.coeffs, idle.coeffs)
    assert zero.info["expression_reference"] and today.info["expression_reference"] is False


def test_full_strength_talks_with_the_reference_pictures_expression(models, faces, clip):
    """At strength 1 ExpNet's reference is the picture's own expression, so every frame's expression is what
    it predicts for that picture talking: the distance to it drops by 100 % (50 % at strength 0.5)."""
    source, wave = faces["art_0"], short(clip)
    today = pipeline.audio_to_coefficients(models, source, *wave, seed=1)
    for name in ("happy1", "sad"):
        ref = faces[name]
        own = pipeline.audio_to_coefficients(models, ref, *wave, seed=1)   # the picture itself talking
        half, full = (pipeline.audio_to_coefficients(models, source, *wave, seed=1, expression_reference=ref,
                                                     expression_strength=s).coeffs for s in (0.5, 1.0))
        before = mean_distance(today.coeffs, own.coeffs)
        assert before > 1e-3, name   # the pictures' expressions differ (happy1: 0.0055, sad: 0.0024)
        assert mean_distance(half, own.coeffs) / before == pytest.approx(0.5, abs=0.01), name
        assert mean_distance(full, own.coeffs) < 1e-3 * before, name
        assert torch.allclose(full[:, :64], own.coeffs[:, :64], atol=1e-6), name


def test_the_reference_offset_is_what_expnet_is_given(models, faces, whole):
    """ExpNet's head is linear: the expression moves by W_ref @ (reference - source) on every frame."""
    source, ref = faces["art_0"], faces["happy1"]
    delta = ref.coeff_3dmm[0, :64] - source.coeff_3dmm[0, :64]
    w_ref = models.nets.expnet.mapping1.weight.detach().float().cpu()[:, EXPNET_REF]
    moved = whole["happy"].coeffs[:, :64] - whole["today"].coeffs[:, :64]
    assert torch.allclose(moved, (w_ref @ delta).expand_as(moved), atol=1e-6)
    assert float(moved.std(dim=0).max()) < 1e-6      # the same offset on every frame (measured 2e-8)


def test_the_mouth_still_follows_the_speech(whole, clip):
    """Correlation of the mouth coefficient (expression 0) with each frame's loudness: with the smiling
    reference it stays at least 80 % of today's (stand-in weights: 0.308 both; the offset is constant)."""
    rms = frame_rms(*clip, whole["today"].num_frames)
    today = np.corrcoef(whole["today"].coeffs[:, 0].numpy(), rms)[0, 1]
    happy = np.corrcoef(whole["happy"].coeffs[:, 0].numpy(), rms)[0, 1]
    assert today > 0.25 and happy >= 0.8 * today
    assert happy == pytest.approx(today, abs=1e-4)


def test_pose_source_face_and_crop_are_untouched(faces, whole):
    today, happy, before = whole["today"], whole["happy"], whole["before"]
    assert torch.equal(happy.coeffs[:, 64:70], today.coeffs[:, 64:70])   # head pose: bit for bit
    assert torch.equal(happy.blink, today.blink)
    source = faces["art_0"]
    assert torch.equal(source.coeff_3dmm, before.coeff_3dmm)               # identity, expression, pose, crop params
    assert np.array_equal(source.crop, before.crop) and np.array_equal(source.original, before.original)
    assert source.crop_info == before.crop_info
    assert torch.equal(happy.source_pose, source.coeff_3dmm[0, 64:67])
    assert torch.equal(happy.source_expression, source.coeff_3dmm[0, :64])   # the source's, not the picture's
    assert happy.info["expression_reference"] and happy.info["expression_strength"] == 1.0


def test_expression_curve_is_the_distance_from_the_source_expression(faces, whole):
    today, happy = whole["today"], whole["happy"]
    source = faces["art_0"].coeff_3dmm[0, :64]
    curve = today.curves()["expression"]
    assert len(curve) == today.num_frames
    assert np.allclose(curve, (today.coeffs[:, :64] - source).norm(dim=1).numpy(), atol=1e-6)
    assert not np.allclose(happy.curves()["expression"], curve, atol=1e-6)
    reference_driven = pipeline.coefficients_from_reference(torch.zeros(4, 73))
    assert "expression" not in reference_driven.curves()        # no source expression known: no curve


def test_idle_clip_holds_the_reference_expression(models, faces):
    """The idle path feeds ExpNet silence and the reference expression: at strength 1 its expression is the
    reference picture's own idle expression."""
    source, ref = faces["art_0"], faces["sad"]
    idle = pipeline.idle_coefficients(models, source, 0.2, seed=2, expression_reference=ref)
    own = pipeline.idle_coefficients(models, ref, 0.2, seed=2)
    assert torch.allclose(idle.coeffs[:, :64], own.coeffs[:, :64], atol=1e-6)
    assert idle.info["expression_reference"] and idle.source == "idle"


@pytest.mark.parametrize("value, message", [
    (torch.zeros(1, 10), r"must be a picture's 3DMM expression shaped \(1, 64\).*got \(10,\)"),
    (torch.zeros(2, 73), r"shaped \(1, 64\).*got \(2, 73\)"),
    (torch.full((1, 64), float("nan")), "contains NaN or infinite values"),
])
def test_a_bad_reference_is_a_sentence(models, faces, clip, value, message):
    with pytest.raises(ValueError, match=message):
        pipeline.audio_to_coefficients(models, faces["art_0"], *short(clip), expression_reference=value)
    with pytest.raises(ValueError, match=message):
        check_expression_reference(value)


def test_bad_strength_is_a_sentence_even_without_a_reference(models, faces, clip):
    for strength in (float("nan"), float("inf"), "much"):
        with pytest.raises(ValueError, match="expression strength must be a finite number"):
            pipeline.audio_to_coefficients(models, faces["art_0"], *short(clip), expression_strength=strength)
    assert expression_offset(torch.zeros(1, 73), None, 1.0) is None
    assert expression_offset(torch.zeros(1, 73), torch.ones(64), 0.0) is None
    assert torch.equal(expression_offset(torch.zeros(1, 73), torch.ones(1, 70), 0.5), torch.full((1, 64), 0.5))


# --------------------------------------------------------------------------- nodes


def test_audio_and_idle_nodes_take_an_expression_reference(nodes, model):
    crop = nodes["SadTalkerFaceCrop"]()
    source = crop.prepare(model, image_tensor(MEDIA / "sad.png"), "crop", "256", "dlib")[0]   # small: quick
    happy = crop.prepare(model, image_tensor(MEDIA / "happy1.png"), "crop", "256", "dlib")[0]
    audio_node, idle_node = nodes["SadTalkerAudioToCoefficients"](), nodes["SadTalkerIdleCoefficients"]()
    for node in (audio_node, idle_node):
        optional = node.INPUT_TYPES()["optional"]
        assert optional["expression_reference"][0] == "SADTALKER_FACE"
        spec = optional["expression_strength"][1]
        assert (spec["default"], spec["min"], spec["max"]) == (1.0, 0.0, 1.5)
        assert all(optional[k][1]["tooltip"] for k in ("expression_reference", "expression_strength"))
    audio = speech(0.12)
    today = audio_node.predict(model, source, audio, 0, 5, True, False)
    zero = audio_node.predict(model, source, audio, 0, 5, True, False, expression_reference=happy,
                              expression_strength=0.0)
    full = audio_node.predict(model, source, audio, 0, 5, True, False, expression_reference=happy)
    assert torch.equal(zero["result"][0].coeffs, today["result"][0].coeffs)
    curves = [out["ui"]["sadtalker_curves"][0]["expression"] for out in (today, full)]
    assert len(curves[0]) == today["result"][0].num_frames and not np.allclose(curves[0], curves[1], atol=1e-6)
    idle = idle_node.make(model, source, 0.12, 0, 5, True, expression_reference=happy, expression_strength=1.0)
    assert idle["result"][0].info["expression_reference"] and "expression" in idle["ui"]["sadtalker_curves"][0]
    with pytest.raises(ValueError, match="expression_reference input got Tensor.*Face Crop"):
        audio_node.predict(model, source, audio, 0, 5, True, False, expression_reference=torch.zeros(1, 64))


# --------------------------------------------------------------------------- CLI


def run_args(weights_dir, tmp_path, *extra: str):
    from sadtalker_models.__main__ import build_parser

    return build_parser().parse_args(["run", "--image", str(MEDIA / "sad.png"), "--idle", "0.04", "--out",
                                      str(tmp_path / "out.mp4"), "--models-dir", str(weights_dir), "--device", "cpu",
                                      "--landmark-backend", "dlib", *extra])


def test_cli_checks_the_expression_flags(weights_dir, tmp_path):
    from sadtalker_models.__main__ import check_run_args

    with pytest.raises(ValueError, match="--expression-image .*missing.png does not exist"):
        check_run_args(run_args(weights_dir, tmp_path, "--expression-image", str(tmp_path / "missing.png")))
    with pytest.raises(ValueError, match="--expression-strength must be a finite number"):
        check_run_args(run_args(weights_dir, tmp_path, "--expression-image", str(MEDIA / "sad.png"),
                                "--expression-strength", "nan"))
    args = run_args(weights_dir, tmp_path, "--expression-image", str(MEDIA / "sad.png"))
    args.idle, args.coefficients = None, str(MEDIA / "sad.png")
    with pytest.raises(ValueError, match="--coefficients already hold the expression"):
        check_run_args(args)


def test_cli_uses_the_expression_of_a_picture(weights_dir, tmp_path, models, faces, cache, monkeypatch):
    """--expression-image: that picture's face is prepared like the source and its expression reaches the
    coefficients (saved with --save-coefficients; the rendering itself is the other CLI tests' job)."""
    from sadtalker_models import render_video
    from sadtalker_models.__main__ import run
    from sadtalker_models.coefficient_files import load_coefficients

    load = pipeline.load_models
    monkeypatch.setattr(pipeline, "load_models", lambda *a, **k: load(*a, **{**k, "cache": cache}))   # no reload
    rendered = []
    monkeypatch.setattr(render_video, "render_to_mp4", lambda models, face, coeffs, out, **kw: rendered.append(coeffs))
    saved = tmp_path / "coeffs.safetensors"
    args = run_args(weights_dir, tmp_path, "--expression-image", str(MEDIA / "happy1.png"), "--expression-strength",
                    "0.8", "--save-coefficients", str(saved))
    args.quiet = True
    assert run(args) == 0
    got = load_coefficients(saved)
    assert torch.equal(rendered[0].coeffs, got.coeffs)
    want = pipeline.idle_coefficients(models, faces["sad"], 0.04, seed=0, expression_reference=faces["happy1"],
                                      expression_strength=0.8)
    assert torch.allclose(got.coeffs, want.coeffs, atol=1e-6)
    assert got.info["expression_reference"] and got.info["expression_strength"] == 0.8
    today = pipeline.idle_coefficients(models, faces["sad"], 0.04, seed=0)
    assert not torch.allclose(got.coeffs[:, :64], today.coeffs[:, :64], atol=1e-6)
    assert math.isclose(float((got.coeffs[:, 64:] - today.coeffs[:, 64:]).abs().max()), 0.0, abs_tol=1e-6)
