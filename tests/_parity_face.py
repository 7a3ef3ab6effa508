"""Parity check for ``face_crop.json``: the reference crop box exactly, the quad within 0.5 px."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sadtalker_models.face.crop import crop_geometry


def check_face_crop(path: Path) -> None:
    """Every case of a ``face_crop.json`` (images in ``../media`` relative to its folder)."""
    cases = json.loads(path.read_text())["cases"]
    assert cases, f"{path} holds no cases"
    # The README puts images in ../media of the case folder; the shared set keeps them two up.
    media_dirs = [path.parent.parent / "media", path.parent.parent.parent / "media"]
    for name, case in cases.items():
        h0, w0 = case["image_hw"]
        for image in (d / case["image"] for d in media_dirs):
            if image.exists():  # the recorded size must be the image's real size
                assert Image.open(image).size == (w0, h0), f"{name}: {image} size differs from image_hw"
                break
        geom = crop_geometry(np.asarray(case["lm68"], dtype=np.float32), (w0, h0))
        assert list(geom.rsize) == list(case["rsize"]), f"{name}: rsize {geom.rsize} != {case['rsize']}"
        assert list(geom.crop) == list(case["crop"]), f"{name}: crop {geom.crop} != {case['crop']}"
        err = np.abs(np.asarray(geom.quad) - np.asarray(case["quad"])).max()
        assert err <= 0.5, f"{name}: quad off by {err:.4f} px (bound 0.5)"
