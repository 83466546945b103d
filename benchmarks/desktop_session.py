"""A pixels-only desktop session against the browser tier, in one run (issue #17).

The demo enclave (``havre demo-init``'s projects and users, under the benchmark's own enclave
name), one headless Chromium driven by Playwright (Debian's ``/usr/bin/chromium``):

* **start**: interleaved runs (browser, desktop, browser, desktop, ...) after one untimed
  warm-up of each, every run in a fresh browser context signed in (untimed) on the hub's home
  page; timed from the click on *Start server*:

  - *browser* (the baseline): alice's ``cardio`` (``access: browser``) until the Launcher is
    drawn and the first cell of a new notebook accepts input (``lab_usable.usable_lab``);
  - *desktop*: dora's ``renal`` (``access: desktop``) until noVNC's page is loaded, its canvas
    is shown, and JupyterLab's orange (its logo, the Launcher's icons) is on the canvas: the
    test's criterion (``tests/e2e/test_desktop_session.py``); the orange share of the canvas
    is recorded every 100 ms for 3 s more, so a stricter criterion can be read afterwards;

* **input to screen**: with one session of each open, keys typed alternately (desktop,
  browser, ...): on the desktop, a key typed into a JupyterLab console through noVNC's canvas,
  timed in the page from the ``keydown`` event to the first canvas readback (every ~4 ms,
  ``getImageData`` of the console's band) whose pixels differ from before the key outside the
  pixels that changed by themselves in the 1.3 s before it (the blinking cursor); on the
  browser tier, the same key typed into the notebook's cell, from ``keydown`` to the cell's
  DOM change (a ``MutationObserver``) and to the next animation frame after it;

* **memory**: both sessions left idle (no input, the researcher's page still open) for
  ``--settle`` seconds, then ``docker stats``' memory figure (usage minus inactive file
  cache, as ``docker stats`` shows it on cgroup v1) and the cgroup's counters, three samples
  5 s apart: the desktop plus its notebook server against the browser tier's server.

Every raw sample, the machine and its load averages go to
``benchmarks/results/desktop-session-<date>.json``. The images are tagged privately at the
start (``havrebench/<name>:run<pid>``), so a rebuild of a
shared tag by someone else mid-run doesn't change what is measured; the tags are removed at
the end. Same lock as ``spawn_benchmark.py`` and ``lab_usable.py`` (one of them at a time).
A benchmark, not a test: it asserts nothing.

Run from the repository root, as root, with the images built from the same tree::

    .venv/bin/python benchmarks/desktop_session.py --runs 5 --keys 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lab_usable  # noqa: E402  (this folder)
import spawn_benchmark as sb  # noqa: E402

from havre import __version__  # noqa: E402
from havre.enclave.config import parse_enclave_yaml  # noqa: E402
from havre.host import demo, layout, stack  # noqa: E402
from tests.e2e.conftest import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    SignedIn,
    wait_for_novnc_canvas,
)
from tests.e2e.test_desktop_session import (  # noqa: E402
    CONSOLE_TILE,
    DESKTOP_VIEWPORT,
    LAB_ORANGE,
    LOAD_ATTEMPTS,
    DesktopSession,
)
from tests.integration.hub_client import HubUser  # noqa: E402

BROWSER = ("alice", "cardio")
DESKTOP = ("dora", "renal")
STEP_MS = lab_usable.STEP_MS
IMAGES = ("hub", "egress", "notebook", "desktop")
#: the canvas's share of JupyterLab's orange that the e2e test takes as "Lab is drawn"
ORANGE_SHARE = 0.0001
#: seconds of canvas watching before each key, to learn the pixels that change by themselves
QUIET_WATCH_MS = 1300
#: a start sample whose step passed its bound (a very busy machine) is redone this many times
RETRIES = 2

#: in noVNC's page: watch a band of the canvas, learn what changes by itself, then time the
#: next keydown to the first readback that differs elsewhere
CANVAS_WATCH = """async ([y0, y1, watchMs]) => {
  const c = document.querySelector("canvas");
  const ctx = c.getContext("2d", {willReadFrequently: true});
  const h = Math.max(1, Math.min(c.height, y1) - y0);
  const grab = () => ctx.getImageData(0, y0, c.width, h).data;
  const base = grab();
  const moving = new Uint8Array(base.length / 4);
  const diff = (d, m) => {
    for (let i = 0; i < d.length; i += 4) {
      if (m && m[i / 4]) continue;
      if (d[i] !== base[i] || d[i + 1] !== base[i + 1] || d[i + 2] !== base[i + 2]) return i / 4;
    }
    return -1;
  };
  const end = performance.now() + watchMs;
  while (performance.now() < end) {  // the blinking cursor and anything else that moves
    const d = grab();
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] !== base[i] || d[i + 1] !== base[i + 1] || d[i + 2] !== base[i + 2]) {
        const p = i / 4, x = p % c.width, y = Math.floor(p / c.width);
        for (let dy = -2; dy <= 2; dy++) for (let dx = -2; dx <= 2; dx++) {
          const yy = y + dy, xx = x + dx;
          if (yy >= 0 && yy < h && xx >= 0 && xx < c.width) moving[yy * c.width + xx] = 1;
        }
      }
    }
    await new Promise(r => setTimeout(r, 20));
  }
  window.__lat = {key: null, change: null, moving: moving.reduce((a, x) => a + x, 0)};
  document.addEventListener("keydown", e => {
    if (window.__lat.key === null) window.__lat.key = performance.now();
  }, {capture: true, once: true});
  const poll = () => {
    if (window.__lat.key !== null && diff(grab(), moving) >= 0) {
      window.__lat.change = performance.now();
      return;
    }
    setTimeout(poll, 1);
  };
  poll();
  return window.__lat.moving;
}"""

#: in JupyterLab's page: time the next keydown to the cell editor's DOM change
DOM_WATCH = """(sel) => {
  const e = document.querySelector(sel);
  window.__lat = {key: null, change: null, frame: null};
  document.addEventListener("keydown", () => {
    if (window.__lat.key === null) window.__lat.key = performance.now();
  }, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    if (window.__lat.key === null || window.__lat.change !== null) return;
    window.__lat.change = performance.now();
    obs.disconnect();
    requestAnimationFrame(() => { window.__lat.frame = performance.now(); });
  });
  obs.observe(e, {childList: true, subtree: true, characterData: true});
}"""

#: the rows of the canvas that differ between two full readbacks (window.__full keeps one)
FULL_GRAB = """() => {
  const c = document.querySelector("canvas");
  const ctx = c.getContext("2d", {willReadFrequently: true});
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const old = window.__full; window.__full = d;
  if (!old) return null;
  let top = -1, bottom = -1;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] !== old[i] || d[i + 1] !== old[i + 1] || d[i + 2] !== old[i + 2]) {
      const y = Math.floor(i / 4 / c.width);
      if (top < 0) top = y;
      bottom = y;
    }
  }
  return top < 0 ? null : [top, bottom];
}"""


# --------------------------------------------------------------------------- setup


def snapshot_images(client: docker.DockerClient) -> dict[str, dict[str, str]]:
    """Tag each shared image privately; name -> {tag, shared, id}. A tag names one image
    atomically, so this needs no build lock: a build running meanwhile moves the shared tag
    only, never this copy (the ids are recorded)."""
    out = {}
    for name in IMAGES:
        image = client.images.get(f"havre/{name}:{__version__}")
        image.tag(f"havrebench/{name}", tag=f"run{os.getpid()}")
        out[name] = {
            "tag": f"havrebench/{name}:run{os.getpid()}",
            "shared": f"havre/{name}:{__version__}",
            "id": image.id,
        }
    return out


def write_demo(base: Path, images: dict[str, dict[str, str]]) -> tuple[Any, dict[str, str]]:
    """The demo enclave under the benchmark's name, with the private image tags."""
    state = base / "state"
    text = demo.demo_config_text(state, images["notebook"]["tag"], enclave_name=sb.ENCLAVE)
    default = f'  default: "{images["notebook"]["tag"]}"\n'
    text = text.replace(default, default + f'  desktop: "{images["desktop"]["tag"]}"\n', 1)
    stack.down(parse_enclave_yaml(text), purge=True)  # leftovers of an interrupted run
    state.mkdir()
    (state / "enclave.yaml").write_text(text)
    config, users = demo.init_demo(state, images["notebook"]["tag"])
    return config, {u.name: u.password for u in users}


def stop(hub_user: HubUser, project: str) -> None:
    if hub_user.server_model(project) is not None:
        hub_user.stop_server(project, timeout=sb.STOP_TIMEOUT)


def wait_gone(client: docker.DockerClient, names: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.containers.list(all=True, filters={"name": f"^{n}$"}) for n in names):
            return
        time.sleep(0.2)
    raise RuntimeError(f"still there after stop: {names}")


# --------------------------------------------------------------------------- start to usable


def click_start(user: SignedIn, project: str) -> float:
    page = user.page
    page.goto(user.url("hub/home"), timeout=STEP_MS)
    start = page.locator(f"#start-{project}")
    start.wait_for(state="visible", timeout=STEP_MS)
    t0 = time.time()
    start.click()
    return t0


def browser_sample(user: SignedIn) -> dict[str, Any]:
    name, project = BROWSER
    t0 = click_start(user, project)
    user.page.wait_for_url(re.compile(rf"/user/{name}/{project}/lab"), timeout=STEP_MS)
    sample = {"lab_page_s": time.time() - t0}
    sample.update(lab_usable.usable_lab(user.page, t0))
    sample["usable_s"] = sample["launcher_s"]
    return sample


def desktop_sample(user: SignedIn) -> dict[str, Any]:
    name, project = DESKTOP
    page = user.page
    t0 = click_start(user, project)
    page.wait_for_url(re.compile(rf"/user/{name}/{project}/desktop/vnc.html"), timeout=STEP_MS)
    sample: dict[str, Any] = {"vnc_page_s": time.time() - t0}
    # as the e2e test: reload at once (counted) if Chromium dropped one of noVNC's modules as
    # the host's interfaces changed (a browser on the Docker host: never a researcher's)
    sample["reloads"] = wait_for_novnc_canvas(page, attempts=LOAD_ATTEMPTS)
    sample["canvas_s"] = time.time() - t0
    view = DesktopSession(hub=None, user=user, notebook=None, desktop=None)
    deadline = time.monotonic() + STEP_MS / 1000
    series = []
    while time.monotonic() < deadline:
        share = view.canvas_share(LAB_ORANGE)
        series.append((round(time.time() - t0, 3), share))
        if share > ORANGE_SHARE:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("JupyterLab never showed on the canvas")
    sample["usable_s"] = series[-1][0]
    end = time.monotonic() + 3
    while time.monotonic() < end:  # (untimed) how the orange share grows after that
        time.sleep(0.1)
        series.append((round(time.time() - t0, 3), view.canvas_share(LAB_ORANGE)))
    sample["orange_share_series"] = series
    return sample


# --------------------------------------------------------------------------- input to screen


def open_console(user: SignedIn, notebook: Any) -> tuple[int, int]:
    """Click the Launcher's console tile until a console kernel runs (bounded); the band of
    the canvas where typed keys show (found with one untimed key)."""
    page = user.page
    box = page.locator("canvas").bounding_box()
    sessions = (
        "import json, os, urllib.request as u; "
        "r = u.Request('http://127.0.0.1:8888' + os.environ['JUPYTERHUB_SERVICE_PREFIX'] + "
        "'api/sessions', headers={'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']});"
        "print(sum(x['kernel']['execution_state'] == 'idle' for x in json.load(u.urlopen(r))))"
    )
    for _attempt in range(6):
        page.mouse.click(box["x"] + CONSOLE_TILE[0], box["y"] + CONSOLE_TILE[1])
        end = time.monotonic() + 20
        while time.monotonic() < end:
            _code, out = notebook.exec_run(["/opt/havre/venv/bin/python", "-c", sessions])
            if out.decode().strip() not in ("", "0"):
                break
            time.sleep(0.5)
        else:
            continue
        break
    else:
        raise RuntimeError("no console kernel on the desktop")
    time.sleep(2)  # the console's prompt drawn and focused
    page.evaluate(FULL_GRAB)
    page.keyboard.press("x")
    for _ in range(50):
        time.sleep(0.1)
        rows = page.evaluate(FULL_GRAB)
        if rows:
            top, bottom = rows
            return max(0, top - 8), bottom + 8
    raise RuntimeError("a key typed into the console changed nothing on the canvas")


def desktop_key(page: Any, band: tuple[int, int]) -> dict[str, Any]:
    page.evaluate(CANVAS_WATCH, [band[0], band[1], QUIET_WATCH_MS])
    page.keyboard.press("x")
    page.wait_for_function("window.__lat.change !== null", timeout=10_000, polling=20)
    lat = page.evaluate("window.__lat")
    return {"ms": lat["change"] - lat["key"], "moving_pixels": lat["moving"]}


def browser_key(page: Any) -> dict[str, Any]:
    page.evaluate(DOM_WATCH, lab_usable.CELL_EDITOR)
    page.keyboard.press("x")
    page.wait_for_function("window.__lat.frame !== null", timeout=10_000, polling=20)
    lat = page.evaluate("window.__lat")
    return {"ms": lat["change"] - lat["key"], "frame_ms": lat["frame"] - lat["key"]}


# --------------------------------------------------------------------------- memory


def memory(client: docker.DockerClient, name: str) -> dict[str, Any]:
    """``docker stats``' memory figure of a container (usage minus inactive file on cgroup v1,
    as the CLI computes it) and its cgroup counters."""
    container = client.containers.get(name)
    stats = container.stats(stream=False)["memory_stats"]
    inner = stats.get("stats", {})
    usage = stats["usage"] - inner.get("total_inactive_file", inner.get("inactive_file", 0))
    return {"docker_stats_bytes": usage, "cgroup": sb.memory_info(container.id)}


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed start runs of each kind")
    parser.add_argument("--keys", type=int, default=30, help="timed keys of each kind")
    parser.add_argument("--settle", type=float, default=60, help="idle seconds before memory")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    today = dt.date.today().isoformat()
    out = args.output or (HERE / "results" / f"desktop-session-{today}.json")
    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, sb._terminate)  # a stop purges the enclave (finally below)
    _lock = sb.take_lock(3600)
    client = docker.from_env(version="auto")
    base = Path(tempfile.mkdtemp(prefix="havrebench-"))
    os.chmod(base, 0o755)
    enclave = None
    images: dict[str, dict[str, str]] = {}
    load = [os.getloadavg()]
    try:
        images = snapshot_images(client)
        enclave, passwords = write_demo(base, images)
        options = layout.StackOptions(
            port=sb.free_port(),
            idp_port=sb.free_port(),
            hub_image=images["hub"]["tag"],
            egress_image=images["egress"]["tag"],
        )
        url = stack.up(enclave, options)
        shim = SimpleNamespace(url=url, options=options, passwords=passwords)
        api = {n: HubUser(url, n, passwords[n]).login() for n in ("alice", "dora")}
        containers = {
            "browser": [enclave.container_name(BROWSER[1], BROWSER[0])],
            "desktop": [
                enclave.container_name(DESKTOP[1], DESKTOP[0]),
                enclave.desktop_container_name(DESKTOP[1], DESKTOP[0]),
            ],
        }
        results: dict[str, Any] = {
            "benchmark": "desktop-session",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "machine": sb.machine_info(client),
            "images": images,
            "shared_machine": (
                "other helpers ran builds and Docker tests on this 2-core machine during the "
                "run: not quiet numbers; see loadavg and foreign_containers"
            ),
            "start": {"browser": [], "desktop": []},
            "keys": {"browser": [], "desktop": []},
            "foreign_containers": [],
            "failed": [],
        }

        def fresh(kind: str) -> None:
            name, project = BROWSER if kind == "browser" else DESKTOP
            stop(api[name], project)
            wait_gone(client, containers[kind])
            # every run opens JupyterLab as the first time (its Launcher, not the layout the
            # previous run left in the home's workspaces)
            workspaces = enclave.home_dir(project, name) / ".jupyter" / "lab" / "workspaces"
            shutil.rmtree(workspaces, ignore_errors=True)
            time.sleep(sb.SETTLE)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                sb.log("start: warm-up (untimed), one of each, then interleaved runs")
                for i in range(args.runs + 1):
                    for kind in ("browser", "desktop"):
                        name = BROWSER[0] if kind == "browser" else DESKTOP[0]
                        measure = browser_sample if kind == "browser" else desktop_sample
                        for attempt in range(RETRIES + 1):
                            fresh(kind)
                            user = SignedIn(browser, shim, name).sign_in()
                            if kind == "desktop":
                                user.page.set_viewport_size(DESKTOP_VIEWPORT)
                            try:
                                sample = measure(user)
                                break
                            except Exception as err:  # a step past its bound: redo (bounded)
                                user.close()
                                results["failed"].append(
                                    {"kind": kind, "run": i, "error": str(err)[:500]}
                                )
                                sb.log(f"{kind} run {i} failed ({type(err).__name__}), redoing it")
                                if attempt == RETRIES:
                                    raise
                        keep = i == args.runs  # the last sessions stay for keys and memory
                        if not keep:
                            user.close()
                        else:
                            results.setdefault("_open", {})[kind] = user
                        if i:
                            sample["loadavg"] = os.getloadavg()
                            results["start"][kind].append(sample)
                    results["foreign_containers"].append(
                        sorted(
                            c.name
                            for c in client.containers.list(ignore_removed=True)
                            if c.labels.get("havre.enclave") != sb.ENCLAVE
                        )
                    )
                    load.append(os.getloadavg())
                    if i:
                        b, d = results["start"]["browser"][-1], results["start"]["desktop"][-1]
                        sb.log(
                            f"run {i}/{args.runs}: browser {b['usable_s']:.2f} s, "
                            f"desktop {d['usable_s']:.2f} s"
                        )
                opened = results.pop("_open")
                desk, lab = opened["desktop"], opened["browser"]
                sb.log(f"input to screen: {args.keys} keys of each, alternately")
                notebook = client.containers.get(containers["desktop"][0])
                band = open_console(desk, notebook)
                results["canvas_band_rows"] = band
                lab.page.locator(lab_usable.CELL_EDITOR).first.click()
                for _k in range(args.keys):
                    results["keys"]["desktop"].append(desktop_key(desk.page, band))
                    results["keys"]["browser"].append(browser_key(lab.page))
                load.append(os.getloadavg())
                sb.log(f"memory: {args.settle:.0f} s idle, then three samples 5 s apart")
                time.sleep(args.settle)
                mem: dict[str, list[dict[str, Any]]] = {}
                for _s in range(3):
                    for name in containers["browser"] + containers["desktop"]:
                        mem.setdefault(name, []).append(memory(client, name))
                    time.sleep(5)
                results["memory"] = mem
                load.append(os.getloadavg())
                desk.close()
                lab.close()
            finally:
                browser.close()
        results["loadavg"] = load
        results["summary"] = summarize(results, containers)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        report(results["summary"])
        print(f"load averages (1, 5, 15 min) during the run: {load}\nraw samples: {out}")
        return 0
    finally:
        if enclave is not None:
            stack.down(enclave, purge=True)
        for image in images.values():
            try:
                client.images.remove(image["tag"])  # the private tag only (the image stays)
            except docker.errors.APIError:
                pass
        shutil.rmtree(base, ignore_errors=True)
        client.close()


def full_orange(series: list[list[float]]) -> float:
    """Seconds after Start when the canvas's orange share first reached 90 % of its value at
    the end of the watch (the Launcher's icons drawn, not just the logo)."""
    final = series[-1][1]
    return next(t for t, share in series if share >= 0.9 * final)


def summarize(results: dict[str, Any], containers: dict[str, list[str]]) -> dict[str, Any]:
    def st(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
        return sb.summary([s[key] for s in samples if s.get(key) is not None])

    start = results["start"]
    usable = {k: st(start[k], "usable_s") for k in ("browser", "desktop")}
    keys = {k: st(results["keys"][k], "ms") for k in ("browser", "desktop")}
    keys["browser_next_frame"] = st(results["keys"]["browser"], "frame_ms")
    median_mem = {
        name: sorted(s["docker_stats_bytes"] for s in samples)[len(samples) // 2]
        for name, samples in results["memory"].items()
    }
    browser_mem = sum(median_mem[n] for n in containers["browser"])
    desktop_mem = sum(median_mem[n] for n in containers["desktop"])
    return {
        "start_to_usable_s": {
            **usable,
            "ratio_of_medians": sb.ratio(usable["desktop"]["median"], usable["browser"]["median"]),
            "browser_cell_accepts_input": st(start["browser"], "cell_accepts_input_s"),
            "desktop_vnc_page": st(start["desktop"], "vnc_page_s"),
            "desktop_canvas": st(start["desktop"], "canvas_s"),
            "desktop_orange_at_90_percent": sb.summary(
                [full_orange(s["orange_share_series"]) for s in start["desktop"]]
            ),
            "desktop_reloads": sum(s["reloads"] for s in start["desktop"]),
        },
        "key_to_screen_ms": {
            **keys,
            "ratio_of_medians": sb.ratio(keys["desktop"]["median"], keys["browser"]["median"]),
        },
        "idle_memory_bytes": {
            "per_container_median": median_mem,
            "browser": browser_mem,
            "desktop_pair": desktop_mem,
            "ratio": sb.ratio(desktop_mem, browser_mem),
        },
    }


def report(summary: dict[str, Any]) -> None:
    s, k, m = (
        summary["start_to_usable_s"],
        summary["key_to_screen_ms"],
        summary["idle_memory_bytes"],
    )
    cell = lambda x, f: f"{x['median']:{f}} (p95 {x['p95']:{f}})"  # noqa: E731
    print(f"{'':<34}{'browser tier':>22}{'desktop tier':>22}{'ratio':>8}")
    print(
        f"{'Start to usable, s':<34}{cell(s['browser'], '.2f'):>22}{cell(s['desktop'], '.2f'):>22}"
        f"{sb.fmt(s['ratio_of_medians'], 'x'):>8}"
    )
    print(
        f"{'key to screen, ms':<34}{cell(k['browser'], '.1f'):>22}{cell(k['desktop'], '.1f'):>22}"
        f"{sb.fmt(k['ratio_of_medians'], 'x'):>8}"
    )
    print(f"{'idle memory (docker stats)':<34}{mib(m['browser']):>22}{mib(m['desktop_pair']):>22}")


if __name__ == "__main__":
    sys.exit(main())
