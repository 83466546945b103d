"""Time to a usable JupyterLab in the browser: Havre's Start button against a bare server.

Issue #21. Two kinds of run, interleaved (bare, hub, bare, hub, ...) after one untimed warm-up
of each, in one headless Chromium driven by Playwright (Debian's ``/usr/bin/chromium``):

* **hub**: a signed-in user (sign-in untimed) on the hub's home page clicks *Start* of the
  project; timed from the click until the first cell of a new notebook accepts input: the
  browser reaches ``/user/<u>/bench/lab``, the Launcher's *Python 3* card is clicked, the new
  notebook's first cell editor is focused and a typed character shows in it;
* **bare** (the baseline): ``docker run`` of the same notebook image running
  ``jupyter server`` (JupyterLab is its extension), with the same limits as the hub's server
  (``spawn_benchmark.start_bare``); timed from the ``docker run`` call: its ``/api/status``
  polled every 50 ms, then the browser opens ``/lab`` and does the same clicks.

Per run it records the phases (server ready, Lab's page loaded, the Launcher shown, the cell
accepting input) and the browser's Navigation Timing of the Lab page (``responseStart``,
``domContentLoadedEventEnd``, ``loadEventEnd``) and its resource count and bytes. It prints
medians and p95 with the ratio hub/bare, and writes every raw sample and the machine's load to
``benchmarks/results/lab-usable-<date>.json``. Same enclave and lock as
``spawn_benchmark.py`` (one of the two at a time). A benchmark, not a test: it asserts nothing.

Run from the repository root, as root, with the images built from the same tree::

    .venv/bin/python benchmarks/lab_usable.py --runs 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import spawn_benchmark as sb  # noqa: E402  (this folder)

from havre.host import stack  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, SignedIn  # noqa: E402

STEP_MS = 120_000
LAUNCHER_CARD = ".jp-LauncherCard[data-category='Notebook']"
CELL_EDITOR = ".jp-NotebookPanel .jp-Cell .cm-content[contenteditable='true']"
NAV_TIMING = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  const r = performance.getEntriesByType('resource');
  return {responseStart: n.responseStart, domContentLoaded: n.domContentLoadedEventEnd,
          load: n.loadEventEnd, resources: r.length,
          transferBytes: r.reduce((a, x) => a + (x.transferSize || 0), 0)};
}"""


def usable_lab(page: Any, t0: float) -> dict[str, Any]:
    """On a Lab page being opened: open a notebook from the Launcher, type in its first cell.
    Times (s after ``t0``) of each phase, and the Lab page's Navigation Timing."""
    page.locator(".lm-MenuBar-itemLabel").first.wait_for(state="visible", timeout=STEP_MS)
    launcher = page.locator(LAUNCHER_CARD).first
    opened_by_shortcut = False
    try:
        launcher.wait_for(state="visible", timeout=3_000)
    except Exception:  # Lab restored a layout without the Launcher: open one (Accel+Shift+L)
        page.keyboard.press("Control+Shift+L")
        opened_by_shortcut = True
        try:
            launcher.wait_for(state="visible", timeout=20_000)
        except Exception:
            shot = Path(tempfile.gettempdir()) / f"lab-usable-no-launcher-{os.getpid()}.png"
            page.screenshot(path=str(shot), full_page=True)
            sb.log(f"no Launcher card; screenshot {shot}; url {page.url}")
            sb.log("launcher cards: " + str(page.locator(".jp-LauncherCard").count()))
            raise
    t_launcher = time.time()
    timing = page.evaluate(NAV_TIMING)
    launcher.click()
    editor = page.locator(CELL_EDITOR).first
    editor.wait_for(state="visible", timeout=STEP_MS)
    editor.click()
    page.keyboard.type("1")
    page.wait_for_function(
        "(sel) => { const e = document.querySelector(sel); return e && e.textContent === '1'; }",
        arg=CELL_EDITOR,
        timeout=STEP_MS,
    )
    t_cell = time.time()
    return {
        "launcher_s": t_launcher - t0,
        "launcher_opened_by_shortcut": opened_by_shortcut,
        "cell_accepts_input_s": t_cell - t0,
        "navigation_ms": timing,
    }


#: the bare server's files in its writable /tmp (its root filesystem is read-only, as the
#: hub's server's is; the hub's server has its home folder)
BARE_LAB_COMMAND = [*sb.BARE_COMMAND, "--ServerApp.root_dir=/tmp"]


def bare_sample(bench: Any, network: str, context: Any, index: int) -> dict[str, Any]:
    sb.BARE_COMMAND = BARE_LAB_COMMAND  # read by start_bare
    container, started = sb.start_bare(bench, network, index)
    try:
        container.reload()
        ip = container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        t0 = time.time() - started["ready_s"]  # the docker run call
        page = context.new_page()
        page.goto(f"http://{ip}:{sb.BARE_PORT}/lab", timeout=STEP_MS)
        t_page = time.time()
        sample = {"server_ready_s": started["ready_s"], "lab_page_s": t_page - t0}
        sample.update(usable_lab(page, t0))
        page.close()
        return sample
    finally:
        container.remove(force=True)


def hub_sample(bench: Any, user: SignedIn) -> dict[str, Any]:
    import re

    bench.stop(user.name)
    time.sleep(sb.SETTLE)
    page = user.page
    page.goto(user.url("hub/home"), timeout=STEP_MS)
    start = page.locator(f"#start-{sb.PROJECT}")
    start.wait_for(state="visible", timeout=STEP_MS)
    t0 = time.time()
    start.click()
    page.wait_for_url(re.compile(rf"/user/{user.name}/{sb.PROJECT}/lab"), timeout=STEP_MS)
    t_page = time.time()
    sample = {"lab_page_s": t_page - t0}
    model = bench.users[user.name].server_model(sb.PROJECT) or {}
    sample["server_started"] = model.get("started")
    sample.update(usable_lab(page, t0))
    page.goto("about:blank")
    forget_workspace(page, user.url(f"user/{user.name}/{sb.PROJECT}/lab/api/workspaces/default"))
    bench.stop(user.name)
    return sample


def forget_workspace(page: Any, url: str) -> None:
    """The hub's server keeps Lab's workspace in the home, which outlives the server: without
    this, the next run restores the last run's open notebook instead of the Launcher (the bare
    server starts from an empty /tmp each run)."""
    # the hub's and the server's _xsrf cookies both match: the server's has the longer path
    mine = [c for c in page.context.cookies(url) if c["name"] == "_xsrf"]
    xsrf = max(mine, key=lambda c: len(c["path"]))["value"] if mine else ""
    answer = page.request.delete(url, headers={"X-XSRFToken": xsrf})
    if answer.status not in (204, 404):
        sb.log(f"the workspace was not reset: {answer.status} {answer.text()[:200]}")


def stats(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return sb.summary([s[key] for s in samples if s.get(key) is not None])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each kind")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    out = args.output or (HERE / "results" / f"lab-usable-{dt.date.today().isoformat()}.json")
    import signal

    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, sb._terminate)  # a stop purges the enclave (finally below)
    _lock = sb.take_lock(3600)
    client = docker.from_env(version="auto")
    sb.wait_for_images(client)
    base = Path(tempfile.mkdtemp(prefix="havrebench-"))
    os.chmod(base, 0o755)
    enclave = None
    load = [os.getloadavg()]
    try:
        enclave, passwords = sb.write_enclave(base)
        options = sb.stack_options()
        url = stack.up(enclave, options)
        bench = sb.Bench(enclave, url, passwords)
        network = sb.bare_network(client)
        shim = SimpleNamespace(url=url, options=options, passwords=passwords)
        results: dict[str, Any] = {
            "benchmark": "lab-usable",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "machine": sb.machine_info(client),
            "bare": [],
            "hub": [],
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                # every run in a fresh browser context (an empty cache, as a bare server's new
                # address is a new origin anyway); the hub's sign-in is not timed
                sb.log("warm-up (untimed): one bare, one hub")
                for i in range(args.runs + 1):
                    context = browser.new_context(viewport=VIEWPORT)
                    bare = bare_sample(bench, network, context, i)
                    context.close()
                    user = SignedIn(browser, shim, sb.USERS[0]).sign_in()
                    hub = hub_sample(bench, user)
                    user.close()
                    if i == 0:
                        continue
                    results["bare"].append(bare)
                    results["hub"].append(hub)
                    load.append(os.getloadavg())
                    sb.log(
                        f"run {i}/{args.runs}: bare {bare['cell_accepts_input_s']:.2f} s, "
                        f"hub {hub['cell_accepts_input_s']:.2f} s"
                    )
            finally:
                browser.close()
        summary: dict[str, Any] = {}
        for key in ("lab_page_s", "launcher_s", "cell_accepts_input_s"):
            b, h = stats(results["bare"], key), stats(results["hub"], key)
            summary[key] = {
                "bare": b,
                "hub": h,
                "ratio_of_medians": sb.ratio(h["median"], b["median"]),
            }
        summary["bare_server_ready_s"] = stats(results["bare"], "server_ready_s")
        results["summary"] = summary
        results["loadavg"] = load
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{'seconds after Start / docker run':<36}{'bare':>18}{'hub':>18}{'ratio':>8}")
        for key, st in summary.items():
            if key == "bare_server_ready_s":
                continue
            cell = lambda s: f"{s['median']:.2f} (p95 {s['p95']:.2f})"  # noqa: E731
            print(
                f"{key:<36}{cell(st['bare']):>18}{cell(st['hub']):>18}"
                f"{sb.fmt(st['ratio_of_medians'], 'x'):>8}"
            )
        print(f"load average during the runs: {load}\nraw samples: {out}")
        return 0
    finally:
        if enclave is not None:
            stack.down(enclave, purge=True)
        shutil.rmtree(base, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
