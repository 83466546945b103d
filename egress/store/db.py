"""Database engines, migrations and transactions of the egress service.

One code path for SQLite and PostgreSQL:

* :func:`make_engine` -- SQLite: WAL journal, ``synchronous=FULL`` (a committed release is on
  disk), foreign keys on, a busy timeout, and transactions that start with ``BEGIN IMMEDIATE``
  when they will write (so two writers never both read the audit head and then race to append)
  and a plain deferred ``BEGIN`` for reads. PostgreSQL (psycopg 3): a pool of connections
  kept open (LIFO, pinged only after being idle a while) whose statements are prepared on the
  server from their second use; writers serialise on ``SELECT ... FOR UPDATE`` of the single
  ``audit_log`` row, readers use ``REPEATABLE READ`` so that a view is one consistent snapshot.
* :func:`migrate` -- ``alembic upgrade head`` run programmatically with the migrations shipped in
  this package (``egress/store/migrations``); no ``alembic.ini`` and no CLI needed. On
  PostgreSQL an advisory lock makes concurrent ``migrate`` calls (the web service and the
  admin CLI starting together) wait for each other.
* :func:`write_session` / :func:`read_session` -- one transaction each, committed on success,
  rolled back on any exception.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "MIGRATIONS_DIR",
    "SQLITE_BUSY_TIMEOUT_MS",
    "current_revision",
    "head_revision",
    "make_engine",
    "make_session_factory",
    "migrate",
    "read_session",
    "write_session",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "havre_write"
# A constant key for pg_advisory_lock: "havre-eg" in ASCII.
_MIGRATION_LOCK_KEY = 0x68617672652D6567


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event (below) emit BEGIN itself: pysqlite's own implicit
    # transactions would start with a deferred BEGIN and break BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_WRITE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    A bare ``postgresql://`` URL is taken to mean psycopg 3. Extra keyword arguments go to
    :func:`sqlalchemy.create_engine`.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        connect_args.setdefault("check_same_thread", False)
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    connect_args = {**_POSTGRES_CONNECT_ARGS, **kwargs.pop("connect_args", {})}
    kwargs.setdefault("pool_size", POSTGRES_POOL_SIZE)
    kwargs.setdefault("pool_use_lifo", True)  # the warmest connection: its statements prepared
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    event.listen(engine, "connect", _postgres_on_connect)
    event.listen(engine, "checkin", _postgres_on_checkin)
    event.listen(engine, "checkout", _postgres_on_checkout)
    return engine


#: Connections kept open per process (a worker runs one transaction at a time per pool
#: thread; the admin CLI and the mailer use one or two). More are opened when needed.
POSTGRES_POOL_SIZE = 5
#: A pooled connection idle for longer than this is checked (one ``SELECT 1``) before use,
#: so one that PostgreSQL dropped meanwhile (restarted, idle timeout) is replaced instead of
#: failing a request. One in use a moment ago is not: checking every checkout, as
#: ``pool_pre_ping`` does, was one more round trip for each of a request's 2-5 transactions.
POSTGRES_PING_AFTER_IDLE_S = 5.0
_POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    # psycopg prepares a statement on the server once a connection has run it this many times
    # (its default: 5), and keeps up to ``prepared_max`` of them per connection (set on
    # connect: its default 100 is fewer than the service's distinct statements, so the busiest
    # were evicted and prepared again). The service's statements are a fixed set: prepare
    # them from their second use.
    "prepare_threshold": 1,
}
_POSTGRES_PREPARED_MAX = 1000
_CHECKED_IN = "havre_checked_in_at"


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    if hasattr(dbapi_connection, "prepared_max"):  # psycopg 3
        dbapi_connection.prepared_max = _POSTGRES_PREPARED_MAX


def _postgres_on_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info[_CHECKED_IN] = time.monotonic()


def _postgres_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Ping a connection that has been idle a while; a dead one is replaced (the pool retries
    the checkout with a new connection when this raises ``DisconnectionError``)."""
    since = record.info.get(_CHECKED_IN)
    if since is None or time.monotonic() - since < POSTGRES_PING_AFTER_IDLE_S:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not dbapi_connection.autocommit:
            dbapi_connection.commit()  # not rollback: that drops the prepared statements
    except Exception as exc:  # psycopg.OperationalError and the like: the connection is gone
        raise DisconnectionError(f"pooled PostgreSQL connection is gone: {exc}") from exc


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for ``engine`` that keep loaded objects usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _write_engine(engine: Engine) -> Engine:
    return engine.execution_options(**{_WRITE: True})


def _read_engine(engine: Engine) -> Engine:
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return engine


@contextmanager
def _writers_queue(engine: Engine) -> Iterator[None]:
    """On a SQLite file, writers (threads and processes) wait in line on a lock file.

    SQLite makes a writer that finds the database locked sleep and retry (its busy handler),
    with sleeps growing to 100 ms: under many writers, some wait far longer than the work ahead
    of them. ``flock`` wakes the next writer as soon as the lock is free. Released by the
    kernel if the process dies. Other databases: nothing (PostgreSQL queues row locks itself).
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one write transaction: ``BEGIN IMMEDIATE`` on SQLite; commit or roll back.

    On PostgreSQL the caller must lock the ``audit_log`` row first (``AuditLog.lock``), before
    reading anything it will decide on.
    """
    with _writers_queue(engine):
        with Session(bind=_write_engine(engine), expire_on_commit=False) as session:
            with session.begin():
                yield session


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session in one read-only snapshot transaction, which writes nothing.

    SQLite: rolled back. PostgreSQL: a ``READ ONLY`` transaction (a write in it fails), ended by
    a commit when the reading went well: a rollback would also make psycopg drop every
    statement the connection has prepared (``DEALLOCATE ALL``), so none would outlive one
    request.
    """
    commit = engine.dialect.name == "postgresql"
    with Session(bind=_read_engine(engine), expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        if commit:
            session.commit()
        else:
            session.rollback()


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (``alembic upgrade``), in one transaction."""
    from alembic import command

    with engine.connect() as connection:
        connection = connection.execution_options(**{_WRITE: True})
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
            command.upgrade(_alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema's Alembic revision (``None`` for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    """The newest revision the shipped migrations know."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None
    return head
