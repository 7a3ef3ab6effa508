"""Long audio in the coefficient stage: mel windows made on request (``audio.MelWindows``) and
ExpNet/PoseVAE fed chunk by chunk give exactly the whole-sequence results, with memory bounded by
one chunk (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import PARITY_CASES, ParityCase
from sadtalker_models import audio
from sadtalker_models import coefficients as C
from sadtalker_models.networks.expnet import ExpNet
from sadtalker_models.networks.pose_vae import PoseVAE


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise under a syllable-rate envelope with a drifting pitch: mel windows that vary frame to frame."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000.0
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    tone = np.sin(2 * np.pi * (150 + 50 * np.sin(2 * np.pi * 0.3 * t)) * t)
    return ((0.2 * tone + 0.05 * rng.standard_normal(t.shape)) * envelope).astype(np.float32)


def _case(name: str) -> ParityCase:
    """A parity case of the case set in use; its metadata says which stand-in weights made it."""
    path = PARITY_CASES / f"{name}.safetensors"
    if not path.exists():
        pytest.skip(f"parity case {path.name} is not in {PARITY_CASES}")
    return ParityCase(path)


@pytest.mark.parametrize("source", ["parity", "synthetic_40s"])
def test_lazy_windows_equal_whole_windows(source):
    wav = _case("audio_features").tensors["wav"].numpy() if source == "parity" else _speechlike(40.0)
    whole = audio.audio_to_mel_windows(wav, 16000)
    lazy = audio.lazy_mel_windows(wav, 16000)
    assert len(lazy) == whole.shape[0]
    t = len(lazy)
    rng = np.random.default_rng(1)
    ranges = [(0, t), (0, 1), (t - 1, t), (1, 33)] + [tuple(sorted(rng.integers(0, t + 1, 2))) for _ in range(20)]
    for a, b in ranges:
        if b <= a:
            continue
        assert torch.equal(lazy.get(a, b), whole[a:b]), f"frames {a}..{b} of {t}"


def test_lazy_windows_keep_only_the_waveform():
    wav = _speechlike(4.0)
    lazy = audio.MelWindows(wav)
    assert lazy.num_frames == 100 and lazy.wav.shape == (100 * 640,)
    with pytest.raises(ValueError, match="too short"):
        audio.lazy_mel_windows(np.zeros(639, dtype=np.float32), 16000)


def test_chunked_coefficients_equal_whole_on_parity_case(parity_models):
    """The parity speech through MelWindows: identical to the whole-window run, and within the
    parity tolerance of the reference's coefficients (same blink ratio and pose noise)."""
    case = _case("audio_to_coeff")
    features, a2c = _case("audio_features").tensors, case.tensors
    nets = parity_models(case.seed).nets   # the weights the case was made with, from its metadata
    style = int(a2c["pose_style"].reshape(-1)[0])
    kwargs = dict(blink_ratio=a2c["blink_ratio"], z=a2c["z"])
    source = a2c["ref"][:, 0]
    whole = C.audio_to_coefficients(nets.expnet, nets.posevae, audio.audio_to_mel_windows(features["wav"], 16000),
                                    source, style, **kwargs)
    chunked = C.audio_to_coefficients(nets.expnet, nets.posevae, audio.lazy_mel_windows(features["wav"], 16000),
                                      source, style, **kwargs)
    for name in ("exp", "pose_raw", "pose_smooth", "coeffs"):
        assert torch.equal(getattr(chunked, name), getattr(whole, name)), name
        assert torch.allclose(getattr(chunked, name), a2c[name], atol=1e-4, rtol=1e-4), name


def test_chunked_coefficients_equal_whole_on_longer_input_with_bounded_windows(monkeypatch):
    """133 frames (four full pose chunks in one call, a remainder, 14 ExpNet chunks): identical
    results, and no call ever makes more windows than one PoseVAE call needs, whatever the length."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        expnet, posevae = ExpNet().eval(), PoseVAE().eval()
    wav = _speechlike(133 * 0.04 + 0.01, seed=2)
    whole = C.audio_to_coefficients(expnet, posevae, audio.audio_to_mel_windows(wav, 16000), torch.zeros(1, 73), 5,
                                    generator=11)
    sizes = []
    real_get = audio.MelWindows.get

    def spy(self, start, stop):
        out = real_get(self, start, stop)
        sizes.append(out.shape[0])
        return out

    monkeypatch.setattr(audio.MelWindows, "get", spy)
    chunked = C.audio_to_coefficients(expnet, posevae, audio.lazy_mel_windows(wav, 16000), torch.zeros(1, 73), 5,
                                      generator=11)
    assert whole.coeffs.shape == (133, 70)
    for name in ("exp", "pose_raw", "coeffs", "ratio", "z"):
        assert torch.equal(getattr(chunked, name), getattr(whole, name)), name
    assert max(sizes) == C.POSE_CHUNKS_PER_CALL * C.POSE_SEQ_LEN
    assert sum(sizes) >= 2 * 133 - 1  # every frame was fed to both networks
