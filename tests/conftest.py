"""Shared test fixtures: stand-in checkpoints in the official layout, and parity case discovery.

Everything the tests read lives in this repository:

* ``tests/data/cases``: the parity cases (the reference implementation's outputs for fixed inputs,
  see ``tests/data/README.md``); ``SADTALKER_PARITY_DIR`` points the parity suite at another case
  set of the same format;
* ``tests/data/media``: real faces, speech and a short video (sources and licences in
  ``tests/data/README.md``);
* the stand-in weights are written by :mod:`sadtalker_models.stand_in_weights` from the manifests
  shipped with the package, as the files users download (``SadTalker_V0.0.2_256.safetensors`` and
  the two ``mapping_*.pth.tar``), and always loaded back through the real loader
  (:mod:`sadtalker_models.checkpoints`).

Weight files are written once per seed into a cache folder (``$SADTALKER_TEST_CACHE``, default
``.pytest_cache/sadtalker-weights`` in the repo) whose name carries a digest of the manifests and
of the writer, so a changed manifest or rule gives new files. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import pytest
import torch

from sadtalker_models import stand_in_weights as weights_writer

# A suite started in the background of a non-interactive shell (nohup, `cmd &`) inherits SIGINT
# ignored, and so would every CLI it starts; the Ctrl-C tests need it delivered, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
PARITY_CASES = Path(os.environ.get("SADTALKER_PARITY_DIR", DATA / "cases"))
# The pack copies its example inputs into ComfyUI/input when it loads; the node tests build their own
# input folders, so the copy is off here (tests/test_example_inputs.py turns it on to test it).
os.environ["SADTALKER_NO_EXAMPLE_INPUTS"] = "1"
MEDIA = DATA / "media"
MAPPING_FILES = tuple(weights_writer.MAPPING_EPOCHS)
CHECKPOINT_NAME = "SadTalker_V0.0.2_256.safetensors"
SADTALKER_MANIFEST = weights_writer.MANIFESTS / weights_writer.SADTALKER_MANIFEST


def _cache_root() -> Path:
    root = Path(os.environ.get("SADTALKER_TEST_CACHE", REPO / ".pytest_cache" / "sadtalker-weights"))
    digest = hashlib.sha256()
    for path in sorted(weights_writer.MANIFESTS.glob("*.json")) + [Path(weights_writer.__file__)]:
        digest.update(path.read_bytes())
    return root / digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def stand_in_weights() -> Callable[[int], Path]:
    """``stand_in_weights(seed)`` -> folder holding the SadTalker 256 file and both mapping files."""
    root = _cache_root()
    made: dict[int, Path] = {}

    def get(seed: int = 0) -> Path:
        if seed not in made:
            made[seed] = weights_writer.write_stand_in_files(root / f"seed{seed}", seed)
        return made[seed]

    return get


@pytest.fixture(scope="session")
def weights_dir(stand_in_weights) -> Path:
    """Folder with the seed-0 stand-in files, laid out like ``ComfyUI/models/sadtalker``."""
    return stand_in_weights(0)


@dataclass
class LoadedModels:
    """Networks loaded through the real loader for one seed; mapping nets load on first use."""

    folder: Path
    nets: object
    mappings: dict = field(default_factory=dict)

    def mapping(self, preprocess: str):
        from sadtalker_models.checkpoints import load_mapping, mapping_file_for

        name = mapping_file_for(preprocess)
        if name not in self.mappings:
            self.mappings[name] = load_mapping(self.folder / name)
        return self.mappings[name]


@pytest.fixture(scope="session")
def parity_models(stand_in_weights) -> Callable[[int], LoadedModels]:
    """``parity_models(seed)`` -> :class:`LoadedModels`, loaded once per seed per session."""
    from sadtalker_models.checkpoints import load_sadtalker

    loaded: dict[int, LoadedModels] = {}

    def get(seed: int = 0) -> LoadedModels:
        if seed not in loaded:
            folder = stand_in_weights(seed)
            loaded[seed] = LoadedModels(folder, load_sadtalker(folder / CHECKPOINT_NAME, size=256))
        return loaded[seed]

    return get


@pytest.fixture(scope="session")
def recon(parity_models):
    """ReconNet with the stand-in weights of the case set in use (the weights_seed of its extract_3dmm case;
    seed 0 when it has none), loaded through the real loader."""
    cases = sibling_cases().get("extract_3dmm", [])
    return parity_models(cases[0].seed if cases else 0).nets.recon


@pytest.fixture(scope="session")
def detector():
    """The offline dlib landmark backend."""
    from sadtalker_models.face.landmarks import make_landmark_detector

    return make_landmark_detector("dlib")


@dataclass
class ParityCase:
    """One ``*.safetensors`` parity case: metadata (JSON-decoded) and tensors (read on first use)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.stem

    @cached_property
    def meta(self) -> dict:
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as handle:
            raw = handle.metadata() or {}
        return {k: json.loads(v) for k, v in raw.items()}

    @property
    def stage(self) -> str:
        return self.meta.get("stage", "")

    @property
    def seed(self) -> int:
        return int(self.meta.get("weights_seed", 0))

    @cached_property
    def tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.path))


def parity_case_files(folder: Path = PARITY_CASES) -> list[Path]:
    """Every case in ``folder``: the ``*.safetensors`` cases and ``face_crop.json``."""
    return sorted(folder.glob("*.safetensors")) + sorted(folder.glob("face_crop.json"))


def sibling_cases(folder: Path = PARITY_CASES) -> dict[str, list[ParityCase]]:
    """The ``*.safetensors`` cases of ``folder`` grouped by their ``stage`` metadata."""
    grouped: dict[str, list[ParityCase]] = {}
    for path in sorted(folder.glob("*.safetensors")):
        case = ParityCase(path)
        grouped.setdefault(case.stage, []).append(case)
    return grouped
