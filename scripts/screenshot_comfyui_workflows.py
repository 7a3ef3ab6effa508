"""Screenshots of the example workflows in a real ComfyUI: mid-render, after a run, after a page
reload, and in Chinese.

    /path/to/comfy/venv/bin/python scripts/screenshot_comfyui_workflows.py /path/to/ComfyUI \\
        [--extra-node /path/to/ComfyUI-VideoHelperSuite] [--out docs/images/comfyui] [--chromium /usr/bin/chromium]

A developer tool, not a test. It sets up the same temporary ComfyUI base folder as
``run_comfyui_workflows.py`` (stand-in weights, the pack's example inputs and the runner's short
ones), starts ComfyUI, and drives a headless Chromium with Playwright (``pip install playwright``
into the Python running this; it uses the system Chromium, nothing is downloaded). It saves:

* ``templates.png``: the template browser opened at this pack's examples;
* ``live_preview.png``: the plain example as loaded (3 s of speech), caught mid-render with its live
  frame on the Render node (the run is then interrupted);
* per example, on the short inputs: ``<name>.png`` after Run, and ``<name>_reloaded.png`` after a
  page reload (ComfyUI restores the open workflow) and Run again (served from ComfyUI's cache):
  the previews and curves must be back;
* ``locale_zh.png``: the plain example with ComfyUI's language set to Chinese.

PNGs are reduced to a palette so each stays small. Without Playwright or Chromium it says so and
exits 0 (skipped)."""

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
# an idle clip as long as the short speech (as the runner does), not the example's 1 s
SHORTEN_IDLE = """(seconds) => {
    for (const node of window.app.graph._nodes.filter((n) => n.type === "SadTalkerIdleCoefficients")) {
        const widget = node.widgets.find((w) => w.name === "seconds");
        if (widget) widget.value = Math.round(seconds * 25) / 25;
    }
}"""
# count the live frames the page receives (ComfyUI's progress-bar previews)
COUNT_PREVIEWS = """() => {
    window.__sadtalkerPreviews = 0;
    const api = window.comfyAPI?.api?.api ?? window.app.api;
    for (const event of ["b_preview", "b_preview_with_metadata"]) {
        api.addEventListener(event, () => { window.__sadtalkerPreviews += 1; });
    }
}"""


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
    runner.wait_app(page)
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


def open_example(page, server: runner.Server, path: Path, seconds: float | None) -> None:
    """A fresh page with one example open: on the runner's short inputs (``seconds`` of idle clip), or
    as loaded (None)."""
    workflow = json.loads(path.read_text())
    page.goto(server.url)
    runner.wait_app(page)
    runner.load_workflow(page, workflow if seconds is None else runner.on_short_inputs(workflow), path.stem)
    if seconds is not None:
        page.evaluate(SHORTEN_IDLE, seconds)


def shoot_live(page, server: runner.Server, path: Path, target: Path, timeout: float) -> bool:
    """The example as loaded (3 s of speech) caught mid-render: a screenshot once the page has had two
    live frames, then the run is interrupted. False if no live frame came within ``timeout``."""
    from playwright.sync_api import Error as PlaywrightError

    open_example(page, server, path, None)
    page.evaluate(COUNT_PREVIEWS)
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    try:
        page.wait_for_function("() => window.__sadtalkerPreviews >= 2", timeout=timeout * 1000)
    except PlaywrightError as err:
        log.warning("no live preview came while %s rendered: %s", path.name, err)
        return False
    finally:
        page.wait_for_timeout(1500)   # the frame is drawn on the node
        save(page, target)
        server.post("/interrupt", {})
        while server.get("/queue")["queue_running"]:
            time.sleep(1)
    return True


def shoot(args, base: Path, playwright) -> list[Path]:
    ffmpeg = runner.run_python(args.python, args.pack, runner.FIND_FFMPEG, what="find ffmpeg (imageio-ffmpeg)").strip()
    runner.prepare_base(args, base, ffmpeg)
    server = runner.Server(args.comfyui.resolve(), args.python, base, runner.free_port(), base / "comfyui.log")
    workflows = args.workflows or runner.find_workflows(args.pack)
    plain = runner.plain_example(workflows)
    saved = []
    try:
        server.wait_ready(args.startup_timeout)
        server.post("/settings", runner.SETTINGS)   # no first-visit template browser, minimap or canvas statistics
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=runner.CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("pageerror", lambda err: log.warning("page error: %s", err))
            if shoot_templates(page, server, args.out / "templates.png"):
                saved.append(args.out / "templates.png")
            if shoot_live(page, server, plain, args.out / "live_preview.png", args.timeout):
                saved.append(args.out / "live_preview.png")
            for path in workflows:
                log.info("workflow %s", path.name)
                open_example(page, server, path, args.seconds)
                page.wait_for_timeout(2000)
                queue(page, server, args.timeout)
                target = args.out / f"{path.stem}.png"
                save(page, target)
                saved.append(target)
                page.reload()
                runner.wait_app(page)
                queue(page, server, args.timeout)
                target = args.out / f"{path.stem}_reloaded.png"
                save(page, target)
                saved.append(target)
            # the Chinese locale: the plain example (its run's previews come back) with node names in Chinese
            server.post("/settings", {"Comfy.Locale": "zh"})
            open_example(page, server, plain, args.seconds)
            target = args.out / "locale_zh.png"
            save(page, target)
            saved.append(target)
            server.post("/settings", {"Comfy.Locale": "en"})
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.chromium = runner.chromium_path(args.chromium)
    missing = runner.browser_missing(args.chromium)
    if missing:
        log.warning("skipped: %s", missing)
        return 0
    from playwright.sync_api import sync_playwright

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
