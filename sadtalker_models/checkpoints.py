"""Loading the official SadTalker checkpoint files, strictly, with errors a user can act on.

Files (``docs/DESIGN.md``, spec §2):

* ``SadTalker_V0.0.2_256.safetensors`` / ``SadTalker_V0.0.2_512.safetensors``: one flat
  safetensors file holding five sub-models under the prefixes ``face_3drecon.``, ``audio2exp.``,
  ``audio2pose.``, ``kp_extractor.`` and ``generator.``. It is opened once and every sub-model
  reads its own tensors from that one handle.
* ``mapping_00229-model.pth.tar`` (70 inputs; crop / extcrop / resize) and
  ``mapping_00109-model.pth.tar`` (73 inputs; full / extfull): torch pickles whose ``"mapping"``
  entry is the MappingNet state dict. They are read with ``torch.load(weights_only=True)``, so
  nothing in a checkpoint can execute code.

Every problem surfaces as :class:`CheckpointError` (a ``ValueError``) whose message names the
file, says what is wrong and what to do about it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .networks.expnet import ExpNet
from .networks.keypoint_detector import KPDetector
from .networks.mapping_net import MappingNet
from .networks.pose_vae import PoseVAE
from .networks.recon_net import ReconNet
from .networks.spade_generator import OcclusionAwareSPADEGenerator
from .official_files import OFFICIAL_FILES, RELEASE_URL, sha256_file
from .options import SIZES, is_full_frame

logger = logging.getLogger(__name__)

#: Sub-model prefix in the safetensors file -> the network class it holds.
SUBMODELS: dict[str, type[nn.Module]] = {
    "face_3drecon": ReconNet,
    "audio2exp": ExpNet,
    "audio2pose": PoseVAE,
    "kp_extractor": KPDetector,
    "generator": OcclusionAwareSPADEGenerator,
}

#: MappingNet input channels per mapping file.
MAPPING_INPUTS: dict[str, int] = {"mapping_00229-model.pth.tar": 70, "mapping_00109-model.pth.tar": 73}



class CheckpointError(ValueError):
    """A checkpoint file is missing, damaged, or not the file it should be."""


@dataclass
class SadTalkerNets:
    """The five networks of one ``SadTalker_V0.0.2_<size>.safetensors`` file, in eval mode."""

    recon: nn.Module
    expnet: nn.Module
    posevae: nn.Module
    kp_detector: nn.Module
    generator: nn.Module
    path: Path
    device: torch.device
    dtype: torch.dtype


def sadtalker_file_for(size: int) -> str:
    """The official safetensors file name for render size 256 or 512."""
    if size not in SIZES:
        raise ValueError(f"SadTalker checkpoints exist for sizes 256 and 512, not {size}.")
    return f"SadTalker_V0.0.2_{size}.safetensors"


def mapping_file_for(preprocess: str) -> str:
    """The MappingNet file a preprocess mode uses: the 73-input one for any ``*full`` mode (spec §2.1)."""
    return "mapping_00109-model.pth.tar" if is_full_frame(preprocess) else "mapping_00229-model.pth.tar"


def missing_file_message(path: Path) -> str:
    """What to tell a user whose checkpoint ``path`` does not exist."""
    official = OFFICIAL_FILES.get(path.name)
    where = f"Put it in {path.parent}"
    if official is None:
        return f"Checkpoint {path} does not exist. {where}."
    return (
        f"Checkpoint {path.name} is missing from {path.parent}. Download it from {official.url} "
        f"({official.size:,} bytes) into that folder, or run "
        f"`python -m sadtalker_models download --models-dir \"{path.parent}\"`."
    )


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(missing_file_message(path))


def _damaged(path: Path, detail: str) -> CheckpointError:
    official = OFFICIAL_FILES.get(path.name)
    size = path.stat().st_size
    expect = f" The official file is {official.size:,} bytes; this one is {size:,}." if official else ""
    url = f" from {official.url}" if official else ""
    return CheckpointError(
        f"Checkpoint {path} is truncated or corrupt ({detail}).{expect} "
        f"Delete it and download it again{url}."
    )


#: (magic bytes, offset, what the file is) for kinds of file people point a checkpoint input at by mistake.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG", 0, "a PNG image"), (b"\xff\xd8\xff", 0, "a JPEG image"), (b"GIF8", 0, "a GIF image"),
    (b"WEBP", 8, "a WebP image"), (b"WAVE", 8, "a WAV audio file"), (b"ftyp", 4, "an MP4/MOV video"),
    (b"\x1a\x45\xdf\xa3", 0, "a Matroska/WebM video"), (b"ID3", 0, "an MP3 audio file"),
    (b"fLaC", 0, "a FLAC audio file"), (b"OggS", 0, "an Ogg audio file"), (b"\x1f\x8b", 0, "a gzip archive"),
    (b"7z\xbc\xaf", 0, "a 7-Zip archive"), (b"Rar!", 0, "a RAR archive"),
)


def identify_file(path: str | os.PathLike) -> str | None:
    """What ``path`` holds, in words for an error message, or None when it is not recognised.

    E.g. "a SadTalker MappingNet file (70 inputs)", "a SadTalker V0.0.2 checkpoint", "a PNG image",
    "a PyTorch checkpoint". Reads the file's first bytes and, for torch and safetensors files, its
    table of contents (torch files with ``weights_only=True``). Only called when loading failed.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        return "an empty file"
    for magic, offset, what in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return what
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return _identify_torch_file(path)
    if len(head) > 8 and head[8:9] == b"{":
        return _identify_safetensors(path)
    if head.lstrip()[:1] == b"<":
        return "an HTML/XML page (a web page saved instead of the file?)"
    return None


def _identify_torch_file(path: Path) -> str | None:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "a ZIP archive"
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "a PyTorch checkpoint holding Python objects"
    except Exception:  # noqa: BLE001 - a damaged file: not recognised
        return None
    if isinstance(blob, dict) and isinstance(blob.get("mapping"), dict):
        first = blob["mapping"].get("first.0.weight")
        inputs = f" ({first.shape[1]} inputs)" if isinstance(first, torch.Tensor) and first.dim() == 3 else ""
        return f"a SadTalker MappingNet file{inputs}"
    if isinstance(blob, dict) and ("params_ema" in blob or "params" in blob):
        return "a face restorer checkpoint (GFPGAN style)"
    return "a PyTorch checkpoint"


def _identify_safetensors(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(min(length, 100_000_000)))
    except (ValueError, struct.error, OSError):
        return None
    tops = sorted({k.split(".", 1)[0] for k in header if k != "__metadata__"})
    if set(SUBMODELS) <= set(tops):
        return "a SadTalker V0.0.2 checkpoint"
    return f"a safetensors file of another model (top-level names: {', '.join(tops[:5]) or 'none'})"


def _wrong_kind(path: Path, kind: str, wanted: str, hint: str) -> CheckpointError:
    return CheckpointError(f"{path} is {kind}, not {wanted}. {hint}")


def check_size_matches(path: Path, size: int) -> None:
    """Refuse a 256 file asked for as 512 (or the reverse).

    The two official files have the same layout, so only their name and their hash tell them
    apart. The name is checked always; the content hash only when the file has the official
    byte size, so a renamed official file is still recognised.
    """
    other = 512 if size == 256 else 256
    other_name = sadtalker_file_for(other)
    if path.name == other_name:
        raise CheckpointError(
            f"{path.name} is the {other}-pixel model but size {size} was asked for. "
            f"Choose size {other}, or use {sadtalker_file_for(size)}."
        )
    official_other = OFFICIAL_FILES[other_name]
    if path.stat().st_size == official_other.size and sha256_file(path) == official_other.sha256:
        raise CheckpointError(
            f"{path} has the contents of the official {other_name} (sha256 match) but size {size} "
            f"was asked for. Rename it back to {other_name} and choose size {other}, or download "
            f"{sadtalker_file_for(size)}."
        )


def _key_report(path: Path, prefix: str, module: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """Describe missing, unexpected and mis-shaped keys (first few of each), or None if all match."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [
        f"{prefix}{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing keys", [prefix + k for k in missing]),
                         ("unexpected keys", [prefix + k for k in unexpected]),
                         ("wrong shapes", shaped)):
        if items:
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    if not parts:
        return None
    return f"Checkpoint {path} does not match the SadTalker layout: " + "; ".join(parts) + (
        ". It is not an official SadTalker file or it was saved by other code; download the "
        "official file again."
    )


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path, prefix: str = "") -> nn.Module:
    """Load ``state`` into ``module`` with strict key and shape checking; put it in eval mode.

    Raises :class:`CheckpointError` listing the first few missing, unexpected and mis-shaped keys.
    """
    report = _key_report(path, prefix, module, state)
    if report:
        raise CheckpointError(report)
    module.load_state_dict(state, strict=True)
    return module.eval().requires_grad_(False)


def load_sadtalker(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int | None = None,
) -> SadTalkerNets:
    """Load all five networks of a ``SadTalker_V0.0.2_<size>.safetensors`` file.

    The file is opened once; each sub-model reads only its own tensors from that handle.
    ``size`` (256/512), when given, is checked against the file (see :func:`check_size_matches`).
    Networks are returned in eval mode on ``device`` in ``dtype`` (integer buffers keep int64).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    _check_exists(path)
    if size is not None:
        check_size_matches(path, size)
    device = torch.device(device)
    nets: dict[str, nn.Module] = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = list(handle.keys())
            foreign = sorted({k.split(".", 1)[0] for k in keys} - set(SUBMODELS))
            for prefix in SUBMODELS:
                head = prefix + "."
                state = {k[len(head):]: handle.get_tensor(k) for k in keys if k.startswith(head)}
                if not state:
                    raise CheckpointError(
                        f"Checkpoint {path} has no '{head}*' tensors, so it is not a SadTalker "
                        f"V0.0.2 file (top-level names found: {', '.join(foreign[:5]) or 'none'}). "
                        f"Download {sadtalker_file_for(size or 256)} from "
                        f"{OFFICIAL_FILES[sadtalker_file_for(size or 256)].url}."
                    )
                module = load_strict(SUBMODELS[prefix](), state, path, head)
                nets[prefix] = module.to(device=device, dtype=dtype)
                del state
            if foreign:
                raise CheckpointError(
                    f"Checkpoint {path} has unexpected top-level entries {', '.join(foreign[:5])}; "
                    "it is not an official SadTalker V0.0.2 file."
                )
    except (SafetensorError, OSError) as err:
        kind = identify_file(path)
        if kind is not None and "safetensors" not in kind and "SadTalker V0.0.2" not in kind:
            name = sadtalker_file_for(size or 256)
            hint = " Mapping files are read from the folder of the SadTalker checkpoint." if "MappingNet" in kind else ""
            raise _wrong_kind(path, kind, "a SadTalker checkpoint",
                              f"Choose {name} (or the 512 one) instead; it is at {OFFICIAL_FILES[name].url}.{hint}"
                              ) from err
        raise _damaged(path, f"safetensors: {err}" if isinstance(err, SafetensorError) else str(err)) from err
    return SadTalkerNets(
        recon=nets["face_3drecon"],
        expnet=nets["audio2exp"],
        posevae=nets["audio2pose"],
        kp_detector=nets["kp_extractor"],
        generator=nets["generator"],
        path=path,
        device=device,
        dtype=dtype,
    )


def load_mapping(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Load a ``mapping_*-model.pth.tar`` MappingNet with ``torch.load(weights_only=True)``.

    The number of input coefficients (70 or 73) is read from the file; for the two official
    names it must be the one that name stands for.
    """

    path = Path(path)
    _check_exists(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        kind = identify_file(path)
        if kind is not None and not kind.startswith("a PyTorch"):
            raise _wrong_kind(path, kind, "a SadTalker MappingNet file",
                              f"Use mapping_00229-model.pth.tar or mapping_00109-model.pth.tar from {RELEASE_URL}."
                              ) from err
        if isinstance(err, pickle.UnpicklingError):
            named = re.search(r"GLOBAL ([\w.]+)", str(err))
            raise CheckpointError(
                f"Checkpoint {path} holds Python objects{f' ({named.group(1)})' if named else ''} besides tensors "
                "and plain containers. It was refused because loading such a file can run code; use the "
                f"official mapping file from {RELEASE_URL}."
            ) from err
        raise _damaged(path, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    if not isinstance(blob, dict) or "mapping" not in blob or not isinstance(blob["mapping"], dict):
        kind = identify_file(path)
        if kind is not None and kind != "a PyTorch checkpoint":
            raise _wrong_kind(path, kind, "a SadTalker MappingNet file",
                              f"Use mapping_00229-model.pth.tar or mapping_00109-model.pth.tar from {RELEASE_URL}.")
        found = ", ".join(map(str, list(blob)[:5])) if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(
            f"Checkpoint {path} has no 'mapping' entry (found: {found}); it is not a SadTalker "
            "MappingNet file. Download mapping_00229-model.pth.tar and mapping_00109-model.pth.tar "
            f"from {RELEASE_URL}."
        )
    state = blob["mapping"]
    first = state.get("first.0.weight")
    if not isinstance(first, torch.Tensor) or first.dim() != 3:
        raise CheckpointError(_key_report(path, "mapping.", MappingNet(70), state) or
                              f"Checkpoint {path}: 'first.0.weight' is not a (1024, C, 7) tensor.")
    coeff_nc = int(first.shape[1])
    expected = MAPPING_INPUTS.get(path.name)
    if expected is not None and coeff_nc != expected:
        raise CheckpointError(
            f"{path.name} should take {expected} coefficients but this file takes {coeff_nc}: the "
            "two mapping files look swapped or renamed. mapping_00229 serves crop/extcrop/resize "
            "(70), mapping_00109 serves full/extfull (73)."
        )
    module = load_strict(MappingNet(coeff_nc), state, path, "mapping.")
    return module.to(device=device, dtype=dtype)
