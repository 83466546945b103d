"""The egress service's worker processes: both serve, a dead one is replaced, SIGTERM stops all.

A real supervisor (:func:`egress.service.serve_workers`) in a child process, with workers that
listen with :func:`egress.service.listen` on a loopback port and answer with their pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

from tests.enclave_fixtures import free_port

WORKERS = textwrap.dedent(
    """
    import os, signal, sys
    from tornado import httpserver, ioloop, web
    from egress.service import listen, serve_workers

    port = int(sys.argv[1])

    class Pid(web.RequestHandler):
        def get(self):
            self.set_header("Connection", "close")
            self.write(str(os.getpid()))

    def run(index):
        httpserver.HTTPServer(web.Application([("/", Pid)])).add_sockets(
            listen(port, "127.0.0.1", shared=True)
        )
        loop = ioloop.IOLoop.current()
        signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
        loop.start()

    serve_workers(run, 2)
    """
)


def _pid_answering(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            return int(response.read())
    except OSError:
        return None


def _pids_seen(port: int, want: int, tries: int = 400) -> set[int]:
    """Pids of the workers answering new connections (the kernel spreads them by hash)."""
    seen: set[int] = set()
    for _ in range(tries):
        pid = _pid_answering(port)
        if pid is not None:
            seen.add(pid)
        if len(seen) >= want:
            break
        time.sleep(0.005)
    return seen


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_two_workers_serve_a_killed_one_is_replaced_and_sigterm_stops_them(tmp_path):
    port = free_port()
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    supervisor = subprocess.Popen(
        [sys.executable, str(script), str(port)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while _pid_answering(port) is None:
            assert supervisor.poll() is None, supervisor.stderr.read()
            assert time.monotonic() < deadline, "no worker listened"
            time.sleep(0.05)
        first = _pids_seen(port, 2)
        assert len(first) == 2, f"one worker answered every connection: {first}"
        assert supervisor.pid not in first  # the supervisor only supervises

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            now = _pids_seen(port, 2, tries=100)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"the killed worker wasn't replaced: {now}"
        workers = now

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its supervisor"
            time.sleep(0.05)
        assert _pid_answering(port) is None
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
