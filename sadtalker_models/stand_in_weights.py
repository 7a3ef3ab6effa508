"""Deterministic stand-in weights in the official SadTalker file layout, for tests and benchmarks.

The real checkpoints cannot be downloaded everywhere, so tests, benchmarks and the real-ComfyUI
runner write files with the official names, keys, shapes and dtypes (``manifests/*.json``, one
entry per tensor: ``{"shape": [...], "dtype": "float32" | "int64"}``) but with weights drawn
from a fixed rule. The files are then read back through the real loader, strict key checks
included, exactly as a user's downloads are.

The rule (it must not change: the parity cases were computed with these weights):

* each tensor has its own ``torch.Generator``, seeded with
  ``(seed * 1000003 + crc32(key)) & 0x7FFFFFFF``, so a tensor does not depend on the order of
  the keys, on the other keys, or on the platform;
* int64 tensors (BatchNorm counters) are zeros;
* the keypoint detector's anti-alias kernel (``...kp_extractor.down.weight`` or ``down.weight``)
  is the fixed Gaussian of a 1/4 down-scale;
* BatchNorm statistics: ``running_var`` = 1 + 0.1 U[0,1), ``running_mean`` = 0.1 N(0,1);
* spectral-norm vectors (``weight_u``/``weight_v``): N(0,1) scaled to unit length;
* other 0-d/1-d tensors: ``weight`` = 1 + 0.1 N(0,1), anything else 0.05 N(0,1) (the generator's
  final ``decoder.conv_img.bias`` a further x0.02);
* everything else: N(0,1) * sqrt(2 / fan_in) * 0.5 with fan_in the product of all but the first
  dimension (the final ``decoder.conv_img.weight`` a further x0.02, so the output sigmoid does not
  saturate).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path

import torch

MANIFESTS = Path(__file__).resolve().parent / "manifests"
SADTALKER_MANIFEST = "SadTalker_V0.0.2.safetensors.json"
MAPPING_EPOCHS = {"mapping_00229-model.pth.tar": 229, "mapping_00109-model.pth.tar": 109}


def read_manifest(name: str, folder: Path = MANIFESTS) -> dict[str, dict]:
    """``{key: {"shape": [...], "dtype": ...}}`` of one official file (``name`` without ``.json``)."""
    return json.loads((Path(folder) / f"{name.removesuffix('.json')}.json").read_text())


def _antialias_kernel(channels: int, scale: float) -> torch.Tensor:
    """The (channels, 1, k, k) Gaussian the keypoint detector blurs with before down-scaling."""
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    line = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = line[:, None] * line[None, :]
    return (kernel / kernel.sum()).view(1, 1, size, size).repeat(channels, 1, 1, 1)


def stand_in_tensor(key: str, shape: list[int] | tuple[int, ...], dtype: str, seed: int = 0) -> torch.Tensor:
    """The stand-in value of one tensor (see the module docstring for the rule)."""
    shape = tuple(shape)
    if dtype.removeprefix("torch.") == "int64":
        return torch.zeros(shape, dtype=torch.int64)
    if key == "down.weight" or key.endswith("kp_extractor.down.weight"):
        return _antialias_kernel(shape[0], 0.25)
    rng = torch.Generator().manual_seed((seed * 1000003 + zlib.crc32(key.encode())) & 0x7FFFFFFF)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0 + 0.1 * torch.rand(shape, generator=rng)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=rng)
    if leaf in ("weight_u", "weight_v"):
        vector = torch.randn(shape, generator=rng)
        return vector / vector.norm()
    final_layer = key.endswith("decoder.conv_img.weight") or key.endswith("decoder.conv_img.bias")
    if len(shape) <= 1:
        if leaf == "weight":
            return 1.0 + 0.1 * torch.randn(shape, generator=rng)
        bias = 0.05 * torch.randn(shape, generator=rng)
        return bias * 0.02 if final_layer else bias
    fan_in = max(math.prod(shape[1:]), 1)
    weight = torch.randn(shape, generator=rng) * math.sqrt(2.0 / fan_in) * 0.5
    return weight * 0.02 if final_layer else weight


def stand_in_state_dict(manifest: dict[str, dict], seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of ``manifest`` drawn with :func:`stand_in_tensor`."""
    return {key: stand_in_tensor(key, entry["shape"], entry["dtype"], seed) for key, entry in sorted(manifest.items())}


def _write_atomically(target: Path, write) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_stand_in_files(folder: str | os.PathLike, seed: int = 0, sizes: tuple[int, ...] = (256,),
                         manifests: Path = MANIFESTS) -> Path:
    """Write ``SadTalker_V0.0.2_<size>.safetensors`` and both mapping files into ``folder``.

    Existing files are kept (the content only depends on ``seed``); writes are atomic, so a
    parallel writer never sees half a file. Returns ``folder``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [folder / f"SadTalker_V0.0.2_{size}.safetensors" for size in sizes]
    missing = [path for path in missing if not path.exists()]
    if missing:
        state = stand_in_state_dict(read_manifest(SADTALKER_MANIFEST, manifests), seed)
        for path in missing:  # the 512 file has the 256 file's layout
            _write_atomically(path, lambda p: save_file(state, str(p)))
        del state
    for name, epoch in MAPPING_EPOCHS.items():
        path = folder / name
        if not path.exists():
            blob = {"mapping": stand_in_state_dict(read_manifest(name, manifests), seed), "epoch": epoch}
            _write_atomically(path, lambda p: torch.save(blob, p))
    return folder
