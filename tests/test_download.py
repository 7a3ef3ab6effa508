"""The weight downloader against a local HTTP server (127.0.0.1) serving small fake files."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sadtalker_models.download import (
    DownloadError,
    OfficialFile,
    default_enhancer_dir,
    download_all,
    download_file,
    select_files,
)

REPO = Path(__file__).resolve().parent.parent
PAYLOADS = {
    "SadTalker_V0.0.2_256.safetensors": os.urandom(3 * 1024 * 1024 + 17),
    "mapping_00229-model.pth.tar": os.urandom(200_001),
    "mapping_00109-model.pth.tar": os.urandom(150_003),
    "GFPGANv1.4.pth": os.urandom(99_999),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOADS with Range support; records every request; can cut a response short."""

    requests: list[tuple[str, str | None]] = []
    cut_after: dict[str, int] = {}       # name -> bytes to send before dropping the connection (once)
    ignore_range = False

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        type(self).requests.append((name, rng))
        data = PAYLOADS.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after.pop(name, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.requests = []
    _Handler.cut_after = {}
    _Handler.ignore_range = False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def table(base: str, corrupt: str | None = None) -> list[OfficialFile]:
    files = []
    for name, data in PAYLOADS.items():
        digest = hashlib.sha256(data).hexdigest() if name != corrupt else "0" * 64
        files.append(OfficialFile(name, base + name, len(data), digest,
                                group="enhancer" if name.startswith("GFPGAN") else "sadtalker"))
    return files


def test_downloads_every_file_to_its_folder(server, tmp_path):
    models = tmp_path / "models" / "sadtalker"
    saved = download_all(models, table(server))
    assert sorted(p.name for p in saved) == sorted(PAYLOADS)
    for name, data in PAYLOADS.items():
        folder = tmp_path / "models" / "facerestore_models" if name.startswith("GFPGAN") else models
        assert (folder / name).read_bytes() == data
    assert not list(tmp_path.rglob("*.part"))


def test_a_second_download_of_the_same_files_is_refused_before_any_work(server, tmp_path):
    """Issue 20: every file the pack writes is locked before any work; two downloads into one folder
    would otherwise append to the same .part file."""
    from sadtalker_models.video import output_lock

    models = tmp_path / "models" / "sadtalker"
    models.mkdir(parents=True)
    with output_lock(models / "mapping_00229-model.pth.tar"):
        with pytest.raises(DownloadError, match="Another run is already writing .*mapping_00229"):
            download_all(models, table(server))
    assert _Handler.requests == [] and not list(tmp_path.rglob("*.part"))
    assert not list(tmp_path.rglob("*.lock"))                     # the first file's lock was let go again
    download_all(models, table(server))                           # free again afterwards


def test_existing_files_are_kept(server, tmp_path):
    download_all(tmp_path, table(server))
    _Handler.requests.clear()
    download_all(tmp_path, table(server))
    assert _Handler.requests == []


def test_wrong_existing_file_is_replaced(server, tmp_path):
    files = table(server)[1:2]
    (tmp_path / files[0].name).write_bytes(b"not the file")
    download_all(tmp_path, files)
    assert (tmp_path / files[0].name).read_bytes() == PAYLOADS[files[0].name]


def test_interrupted_download_resumes_with_range(server, tmp_path):
    name = "SadTalker_V0.0.2_256.safetensors"
    file = next(f for f in table(server) if f.name == name)
    _Handler.cut_after[name] = 1_000_000
    with pytest.raises(DownloadError, match="resume"):
        download_file(file, tmp_path / name)
    part = tmp_path / (name + ".part")
    assert part.is_file() and 0 < part.stat().st_size < file.size
    assert not (tmp_path / name).exists()
    have = part.stat().st_size
    download_file(file, tmp_path / name)
    assert (tmp_path / name).read_bytes() == PAYLOADS[name]
    assert _Handler.requests[-1] == (name, f"bytes={have}-")
    assert not part.exists()


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    name = "mapping_00229-model.pth.tar"
    file = next(f for f in table(server) if f.name == name)
    (tmp_path / (name + ".part")).write_bytes(PAYLOADS[name][:5000])
    _Handler.ignore_range = True
    download_file(file, tmp_path / name)
    assert (tmp_path / name).read_bytes() == PAYLOADS[name]


def test_hash_mismatch_is_refused_and_nothing_is_kept(server, tmp_path):
    name = "mapping_00109-model.pth.tar"
    file = next(f for f in table(server, corrupt=name) if f.name == name)
    with pytest.raises(DownloadError, match="sha256"):
        download_file(file, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_is_refused(server, tmp_path):
    name = "mapping_00109-model.pth.tar"
    good = next(f for f in table(server) if f.name == name)
    longer = OfficialFile(good.name, good.url, good.size - 10, good.sha256)   # the server sends more than expected
    with pytest.raises(DownloadError, match="deleted"):
        download_file(longer, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    shorter = OfficialFile(good.name, good.url, good.size + 10, good.sha256)  # the server stops early: resumable
    with pytest.raises(DownloadError, match="resume"):
        download_file(shorter, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_offline_message_says_what_goes_where(tmp_path):
    with socket.socket() as s:      # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = table(f"http://127.0.0.1:{port}/")
    with pytest.raises(DownloadError) as err:
        download_all(tmp_path / "sadtalker", files, timeout=5)
    text = str(err.value)
    for f in files:
        assert f.url in text
    assert str(tmp_path / "sadtalker" / "SadTalker_V0.0.2_256.safetensors") in text
    assert str(tmp_path / "facerestore_models" / "GFPGANv1.4.pth") in text


def test_official_table_matches_the_loader_table():
    from sadtalker_models.checkpoints import OFFICIAL_FILES

    for f in select_files((256, 512)):
        official = OFFICIAL_FILES[f.name]
        assert (f.url, f.size, f.sha256) == (official.url, official.size, official.sha256)
    assert [f.name for f in select_files((256,), enhancer=True)] == [
        "SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar",
        "GFPGANv1.4.pth"]
    assert default_enhancer_dir("/x/models/sadtalker") == Path("/x/models/facerestore_models")


def test_cli_download_offline_exits_nonzero_with_instructions(tmp_path):
    # no network in CI: an unreachable host makes the CLI print the by-hand instructions
    env = dict(os.environ, https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "-m", "sadtalker_models", "download", "--models-dir", str(tmp_path),
                           "--sizes", "256", "--timeout", "5"], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 1
    assert "SadTalker_V0.0.2_256.safetensors" in proc.stderr
    assert "github.com/OpenTalker/SadTalker/releases" in proc.stderr
    assert str(tmp_path / "mapping_00229-model.pth.tar") in proc.stderr
