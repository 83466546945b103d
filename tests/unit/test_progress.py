"""Progress lines on a terminal, nothing otherwise: the Python helper (havre up) and the shell
one (images/build.sh), each run for real in a child process whose standard error is a pseudo
terminal, then a pipe.

The waits are driven by conditions, not clocks: the child waits for a file the test creates
only after it has read the "still waiting" line (on a terminal), or after a fixed pause in
which a quiet child must print nothing at all (on a pipe).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINE = r"{label} \[ *\d+\.\ds\] {text}"

PYTHON_CHILD = """
import os, sys, time
from havre.host.progress import Progress
p = Progress("havre up", every=0.2)
p.step("hub", "havre-hub")
while not os.path.exists(sys.argv[1]):
    p.still_waiting("http://127.0.0.1:8000/hub/health")
    time.sleep(0.05)
p.done("up: 0 change(s)")
print("URL http://127.0.0.1:8000/")
"""

SHELL_CHILD = """
. scripts/lib/progress.sh
havre_progress_start "images/build.sh"
havre_step "building havre/hub:0.1.0" "docker build"
HAVRE_PROGRESS_EVERY=0.2 havre_wait_on "docker build of havre/hub:0.1.0" \
    bash -c 'while [ ! -e "$1" ]; do sleep 0.05; done' _ "$1"
havre_progress_done "done: 1 image(s)"
echo "IMAGE havre/hub:0.1.0"
"""


def _argv(kind: str, flag: Path) -> list[str]:
    if kind == "python":
        return [sys.executable, "-c", PYTHON_CHILD, str(flag)]
    return ["bash", "-c", SHELL_CHILD, "child", str(flag)]


def _run_on_a_terminal(argv: list[str], flag: Path, wait_for: str) -> tuple[str, str]:
    """stderr on a pseudo terminal; create ``flag`` once ``wait_for`` was printed."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "HAVRE_PROGRESS"}
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 60
    try:
        while child.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            if wait_for.encode() in seen and not flag.exists():
                flag.touch()
        out, _ = child.communicate(timeout=30)
        while True:  # what is left in the terminal
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
    return out.decode(), seen.decode().replace("\r\n", "\n")


def _run_on_a_pipe(argv: list[str], flag: Path) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HAVRE_PROGRESS"}
    child = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    time.sleep(1.0)  # long enough for several "still waiting" lines, were any printed
    flag.touch()
    out, err = child.communicate(timeout=60)
    return out.decode(), err.decode()


CASES = {
    "python": ("havre up", "hub: waiting on havre-hub", "hub: still waiting on http://", "URL "),
    "shell": (
        "images/build.sh",
        "building havre/hub:0.1.0: waiting on docker build",
        "building havre/hub:0.1.0: still waiting on docker build of havre/hub:0.1.0",
        "IMAGE ",
    ),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_progress_on_a_terminal(kind, tmp_path):
    label, first, waiting, result = CASES[kind]
    flag = tmp_path / "go"
    out, err = _run_on_a_terminal(_argv(kind, flag), flag, "still waiting")
    assert re.search(LINE.format(label=re.escape(label), text=re.escape(first)), err), err
    assert re.search(LINE.format(label=re.escape(label), text=re.escape(waiting)), err), err
    assert re.search(LINE.format(label=re.escape(label), text="(up|done)"), err), err
    assert out.startswith(result) and "[" not in out  # stdout stays the command's own


@pytest.mark.parametrize("kind", sorted(CASES))
def test_quiet_on_a_pipe(kind, tmp_path):
    _label, _first, _waiting, result = CASES[kind]
    flag = tmp_path / "go"
    out, err = _run_on_a_pipe(_argv(kind, flag), flag)
    assert err == ""
    assert out.startswith(result)
