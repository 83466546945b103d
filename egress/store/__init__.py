"""The egress service's storage: SQLAlchemy models, engines, migrations, the audit-log table.

* :mod:`egress.store.models` -- the tables;
* :mod:`egress.store.db` -- ``make_engine``, ``migrate``, transactions;
* :mod:`egress.audit.db_log` -- appending to and verifying the hash-chained audit log
  kept in the ``audit_events`` table.

Migrations live in ``egress/store/migrations`` (Alembic) and ship inside the package.
"""

from egress.store.db import (
    make_engine,
    make_session_factory,
    migrate,
    read_session,
    write_session,
)

__all__ = ["make_engine", "make_session_factory", "migrate", "read_session", "write_session"]
