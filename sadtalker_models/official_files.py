"""The one table of official weight files: URL, byte size and sha256 of each.

Standard library only, so the downloader can use it before torch is installed. The loader
(:mod:`.checkpoints`) names these in its errors, the downloader (:mod:`.download`) fetches and
verifies them, and the enhancer (:mod:`.enhance`) points users at GFPGAN.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

RELEASE_URL = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc/"


@dataclass(frozen=True)
class OfficialFile:
    """One downloadable file: where it comes from and how to recognise it.

    ``group``: ``"sadtalker"`` files go to the SadTalker models folder, ``"enhancer"`` ones to
    the face-restoration folder.
    """

    name: str
    url: str
    size: int
    sha256: str
    group: str = "sadtalker"


def _release(name: str, size: int, sha256: str) -> OfficialFile:
    return OfficialFile(name, RELEASE_URL + name, size, sha256)


#: The official SadTalker files (sizes and hashes as published for the v0.0.2-rc release).
OFFICIAL_FILES: dict[str, OfficialFile] = {
    f.name: f
    for f in (
        _release("SadTalker_V0.0.2_256.safetensors", 725066984,
                 "c211f5d6de003516bf1bbda9f47049a4c9c99133b1ab565c6961e5af16477bff"),
        _release("SadTalker_V0.0.2_512.safetensors", 725066984,
                 "0e063f7ff5258240bdb0f7690783a7b1374e6a4a81ce8fa33456f4cd49694340"),
        _release("mapping_00229-model.pth.tar", 155521183,
                 "62a1e06006cc963220f6477438518ed86e9788226c62ae382ddc42fbcefb83f1"),
        _release("mapping_00109-model.pth.tar", 155779231,
                 "84a8642468a3fcfdd9ab6be955267043116c2bec2284686a5262f1eaf017f64c"),
    )
}

#: The restorer of the original ``--enhancer gfpgan``.
GFPGAN = OfficialFile("GFPGANv1.4.pth",
                      "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
                      348632874, "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
                      group="enhancer")


def sha256_file(path: str | os.PathLike, digest=None, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks (memory stays flat).

    ``digest``: a running ``hashlib.sha256()`` to continue (e.g. over the part of a download that
    is already on disk), else a fresh one.
    """
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
