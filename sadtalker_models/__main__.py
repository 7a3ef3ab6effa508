"""Command line: ``python -m sadtalker_models`` (the same library as the ComfyUI nodes, no ComfyUI needed).

Main job (an mp4 with the speech muxed in)::

    python -m sadtalker_models --image face.png --audio speech.wav --out talking.mp4 \\
        --models-dir ComfyUI/models/sadtalker

Many videos from a CSV or JSONL manifest (here, or on a Ray cluster with ``--ray``)::

    python -m sadtalker_models batch jobs.csv --out-dir videos/ --models-dir ComfyUI/models/sadtalker

Fetch the official weights::

    python -m sadtalker_models download --models-dir ComfyUI/models/sadtalker
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading

from .job import (DEFAULT_MODELS_DIR, FINITE_FLAGS, INPUT_FLAGS, check_model_files, check_run_args,  # noqa: F401
                  check_speech, run, run_video)
from .job import add_run_args as _add_run_args

logger = logging.getLogger("sadtalker_models")

SUBCOMMANDS = ("run", "download", "batch")




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sadtalker_models",
        description="SadTalker: one face picture + speech -> talking-head mp4. "
                    "`download` fetches the official weights.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bar")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="render a talking-head video (the default command)")
    _add_run_args(run)
    dl = sub.add_parser("download", help="download the official weight files")
    dl.add_argument("--models-dir", default=DEFAULT_MODELS_DIR, help="where the SadTalker files go")
    dl.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=(256, 512),
                    help="which SadTalker checkpoints (default: both)")
    dl.add_argument("--enhancer", action="store_true", help="also fetch GFPGANv1.4.pth")
    dl.add_argument("--enhancer-dir", help="where GFPGANv1.4.pth goes (default: ../facerestore_models beside "
                                           "a models/sadtalker folder)")
    dl.add_argument("--no-verify-existing", action="store_true",
                    help="trust files already present when their size matches (skip the sha256)")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    _add_batch_args(sub.add_parser("batch", help="render many videos from a CSV or JSONL manifest (here or on Ray)",
                                   allow_abbrev=False, description=BATCH_HELP,
                                   usage="%(prog)s MANIFEST [--out-dir DIR] [--ray [ADDRESS]] [Ray options] "
                                         "[run options for every row]"))
    return parser


BATCH_HELP = ("One video per manifest row. A manifest is CSV (first line: the column names) or JSONL (one JSON "
              "object a line); its columns are the run options by name (image, audio / idle / coefficients, out, "
              "pose_style, still, ...). Input paths are relative to the manifest's folder, out to --out-dir. Results "
              "go to results.csv in --out-dir; running again skips the rows done (status ok and the video there).")


def _add_batch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="the jobs: a .csv or .jsonl file, one row per video")
    p.add_argument("--out-dir", help="folder for the videos and results.csv (default: the manifest's folder)")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="render on a Ray cluster (pip install \"ray[default]\"): its address (auto, host:6379, "
                        "ray://host:10001), or none to start Ray on this machine; put it after the manifest")
    p.add_argument("--cpus-per-actor", type=float,
                   help="Ray: CPU cores per actor (default 1 with GPUs, else up to 4)")
    p.add_argument("--gpus-per-actor", type=float, help="Ray: GPUs per actor (default 1 when the cluster has GPUs; "
                                                        "0: CPU actors)")
    p.add_argument("--actors", type=int, help="Ray: at most this many actors (default: as many as fit)")
    rows = p.add_argument_group("row defaults", "any run option, for every row (relative paths from the current "
                                                "folder); a manifest column of the same name wins")
    _add_run_args(rows)
    for action in rows._group_actions:   # nothing required here, and only what is given overrides the run defaults
        action.required = False
        if action.help:
            action.help = action.help.replace("%(default)s", str(action.default))
        action.default = argparse.SUPPRESS
    for group in p._mutually_exclusive_groups:
        group.required = False


ANGLE_FLAGS = ("--yaw", "--pitch", "--roll")


def join_negative_values(argv: list[str]) -> list[str]:
    """``--yaw -10,20`` -> ``--yaw=-10,20``: argparse takes a value that starts with ``-`` and is not
    a plain number for an option, so angle paths starting with a negative number need the ``=`` form."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ANGLE_FLAGS and re.match(r"-\.?\d", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Signal handler: raises :class:`Stopped` and remembers the signal.

    Python drops an exception raised while a finalizer or an at-fork callback runs ("Exception ignored
    in ..."), so a signal landing there would be lost; :meth:`check`, called between render batches
    and before the mux, raises it again.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def __call__(self, signum: int, frame) -> None:
        self.received = signum
        raise Stopped(signum)

    def check(self) -> None:
        if self.received is not None:
            raise Stopped(self.received)

    def unraisable(self, info) -> None:
        """``sys.unraisablehook``: a dropped Stopped is only noted (check() raises it); anything else as usual."""
        if isinstance(info.exc_value, Stopped):
            logger.debug("%s arrived inside %r; stopping at the next check", info.exc_value, info.object)
        else:
            sys.__unraisablehook__(info)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; SIGTERM and SIGHUP stop it as cleanly as Ctrl-C (exit status 128 + signal)."""
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        return _main(argv, stop)
    names = [name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {signum: signal.signal(signum, stop) for signum in (getattr(signal, name) for name in names)
                if signal.getsignal(signum) is not signal.SIG_IGN}   # keep what the caller chose to ignore
    hook, sys.unraisablehook = sys.unraisablehook, stop.unraisable
    try:
        return _main(argv, stop)
    finally:
        sys.unraisablehook = hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str] | None = None, stop: StopSignals | None = None) -> int:
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    first = next((a for a in argv if not a.startswith("-")), None)
    if first not in SUBCOMMANDS and not any(a in ("-h", "--help") for a in argv[:1]):
        # the main job is the default command: insert "run" after the global flags
        index = next((i for i, a in enumerate(argv) if a not in ("-v", "--verbose", "-q", "--quiet")), len(argv))
        argv.insert(index, "run")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "download":
            return download(args)
        if args.command == "run":
            return run(args, (stop or StopSignals()).check)
        if args.command == "batch":
            return batch(args, (stop or StopSignals()).check)
        build_parser().print_help()
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        logger.error("Interrupted (%s).", signal.Signals(signum).name)
        return 128 + int(signum)
    except (ValueError, RuntimeError, OSError) as err:
        logger.debug("details", exc_info=True)
        logger.error("%s", err)
        return 1


# --------------------------------------------------------------------------- download


def download(args: argparse.Namespace) -> int:
    from sadtalker_models.download import DownloadError, download_all, select_files

    progress = _download_progress(args.quiet)
    try:
        saved = download_all(args.models_dir, select_files(args.sizes, args.enhancer),
                             enhancer_dir=args.enhancer_dir, progress=progress,
                             verify_existing=not args.no_verify_existing, timeout=args.timeout)
    except DownloadError as err:
        progress.close()
        logger.error("%s", err)
        return 1
    progress.close()
    for path in saved:
        logger.info("ok: %s", path)
    return 0


class _download_progress:
    """tqdm bar per file for download_all's progress(file, done, total) callback."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.name = None

    def __call__(self, file, done: int, total: int) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if self.name != file.name:
            self.close()
            self.name = file.name
            self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=file.name)
        else:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.name = None


# --------------------------------------------------------------------------- batch


def batch(args: argparse.Namespace, check_stop=lambda: None) -> int:
    """The batch command (:mod:`sadtalker_models.batch`): 0 when every row is done, 1 when one failed."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from sadtalker_models import batch as jobs

    defaults = jobs.given_run_options(args)
    for name in ("out", "save_coefficients"):
        if name in defaults:
            raise ValueError(f"--{name.replace('_', '-')} names one file: give it per row in the manifest's {name} "
                             "column (and the folder with --out-dir).")
    plan = jobs.plan_batch(args.manifest, args.out_dir, defaults)
    for job in plan.bad:
        logger.error("%s", plan.describe(job))
    if plan.done:
        logger.info("%d of %d rows already done (see %s)", len(plan.done), len(plan.jobs), plan.results_path)
    ray = None if args.ray is None else jobs.RayOptions(args.ray or None, args.cpus_per_actor, args.gpus_per_actor,
                                                         args.actors)
    bar = tqdm(total=len(plan.pending), unit="video", desc="batch", disable=args.quiet)

    def progress(result) -> None:
        if result.status != "ok":
            logger.error("%s", plan.describe(result, result.error))
        bar.update(1)

    try:
        with logging_redirect_tqdm():
            summary = jobs.run_batch(plan, ray=ray, check_stop=check_stop, progress=progress)
    finally:
        bar.close()
    logger.info("%d videos written, %d rows failed, %d already done; results in %s", summary.ok, summary.failed,
                summary.skipped, plan.results_path)
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
