"""The last audit verification's result, kept in a small JSON file beside the checkpoints.

Every verification (the audit page, ``GET /api/audit/verify``) writes it; the metrics read it
(``havre_egress_audit_last_verify_ok`` and ``..._timestamp_seconds``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

FILE_NAME = "audit-last-verify.json"


@dataclass(frozen=True)
class LastVerify:
    ok: bool
    at: datetime


def record_verify(path: Path, ok: bool, at: datetime) -> None:
    """Replace the record at ``path`` (written to a temporary file, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verify-")
    with os.fdopen(fd, "w") as out:
        json.dump({"ok": bool(ok), "at": at.isoformat()}, out)
    os.replace(tmp, path)


def read_verify(path: Path) -> LastVerify | None:
    """The last verification, or None if there was none (or the record is unreadable)."""
    try:
        data = json.loads(path.read_text())
        return LastVerify(ok=bool(data["ok"]), at=datetime.fromisoformat(data["at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
