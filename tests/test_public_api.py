"""sadtalker_models/__init__.py: the stated public API resolves, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import sadtalker_models

REPO = Path(__file__).resolve().parent.parent


def test_package_import_loads_no_torch_or_numpy():
    code = ("import sys, sadtalker_models, sadtalker_models.options as o; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules), o.FPS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split() == ["[]", "25"]


def test_every_public_name_resolves_to_its_module():
    from sadtalker_models import coefficient_files, pipeline, render_video

    assert sadtalker_models.load_models is pipeline.load_models
    assert sadtalker_models.save_coefficients is coefficient_files.save_coefficients
    assert sadtalker_models.render_to_mp4 is render_video.render_to_mp4
    for name in sadtalker_models.__all__:
        assert getattr(sadtalker_models, name) is not None, name
    assert set(sadtalker_models.__all__) <= set(dir(sadtalker_models))
    with pytest.raises(AttributeError, match="no attribute 'render_all'"):
        sadtalker_models.render_all  # noqa: B018 - deleted, not public
