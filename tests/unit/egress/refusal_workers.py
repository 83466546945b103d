"""What a worker process of the egress service does to the refusals tally, as a spawned process
runs it in tests/unit/egress/test_metrics.py.

A module of its own, importing nothing but the tally: a ``spawn`` child imports the module of
its target, and the test module's imports (the service, the store, SQLAlchemy, the test
fixtures) made each child take 25 s or more to start on a busy 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

from egress.monitoring.refusals import RefusalTally


def add_refusals(directory: str, reason: str, count: int) -> None:
    """Count ``count`` refusals of kind ``reason`` in the tally kept in ``directory``."""
    tally = RefusalTally(Path(directory))
    for _ in range(count):
        tally.add(reason)
