"""Issue 11 features through the ComfyUI nodes (over tests/comfy_stub): face selector, head-motion
scale and blink rate on Audio to Coefficients (and the curves the web widget draws), the Idle
Coefficients node rendered like any other coefficients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import MEDIA
from test_face_select import OFFSET, read_rgb
from test_nodes import comfy_base, image_tensor, model, nodes, pack, speech  # noqa: F401  (fixtures)


def two_faces() -> torch.Tensor:
    """The two-face picture of test_face_select as a ComfyUI IMAGE [1, H, W, 3]."""
    left, right = read_rgb("art_0.png")[:, 64:576], read_rgb("full3.png")
    padded = np.zeros((896, right.shape[1], 3), np.uint8)
    padded[: right.shape[0]] = right
    pair = np.concatenate([left, padded], axis=1)
    return torch.from_numpy(pair).float()[None] / 255.0


@pytest.fixture(scope="module")
def portrait(nodes, model):
    return nodes["SadTalkerFaceCrop"]().prepare(model, image_tensor(MEDIA / "art_0.png"), "crop", "256", "dlib")[0]


def test_face_node_selects_by_index_and_mask_and_draws_the_faces(nodes, model):
    picture = two_faces()
    node = nodes["SadTalkerFaceCrop"]()
    assert set(node.INPUT_TYPES()["optional"]) >= {"face_index", "mask"}
    face, crop, faces = node.prepare(model, picture, "crop", "256", "dlib", 1)
    assert face.data.face_index == 1 and len(face.data.faces) == 2
    assert faces.shape == picture.shape and crop.shape == (1, 256, 256, 3)
    green = (faces[0] == torch.tensor([0.0, 1.0, 0.0])).all(dim=-1)
    assert green[:, OFFSET:].sum() > 100 and green[:, :OFFSET].sum() == 0   # the right face is highlighted
    mask = torch.zeros(1, 896, 1024)
    mask[0, 300:480, 120:400] = 1.0                                          # over the left face
    face, _, faces = node.prepare(model, picture, "crop", "256", "dlib", 1, mask)
    assert face.data.face_index == 0
    assert node.prepare(model, picture, "crop", "256", "dlib", 1, mask[0])[0].data.face_index == 0   # [H, W] too
    with pytest.raises(ValueError, match=r"Face index 5 is out of range: 2 face\(s\) were found"):
        node.prepare(model, picture, "crop", "256", "dlib", 5)


def test_audio_node_head_motion_scale_and_blink_rate_reach_the_curves(nodes, model, portrait):
    node = nodes["SadTalkerAudioToCoefficients"]()
    assert set(node.INPUT_TYPES()["optional"]) >= {"head_motion_scale", "blinks_per_minute"}
    audio = speech(0.6)
    base = node.predict(model, portrait, audio, 0, 4, True, False)
    still = node.predict(model, portrait, audio, 0, 4, True, False, None, None, 0.0, 0.0)
    fast = node.predict(model, portrait, audio, 0, 4, True, False, None, None, 1.0, 120.0)
    curves = [out["ui"]["sadtalker_curves"][0] for out in (base, still, fast)]
    src_yaw = float(portrait.coeff_3dmm[0, 65]) * 180 / math.pi
    assert np.ptp(curves[0]["yaw"]) > 1e-3
    assert np.allclose(curves[1]["yaw"], src_yaw, atol=1e-3)                # scale 0: flat at the source yaw
    assert curves[1]["mouth"] == curves[0]["mouth"]                         # the lips are untouched
    closed = np.asarray(curves[2]["blink"]) > 0
    starts = int(closed[0]) + int((closed[1:] & ~closed[:-1]).sum())
    assert starts == pytest.approx(120 * 15 / 1500, abs=1)                  # ~1 blink in 0.6 s at 120/min


def test_idle_node_renders_with_silent_audio(nodes, model, portrait):
    node = nodes["SadTalkerIdleCoefficients"]()
    out = node.make(model, portrait, 2.0, 0, 3, True)
    coeffs = out["result"][0]
    assert coeffs.num_frames == 50 and coeffs.source == "idle"
    assert out["ui"]["sadtalker_curves"][0]["frames"] == 50 and max(out["ui"]["sadtalker_curves"][0]["blink"]) == 1.0
    again = node.make(model, portrait, 2.0, 0, 3, True)["result"][0]
    assert torch.equal(coeffs.coeffs, again.coeffs)
    one = node.make(model, portrait, 0.04, 0, 3, True)["result"][0]       # render a single frame (CPU time)
    images, audio, fps = nodes["SadTalkerRender"]().render(model, portrait, one, 1.0, 1, True)["result"]
    assert images.shape[0] == 1 and fps == 25.0
    assert audio["waveform"].abs().max() == 0 and audio["waveform"].shape[-1] == audio["sample_rate"] // 25
    with pytest.raises(ValueError, match="idle length must be between one frame"):
        node.make(model, portrait, 0.0, 0, 3, True)


def _write_wav(path, samples: np.ndarray, rate: int) -> None:
    """int16 PCM wav of ``samples`` (channels, n) float -1..1."""
    import wave

    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(samples.shape[0])
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((np.clip(samples.T, -1, 1) * 32767).astype("<i2").tobytes())


def test_audio_list_node_gives_one_clip_per_file_for_one_video_each(nodes, model, portrait, comfy_base):
    """A folder of speech clips in ComfyUI/input comes out as a list (OUTPUT_IS_LIST): ComfyUI then runs
    the nodes after it once per clip. Each item is the decoded file at its own rate and channels."""
    from sadtalker_models.video import load_audio

    node_cls = nodes["SadTalkerLoadAudioList"]
    assert node_cls.OUTPUT_IS_LIST == (True, True) and node_cls.RETURN_TYPES == ("AUDIO", "STRING")
    folder = comfy_base / "input" / "speeches"
    folder.mkdir(parents=True)
    speech_16k, rate = load_audio(MEDIA / "speech_en_16k_3s.wav")
    _write_wav(folder / "clip10.wav", speech_16k[:, : rate // 2], rate)                       # 0.5 s mono 16 kHz
    _write_wav(folder / "clip2.wav", np.stack([speech_16k[0], -speech_16k[0]])[:, :rate], rate)  # 1 s stereo
    (folder / "notes.txt").write_text("not audio")
    (comfy_base / "input" / "empty").mkdir()
    assert "speeches" in node_cls.INPUT_TYPES()["required"]["folder"][0]
    assert "empty" not in node_cls.INPUT_TYPES()["required"]["folder"][0]
    deep = comfy_base / "input" / "a" / "b" / "c" / "d"
    deep.mkdir(parents=True)
    _write_wav(deep.parent / "x.wav", speech_16k[:, :640], rate)
    _write_wav(deep / "y.wav", speech_16k[:, :640], rate)
    listed = node_cls.INPUT_TYPES()["required"]["folder"][0]
    assert "a/b/c" in listed and "a/b/c/d" not in listed                  # three levels down at most

    clips, names = node_cls().load("speeches")
    assert names == ["clip2", "clip10"]                                    # natural order, the text file left out
    assert [c["waveform"].shape for c in clips] == [(1, 2, rate), (1, 1, rate // 2)]
    assert all(c["sample_rate"] == rate for c in clips)
    assert torch.allclose(clips[1]["waveform"][0, 0], torch.from_numpy(speech_16k[0, : rate // 2]), atol=1 / 16384)
    # what ComfyUI does with a list: the next node once per item -> one set of coefficients per clip
    coefficient_node = nodes["SadTalkerAudioToCoefficients"]()
    frames = [coefficient_node.predict(model, portrait, clip, 0, 0, True, False)["result"][0].num_frames
              for clip in clips]
    assert frames == [25, 12]                                              # 16000 and 8000 samples: 640 a frame, whole frames

    before = node_cls.IS_CHANGED("speeches")
    _write_wav(folder / "clip3.wav", speech_16k[:, :rate], rate)
    assert node_cls.IS_CHANGED("speeches") != before                       # a new clip re-runs the node
    assert node_cls().load("speeches", "video/talk_")[1] == ["video/talk_clip2", "video/talk_clip3", "video/talk_clip10"]
    with pytest.raises(ValueError, match="holds no audio files"):
        node_cls().load("empty")
    with pytest.raises(ValueError, match="inside ComfyUI's input folder"):
        node_cls().load("../outside")
