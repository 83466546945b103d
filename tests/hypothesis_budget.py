"""How many examples each property test tries: the full count, or a fifth of it in the fast tier.

Two Hypothesis profiles, registered by ``tests/conftest.py``: ``full`` (the default, and what
``scripts/run-tests.sh`` runs) and ``fast`` (``scripts/check.sh``, ``--hypothesis-profile=fast``).
A test states the count its property needs in the full run, ``@settings(max_examples=
examples(300))``; the loaded profile scales it. The fast tier therefore runs every property, on
fewer random inputs, and every explicit example (``@example``) in full; only the full run
carries the counts the properties were tuned for.
"""

from __future__ import annotations

from hypothesis import settings

#: ``max_examples`` of the ``full`` profile (Hypothesis's default): each test's count as written.
FULL = 100
#: ``max_examples`` of the ``fast`` profile: a fifth of each test's count.
FAST = 20
#: The fewest examples a property tries in any profile (unless its full count is smaller).
FLOOR = 5


def examples(full: int) -> int:
    """The ``max_examples`` for a property that tries ``full`` examples in the full run."""
    scaled = full * settings.default.max_examples // FULL
    return max(min(full, FLOOR), scaled)
