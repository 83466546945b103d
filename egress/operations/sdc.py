"""The SDC facts about a file that the operations record and show: the count-table check,
the library's records and what a project member may see of a check."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from egress.files.checks import FileCheckResult
from egress.files.kinds import FileKind
from egress.files.sdc_badge import LibraryReadError
from egress.operations.common import log
from havre.enclave.outputs_folder import (
    OutputPathError,
    read_output,
)
from havre.sdc import SDCParams, check_frequency_csv, read_table_csv

# --------------------------------------------------------------------------------------------
# SDC check of CSV/TSV tables of counts


def _count_check_function() -> Callable[..., Any] | None:
    """``havre.sdc.published.check_count_csv_text`` when this version of the rules has it."""
    try:
        from havre.sdc.published import check_count_csv_text
    except ImportError:
        return None
    return check_count_csv_text


def _frequency_table_check(result: FileCheckResult, params: SDCParams) -> dict[str, Any] | None:
    """The count-table rules' verdict for a CSV/TSV of numbers; ``None`` for other files.

    A table of numbers: a first column of labels, then only non-negative whole numbers (blank
    cells are taken as suppressed). Anything else is recorded as not checked, with the reason.
    This reads every number as a count: whether the table *holds* counts is decided with the
    library's record (:func:`egress.files.sdc_badge.combine`), never here.
    """
    if result.kind not in (FileKind.CSV, FileKind.TSV) or result.release_bytes is None:
        return None
    delimiter = "\t" if result.kind is FileKind.TSV else ","
    text = result.release_bytes.decode("utf-8-sig")
    not_checked = {
        "checked": False,
        "reason": "not a table of counts (labels in the first column and header row, then "
        "whole numbers); only tables of counts are checked automatically",
    }
    fast = _count_check_function()
    if fast is not None:
        try:
            outcome = fast(text, delimiter=delimiter, params=params)
        except Exception as exc:  # the verdict informs checkers; its failure must not block
            log.exception("the SDC check of %s failed", result.name)
            return {"checked": False, "reason": f"the automatic SDC check failed: {exc}"}
        if outcome is None:
            return not_checked
        return _count_record(outcome)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2 or len(rows[0]) < 2:
        return not_checked
    numbers = 0
    for row in rows[1:]:
        for cell in row[1:]:
            cell = cell.strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                return not_checked
            if not math.isfinite(value) or value < 0 or value != int(value):
                return not_checked
            numbers += 1
    if not numbers:
        return not_checked
    try:
        frame = read_table_csv(text, delimiter=delimiter)
        outcome = check_frequency_csv(frame, params=params)
    except Exception as exc:  # the verdict informs checkers; its failure must not block a file
        log.exception("the SDC check of %s failed", result.name)
        return {"checked": False, "reason": f"the automatic SDC check failed: {exc}"}
    return _count_record(outcome)


def _count_record(outcome: Any) -> dict[str, Any]:
    record = outcome.as_record()
    record.pop("sdc", None)  # per-cell positions: recomputed when a checker needs them
    record["reasons"] = record["reasons"][:200]
    return {"checked": True, **record}


#: The largest ``results.json`` (or checksum file) read to find the library's record.
LIBRARY_RECORD_MAX_BYTES = 64 * 1024 * 1024


def _library_reader(root: Path) -> Callable[[str], bytes | None]:
    """Reads a file of the outputs folder for :class:`egress.files.sdc_badge.LibraryRecords`."""

    def read(relative: str) -> bytes | None:
        try:
            return read_output(root, relative, max_bytes=LIBRARY_RECORD_MAX_BYTES)
        except OutputPathError as exc:
            if "does not exist" in exc.reason:
                return None
            raise LibraryReadError(exc.reason) from None

    return read


def _raw_count_check(sdc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The count-table rules' record behind a stored ``sdc`` (before the badge capped it)."""
    if not sdc or not sdc.get("checked") or not isinstance(sdc.get("count_rules"), dict):
        return dict(sdc) if sdc else None
    rules = sdc["count_rules"]
    raw = {k: v for k, v in sdc.items() if k != "count_rules"}
    raw.update(
        verdict=rules.get("verdict"),
        summary=rules.get("summary"),
        reasons=list(rules.get("reasons") or []),
        statistic="count",
    )
    return raw


def _table_shape(data: bytes, kind: str) -> dict[str, int]:
    """Rows (the header included) and the widest row's columns of a CSV/TSV snapshot."""
    delimiter = "\t" if kind == FileKind.TSV.value else ","
    text = data.decode("utf-8-sig", errors="replace")
    rows = columns = 0
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        if any(cell.strip() for cell in row):
            rows += 1
            columns = max(columns, len(row))
    return {"rows": rows, "columns": columns}


#: The parts of a file's stored check that a project member sees (see :func:`member_check`).
MEMBER_SDC_KEYS = ("checked", "verdict", "kind", "statistic", "rule_counts", "params")
MEMBER_LIBRARY_KEYS = ("status", "statistic", "verdict", "label", "uid", "params", "message")
MEMBER_BADGE_KEYS = (
    "version",
    "verdict",
    "text",
    "verified_by",
    "count_rules_verdict",
    "statistic",
    "statistic_source",
    "params",
    "library_status",
)


def member_check(check: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A file's check as project members (the author included) and administrators see it.

    Verdicts and counts only: the flagged cells' text, the lines naming changed cells, the
    warnings (a PNG's chunk names are the researcher's bytes), the SDC rules' per-cell
    findings and reasons (they quote a table's labels) are left out; checkers see them all.
    The library's reasons, the researcher's exception text and the badge's sentences are left
    out too: they come from ``results.json`` in the outputs folder, which a researcher can
    write by hand. ``redacted`` says that this is the members' view.
    """
    if not check:
        return None if check is None else dict(check)
    sdc = check.get("sdc")
    out: dict[str, Any] = {
        "outcome": check.get("outcome"),
        "warnings": [],
        "changes": [],
        "flagged_cells": [],
        "flagged_cell_count": check.get("flagged_cell_count", 0),
        "warning_count": len(check.get("warnings") or []),
        "change_count": len(check.get("changes") or []),
        "sdc": None,
        "library": None,
        "badge": None,
        "redacted": True,
        "owner": check.get("owner"),
        "as_code": bool(check.get("as_code")),
    }
    if isinstance(sdc, Mapping):
        kept = {k: sdc[k] for k in MEMBER_SDC_KEYS if k in sdc}
        if not sdc.get("checked") and isinstance(sdc.get("reason"), str):
            kept["reason"] = sdc["reason"]  # why it was not checked: the service's sentence
        if isinstance(sdc.get("count_rules"), Mapping):
            kept["count_rules"] = {"verdict": sdc["count_rules"].get("verdict")}
        kept["finding_count"] = len(sdc.get("findings") or [])
        kept["reason_count"] = len(sdc.get("reasons") or [])
        out["sdc"] = kept
    library = check.get("library")
    if isinstance(library, Mapping):
        out["library"] = {k: library[k] for k in MEMBER_LIBRARY_KEYS if k in library}
    badge = check.get("badge")
    if isinstance(badge, Mapping):
        out["badge"] = {k: badge[k] for k in MEMBER_BADGE_KEYS if k in badge}
        if isinstance(sdc, Mapping) and isinstance(sdc.get("count_rules"), Mapping):
            out["badge"]["summary"] = sdc["count_rules"].get("summary") or ""
        else:
            out["badge"]["summary"] = ""
    return out


def _check_json(
    result: FileCheckResult,
    sdc: dict[str, Any] | None,
    library: dict[str, Any] | None = None,
    badge: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "outcome": result.outcome,
        "warnings": list(result.warnings),
        "changes": list(result.changes),
        "flagged_cells": [dataclasses.asdict(c) for c in result.flagged_cells[:100]],
        "flagged_cell_count": len(result.flagged_cells),
        "sdc": sdc,
        "library": library,
        "badge": badge,
    }


#: A cell's mark on a checker's table: the count-table rules' verdict, or ``suppressed``.
SUPPRESSED = "suppressed"


def table_cell_marks(
    kind: str, data: bytes, params: SDCParams
) -> tuple[dict[tuple[int, int], str], dict[tuple[int, int], str]]:
    """The marks of a CSV/TSV table's cells for a checker's page, and their reasons.

    The count-table rules are run again on the released bytes (the stored check keeps counts,
    not positions): a cell the rules fail or send to review gets ``"fail"`` or ``"review"``,
    a blank cell of the grid of counts (the researcher's or the library's suppression)
    ``"suppressed"``. Keys are ``(data row, file column)`` as
    :func:`egress.files.render.render_for_checker` reads them (the header and blank lines not
    counted, the label columns counted). Empty for anything that is not a table of counts.
    """
    if kind not in ("csv", "tsv"):
        return {}, {}
    fast = _count_check_function()
    if fast is None:
        return {}, {}
    try:
        text = data.decode("utf-8-sig")
        outcome = fast(text, delimiter="\t" if kind == "tsv" else ",", params=params)
    except Exception:  # marks help a checker; the verdicts above the table still stand
        log.exception("the per-cell marks of a %s table could not be computed", kind)
        return {}, {}
    if outcome is None or outcome.table is None:
        return {}, {}
    codes = outcome.verdict_codes
    reasons = outcome.cell_reasons.to_numpy()
    values = outcome.table.to_numpy(dtype=float)
    n_rows, n_columns = codes.shape
    labels = len(text.splitlines()[0].split("\t" if kind == "tsv" else ",")) - n_columns
    marks: dict[tuple[int, int], str] = {}
    why: dict[tuple[int, int], str] = {}
    for row in range(n_rows):
        for column in range(n_columns):
            key = (row, column + labels)
            if math.isnan(values[row, column]):
                marks[key] = SUPPRESSED
                why[key] = "a blank cell of a table of counts, taken as suppressed"
            elif codes[row, column] == 2:
                marks[key], why[key] = "fail", str(reasons[row, column])
            elif codes[row, column] == 1:
                marks[key], why[key] = "review", str(reasons[row, column])
    return marks, why
