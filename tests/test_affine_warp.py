"""The enhancer's alignment and paste in torch (what runs on the restorer's GPU) against OpenCV:
``warp_affine`` against ``cv2.warpAffine``, and whole enhanced frames against the OpenCV path on
real faces, a small face in a 1080p picture (the shrink-first path) and a 2x up-scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from sadtalker_models import enhance
from sadtalker_models.enhance import enhance_frames
from sadtalker_models.face.affine_warp import invert_affine, warp_affine
from sadtalker_models.face.landmarks import make_landmark_detector
from sadtalker_models.video import read_image, read_video

from conftest import MEDIA


class Darken:
    """A stand-in restorer whose change is easy to see: the aligned face at half brightness."""

    architecture = "darken"
    device = torch.device("cpu")

    def restore(self, faces: torch.Tensor) -> torch.Tensor:
        return faces * 0.5


@pytest.mark.parametrize("border", [(0.52, 0.5, 0.53), None])
def test_warp_affine_equals_cv2(border):
    image = read_image(MEDIA / "art_0.png").astype(np.float32) / 255.0
    matrix = cv2.getRotationMatrix2D((300.0, 400.0), 17.0, 0.63)
    matrix[:, 2] += (-40.0, 25.0)
    mode = cv2.BORDER_REPLICATE if border is None else cv2.BORDER_CONSTANT
    expected = cv2.warpAffine(image, matrix, (512, 384), flags=cv2.INTER_LINEAR, borderMode=mode,
                              borderValue=border or 0)
    got = warp_affine(torch.from_numpy(image).permute(2, 0, 1)[None], [matrix], (512, 384), border)
    difference = np.abs(got[0].permute(1, 2, 0).numpy() - expected) * 255.0
    assert difference.max() < 0.05, difference.max()   # measured: 0.009 levels
    assert np.allclose(invert_affine(matrix), cv2.invertAffineTransform(matrix))


def _compare(frames: np.ndarray, upscale: int = 1, restorer: Darken | None = None) -> tuple[float, float]:
    detector = make_landmark_detector("dlib")
    results = {}
    for warp in ("cv2", "torch"):
        results[warp], stats = enhance_frames(frames, restorer or Darken(), detector, upscale=upscale, warp=warp)
        assert stats.enhanced_frames == len(frames), warp
    assert np.abs(results["cv2"].astype(int) - cv2.resize(frames[0], None, fx=upscale, fy=upscale,
                                                          interpolation=cv2.INTER_LANCZOS4)).mean() > 1.0
    difference = np.abs(results["cv2"].astype(int) - results["torch"].astype(int))
    return float(difference.mean()), float(difference.max())


def test_enhanced_frames_on_the_device_equal_opencv_on_a_real_video():
    frames, _ = read_video(MEDIA / "ref_pose_blink_3s.mp4", max_frames=3)
    mean, worst = _compare(np.stack(list(frames)))
    assert mean < 0.05 and worst <= 2, (mean, worst)


def test_a_small_face_in_a_1080p_picture_and_an_upscale():
    person = read_image(MEDIA / "full3.png")
    canvas = np.full((1080, 1920, 3), 96, np.uint8)
    small = cv2.resize(person, (person.shape[1] * 480 // person.shape[0], 480), interpolation=cv2.INTER_AREA)
    canvas[300:780, 700:700 + small.shape[1]] = small
    shrunk = []
    geometry = enhance._paste_geometry

    def spy(*args):
        found = geometry(*args)
        shrunk.append(found is not None and found[0] is not None)
        return found
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(enhance, "_paste_geometry", spy)
        mean, worst = _compare(canvas[None])
    assert shrunk == [True, True]                # the face under 0.75 of the template: shrunk first
    # torch's area shrink (adaptive average pooling) weighs a fractional ratio's edge pixels unlike
    # OpenCV's INTER_AREA: measured mean 0.004, max 7 levels, in a few pixels of the face
    assert mean < 0.02 and worst <= 8, (mean, worst)
    mean, worst = _compare(np.stack([read_image(MEDIA / "art_0.png")]), upscale=2)
    assert mean < 0.05 and worst <= 2, (mean, worst)


def test_auto_warps_on_the_restorers_device():
    from sadtalker_models.enhance import _warp_device

    class OnGpu(Darken):
        device = torch.device("cuda")

    assert _warp_device("auto", Darken()) is None                       # CPU: OpenCV, the faster there
    assert _warp_device("auto", OnGpu()) == torch.device("cuda")
    assert _warp_device("torch", Darken()) == torch.device("cpu")
    assert _warp_device("cv2", OnGpu()) is None
    with pytest.raises(ValueError, match="warp backend"):
        _warp_device("opencv", Darken())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the GPU path of the enhancer's warps)")
def test_on_cuda_the_warps_run_there_and_equal_opencv():
    class OnGpu(Darken):
        device = torch.device("cuda")
        seen: list[str] = []

        def restore(self, faces: torch.Tensor) -> torch.Tensor:
            self.seen.append(faces.device.type)
            return faces.to(self.device) * 0.5

    frames, _ = read_video(MEDIA / "ref_pose_blink_3s.mp4", max_frames=3)
    restorer = OnGpu()
    mean, worst = _compare(np.stack(list(frames)), restorer=restorer)
    assert restorer.seen == ["cpu", "cuda"]    # OpenCV's crops come from the CPU, torch's from the GPU
    assert mean < 0.05 and worst <= 2, (mean, worst)
