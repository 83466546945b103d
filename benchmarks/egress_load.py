#!/usr/bin/env python3
"""Load benchmark of the egress service: 50 concurrent clients against SQLite and PostgreSQL.

Run from the repository root (as root or as a user that can run Debian's PostgreSQL binaries)::

    .venv/bin/python benchmarks/egress_load.py                       # 3 runs x 30 s per backend
    .venv/bin/python benchmarks/egress_load.py --runs 1 --duration 5 --seed-requests 60 --no-append
    .venv/bin/python benchmarks/egress_load.py --profile             # + one profiled run each

What runs:

* **the server**: the real tornado application of :func:`egress.web.app.make_app` over a real
  :class:`egress.operations.facade.EgressService`, in a separate process (this script with
  ``_serve``), on ``127.0.0.1`` and a random port. Only authentication is replaced, in that
  process only:
  ``get_current_user`` returns ``{"name": <X-Bench-User header>, "groups": []}`` and the XSRF
  check is a no-op (the real service asks the hub through Hub OAuth; that round trip is not
  measured). Projects and the checker role come from the enclave config as in production
  (:func:`egress.operations.facade.actor_for`).
* **the databases**: SQLite (a file in a temporary directory; WAL, ``synchronous=FULL``, as
  ``egress.store.db.make_engine`` sets it) and PostgreSQL (a throwaway cluster from Debian's
  ``initdb``/``pg_ctl``, run as the ``postgres`` user, on a Unix socket in a temporary directory,
  with PostgreSQL's default durability: ``fsync`` and ``synchronous_commit`` on).
* **the seed**: ``--seed-requests`` requests (default 300) made through the core in every state
  (draft, submitted, under review, reviewed, returned, approved, released, rejected, withdrawn),
  with 1-3 CSV tables of counts each from two projects' outputs folders. It is made once per
  backend and copied for each run (file copy / ``CREATE DATABASE ... TEMPLATE``), so every run
  starts from the same state.
* **the clients**: ``--clients`` (default 50) asyncio tasks sharing one aiohttp session in this
  process, each looping for ``--duration`` seconds over operations drawn with weights
  list 50 %, view 25 %, submit 10 %, review 15 %:

  - *list*: ``GET api/requests`` (researchers: their project's; checkers: half the time
    everything, half the time their queue, ``?mine_to_review=1``, reported as ``queue``);
  - *view*: ``GET api/requests/<id>`` of a request the user may see;
  - *submit* (a researcher): ``GET api/projects/<p>/outputs``, ``POST api/requests``,
    ``POST .../files`` for 1-2 CSV tables (the automatic and SDC checks run), ``PUT
    .../groups/main`` (context and controls), ``POST .../submit``;
  - *review* (a checker): ``GET api/requests/<id>`` of a request waiting for review, for each file
    ``GET requests/<id>/files/<fid>/raw`` (a write: checkers' views are audited) and ``PUT
    .../files/<fid>/vote``, then ``POST .../review``.

  ``--think-ms`` (default 0: closed loop, every client sends its next request as soon as the
  previous one is answered) adds an exponentially distributed pause between operations. The
  first ``--warmup`` seconds (default 3) are not recorded; then ``--duration`` seconds are, and
  an operation still running at the end stops before its next request.

Every HTTP request's latency (send to last byte read) and status are recorded. A 409 is a
race the workflow refuses on purpose (two checkers reviewing the same request, a request that
moved on): counted as ``409``, not as an error, and the operation stops there. Anything else
that is not 2xx is an error; the first ones are printed. Reported per backend and per endpoint:
count, requests/s, median, p95, p99, max; per operation (end to end); each handler's own wall
and CPU time and its SQL statements, measured in the server (service time, as opposed to
queueing); the CPU used, and the time spent waiting in the run queue, by the server process, by
PostgreSQL's backends and by this load generator (``/proc/<pid>/task/*/schedstat``; they share
the machine's cores). The medians over ``--runs`` runs are reported; the order of the backends
alternates from run to run.

``--profile`` adds one shorter run per backend with cProfile enabled around every handler in
the server, and prints where the server's time goes per endpoint and the top functions.

Prints Markdown and appends it, with the machine, the date and the command, to
``benchmarks/egress-load-README.md`` (unless ``--no-append``). Everything is on loopback, stops
by itself and removes its temporary directories and the PostgreSQL cluster. A benchmark, not a
test: it asserts nothing about times.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import glob
import json
import math
import os
import platform
import pstats
import random
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from host_facts import cpu_model  # this folder (scripts here run as benchmarks/<name>.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

README = Path(__file__).with_name("egress-load-README.md")
PREFIX = "/services/egress/"
USER_HEADER = "X-Bench-User"
PROJECTS = {"cardio": 10, "diabetes": 10}  # researchers per project
CHECKERS = [f"checker{i}" for i in range(1, 7)]
REVIEWS_REQUIRED = 2
OPERATIONS = {"list": 50, "view": 25, "submit": 10, "review": 15}
SEED_STATES = {
    "draft": 10,
    "withdrawn": 5,
    "submitted": 25,
    "under_review": 15,
    "reviewed": 10,
    "returned": 5,
    "approved": 5,
    "released": 15,
    "rejected": 10,
}
LABELS = [
    "list",
    "queue",
    "view",
    "outputs",
    "create",
    "add_file",
    "context",
    "submit",
    "view_file",
    "vote",
    "review",
]
TARGET_P95_MS = 250.0


def researchers(project: str) -> list[str]:
    first = 1 + 10 * list(PROJECTS).index(project)
    return [f"r{n:02d}" for n in range(first, first + PROJECTS[project])]


def enclave_yaml(state_dir: Path) -> str:
    lines = [
        "enclave:",
        "  name: loadbench",
        f"  state_dir: {state_dir}",
        "projects:",
    ]
    for project in PROJECTS:
        members = ", ".join(researchers(project))
        lines.append(f"  {project}: {{title: {project.title()}, members: [{members}]}}")
    lines.append(f"output_checkers: [{', '.join(CHECKERS)}]")
    lines.append(f"review: {{reviews_required: {REVIEWS_REQUIRED}}}")
    return "\n".join(lines) + "\n"


def make_outputs(root: Path, rng: random.Random) -> dict[str, list[str]]:
    """Each project's outputs folder: eight CSV tables of counts and a note; returns the CSVs."""
    tables: dict[str, list[str]] = {}
    for project in PROJECTS:
        folder = root / project
        (folder / "tables").mkdir(parents=True)
        (folder / "notes.txt").write_text("Counts by region and age band.\n")
        tables[project] = []
        for n in range(1, 9):
            bands = ["0-17", "18-39", "40-64", "65+"]
            rows = ["region," + ",".join(bands)]
            for region in ("north", "south", "east", "west", "centre", "islands")[: 3 + n % 4]:
                # mostly safe counts; a few tables have a small cell for the SDC check to flag
                cells = [str(rng.randint(12, 900)) for _ in bands]
                if n in (3, 7) and region == "east":
                    cells[1] = "4"
                rows.append(region + "," + ",".join(cells))
            path = f"tables/t{n:02d}.csv"
            (folder / path).write_text("\n".join(rows) + "\n")
            tables[project].append(path)
    return tables


# ============================================================================================
# The server process


def _server_label(handler: Any) -> str:
    name = type(handler).__name__
    method = handler.request.method
    if name == "RequestsApi":
        if method == "POST":
            return "create"
        return "queue" if handler.get_query_argument("mine_to_review", "") else "list"
    if name == "RequestActionApi":
        return str(handler.path_kwargs.get("action", "action"))
    return {
        "RequestApi": "view",
        "OutputsApi": "outputs",
        "FilesApi": "add_file",
        "GroupApi": "context",
        "RawFile": "view_file",
        "VoteApi": "vote",
    }.get(name, f"{name}.{method}")


def serve(args: argparse.Namespace) -> None:
    """The ``_serve`` mode: the real app over a real service; prints ``READY <port>``."""
    from sqlalchemy import event
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import IOLoop

    from egress.operations.facade import EgressService
    from egress.service import listen, serve_workers
    from egress.store.content import ContentStore
    from egress.store.db import make_engine
    from egress.web import api, pages
    from egress.web import app as web
    from egress.web.base import BaseHandler
    from havre.enclave.config import parse_enclave_yaml

    # Authentication, in this process only: the user is who the X-Bench-User header says (the
    # real service asks the hub through Hub OAuth). Projects and roles still come from the
    # enclave config through egress.operations.facade.actor_for, as in production.
    def bench_user(self: BaseHandler) -> dict[str, Any] | None:
        name = self.request.headers.get(USER_HEADER)
        return {"name": name, "groups": []} if name else None

    BaseHandler.get_current_user = bench_user  # type: ignore[method-assign]
    BaseHandler.check_xsrf_cookie = lambda self: None  # type: ignore[method-assign]

    # Every handler is timed from its start to its end (on the IOLoop, with the time its core
    # operations take in the thread pool, waits for a pool thread included), the CPU of those
    # operations and of the handler's own code measured, and their SQL statements counted; with
    # --profile-dir the core operations are profiled per endpoint (then with one pool thread:
    # cProfile follows one thread at a time).
    # label -> [(start, wall ms, CPU ms, SQL statements, the client's port)]
    times: dict[str, list[tuple[float, float, float, int, int]]] = defaultdict(list)
    profiles: dict[str, cProfile.Profile] | None = (
        defaultdict(cProfile.Profile) if args.profile_dir else None
    )
    original_run = BaseHandler.run

    async def measured_run(self: Any, operation: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        label = _server_label(self)

        def job() -> Any:
            profile = profiles[label] if profiles is not None else None
            statements, cpu = _statements(), time.thread_time()
            if profile is not None:
                profile.enable()
            try:
                return operation(*a, **kw)
            finally:
                if profile is not None:
                    profile.disable()
                used = getattr(self, "_bench_used", [0.0, 0])
                used[0] += (time.thread_time() - cpu) * 1000
                used[1] += _statements() - statements
                self._bench_used = used

        return await original_run(self, job)

    BaseHandler.run = measured_run  # type: ignore[method-assign]
    handlers = {
        api.RequestsApi: ("get", "post"),
        api.RequestApi: ("get",),
        api.OutputsApi: ("get",),
        api.FilesApi: ("post",),
        api.GroupApi: ("put",),
        api.RequestActionApi: ("post",),
        pages.RawFile: ("get",),
        api.VoteApi: ("put",),
    }
    for cls, methods in handlers.items():
        for method in methods:
            setattr(cls, method, _timed(getattr(cls, method), times))

    enclave = parse_enclave_yaml(Path(args.enclave).read_text(), source=args.enclave)
    outputs = Path(args.outputs)
    cookie_secret = os.urandom(32)
    # a free port, held (bound, not listening) while the workers listen on it with SO_REUSEPORT
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]

    def run_worker(index: int) -> None:
        # as the service's main(): each worker process its own engine, service and IOLoop
        engine = make_engine(args.db_url)
        event.listen(engine, "before_cursor_execute", _count_statement)
        service = EgressService(
            engine,
            ContentStore(args.content),
            enclave,
            outputs_root=lambda project: outputs / project,
            signing_key_path=args.key,
            checkpoint_path=args.checkpoints,
        )
        app = web.make_app(
            service, PREFIX, cookie_secret=cookie_secret, threads=1 if profiles else args.threads
        )
        app.settings["log_function"] = lambda handler: None  # no access log
        HTTPServer(app).add_sockets(listen(port, "127.0.0.1", shared=True))
        loop = IOLoop.current()
        signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
        loop.start()
        Path(f"{args.stats}.{index}").write_text(json.dumps({"times_ms": times}))
        if profiles is not None:
            for label, profile in profiles.items():
                profile.dump_stats(str(Path(args.profile_dir) / f"{label}.{index}.pstats"))
        engine.dispose()

    print(f"READY {port}", flush=True)  # the client waits for the port to answer
    serve_workers(run_worker, args.processes)


_STATEMENT_COUNT = threading.local()  # SQL statements executed so far, per thread


def _count_statement(*_args: Any) -> None:
    _STATEMENT_COUNT.n = getattr(_STATEMENT_COUNT, "n", 0) + 1


def _statements() -> int:
    return getattr(_STATEMENT_COUNT, "n", 0)


def _timed(
    method: Callable[..., Any], times: dict[str, list[tuple[float, float, float, int, int]]]
) -> Any:
    """The handler ``method`` timed per endpoint: its wall time from start to end (waits for
    the pool included), and the CPU and SQL statements of the core operations it ran in the
    pool (``_bench_used``, filled in by ``measured_run``)."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        label = _server_label(self)
        started = time.perf_counter()
        try:  # the client's port: which keep-alive connection the request came on
            client_port = self.request.connection.stream.socket.getpeername()[1]
        except (AttributeError, OSError):
            client_port = 0
        try:
            return await method(self, *args, **kwargs)
        finally:
            wall = (time.perf_counter() - started) * 1000
            pool_cpu, sql = getattr(self, "_bench_used", [0.0, 0])
            times[label].append((started, wall, pool_cpu, sql, client_port))

    return wrapper


# ============================================================================================
# PostgreSQL: a throwaway cluster (as in tests/unit/egress/conftest.py)


def _pg_bin_dir() -> Path:
    def version(path: str) -> tuple[int, ...]:
        return tuple(int(p) for p in Path(path).parent.name.split(".") if p.isdigit())

    candidates = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(os.path.realpath(which)).parent)
    for directory in reversed(candidates):
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    raise SystemExit("PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(cmd)]


@dataclass
class PostgresCluster:
    base: Path
    data: Path
    port: int
    bin_dir: Path
    version: str = ""

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.base}&port={self.port}"

    def admin(self, sql: str) -> None:
        from egress.store.db import make_engine

        engine = make_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    bin_dir = _pg_bin_dir()
    base = Path(tempfile.mkdtemp(prefix="havre-egress-load-pg-"))
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o700)
    data = base / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = False
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        subprocess.run(
            _as_postgres([*initdb, "-E", "UTF8", "--no-sync"]), check=True, capture_output=True
        )
        # Default durability (fsync, synchronous_commit, full_page_writes on), as a
        # production server would run; only reachable through a Unix socket in ``base``.
        options = f"-k {base} -c listen_addresses='' -p {port}"
        pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w"]
        subprocess.run(
            _as_postgres([*pg_ctl, "-o", options, "start"]), check=True, capture_output=True
        )
        started = True
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
        yield PostgresCluster(base, data, port, bin_dir, out.strip())
    finally:
        if started:
            subprocess.run(
                _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(base, ignore_errors=True)


def _schedstat(pid: int) -> tuple[float, float]:
    """Seconds on a CPU and seconds runnable but waiting for one, over a process's threads."""
    cpu = wait = 0.0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            on_cpu, waiting, _slices = Path(path).read_text().split()
        except (OSError, ValueError):
            continue
        cpu += int(on_cpu) / 1e9
        wait += int(waiting) / 1e9
    return cpu, wait


def _children(root: int) -> list[int]:
    pids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            ppid = int(Path(stat).read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == root:
            pids.append(int(Path(stat).parent.name))
    return pids


@dataclass
class Probe:
    """CPU time and run-queue waits of the server, of PostgreSQL (postmaster and its live
    children: the backends) and of this load generator."""

    server_pid: int
    postmaster_pid: int | None

    def sample(self) -> dict[str, float]:
        out = {"t": time.perf_counter()}
        out["server_cpu"] = out["server_wait"] = 0.0
        for pid in [self.server_pid, *_children(self.server_pid)]:
            cpu, wait = _schedstat(pid)
            out["server_cpu"] += cpu
            out["server_wait"] += wait
        out["clients_cpu"], out["clients_wait"] = _schedstat(os.getpid())
        out["postgres_cpu"] = out["postgres_wait"] = 0.0
        if self.postmaster_pid:
            for pid in [self.postmaster_pid, *_children(self.postmaster_pid)]:
                cpu, wait = _schedstat(pid)
                out["postgres_cpu"] += cpu
                out["postgres_wait"] += wait
        return out


# ============================================================================================
# The seed


def seed(db_url: str, env: Env, count: int, rng: random.Random) -> Counter[str]:
    """``count`` requests through the core, in every state; returns how many of each."""
    from egress.operations.facade import EgressService, actor_for
    from egress.store.content import ContentStore
    from egress.store.db import make_engine, migrate
    from havre.enclave.config import parse_enclave_yaml

    enclave = parse_enclave_yaml(env.enclave.read_text())
    engine = make_engine(db_url)
    migrate(engine)
    service = EgressService(
        engine,
        ContentStore(env.content),
        enclave,
        outputs_root=lambda project: env.outputs / project,
        signing_key_path=env.key,
        checkpoint_path=env.tmp / "seed-checkpoints.jsonl",
    )
    states = rng.choices(list(SEED_STATES), weights=list(SEED_STATES.values()), k=count)
    for n, target in enumerate(states):
        project = rng.choice(list(PROJECTS))
        author = actor_for(enclave, rng.choice(researchers(project)))
        rid = service.create_request(author, project, f"Seeded request {n}")["id"]
        for path in rng.sample(env.tables[project], rng.randint(1, 3)):
            service.add_file(author, rid, path, "main")
        service.set_group_context(
            author, rid, "main", "Counts of patients by region and age band.", "Cells < 10 hidden."
        )
        if target == "draft":
            continue
        if target == "withdrawn":
            service.withdraw(author, rid)
            continue
        service.submit(author, rid)
        if target == "submitted":
            continue
        negative = target in ("returned", "rejected")
        for i, name in enumerate(rng.sample(CHECKERS, REVIEWS_REQUIRED)):
            checker = actor_for(enclave, name)
            for k, entry in enumerate(service.get_request(checker, rid)["files"]):
                vote = "request_changes" if negative and i == 0 and k == 0 else "approve"
                service.vote(checker, rid, entry["id"], vote)
            service.submit_review(checker, rid)
            if target == "under_review":
                break
        if target in ("under_review", "reviewed"):
            continue
        decider = actor_for(enclave, rng.choice(CHECKERS))
        if target == "returned":
            service.return_request(decider, rid)
        elif target == "rejected":
            service.reject(decider, rid)
        else:
            service.approve(decider, rid)
            if target == "released":
                service.release(decider, rid)
    everyone = actor_for(enclave, CHECKERS[0])
    made = Counter(r["state"] for r in service.list_requests(everyone))
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return made


# ============================================================================================
# The clients


class Conflict(Exception):
    """A 409: the workflow refused a race on purpose."""


class Failed(Exception):
    """Any other non-2xx answer (or no answer)."""


class TimeUp(Exception):
    """The run is over: the operation stops before its next request (not counted)."""


@dataclass
class Recorder:
    window: tuple[float, float] = (0.0, math.inf)  # perf_counter start and end of measurement
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ops: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ops_aborted: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)


@dataclass
class World:
    """What the clients know of the requests (shared by all clients of this process)."""

    by_project: dict[str, list[str]]
    everything: list[str]
    to_review: dict[str, set[str]]  # request id -> checkers who reviewed it (this round)
    in_review: Counter[str] = field(default_factory=Counter)  # reviews in progress

    def pick_for_review(self, rng: random.Random, checker: str) -> str | None:
        choices = [
            rid
            for rid, done in self.to_review.items()
            if checker not in done and len(done) + self.in_review[rid] < REVIEWS_REQUIRED
        ]
        return rng.choice(choices) if choices else None


class Client:
    def __init__(
        self,
        session: Any,
        base: str,
        world: World,
        rec: Recorder,
        tables: dict[str, list[str]],
        rng: random.Random,
        *,
        full_answers: bool = False,
    ) -> None:
        #: send ``Prefer: return=representation`` with every write: the whole request in
        #: each write's answer, as the service answered before issue #21
        self.full_answers = full_answers
        self.session = session
        self.base = base
        self.world = world
        self.rec = rec
        self.tables = tables
        self.rng = rng

    async def call(
        self, label: str, method: str, path: str, user: str, body: dict[str, Any] | None = None
    ) -> Any:
        headers = {USER_HEADER: user}
        if self.full_answers and method != "GET":
            headers["Prefer"] = "return=representation"
        started = time.perf_counter()
        if started >= self.rec.window[1]:
            raise TimeUp
        counted = started >= self.rec.window[0]
        try:
            async with self.session.request(
                method, self.base + path, json=body, headers=headers
            ) as resp:
                data = await resp.read()
                status = resp.status
        except Exception as exc:  # no answer at all: an error of this endpoint
            status, data = 0, repr(exc).encode()
        if counted:
            self.rec.latencies[label].append((time.perf_counter() - started) * 1000)
        if 200 <= status < 300:
            return json.loads(data) if data and label != "view_file" else data
        if status == 409:
            self.rec.conflicts[label] += counted
            raise Conflict
        self.rec.errors[label] += counted
        if len(self.rec.error_samples) < 10:
            text = data[:300].decode(errors="replace")
            self.rec.error_samples.append(f"{method} {path} as {user}: {status} {text}")
        raise Failed

    # -- operations -----------------------------------------------------------------------------

    def _someone(self) -> tuple[str, str | None]:
        """A user for list/view: a researcher (with their project) 70 %, else a checker."""
        if self.rng.random() < 0.7:
            project = self.rng.choice(list(PROJECTS))
            return self.rng.choice(researchers(project)), project
        return self.rng.choice(CHECKERS), None

    async def op_list(self) -> None:
        user, project = self._someone()
        if project is None and self.rng.random() < 0.5:
            await self.call("queue", "GET", "api/requests?mine_to_review=1", user)
        else:
            await self.call("list", "GET", "api/requests", user)

    async def op_view(self) -> None:
        user, project = self._someone()
        ids = self.world.by_project[project] if project else self.world.everything
        await self.call("view", "GET", f"api/requests/{self.rng.choice(ids)}", user)

    async def op_submit(self) -> None:
        project = self.rng.choice(list(PROJECTS))
        user = self.rng.choice(researchers(project))
        listing = await self.call("outputs", "GET", f"api/projects/{project}/outputs", user)
        csvs = [f["path"] for f in listing["files"] if f["path"].endswith(".csv")]
        title = f"Load test {self.rng.getrandbits(32):08x}"
        body = {"project": project, "title": title}
        rid = (await self.call("create", "POST", "api/requests", user, body))["id"]
        self.world.by_project[project].append(rid)
        self.world.everything.append(rid)
        for path in self.rng.sample(csvs, self.rng.randint(1, 2)):
            body = {"path": path, "group": "main"}
            await self.call("add_file", "POST", f"api/requests/{rid}/files", user, body)
        body = {"context": "Counts by region and age band.", "controls": "Cells < 10 hidden."}
        await self.call("context", "PUT", f"api/requests/{rid}/groups/main", user, body)
        await self.call("submit", "POST", f"api/requests/{rid}/submit", user)
        self.world.to_review[rid] = set()

    async def op_review(self) -> None:
        checker = self.rng.choice(CHECKERS)
        rid = self.world.pick_for_review(self.rng, checker)
        if rid is None:  # nothing to review: look at the queue instead
            await self.call("queue", "GET", "api/requests?mine_to_review=1", checker)
            return
        self.world.in_review[rid] += 1
        try:
            request = await self.call("view", "GET", f"api/requests/{rid}", checker)
            if request["state"] not in ("submitted", "under_review"):
                self.world.to_review.pop(rid, None)
                return
            for entry in request["files"]:
                fid = entry["id"]
                await self.call("view_file", "GET", f"requests/{rid}/files/{fid}/raw", checker)
                vote = "request_changes" if self.rng.random() < 0.1 else "approve"
                path = f"api/requests/{rid}/files/{fid}/vote"
                await self.call("vote", "PUT", path, checker, {"vote": vote})
            after = await self.call("review", "POST", f"api/requests/{rid}/review", checker)
            if rid in self.world.to_review:
                self.world.to_review[rid].add(checker)
            if after["state"] not in ("submitted", "under_review"):
                self.world.to_review.pop(rid, None)
        except Conflict:
            self.world.to_review.pop(rid, None)
            raise
        finally:
            self.world.in_review[rid] -= 1

    async def run(self, think_ms: float) -> None:
        names, weights = list(OPERATIONS), list(OPERATIONS.values())
        operations = {name: getattr(self, f"op_{name}") for name in names}
        while time.perf_counter() < self.rec.window[1]:
            name = self.rng.choices(names, weights)[0]
            started = time.perf_counter()
            counted = started >= self.rec.window[0]
            try:
                await operations[name]()
            except TimeUp:
                return
            except (Conflict, Failed):
                self.rec.ops_aborted[name] += counted
            else:
                if counted:
                    self.rec.ops[name].append((time.perf_counter() - started) * 1000)
            if think_ms:
                await asyncio.sleep(self.rng.expovariate(1000 / think_ms))


async def run_clients(
    port: int,
    args: argparse.Namespace,
    duration: float,
    tables: dict,
    rng: random.Random,
    probe: Probe,
    full_answers: bool = False,
) -> tuple[Recorder, dict[str, float], dict[str, float]]:
    """The load: ``args.warmup`` seconds not recorded, then ``duration`` seconds recorded.

    Returns what was recorded and the probe's samples at the start and end of the window.
    """
    import aiohttp

    base = f"http://127.0.0.1:{port}{PREFIX}"
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # what there is (not timed): every request, as a checker sees them
        async with session.get(base + "api/requests", headers={USER_HEADER: CHECKERS[0]}) as r:
            summaries = await r.json()
        world = World(
            by_project={p: [s["id"] for s in summaries if s["project"] == p] for p in PROJECTS},
            everything=[s["id"] for s in summaries],
            to_review={
                s["id"]: set()
                for s in summaries
                if s["state"] in ("submitted", "under_review")
                and s["reviews_in"] < s["reviews_required"]
            },
        )
        # under_review requests already have a review by someone: mark it unknown-but-taken
        for s in summaries:
            if s["id"] in world.to_review and s["reviews_in"]:
                world.to_review[s["id"]].add("(seeded reviewer)")
        start = time.perf_counter() + args.warmup
        rec = Recorder(window=(start, start + duration))
        workers = [
            Client(
                session,
                base,
                world,
                rec,
                tables,
                random.Random(rng.getrandbits(64)),
                full_answers=full_answers,
            )
            for _ in range(args.clients)
        ]
        samples: list[dict[str, float]] = []

        async def sampler() -> None:
            for at in rec.window:
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                samples.append(probe.sample())

        await asyncio.gather(sampler(), *(w.run(args.think_ms) for w in workers))
        return rec, samples[0], samples[1]


# ============================================================================================
# One run: a fresh copy of the seed, the server, the load


@dataclass
class Env:
    tmp: Path
    enclave: Path
    outputs: Path
    content: Path
    key: Path
    tables: dict[str, list[str]]


@dataclass
class RunResult:
    backend: str
    run: int
    elapsed_s: float
    endpoints: dict[str, dict[str, float]]
    operations: dict[str, dict[str, float]]
    server_ms: dict[str, dict[str, float]]
    cpu: dict[str, float]
    error_samples: list[str]
    loadavg: tuple[float, float, float]
    #: requests each worker process started in the measurement window (the kernel spreads
    #: the clients' keep-alive connections over the workers' sockets by a hash)
    worker_requests: tuple[int, ...] = ()
    #: the clients' connections each worker process served in the window
    worker_connections: tuple[int, ...] = ()


def percentile(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(values: list[float], elapsed: float, conflicts: int = 0, errors: int = 0) -> dict:
    return {
        "count": len(values),
        "rps": len(values) / elapsed,
        "median": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "conflicts": conflicts,
        "errors": errors,
    }


def start_server(
    env: Env, db_url: str, workdir: Path, profile_dir: Path | None, processes: int, threads: int
) -> tuple[subprocess.Popen[str], int]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_serve",
        "--db-url",
        db_url,
        "--enclave",
        str(env.enclave),
        "--outputs",
        str(env.outputs),
        "--content",
        str(env.content),
        "--key",
        str(env.key),
        "--checkpoints",
        str(workdir / "checkpoints.jsonl"),
        "--stats",
        str(workdir / "server-stats.json"),
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]
    if profile_dir is not None:
        cmd += ["--profile-dir", str(profile_dir)]
    stderr = (workdir / "server-stderr.log").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    stderr.close()
    line = proc.stdout.readline() if proc.stdout else ""  # READY <port>, or EOF if it died
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        log = (workdir / "server-stderr.log").read_text()[-3000:]
        raise RuntimeError(f"the server did not start:\n{log}")
    port = int(line.split()[1])
    deadline = time.monotonic() + 30
    while True:  # the workers bind the port themselves: wait until one listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the server's workers did not listen") from None
            time.sleep(0.05)


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_run(
    backend: str,
    run: int,
    env: Env,
    args: argparse.Namespace,
    cluster: PostgresCluster | None,
    profile_dir: Path | None = None,
    duration: float | None = None,
    workers: str = "1x4",
) -> RunResult:
    workdir = env.tmp / f"{backend}-run{run}"
    workdir.mkdir()
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        db = workdir / "egress.db"
        shutil.copyfile(env.tmp / "seed-sqlite.db", db)
        db_url = f"sqlite:///{db}"
    else:
        assert cluster is not None
        name = f"run_{run}_{os.getpid()}"
        cluster.admin(f'CREATE DATABASE "{name}" TEMPLATE seed')
        db_url = cluster.url(name)

        def drop() -> None:
            cluster.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    processes, threads = (int(n) for n in workers.removesuffix(FULL_SUFFIX).split("x"))
    proc, port = start_server(env, db_url, workdir, profile_dir, processes, threads)
    try:
        probe = Probe(proc.pid, cluster.postmaster_pid() if cluster else None)
        rng = random.Random(f"{args.seed}-{run}")
        rec, before, after = asyncio.run(
            run_clients(
                port,
                args,
                duration or args.duration,
                env.tables,
                rng,
                probe,
                full_answers=workers.endswith(FULL_SUFFIX),
            )
        )
    finally:
        stop_server(proc)
        drop()
    loadavg = os.getloadavg()
    elapsed = after["t"] - before["t"]
    server: dict[str, dict[str, list]] = {"times_ms": defaultdict(list)}
    per_worker: list[list] = []
    for stats_path in sorted(workdir.glob("server-stats.json.*")):  # one per worker process
        per_worker.append([])
        for label, rows in json.loads(stats_path.read_text())["times_ms"].items():
            server["times_ms"][label] += rows
            per_worker[-1] += rows
    endpoints = {
        label: summarise(
            rec.latencies.get(label, []), elapsed, rec.conflicts[label], rec.errors[label]
        )
        for label in LABELS
        if label in rec.latencies
    }
    everything = [v for values in rec.latencies.values() for v in values]
    endpoints["all requests"] = summarise(
        everything, elapsed, sum(rec.conflicts.values()), sum(rec.errors.values())
    )
    operations = {
        name: summarise(rec.ops.get(name, []), elapsed, rec.ops_aborted[name])
        for name in OPERATIONS
    }
    # the server's handler times of requests started in the measurement window
    start, end = rec.window
    handler_times = {
        label: [row for row in rows if start <= row[0] < end]
        for label, rows in server.get("times_ms", {}).items()
    }
    handler_times["all requests"] = [row for v in handler_times.values() for row in v]
    server_ms = {
        label: {
            "mean": statistics.fmean(r[1] for r in rows),
            "cpu": statistics.fmean(r[2] for r in rows),
            "sql": statistics.fmean(r[3] for r in rows),
            "sum_s": sum(r[1] for r in rows) / 1000,
        }
        for label, rows in handler_times.items()
        if rows
    }
    usage = {key: (after[key] - before[key]) / elapsed for key in after if key != "t"}
    worker_requests = tuple(sum(start <= row[0] < end for row in rows) for rows in per_worker)
    worker_connections = tuple(
        len({row[4] for row in rows if start <= row[0] < end and len(row) > 4})
        for rows in per_worker
    )
    # handlers in progress on average (Little's law over the window, all workers together)
    usage["handlers"] = server_ms.get("all requests", {}).get("sum_s", 0.0) / elapsed
    result = RunResult(
        backend=config_key(backend, workers),
        run=run,
        elapsed_s=elapsed,
        endpoints=endpoints,
        operations=operations,
        server_ms=server_ms,
        cpu=usage,
        error_samples=rec.error_samples,
        loadavg=loadavg,
        worker_requests=worker_requests,
        worker_connections=worker_connections,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return result


# ============================================================================================
# Reporting


def fmt(value: float, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:,.{digits}f}")
    )


def median_of(results: list[RunResult], part: str, label: str, key: str) -> float:
    values = [
        getattr(r, part)[label][key]
        for r in results
        if label in getattr(r, part) and not math.isnan(getattr(r, part)[label][key])
    ]
    return statistics.median(values) if values else math.nan


def backend_tables(backend: str, results: list[RunResult]) -> list[str]:
    runs = len(results)
    out = [
        f"#### {config_name(backend)} (median of {runs} run{'s' * (runs != 1)})",
        "",
        "| endpoint | count | req/s | median ms | p95 ms | p99 ms | max ms | 409 | errors "
        "| server ms | server CPU ms | SQL/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = [lab for lab in [*LABELS, "all requests"] if any(lab in r.endpoints for r in results)]
    for label in labels:

        def m(key: str, label: str = label) -> float:
            return median_of(results, "endpoints", label, key)

        server = median_of(results, "server_ms", label, "mean")
        server_cpu = median_of(results, "server_ms", label, "cpu")
        sql = median_of(results, "server_ms", label, "sql")
        name = f"**{label}**" if label == "all requests" else label
        out.append(
            f"| {name} | {fmt(m('count'), 0)} | {fmt(m('rps'))} | {fmt(m('median'))} "
            f"| {fmt(m('p95'))} | {fmt(m('p99'))} | {fmt(m('max'))} | {fmt(m('conflicts'), 0)} "
            f"| {fmt(m('errors'), 0)} | {fmt(server)} | {fmt(server_cpu)} | {fmt(sql)} |"
        )
    out += [
        "",
        "| operation (end to end) | completed | ops/s | median ms | p95 ms | p99 ms | max ms "
        "| stopped by a 409/error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in OPERATIONS:

        def o(key: str, name: str = name) -> float:
            return median_of(results, "operations", name, key)

        out.append(
            f"| {name} | {fmt(o('count'), 0)} | {fmt(o('rps'))} | {fmt(o('median'))} "
            f"| {fmt(o('p95'))} | {fmt(o('p99'))} | {fmt(o('max'))} | {fmt(o('conflicts'), 0)} |"
        )
    cpu = {k: statistics.median(r.cpu[k] for r in results) for k in results[0].cpu}
    out += [
        "",
        "Server ms: the mean wall time of the handler, from its start on the IOLoop to its end "
        "(its core operations in the thread pool included, and their waits for a pool thread, "
        "the GIL and the database; not the wait for the IOLoop before it starts); server CPU "
        "ms: the CPU its core operations used in the pool; SQL/request: statements executed "
        "per request (means). In the window (medians), handlers in progress in the server, on "
        f"average: {cpu['handlers']:.1f}; cores used / "
        "cores waited for in the run queue: server process "
        f"{cpu['server_cpu']:.2f} / {cpu['server_wait']:.2f}, "
        f"PostgreSQL {cpu['postgres_cpu']:.2f} / {cpu['postgres_wait']:.2f}, load generator "
        f"{cpu['clients_cpu']:.2f} / {cpu['clients_wait']:.2f}. "
        f"Per-run p95 of all requests: "
        + ", ".join(fmt(r.endpoints["all requests"]["p95"]) for r in results)
        + " ms; req/s: "
        + ", ".join(fmt(r.endpoints["all requests"]["rps"]) for r in results)
        + ".",
    ]
    samples = [s for r in results for s in r.error_samples]
    if samples:
        out += ["", "Errors (first ones):", "", "```", *samples[:10], "```"]
    return out


BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def config_key(backend: str, workers: str) -> str:
    """A configuration measured: the database, and worker processes x pool threads."""
    return f"{backend}/{workers}"


#: a worker configuration's suffix: its clients ask every write for the whole request
FULL_SUFFIX = "+full"


def workers_name(workers: str) -> str:
    processes, threads = workers.removesuffix(FULL_SUFFIX).split("x")
    full = ", writes answered with the whole request" if workers.endswith(FULL_SUFFIX) else ""
    return (
        f"{processes} worker process{'es' if processes != '1' else ''} x "
        f"{threads} thread{'s' if threads != '1' else ''}{full}"
    )


def config_name(key: str) -> str:
    backend, workers = key.split("/")
    return f"{BACKEND_NAMES[backend]}, {workers_name(workers)}"


def comparison_table(by_backend: dict[str, list[RunResult]]) -> list[str]:
    last = list(by_backend)[-1].split("/")[1]  # the service's default configuration
    sk, pk = config_key("sqlite", last), config_key("postgresql", last)
    if not {sk, pk} <= set(by_backend):
        return []
    s, p = by_backend[sk], by_backend[pk]
    out = [
        f"#### PostgreSQL / SQLite ({workers_name(last)})",
        "",
        "| endpoint | SQLite p95 ms | PostgreSQL p95 ms | p95 ratio | SQLite req/s "
        "| PostgreSQL req/s | req/s ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in [*LABELS, "all requests"]:
        sp95, pp95 = (median_of(x, "endpoints", label, "p95") for x in (s, p))
        srps, prps = (median_of(x, "endpoints", label, "rps") for x in (s, p))
        if math.isnan(sp95) and math.isnan(pp95):
            continue
        out.append(
            f"| {label} | {fmt(sp95)} | {fmt(pp95)} | {fmt(pp95 / sp95, 2)} | {fmt(srps)} "
            f"| {fmt(prps)} | {fmt(prps / srps, 2)} |"
        )
    return out


def workers_table(by_backend: dict[str, list[RunResult]]) -> list[str]:
    """Each backend in each worker configuration against its first one (the baseline, run in
    the same session, interleaved)."""
    out: list[str] = []
    for backend in BACKEND_NAMES:
        keys = [k for k in by_backend if k.startswith(f"{backend}/")]
        if len(keys) < 2:
            continue
        base = by_backend[keys[0]]
        baseline = workers_name(keys[0].split("/")[1])
        if not out:
            out = [
                f"#### Worker configurations against the first ({baseline}), same session",
                "",
                "| database | workers | p95 ms | p95 / baseline | median ms | req/s "
                "| req/s / baseline |",
                "|---|---|---:|---:|---:|---:|---:|",
            ]
        b95, brps = (median_of(base, "endpoints", "all requests", k) for k in ("p95", "rps"))
        for key in keys:
            rs = by_backend[key]
            p95, med, rps = (
                median_of(rs, "endpoints", "all requests", k) for k in ("p95", "median", "rps")
            )
            out.append(
                f"| {BACKEND_NAMES[backend]} | {workers_name(key.split('/')[1])} | {fmt(p95)} "
                f"| {fmt(p95 / b95, 2)} | {fmt(med)} | {fmt(rps)} | {fmt(rps / brps, 2)} |"
            )
    return out


def verdict(by_backend: dict[str, list[RunResult]]) -> list[str]:
    lines = []
    for backend, results in by_backend.items():
        p95 = median_of(results, "endpoints", "all requests", "p95")
        worst = max(
            (lab for lab in LABELS if lab in results[0].endpoints),
            key=lambda lab: median_of(results, "endpoints", lab, "p95"),
        )
        worst_p95 = median_of(results, "endpoints", worst, "p95")
        met = "met" if p95 < TARGET_P95_MS else "NOT met"
        every = "every endpoint under it" if worst_p95 < TARGET_P95_MS else "not every endpoint"
        lines.append(
            f"- {config_name(backend)}: p95 of all requests {fmt(p95)} ms: target "
            f"p95 < {TARGET_P95_MS:.0f} ms **{met}** ({every}; slowest endpoint by p95: "
            f"{worst}, {fmt(worst_p95)} ms)."
        )
    return lines


def profile_report(profile_dir: Path, backend: str, top: int) -> list[str]:
    """Where the server's handler time went by endpoint, and the top functions."""
    files = sorted(profile_dir.glob("*.pstats"))
    if not files:
        return []
    totals: dict[str, float] = defaultdict(float)  # files are <label>.<worker>.pstats
    for path in files:
        st = pstats.Stats(str(path))
        totals[path.name.split(".")[0]] += st.total_tt  # type: ignore[attr-defined]
    grand = sum(totals.values()) or 1.0
    out = [
        f"Profile ({config_name(backend)}, cProfile around each handler in the server; "
        "profiled times are inflated by cProfile itself):",
        "",
        "```",
        "handler time by endpoint: "
        + ", ".join(
            f"{label} {100 * t / grand:.0f}%"
            for label, t in sorted(totals.items(), key=lambda kv: -kv[1])
        ),
    ]
    everything = pstats.Stats(*[str(f) for f in files])
    out += ["", f"top {top} functions of all handlers by own time (tottime):"]
    out += _top_rows(everything, "tottime", top)
    out += ["", f"top {top} functions of all handlers by cumulative time:"]
    out += _top_rows(everything, "cumulative", top)
    slowest = max(totals, key=lambda k: totals[k])
    out += ["", f"the endpoint with the most handler time, {slowest}, by cumulative time:"]
    slowest_files = [str(f) for f in profile_dir.glob(f"{slowest}.*.pstats")]
    out += _top_rows(pstats.Stats(*slowest_files), "cumulative", top)
    out.append("```")
    return out


def _top_rows(st: pstats.Stats, key: str, top: int) -> list[str]:
    entries = st.stats  # type: ignore[attr-defined]
    index = 2 if key == "tottime" else 3
    rows = sorted(entries.items(), key=lambda kv: -kv[1][index])[:top]
    total = st.total_tt or 1.0  # type: ignore[attr-defined]
    lines = [f"  {'calls':>9} {'own s':>8} {'cum s':>8} {'cum %':>6}  function"]
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in rows:
        where = _short(filename)
        lines.append(
            f"  {nc:>9} {tt:>8.2f} {ct:>8.2f} {100 * ct / total:>5.0f}%  {where}:{line}({name})"
        )
    return lines


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def machine() -> dict[str, str]:
    model = cpu_model()
    versions = {}
    for name in ("tornado", "sqlalchemy", "psycopg", "aiohttp", "jupyterhub"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "kernel": platform.release(),
    }


# ============================================================================================
# Main


def build_env(tmp: Path, rng: random.Random) -> Env:
    from egress.audit.signing import generate_key

    outputs = tmp / "outputs"
    tables = make_outputs(outputs, rng)
    enclave = tmp / "enclave.yaml"
    enclave.write_text(enclave_yaml(tmp / "state"))
    key = tmp / "signing-key.pem"
    generate_key(key)
    return Env(tmp, enclave, outputs, tmp / "content", key, tables)


def main(argv: list[str] | None = None) -> int:
    from egress.service import worker_count

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--seed-requests", type=int, default=300)
    parser.add_argument("--think-ms", type=float, default=0.0, help="mean pause between ops")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not recorded")
    parser.add_argument("--seed", default="havre", help="random seed")
    parser.add_argument("--profile", action="store_true", help="add a profiled run per backend")
    parser.add_argument("--profile-duration", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=15, help="functions shown per profile")
    parser.add_argument("--no-append", action="store_true", help="don't append to the README")
    parser.add_argument(
        "--workers",
        default=f"1x1,{worker_count('')}x1",
        help="worker configurations to measure, PROCESSESxTHREADS, comma-separated; the first "
        "is the baseline (default: 1x1, one process as the service ran before, and the "
        "service's default, one process per core, each with one pool thread); a suffix "
        f"{FULL_SUFFIX} (e.g. 2x1{FULL_SUFFIX}) makes the clients send `Prefer: "
        "return=representation` with every write (each write answered with the whole "
        "request, as before issue #21)",
    )
    args = parser.parse_args(argv)
    configs_wanted = [w.strip() for w in args.workers.split(",") if w.strip()]
    for spec in configs_wanted:
        p_, _, t_ = spec.removesuffix(FULL_SUFFIX).partition("x")
        if not (p_.isdigit() and t_.isdigit() and int(p_) >= 1 and int(t_) >= 1):
            parser.error(f"--workers: {spec!r} is not PROCESSESxTHREADS, e.g. 2x4")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in BACKEND_NAMES:
            parser.error(f"unknown backend {backend!r}")

    load_before = os.getloadavg()
    started = datetime.now(UTC)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="havre-egress-load-"))
    by_backend: dict[str, list[RunResult]] = {
        config_key(b, w): [] for w in configs_wanted for b in backends
    }
    profiles: list[str] = []
    seeded: dict[str, Counter[str]] = {}
    pg_version = ""
    try:
        env = build_env(tmp, rng)
        with postgres_cluster() if "postgresql" in backends else _nothing() as cluster:
            for backend in backends:
                t0 = time.perf_counter()
                if backend == "sqlite":
                    url = f"sqlite:///{tmp / 'seed-sqlite.db'}"
                else:
                    cluster.admin("CREATE DATABASE seed")
                    url = cluster.url("seed")
                    pg_version = cluster.version
                seeded[backend] = seed(url, env, args.seed_requests, random.Random(args.seed))
                print(
                    f"seeded {backend} in {time.perf_counter() - t0:.1f} s: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(seeded[backend].items())),
                    flush=True,
                )
            for run in range(1, args.runs + 1):
                configs = [(b, w) for w in configs_wanted for b in backends]
                for backend, w in configs if run % 2 else configs[::-1]:
                    result = one_run(backend, run, env, args, cluster, workers=w)
                    by_backend[result.backend].append(result)
                    a = result.endpoints["all requests"]
                    print(
                        f"run {run} {result.backend}: {a['count']} requests in "
                        f"{result.elapsed_s:.1f} s, "
                        f"{a['rps']:.1f} req/s, median {a['median']:.1f} ms, p95 "
                        f"{a['p95']:.1f} ms, 409 {a['conflicts']}, errors {a['errors']}; "
                        f"CPU/run-queue wait: server {result.cpu['server_cpu']:.2f}/"
                        f"{result.cpu['server_wait']:.2f} pg {result.cpu['postgres_cpu']:.2f}/"
                        f"{result.cpu['postgres_wait']:.2f} clients "
                        f"{result.cpu['clients_cpu']:.2f}/{result.cpu['clients_wait']:.2f}; "
                        "handlers in progress "
                        f"{result.cpu['handlers']:.1f}; requests (connections) per worker "
                        f"{'/'.join(map(str, result.worker_requests)) or '-'} "
                        f"({'/'.join(map(str, result.worker_connections)) or '-'}); "
                        f"load {result.loadavg[0]:.2f}",
                        flush=True,
                    )
            if args.profile:
                for backend in backends:
                    pdir = tmp / f"profile-{backend}"
                    pdir.mkdir()
                    w = configs_wanted[-1]
                    one_run(backend, 99, env, args, cluster, pdir, args.profile_duration, w)
                    profiles += [*profile_report(pdir, config_key(backend, w), args.top), ""]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg()
    info = machine()
    command = shlex.join([".venv/bin/python", "benchmarks/egress_load.py", *sys.argv[1:]])
    lines = [
        f"### {started:%Y-%m-%d %H:%M} UTC: {args.clients} clients, {args.runs} x "
        f"{args.duration:g} s per backend, think time {args.think_ms:g} ms",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), kernel {info['kernel']}; load average "
        f"before {', '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.2f}' for x in load_after)}; Python {info['python']}, SQLite "
        f"{info['sqlite']}{', ' + pg_version if pg_version else ''}; {info['versions']}.",
        "",
        "Seed: "
        + "; ".join(
            f"{BACKEND_NAMES[b]}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            for b, c in seeded.items()
        )
        + ".",
        "",
        *verdict(by_backend),
        "",
    ]
    for backend, results in by_backend.items():
        lines += [*backend_tables(backend, results), ""]
    lines += [*comparison_table(by_backend), ""]
    lines += [*workers_table(by_backend), ""]
    lines += profiles
    text = "\n".join(lines).rstrip() + "\n"
    print()
    print(text)
    if not args.no_append:
        with README.open("a") as readme:
            readme.write("\n" + text)
        print(f"appended to {README}")
    return 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def serve_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="egress_load.py _serve")
    for name in ("--db-url", "--enclave", "--outputs", "--content", "--key", "--checkpoints"):
        parser.add_argument(name, required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--profile-dir", default="")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    serve(parser.parse_args(argv))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_main(sys.argv[2:])
    else:
        sys.exit(main())
