"""Face enhancer (spec §16): spandrel loading, 5-point alignment, paste-back, pass-through, errors.

The GFPGAN stand-in is spandrel's own GFPGANv1Clean with the v1.4 hyper-parameters and random
weights, saved the way the official file is (``{"params_ema": state_dict}``). Only one test runs
it (a 512×512 forward takes a few seconds on CPU); the geometry tests use cheap fake restorers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, MEDIA
from sadtalker_models.checkpoints import CheckpointError
from sadtalker_models import precision
from sadtalker_models.official_files import GFPGAN as OFFICIAL_GFPGAN
from sadtalker_models.enhance import (
    FFHQ_TEMPLATE_512,
    FaceRestorerError,
    alignment_transform,
    enhance_frames,
    feather_mask,
    five_points_from_68,
    load_face_restorer,
)

REPO = Path(__file__).resolve().parent.parent
FACE_CROP_CASES = DATA / "cases" / "face_crop.json"

# the real face, shrunk to keep the frames small
FRAME_W, FRAME_H = 320, 448


def _dlib_detector():
    try:
        from sadtalker_models.face.landmarks import make_landmark_detector

        return make_landmark_detector("dlib")
    except Exception:  # backend not available here: landmarks are injected instead
        return None


@pytest.fixture(scope="module")
def detector():
    return _dlib_detector()


@pytest.fixture(scope="module")
def art_face(detector) -> tuple[np.ndarray, np.ndarray]:
    """(448, 320, 3) uint8 RGB face image and its (68, 2) landmarks (dlib when available)."""
    bgr = cv2.imread(str(MEDIA / "art_0.png"), cv2.IMREAD_COLOR)
    assert bgr is not None, "missing tests/data/media/art_0.png"
    full_h, full_w = bgr.shape[:2]
    image = cv2.cvtColor(cv2.resize(bgr, (FRAME_W, FRAME_H), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    lm = detector.detect(image) if detector is not None else None
    if lm is None:
        case = json.loads(FACE_CROP_CASES.read_text())["cases"]["art_0"]
        lm = np.asarray(case["lm68"], dtype=np.float32) * np.float32([FRAME_W / full_w, FRAME_H / full_h])
    return image, np.asarray(lm, dtype=np.float32)


def _gfpgan_v14_module() -> torch.nn.Module:
    from spandrel.architectures.GFPGAN import GFPGAN

    return GFPGAN(
        out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
        fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True,
    )


@pytest.fixture(scope="module")
def gfpgan_file(tmp_path_factory) -> Path:
    """A random-weight GFPGANv1.4 stand-in in the official file layout."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = _gfpgan_v14_module()
    path = tmp_path_factory.mktemp("facerestore_models") / "GFPGANv1.4.pth"
    torch.save({"params_ema": module.state_dict()}, path)
    return path


class FakeRestorer:
    """Stand-in restorer: returns the crops unchanged, or a constant value; counts its calls."""

    def __init__(self, value: float | None = None) -> None:
        self.value = value
        self.calls: list[tuple[int, ...]] = []
        self.devices: list[object] = []

    architecture = "fake"
    descriptor = types.SimpleNamespace(model=torch.nn.Linear(1000, 1000))  # 4 MB of float32 weights

    def to(self, device=None, dtype=None):
        self.devices.append(device)
        return self

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(faces.shape))
        if self.value is None:
            return faces.clone()
        return torch.full_like(faces, self.value)


class ForbiddenRestorer:
    architecture = "forbidden"

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the restorer must not run")


class NoFaceDetector:
    name = "none"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray):
        assert image.dtype == np.uint8 and image.ndim == 3
        self.calls += 1
        return None


def _synthetic_68(points5: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """68 landmarks whose eye centres, nose tip and mouth corners are exactly ``points5``."""
    lm = rng.uniform(0, 400, size=(68, 2)).astype(np.float32)
    ring = np.array([[math.cos(a), math.sin(a)] for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)])
    lm[36:42] = points5[0] + 7.0 * ring
    lm[42:48] = points5[1] + 7.0 * ring
    lm[30], lm[48], lm[54] = points5[2], points5[3], points5[4]
    return lm


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


# ---------------------------------------------------------------------------------------------
# geometry


def test_five_points_land_on_template_within_one_pixel():
    rng = np.random.default_rng(3)
    angle, scale, shift = math.radians(17.0), 0.45, np.array([61.0, 38.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = (FFHQ_TEMPLATE_512.astype(np.float64) @ rot.T + shift).astype(np.float32)
    lm68 = _synthetic_68(points, rng)

    five = five_points_from_68(lm68)
    np.testing.assert_allclose(five, points, atol=1e-3)
    matrix = alignment_transform(five)
    assert matrix.shape == (2, 3)
    # a similarity: [[a, -b], [b, a]]
    assert matrix[0, 0] == pytest.approx(matrix[1, 1], abs=1e-6)
    assert matrix[0, 1] == pytest.approx(-matrix[1, 0], abs=1e-6)
    assert np.abs(_apply(matrix, five) - FFHQ_TEMPLATE_512).max() < 1.0


def test_real_face_alignment_is_plausible(art_face):
    image, lm68 = art_face
    matrix = alignment_transform(five_points_from_68(lm68))
    residual = np.linalg.norm(_apply(matrix, five_points_from_68(lm68)) - FFHQ_TEMPLATE_512, axis=1)
    assert residual.max() < 20.0  # a real face fits the template up to a few pixels per point
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    assert 1.0 < scale < 10.0  # a face of ~100 px is magnified to the 512 template
    assert abs(math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))) < 20.0  # upright face


def test_feather_mask_shape_and_range():
    mask = feather_mask()
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-4)
    assert mask[0, 0] < 1e-3 and mask[0, 256] < 0.05
    assert mask.min() >= 0.0 and mask.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("upscale", [1, 2])
def test_identity_restorer_round_trip(art_face, upscale):
    """Warping to the template and back must put every pixel where it came from."""
    image, lm68 = art_face
    frames = image[None].astype(np.float32) / 255.0
    restorer = FakeRestorer()
    out, stats = enhance_frames(frames, restorer, landmarks=[lm68], upscale=upscale)
    assert restorer.calls == [(1, 3, 512, 512)]
    assert out.shape == (1, FRAME_H * upscale, FRAME_W * upscale, 3) and out.dtype == np.float32
    assert stats.enhanced_frames == 1 and stats.frames_without_face == []
    if upscale == 1:
        expected = frames[0]
    else:
        expected = np.clip(cv2.resize(frames[0], None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LANCZOS4), 0, 1)
    x0, y0 = (lm68.min(axis=0) * upscale).astype(int)
    x1, y1 = (lm68.max(axis=0) * upscale).astype(int)
    box = (slice(y0, y1), slice(x0, x1))
    face_err = float(np.abs(out[0][box] - expected[box]).mean())
    assert face_err < 0.02, face_err  # two bilinear resamplings blur a little
    # and nothing is misplaced: half-pixel shifts of the expected frame match worse
    height, width = expected.shape[:2]
    for dx, dy in ((0.5, 0.0), (-0.5, 0.0), (0.0, 0.5), (0.0, -0.5)):
        shifted = cv2.warpAffine(expected, np.float32([[1, 0, dx], [0, 1, dy]]), (width, height), flags=cv2.INTER_LINEAR)
        assert float(np.abs(out[0][box] - shifted[box]).mean()) > face_err, (dx, dy)


def test_constant_restorer_covers_face_and_keeps_background(art_face):
    image, lm68 = art_face
    frames = image[None]
    out, stats = enhance_frames(frames, FakeRestorer(value=1.0), landmarks=np.stack([lm68]), strength=0.5)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    nose_x, nose_y = lm68[30].round().astype(int)
    expected_nose = np.rint(image[nose_y, nose_x].astype(np.float32) * 0.5 + 127.5)
    np.testing.assert_allclose(out[0, nose_y, nose_x], expected_nose, atol=1)
    # the frame corners are far outside the template: untouched
    for y, x in ((0, 0), (FRAME_H - 1, FRAME_W - 1), (FRAME_H - 1, 0)):
        assert np.array_equal(out[0, y, x], image[y, x])
    assert stats.enhanced_frames == 1


# ---------------------------------------------------------------------------------------------
# pass-through, shapes, progress


@pytest.mark.parametrize("kind", ["float", "uint8", "tensor"])
def test_strength_zero_returns_input(art_face, kind):
    image, lm68 = art_face
    if kind == "uint8":
        frames = image[None]
    elif kind == "float":
        frames = image[None].astype(np.float32) / 255.0
    else:
        frames = torch.from_numpy(image[None].astype(np.float32) / 255.0)
    out, stats = enhance_frames(frames, ForbiddenRestorer(), landmarks=[lm68], strength=0.0)
    if kind == "tensor":
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert torch.equal(out, frames)
    else:
        assert out.dtype == frames.dtype and np.array_equal(out, frames)
    assert stats.total_frames == 1 and stats.enhanced_frames == 0


def test_strength_zero_with_upscale_is_lanczos(art_face):
    image, lm68 = art_face
    frames = image[None].astype(np.float32) / 255.0
    out, _ = enhance_frames(frames, ForbiddenRestorer(), landmarks=[lm68], strength=0.0, upscale=2)
    expected = np.clip(cv2.resize(frames[0], (2 * FRAME_W, 2 * FRAME_H), interpolation=cv2.INTER_LANCZOS4), 0, 1)
    np.testing.assert_array_equal(out[0], expected)


def test_faceless_frame_passes_through(detector):
    grey = np.full((1, 96, 128, 3), 128, dtype=np.uint8)
    det = detector if detector is not None else NoFaceDetector()
    out, stats = enhance_frames(grey, ForbiddenRestorer(), det)
    assert np.array_equal(out, grey)
    assert stats.frames_without_face == [0] and stats.enhanced_frames == 0 and stats.skipped_frames == 1

    up, stats = enhance_frames(grey, ForbiddenRestorer(), NoFaceDetector(), upscale=2)
    assert up.shape == (1, 192, 256, 3) and np.all(up == 128)
    assert stats.frames_without_face == [0]


def test_mixed_batch_counts_frames_without_face(art_face):
    image, lm68 = art_face
    grey = np.full_like(image, 90)
    frames = np.stack([image, grey, image])
    restorer = FakeRestorer()
    tiny = lm68.copy()
    tiny[:] = lm68[30]  # collapsed landmarks: eye distance 0, skipped like facexlib does
    out, stats = enhance_frames(frames, restorer, landmarks=[lm68, None, tiny], batch_size=3)
    assert restorer.calls == [(1, 3, 512, 512)]
    assert stats.enhanced_frames == 1 and stats.frames_without_face == [1, 2]
    assert np.array_equal(out[1], grey) and np.array_equal(out[2], image)


def test_progress_per_batch_and_cancel(art_face):
    image, lm68 = art_face
    frames = np.stack([image] * 3)
    seen: list[tuple[int, int]] = []
    restorer = FakeRestorer()
    enhance_frames(frames, restorer, landmarks=[lm68] * 3, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 3), (3, 3)]
    assert restorer.calls == [(2, 3, 512, 512), (1, 3, 512, 512)]

    class Cancelled(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        raise Cancelled

    restorer = FakeRestorer()
    with pytest.raises(Cancelled):
        enhance_frames(frames, restorer, landmarks=[lm68] * 3, batch_size=2, progress=cancel)
    assert len(restorer.calls) == 1


def test_argument_errors(art_face):
    image, lm68 = art_face
    with pytest.raises(ValueError, match="strength"):
        enhance_frames(image[None], FakeRestorer(), landmarks=[lm68], strength=1.5)
    with pytest.raises(ValueError, match="detector"):
        enhance_frames(image[None], FakeRestorer())
    with pytest.raises(ValueError, match="landmarks for 2 frames"):
        enhance_frames(image[None], FakeRestorer(), landmarks=[lm68, lm68])
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        enhance_frames(image, FakeRestorer(), landmarks=[lm68])


# ---------------------------------------------------------------------------------------------
# the spandrel loader and a real GFPGAN forward


def test_gfpgan_stand_in_end_to_end(gfpgan_file, art_face, detector, caplog):
    restorer = load_face_restorer(gfpgan_file, device="cpu", dtype=torch.float32)
    assert restorer.architecture == "GFPGAN"
    assert restorer.descriptor.purpose == "FaceSR"
    assert not restorer.descriptor.model.training
    assert restorer.input_size == 512

    with caplog.at_level("WARNING"):
        restorer.to(dtype=torch.float16)  # GFPGAN has no fp16 support
    assert restorer.dtype == torch.float32 and "float16" in caplog.text
    caplog.clear()
    # bf16 (which GFPGAN supports) on a CPU without native bf16 would crawl: float32 with a warning
    with pytest.MonkeyPatch.context() as patch, caplog.at_level("WARNING"):
        patch.setattr(precision, "cpu_runs_natively", lambda dtype: dtype == torch.float32)
        restorer.to(dtype=torch.bfloat16)
    assert restorer.dtype == torch.float32 and "no native bfloat16" in caplog.text

    seen: dict[str, float] = {}

    def record(module, args, kwargs):
        seen["min"], seen["max"] = float(args[0].min()), float(args[0].max())

    handle = restorer.descriptor.model.register_forward_pre_hook(record, with_kwargs=True)
    image, lm68 = art_face
    frames = torch.from_numpy(image[None].astype(np.float32) / 255.0)
    try:
        if detector is not None:
            out, stats = enhance_frames(frames, restorer, detector, upscale=2)
        else:
            out, stats = enhance_frames(frames, restorer, landmarks=[lm68], upscale=2)
    finally:
        handle.remove()
    # GFPGAN is fed in [-1, 1] as it was trained
    assert seen["min"] < -0.5 and seen["max"] <= 1.0
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (1, 2 * FRAME_H, 2 * FRAME_W, 3)
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert stats.enhanced_frames == 1 and stats.architecture == "GFPGAN" and stats.upscale == 2
    # random weights change the face, and leave the far background as the Lanczos upscale
    upscaled = np.clip(cv2.resize(frames[0].numpy(), (2 * FRAME_W, 2 * FRAME_H), interpolation=cv2.INTER_LANCZOS4), 0, 1)
    cx, cy = (lm68[30] * 2).astype(int)
    assert np.abs(out[0, cy - 20 : cy + 20, cx - 20 : cx + 20].numpy() - upscaled[cy - 20 : cy + 20, cx - 20 : cx + 20]).mean() > 0.02
    np.testing.assert_array_equal(out[0, :8, :8].numpy(), upscaled[:8, :8])


def test_restoreformer_is_loaded_and_called_in_its_range(tmp_path, monkeypatch):
    """Other FaceSR architectures load too; RestoreFormer's raw module also works in [-1, 1]."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = RestoreFormer(n_embed=32, embed_dim=16, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, z_channels=16)
    path = tmp_path / "RestoreFormer.safetensors"
    from safetensors.torch import save_file

    save_file(module.state_dict(), str(path))
    restorer = load_face_restorer(path)
    assert restorer.architecture == "RestoreFormer" and restorer.descriptor.purpose == "FaceSR"

    seen = {}

    def fake_forward(x, **kwargs):  # the real forward at 512 is too slow for a unit test
        seen["range"] = (float(x.min()), float(x.max()))
        return x.clone(), None

    monkeypatch.setattr(restorer.descriptor.model, "forward", fake_forward)
    faces = torch.linspace(0, 1, 3 * 512 * 512).reshape(1, 3, 512, 512)
    out = restorer.restore(faces)
    assert seen["range"] == pytest.approx((-1.0, 1.0))
    torch.testing.assert_close(out, faces, atol=1e-6, rtol=0)


def test_missing_file_names_folder_and_url(tmp_path):
    with pytest.raises(FaceRestorerError) as info:
        load_face_restorer(tmp_path / "GFPGANv1.4.pth")
    message = str(info.value)
    assert "facerestore_models" in message and "gfpgan" in message and OFFICIAL_GFPGAN.url in message
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, ValueError)


def test_wrong_checkpoints_are_refused(tmp_path):
    # a SadTalker mapping-like file
    sadtalker_like = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"mapping": {"first.0.weight": torch.zeros(8, 70, 7), "fc_roll.bias": torch.zeros(66)}, "epoch": 229}, sadtalker_like)
    with pytest.raises(FaceRestorerError, match="not a face restoration model"):
        load_face_restorer(sadtalker_like)

    random_dict = tmp_path / "random.safetensors"
    from safetensors.torch import save_file

    save_file({"foo.weight": torch.randn(4, 4), "bar.bias": torch.randn(4)}, str(random_dict))
    with pytest.raises(FaceRestorerError, match="not a face restoration model"):
        load_face_restorer(random_dict)

    # an upscaler spandrel knows, but with purpose "SR"
    from spandrel.architectures.Compact import Compact

    upscaler = tmp_path / "2x_compact.pth"
    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), upscaler)
    with pytest.raises(FaceRestorerError, match="upscale_models"):
        load_face_restorer(upscaler)

    # pickled objects other than tensors are not executed (weights_only)
    pickled = tmp_path / "pickled.pth"
    torch.save({"params_ema": {"x": torch.zeros(1)}, "extra": types.SimpleNamespace(a=1)}, pickled)
    with pytest.raises(FaceRestorerError, match="Cannot read"):
        load_face_restorer(pickled)

    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(FaceRestorerError, match="not a state dict"):
        load_face_restorer(not_a_dict)


# ---------------------------------------------------------------------------------------------
# the ComfyUI node module


def test_node_module_is_light_and_maps_two_nodes():
    """Importing the node file (inside the pack, as ComfyUI imports it) must not pull in torch or spandrel."""
    script = (
        "import importlib, sys, types\n"
        "for name, path in (('pack', ''), ('pack.nodes', 'nodes')):\n"
        "    package = types.ModuleType(name); sys.modules[name] = package\n"
        f"    package.__path__ = [{str(REPO)!r} + '/' + path]\n"
        "m = importlib.import_module('pack.nodes.enhance_nodes')\n"
        "assert 'spandrel' not in sys.modules and 'torch' not in sys.modules, 'heavy import'\n"
        "assert set(m.NODE_CLASS_MAPPINGS) == set(m.NODE_DISPLAY_NAME_MAPPINGS) == "
        "{'SadTalkerFaceRestoreModelLoader', 'SadTalkerFaceEnhance'}\n"
        "assert m.NODE_DISPLAY_NAME_MAPPINGS['SadTalkerFaceEnhance'] == 'SadTalker Face Enhance'\n"
        "types = m.SadTalkerFaceEnhance.INPUT_TYPES()\n"
        "assert set(types['required']) == {'images', 'face_restorer', 'strength', 'upscale_2x', 'batch_size'}\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(REPO))
    assert result.returncode == 0, result.stderr


def test_nodes_run_with_stubbed_comfy(monkeypatch, tmp_path, art_face, detector):
    if detector is None:
        pytest.skip("the dlib landmark backend is not available")
    import importlib

    from test_nodes import load_pack

    import comfy.model_management as mm
    import comfy.utils
    import folder_paths

    load_pack()
    nodes = importlib.import_module("comfyui_sadtalker_under_test.nodes.enhance_nodes")
    # the shared comfy stand-in (tests/comfy_stub), with an empty face-restoration folder
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "facerestore_models", ([str(tmp_path)], set()))
    comfy.utils.updates.clear()

    loader = nodes.SadTalkerFaceRestoreModelLoader()
    # the pack's own copy of FaceRestorerError (a ValueError), imported under the pack's name
    with pytest.raises(ValueError, match="facerestore_models"):
        loader.load("GFPGANv1.4.pth")

    image, _ = art_face
    images = torch.from_numpy(np.stack([image, np.full_like(image, 128)]).astype(np.float32) / 255.0)
    restorer = FakeRestorer()
    node = nodes.SadTalkerFaceEnhance()
    mm.free_memory_calls.clear()
    (out,) = node.enhance(images, restorer, strength=1.0, upscale_2x=False, batch_size=1, landmark_backend="dlib")
    assert out.shape == images.shape and out.dtype == torch.float32
    assert comfy.utils.updates == [(1, 2), (2, 2)]
    assert len(restorer.calls) == 1 and len(restorer.devices) == 2
    # room made the ComfyUI way before the restorer moved to the load device: weights x3 + 1 GiB
    assert mm.free_memory_calls == [(3 * 1001000 * 4 + (1 << 30), mm.get_torch_device())]

    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        node.enhance(images, FakeRestorer(), strength=1.0, upscale_2x=True, batch_size=1)
