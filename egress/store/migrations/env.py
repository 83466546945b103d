"""Alembic environment of the egress service: always run through ``egress.store.db.migrate``.

``migrate`` hands over an open connection (``config.attributes["connection"]``) inside its own
transaction; there is no ``alembic.ini`` and no URL here. For developers,
``python -m egress.cli --db URL migrate`` applies the migrations, and new revisions are written
with ``alembic revision --autogenerate`` against a scratch database (see
``docs/sysadmin/egress-operations.md``).
"""

from __future__ import annotations

from alembic import context

from egress.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        from egress.store.db import make_engine

        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("run migrations with egress.store.db.migrate(engine)")
        with make_engine(url).connect() as connection:
            _run(connection)
            connection.commit()
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can't ALTER most things; batch mode copies the table
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; use migrate(engine)")
run_migrations_online()
