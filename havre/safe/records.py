"""What a check leaves in ``results.json``: the per-cell ``outcome``, the reasons in words,
Havre's ``havre`` block, and the labels as keys.

A record must never be ambiguous or too large to read: table labels become JSON-array keys
(:func:`label_key`: ``1`` and ``"1"``, or ``("x, y", "z")`` and ``("x", "y, z")``, never share a
key), and a wide table records at most :data:`MAX_CELLS_RECORDED` cells and
:data:`MAX_REASONS_RECORDED` sentences (the counts per rule and the verdict are always of every
cell), so one table can't make the whole ``results.json`` unreadable for the egress service.

:class:`Draft` is an output as a call made it (its files' bytes, verdict, properties), before the
session writes and numbers it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from havre.sdc import CellReasons, OutputCheck, SDCParams
from havre.sdc.rules import ALL_RULES

__all__ = [
    "MAX_CELLS_RECORDED",
    "MAX_REASONS_RECORDED",
    "Draft",
    "havre_block",
    "label_key",
    "label_text",
    "cell_outcomes",
    "reason_texts",
]


#: Reasons (sentences) kept per output in ``results.json``; the counts per rule are always
#: complete.
MAX_REASONS_RECORDED = 500

#: Per-cell records kept per output in ``results.json``: a table of more cells records only
#: its cells that are not ``ok`` in ``outcome`` (at most this many) and at most this many
#: positions per rule in the ``sdc`` block; counts per rule and the verdict are always of every
#: cell, and ``havre.recorded`` says what was left out.  One wide table can't make
#: ``results.json`` too large for the egress service to read (which would lose every record).
MAX_CELLS_RECORDED = 2_000


@dataclass
class Draft:
    """An output as a call made it, before the session records it: ``files`` are
    ``(extension, bytes, ACRO sdc block)``, written as ``<output id>.<extension>``."""

    output_type: str
    properties: dict[str, Any]
    files: Sequence[tuple[str, bytes, dict[str, Any]]]
    status: str
    summary: str
    outcome: dict[str, Any] | None = None
    fair: dict[str, Any] | None = None
    havre: dict[str, Any] | None = None
    comments: Sequence[str] = field(default_factory=tuple)
    check: OutputCheck | None = None


def label_text(value: Any) -> str:
    """A label as text for ``properties`` and ``fair`` (tuples joined with commas)."""
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _rule_text(mask_value: int) -> str:
    if not mask_value:
        return "ok"
    return "; ".join(rule.key for rule in ALL_RULES if mask_value & int(rule))


def _json_part(value: Any) -> Any:
    """One level of a label as a JSON value that keeps its type: numbers stay numbers (so
    ``1`` and ``"1"`` differ), a missing key is ``null``, other objects (intervals, dates)
    are tagged with their type."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float):
        if np.isnan(value):
            return None
        if np.isinf(value):
            return {"float": str(value)}
        return value
    if isinstance(value, bool | int | str):
        return value
    return {type(value).__name__: str(value)}


def label_key(value: Any) -> str:
    """A table label as an unambiguous JSON key: a JSON array of its levels, e.g.
    ``["x, y", "z"]`` for the tuple ``("x, y", "z")`` and ``[1]`` / ``["1"]`` for ``1`` and
    ``"1"`` (``json.loads`` gives the levels back)."""
    parts = value if isinstance(value, tuple) else (value,)
    return json.dumps([_json_part(p) for p in parts], ensure_ascii=False)


def _label_keys(labels: pd.Index) -> list[str]:
    keys = [label_key(x) for x in labels]
    if len(set(keys)) < len(keys):  # distinct objects printing alike: add the position
        keys = [
            json.dumps([*json.loads(k), {"position": i}], ensure_ascii=False)
            for i, k in enumerate(keys)
        ]
    return keys


def cell_outcomes(
    check: OutputCheck,
    table: pd.DataFrame,
    secondary: np.ndarray | None,
    limit: int | None = None,
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """Per cell ``ok`` or the rules it breaks (``threshold; zeros``), shaped like ACRO's
    ``outcome`` (``{column: {row: text}}``, which ``pandas.DataFrame.from_dict`` reads); cells
    blanked only to protect others say so.  Row and column keys are :func:`label_key` JSON
    arrays, so two labels never share a key.

    A table of more than ``limit`` (default :data:`MAX_CELLS_RECORDED`) cells records only its
    cells that are not ``ok``, at most ``limit`` of them (worst first); the second value says
    what was recorded (``cells``, ``outcome``: ``every cell`` or ``cells not ok``,
    ``outcome_cells``, ``outcome_not_recorded``).
    """
    limit = MAX_CELLS_RECORDED if limit is None else limit
    if check.cells is None or check.table is None:
        return {}, {}
    grid = check.mask
    n_rows, n_cols = grid.shape
    protected = np.zeros(grid.shape, dtype=bool)
    if secondary is not None:
        rows, cols = min(n_rows, secondary.shape[0]), min(n_cols, secondary.shape[1])
        protected[:rows, :cols] = secondary[:rows, :cols]
    n_cells = n_rows * n_cols
    if n_cells <= limit:
        chosen = np.argwhere(np.ones(grid.shape, dtype=bool))
        what = "every cell"
        not_ok = int(np.count_nonzero((grid != 0) | protected))
    else:
        flagged = np.flatnonzero(((grid != 0) | protected).ravel())
        not_ok = len(flagged)
        order = np.argsort(-check.verdict_codes.ravel()[flagged], kind="stable")
        picked = np.sort(flagged[order[:limit]])
        chosen = np.column_stack(np.unravel_index(picked, grid.shape))
        what = "cells not ok"
    values = grid[chosen[:, 0], chosen[:, 1]] if len(chosen) else np.zeros(0, np.uint16)
    codes, inverse = np.unique(values, return_inverse=True)
    texts = np.array([_rule_text(int(v)) for v in codes], dtype=object)[inverse.ravel()]
    if secondary is not None and len(chosen):
        texts[protected[chosen[:, 0], chosen[:, 1]]] = "suppressed to protect other cells"
    row_keys = _label_keys(table.index[:n_rows])
    col_keys = _label_keys(table.columns[:n_cols])
    out: dict[str, dict[str, str]] = {}
    if what == "every cell":
        for key in col_keys:
            out[key] = {}
    for (r, c), text in zip(chosen.tolist(), texts.tolist(), strict=True):
        out.setdefault(col_keys[c], {})[row_keys[r]] = text
    recorded_cells = len(chosen)
    recorded = {
        "cells": n_cells,
        "outcome": what,
        "outcome_cells": recorded_cells,
        "outcome_not_recorded": 0 if what == "every cell" else not_ok - recorded_cells,
        "label_encoding": "json-array",
    }
    return out, recorded


def reason_texts(check: OutputCheck, limit: int) -> tuple[list[str], int]:
    """Up to ``limit`` reasons (worst cells first, then findings) and how many there are
    (one sentence per rule per cell: the sum of the rule counts).

    Only the cells whose sentences are kept are described (in one batch), so a huge table
    with many failing cells costs no more than ``limit`` sentences.
    """
    findings = [f.text for f in check.findings]
    total = len(findings)
    texts: list[str] = []
    if check.cells is not None:
        cells = check.cells
        total += sum(check.rule_counts.values())
        positions = cells.flagged_positions()
        worst = positions[np.argsort(-cells.codes[positions], kind="stable")][:limit]
        if len(worst):
            subset = CellReasons(
                cells.index[worst],
                cells.mask[worst],
                cells.stats.iloc[worst],
                cells.params,
                cells.statistic,
            )
            texts = list(subset.texts[:limit])
    return texts + findings[: max(limit - len(texts), 0)], total


def havre_block(check: OutputCheck, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Havre's block of a record: the verdict, its reasons in words (at most
    :data:`MAX_REASONS_RECORDED`, and how many there are), the counts per rule, the findings
    and the parameters of the check (and which are weaker than the defaults)."""
    texts, total = reason_texts(check, MAX_REASONS_RECORDED)
    block = {
        "verdict": check.verdict.label,
        "kind": check.kind,
        "statistic": check.statistic,
        "summary": check.summary,
        "rule_counts": check.rule_counts,
        "findings": [f.as_dict() for f in check.findings],
        "reasons": texts,
        "reasons_total": total,
        "params": check.params.as_dict(),
        "relaxed": check.params.weaker_than(SDCParams()),
    }
    if extra:
        block.update(extra)
    return block
