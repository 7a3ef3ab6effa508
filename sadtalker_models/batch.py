"""Batch jobs: many talking-head videos from one manifest, in this process or on a Ray cluster.

A manifest is a CSV file (a header row names the columns) or a JSONL file (one JSON object a line);
each row is one video. The columns are the ``run`` command's options by name (``image``, ``audio``
or ``idle`` or ``coefficients``, ``out``, ``preprocess``, ``still``, ``pose_style``, ``seed``, ...;
dashes or underscores). They are read with the run command's own parser and checked with its own
checks (:func:`.job.check_run_args`), so a row means what the same options
mean to ``run``, and a new run option is a new column at once. Flags (``still``, ``no_blink``)
take true/false, yes/no, 1/0; an empty cell (or a JSON ``null``) leaves an option at its default.
Relative input paths are relative to the manifest's folder, ``out`` (and ``save_coefficients``)
relative to the output folder.

Every row is checked before any work starts: the run checks (files present, numbers in range,
outputs distinct from the row's inputs), plus, across rows, no two rows writing the same file and
no row writing over another row's input. A bad row is recorded as an error; the other rows run.

Results go to ``results.csv`` in the output folder (columns :data:`RESULT_FIELDS`), one record
appended as each video finishes and the file tidied to one record per video at the end. A row is
done when its latest record says ``ok`` and its video exists; a second run skips done rows, so a
stopped or partly failed batch is resumed by running it again.

In this process (:func:`run_local`) the models load once (the process-wide model cache of
:func:`.pipeline.load_models`) and each source face is prepared once (:class:`FaceCache`; rows are
ordered so that rows sharing a picture run one after another). On Ray (:func:`run_on_ray`) each
actor is one such process: one actor per GPU, or per N CPU cores; rows are streamed to whichever
actor is free and their results gathered here. Ray is optional and imported only there.

The run command's definitions (its options, checks and work) live in :mod:`.job`, below both the
CLI and this module, so ``run`` and ``batch`` share one definition of what a video's options are.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import job as run_options

logger = logging.getLogger(__name__)

#: The results file's name, in the output folder.
RESULTS_NAME = "results.csv"
#: The results file's columns.
RESULT_FIELDS = ("line", "out", "status", "error", "seconds", "frames")
#: Run options naming folders read from (relative to the manifest's folder in a row).
FOLDER_OPTIONS = ("models_dir", "landmark_dir")
#: Run options naming files written (relative to the output folder in a row).
OUTPUT_OPTIONS = ("out", "save_coefficients")
MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


# --------------------------------------------------------------------------- row options


class _RowParser(argparse.ArgumentParser):
    """The run command's parser, raising ValueError instead of exiting on a bad value."""

    def error(self, message: str):
        raise ValueError(message)


def row_parser() -> argparse.ArgumentParser:
    """A parser with exactly the run command's options (``_add_run_args``), for one manifest row."""
    parser = _RowParser(prog="row", add_help=False, allow_abbrev=False)
    run_options.add_run_args(parser)
    return parser


def row_options(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.Action]:
    """The run options a row may set, by name (the option's ``dest``: ``pose_style``)."""
    parser = parser or row_parser()
    return {action.dest: action for action in parser._actions if action.option_strings}


def option_name(name: str) -> str:
    """A column or key as an option name: ``--Pose-Style`` -> ``pose_style``."""
    return name.strip().lstrip("-").replace("-", "_").lower()


def given_run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options present in ``args`` (a namespace whose unset options are absent, as the batch
    command's ``argparse.SUPPRESS`` defaults leave them), by name."""
    return {name: getattr(args, name) for name in row_options() if hasattr(args, name)}


def _flag(action: argparse.Action) -> str:
    return next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])


def _truth(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{name} takes a value, not {str(value).lower()}.")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, (dict, type(None))):
        raise ValueError(f"{name} takes a single value, got {json.dumps(value)}.")
    return str(value)


def options_to_argv(values: Mapping[str, Any], options: Mapping[str, argparse.Action]) -> list[str]:
    """Row values (``{"pose_style": "3", "still": "yes"}``) as run command arguments
    (``["--pose-style=3", "--still"]``); flags take true/false."""
    argv: list[str] = []
    for name, value in values.items():
        action = options[name]
        if action.nargs == 0:   # a flag (store_true / store_false)
            if _truth(value, name) == action.const:
                argv.append(_flag(action))
        else:
            argv.append(f"{_flag(action)}={_text(value, name)}")
    return argv


def _exclusive_groups(parser: argparse.ArgumentParser) -> list[set[str]]:
    return [{action.dest for action in group._group_actions} for group in parser._mutually_exclusive_groups]


def merge_options(defaults: Mapping[str, Any], row: Mapping[str, Any],
                  parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``defaults`` overridden by ``row``; a row naming one option of a mutually exclusive group
    (``audio`` / ``idle`` / ``coefficients``) replaces the defaults' choice in that group."""
    merged = dict(defaults)
    for group in _exclusive_groups(parser):
        if group & row.keys():
            for name in group:
                merged.pop(name, None)
    merged.update(row)
    return merged


# --------------------------------------------------------------------------- manifest


@dataclass
class ManifestRow:
    """One row of a manifest: its line number (1-based; the first line of a CSV record), its values
    by option name, and why it cannot be read (None when it can)."""

    line: int
    values: dict[str, Any]
    error: str | None = None


def manifest_format(path: str | os.PathLike) -> str:
    """``"csv"`` or ``"jsonl"`` from the file name; ValueError for anything else."""
    kind = MANIFEST_SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise ValueError(f"The manifest {path} must be a .csv or .jsonl file.")
    return kind


def read_manifest(path: str | os.PathLike, names: Iterable[str] | None = None) -> list[ManifestRow]:
    """The rows of a CSV or JSONL manifest, in file order; blank lines are skipped.

    ``names``: the accepted column names (default: the run options). An unknown CSV column fails the
    whole manifest (ValueError naming the line); an unknown JSONL key, a line that is not a JSON
    object or a CSV record with extra cells marks that row's ``error``.
    """
    path = Path(path)
    kind = manifest_format(path)
    names = set(names if names is not None else row_options())
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"The manifest {path} {what}.")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return _read_csv(fh, path, names) if kind == "csv" else _read_jsonl(fh, names)


def _unknown(keys: Iterable[str], names: set[str]) -> str | None:
    unknown = sorted(k for k in keys if k not in names)
    if not unknown:
        return None
    return (f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; the columns are the run "
            "command's options (image, audio, idle, coefficients, out, pose_style, ...: "
            "see `python -m sadtalker_models run --help`)")


def _read_csv(fh, path: Path, names: set[str]) -> list[ManifestRow]:
    reader = csv.reader(fh)
    try:
        header = next(reader)
        while not any(cell.strip() for cell in header):
            header = next(reader)
    except StopIteration:
        raise ValueError(f"The manifest {path} is empty; its first line names the columns "
                         "(e.g. image,audio,out).") from None
    except csv.Error as err:
        raise ValueError(f"{path} line {reader.line_num}: {err}.") from None
    columns = [option_name(cell) for cell in header]
    problem = _unknown(columns, names)
    if problem is None and len(set(columns)) < len(columns):
        problem = f"the column {next(c for c in columns if columns.count(c) > 1)} appears twice"
    if problem is not None:
        raise ValueError(f"{path} line {reader.line_num}: {problem}.")
    rows: list[ManifestRow] = []
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            rows.append(ManifestRow(start, {}, f"{err}."))
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            rows.append(ManifestRow(line, {}, f"{len(cells)} cells for {len(columns)} columns."))
            continue
        values = {name: cell.strip() for name, cell in zip(columns, cells) if cell.strip()}
        rows.append(ManifestRow(line, values))
    return rows


def _read_jsonl(fh, names: set[str]) -> list[ManifestRow]:
    rows: list[ManifestRow] = []
    for line, text in enumerate(fh, 1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            rows.append(ManifestRow(line, {}, f"not valid JSON ({err.msg} at column {err.colno})."))
            continue
        if not isinstance(obj, dict):
            rows.append(ManifestRow(line, {}, 'each line must be a JSON object, e.g. {"image": "face.png", '
                                              '"audio": "speech.wav", "out": "talk.mp4"}.'))
            continue
        values = {option_name(key): value for key, value in obj.items()
                  if value is not None and not (isinstance(value, str) and not value.strip())}
        problem = _unknown(values, names)
        rows.append(ManifestRow(line, values if problem is None else {}, None if problem is None else f"{problem}."))
    return rows


# --------------------------------------------------------------------------- jobs


@dataclass
class _Row:
    """A manifest row's line and video (``out``: relative to the output folder when inside it)."""

    line: int
    out: str

    @property
    def key(self) -> str:
        """What identifies the row's record in the results: its video (its line when it has none)."""
        return self.out or f"#{self.line}"


@dataclass
class Job(_Row):
    """One manifest row ready to render: the run arguments (``args``, paths absolute) or, for a bad
    row, ``error`` (one sentence)."""

    args: argparse.Namespace | None = None
    error: str | None = None


@dataclass
class RowResult(_Row):
    """One record of the results file."""

    status: str            # "ok" or "error" (a run that was stopped records nothing)
    error: str = ""
    seconds: float = 0.0
    frames: int = 0


@dataclass
class BatchPlan:
    """Every row of a manifest, checked, and what a run has to do."""

    manifest: Path
    out_dir: Path
    results_path: Path
    jobs: list[Job]                          # every row, manifest order
    previous: dict[str, RowResult]           # the results file as found, by key
    pending: list[Job] = field(default_factory=list)   # to render (rows sharing a picture together)
    done: list[Job] = field(default_factory=list)      # ok before and the video is there
    bad: list[Job] = field(default_factory=list)       # failed a check

    def describe(self, job: Job | RowResult, error: str | None = None) -> str:
        """``jobs.csv line 3: <error>``."""
        return f"{self.manifest.name} line {job.line}: {error if error is not None else job.error}"


def _record_path(path: Path, out_dir: Path) -> str:
    try:
        return path.relative_to(out_dir).as_posix()
    except ValueError:
        return str(path)


def _absolute(value: Any, base: Path) -> str:
    return os.path.abspath(Path(base, os.path.expanduser(str(value))))


def _resolve_paths(values: Mapping[str, Any], inputs: Iterable[str], inputs_base: Path,
                   out_dir: Path) -> dict[str, Any]:
    resolved = dict(values)
    for name, value in values.items():
        if name in OUTPUT_OPTIONS:
            resolved[name] = _absolute(value, out_dir)
        elif name in inputs and isinstance(value, (str, os.PathLike)):
            resolved[name] = _absolute(value, inputs_base)
    return resolved


def _file_id(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(path))


def plan_batch(manifest: str | os.PathLike, out_dir: str | os.PathLike | None = None,
               defaults: Mapping[str, Any] | None = None, results_path: str | os.PathLike | None = None) -> BatchPlan:
    """Read and check every row of ``manifest``; nothing is rendered or written.

    Args:
        manifest: a ``.csv`` or ``.jsonl`` file (see the module docstring).
        out_dir: where the videos and the results go (default: the manifest's folder).
        defaults: run options for every row, by name (``{"models_dir": ..., "device": "cpu"}``);
            a row's own value wins. Relative paths here are relative to the current folder.
        results_path: the results file (default: ``<out_dir>/results.csv``).

    Raises ValueError when the manifest itself cannot be used (missing, wrong kind, unknown CSV
    column); a bad row goes into ``plan.bad`` with one sentence.
    """
    manifest = Path(os.path.abspath(manifest))
    out_dir = Path(os.path.abspath(out_dir if out_dir is not None else manifest.parent))
    results = Path(os.path.abspath(results_path)) if results_path else out_dir / RESULTS_NAME
    parser = row_parser()
    options = row_options(parser)
    path_inputs = set(run_options.INPUT_FLAGS) | set(FOLDER_OPTIONS)
    cwd = Path.cwd()
    base = _resolve_paths(defaults or {}, path_inputs, cwd, cwd)
    unknown = sorted(set(base) - set(options))
    if unknown:
        raise ValueError(f"Not run options: {', '.join(unknown)}.")
    rows = read_manifest(manifest, options)
    previous = read_results(results) if results.is_file() else {}
    plan = BatchPlan(manifest, out_dir, results, [], previous)

    for row in rows:
        job = Job(row.line, "", error=row.error)
        plan.jobs.append(job)
        if job.error:
            continue
        values = _resolve_paths(row.values, path_inputs, manifest.parent, out_dir)
        if "out" not in values:
            job.error = "no out: give each row the file name of its video (relative to the output folder)."
            continue
        job.out = _record_path(Path(values["out"]), out_dir)
        try:
            args = parser.parse_args(options_to_argv(merge_options(base, values, parser), options))
        except ValueError as err:
            job.error = f"{str(err).rstrip('.')}."
            continue
        for name in path_inputs:   # parser defaults (models/sadtalker) are relative to the current folder
            if isinstance(getattr(args, name, None), str):
                setattr(args, name, _absolute(getattr(args, name), cwd))
        args.quiet = True          # the batch shows its own progress
        job.args = args
        if _is_done(plan, job):
            plan.done.append(job)
            continue
        try:
            run_options.check_run_args(args)
        except ValueError as err:
            job.error = str(err)
            job.args = None

    done = {id(job) for job in plan.done}
    # done rows first: they keep their outputs
    _check_across_rows(plan.done + [job for job in plan.jobs if id(job) not in done], path_inputs)
    plan.done = [job for job in plan.done if not job.error]
    plan.bad = [job for job in plan.jobs if job.error]
    plan.pending = sorted((job for job in plan.jobs if not job.error and id(job) not in done), key=_face_order)
    return plan


def _is_done(plan: BatchPlan, job: Job) -> bool:
    record = plan.previous.get(job.key)
    return record is not None and record.status == "ok" and Path(plan.out_dir, record.out).is_file()


def _check_across_rows(jobs: list[Job], inputs: Iterable[str]) -> None:
    """Mark the rows that would write a file another row writes or reads: for a shared output the row
    that comes later in ``jobs``, for an input the row writing it."""
    written: dict[str, tuple[int, str]] = {}
    read: dict[str, tuple[int, str]] = {}
    good = [job for job in jobs if job.args is not None and not job.error]
    for job in good:
        for name in inputs:
            value = getattr(job.args, name, None)
            if value and name not in FOLDER_OPTIONS:
                read.setdefault(_file_id(value), (job.line, name))
    for job in good:
        for name in OUTPUT_OPTIONS:
            value = getattr(job.args, name, None)
            if not value:
                continue
            key = _file_id(value)
            if key in written:
                line, other = written[key]
                job.error = (f"{name} {value} is also line {line}'s {other}; give each row its own output "
                             "file.")
                break
            if key in read and read[key][0] != job.line:
                line, other = read[key]
                job.error = (f"{name} {value} is line {line}'s {other}; writing it would replace that "
                             "row's input. Choose another output name.")
                break
            written[key] = (job.line, name)
        if job.error:
            job.args = None


def _face_order(job: Job) -> tuple:
    """Sort key that puts rows sharing a source face next to each other (manifest order otherwise)."""
    a = job.args
    return (str(a.image), a.preprocess, str(a.size), a.face_index, str(a.face_mask), a.landmark_backend,
            str(a.landmark_dir), job.line)


# --------------------------------------------------------------------------- results file


def read_results(path: str | os.PathLike) -> dict[str, RowResult]:
    """The latest record of each video in a results file (later records win); unreadable records
    (a line cut short by a crash) are skipped."""
    records: dict[str, RowResult] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            try:
                record = RowResult(int(raw["line"]), raw["out"] or "", raw["status"], raw.get("error") or "",
                                   float(raw.get("seconds") or 0), int(raw.get("frames") or 0))
            except (KeyError, TypeError, ValueError):
                continue
            records[record.key] = record
    return records


def _row(result: RowResult) -> dict[str, Any]:
    return {"line": result.line, "out": result.out, "status": result.status, "error": result.error,
            "seconds": f"{result.seconds:.2f}", "frames": result.frames}


def append_result(path: str | os.PathLike, result: RowResult) -> None:
    """Append one record (the header first when the file is new), flushed to disk."""
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, RESULT_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(_row(result))
        fh.flush()
        os.fsync(fh.fileno())


def write_results(path: str | os.PathLike, records: Iterable[RowResult]) -> None:
    """Replace the results file atomically with ``records``, one per video, by line."""
    from .video import atomic_output

    with atomic_output(path, "writing") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, RESULT_FIELDS)
            writer.writeheader()
            for record in sorted(records, key=lambda r: (r.line, r.out)):
                writer.writerow(_row(record))


# --------------------------------------------------------------------------- rendering


class FaceCache:
    """:func:`.pipeline.prepare_face` with memory: the same picture with the same face options on
    the same models is prepared once. Keyed by the pixels (so two paths of one picture share an
    entry), the options and the models' checkpoint, device and dtype; keeps the ``max_items`` most
    recently used faces. Call it like ``prepare_face``."""

    def __init__(self, max_items: int = 4):
        self.max_items = max_items
        self.prepared = 0          # how many faces were actually prepared
        self._faces: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def _digest(array: Any) -> tuple | None:
        if array is None:
            return None
        import numpy as np

        data = np.ascontiguousarray(array)
        return (data.shape, str(data.dtype), hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest())

    def __call__(self, models: Any, image: Any, preprocess: str = "crop", size: int | None = None,
                 landmark_backend: str = "auto", landmark_dir: str | None = None,
                 face_index: int | None = None, mask: Any = None) -> Any:
        from . import pipeline

        key = (str(models.checkpoint), str(models.device), str(models.dtype), self._digest(image), preprocess,
               size, landmark_backend, landmark_dir, face_index, self._digest(mask))
        if key in self._faces:
            self._faces.move_to_end(key)
            return self._faces[key]
        face = pipeline.prepare_face(models, image, preprocess, size, landmark_backend, landmark_dir,
                                     face_index=face_index, mask=mask)
        self.prepared += 1
        self._faces[key] = face
        while len(self._faces) > self.max_items:
            self._faces.popitem(last=False)
        return face


def render_job(job: Job, check_stop: Callable[[], None] = lambda: None, faces: FaceCache | None = None) -> RowResult:
    """Render one checked row as the run command does (outputs checked and locked, written atomically).

    Any error is returned as an ``error`` record, so one bad video never stops the others; an
    interrupt (``check_stop`` raising, Ctrl-C) propagates after the run's own cleanup.
    """
    start = time.perf_counter()
    try:
        video = run_options.run_video(job.args, check_stop, faces)
    except (ValueError, RuntimeError, OSError) as err:   # the errors `run` reports as a sentence
        logger.debug("line %d failed", job.line, exc_info=True)
        return RowResult(job.line, job.out, "error", str(err), time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - recorded; the other rows go on
        logger.warning("line %d failed unexpectedly", job.line, exc_info=True)
        return RowResult(job.line, job.out, "error", f"{type(err).__name__}: {err}", time.perf_counter() - start)
    return RowResult(job.line, job.out, "ok", "", time.perf_counter() - start, int(video.frames))


@dataclass
class BatchSummary:
    """What a batch run did: the records it wrote, and the rows it skipped as done."""

    results: list[RowResult]
    skipped: int

    @property
    def ok(self) -> int:
        return sum(r.status == "ok" for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.status != "ok" for r in self.results)


@dataclass
class RayOptions:
    """Where and how to run on Ray.

    ``address``: a cluster address (``auto``, ``host:6379``, ``ray://host:10001``); None starts a
    local Ray instance (or joins ``$RAY_ADDRESS``), unless Ray is already initialised in this process.
    ``gpus_per_actor``: default 1 when the cluster has GPUs, else 0 (CPU actors).
    ``cpus_per_actor``: default 1 for GPU actors, else min(4, the cluster's CPUs).
    ``max_actors``: at most this many actors (default: as many as the resources allow).
    """

    address: str | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    max_actors: int | None = None


def run_batch(plan: BatchPlan, *, ray: RayOptions | None = None, check_stop: Callable[[], None] = lambda: None,
              progress: Callable[[RowResult], None] | None = None) -> BatchSummary:
    """Run a checked plan: record the bad rows, render the pending ones (here, or on Ray when ``ray``
    is given), append each result to the results file, tidy it at the end (also after an interrupt).

    ``progress(result)`` is called after each rendered row. Holds ``<results>.lock`` for the run, so
    a second batch writing the same results fails at once. ``check_stop()`` runs between rows and
    render batches; it may raise (KeyboardInterrupt) to stop: the video being written is discarded,
    finished ones stay recorded.
    """
    from .video import check_writable, output_lock

    check_writable(plan.results_path)   # creates the output folder
    with output_lock(plan.results_path):
        records = dict(read_results(plan.results_path)) if plan.results_path.is_file() else {}
        written: list[RowResult] = []

        def record(result: RowResult) -> None:
            append_result(plan.results_path, result)
            records[result.key] = result
            written.append(result)

        try:
            for job in plan.bad:
                record(RowResult(job.line, job.out, "error", job.error or ""))
            if plan.pending:
                def finished(result: RowResult) -> None:
                    record(result)
                    if progress is not None:
                        progress(result)

                if ray is None:
                    run_local(plan.pending, finished, check_stop)
                else:
                    run_on_ray(plan.pending, finished, ray, check_stop)
        finally:
            if records:
                write_results(plan.results_path, records.values())
    return BatchSummary(written, len(plan.done))


def run_local(jobs: Iterable[Job], record: Callable[[RowResult], None],
              check_stop: Callable[[], None] = lambda: None) -> None:
    """Render ``jobs`` one after another in this process, calling ``record(result)`` after each."""
    faces = FaceCache()
    for job in jobs:
        check_stop()
        record(render_job(job, check_stop, faces))


# --------------------------------------------------------------------------- Ray


class Stop(KeyboardInterrupt):
    """Raised inside a Ray actor's render when the driver asked it to stop."""


class RowActor:
    """A Ray actor's state: one process holding the models (the model cache) and a :class:`FaceCache`;
    ``render`` takes one job at a time, ``stop`` (from a second thread) ends the current one cleanly."""

    def __init__(self, cpus: float, gpu: bool):
        import torch

        torch.set_num_threads(max(1, int(cpus)))
        self.gpu = gpu
        self.faces = FaceCache()
        self.stopping = threading.Event()
        self.busy = threading.Lock()

    def _check(self) -> None:
        if self.stopping.is_set():
            raise Stop()

    def render(self, job: Job) -> RowResult | None:
        """The job's result, or None when it was stopped."""
        with self.busy:
            if not self.gpu and job.args.device == "auto":
                job.args.device = "cpu"   # a CPU actor on a GPU machine leaves the GPUs to the GPU actors
            try:
                return render_job(job, self._check, self.faces)
            except Stop:
                return None

    def stop(self) -> None:
        self.stopping.set()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError('Ray is not installed: `pip install "ray[default]"` to run batches on a Ray cluster '
                           "(or leave out --ray to render in this process).") from None
    return ray


def actor_layout(resources: Mapping[str, float], options: RayOptions, jobs: int) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each) for a cluster's resources (``ray.cluster_resources()``)."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    per_gpu = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    per_cpu = options.cpus_per_actor if options.cpus_per_actor is not None else (1.0 if per_gpu else min(4.0, cpus))
    if per_gpu < 0 or per_cpu < 0 or (per_cpu == 0 and per_gpu == 0):
        raise ValueError("An actor needs some CPUs or GPUs: give --cpus-per-actor or --gpus-per-actor above 0.")
    if per_gpu > gpus:
        raise ValueError(f"The Ray cluster has {gpus:g} GPUs; an actor with {per_gpu:g} GPUs does not fit.")
    if per_cpu > cpus:
        raise ValueError(f"The Ray cluster has {cpus:g} CPUs; an actor with {per_cpu:g} CPUs does not fit "
                         "(lower --cpus-per-actor).")
    counts = [math.floor(gpus / per_gpu + 1e-9) if per_gpu else None,
              math.floor(cpus / per_cpu + 1e-9) if per_cpu else None]
    actors = min(c for c in counts if c is not None)
    if options.max_actors is not None:
        if options.max_actors < 1:
            raise ValueError(f"--actors must be at least 1, got {options.max_actors}.")
        actors = min(actors, options.max_actors)
    return max(1, min(actors, jobs)), per_cpu, per_gpu


def run_on_ray(jobs: Iterable[Job], record: Callable[[RowResult], None], options: RayOptions,
               check_stop: Callable[[], None] = lambda: None) -> None:
    """Render ``jobs`` on Ray actors (see :class:`RayOptions`), calling ``record(result)`` here as each
    finishes. Rows are streamed: each actor gets the next row when it is free.

    When this call starts Ray (or joins the cluster at ``options.address``), the package travels to
    the nodes as the job's ``py_modules``; when the caller initialised Ray, the actors import it from
    this package's folder (``PYTHONPATH``), so that folder must be reachable from the nodes (or the
    caller's ``runtime_env`` provides the package). The input files and the output folder must be at
    the same paths on every node (one machine, or a shared file system). A Ray instance this call
    started is shut down at the end. On an interrupt the actors are asked to stop
    (their current videos are discarded cleanly), the rows that finished meanwhile are recorded,
    and the interrupt propagates.
    """
    ray = _import_ray()
    jobs = deque(jobs)
    package = Path(__file__).resolve().parent
    started = False
    runtime_env: dict[str, Any] = {}
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING,
                                  "runtime_env": {"py_modules": [str(package)]}}   # uploaded to every node
        if not options.address and not os.environ.get("RAY_ADDRESS"):
            kwargs["include_dashboard"] = False   # a fresh local instance
        main_thread = threading.current_thread() is threading.main_thread()
        sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
        ray.init(address=options.address or None, **kwargs)
        started = True
        if sigterm is not None:   # ray.init makes SIGTERM exit at once; the caller's handler stops cleanly
            signal.signal(signal.SIGTERM, sigterm)
    else:   # the caller's Ray: only a job can upload a package, so the actors import it from this folder
        path = os.pathsep.join(p for p in (str(package.parent), os.environ.get("PYTHONPATH")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
    try:
        count, cpus, gpus = actor_layout(ray.cluster_resources(), options, len(jobs))
        logger.info("Ray: %d actor%s with %g CPU%s%s each", count, "s" * (count != 1), cpus, "s" * (cpus != 1),
                    f" and {gpus:g} GPU" if gpus else "")
        actor_class = ray.remote(RowActor).options(num_cpus=cpus, num_gpus=gpus, max_concurrency=2,
                                                   runtime_env=runtime_env or None)
        actors = [actor_class.remote(cpus, gpus > 0) for _ in range(count)]
        _stream(ray, actors, jobs, record, check_stop)
    finally:
        if started:
            ray.shutdown()


def _stream(ray, actors: list, jobs: deque, record: Callable[[RowResult], None],
            check_stop: Callable[[], None]) -> None:
    free = list(actors)
    running: dict[Any, tuple[Any, Job]] = {}

    def collect(refs) -> None:
        for ref in refs:
            actor, job = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as err:   # the actor's process died: do not use it again
                result = RowResult(job.line, job.out, "error", f"the Ray actor rendering it died ({_first_line(err)}).")
            except ray.exceptions.RayError as err:
                free.append(actor)
                result = RowResult(job.line, job.out, "error", f"Ray: {_first_line(err)}")
            else:
                free.append(actor)
            if result is not None:
                record(result)

    try:
        while jobs or running:
            check_stop()
            while jobs and free:
                actor = free.pop()
                job = jobs.popleft()
                running[actor.render.remote(job)] = (actor, job)
            if not running:
                raise RuntimeError("Every Ray actor died; see the Ray logs (`ray logs`) for why.")
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)   # a timeout lets Ctrl-C in
            collect(done)
    except KeyboardInterrupt:
        for actor in actors:
            actor.stop.remote()
        try:
            if running:
                done, _ = ray.wait(list(running), num_returns=len(running), timeout=60.0)
                collect(done)
        finally:
            for actor in actors:
                ray.kill(actor)
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
