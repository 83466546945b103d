"""``havre-egress``: the egress (output-checking) service process.

A JupyterHub service at ``/services/egress/`` (Hub OAuth: users are who the hub says, with the
hub groups Havre manages). It keeps its state under ``<state_dir>/egress/``: the database
(SQLite with WAL by default; ``$HAVRE_EGRESS_DB`` for PostgreSQL), the content store of
snapshots, the release-signing key (made at first start, mode 0600) and the audit checkpoints.
The pages and the API are in :mod:`egress.web` (:mod:`egress.web.app` builds them); every
operation in :mod:`egress.operations.facade`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tornado import ioloop
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from egress.audit.signing import generate_key
from egress.notifications.mailer import Mailer
from egress.operations.facade import EgressService, ServicePaths
from egress.store.content import ContentStore
from egress.store.db import make_engine, migrate
from egress.web.app import make_app
from havre.enclave.config import EnclaveConfig, load_enclave_config
from havre.enclave.live import LiveEnclave, live_config

DEFAULT_PORT = 8090


def build_service(
    enclave: EnclaveConfig,
    *,
    public_url: str = "",
    notifier: Callable[[], None] | None = None,
) -> EgressService:
    """The core service over this enclave's state: migrated database, store, signing key."""
    paths = ServicePaths(enclave.state_dir)
    paths.egress_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = make_engine(os.environ.get("HAVRE_EGRESS_DB") or paths.db_url)
    migrate(engine)
    if not paths.signing_key.exists():
        generate_key(paths.signing_key)
    return EgressService(
        engine,
        ContentStore(paths.content_dir),
        enclave,
        signing_key_path=paths.signing_key,
        checkpoint_path=paths.checkpoints,
        service_url=public_url,
        notifier=notifier,
    )


class MailLoop:
    """Runs the mailer in a worker thread: soon after a step queues e-mail, and every minute.

    Every worker process has one; a lock file lets one deliver at a time (the outbox's rule),
    and a worker that finds it taken tries again a little later, so nothing waits a minute.
    """

    RETRY_SECONDS = 2.0

    def __init__(self, mailer: Mailer, lock_path: Path) -> None:
        self.mailer = mailer
        self.lock_path = lock_path
        self.running = False
        self.loop = ioloop.IOLoop.current()  # the worker's loop (wake is called from threads)

    def wake(self) -> None:
        """Deliver soon. Thread-safe: the core's operations run in a thread pool."""
        self.loop.add_callback(self.run)

    def _deliver_alone(self) -> dict[str, int] | None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another worker is delivering
            return self.mailer.deliver()
        finally:
            os.close(fd)  # closing releases the lock

    async def run(self) -> None:
        if self.running:
            return
        self.running = True
        try:
            counts = await self.loop.run_in_executor(None, self._deliver_alone)
            if counts is None:
                self.loop.call_later(self.RETRY_SECONDS, self.run)
            elif counts["sent"] or counts["failed"]:
                logging.getLogger("egress.mailer").info("e-mail: %s", counts)
        except Exception:
            logging.getLogger("egress.mailer").exception("e-mail delivery failed")
        finally:
            self.running = False


class ReexecutionCollector:
    """Takes in the re-execution runner's finished results, in a worker thread, every few
    seconds (in every worker process: the first to take a result in commits it, the others
    find it gone)."""

    EVERY_MS = 5_000

    def __init__(self, service: EgressService) -> None:
        self.service = service
        self.running = False

    async def run(self) -> None:
        if self.running:
            return
        self.running = True
        try:
            loop = ioloop.IOLoop.current()
            taken = await loop.run_in_executor(None, self.service.collect_reexecutions)
            if taken:
                logging.getLogger("egress.reexecution").info("took in %d re-execution(s)", taken)
        except Exception:
            logging.getLogger("egress.reexecution").exception("taking in re-executions failed")
        finally:
            self.running = False


def worker_count(value: str | None = None) -> int:
    """How many worker processes serve requests: ``$HAVRE_EGRESS_PROCESSES``, default one per
    CPU core (at most 8). The handlers are synchronous and CPU-bound, so processes, not threads,
    use the cores."""
    raw = os.environ.get("HAVRE_EGRESS_PROCESSES", "") if value is None else value
    if not raw:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    if not raw.isdigit() or not 1 <= int(raw) <= 64:
        raise SystemExit(f"HAVRE_EGRESS_PROCESSES must be a number from 1 to 64 (got {raw!r})")
    return int(raw)


def listen(port: int, address: str, *, shared: bool) -> list[socket.socket]:
    """Listening sockets of one worker. ``shared``: with ``SO_REUSEPORT``, so that each worker
    has its own socket on the same port and the kernel spreads the connections over them (one
    socket shared by forked workers lets whichever wakes first accept them all)."""
    return bind_sockets(port, address=address, reuse_port=shared)


def serve_workers(run_worker: Callable[[int], None], processes: int) -> None:
    """Run ``processes`` forked workers, each ``run_worker(index)`` (which binds with
    :func:`listen` and serves until SIGTERM).

    With one process, the worker runs here. Otherwise this process only supervises: SIGTERM or
    SIGINT is passed on to the workers and it returns once they have stopped; a worker that
    dies on its own (a crash, the OOM killer) is replaced after a second. Fork before anything
    opens a database connection or starts an IOLoop: each worker makes its own.
    """
    if processes == 1:
        run_worker(0)
        return
    log = logging.getLogger("egress")
    workers: dict[int, int] = {}  # pid -> index
    stopping = False

    def start(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            status = 1
            try:
                run_worker(index)
                status = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                os._exit(status)
        workers[pid] = index

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(processes):
        start(index)
    log.info("havre-egress: %d worker processes", processes)
    while workers:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except OSError as exc:  # interrupted by a signal
            if exc.errno == errno.EINTR:
                continue
            raise
        index = workers.pop(pid, None)
        if index is None or stopping:
            continue
        log.error("worker %d (pid %d) ended (%s); starting another", index, pid, status)
        time.sleep(1)
        start(index)


#: the service's cookie secret, under the egress state folder (created at the first start)
COOKIE_SECRET_NAME = "cookie-secret"


def load_cookie_secret(egress_dir: Path) -> bytes:
    """The secret that signs the service's cookies, kept across restarts.

    Made at the first start (32 random bytes, hex, mode 0600) and read at every later one, so a
    restart of the service signs nobody out. Deleting the file (``rotate-secrets.yml`` does)
    and restarting makes a new one: everyone then signs in to the service again, on purpose.
    """
    path = Path(egress_dir) / COOKIE_SECRET_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 32:
        raise SystemExit(
            f"havre-egress: {path} does not hold a cookie secret (64 hex digits); delete it "
            "and start the service again to make a new one (everyone signs in again)"
        )
    return secret


def main() -> None:
    """Console entry point ``havre-egress``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config_path = os.environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml")
    load_enclave_config(config_path)  # refuse to start on an invalid config, with its problems
    # projects, members and output checkers are read live: a change applies at the next
    # request, without a restart (havre/enclave/live.py)
    enclave: EnclaveConfig = LiveEnclave(live_config(config_path))  # type: ignore[assignment]
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/egress/")
    public = os.environ.get("HAVRE_PUBLIC_URL", "").rstrip("/")
    port = int(os.environ.get("HAVRE_EGRESS_PORT", DEFAULT_PORT))
    processes = worker_count()
    # Before the workers: the schema migrated and the signing key made, once.
    first = build_service(enclave)
    first.reconcile_checkpoints()  # releases a crash kept out of the checkpoint file (#13)
    first.engine.dispose()
    # the same in every worker (they share the cookies) and across restarts
    cookie_secret = load_cookie_secret(ServicePaths(enclave.state_dir).egress_dir)

    def run_worker(index: int) -> None:
        loop_box: list[MailLoop] = []
        service = build_service(
            enclave,
            public_url=f"{public}{prefix}".rstrip("/") if public else "",
            notifier=lambda: loop_box[0].wake() if loop_box else None,
        )
        mailer = Mailer.from_enclave(service, enclave)
        if mailer is not None:
            lock = ServicePaths(enclave.state_dir).egress_dir / "mail.lock"
            loop_box.append(MailLoop(mailer, lock))
            ioloop.PeriodicCallback(loop_box[0].run, 60_000).start()
        # finished re-executions are taken in soon, not only when someone looks at them
        collector = ReexecutionCollector(service)
        ioloop.PeriodicCallback(collector.run, ReexecutionCollector.EVERY_MS).start()
        app = make_app(
            service,
            prefix,
            cookie_secret=cookie_secret,
            oauth_state_dir=ServicePaths(enclave.state_dir).egress_dir / "oauth-states",
        )
        # a hard cap on bodies (the API refuses more than 1 MiB itself, with a message)
        HTTPServer(app, max_body_size=8 * 1024 * 1024).add_sockets(
            listen(port, "0.0.0.0", shared=processes > 1)
        )
        loop = ioloop.IOLoop.current()
        signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
        logging.getLogger("egress").info(
            "havre-egress worker %d listening on :%s%s", index, port, prefix
        )
        loop.start()
        service.engine.dispose()

    serve_workers(run_worker, processes)


if __name__ == "__main__":
    main()
