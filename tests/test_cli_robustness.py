"""Issue 15: the CLI never loses a user's file or a finished render.

* outputs are written atomically (a failed or interrupted mux leaves an earlier video byte-identical);
* SIGINT and SIGTERM stop a run cleanly, with no stray temporary files;
* arguments, input files, the mapping file and the speech are checked before the big checkpoint is
  read (these tests give a corrupt checkpoint: an early check reports its own problem instead);
* high-bit-depth images, negative angle paths, wrong kinds of weight file, busy outputs, damaged
  coefficients get a correct result or a sentence saying what to do.

The signal and mux tests run the real CLI in a subprocess on the stand-in weights (1-2 frames).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MEDIA
from test_cli import REPO, cli, short_wav

from sadtalker_models.__main__ import join_negative_values, main
from sadtalker_models.video import Mp4Writer, atomic_output, check_writable, output_folder, output_lock, read_image

CORRUPT = "truncated or corrupt"


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def corrupt_models(tmp_path, weights_dir) -> Path:
    """A models folder whose SadTalker checkpoint is garbage (reading it is the first heavy step) and
    whose mapping files are the real stand-ins."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "SadTalker_V0.0.2_256.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"):
        (folder / name).symlink_to(weights_dir / name)
    return folder


def run_main(caplog, *args: str) -> tuple[int, str]:
    """``python -m sadtalker_models`` in this process: exit status and the logged errors."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        code = main(list(args))
    return code, "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def start_cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    log = open(tmp_path / "cli.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "sadtalker_models", *args], cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})


def wait_until(proc: subprocess.Popen, ready, tmp_path: Path, timeout: float = 100.0) -> None:
    """Poll ``ready()`` until true; fail (with the CLI's output) if the CLI ends first or time runs out."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the CLI did not reach the point to interrupt (status {proc.poll()}):\n"
                        + (tmp_path / "cli.log").read_text(errors="replace")[-3000:])
        time.sleep(0.05)


def finish(proc: subprocess.Popen, tmp_path: Path, timeout: float = 60.0) -> tuple[int, str]:
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, (tmp_path / "cli.log").read_text(errors="replace")


def previous_output(folder: Path) -> tuple[Path, bytes]:
    """An earlier run's video at ``folder/talk.mp4`` (a real mp4), and its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "talk.mp4"
    shutil.copyfile(MEDIA / "ref_pose_blink_3s.mp4", out)
    return out, out.read_bytes()


def render_args(weights_dir: Path, audio: Path, out: Path) -> list[str]:
    return ["--image", str(MEDIA / "art_0.png"), "--audio", str(audio), "--out", str(out), "--models-dir",
            str(weights_dir), "--device", "cpu", "--landmark-backend", "dlib", "--batch-size", "1"]


# --------------------------------------------------------------------------- items 1 and 3: atomic outputs, interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_render_removes_temporary_files_and_keeps_the_old_video(weights_dir, tmp_path, caplog, sig):
    out, before = previous_output(tmp_path / "out")
    audio = short_wav(tmp_path / "speech.wav", 0.09)            # 2 frames, rendered one at a time
    proc = start_cli(tmp_path, *render_args(weights_dir, audio, out))
    try:
        # the first frame is in the encoder: a temporary video exists beside the output
        wait_until(proc, lambda: any(p.suffix == ".mp4" and p != out for p in out.parent.iterdir()), tmp_path)
        if sig == signal.SIGTERM:   # item 8: a second run writing the same file is refused at once
            code, errors = run_main(caplog, *render_args(weights_dir, audio, out))
            assert code == 1 and "Another run is already writing" in errors, errors
        proc.send_signal(sig)
        code, log = finish(proc, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 128 + sig, log[-3000:]
    assert "Interrupted" in log and "Traceback" not in log, log[-3000:]
    left = {p.name: p.stat().st_size for p in out.parent.iterdir()}
    assert sorted(left) == ["talk.mp4"], (left, log[-3000:])   # sizes: 0 = never deleted, > 0 = written late
    assert out.read_bytes() == before


FAKE_FFMPEG = """#!/bin/sh
# ffmpeg, except that the final mux (the call that copies the video stream) goes wrong: it writes
# 48 bytes of partial output to its output file, then {what}
for last; do :; done
case " $* " in
  *" -c:v copy "*)
    printf 'partial mp4 written before the disk filled up..\\n' > "$last"
    {then}
    ;;
esac
exec "{real}" "$@"
"""


@pytest.mark.parametrize("failure", ["ffmpeg fails", "SIGINT"])
def test_a_failed_or_interrupted_mux_keeps_the_old_video_byte_identical(weights_dir, tmp_path, failure):
    import imageio_ffmpeg

    out, before = previous_output(tmp_path / "out")
    marker = tmp_path / "muxing"
    then = ('echo "No space left on device" >&2; exit 1' if failure == "ffmpeg fails"
            else f'touch "{marker}"; exec sleep 30')
    fake = tmp_path / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(what=failure, then=then, real=imageio_ffmpeg.get_ffmpeg_exe()))
    fake.chmod(0o755)
    audio = short_wav(tmp_path / "speech.wav", 0.05)            # 1 frame
    proc = start_cli(tmp_path, *render_args(weights_dir, audio, out), env={"IMAGEIO_FFMPEG_EXE": str(fake)})
    try:
        if failure == "SIGINT":
            wait_until(proc, marker.exists, tmp_path)
            proc.send_signal(signal.SIGINT)
        code, log = finish(proc, tmp_path, timeout=100)
    finally:
        if proc.poll() is None:
            proc.kill()
    if failure == "SIGINT":
        assert code == 130, log[-3000:]
    else:
        assert code == 1 and "No space left on device" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["talk.mp4"]


@pytest.fixture
def slow_ffmpeg(tmp_path, monkeypatch) -> str:
    """This process's ffmpeg, made to start 1 s late (a loaded machine): a shell script that sleeps, then
    execs the real one. Returns its path. get_ffmpeg_exe() is cached, so $IMAGEIO_FFMPEG_EXE would not
    reach this process: the lookup is patched."""
    import imageio_ffmpeg
    import imageio_ffmpeg._io

    slow = tmp_path / "slow_ffmpeg"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec "{imageio_ffmpeg.get_ffmpeg_exe()}" "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(slow))
    monkeypatch.setattr(imageio_ffmpeg._io, "get_ffmpeg_exe", lambda: str(slow))
    return str(slow)


class _Interrupted(BaseException):
    """What the test's signal handler raises, standing in for KeyboardInterrupt (which would end pytest)."""


def test_an_interrupt_stops_the_encoder_at_once_and_leaves_no_file(tmp_path, monkeypatch, slow_ffmpeg):
    """Ctrl-C while a slow ffmpeg (it starts 1 s late) holds a frame: the writer kills ffmpeg and
    waits for it to exit before deleting the temporary file, so nothing is created afterwards, and
    it does not wait for the encoder to finish (the previous writer, imageio-ffmpeg's generator,
    waited for ffmpeg to encode what it had been sent)."""
    import subprocess as sp

    started = []
    real_popen = sp.Popen
    monkeypatch.setattr(sp, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])

    def interrupt(signum, frame):
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    out_dir = tmp_path / "out"
    try:
        with pytest.raises(_Interrupted):
            with Mp4Writer(out_dir / "talk.mp4", fps=25) as writer:
                writer.write(np.zeros((64, 64, 3), np.uint8))     # 12 KB: fits in the pipe
                signal.setitimer(signal.ITIMER_REAL, 0.1)
                time.sleep(5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    encoder = [p for p in started if p.args[0] == slow_ffmpeg]
    # stopped, not waited for: killed before it even started encoding (the old writer let it run to the end)
    assert len(encoder) == 1 and encoder[0].returncode == -signal.SIGKILL
    time.sleep(1.5)                                    # past the moment a running ffmpeg would write its output
    assert list(out_dir.iterdir()) == []


def test_an_interrupt_just_after_ffmpeg_started_stops_it(tmp_path, monkeypatch, slow_ffmpeg):
    """The Python signal handler runs right after the encoder's ffmpeg was forked, before its handle
    is stored (another thread took the signal, so blocking it in this one does not help). The writer
    must still stop that ffmpeg: otherwise it writes an empty mp4 under the temporary name after the
    cleanup (the 261-byte talk.video.*.mp4 once seen in CI)."""
    import subprocess as sp

    started = []
    real_popen = sp.Popen

    def popen_then_handler(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)      # what Python does when the signal arrives
        return started[-1]

    def interrupt(signum, frame):
        raise _Interrupted

    monkeypatch.setattr(sp, "Popen", popen_then_handler)
    previous = signal.signal(signal.SIGINT, interrupt)
    out_dir = tmp_path / "out"
    try:
        with pytest.raises(_Interrupted):
            with Mp4Writer(out_dir / "talk.mp4", fps=25) as writer:
                writer.write(np.zeros((64, 64, 3), np.uint8))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(started) == 1 and started[0].returncode == -signal.SIGKILL
    time.sleep(1.5)                                    # past the moment a lost ffmpeg would write its output
    assert list(out_dir.iterdir()) == []


def test_atomic_output_replaces_only_a_complete_file(tmp_path):
    out = tmp_path / "video.mp4"
    out.write_bytes(b"earlier video")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"earlier video" and [p.name for p in tmp_path.iterdir()] == ["video.mp4"]
    with atomic_output(out) as tmp:
        assert tmp.parent == out.parent and tmp.suffix == ".mp4"
        tmp.write_bytes(b"new video")
    assert out.read_bytes() == b"new video" and [p.name for p in tmp_path.iterdir()] == ["video.mp4"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask    # not mkstemp's 0o600


# --------------------------------------------------------------------------- item 2: unwritable outputs


def test_an_output_that_is_a_folder_is_refused_before_any_work(corrupt_models, tmp_path, caplog):
    folder = tmp_path / "x.mp4"
    folder.mkdir()
    code, errors = run_main(caplog, "--image", str(MEDIA / "art_0.png"), "--audio", str(MEDIA / "speech_en_16k_3s.wav"),
                            "--out", str(folder), "--models-dir", str(corrupt_models))
    assert code == 1 and "is a folder" in errors and CORRUPT not in errors, errors


def test_an_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "notes").write_text("a file, not a folder")
    with pytest.raises(ValueError, match="Cannot create the output folder"):
        check_writable(tmp_path / "notes" / "talk.mp4")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root (and Windows) ignore the read-only permission bits this test sets")
def test_a_read_only_output_is_refused(tmp_path):
    out = tmp_path / "talk.mp4"
    out.write_bytes(b"keep me")
    out.chmod(0o444)
    with pytest.raises(ValueError, match="read-only"):
        check_writable(out)


# --------------------------------------------------------------------------- item 4: early validation


def nan_wav(path: Path) -> Path:
    from scipy.io import wavfile

    samples = np.zeros(16000, np.float32)
    samples[8000] = np.nan
    wavfile.write(path, 16000, samples)
    return path


@pytest.mark.parametrize("case", ["pose style", "batch size", "NaN expression scale", "missing ref video",
                                  "ref video without video", "missing enhancer", "bad mapping file",
                                  "too-short audio", "NaN audio"])
def test_bad_arguments_and_files_are_reported_before_the_checkpoint_is_read(corrupt_models, tmp_path, caplog, case):
    audio = short_wav(tmp_path / "speech.wav", 0.5)
    extra, expect = {
        "pose style": (["--pose-style", "46"], "--pose-style must be between 0 and 45"),
        "batch size": (["--batch-size", "0"], "--batch-size must be at least 1"),
        "NaN expression scale": (["--expression-scale", "nan"], "--expression-scale must be a finite number"),
        "missing ref video": (["--ref-video", str(tmp_path / "ref.mp4")], "ref.mp4 does not exist"),
        "ref video without video": (["--ref-pose", str(audio)], "has no video stream"),
        "missing enhancer": (["--enhancer", str(tmp_path / "GFPGANv1.4.pth")], "GFPGANv1.4.pth does not exist"),
        "bad mapping file": ([], "is a PNG image, not a SadTalker MappingNet file"),
        "too-short audio": ([], "too short"),
        "NaN audio": ([], "NaN"),
    }[case]
    if case == "bad mapping file":
        (corrupt_models / "mapping_00229-model.pth.tar").unlink()
        shutil.copyfile(MEDIA / "art_0.png", corrupt_models / "mapping_00229-model.pth.tar")
    if case == "too-short audio":
        audio = short_wav(tmp_path / "speech.wav", 0.02)
    if case == "NaN audio":
        audio = nan_wav(tmp_path / "nan.wav")
    started = time.monotonic()
    code, errors = run_main(caplog, "--image", str(MEDIA / "art_0.png"), "--audio", str(audio), "--out",
                            str(tmp_path / "talk.mp4"), "--models-dir", str(corrupt_models), "--device", "cpu", *extra)
    assert code == 1 and expect in errors and CORRUPT not in errors, errors
    assert time.monotonic() - started < 20
    assert not (tmp_path / "talk.mp4").exists() and not list(tmp_path.glob("*.lock"))


# --------------------------------------------------------------------------- item 5: 16-bit grey images


def test_a_16_bit_grey_png_keeps_its_face(tmp_path, detector):
    from PIL import Image

    grey8 = np.asarray(Image.open(MEDIA / "art_0.png").convert("L"))
    path = tmp_path / "grey16.png"
    Image.fromarray(grey8.astype(np.uint16) * 257).save(path)        # 0..255 -> 0..65535 exactly
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image.shape == grey8.shape + (3,) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], grey8) and np.array_equal(image[..., 2], grey8)
    assert detector.detect(image) is not None


# --------------------------------------------------------------------------- item 6: negative angle paths


def test_angle_paths_may_start_with_a_negative_number(corrupt_models, tmp_path, caplog):
    assert join_negative_values(["--yaw", "-10,20", "--pitch", "-.5", "--roll", "3", "--seed", "-1"]) == \
        ["--yaw=-10,20", "--pitch=-.5", "--roll", "3", "--seed", "-1"]
    code, errors = run_main(caplog, "--image", str(MEDIA / "art_0.png"), "--audio", str(MEDIA / "speech_en_16k_3s.wav"),
                            "--out", str(tmp_path / "t.mp4"), "--models-dir", str(corrupt_models), "--yaw", "-10,20",
                            "--roll", "-5", "--pitch", "x")
    assert code == 1 and "pitch path must be numbers" in errors, errors   # parsed as paths, checked, not argparse's


def test_negative_yaw_through_the_real_command_line(tmp_path):
    proc = cli("--image", str(MEDIA / "art_0.png"), "--audio", str(MEDIA / "speech_en_16k_3s.wav"), "--yaw", "-10,20",
               "--batch-size", "0", "--out", str(tmp_path / "t.mp4"), timeout=120)
    assert proc.returncode == 1 and "--batch-size must be at least 1" in proc.stderr, proc.stderr[-2000:]


# --------------------------------------------------------------------------- item 7: a file of the wrong kind


def test_a_mapping_file_given_as_checkpoint_is_named_not_called_corrupt(weights_dir, tmp_path, caplog):
    code, errors = run_main(caplog, "--image", str(MEDIA / "art_0.png"), "--audio", str(MEDIA / "speech_en_16k_3s.wav"),
                            "--out", str(tmp_path / "t.mp4"), "--device", "cpu",
                            "--checkpoint", str(weights_dir / "mapping_00229-model.pth.tar"))
    assert code == 1, errors
    assert "is a SadTalker MappingNet file (70 inputs), not a SadTalker checkpoint" in errors, errors
    assert CORRUPT not in errors and "Delete" not in errors


def test_other_kinds_of_file_are_named(weights_dir):
    from sadtalker_models.checkpoints import CheckpointError, load_mapping, load_sadtalker

    with pytest.raises(CheckpointError, match="is a PNG image, not a SadTalker checkpoint"):
        load_sadtalker(MEDIA / "art_0.png")
    with pytest.raises(CheckpointError, match="is a SadTalker V0.0.2 checkpoint, not a SadTalker MappingNet file"):
        load_mapping(weights_dir / "SadTalker_V0.0.2_256.safetensors")


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pickle_with_code_is_refused_without_torchs_weights_only_hint(tmp_path):
    from sadtalker_models.checkpoints import CheckpointError, load_mapping

    path = tmp_path / "mapping_00229-model.pth.tar"
    torch.save({"mapping": _RunsCode()}, path)
    with pytest.raises(CheckpointError) as err:
        load_mapping(path)
    message = str(err.value)
    assert "getcwd" in message and "refused" in message
    assert "weights_only" not in message and "trusted source" not in message


# --------------------------------------------------------------------------- item 8: minor


@pytest.mark.parametrize("cuda_version, expect", [("12.1", "sees no usable GPU"), (None, "has no CUDA support")])
def test_cuda_without_a_gpu_says_why(monkeypatch, cuda_version, expect):
    from sadtalker_models import pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda_version)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    with pytest.raises(ValueError, match=expect):
        pipeline.resolve_device("cuda")


def test_download_into_a_file_is_a_sentence_not_an_errno(tmp_path, caplog):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"not a folder")
    code, errors = run_main(caplog, "download", "--models-dir", str(target), "--sizes", "256")
    assert code == 1 and f"{target} is a file" in errors and "Errno" not in errors, errors
    assert target.read_bytes() == b"not a folder"


def test_a_second_writer_of_the_same_output_is_refused(tmp_path):
    out = tmp_path / "talk.mp4"
    with output_lock(out) as lock:
        assert lock.exists()
        with pytest.raises(ValueError, match="Another run is already writing"):
            with output_lock(out):
                pass
    assert not lock.exists()
    with output_lock(out):    # free again once the first run is done
        pass


def test_coefficients_with_a_zero_frame_rate_or_nan_are_refused():
    from sadtalker_models.pipeline import Coefficients

    for fps in (0, -25, float("nan"), None):
        with pytest.raises(ValueError, match="frame rate must be a positive number"):
            Coefficients(coeffs=torch.zeros(3, 70), fps=fps)
    bad = torch.zeros(3, 70)
    bad[1, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        Coefficients(coeffs=bad)


@pytest.mark.parametrize("damage", ["fps=0", "NaN"])
def test_a_crafted_coefficient_file_is_refused_when_loaded(damage, tmp_path):
    from safetensors.torch import save_file

    from sadtalker_models import coefficient_files

    coeffs = torch.zeros(4, 70)
    meta = {"format": coefficient_files.COEFF_FORMAT, "fps": "25.0", "still": "False", "source": "audio", "info": "{}"}
    if damage == "fps=0":
        meta["fps"] = "0"
    else:
        coeffs[2, 0] = float("nan")
    path = tmp_path / "crafted.safetensors"
    save_file({"coeffs": coeffs}, str(path), metadata=meta)
    with pytest.raises(ValueError, match="'fps' is 0 frames per second, outside 1..240" if damage == "fps=0" else "NaN"):
        coefficient_files.load_coefficients(str(path))


def test_a_failed_run_removes_the_output_folders_it_created(corrupt_models, tmp_path, caplog):
    """The checkpoint is corrupt, so the run fails after the output was checked: the folders made for
    the output go again; a folder that existed before stays."""
    kept = tmp_path / "videos"
    kept.mkdir()
    out = kept / "new" / "deeper" / "talk.mp4"
    code, errors = run_main(caplog, "--image", str(MEDIA / "art_0.png"), "--audio", str(MEDIA / "speech_en_16k_3s.wav"),
                            "--out", str(out), "--models-dir", str(corrupt_models))
    assert code == 1 and CORRUPT in errors, errors
    assert kept.is_dir() and list(kept.iterdir()) == []


def test_output_folder_keeps_a_created_folder_that_got_files(tmp_path):
    out = tmp_path / "a" / "b" / "talk.mp4"
    with pytest.raises(RuntimeError):
        with output_folder(out):
            (out.parent.parent / "other.txt").write_text("written by something else")
            raise RuntimeError("the run failed")
    assert not out.parent.exists() and (tmp_path / "a" / "other.txt").is_file()
    with output_folder(out):                                   # a run that succeeds keeps them
        pass
    assert out.parent.is_dir()
