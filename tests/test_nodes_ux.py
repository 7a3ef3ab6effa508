"""Node behaviour a ComfyUI user sees (issue 13): even frame sizes, outputs that survive a page reload,
defaults, tooltips, the coefficient files Load can see, the curves of ``still``, log messages.

Over the comfy stand-in (tests/comfy_stub), with the pack loaded as ComfyUI loads it. Frame geometry is
checked with a renderer that echoes the source crop (the real networks take seconds per frame here and
are covered by tests/test_nodes.py); everything after the networks (aspect resize, paste-back, evening,
the IMAGE output and the preview) is the real code.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import MEDIA
from test_nodes import comfy_base, image_tensor, model, nodes, pack, speech  # noqa: F401 - shared fixtures


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
    face, _ = nodes["SadTalkerFaceCrop"]().prepare(model, picture, mode, "256", "dlib")
    coeffs = pack.sadtalker_models.pipeline.Coefficients(coeffs=torch.zeros(2, 70), audio=speech(0.09))
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
