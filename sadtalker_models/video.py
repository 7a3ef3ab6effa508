"""Video and audio input/output through the ffmpeg binary that ships with imageio-ffmpeg.

* :func:`read_video` streams RGB frames of any video file (with its frame rate);
* :func:`load_audio` decodes the audio of any file ffmpeg can read to float32 ``(channels, n)``;
* :class:`Mp4Writer` encodes frames as they arrive (H.264, yuv420p) and, on close, muxes the
  audio trimmed (or padded with silence) to exactly ``frames / fps`` seconds;
* :func:`probe` reads duration and stream facts back from ffmpeg's ``-i`` banner;
* :func:`atomic_output` writes a file under a temporary name beside it and renames it into place
  only when complete, so a failure or an interrupt never leaves a half-written output or destroys
  an earlier file of the same name; :func:`check_writable` and :func:`output_lock` let a caller
  find an unusable output, or another run writing the same one, before any heavy work, and
  :func:`output_folder` removes the folders a failed run created for its output.

Nothing here keeps more than one batch of frames in memory.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import subprocess
import wave
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
#: Files :func:`audio_files` takes for speech (anything else in the folder is left alone).
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif")

_CHANNEL_LAYOUTS = {
    "mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4,
    "quad(side)": 4, "3.1": 4, "4.1": 5, "5.0": 5, "5.0(side)": 5, "5.1": 6, "5.1(side)": 6,
    "6.0": 6, "6.1": 7, "7.0": 7, "7.1": 8, "7.1(wide)": 8,
}


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or $IMAGEIO_FFMPEG_EXE)."""
    try:
        import imageio_ffmpeg
    except ImportError as err:  # pragma: no cover - dependency listed in requirements.txt
        raise RuntimeError(
            "imageio-ffmpeg is not installed; run `pip install imageio-ffmpeg` to read and write video."
        ) from err
    return imageio_ffmpeg.get_ffmpeg_exe()


_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Let Ctrl-C, SIGTERM and SIGHUP wait until the end of the block, then run their handlers.

    For starting a process and storing its handle as one step: an interrupt in between would leave a
    process running that nobody stops (and an ffmpeg that writes its output after the cleanup). Blocking
    the signals is not enough: another thread (torch's workers) can take one, and Python then runs the
    handler in the main thread at any point. Only the main thread runs Python signal handlers, so
    elsewhere nothing can interrupt the block and it runs as is.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):   # Python-level handlers only; SIG_DFL/SIG_IGN stay as they are
            previous[signum] = handler
            signal.signal(signum, lambda received, frame: held.append(received))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in held[:1]:   # one interrupt is enough to stop
            previous[signum](signum, None)


def _run_ffmpeg(args: list[str], what: str) -> subprocess.CompletedProcess:
    with stop_signals_deferred():
        proc = subprocess.Popen([ffmpeg_exe(), "-hide_banner", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate()
    except BaseException:   # interrupted: ffmpeg must not go on writing after the caller's cleanup
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise ValueError(f"ffmpeg could not {what}: {' / '.join(tail) or 'unknown error'}.")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --------------------------------------------------------------------------- probing


@dataclass
class MediaInfo:
    """What ffmpeg reports about a media file."""

    duration: float | None = None
    video: list[str] = field(default_factory=list)   # stream description lines
    audio: list[str] = field(default_factory=list)
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    banner: str = ""


def probe(path: str | os.PathLike) -> MediaInfo:
    """Parse ``ffmpeg -i path`` (ffmpeg exits non-zero without an output; that is expected)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"File {path} does not exist.")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True)
    text = proc.stderr.decode("utf-8", "replace")
    info = MediaInfo(banner=text)
    match = re.search(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if match:
        h, m, s = match.groups()
        info.duration = int(h) * 3600 + int(m) * 60 + float(s)
    for line in text.splitlines():
        if "Stream #" not in line:
            continue
        if "Video:" in line:
            info.video.append(line.strip())
            size = re.search(r",\s*(\d{2,5})x(\d{2,5})[\s,\[]", line)
            if size and info.width is None:
                info.width, info.height = int(size.group(1)), int(size.group(2))
            rate = re.search(r"([\d.]+)\s*fps", line) or re.search(r"([\d.]+)\s*tbr", line)
            if rate and info.fps is None:
                info.fps = float(rate.group(1))
        elif "Audio:" in line:
            info.audio.append(line.strip())
            rate = re.search(r"(\d+)\s*Hz,\s*([^,]+)", line)
            if rate and info.sample_rate is None:
                info.sample_rate = int(rate.group(1))
                layout = rate.group(2).strip()
                count = re.match(r"(\d+)\s*channels", layout)
                info.channels = int(count.group(1)) if count else _CHANNEL_LAYOUTS.get(layout)
    return info


# --------------------------------------------------------------------------- reading


def load_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of ``path`` to float32 ``(channels, n)`` and its rate.

    ``sample_rate`` resamples with ffmpeg; by default the file's own rate is kept. Channel
    layouts ffmpeg does not name in a way we know are down-mixed to stereo.
    """
    info = probe(path)
    if not info.audio:
        raise ValueError(f"{path} has no audio stream; give a speech file (wav, mp3, m4a, flac, ...).")
    rate = int(sample_rate or info.sample_rate or 16000)
    channels = info.channels or 2
    args = ["-v", "error", "-i", str(path), "-map", "0:a:0", "-vn", "-f", "f32le", "-acodec", "pcm_f32le",
            "-ac", str(channels), "-ar", str(rate), "pipe:1"]
    proc = _run_ffmpeg(args, f"decode the audio of {path}")
    data = np.frombuffer(proc.stdout, dtype="<f4")
    usable = len(data) - len(data) % channels
    audio = data[:usable].reshape(-1, channels).T.astype(np.float32, copy=True)
    if audio.shape[1] == 0:
        raise ValueError(f"The audio of {path} is empty.")
    return audio, rate


def _natural_key(name: str) -> list:
    """Sort key that puts ``clip2`` before ``clip10`` (case-insensitive)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def audio_files(folder: str | os.PathLike, within: str | os.PathLike | None = None) -> list[Path]:
    """The speech files directly in ``folder`` (by :data:`AUDIO_SUFFIXES`), in natural name order
    (``a2`` before ``a10``); hidden files are skipped. Raises ValueError, naming the folder and the
    suffixes, when it is missing, unreadable or has none.

    ``within``: a folder every file must really lie in; a link to a file outside it is refused
    with a sentence (as ComfyUI's input folder keeps its files in).
    """
    folder = Path(folder)
    try:
        if not folder.is_dir():
            raise ValueError(f"Audio folder {folder} does not exist; make it and put the speech clips in it.")
        found = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in AUDIO_SUFFIXES), key=lambda p: _natural_key(p.name))
    except OSError as err:
        raise ValueError(f"Cannot read the audio folder {str(folder)[:200]} ({err.strerror or err}); pick a "
                         "folder that exists and can be read.") from None
    if not found:
        raise ValueError(f"Audio folder {folder} holds no audio files; put speech clips in it "
                         f"({', '.join(AUDIO_SUFFIXES)}).")
    if within is not None:
        base = os.path.realpath(within)
        for path in found:
            if os.path.commonpath([base, os.path.realpath(path)]) != base:
                raise ValueError(f"{path.name} in {folder} is a link to a file outside {base}; copy the file into "
                                 "the folder instead of linking to it.")
    return found


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], float]:
    """Frames of a video as an iterator of RGB uint8 ``(H, W, 3)`` arrays, plus its frame rate.

    The file is decoded lazily, so long videos are never held in memory at once.
    """
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Video {path} does not exist.")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = reader.__next__()
    except (RuntimeError, OSError, StopIteration) as err:
        raise ValueError(f"Could not read video {path}: {err}") from err
    width, height = meta["size"]
    fps = float(meta.get("fps") or 25.0)

    def frames() -> Iterator[np.ndarray]:
        count = 0
        try:
            for raw in reader:
                if max_frames is not None and count >= max_frames:
                    break
                yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
                count += 1
        finally:
            reader.close()

    return frames(), fps


#: Largest picture :func:`read_image` decodes (pixels): 100 MP, e.g. 10000x10000; 8K is 33 MP.
MAX_PICTURE_PIXELS = 100_000_000


def check_picture_pixels(width: int, height: int, what: str) -> None:
    """ValueError when a ``width`` x ``height`` picture is over :data:`MAX_PICTURE_PIXELS`."""
    if width * height > MAX_PICTURE_PIXELS:
        raise ValueError(f"{what} is {width}x{height} pixels ({width * height / 1e6:.0f} MP); the largest picture "
                         f"accepted is {MAX_PICTURE_PIXELS / 1e6:.0f} MP. Downscale it first: the face is rendered at "
                         "256 or 512 pixels.")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB uint8 ``(H, W, 3)`` image; for a video file, its first frame (as the reference does).

    The size is read from the file's header first, so a picture over :data:`MAX_PICTURE_PIXELS`
    (or a decompression bomb) is refused with a sentence before it is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Image {path} does not exist.")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        import warnings

        from PIL import Image, ImageOps

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the size is checked below
                with Image.open(path) as img:
                    check_picture_pixels(*img.size, f"Image {path}")
                    return pil_to_rgb8(ImageOps.exif_transpose(img))
        except Image.DecompressionBombError as err:   # over twice PIL's limit: PIL refuses to open it
            size = re.search(r"\((\d+) pixels\)", str(err))
            megapixels = f" ({int(size.group(1)) / 1e6:.0f} MP)" if size else ""
            raise ValueError(f"Image {path} is too large to decode{megapixels}; the largest picture accepted is "
                             f"{MAX_PICTURE_PIXELS / 1e6:.0f} MP. Downscale it first.") from None
        except OSError as err:
            raise ValueError(f"Could not read image {path}: {err}") from err
    frames, _ = read_video(path, max_frames=1)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path} holds no frames.")
    return first.copy()


# --------------------------------------------------------------------------- safe outputs


def temp_path_beside(path: str | os.PathLike, tag: str = "partial",
                     claim: Callable[[Path | None], None] | None = None) -> Path:
    """Create an empty, uniquely named file ``<stem>.<tag>.<random><suffix>`` in ``path``'s folder.

    Same folder, so :func:`os.replace` onto ``path`` is an atomic rename; same suffix, so ffmpeg
    picks the container from the name. Created with mode 0o666 less the umask, like a plain
    ``open(path, "w")``, so the final file gets the user's usual permissions.

    ``claim(name)`` is called with each name *before* the file is created (and ``claim(None)``
    when the name was taken by someone else), so a caller's cleanup knows the file even when an
    interrupt (Ctrl-C, SIGTERM) lands between its creation and the return.
    """
    path = Path(path)
    for _ in range(100):
        candidate = path.with_name(f"{path.stem}.{tag}.{secrets.token_hex(4)}{path.suffix}")
        if claim is not None:
            claim(candidate)
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if claim is not None:
                claim(None)
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"Could not create a temporary file beside {path}.")


class _Claimed:
    """The temporary file a :func:`temp_path_beside` call claimed, for cleanup in a ``finally``."""

    path: Path | None = None

    def __call__(self, path: Path | None) -> None:
        self.path = path

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | os.PathLike, tag: str = "partial") -> Iterator[Path]:
    """Write ``path`` all at once: yields a temporary path in the same folder to write to.

    When the block finishes, the temporary file replaces ``path`` (:func:`os.replace`, atomic on
    one file system). On any exception, ``KeyboardInterrupt`` included, it is deleted and a file
    already at ``path`` stays byte for byte as it was. The folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    claimed = _Claimed()
    try:
        tmp = temp_path_beside(path, tag, claim=claimed)
        yield tmp
        os.replace(tmp, path)
    finally:
        claimed.remove()   # gone already after a successful replace


def _make_parents(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"Cannot create the output folder {path.parent} ({err.strerror or err}); "
                         "choose another output path.") from err


@contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create the missing parent folders of the output ``path`` for one run; if the run fails or is
    interrupted, remove the ones it created that are still empty, so a failed run leaves no trace."""
    path = Path(path)
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)   # deepest first
        parent = parent.parent
    _make_parents(path)
    try:
        yield path
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:   # not empty (something else was written there) or already gone
                break
        raise


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, with a readable ValueError, if ``path`` cannot be written as an output file.

    Catches a folder of that name, a read-only existing file, a parent that is a file or cannot be
    created, and a folder where no file can be created. Creates missing parent folders.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"The output {path} is a folder; give a file name, e.g. {path / 'talking.mp4'}.")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"The output {path} exists and is read-only; choose another output file or make it writable.")
    _make_parents(path)
    probe_file = _Claimed()
    try:
        temp_path_beside(path, "check", claim=probe_file)
    except OSError as err:
        raise ValueError(f"Cannot write files in {path.parent} ({err.strerror or err}); "
                         "choose another output folder.") from err
    finally:
        probe_file.remove()   # also when an interrupt lands between its creation and here
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path (links followed), or hard links."""
    if os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b)):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:   # one of them does not exist yet
        return False


def check_distinct_outputs(outputs: dict[str, str | os.PathLike],
                           inputs: dict[str, str | os.PathLike | None]) -> None:
    """ValueError when an output is the same file as an input or as another output.

    ``outputs`` and ``inputs`` map what the user calls each file (``"--out"``) to its path; inputs
    that are None are ignored. Called before any work, so no input is ever overwritten.
    """
    named = [(what, Path(path)) for what, path in outputs.items()]
    for i, (what, path) in enumerate(named):
        for other, other_path in named[:i]:
            if _same_file(path, other_path):
                raise ValueError(f"{what} and {other} are the same file ({path}); give each output its own name.")
        for other, source in inputs.items():
            if source and _same_file(path, Path(source)):
                raise ValueError(f"{what} {path} is the same file as {other}; writing it would replace your "
                                 "input. Choose another output name.")


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<path>.lock`` while writing ``path``, so a second run writing the same file fails at once.

    The lock is an OS file lock (released even if the process is killed); the lock file is removed
    on exit. Raises ValueError if another process holds it.
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    while True:
        fh = open(lock, "a+b")
        try:
            _lock_file(fh)
        except OSError:
            fh.close()
            raise ValueError(f"Another run is already writing {path} (it holds {lock}); wait for it to finish "
                             "or choose another output file.") from None
        try:   # the holder before us may have removed the file after we opened it: lock the current one
            same = os.path.samestat(os.fstat(fh.fileno()), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    try:
        yield lock
    finally:
        if os.name == "nt":  # pragma: no cover - Windows cannot delete an open file
            fh.close()
        try:
            lock.unlink(missing_ok=True)   # while still locked (POSIX), so no one locks a file going away
        except OSError:  # pragma: no cover - best effort
            logger.debug("could not remove %s", lock, exc_info=True)
        fh.close()


def _lock_file(fh) -> None:
    """Non-blocking exclusive lock on an open file; OSError if another process holds it."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def pil_to_rgb8(img) -> np.ndarray:
    """A PIL image as RGB uint8 ``(H, W, 3)``, high-bit-depth grey scaled down rather than clipped.

    PIL's own ``convert("RGB")`` clips 16-bit grey (``I;16*``, ``I``) and float (``F``) pixels at
    255, which turns a 16-bit grey PNG white. Those are scaled from 0..65535 (0..1 for float
    images whose values stay within 1, else 0..255) to 0..255 instead.
    """
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.float64)
        full = 65535.0 if img.mode != "F" else (1.0 if values.size == 0 or np.nanmax(values) <= 1.0 else 255.0)
        grey = np.clip(np.rint(np.nan_to_num(values) * (255.0 / full)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


# --------------------------------------------------------------------------- writing


def fit_audio(audio: np.ndarray, sample_rate: int, num_frames: int, fps: float = 25.0) -> np.ndarray:
    """Cut ``(channels, n)`` audio to exactly ``num_frames / fps`` seconds (pad with silence if short)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    want = int(round(num_frames * sample_rate / fps))
    if audio.shape[1] >= want:
        return audio[:, :want]
    return np.pad(audio, ((0, 0), (0, want - audio.shape[1])))


WAV_BLOCK = 1 << 18   # samples per channel converted at once by write_wav


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM wav of float ``(channels, n)`` audio in [-1, 1], converted a block at a time (no
    full-length temporary copies, so muxing minutes of speech costs no more memory than seconds)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(audio.shape[0])
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        for start in range(0, audio.shape[1], WAV_BLOCK):
            pcm = (np.clip(audio[:, start:start + WAV_BLOCK], -1.0, 1.0) * 32767.0).round().astype("<i2")
            out.writeframes(pcm.T.tobytes())


class _Encoder:
    """An ffmpeg process encoding raw RGB frames from its stdin into an H.264 file (yuv420p, CRF from
    imageio's 0..10 quality scale). Our own process handle, so that :meth:`stop` can make sure ffmpeg
    has exited (a running ffmpeg could still create or write its output file after it was deleted).
    It runs in its own session: a Ctrl-C in the terminal reaches this process, which stops it."""

    def __init__(self, path: Path, width: int, height: int, fps: float, quality: float) -> None:
        from fractions import Fraction

        self.path = path
        self.proc: subprocess.Popen | None = None
        crf = int((1 - quality / 10.0) * 51)
        cmd = [ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
               "-pix_fmt", "rgb24", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an",
               "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf)]
        if width % 2 or height % 2:   # yuv420p needs even sides: stretch by one pixel (callers pad instead)
            cmd += ["-vf", f"scale={width + width % 2}:{height + height % 2}"]
        cmd += ["-v", "error", str(path)]
        self.cmd = cmd

    def start(self) -> None:
        """Start ffmpeg. Stop signals wait until its handle is stored, so an interrupt never leaves an
        ffmpeg running that :meth:`stop` does not know of."""
        with stop_signals_deferred():
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, start_new_session=True)

    def _failed(self, what: str) -> ValueError:
        self.stop()
        tail = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        return ValueError(f"ffmpeg could not {what} {self.path}: {' / '.join(tail) or 'it stopped'}.")

    def write(self, frame: np.ndarray) -> None:
        """Send one ``(H, W, 3)`` uint8 RGB frame of the size given at start."""
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, ValueError, OSError):
            raise self._failed("encode") from None

    def finish(self) -> None:
        """End the input and wait for ffmpeg to write the file; ValueError if it failed."""
        try:
            _, err = self.proc.communicate()
        finally:
            if self.proc.poll() is None:   # interrupted while waiting
                self.stop()
        if self.proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise ValueError(f"ffmpeg could not finish {self.path}: {' / '.join(tail) or 'unknown error'}.")

    def stop(self) -> None:
        """Kill ffmpeg (if still running) and wait until it has exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:   # the pipe is broken: nothing left to flush
                pass


class Mp4Writer:
    """Stream RGB frames into an H.264 mp4; optionally mux audio trimmed to the video length.

    Use as a context manager::

        with Mp4Writer(path, fps=25, audio=wave, sample_rate=sr) as out:
            for batch in frames:          # (b, H, W, 3) uint8, or one (H, W, 3)
                out.write(batch)

    Frame sizes must stay constant. Odd sides are scaled to the next even number (yuv420p).
    Frames go to a temporary file beside ``path``; the audio is muxed and the result renamed onto
    ``path`` only when the writer closes normally (:func:`atomic_output`). On an exception or an
    interrupt, at any point, the temporary files are removed and a file already at ``path`` is
    left untouched.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, audio: np.ndarray | None = None,
                 sample_rate: int | None = None, quality: float = 8.0):
        self.path = Path(path)
        self.fps = float(fps)
        self.audio = audio
        self.sample_rate = sample_rate
        self.quality = quality
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self._encoder: _Encoder | None = None
        self._video_path: Path | None = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        temp_path_beside(self.path, "video", claim=self._claim_video_path)
        self._encoder = _Encoder(self._video_path, width, height, self.fps, self.quality)
        self._encoder.start()

    def _claim_video_path(self, path: Path | None) -> None:
        self._video_path = path   # known to abort() before the file exists

    def write(self, frames: np.ndarray) -> None:
        """Append one frame ``(H, W, 3)`` or a batch ``(b, H, W, 3)`` of uint8 RGB."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"Frames must be (H, W, 3) or (b, H, W, 3) RGB, got shape {frames.shape}.")
        if frames.dtype != np.uint8:
            raise ValueError(f"Frames must be uint8, got {frames.dtype}.")
        height, width = frames.shape[1:3]
        if self._encoder is None:
            self._open(width, height)
        elif (width, height) != self.size:
            raise ValueError(f"Frame size changed from {self.size} to {(width, height)} while writing {self.path}.")
        for frame in frames:
            self._encoder.write(frame)
            self.frames_written += 1

    def close(self) -> Path:
        """Finish the video and mux the audio; returns the output path."""
        if self._encoder is None:
            raise ValueError(f"No frames were written to {self.path}.")
        try:
            self._encoder.finish()
            self._encoder = None
            if self.audio is not None:
                mux_audio(self._video_path, self.audio, int(self.sample_rate or 16000), self.path,
                          self.frames_written, self.fps)
            else:
                os.replace(self._video_path, self.path)
        finally:
            self.abort()   # removes the temporary video (and stops ffmpeg if closing was interrupted)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete this writer's temporary files; a file already at ``path`` is kept."""
        if self._encoder is not None:
            self._encoder.stop()   # ffmpeg has exited when this returns: it cannot re-create the file below
            self._encoder = None
        if self._video_path is not None:
            self._video_path.unlink(missing_ok=True)
            self._video_path = None


def mux_audio(video_path: str | os.PathLike, audio: np.ndarray, sample_rate: int, out_path: str | os.PathLike,
              num_frames: int, fps: float = 25.0) -> Path:
    """Copy the video stream of ``video_path`` and add ``audio`` cut to ``num_frames / fps`` seconds.

    ``out_path`` is replaced only by a complete file (:func:`atomic_output`)."""
    out_path = Path(out_path)
    trimmed = fit_audio(audio, sample_rate, num_frames, fps)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    claimed = _Claimed()
    try:
        wav_path = temp_path_beside(out_path.with_suffix(".wav"), "audio", claim=claimed)
        write_wav(wav_path, trimmed, sample_rate)
        with atomic_output(out_path) as tmp:   # an earlier out_path survives any failure or interrupt
            _run_ffmpeg(["-y", "-v", "error", "-i", str(video_path), "-i", str(wav_path), "-map", "0:v:0",
                         "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "192k",
                         "-t", f"{num_frames / fps:.6f}", "-movflags", "+faststart", str(tmp)],
                        f"mux audio into {out_path}")
    finally:
        claimed.remove()
    return out_path
