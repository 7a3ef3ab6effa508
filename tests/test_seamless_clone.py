"""The torch Poisson blend (sadtalker_models/face/seamless_clone.py) against cv2.seamlessClone.

Real pictures from tests/data/media, patches made from a shifted, recoloured and blurred crop of the
same picture (real content whose colours do not match the destination, like a rendered face), odd
box sizes and boxes touching the picture's border. OpenCV solves in float32 and truncates, so a value
within its float error of an integer lands on either side: the bound is 1 uint8 level (the spec
allows 2), and few pixels may differ at all.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import MEDIA, PARITY_CASES
from sadtalker_models.face import seamless_clone
from sadtalker_models.face.crop import crop_face
from sadtalker_models.face.paste import FramePaster, paste_back, paste_backend
from sadtalker_models.face.seamless_clone import SeamlessCloner, dst1_fft, dst1_matrix

PICTURES = ("art_0.png", "full3.png", "full_body_1.png")


def _picture(name: str) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(MEDIA / name))[:, :, ::-1])


def _patch(img: np.ndarray, box: tuple[int, int, int, int], shift: tuple[int, int], gain: float,
           offset: float) -> np.ndarray:
    """A box-sized crop of ``img`` moved by ``shift`` (kept inside), colour-changed and blurred."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    h0, w0 = img.shape[:2]
    sx = min(max(x1 + shift[0], 0), w0 - bw)
    sy = min(max(y1 + shift[1], 0), h0 - bh)
    crop = img[sy:sy + bh, sx:sx + bw].astype(np.float32)
    crop = crop * np.float32([gain, 1.0, 2.0 - gain]) + offset
    return np.ascontiguousarray(np.clip(cv2.GaussianBlur(crop, (3, 3), 0), 0, 255).astype(np.uint8))


def _boxes(h0: int, w0: int) -> list[tuple[int, int, int, int]]:
    """An inner box of odd width and height, one at the top-left corner, one at the bottom-right."""
    return [
        (w0 // 5, h0 // 4, w0 // 5 + (w0 // 3) | 1, h0 // 4 + (h0 // 3) | 1),
        (0, 0, w0 // 3 + 1, h0 // 4),
        (w0 - (w0 // 3) - 1, h0 - (h0 // 4) - 1, w0, h0),
    ]


def _cv2_clone(patch: np.ndarray, dest: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    mask = np.full(patch.shape[:2], 255, np.uint8)
    return cv2.seamlessClone(patch, dest, mask, ((x1 + x2) // 2, (y1 + y2) // 2), cv2.NORMAL_CLONE)


def _levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("name", PICTURES)
def test_equal_to_opencv_on_real_pictures(name):
    img = _picture(name)
    h0, w0 = img.shape[:2]
    for k, box in enumerate(_boxes(h0, w0)):
        x1, y1, x2, y2 = box
        patch = _patch(img, box, shift=(13 - 9 * k, -7 + 5 * k), gain=1.15 - 0.1 * k, offset=6.0 * k - 4.0)
        ref = _cv2_clone(patch, img, box)
        for method in ("matmul", "fft") if k == 1 else ("matmul",):         # the FFT is slow on CPUs
            ours = SeamlessCloner(img, box, "cpu", method=method)(patch[None])[0].numpy()
            diff = _levels(ours, ref)
            assert diff.max() <= 1, (name, box, method, diff.max())
            assert diff.mean() < 0.02, (name, box, method, diff.mean())
            # outside the box less its 2-pixel ring: the destination, exactly
            changed = np.zeros((h0, w0), bool)
            changed[y1 + 2:y2 - 2, x1 + 2:x2 - 2] = True
            assert np.array_equal(ours[~changed], img[~changed])
            assert _levels(ours[changed], img[changed]).mean() > 1          # and the patch did go in


def test_whole_picture_box_and_tiny_boxes():
    img = _picture("full3.png")
    h0, w0 = img.shape[:2]
    for box in [(0, 0, w0, h0), (5, 7, 10, 12), (5, 7, 13, 16), (40, 30, 51, 41)]:
        patch = _patch(img, box, shift=(9, 4), gain=1.1, offset=3.0)
        ref = _cv2_clone(patch, img, box)
        ours = SeamlessCloner(img, box, "cpu")(patch[None])[0].numpy()
        assert _levels(ours, ref).max() <= 1, box


def test_a_batch_equals_frame_by_frame_and_chunks_do_not_matter(monkeypatch):
    img = _picture("art_0.png")
    box = _boxes(*img.shape[:2])[0]
    patches = np.stack([_patch(img, box, (3 * i, -2 * i), 1.0 + 0.05 * i, 2.0 * i) for i in range(3)])
    cloner = SeamlessCloner(img, box, "cpu")
    batch = cloner(patches).numpy()
    single = np.stack([cloner(p[None])[0].numpy() for p in patches])
    assert _levels(batch, single).max() <= 1 and (batch != single).mean() < 1e-4
    for i, patch in enumerate(patches):
        assert _levels(batch[i], _cv2_clone(patch, img, box)).max() <= 1
    monkeypatch.setattr(seamless_clone, "CHUNK_BYTES", 1)               # one frame per chunk
    chunked = SeamlessCloner(img, box, "cpu")(torch.from_numpy(patches)).numpy()
    assert _levels(chunked, batch).max() <= 1 and (chunked != batch).mean() < 1e-4


def test_per_frame_destinations():
    """A background that changes: each frame is blended into its own destination."""
    img = _picture("full_body_1.png")
    box = _boxes(*img.shape[:2])[2]                       # touches the bottom-right corner
    dests = np.stack([img, img // 2, np.ascontiguousarray(img[::-1, ::-1])])
    patches = np.stack([_patch(img, box, (5, 5), 1.1, 0.0)] * 3)
    kept = dests.copy()
    out = SeamlessCloner(img, box, "cpu")(patches, torch.from_numpy(dests)).numpy()
    assert np.array_equal(dests, kept)                    # the caller's frames are not written into
    for frame, dest, patch in zip(out, dests, patches):
        assert _levels(frame, _cv2_clone(patch, dest, box)).max() <= 1


def test_dst_by_fft_equals_the_matrix():
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    np.testing.assert_allclose(dst1_fft(x, -1), x @ dst1_matrix(5, torch.float64), atol=1e-12)
    np.testing.assert_allclose(dst1_fft(x, -2), dst1_matrix(7, torch.float64) @ x, atol=1e-12)
    s = dst1_matrix(9, torch.float64)
    np.testing.assert_allclose(s @ s, 5.0 * torch.eye(9, dtype=torch.float64), atol=1e-12)   # (n + 1) / 2


def test_errors_are_readable():
    img = _picture("full3.png")
    with pytest.raises(ValueError, match="not inside"):
        SeamlessCloner(img, (-1, 0, 10, 10))
    with pytest.raises(ValueError, match="too small"):
        SeamlessCloner(img, (0, 0, 2, 10))
    with pytest.raises(ValueError, match="Unknown method"):
        SeamlessCloner(img, (0, 0, 10, 10), method="sor")
    cloner = SeamlessCloner(img, (0, 0, 10, 12))
    with pytest.raises(ValueError, match=r"\(B, 12, 10, 3\) uint8"):
        cloner(np.zeros((1, 10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        cloner(np.zeros((1, 12, 10, 3), np.float32))
    with pytest.raises(ValueError, match="destinations must be"):
        cloner(np.zeros((2, 12, 10, 3), np.uint8), np.zeros((1,) + img.shape, np.uint8))


def test_frame_paster_torch_equals_opencv_and_paste_back():
    """The batched paste of the pipeline: frames resized to a real full-mode box (full3's landmarks
    in face_crop.json), blended with torch (auto on the CPU) and with OpenCV, and paste_back."""
    case = json.loads((PARITY_CASES / "face_crop.json").read_text())["cases"]["full3"]
    img = _picture(case["image"])
    _, info = crop_face(img, np.asarray(case["lm68"], np.float32), "full", 256)
    frames = np.stack([cv2.resize(_patch(img, info.paste_box, (4 * i, 3), 1.1, 2.0 * i), (256, 256),
                                  interpolation=cv2.INTER_AREA) for i in range(2)])
    assert paste_backend("cpu") == paste_backend(None) == "torch" and paste_backend("cuda") == "torch"
    assert paste_backend("cuda", "cv2") == "cv2"
    torch_out = FramePaster(img, info)(frames)
    cv2_out = FramePaster(img, info, backend="cv2")(frames)
    assert np.array_equal(cv2_out, paste_back(frames, img, info))
    assert _levels(torch_out, cv2_out).max() <= 1
    dests = np.stack([img // 2, img])
    with_bg = FramePaster(img, info)(frames, dests)
    assert _levels(with_bg, FramePaster(img, info, backend="cv2")(frames, dests)).max() <= 1
    with pytest.raises(ValueError, match="destinations must be"):
        FramePaster(img, info)(frames, dests[:1])
    with pytest.raises(ValueError, match="Unknown paste backend"):
        FramePaster(img, info, backend="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_opencv():
    img = _picture("full_body_1.png")
    for box in _boxes(*img.shape[:2]):
        patches = np.stack([_patch(img, box, (7, -5), 1.1, 4.0), _patch(img, box, (-3, 2), 0.9, -6.0)])
        dests = torch.from_numpy(np.stack([img, img // 2])).cuda()
        for method in ("fft", "matmul"):
            cloner = SeamlessCloner(img, box, "cuda", method=method)
            out = cloner(torch.from_numpy(patches).cuda()).cpu().numpy()
            bg = cloner(patches, dests).cpu().numpy()
            for i, patch in enumerate(patches):
                assert _levels(out[i], _cv2_clone(patch, img, box)).max() <= 1, (box, method)
                assert _levels(bg[i], _cv2_clone(patch, dests[i].cpu().numpy(), box)).max() <= 1, (box, method)
