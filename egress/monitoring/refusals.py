"""The service's refusals, counted by reason across its worker processes.

A refusal (``PermissionDenied``, ``EgressError`` and its kinds) is not written to the database,
and the workers are separate processes, any of which may answer a scrape. So each worker keeps
its own counts and, when the tally has a folder, rewrites ``refusals-<pid>.json`` there after
each refusal (they are rare); a scrape sums every file of the folder. The supervisor empties
the folder when the service starts (a counter reset, which Prometheus handles).

The reason is the refusal's kind (``permission_denied``, ``file_refused``, ``not_found``, ...):
a small, fixed set of labels, never the sentence.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections import Counter
from pathlib import Path


def reason_of(exc: BaseException) -> str:
    """``FileRefused`` -> ``file_refused``: the label of a refusal's kind."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


class RefusalTally:
    """Counts of refusals by reason; shared through ``directory`` when it is given."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def reset_directory(self) -> None:
        """Empty the folder (the supervisor, before the workers start)."""
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.glob("refusals-*.json"):
            old.unlink(missing_ok=True)

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] += 1
            snapshot = dict(self._counts)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".refusals-")
            with os.fdopen(fd, "w") as out:
                json.dump(snapshot, out)
            os.replace(tmp, self.directory / f"refusals-{os.getpid()}.json")

    def totals(self) -> dict[str, int]:
        """Refusals by reason, summed over every worker's file (or this process alone)."""
        if self.directory is None:
            with self._lock:
                return dict(self._counts)
        total: Counter[str] = Counter()
        for path in sorted(self.directory.glob("refusals-*.json")):
            try:
                counts = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a worker's file being replaced: its next scrape counts it
            total.update({str(k): int(v) for k, v in counts.items() if isinstance(v, int)})
        return dict(total)
