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

(``HAVRE_BENCH_HUB_IMAGE`` and ``HAVRE_BENCH_NOTEBOOK_IMAGE`` name other tags of the hub and
notebook images.) Per run it also records every answer the page got (``requests``: how many,
the documents and redirects from the Start click to Lab's page, every answer >= 400 with the
guard's ``X-Havre-Refused`` reason, and, for the hub, how many of the server's requests each
kind of the guard's sign-in check met); a run that fails (a dialog such as "Error Loading
Theme", a timeout) is recorded with its error and the dialog's text, and the runs go on.
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


class Requests:
    """Every answer a page gets from ``t0`` on: where it went, its status, when it came, and
    (hub runs) which of the download guard's checks it met (:mod:`spawner.download_policy`).
    Kept per run: ``summary()`` gives the counts the README's "what Havre adds" table uses."""

    def __init__(self, page: Any, t0: float, prefix: str = "") -> None:
        self.t0 = t0
        self.prefix = prefix
        self.answers: list[dict[str, Any]] = []
        page.on("response", self._on_response)

    def _on_response(self, response: Any) -> None:
        try:
            request = response.request
            self.answers.append(
                {
                    "t_s": round(time.time() - self.t0, 3),
                    "url": response.url,
                    "status": response.status,
                    "type": request.resource_type,
                    "refused": response.headers.get("x-havre-refused"),
                }
            )
        except Exception:  # a page closing under the listener: nothing to record
            pass

    def summary(self) -> dict[str, Any]:
        from urllib.parse import urlsplit

        from spawner.download_policy import allowed_route

        docs = [a for a in self.answers if a["type"] == "document"]
        failed = [
            {k: a[k] for k in ("t_s", "url", "status", "refused")}
            for a in self.answers
            if a["status"] >= 400
        ]
        logins: dict[str, int] = {}
        if self.prefix:
            for a in self.answers:
                path = urlsplit(a["url"]).path
                if not path.startswith(self.prefix):
                    continue
                route = allowed_route("GET", path[len(self.prefix) :])
                kind = route.login.value if route is not None else "refused-or-other"
                logins[kind] = logins.get(kind, 0) + 1
        return {
            "answers": len(self.answers),
            "documents": [{k: a[k] for k in ("t_s", "url", "status")} for a in docs],
            "redirects": sum(1 for a in docs if 300 <= a["status"] < 400),
            "failed": failed,
            "by_login_check": logins,
        }


def dialog_text(page: Any) -> str | None:
    """The text of a JupyterLab dialog on the page (e.g. "Error Loading Theme"), if any."""
    try:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            return dialog.first.inner_text(timeout=2_000)[:500]
    except Exception:
        pass
    return None


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
        answers = Requests(page, t0, "/")
        sample: dict[str, Any] = {"server_ready_s": started["ready_s"]}
        try:
            page.goto(f"http://{ip}:{sb.BARE_PORT}/lab", timeout=STEP_MS)
            sample["lab_page_s"] = time.time() - t0
            sample.update(usable_lab(page, t0))
        except Exception as err:  # recorded as a failed run; the benchmark goes on
            sample["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            sample["dialog"] = dialog_text(page)
        answers.prefix = ""  # a bare server has no guard
        sample["requests"] = answers.summary()
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
    answers = Requests(page, t0, f"/user/{user.name}/{sb.PROJECT}/")
    sample: dict[str, Any] = {}
    start.click()
    try:
        # the path, not the Start link's ?next=/user/.../lab
        lab = re.compile(rf"^https?://[^/?]+/user/{user.name}/{sb.PROJECT}/lab([/?#]|$)")
        page.wait_for_url(lab, timeout=STEP_MS)
        sample["lab_page_s"] = time.time() - t0
        model = bench.users[user.name].server_model(sb.PROJECT) or {}
        sample["server_started"] = model.get("started")
        sample.update(usable_lab(page, t0))
    except Exception as err:  # recorded as a failed run; the benchmark goes on
        sample["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        sample["dialog"] = dialog_text(page)
        sb.log(f"hub run failed: {sample['error'][:200]}; dialog: {sample['dialog']}")
    sample["requests"] = answers.summary()
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
    # the notebook image of both sides (default havre/notebook:<version>): another tag lets a
    # run use an image built from this tree while others rebuild the shared tag
    sb.NOTEBOOK_IMAGE = os.environ.get("HAVRE_BENCH_NOTEBOOK_IMAGE", sb.NOTEBOOK_IMAGE)
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
            "images_used": {
                tag: client.images.get(tag).id for tag in (options.hub_image, sb.NOTEBOOK_IMAGE)
            },
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
                        f"run {i}/{args.runs}: bare {bare.get('cell_accepts_input_s')} s, "
                        f"hub {hub.get('cell_accepts_input_s')} s, load {os.getloadavg()}"
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
        summary["failed_runs"] = {
            kind: sum(1 for x in results[kind] if "error" in x) for kind in ("bare", "hub")
        }
        results["summary"] = summary
        results["loadavg"] = load
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"{'seconds after Start / docker run':<36}{'bare':>18}{'hub':>18}{'ratio':>8}")
        for key, st in summary.items():
            if key in ("bare_server_ready_s", "failed_runs"):
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
