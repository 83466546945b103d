"""Fixtures of the egress unit tests: databases (SQLite and PostgreSQL), an enclave, a service.

PostgreSQL: with ``HAVRE_TEST_POSTGRES_URL`` set (e.g. ``postgresql+psycopg://u:p@host/db``, a
user allowed to create databases) that server is used. Otherwise a throwaway cluster is started
for the session from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin`` or ``PATH``):
``initdb`` into a temporary directory owned by the ``postgres`` user (``runuser`` when the tests
run as root, since PostgreSQL refuses to run as root), listening only on a Unix socket in that
directory, with fsync off; it is stopped and deleted at the end. Each test gets a fresh database
copied from a migrated template (``CREATE DATABASE ... TEMPLATE``), so migrations run once.
Without the binaries, PostgreSQL tests are skipped with a reason naming the missing binary
(install them with ``apt-get install -y postgresql``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from egress.audit.signing import generate_key
from egress.domain.policy import Actor
from egress.operations.facade import EgressService
from egress.store.content import ContentStore
from egress.store.db import make_engine, migrate
from havre.enclave.config import EnclaveConfig, parse_enclave_config

TEMPLATE_DB = "havre_egress_template"

# --------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_bin_dir() -> tuple[Path | None, str]:
    """The directory holding initdb and pg_ctl, or None and the name of what is missing."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(os.path.realpath(which)).parent)
    for directory in reversed(candidates):
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory, ""
    for directory in candidates:
        if (directory / "initdb").exists():
            return None, f"pg_ctl (initdb is in {directory})"
    return None, "initdb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """Where to connect as a superuser (``admin_url``), and how to build a database URL."""

    admin_url: str

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def admin_engine(self) -> Engine:
        return make_engine(self.admin_url, isolation_level="AUTOCOMMIT")


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    external = os.environ.get("HAVRE_TEST_POSTGRES_URL")
    if external:
        yield PostgresServer(external)
        return
    bin_dir, missing = _pg_bin_dir()
    if bin_dir is None:
        pytest.skip(
            f"PostgreSQL's {missing} is not installed (looked in /usr/lib/postgresql/*/bin and "
            "PATH); `apt-get install -y postgresql` provides it"
        )
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    base = Path(tempfile.mkdtemp(prefix="havre-pg-"))
    if os.geteuid() == 0:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o700)
    data = base / "data"
    port = _free_port()
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        options = (
            f"-k {base} -c listen_addresses='' -p {port} -F -c full_page_writes=off "
            "-c synchronous_commit=off -c max_connections=50"
        )
        subprocess.run(
            _as_postgres(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w"]
                + ["-o", options, "start"]
            ),
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(
            f"could not start a throwaway PostgreSQL: {exc.stderr.decode(errors='replace')}"
        ) from None
    try:
        yield PostgresServer(f"postgresql+psycopg://postgres@/postgres?host={base}&port={port}")
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> str:
    """A migrated template database on the server; returns its name."""
    name = f"{TEMPLATE_DB}_{uuid.uuid4().hex[:8]}"
    admin = postgres_server.admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(postgres_server.url(name))
    migrate(engine)
    engine.dispose()
    return name


def new_postgres_database(server: PostgresServer, template: str) -> tuple[str, Callable[[], None]]:
    """A fresh migrated database; returns its URL and a function that drops it."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = server.admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.url(name), drop


# --------------------------------------------------------------------------------------------
# SQLite


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file to copy (migrating each time is slower)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "egress.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


def new_sqlite_database(template: Path, directory: Path) -> str:
    path = directory / f"egress-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        yield new_sqlite_database(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("postgres_template")
    url, drop = new_postgres_database(server, template)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# An enclave, its outputs folders, a service


ENCLAVE = {
    "enclave": {"name": "havretest", "state_dir": "/srv/havre-test"},
    "projects": {
        "cardio": {"title": "Cardio", "members": ["alice", "carol", "amy"]},
        "diabetes": {"title": "Diabetes", "members": ["bob"]},
    },
    # amy is a member of cardio *and* an output checker.
    "output_checkers": ["olivia", "oscar", "chloe", "amy"],
    "review": {"reviews_required": 2},
}

ACTORS = {
    "alice": Actor("alice", frozenset({"cardio"}), is_checker=False),
    "carol": Actor("carol", frozenset({"cardio"}), is_checker=False),
    "amy": Actor("amy", frozenset({"cardio"}), is_checker=True),
    "bob": Actor("bob", frozenset({"diabetes"}), is_checker=False),
    "olivia": Actor("olivia", frozenset(), is_checker=True),
    "oscar": Actor("oscar", frozenset(), is_checker=True),
    "chloe": Actor("chloe", frozenset(), is_checker=True),
    "adam": Actor("adam", frozenset(), is_checker=False, is_admin=True),
}

FREQUENCY_TABLE = b"sex,smoker,non-smoker\nfemale,34,120\nmale,41,98\n"
SMALL_CELLS_TABLE = b"region,cases\nnorth,3\nsouth,150\n"
FORMULA_CSV = b"name,value\nx,=1+2\ny,5\n"
NOTES = b"Model fitted on 5,000 records; see table 1.\n"


@pytest.fixture
def enclave() -> EnclaveConfig:
    return parse_enclave_config(ENCLAVE, source="unit")


def make_outputs(root: Path) -> Path:
    """Outputs folders of the two projects: ``<root>/<project>/``."""
    cardio = root / "cardio"
    (cardio / "tables").mkdir(parents=True)
    (cardio / "tables" / "smoking.csv").write_bytes(FREQUENCY_TABLE)
    (cardio / "tables" / "regions.csv").write_bytes(SMALL_CELLS_TABLE)
    (cardio / "tables" / "formula.csv").write_bytes(FORMULA_CSV)
    (cardio / "notes.txt").write_bytes(NOTES)
    (cardio / "program.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (root / "diabetes").mkdir(parents=True)
    (root / "diabetes" / "hba1c.txt").write_bytes(b"mean HbA1c 48\n")
    return root


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    return make_outputs(tmp_path / "outputs")


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "signing-key.pem"
    generate_key(path)
    return path


class FakeClock:
    """A clock that moves one second forward at each reading (and on ``advance``)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(
    engine: Engine,
    enclave: EnclaveConfig,
    outputs: Path,
    signing_key: Path,
    clock: FakeClock,
    tmp_path: Path,
) -> Callable[..., EgressService]:
    """Build an :class:`EgressService` on the test database (keyword overrides allowed)."""

    def build(**overrides: object) -> EgressService:
        options: dict[str, object] = {
            "outputs_root": lambda project: outputs / project,
            "signing_key_path": signing_key,
            "clock": clock,
            "checkpoint_path": tmp_path / "checkpoints.jsonl",
        }
        options.update(overrides)
        return EgressService(
            engine,
            ContentStore(tmp_path / "content"),
            enclave,
            **options,  # type: ignore[arg-type]
        )

    return build


@pytest.fixture
def service(make_service: Callable[..., EgressService]) -> EgressService:
    return make_service()
