"""Export of a JSON-lines audit log (CSV or JSON lines), verified as it is written.

A CSV cell never starts with a character a spreadsheet reads as a formula: file names and
comments in the log come from users.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Mapping
from typing import Any

from egress.audit.chain import (
    Checkpoint,
    IncompleteLineError,
    MalformedLineError,
    canonical_json,
    check_log_id,
)
from egress.audit.file_log import read_jsonl
from egress.audit.verify import Checker, VerifyReport, resolve_log_id

__all__ = ["CSV_COLUMNS", "csv_cell", "export_file"]

CSV_COLUMNS = (
    "seq",
    "time",
    "actor",
    "event",
    "project",
    "request_id",
    "object",
    "file_hashes",
    "details",
    "prev_hash",
    "hash",
)


def csv_cell(value: Any) -> str:
    """One value of an event as a CSV cell that spreadsheets won't run as a formula."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        text = canonical_json(value).decode("utf-8")
    else:
        text = str(value)
    # File names and comments come from users: stop spreadsheets reading them as formulas.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def export_file(
    path: str,
    fmt: str,
    output: str | None,
    *,
    log_id: str | None = None,
    checkpoints: list[Checkpoint],
) -> VerifyReport:
    """Export a JSON-lines log as ``fmt`` (``"csv"`` or ``"jsonl"``) to ``output`` (a path, or
    ``None`` for stdout), verifying it as it goes.

    Every readable event is written, also past a problem; the report says whether the log
    verifies (against ``checkpoints`` too). ``log_id`` is resolved as for
    :func:`~egress.audit.verify.verify_file`.
    """
    log_id = check_log_id(resolve_log_id(path, log_id, checkpoints))
    checker = Checker(log_id, checkpoints)
    if checker.report is not None:
        return checker.report
    out = (
        open(output, "w", encoding="utf-8", newline="")
        if output
        else io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="", write_through=True)
    )
    writer = csv.writer(out) if fmt == "csv" else None
    try:
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        # Export everything readable, verifying as we go; the verdict comes at the end.
        failed = False
        try:
            for ev in read_jsonl(path):
                if writer is not None:
                    writer.writerow([csv_cell(getattr(ev, c)) for c in CSV_COLUMNS])
                else:
                    out.write(canonical_json(ev.to_dict()).decode("utf-8") + "\n")
                if not failed:
                    try:
                        content_ok = ev.compute_hash() == ev.hash
                    except (TypeError, ValueError):
                        content_ok = False
                    failed = not checker.feed(ev.seq, ev.prev_hash, ev.hash, content_ok, ev.time)
        except IncompleteLineError:
            if not failed:
                checker.incomplete()
        except MalformedLineError as exc:
            if not failed:
                checker.malformed(exc.line_no, exc.reason)
        return checker.finish()
    finally:
        if output:
            out.close()
        else:
            out.flush()
            out.detach()
