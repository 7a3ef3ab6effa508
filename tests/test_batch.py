"""Issue 23: many videos from one manifest (``python -m sadtalker_models batch``), here and on Ray.

The rendering tests share one 3-row manifest with one bad row (1-frame clips on the stand-in
weights, 256 px): the local run writes two videos and records one error, a second run renders
nothing and keeps the results, and the same manifest on a local Ray instance (2 CPU actors) gives
the same files with the same decoded frames. The other tests only read and check manifests.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MEDIA
from test_cli import short_wav

from sadtalker_models import batch
from sadtalker_models.__main__ import main
from sadtalker_models.video import read_video


def row_defaults(weights_dir: Path) -> list[str]:
    return ["--models-dir", str(weights_dir), "--device", "cpu", "--landmark-backend", "dlib", "--size", "256",
            "--batch-size", "1"]


def write_jobs(folder: Path) -> Path:
    """jobs/jobs.csv with inputs beside it: an idle clip, a row whose audio is missing, a speech clip."""
    folder.mkdir(parents=True)
    shutil.copy(MEDIA / "art_0.png", folder / "face.png")
    short_wav(folder / "speech.wav", 0.05)   # one 25-fps frame
    manifest = folder / "jobs.csv"
    manifest.write_text("image,audio,idle,out,still,pose_style,seed\n"
                        "face.png,,0.04,a.mp4,yes,3,1\n"
                        "face.png,missing.wav,,bad.mp4,,,\n"
                        "face.png,speech.wav,,sub/b.mp4,no,,2\n")
    return manifest


def results_of(out_dir: Path) -> dict[int, dict]:
    with open(out_dir / "results.csv", newline="") as fh:
        return {int(row["line"]): row for row in csv.DictReader(fh)}


def frames_of(path: Path) -> np.ndarray:
    frames, _ = read_video(path)
    return np.stack(list(frames))


class Counter:
    """Wraps a function and counts the calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, weights_dir):
    """The manifest run here once: (manifest, out_dir, exit status, source faces prepared).

    On one torch thread, as the 1-CPU Ray actors render: oneDNN's convolutions add in another order
    with another thread count (frames differ by 1 level here and there, which H.264 then spreads)."""
    import torch

    from sadtalker_models import pipeline

    root = tmp_path_factory.mktemp("batch")
    manifest = write_jobs(root / "jobs")
    out_dir = root / "videos"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        prepared = Counter(pipeline.prepare_face)
        patch.setattr(pipeline, "prepare_face", prepared)
        torch.set_num_threads(1)
        try:
            code = main(["-q", "batch", str(manifest), "--out-dir", str(out_dir), *row_defaults(weights_dir)])
        finally:
            torch.set_num_threads(threads)
    return manifest, out_dir, code, prepared.calls


def test_a_bad_row_is_recorded_and_the_others_render(local_run):
    manifest, out_dir, code, prepared = local_run
    assert code == 1   # one row failed
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()) == [
        "a.mp4", "results.csv", "sub/b.mp4"]
    results = results_of(out_dir)
    assert sorted(results) == [2, 3, 4]
    assert [results[n]["status"] for n in (2, 3, 4)] == ["ok", "error", "ok"]
    assert results[3]["out"] == "bad.mp4" and "missing.wav does not exist" in results[3]["error"]
    assert results[2]["frames"] == results[4]["frames"] == "1" and results[4]["out"] == "sub/b.mp4"
    assert prepared == 1   # one picture, one set of face options: prepared once for both videos
    for name in ("a.mp4", "sub/b.mp4"):
        assert len(frames_of(out_dir / name)) == 1


def test_a_second_run_renders_nothing_and_keeps_the_results(local_run, weights_dir, caplog):
    from sadtalker_models import pipeline

    manifest, out_dir, _, _ = local_run
    before = (out_dir / "results.csv").read_bytes()
    stamps = {name: (out_dir / name).stat().st_mtime_ns for name in ("a.mp4", "sub/b.mp4")}
    with pytest.MonkeyPatch.context() as patch:
        prepared = Counter(pipeline.prepare_face)
        patch.setattr(pipeline, "prepare_face", prepared)
        with caplog.at_level(logging.ERROR):
            code = main(["-q", "batch", str(manifest), "--out-dir", str(out_dir), *row_defaults(weights_dir)])
    assert code == 1 and prepared.calls == 0
    assert {name: (out_dir / name).stat().st_mtime_ns for name in stamps} == stamps
    assert (out_dir / "results.csv").read_bytes() == before
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"jobs.csv line 3: --audio {manifest.parent / 'missing.wav'} does not exist; check the path."]
    assert not list(out_dir.glob("*.lock")) and not list(out_dir.glob("*.writing.*"))
    # a video that went missing is rendered again; the rest stay done
    (out_dir / "a.mp4").rename(out_dir / "a-moved.mp4")
    try:
        plan = batch.plan_batch(manifest, out_dir, {"models_dir": str(weights_dir)})
        assert [job.line for job in plan.pending] == [2] and [job.line for job in plan.done] == [4]
    finally:
        (out_dir / "a-moved.mp4").rename(out_dir / "a.mp4")


def test_ctrl_c_stops_between_rows_and_keeps_what_finished(weights_dir, tmp_path, monkeypatch):
    """SIGINT while the second video renders (a stand-in render): exit status 130, the first video
    recorded, the second not, the results file tidy and unlocked; a second run would redo only that one."""
    manifest = write_jobs(tmp_path / "jobs")
    out_dir = tmp_path / "videos"
    calls = []

    def render(job, check_stop, faces):
        calls.append(job.line)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)   # the CLI's handler raises here, as in a real render
        Path(job.args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(job.args.out).write_bytes(b"video")
        return batch.RowResult(job.line, job.out, "ok", "", 0.5, 1)

    monkeypatch.setattr(batch, "render_job", render)
    code = main(["-q", "batch", str(manifest), "--out-dir", str(out_dir), *row_defaults(weights_dir)])
    assert code == 130 and calls == [2, 4]
    assert {n: r["status"] for n, r in results_of(out_dir).items()} == {2: "ok", 3: "error"}
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.mp4", "results.csv"]
    plan = batch.plan_batch(manifest, out_dir, {"models_dir": str(weights_dir)})
    assert [job.line for job in plan.pending] == [4]


def test_the_same_manifest_on_ray_gives_the_same_videos(local_run, weights_dir, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray; an optional extra)")
    manifest, local_dir, _, _ = local_run
    out_dir = tmp_path / "ray-videos"
    # --ray with no address starts Ray on this machine (and shuts it down): 2 actors of 1 CPU each
    code = main(["-q", "batch", str(manifest), "--out-dir", str(out_dir), "--ray", "--cpus-per-actor", "1",
                 "--actors", "2", *row_defaults(weights_dir)])
    assert code == 1 and not ray.is_initialized()
    ours, theirs = results_of(local_dir), results_of(out_dir)
    assert {n: (r["out"], r["status"], r["frames"]) for n, r in theirs.items()} == {
        n: (r["out"], r["status"], r["frames"]) for n, r in ours.items()}
    for name in ("a.mp4", "sub/b.mp4"):
        # the same frames (both on one torch thread) through the same H.264 encoder: equal after decoding
        np.testing.assert_array_equal(frames_of(out_dir / name), frames_of(local_dir / name))


# --------------------------------------------------------------------------- reading and checking


def test_rows_are_read_with_the_run_options(tmp_path, weights_dir):
    (tmp_path / "in").mkdir()
    shutil.copy(MEDIA / "art_0.png", tmp_path / "in" / "face.png")
    short_wav(tmp_path / "in" / "speech.wav", 0.05)
    manifest = tmp_path / "in" / "jobs.jsonl"
    manifest.write_text(
        json.dumps({"image": "face.png", "audio": "speech.wav", "out": "x/one.mp4", "Pose-Style": 7, "still": True,
                    "yaw": [0, -20, 10], "expression_scale": 1.5, "face_index": None}) + "\n\n"
        + json.dumps({"image": "face.png", "idle": 2, "out": "two.mp4", "no_blink": "yes", "seed": 5,
                      "save_coefficients": "two.safetensors", "preprocess": "full"}) + "\n")
    plan = batch.plan_batch(manifest, tmp_path / "out", {"models_dir": str(weights_dir), "device": "cpu",
                                                        "pose_style": 2, "idle": 9.0})
    assert not plan.bad and [job.line for job in plan.pending] == [1, 3]
    one, two = sorted(plan.jobs, key=lambda job: job.line)
    assert one.out == "x/one.mp4" and two.out == "two.mp4"
    a, b = one.args, two.args
    assert (a.pose_style, a.still, a.yaw, a.expression_scale, a.face_index) == (7, True, "0,-20,10", 1.5, -1)
    assert a.audio == str(tmp_path / "in" / "speech.wav") and a.idle is None   # the row's speech replaces --idle
    assert a.out == str(tmp_path / "out" / "x" / "one.mp4") and a.device == "cpu"
    assert (b.idle, b.no_blink, b.seed, b.pose_style, b.preprocess) == (2.0, True, 5, 2, "full")
    assert b.save_coefficients == str(tmp_path / "out" / "two.safetensors")
    assert a.quiet and b.models_dir == str(weights_dir)


def test_every_bad_row_gets_one_sentence_with_its_line(tmp_path):
    shutil.copy(MEDIA / "art_0.png", tmp_path / "face.png")
    (tmp_path / "clip.mp4").write_bytes(b"")   # a video's first frame is a picture too
    rows = [
        {"image": "face.png", "idle": 1, "out": "ok.mp4"},
        {"image": "face.png", "idle": 1, "out": "ok.mp4"},                          # same output as line 1
        {"image": "face.png", "idle": 1, "out": "../face.mp4", "pose_style": 99},   # out of range
        {"image": "face.png", "idle": 1, "out": "x.mp4", "size": 300},              # not a choice
        {"image": "face.png", "idle": 1},                                           # no out
        {"image": "face.png", "idle": 1, "out": "y.mp4", "colour": "red"},          # not an option
        {"image": "face.png", "idle": 1, "out": "z.mp4", "still": "maybe"},
        {"image": "face.png", "idle": 1, "audio": "a.wav", "out": "w.mp4"},         # two speech sources
        {"image": "face.png", "idle": 1, "out": "v.mov"},
        {"image": "clip.mp4", "idle": 1, "out": "../clip.mp4"},                     # its own input
    ]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n[1, 2]\n{not json\n")
    plan = batch.plan_batch(manifest, tmp_path / "out")
    errors = {job.line: job.error for job in plan.bad}
    assert sorted(errors) == list(range(2, 13)) and [job.line for job in plan.pending] == [1]
    assert "also line 1's out" in errors[2]
    assert "--pose-style must be between 0 and 45" in errors[3]
    assert "invalid choice: 300" in errors[4]
    assert errors[5].startswith("no out")
    assert "unknown column colour" in errors[6]
    assert "still must be true or false" in errors[7]
    assert "not allowed with argument" in errors[8]
    assert "must be an .mp4 file" in errors[9]
    assert "same file as --image" in errors[10]
    assert "JSON object" in errors[11] and "not valid JSON" in errors[12]
    for job in plan.bad:   # one sentence each
        assert job.error.endswith(".") and "\n" not in job.error
    assert plan.describe(plan.bad[0]).startswith("jobs.jsonl line 2: ")


def test_a_row_writing_another_rows_input_is_refused(tmp_path):
    shutil.copy(MEDIA / "art_0.png", tmp_path / "face.png")
    (tmp_path / "jobs.csv").write_text("image,idle,out,save_coefficients\n"
                                       "face.png,1,a.mp4,\n"
                                       f"face.png,1,b.mp4,{tmp_path / 'c.safetensors'}\n"
                                       f"{tmp_path / 'out' / 'a.mp4'},1,c.mp4,\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.mp4").write_bytes(b"")   # present, so line 4's image check passes
    plan = batch.plan_batch(tmp_path / "jobs.csv", tmp_path / "out")
    assert [(job.line, job.error.split(";")[0]) for job in plan.bad] == [
        (2, f"out {tmp_path / 'out' / 'a.mp4'} is line 4's image")]


def test_an_unknown_csv_column_stops_the_whole_manifest(tmp_path, caplog):
    (tmp_path / "jobs.csv").write_text("image,audio,out,pose\nface.png,s.wav,a.mp4,3\n")
    with pytest.raises(ValueError, match=r"jobs.csv line 1: unknown column pose; the columns are the run"):
        batch.plan_batch(tmp_path / "jobs.csv")
    with caplog.at_level(logging.ERROR):
        assert main(["batch", str(tmp_path / "jobs.csv"), "--out", "x.mp4"]) == 1
    assert "give it per row in the manifest's out column" in caplog.text
    assert not (tmp_path / "results.csv").exists()


def test_a_missing_ray_is_a_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r'pip install "ray\[default\]"'):
        batch.run_on_ray([batch.Job(1, "a.mp4")], lambda result: None, batch.RayOptions())


@pytest.mark.parametrize("resources, options, jobs, layout", [
    ({"CPU": 64, "GPU": 8}, batch.RayOptions(), 100, (8, 1.0, 1.0)),
    ({"CPU": 64, "GPU": 8}, batch.RayOptions(gpus_per_actor=0, cpus_per_actor=8), 100, (8, 8.0, 0.0)),
    ({"CPU": 16}, batch.RayOptions(), 100, (4, 4.0, 0.0)),
    ({"CPU": 2}, batch.RayOptions(), 100, (1, 2.0, 0.0)),
    ({"CPU": 2}, batch.RayOptions(cpus_per_actor=1), 100, (2, 1.0, 0.0)),
    ({"CPU": 2}, batch.RayOptions(cpus_per_actor=1, max_actors=1), 100, (1, 1.0, 0.0)),
    ({"CPU": 64, "GPU": 8}, batch.RayOptions(), 3, (3, 1.0, 1.0)),
])
def test_actors_are_one_per_gpu_or_per_n_cores(resources, options, jobs, layout):
    assert batch.actor_layout(resources, options, jobs) == layout


def test_an_actor_that_does_not_fit_is_a_sentence():
    with pytest.raises(ValueError, match="has 0 GPUs"):
        batch.actor_layout({"CPU": 8}, batch.RayOptions(gpus_per_actor=1), 5)
    with pytest.raises(ValueError, match="lower --cpus-per-actor"):
        batch.actor_layout({"CPU": 2}, batch.RayOptions(cpus_per_actor=4), 5)
