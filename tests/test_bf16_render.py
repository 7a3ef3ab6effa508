"""bf16 rendering on a CPU that runs it natively (AVX-512-BF16 / AMX): frames against fp32.

The networks are loaded the way users load them (``pipeline.load_models(precision="bf16")``: the
generator in bf16, channels-last, merged SPADE path) and render the first frame of the 128 px
camera parity case; the reference is the same renderer in float32. The error is counted in uint8
levels (frames * 255, rounded), the unit of the video.

Measured with the seed-0 stand-in weights (Xeon, Sapphire Rapids class, AMX; torch 2.14): 128 px,
mean 2.4 levels, max 16-17 (first frame; 2.4 / 16 over all 8 frames of the case); at 256 px
(``benchmarks/bench_render.py``, 4 frames) mean 2.9, max 22. The bounds below leave room for other
torch/oneDNN versions.

On a CPU without native bf16 the renderer falls back to float32 (``test_precision.py``), so there
is nothing to compare and the test is skipped.
"""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import CHECKPOINT_NAME, PARITY_CASES, ParityCase
from sadtalker_models import pipeline
from sadtalker_models.precision import cpu_runs_natively
from sadtalker_models.render_data import RenderInputs
from sadtalker_models.renderer import FaceRenderer

logger = logging.getLogger(__name__)

CASE = "facerender_crop128_camera"
FRAMES = 1
MEAN_LEVELS = 4.0   # bound on the mean absolute difference, uint8 levels
MAX_LEVELS = 40     # bound on the largest difference of any pixel and channel, uint8 levels

pytestmark = pytest.mark.skipif(
    not cpu_runs_natively(torch.bfloat16),
    reason="this CPU has no native bf16 (oneDNN without AVX-512-BF16/AMX): the renderer falls back to "
           "fp32 there (test_precision.py) and a bf16 render would take ~200x the fp32 time")


def _render(renderer: FaceRenderer, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The first FRAMES frame(s) of the case, `(FRAMES, 3, S, S)` float32 in 0..1."""
    inputs = RenderInputs(
        source_semantics=t["source_semantics"],
        target_semantics=t["target_semantics"][:FRAMES],
        **{k: (t[f"{k}_c_seq"][:FRAMES] if f"{k}_c_seq" in t else None) for k in ("yaw", "pitch", "roll")},
    )
    state = renderer.encode_source(t["source_image"], inputs.source_semantics)
    return torch.cat(list(renderer.iter_frames(state, inputs, batch_size=FRAMES)))


def test_bf16_frames_stay_close_to_fp32(stand_in_weights):
    case = ParityCase(PARITY_CASES / f"{CASE}.safetensors")
    if not case.path.exists():
        pytest.skip(f"parity case {case.path} missing")
    folder = stand_in_weights(case.seed)
    preprocess = case.meta["preprocess"]
    fp32 = pipeline.load_models(folder / CHECKPOINT_NAME, device="cpu", precision="fp32", cache=None)
    bf16 = pipeline.load_models(folder / CHECKPOINT_NAME, device="cpu", precision="bf16", cache=None)
    assert bf16.dtype == torch.bfloat16
    low = bf16.renderer(preprocess)
    assert low.dtype == torch.bfloat16 and low.generator.channels_last

    want = _render(fp32.renderer(preprocess), case.tensors)
    got = _render(low, case.tensors)
    assert got.dtype == torch.float32 and got.shape == want.shape

    levels = ((got * 255).round() - (want * 255).round()).abs()
    mean, worst = levels.mean().item(), levels.max().item()
    logger.info("bf16 vs fp32, %s, %d frames: mean %.2f, max %.0f uint8 levels", CASE, FRAMES, mean, worst)
    assert mean <= MEAN_LEVELS, f"bf16 frames differ from fp32 by {mean:.2f} levels on average (bound {MEAN_LEVELS})"
    assert worst <= MAX_LEVELS, f"a bf16 pixel differs from fp32 by {worst:.0f} levels (bound {MAX_LEVELS})"
