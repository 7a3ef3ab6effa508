"""Screenshots of the example workflows in a real ComfyUI, after a run and after a page reload.

    /path/to/comfy/venv/bin/python scripts/screenshot_comfyui_workflows.py /path/to/ComfyUI \\
        [--extra-node /path/to/ComfyUI-VideoHelperSuite] [--out docs/images] [--chromium /usr/bin/chromium]

A developer tool, not a test. It sets up the same temporary ComfyUI base folder as
``run_comfyui_workflows.py`` (stand-in weights, short inputs), starts ComfyUI, and drives a
headless Chromium with Playwright (``pip install playwright`` into the Python running this; it
uses the system Chromium, nothing is downloaded). For each example workflow it opens the file
in the page, presses Run, waits for the queue to empty and saves ``<name>.png``; then reloads the
page (ComfyUI restores the open workflow), presses Run again (served from ComfyUI's cache) and
saves ``<name>_reloaded.png``: the previews and curves must be back. First it saves
``templates.png``, the template browser opened at this pack's examples. PNGs are reduced to a
palette so each stays small.

Without Playwright or Chromium it says so and exits 0 (skipped).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import run_comfyui_workflows as runner   # the sibling script (this folder is on sys.path when run)

log = logging.getLogger("screenshot_comfyui_workflows")
VIEWPORT = {"width": 1600, "height": 860}
MAX_BYTES = 300_000
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
# an idle clip as long as the speech of the other examples (as the runner does), not the example's 5 s
SHORTEN_IDLE = """(seconds) => {
    for (const node of window.app.graph._nodes.filter((n) => n.type === "SadTalkerIdleCoefficients")) {
        const widget = node.widgets.find((w) => w.name === "seconds");
        if (widget) widget.value = Math.round(seconds * 25) / 25;
    }
}"""


def chromium_path(given: str | None) -> str | None:
    """The given Chromium (None when it does not exist), else the first one on PATH."""
    if given:
        return shutil.which(given)
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def wait_idle(page, server: runner.Server, runs_before: int, timeout: float) -> None:
    """Wait until the server's history has a new entry and its queue is empty."""
    started = time.time()
    while time.time() < started + timeout:
        queue = server.get("/queue")
        history = server.get("/history")
        if len(history) == runs_before and not queue["queue_running"] and time.time() > started + 60:
            raise runner.SetupError("the page queued nothing within 60 s (an invalid prompt?); the server log "
                                    f"ends:\n{server.log_tail(30)}")
        if len(history) > runs_before and not queue["queue_running"] and not queue["queue_pending"]:
            last = history[list(history)[-1]]
            if last.get("status", {}).get("status_str") != "success":
                raise runner.SetupError(f"the run failed: {runner.execution_errors(last.get('status', {}))}")
            page.wait_for_timeout(3000)   # previews load their media
            return
        time.sleep(1)
    raise runner.SetupError(f"the run did not finish within {timeout:.0f} s; the server log ends:\n{server.log_tail(30)}")


def wait_app(page) -> None:
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=120_000)
    page.wait_for_timeout(2000)


def queue(page, server: runner.Server, timeout: float) -> None:
    runs = len(server.get("/history"))
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    wait_idle(page, server, runs, timeout)


def save(page, path: Path) -> None:
    """Screenshot the page into ``path``, as a palette PNG when that keeps it under MAX_BYTES."""
    page.screenshot(path=str(path))
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    log.info("saved %s (%d KB)", path, path.stat().st_size // 1024)


def shoot_templates(page, server: runner.Server, target: Path) -> bool:
    """The template browser opened at this pack's examples (their thumbnails); False if it could not."""
    from playwright.sync_api import Error as PlaywrightError

    page.goto(server.url)
    wait_app(page)
    try:
        page.locator(".side-bar-button", has_text="Templates").first.click(timeout=10_000)
        page.get_by_text(runner.PACK_DIR_NAME, exact=True).first.click(timeout=10_000)
        page.wait_for_timeout(3000)
    except PlaywrightError as err:
        log.warning("could not open the template browser at %s: %s", runner.PACK_DIR_NAME, err)
        return False
    save(page, target)
    page.keyboard.press("Escape")
    return True


def shoot(args, base: Path, playwright) -> list[Path]:
    ffmpeg = runner.run_python(args.python, args.pack, runner.FIND_FFMPEG, what="find ffmpeg (imageio-ffmpeg)").strip()
    runner.prepare_base(args, base, ffmpeg)
    server = runner.Server(args.comfyui.resolve(), args.python, base, runner.free_port(), base / "comfyui.log")
    saved = []
    try:
        server.wait_ready(args.startup_timeout)
        server.post("/settings", SETTINGS)   # no first-visit template browser, minimap or canvas statistics
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("pageerror", lambda err: log.warning("page error: %s", err))
            if shoot_templates(page, server, args.out / "templates.png"):
                saved.append(args.out / "templates.png")
            for path in args.workflows or runner.find_workflows(args.pack):
                log.info("workflow %s", path.name)
                page.goto(server.url)
                wait_app(page)
                page.evaluate("([graph, name]) => window.app.loadGraphData(graph, true, true, name)",
                              [json.loads(path.read_text()), path.stem])
                page.evaluate(SHORTEN_IDLE, args.seconds)
                page.wait_for_timeout(2000)
                queue(page, server, args.timeout)
                target = args.out / f"{path.stem}.png"
                save(page, target)
                saved.append(target)
                page.reload()
                wait_app(page)
                queue(page, server, args.timeout)
                target = args.out / f"{path.stem}_reloaded.png"
                save(page, target)
                saved.append(target)
        finally:
            browser.close()
    finally:
        server.stop()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    runner.add_setup_arguments(parser)
    parser.set_defaults(seconds=0.13)   # 3 frames, so the curves have a shape
    parser.add_argument("--out", type=Path, default=runner.REPO / "docs" / "images" / "comfyui",
                        help="folder for the PNGs")
    parser.add_argument("--chromium", help="Chromium executable (default: found on PATH)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        log.warning("skipped: Playwright is not installed in %s (pip install playwright)", sys.executable)
        return 0
    args.chromium = chromium_path(args.chromium)
    if not args.chromium:
        log.warning("skipped: no Chromium found (install it, e.g. apt-get install chromium, or pass --chromium)")
        return 0
    args.pack = args.pack.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="sadtalker_screens_"))
    try:
        with sync_playwright() as playwright:
            saved = shoot(args, base, playwright)
    except runner.SetupError as err:
        log.error("%s", err)
        return 2
    finally:
        shutil.rmtree(base, ignore_errors=True)
    log.info("%d screenshots in %s", len(saved), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
