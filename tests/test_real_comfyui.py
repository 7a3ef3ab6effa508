"""The example workflows in a real ComfyUI (slow; only when ``COMFYUI_PATH`` is set).

    COMFYUI_PATH=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/its/python \\
    [COMFYUI_EXTRA_NODES=/path/to/ComfyUI-VideoHelperSuite] [COMFYUI_QUICK=1] \\
    .venv/bin/python -m pytest tests/test_real_comfyui.py

The examples run as loaded (3 s of speech each: about an hour on a 2-core CPU); COMFYUI_QUICK=1
runs them on short inputs instead (minutes).

Runs ``scripts/run_comfyui_workflows.py`` with the session's stand-in weights and checks its verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMFYUI = os.environ.get("COMFYUI_PATH")

pytestmark = pytest.mark.skipif(
    not COMFYUI, reason="set COMFYUI_PATH to a ComfyUI checkout (and COMFYUI_PYTHON to its Python) to run the "
                        "example workflows in a real ComfyUI")


@pytest.mark.timeout(4 * 3600)
def test_workflows_run_in_real_comfyui(weights_dir):
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    extra = [arg for path in os.environ.get("COMFYUI_EXTRA_NODES", "").split(os.pathsep) if path
             for arg in ("--extra-node", path)]
    quick = ["--quick"] if os.environ.get("COMFYUI_QUICK") else []
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_comfyui_workflows.py"), COMFYUI, "--python", python,
         "--weights-dir", str(weights_dir), *extra, *quick],
        capture_output=True, text=True, timeout=4 * 3600)
    output = proc.stderr + proc.stdout
    assert proc.returncode == 0, output[-12000:]
    last = output.strip().splitlines()[-1]
    assert re.search(r"all \d+ cases passed$", last), last
    for path in sorted((REPO / "workflows").glob("*.json")):   # every example, as loaded unless COMFYUI_QUICK
        assert f"PASSED {path.name} {'on short inputs' if quick else 'as loaded'}" in output
    assert "PASSED list of 2 pictures (Load Image Dataset from Folder) -> one video each" in output
    assert "PASSED odd 451x675 full -> CreateVideo -> SaveVideo" in output
    assert "PASSED odd 221x333 resize -> CreateVideo -> SaveVideo" in output
    assert re.search(r"live previews from node \d+: [1-9]\d* \([1-9]\d* JPEG\)", output)
