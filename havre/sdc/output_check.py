"""The result of one output's disclosure check (:class:`OutputCheck`), what every check of
:mod:`.tables` and :mod:`.published` returns.

Only numpy and pandas; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .params import SDCParams
from .rules import (
    _LABELS,
    ACRO_KEYS,
    ALL_RULES,
    CellReasons,
    Finding,
    Rule,
    Verdict,
    rule_verdict,
)

__all__ = ["OutputCheck"]

_ACRO_SUMMARY_KEYS = ("negative", "missing", "threshold", "p-ratio", "nk-rule")


@dataclass(frozen=True, eq=False)
class OutputCheck:
    """The disclosure check of one output.

    ``table`` is the statistic as computed (unsuppressed), rows and columns labelled as
    :func:`pandas.crosstab` would; ``cells`` holds the per-cell bitmasks and statistics, in
    row-major order of ``table``; ``findings`` are reasons about the output as a whole.
    """

    kind: str
    statistic: str | None
    params: SDCParams
    table: pd.DataFrame | None = None
    cells: CellReasons | None = None
    findings: tuple[Finding, ...] = ()
    properties: dict[str, Any] = field(default_factory=dict)

    # -- verdicts --------------------------------------------------------------------------

    @cached_property
    def verdict(self) -> Verdict:
        """The overall verdict: the worst cell or output-level finding."""
        verdicts = [f.verdict for f in self.findings]
        if self.cells is not None:
            verdicts.append(self.cells.verdict)
        return Verdict.worst(verdicts)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the table; (0, 0) for an output without cells."""
        return self.table.shape if self.table is not None else (0, 0)

    def _grid(self, flat: np.ndarray) -> np.ndarray:
        return flat.reshape(self.shape)

    def _frame(self, flat: np.ndarray) -> pd.DataFrame:
        if self.table is None:
            return pd.DataFrame()
        return pd.DataFrame(self._grid(flat), index=self.table.index, columns=self.table.columns)

    @cached_property
    def cell_verdicts(self) -> pd.DataFrame:
        """``pass`` / ``review`` / ``fail`` per cell, shaped like ``table``."""
        if self.cells is None:
            return pd.DataFrame()
        return self._frame(_LABELS[self.cells.codes])

    @cached_property
    def verdict_codes(self) -> np.ndarray:
        """Verdict codes per cell (0 pass, 1 review, 2 fail), shaped like ``table``."""
        if self.cells is None:
            return np.zeros((0, 0), dtype=np.int8)
        return self._grid(self.cells.codes)

    @property
    def mask(self) -> np.ndarray:
        """The :class:`Rule` bitmask per cell, shaped like ``table`` (``CellReasons``)."""
        if self.cells is None:
            return np.zeros((0, 0), dtype=np.uint16)
        return self._grid(self.cells.mask)

    def flags(self, rule: Rule) -> pd.DataFrame:
        """True for the cells breaking ``rule``, shaped like ``table``."""
        if self.cells is None:
            return pd.DataFrame()
        return self._frame((self.cells.mask & int(rule)) != 0)

    @cached_property
    def cell_reasons(self) -> pd.DataFrame:
        """Per cell, its reasons joined with ``"; "`` (empty for a clean cell)."""
        if self.cells is None:
            return pd.DataFrame()
        return self._frame(self.cells.reason_series().to_numpy())

    @cached_property
    def reasons(self) -> tuple[str, ...]:
        """Every reason in words: cells (worst first), then the output-level findings."""
        cell_texts = self.cells.texts if self.cells is not None else ()
        return tuple(cell_texts) + tuple(f.text for f in self.findings)

    @cached_property
    def rule_counts(self) -> dict[str, int]:
        """How many cells break each rule (by rule key, every rule listed)."""
        if self.cells is None:
            return {rule.key: 0 for rule in ALL_RULES}
        return self.cells.counts()

    @cached_property
    def summary(self) -> str:
        """One sentence for the checker, e.g.
        ``fail: 6 of 20 cells fail (threshold 4, zeros 2); 1 cell to review (negative 1)``.
        """
        parts = []
        if self.cells is not None:
            n = len(self.cells.codes)
            counts = self.rule_counts
            by_verdict: dict[Verdict, list[str]] = {Verdict.FAIL: [], Verdict.REVIEW: []}
            for rule in ALL_RULES:
                v = rule_verdict(rule, self.params)
                if counts[rule.key] and v in by_verdict:
                    by_verdict[v].append(f"{rule.key} {counts[rule.key]}")
            n_fail = int(np.count_nonzero(self.cells.codes == Verdict.FAIL))
            n_review = int(np.count_nonzero(self.cells.codes == Verdict.REVIEW))
            if n_fail:
                parts.append(f"{n_fail} of {n} cells fail ({', '.join(by_verdict[Verdict.FAIL])})")
            if n_review:
                noun = "cell needs" if n_review == 1 else "cells need"
                parts.append(f"{n_review} {noun} review ({', '.join(by_verdict[Verdict.REVIEW])})")
            if n and not n_fail and not n_review:
                parts.append(f"all {n} cells pass")
        parts.extend(f.text for f in self.findings if f.verdict != Verdict.PASS)
        if not parts:
            parts.extend(f.text for f in self.findings)
        return f"{self.verdict.label}: " + "; ".join(parts)

    # -- records -----------------------------------------------------------------------------

    def to_acro_sdc(
        self, suppressed: bool = False, max_positions: int | None = None
    ) -> dict[str, Any]:
        """ACRO's ``results.json`` ``sdc`` block for this output.

        ``max_positions`` caps each rule's list of positions (the first ones in table order;
        the ``summary`` counts are always of every cell), so one wide table can't make the
        record huge.

        ``{"summary": {"suppressed", "negative", "missing", "threshold", "p-ratio", "nk-rule",
        "all-values-are-same"}, "cells": {same keys: [[row, col], ...]}}``, positions counted
        from 0 in ``table``.  Empty cells and the standard deviation's degrees of freedom are
        reported under ``threshold`` (ACRO counts empty cells there); ``all-values-are-same``
        (ACRO's rule for ``mode``) is always empty.  Outputs without cells (models) give
        ``{}``, as ACRO does.
        """
        if self.cells is None:
            return {}
        grid = self.mask
        summary: dict[str, Any] = {"suppressed": bool(suppressed)}
        cells: dict[str, list[list[int]]] = {}
        for key in (*_ACRO_SUMMARY_KEYS, "all-values-are-same"):
            bits = 0
            for rule, acro_key in ACRO_KEYS.items():
                if acro_key == key:
                    bits |= int(rule)
            positions = np.argwhere((grid & bits) != 0) if bits else np.zeros((0, 2), int)
            summary[key] = int(len(positions))
            if max_positions is not None:
                positions = positions[:max_positions]
            cells[key] = positions.astype(int).tolist()
        return {"summary": summary, "cells": cells}

    def as_record(self) -> dict[str, Any]:
        """JSON-ready record for the release: verdict, summary, counts, reasons, parameters."""
        return {
            "kind": self.kind,
            "statistic": self.statistic,
            "verdict": self.verdict.label,
            "summary": self.summary,
            "rule_counts": self.rule_counts,
            "findings": [f.as_dict() for f in self.findings],
            "reasons": list(self.reasons),
            "params": self.params.as_dict(),
            "properties": dict(self.properties),
            "sdc": self.to_acro_sdc(),
        }
