"""PostgreSQL connections of the egress service (egress.store.db.make_engine): kept in a pool,
their statements prepared on the server, a dropped one replaced without failing a request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from egress.store import db
from egress.store.db import make_engine, read_session

from .conftest import PostgresServer, new_postgres_database

QUERY = text("SELECT count(*) FROM requests WHERE project = :project")


@pytest.fixture
def pg_url(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    url, drop = new_postgres_database(postgres_server, postgres_template)
    try:
        yield url
    finally:
        drop()


def _prepared(session) -> list[str]:
    rows = session.execute(text("SELECT statement FROM pg_prepared_statements")).scalars()
    return [statement for statement in rows if "FROM requests" in statement]


def test_the_services_statements_are_prepared_on_the_server(pg_url):
    # issue #21: fewer round trips and less parsing per request on PostgreSQL
    engine = make_engine(pg_url)
    try:
        for _ in range(2):  # two transactions, one pooled connection
            with read_session(engine) as session:
                session.execute(QUERY, {"project": "cardio"}).scalar_one()
        with read_session(engine) as session:
            assert _prepared(session)
            backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with read_session(engine) as session:  # the same connection again (the pool keeps it)
            assert session.execute(text("SELECT pg_backend_pid()")).scalar_one() == backend
    finally:
        engine.dispose()
    # control: the same reads ended by a rollback (as read_session did): psycopg drops every
    # prepared statement at a rollback, so none outlives its transaction
    plain = make_engine(pg_url)
    try:
        for _ in range(3):
            with Session(bind=plain) as session:
                session.execute(QUERY, {"project": "cardio"}).scalar_one()
                session.rollback()
        with read_session(plain) as session:
            assert _prepared(session) == []
    finally:
        plain.dispose()


def _kill_pooled_connection(engine, admin_url: str) -> None:
    with read_session(engine) as session:
        backend = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = make_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    finally:
        admin.dispose()


def test_a_pooled_connection_dropped_while_idle_is_replaced(pg_url, postgres_server, monkeypatch):
    monkeypatch.setattr(db, "POSTGRES_PING_AFTER_IDLE_S", 0.0)
    engine = make_engine(pg_url)
    try:
        _kill_pooled_connection(engine, postgres_server.admin_url)
        with read_session(engine) as session:  # no error: the ping found it gone
            assert session.execute(QUERY, {"project": "cardio"}).scalar_one() == 0
    finally:
        engine.dispose()
    # control: a connection used a moment ago is not pinged, so a drop shows on first use
    monkeypatch.setattr(db, "POSTGRES_PING_AFTER_IDLE_S", 3600.0)
    engine = make_engine(pg_url)
    try:
        _kill_pooled_connection(engine, postgres_server.admin_url)
        with pytest.raises(OperationalError):
            with read_session(engine) as session:
                session.execute(QUERY, {"project": "cardio"}).scalar_one()
    finally:
        engine.dispose()


def test_a_read_session_cannot_write(pg_url):
    # the read session now ends with a commit on PostgreSQL: it must be unable to write
    engine = make_engine(pg_url)
    try:
        with pytest.raises(Exception, match="read-only"):
            with read_session(engine) as session:
                session.execute(text("DELETE FROM requests"))
    finally:
        engine.dispose()
