"""FaceRenderer behaviour: batch-size invariance, progress and cancellation, devices and dtypes,
fusion and channels-last layout (same frames, unchanged state dict), the merged path's building
blocks, and agreement with the networks' own forward passes.

Runs at S = 128 with a few frames on the seed-0 stand-in weights (loaded through the real
loader). The networks are copied so that fusing them never touches the session's shared models.
"""

from __future__ import annotations

import copy

import pytest
import torch

from sadtalker_models.render_data import RenderInputs
from sadtalker_models.networks.render_blocks import avg_pool_hw
from sadtalker_models.networks.spade_generator import channel_stats, modulate_, relu_, upsampled_conv3x3
from sadtalker_models.precision import cpu_runs_natively
from sadtalker_models.renderer import FaceRenderer, rotation_matrix, transform_keypoints

SIZE = 128
FRAMES = 5


def all_frames(renderer: FaceRenderer, *args, **kwargs) -> torch.Tensor:
    """Every frame of ``renderer.iter_frames(*args, **kwargs)`` as one ``(T, 3, S, S)`` tensor."""
    return torch.cat(list(renderer.iter_frames(*args, **kwargs)))


def _windows(coeffs: torch.Tensor) -> torch.Tensor:
    """(T, C) -> (T, C, 27) windows of radius 13 with clamped indices."""
    t = coeffs.shape[0]
    idx = (torch.arange(t)[:, None] + torch.arange(-13, 14)[None, :]).clamp(0, t - 1)
    return coeffs[idx].transpose(1, 2).contiguous()


@pytest.fixture(scope="module")
def nets(parity_models):
    models = parity_models(0)
    kp = copy.deepcopy(models.nets.kp_detector)
    gen = copy.deepcopy(models.nets.generator)
    return kp, gen, models.mapping("crop")


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, RenderInputs]:
    g = torch.Generator().manual_seed(1234)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    image = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    image = (image + 0.05 * torch.rand(1, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    source = 0.3 * torch.randn(1, 70, generator=g)
    coeffs = source + 0.2 * torch.randn(FRAMES, 70, generator=g)
    yaw = torch.linspace(0.0, 15.0, FRAMES)
    return image, RenderInputs(
        source_semantics=source.unsqueeze(-1).repeat(1, 1, 27),
        target_semantics=_windows(coeffs),
        yaw=yaw,
    )


@pytest.fixture(scope="module")
def fused(nets):
    kp, gen, mapping = nets
    return FaceRenderer(kp, gen, mapping).optimize(fuse=True)


@pytest.fixture(scope="module")
def baseline(fused, inputs):
    """Fused frames with batch size 2 and the progress calls seen."""
    image, inp = inputs
    state = fused.encode_source(image, inp.source_semantics)
    calls: list[tuple[int, int]] = []
    frames = all_frames(fused, state, inp, batch_size=2, progress=lambda d, n: calls.append((d, n)))
    return state, frames, calls


def test_output_shape_dtype_range_and_progress(baseline):
    _, frames, calls = baseline
    assert frames.shape == (FRAMES, 3, SIZE, SIZE)
    assert frames.dtype == torch.float32 and frames.device.type == "cpu"
    assert 0.0 <= frames.min().item() and frames.max().item() <= 1.0
    assert calls == [(2, FRAMES), (4, FRAMES), (5, FRAMES)]


@pytest.mark.parametrize("batch_size", [1, 5])
def test_frames_do_not_depend_on_batch_size(fused, inputs, baseline, batch_size):
    _, inp = inputs
    state, want, _ = baseline
    got = all_frames(fused, state, inp, batch_size=batch_size)
    assert (got - want).abs().max().item() <= 1e-5


def test_iter_frames_yields_batches_off_device(fused, inputs, baseline):
    _, inp = inputs
    state, want, _ = baseline
    sizes = []
    for batch in fused.iter_frames(state, inp, batch_size=1, out_device="cpu"):
        assert batch.device.type == "cpu" and batch.dtype == torch.float32
        sizes.append(batch.shape[0])
        break  # a consumer may stop early; nothing is left to clean up
    assert sizes == [1]
    assert (batch - want[:1]).abs().max().item() <= 1e-5


def test_progress_exception_cancels(fused, inputs, baseline):
    _, inp = inputs
    state, _, _ = baseline
    seen = []

    class Cancelled(Exception):
        pass

    def progress(done: int, total: int) -> None:
        seen.append(done)
        raise Cancelled

    with pytest.raises(Cancelled):
        all_frames(fused, state, inp, batch_size=1, progress=progress)
    assert seen == [1]


def test_fused_matches_unfused_and_module_forward(nets, inputs, baseline):
    """Unfused renderer and the generator's own forward (reference batching) give the same frames."""
    kp, gen, mapping = nets
    image, inp = inputs
    _, want, _ = baseline
    plain_kp, plain_gen = copy.deepcopy(kp), copy.deepcopy(gen)
    plain = FaceRenderer(plain_kp, plain_gen, mapping).optimize(fuse=False)
    state = plain.encode_source(image, inp.source_semantics)
    got = all_frames(plain, state, inp, batch_size=FRAMES)
    assert (got - want).abs().max().item() <= 1e-4

    kp_driving = plain.driving_keypoints(state, inp.target_semantics[:2], yaw=inp.yaw[:2])
    with torch.inference_mode():
        kp_canonical = plain_kp(image)
        assert torch.allclose(kp_canonical, state.kp_canonical, atol=1e-6)
        frames = plain_gen(image.repeat(2, 1, 1, 1), kp_driving, state.kp_source.repeat(2, 1, 1))
    assert (frames - want[:2]).abs().max().item() <= 1e-4


def test_fusion_keeps_state_dict(nets):
    kp, gen, _ = nets
    assert gen.is_fused
    fresh = type(gen)()
    assert gen.state_dict().keys() == fresh.state_dict().keys()
    before = {k: v.clone() for k, v in gen.decoder.up_0.state_dict().items()}
    gen.unfuse()
    assert not gen.is_fused
    gen.fuse_for_inference()
    after = gen.decoder.up_0.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_upsampled_conv_matches_conv_on_upsampled_input(factor):
    g = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 8, 5, 6, generator=g)
    weight = torch.randn(4, 8, 3, 3, generator=g)
    bias = torch.randn(4, generator=g)
    size = (5 * factor, 6 * factor)
    want = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x, size=size, mode="nearest"),
                                      weight, bias, padding=1)
    assert torch.allclose(upsampled_conv3x3(x, weight, bias, size), want, atol=1e-5)


@pytest.mark.parametrize("block_name", ["G_middle_0", "up_0", "up_1"])
def test_fused_block_matches_reference_block(nets, block_name):
    _, gen, _ = nets
    block = copy.deepcopy(getattr(gen.decoder, block_name))
    fin = block.conv_0.weight_orig.shape[1]
    g = torch.Generator().manual_seed(7)
    seg = torch.randn(2, 256, 4, 4, generator=g)
    scale = {"G_middle_0": 1, "up_0": 2, "up_1": 4}[block_name]
    x = torch.randn(2, fin, 4 * scale, 4 * scale, generator=g)
    with torch.inference_mode():
        block.unfuse()
        want = block(x, seg)
        block.fuse_for_inference()
        got = block(x, seg)
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.skipif(not cpu_runs_natively(torch.bfloat16),
                    reason="this CPU has no native bf16 (oneDNN): a bf16 render would take ~200x the fp32 time; "
                           "the precision policy itself is tested in test_precision.py")
def test_reduced_precision_renderer(nets, inputs, baseline):
    """A bfloat16 renderer casts its inputs and still returns float32 frames in 0..1."""
    kp, gen, mapping = nets
    image, inp = inputs
    _, want, _ = baseline
    low = FaceRenderer(copy.deepcopy(kp).to(torch.bfloat16), copy.deepcopy(gen).to(torch.bfloat16), mapping)
    low.optimize()
    assert low.dtype == torch.bfloat16
    state = low.encode_source(image, inp.source_semantics)
    assert state.kp_source.dtype == torch.float32
    frames = all_frames(low, state, inp.target_semantics[:1], batch_size=1, out_device=None)
    assert frames.dtype == torch.float32 and frames.shape == (1, 3, SIZE, SIZE)
    assert (frames - want[:1]).abs().mean().item() < 0.02


def test_source_validation(fused, inputs):
    image, inp = inputs
    with pytest.raises(ValueError, match="multiple of 128"):
        fused.encode_source(image[..., :100, :100], inp.source_semantics)
    with pytest.raises(ValueError, match=r"\(1, 3, S, S\)"):
        fused.encode_source(image.repeat(2, 1, 1, 1), inp.source_semantics)


def test_camera_override_replaces_predicted_angles():
    """An override replaces the predicted angle; identity pose leaves keypoints at K + (0, t_y, 0) + exp."""
    k = torch.randn(1, 15, 3)
    logits = torch.randn(3, 66)
    motion = {"yaw": logits, "pitch": logits, "roll": logits,
              "t": torch.tensor([[5.0, 0.25, -3.0]]).repeat(3, 1), "exp": torch.zeros(3, 45)}
    zero = torch.zeros(3)
    out = transform_keypoints(k, motion, yaw=zero, pitch=zero, roll=zero)
    expected = k + torch.tensor([0.0, 0.25, 0.0])
    assert torch.allclose(out, expected.expand(3, -1, -1), atol=1e-6)
    rot = rotation_matrix(torch.tensor([90.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    angle = torch.tensor(90.0 / 180 * 3.14)
    assert torch.allclose(rot[0, 0, 2], torch.sin(angle))


def test_channels_last_matches_nchw(nets, inputs, baseline):
    """The channels-last layout (the CPU default) gives the NCHW frames; switching keeps the state dict."""
    kp, gen, mapping = nets
    image, inp = inputs
    _, want, _ = baseline
    gen = copy.deepcopy(gen)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    for channels_last in (True, False):
        renderer = FaceRenderer(kp, gen, mapping).optimize(channels_last=channels_last)
        assert gen.channels_last == channels_last
        assert gen.dense_motion_network.channels_last == channels_last
        state = renderer.encode_source(image, inp.source_semantics)
        first = RenderInputs(source_semantics=inp.source_semantics, target_semantics=inp.target_semantics[:2],
                             yaw=inp.yaw[:2])
        got = all_frames(renderer, state, first, batch_size=2)
        assert got.is_contiguous()
        assert (got - want[:2]).abs().max().item() <= 1e-4, channels_last
    after = gen.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_stats_match_var_mean(dtype, channels_last):
    g = torch.Generator().manual_seed(3)
    x = (3 * torch.randn(3, 5, 6, 7, generator=g) + 2).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mean, var = channel_stats(x)
    want_var, want_mean = torch.var_mean(x.double(), dim=(2, 3), correction=0)
    assert mean.dtype == var.dtype == torch.float32 and mean.shape == (3, 5)
    assert torch.allclose(mean.double(), want_mean, atol=1e-5)
    assert torch.allclose(var.double(), want_var, rtol=1e-5)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_modulate_broadcasts_the_upsampling(factor):
    g = torch.Generator().manual_seed(factor)
    x_hat = torch.randn(2, 6, 3, 4, generator=g)
    gamma1 = torch.randn(2, 12, 3 * factor, 4 * factor, generator=g).contiguous(memory_format=torch.channels_last)
    beta = torch.randn(2, 12, 3 * factor, 4 * factor, generator=g).contiguous(memory_format=torch.channels_last)
    x_up = torch.nn.functional.interpolate(x_hat, scale_factor=float(factor), mode="nearest")
    # channel slices of channels-last tensors, as the merged path may pass them
    want = beta[:, 6:] + x_up * gamma1[:, :6]
    got = modulate_(beta[:, 6:], x_hat.contiguous(memory_format=torch.channels_last), gamma1[:, :6], factor)
    assert torch.allclose(got, want, atol=1e-6)
    assert got.data_ptr() == beta[:, 6:].data_ptr()  # in place


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_relu_is_bit_identical(dtype):
    x = torch.tensor([-3.0, -0.0, 0.0, 1e-30, -1e-30, 2.5, float("inf"), float("-inf")]).to(dtype)
    x = torch.cat([x, torch.randn(1000).to(dtype)])
    assert torch.equal(relu_(x.clone()), torch.relu(x))


def test_upsampled_conv_keeps_channels_last():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 8, 5, 6, generator=g)
    weight, bias = torch.randn(4, 8, 3, 3, generator=g), torch.randn(4, generator=g)
    want = upsampled_conv3x3(x, weight, bias, (20, 24), relu=True)
    got = upsampled_conv3x3(x.contiguous(memory_format=torch.channels_last),
                            weight.contiguous(memory_format=torch.channels_last), bias, (20, 24), relu=True)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, want, atol=1e-5)


def test_avg_pool_and_occlusion_in_channels_last_3d(nets):
    _, gen, _ = nets
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 6, 4, 8, 10, generator=g)
    x3 = x.contiguous(memory_format=torch.channels_last_3d)
    pooled = avg_pool_hw(x3)
    assert pooled.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(pooled, torch.nn.functional.avg_pool3d(x, (1, 2, 2)), atol=1e-6)
    dense = gen.dense_motion_network
    prediction = torch.randn(1, 112, 16, 8, 8, generator=g)
    with torch.inference_mode():
        want = dense.occlusion_logits(prediction)
        got = dense.occlusion_logits(prediction.contiguous(memory_format=torch.channels_last_3d))
    assert want.shape == got.shape == (1, 1, 8, 8)
    assert torch.allclose(got, want, atol=1e-4)


def test_up_block_merged_path_matches_reference_on_upsampled_input(nets):
    """`forward_upsampled(x, seg, 2)` equals the reference block on the 2x nearest-up-sampled x."""
    _, gen, _ = nets
    block = copy.deepcopy(gen.decoder.up_0)
    g = torch.Generator().manual_seed(8)
    seg = torch.randn(2, 256, 4, 4, generator=g)
    x = torch.randn(2, 512, 4, 4, generator=g)
    with torch.inference_mode():
        block.unfuse()
        want = block(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        got = block.forward_upsampled(x, seg, 2)
    assert (got - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item())


def test_spectral_sigma_follows_the_weight(nets):
    _, gen, _ = nets
    conv = copy.deepcopy(gen.decoder.G_middle_0.conv_0)
    first = conv.sigma()
    assert conv.sigma() is first  # kept while nothing changes
    state = {k: v.clone() for k, v in conv.state_dict().items()}
    state["weight_orig"] *= 2
    conv.load_state_dict(state)  # an in-place write
    assert torch.allclose(conv.sigma(), 2 * first)
    conv.to(torch.bfloat16)
    assert torch.allclose(conv.sigma(), 2 * first, rtol=1e-2)
