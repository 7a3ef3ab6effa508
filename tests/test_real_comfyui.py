"""The example workflows in a real ComfyUI (slow; only when ``COMFYUI_PATH`` is set).

    COMFYUI_PATH=/path/to/ComfyUI [COMFYUI_PYTHON=/path/to/its/python] .venv/bin/python -m pytest tests/test_real_comfyui.py

Runs ``scripts/run_comfyui_workflows.py`` with the session's stand-in weights.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMFYUI = os.environ.get("COMFYUI_PATH")

pytestmark = pytest.mark.skipif(
    not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run the "
                        "example workflows in a real ComfyUI")


def test_example_workflows_run_in_real_comfyui(weights_dir):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_comfyui_workflows.py"), COMFYUI, "--python", python,
         "--weights-dir", str(weights_dir)],
        capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-8000:] + proc.stdout[-4000:]
    assert "all 3 workflows passed" in proc.stderr + proc.stdout
