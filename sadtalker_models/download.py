"""Fetch the official weight files into a models folder.

* each file is written to ``<name>.part`` and renamed only after its size and sha256 match;
* an interrupted download resumes from the ``.part`` file with an HTTP ``Range`` request;
* files already present with the right size and hash are left alone;
* without network, :class:`DownloadError` says which file goes where and where to get it.

Only the standard library is used (urllib), so this works before torch is installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable

from .official_files import GFPGAN, OFFICIAL_FILES, OfficialFile, sha256_file
from .video import output_lock

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "comfyui-sadtalker-downloader"


SADTALKER_FILES: tuple[OfficialFile, ...] = tuple(OFFICIAL_FILES.values())
ENHANCER_FILES: tuple[OfficialFile, ...] = (GFPGAN,)


class DownloadError(RuntimeError):
    """A download failed; the message says what to place where by hand."""


def select_files(sizes: Iterable[int] = (256, 512), enhancer: bool = False) -> list[OfficialFile]:
    """The official files for the given render sizes (+ both mapping files, + GFPGAN if asked)."""
    wanted = {f"SadTalker_V0.0.2_{int(s)}.safetensors" for s in sizes}
    files = [f for f in SADTALKER_FILES if f.name in wanted or f.name.startswith("mapping_")]
    if enhancer:
        files.extend(ENHANCER_FILES)
    return files


def default_enhancer_dir(models_dir: str | os.PathLike) -> Path:
    """ComfyUI keeps face restorers in ``models/facerestore_models``, beside ``models/sadtalker``."""
    models_dir = Path(models_dir)
    if models_dir.name == "sadtalker":
        return models_dir.parent / "facerestore_models"
    return models_dir


def destination(file: OfficialFile, models_dir: Path, enhancer_dir: Path | None = None) -> Path:
    if file.group == "enhancer":
        return (enhancer_dir or default_enhancer_dir(models_dir)) / file.name
    return models_dir / file.name


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents); DownloadError in words when a file is in the way or it cannot be made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise DownloadError(f"Cannot use {folder} as a folder for the weights: {blocker} is a file. "
                            "Give the path of a folder (it is created if missing).") from err
    except OSError as err:
        raise DownloadError(f"Cannot create the folder {folder} for the weights ({err.strerror or err}); "
                            "choose another folder.") from err


def is_complete(path: Path, file: OfficialFile, verify_hash: bool = True) -> bool:
    """Whether ``path`` already holds ``file`` (size, and sha256 unless ``verify_hash`` is off)."""
    if not path.is_file() or path.stat().st_size != file.size:
        return False
    return not verify_hash or sha256_file(path) == file.sha256


def manual_instructions(files: Iterable[OfficialFile], models_dir: Path, enhancer_dir: Path | None = None) -> str:
    """Human-readable list of which file to download from where into which folder."""
    lines = ["Download these files by hand and place them as shown:"]
    for f in files:
        lines.append(f"  {f.url}\n    -> {destination(f, models_dir, enhancer_dir)}  ({f.size:,} bytes, sha256 {f.sha256})")
    return "\n".join(lines)


ProgressFn = Callable[[OfficialFile, int, int], None]


def _open(url: str, start: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start > 0:
        request.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - https URLs from the table (or a test server)


def download_file(file: OfficialFile, target: Path, progress: ProgressFn | None = None,
                  timeout: float = 60.0) -> Path:
    """Fetch ``file`` to ``target`` via ``target.part``; resume a partial ``.part`` with a Range request.

    Raises :class:`DownloadError` on network failure (keeping the ``.part`` for a later resume) and
    on a size or sha256 mismatch (deleting the bad ``.part``).
    """
    make_folder(target.parent)
    part = target.with_name(target.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    if start > file.size:
        part.unlink()
        start = 0
    digest = hashlib.sha256()
    if start:
        if start == file.size:
            logger.info("%s: partial file already complete, verifying", file.name)
        sha256_file(part, digest)
    try:
        if start < file.size:
            with _open(file.url, start, timeout) as response:
                status = getattr(response, "status", 200)
                if start and status != 206:
                    logger.info("%s: server ignored the resume request; starting over", file.name)
                    start = 0
                    digest = hashlib.sha256()
                elif start:
                    logger.info("%s: resuming at byte %d", file.name, start)
                done = start
                with open(part, "ab" if start else "wb") as out:
                    if progress:
                        progress(file, done, file.size)
                    while block := response.read(CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(file, done, file.size)
                        if done > file.size:
                            break
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        resume = (f"Keep the partial file {part} and run the command again to resume, or"
                  if part.is_file() and part.stat().st_size > 0 else "Run the command again when online, or")
        raise DownloadError(
            f"Could not download {file.name} from {file.url} ({reason}). {resume} download it by hand "
            f"into {target.parent}."
        ) from err
    size = part.stat().st_size
    if size < file.size:
        raise DownloadError(
            f"The download of {file.name} from {file.url} stopped after {size:,} of {file.size:,} bytes. "
            f"Keep the partial file {part} and run the command again to resume, or download it by hand "
            f"into {target.parent}."
        )
    if size != file.size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{file.name}: got {size:,} bytes but the official file has {file.size:,}. The partial file "
            f"was deleted; run the command again, or download {file.url} by hand into {target.parent}."
        )
    got = digest.hexdigest()
    if got != file.sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{file.name}: sha256 {got} does not match the official {file.sha256}. The download was "
            f"deleted; run the command again, or download {file.url} by hand into {target.parent}."
        )
    os.replace(part, target)
    logger.info("%s: saved to %s", file.name, target)
    return target


def download_all(models_dir: str | os.PathLike, files: Iterable[OfficialFile] | None = None,
                 enhancer_dir: str | os.PathLike | None = None, progress: ProgressFn | None = None,
                 verify_existing: bool = True, timeout: float = 60.0) -> list[Path]:
    """Fetch every file of ``files`` (default: all SadTalker files) that is not already in place.

    Files that fail are collected; at the end one :class:`DownloadError` lists each failure and
    the by-hand instructions for the files still missing.
    """
    models_dir = Path(models_dir)
    enhancer = Path(enhancer_dir) if enhancer_dir else None
    files = list(files if files is not None else select_files())
    for folder in sorted({destination(f, models_dir, enhancer).parent for f in files}):
        make_folder(folder)
    with ExitStack() as locks:   # every file locked before any work: a second download of it fails at once
        for f in files:
            try:
                locks.enter_context(output_lock(destination(f, models_dir, enhancer)))
            except ValueError as err:
                raise DownloadError(str(err)) from None
        return _download_each(files, models_dir, enhancer, progress, verify_existing, timeout)


def _download_each(files: list[OfficialFile], models_dir: Path, enhancer: Path | None, progress: ProgressFn | None,
                   verify_existing: bool, timeout: float) -> list[Path]:
    saved: list[Path] = []
    failures: list[tuple[OfficialFile, str]] = []
    for f in files:
        target = destination(f, models_dir, enhancer)
        if is_complete(target, f, verify_existing):
            logger.info("%s: already present", f.name)
            saved.append(target)
            continue
        if target.is_file():
            logger.warning("%s exists but is not the official file (size or sha256 differ); downloading again", target)
        try:
            saved.append(download_file(f, target, progress, timeout))
        except DownloadError as err:
            failures.append((f, str(err)))
    if failures:
        reasons = "\n".join(f"- {msg}" for _, msg in failures)
        raise DownloadError(
            f"{len(failures)} of {len(files)} files could not be downloaded:\n{reasons}\n"
            + manual_instructions([f for f, _ in failures], models_dir, enhancer)
        )
    return saved
