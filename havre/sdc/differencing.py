"""Differencing: what a new count table gives away *together with* the tables already released.

Each table can pass the threshold rule on its own and still disclose a small group when a
checker releases it next to an earlier table of the same project: the difference between two
published counts is itself a count. The classic cases:

* **nested categories**: an earlier table has ages ``40-64``, the new one ``40-63``: their
  difference is the count of people aged 64, which neither table shows;
* **same categories, different population**: the same table again after a few records were
  added or excluded (a new extract, a filter): each cell's difference counts those records.

This module compares a new table with each earlier one, cell by cell and over every contiguous
group of categories, and flags each *derived* count ``0 < d < threshold`` that neither table
publishes itself. Pure (numpy and pandas), deterministic; the checker-facing documentation is
``docs/checker-differencing.md`` (what is sound, and the limits).

What counts as "the same dimensions": the same row dimension (the table's top-left header, as a
CSV of a ``pandas.crosstab`` has it) and at least one column label in common; columns are
matched by label. Rows are matched

* as **intervals** when every row label of both tables reads as one (``18-39``, ``65+``,
  ``<18``, ``80 and over``, ``2019``): contiguous groups of rows are compared, so nesting is
  found whatever the band edges;
* otherwise by **identical label** (regions, diagnoses): shared cells, and the totals over the
  shared rows and columns.

The same is tried with rows and columns swapped (a table with age bands as columns).

Suppressed cells (blank) are unknowns: no derived count that needs one is computed (the
single-table "totals leak" is :func:`havre.sdc.recoverable_cells`'s job). A released margin
(``All``/``Total``) stands in for the sum of its line when a cell of the line is suppressed.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .params import SDCParams
from .tables import read_table_csv

__all__ = [
    "CountTable",
    "DifferencingFlag",
    "DifferencingReport",
    "count_table",
    "count_table_from_csv",
    "differencing_warnings",
    "parse_interval",
]

MARGIN_NAMES = frozenset({"All", "all", "Total", "total", "TOTAL", "Totals", "totals"})
#: Tables with more rows (or columns) than this are compared by label only, not by groups.
MAX_INTERVAL_ROWS = 120
_INF = math.inf
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2212"
_NUM = r"(-?\d+(?:\.\d+)?)"
_PATTERNS = [
    (re.compile(rf"^{_NUM}\s*[{_DASHES}]\s*{_NUM}$"), "range"),
    (re.compile(rf"^{_NUM}\s*(?:to)\s*{_NUM}$", re.I), "range"),
    (re.compile(rf"^{_NUM}\s*\+$"), "ge"),
    (re.compile(rf"^(?:>=|≥)\s*{_NUM}$"), "ge"),
    (re.compile(rf"^{_NUM}\s*(?:and over|or over|and older|or more|and above)$", re.I), "ge"),
    (re.compile(rf"^(?:<|under|less than|below)\s*{_NUM}$", re.I), "lt"),
    (re.compile(rf"^\[\s*{_NUM}\s*,\s*{_NUM}\s*\)$"), "half-open"),
    (re.compile(rf"^{_NUM}$"), "single"),
]


def parse_interval(label: object) -> tuple[float, float] | None:
    """The half-open interval ``[lo, hi)`` a category label stands for, or ``None``.

    Whole-number bands are inclusive, as people write them: ``18-39`` is ``[18, 40)``,
    ``65+`` is ``[65, inf)``, ``<18`` is ``(-inf, 18)``, ``2019`` is ``[2019, 2020)``.
    Labels with decimals (``0.5-1.5``) are read as ``[lo, hi)`` as written.
    """
    text = str(label).strip()
    for pattern, kind in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        nums = [float(g) for g in m.groups()]
        whole = all(n == int(n) for n in nums)
        if kind == "range":
            lo, hi = nums
            hi = hi + 1 if whole else hi
            return (lo, hi) if hi > lo else None
        if kind == "half-open":
            lo, hi = nums
            return (lo, hi) if hi > lo else None
        if kind == "ge":
            return (nums[0], _INF)
        if kind == "lt":
            return (-_INF, nums[0])
        if kind == "single":
            return (nums[0], nums[0] + 1) if whole else None
    return None


def _show_interval(lo: float, hi: float) -> str:
    def num(x: float) -> str:
        return str(int(x)) if x == int(x) else str(x)

    if lo == -_INF:
        return f"under {num(hi)}"
    if hi == _INF:
        return f"{num(lo)} and over"
    if lo == int(lo) and hi == int(hi):
        return num(lo) if hi - lo == 1 else f"{num(lo)}-{num(hi - 1)}"
    return f"[{num(lo)}, {num(hi)})"


# --------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class CountTable:
    """A published table of counts: cells (NaN: suppressed), and its margins if published.

    ``row_totals`` / ``column_totals`` are the published margins (NaN where none).
    """

    name: str
    row_dimension: str
    cells: pd.DataFrame
    row_totals: pd.Series
    column_totals: pd.Series

    def transposed(self) -> CountTable:
        return CountTable(
            self.name,
            "(columns)",
            self.cells.T,
            self.column_totals,
            self.row_totals,
        )


def count_table(frame: pd.DataFrame, *, name: str, row_dimension: str | None = None) -> CountTable:
    """A :class:`CountTable` from a frame of labels x counts (strings or numbers).

    The frame is what ``pandas.read_csv(..., index_col=0)`` gives for a CSV of counts: row
    labels in the index (its name is the row dimension), column labels as columns. Blank and
    non-numeric cells are suppressed (NaN). Rows and columns labelled ``All``/``Total`` are
    margins.
    """
    numeric = frame.apply(pd.to_numeric, errors="coerce").astype(float)
    numeric.index = [str(i).strip() for i in numeric.index]
    numeric.columns = [str(c).strip() for c in numeric.columns]
    margin_rows = [r for r in numeric.index if r in MARGIN_NAMES]
    margin_cols = [c for c in numeric.columns if c in MARGIN_NAMES]
    cells = numeric.drop(index=margin_rows, columns=margin_cols)
    column_totals = (
        numeric.loc[margin_rows[0], cells.columns]
        if margin_rows
        else pd.Series(np.nan, index=cells.columns)
    )
    row_totals = (
        numeric.loc[cells.index, margin_cols[0]]
        if margin_cols
        else pd.Series(np.nan, index=cells.index)
    )
    dimension = row_dimension if row_dimension is not None else str(frame.index.name or "")
    return CountTable(
        name,
        dimension.strip(),
        cells,
        pd.Series(row_totals.to_numpy(dtype=float), index=cells.index),
        pd.Series(column_totals.to_numpy(dtype=float), index=cells.columns),
    )


def count_table_from_csv(text: str, *, name: str, delimiter: str = ",") -> CountTable | None:
    """A :class:`CountTable` from a CSV/TSV's text, or ``None`` if it has no table shape.

    Read as the egress service reads a table of counts (labels in the first column and the
    header row, every cell as text first), so the row dimension is the top-left header.
    """
    try:
        frame = read_table_csv(text, delimiter=delimiter)
    except (ValueError, pd.errors.ParserError, csv.Error):
        return None
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        return None
    return count_table(frame, name=name)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class DifferencingFlag:
    """A count derived from the new table and a released one, below the threshold.

    ``rows`` are the new table's row labels involved (``()`` for a total over its rows),
    ``column`` its column label (``None`` for a total over the shared columns); ``group``
    names the derived group in words; ``derived`` says how it is computed.
    """

    released: str
    rows: tuple[str, ...]
    column: str | None
    group: str
    value: float
    derived: str

    def sentence(self, threshold: int) -> str:
        where = "all shared columns" if self.column is None else f"column {self.column!r}"
        return (
            f"{self.group}, {where}: {self.derived} = {_num(self.value)}, fewer than "
            f"{threshold} (with {self.released})"
        )


@dataclass(frozen=True)
class DifferencingReport:
    """Flags of one new table against the released ones; which were compared, and why not."""

    flags: tuple[DifferencingFlag, ...]
    compared: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> str:
        """ "review" when anything is flagged (a human must look), else "pass"."""
        return "review" if self.flags else "pass"


def _group(dimension: str, what: str) -> str:
    return f"{dimension} {what}" if dimension else what


def _num(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else f"{x:g}"


# --------------------------------------------------------------------------------------------
# Comparing


def _column_vectors(
    table: CountTable, columns: Sequence[str]
) -> dict[str | None, tuple[np.ndarray, float]]:
    """Per shared column (and ``None``: their sum per row): the row values and the total.

    The total is the published margin if there is one, else the sum of known cells.
    """
    out: dict[str | None, tuple[np.ndarray, float]] = {}
    for column in columns:
        values = table.cells[column].to_numpy(dtype=float)
        total = float(table.column_totals.get(column, np.nan))
        if math.isnan(total) and not np.isnan(values).any():
            total = float(values.sum())
        out[column] = (values, total)
    block = table.cells[list(columns)].to_numpy(dtype=float)
    sums = block.sum(axis=1)  # NaN where a cell of the row is suppressed
    if len(columns) == len(table.cells.columns):
        margins = table.row_totals.to_numpy(dtype=float)
        sums = np.where(np.isnan(sums), margins, sums)
    total = float(sums.sum()) if not np.isnan(sums).any() else math.nan
    out[None] = (sums, total)
    return out


def _interval_groups(
    intervals: list[tuple[float, float]], values: np.ndarray, labels: list[str]
) -> dict[tuple[float, float], tuple[float, tuple[str, ...]]]:
    """Every contiguous group of rows with known values: (lo, hi) -> (count, row labels)."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i])
    groups: dict[tuple[float, float], tuple[float, tuple[str, ...]]] = {}
    for a, start in enumerate(order):
        lo, hi = intervals[start]
        total = values[start]
        members = [labels[start]]
        if not math.isnan(total):
            groups[(lo, hi)] = (float(total), tuple(members))
        for nxt in order[a + 1 :]:
            nlo, nhi = intervals[nxt]
            if nlo != hi or math.isnan(total):
                break
            total = total + values[nxt]
            hi = nhi
            members.append(labels[nxt])
            if not math.isnan(total):
                groups[(lo, hi)] = (float(total), tuple(members))
    return groups


def _with_total(
    groups: dict[tuple[float, float], tuple[float, tuple[str, ...]]],
    intervals: list[tuple[float, float]],
    total: float,
    labels: list[str],
) -> None:
    """Add the whole table's group from its published total, when the rows leave no gap."""
    ordered = sorted(intervals)
    whole = (ordered[0][0], ordered[-1][1])
    gapless = all(a[1] == b[0] for a, b in zip(ordered, ordered[1:], strict=False))
    if gapless and not math.isnan(total) and whole not in groups:
        groups[whole] = (total, tuple(labels))


def _by_width(item: tuple[tuple[float, float], object]) -> tuple[float, float, float]:
    (lo, hi), _ = item
    return (hi - lo, lo, hi)


def _disjoint(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def _compare_intervals(
    new: CountTable, old: CountTable, columns: list[str], threshold: int
) -> list[DifferencingFlag]:
    new_iv = [iv for r in new.cells.index if (iv := parse_interval(r))]
    old_iv = [iv for r in old.cells.index if (iv := parse_interval(r))]
    new_vectors = _column_vectors(new, columns)
    old_vectors = _column_vectors(old, columns)
    flags: list[DifferencingFlag] = []
    for column in [*columns, None]:
        ng = _interval_groups(new_iv, new_vectors[column][0], list(new.cells.index))
        og = _interval_groups(old_iv, old_vectors[column][0], list(old.cells.index))
        _with_total(ng, new_iv, new_vectors[column][1], list(new.cells.index))
        _with_total(og, old_iv, old_vectors[column][1], list(old.cells.index))
        published = set(ng) | set(og)
        old_by_lo: dict[float, list[tuple[float, float]]] = {}
        old_by_hi: dict[float, list[tuple[float, float]]] = {}
        for key in og:
            old_by_lo.setdefault(key[0], []).append(key)
            old_by_hi.setdefault(key[1], []).append(key)
        seen: set[tuple[float, float]] = set()
        same: set[tuple[float, float]] = set()
        # the same group in both tables with different counts: only the smallest such groups
        # (a larger group's difference adds nothing to its parts')
        changed: list[tuple[float, float]] = []
        for key in sorted(set(ng) & set(og), key=lambda k: (k[1] - k[0], k)):
            if ng[key][0] != og[key][0]:
                if any(key[0] <= c[0] and c[1] <= key[1] for c in changed):
                    same.add(key)  # implied: don't flag
                changed.append(key)
        # smallest groups first: a flag explains itself with the fewest rows
        for (lo, hi), (value, members) in sorted(ng.items(), key=_by_width):
            candidates = old_by_lo.get(lo, []) + old_by_hi.get(hi, [])
            for olo, ohi in candidates:
                ovalue, _ = og[(olo, ohi)]
                if (olo, ohi) == (lo, hi):
                    diff = abs(value - ovalue)
                    if 0 < diff < threshold and (lo, hi) not in same:
                        same.add((lo, hi))
                        flags.append(
                            DifferencingFlag(
                                old.name,
                                members,
                                column,
                                _group(new.row_dimension, _show_interval(lo, hi)),
                                diff,
                                f"|{_num(value)} here - {_num(ovalue)} released| (the same "
                                "group counted in two populations)",
                            )
                        )
                    continue
                if olo <= lo and hi <= ohi:
                    big, small = (olo, ohi), (lo, hi)
                elif lo <= olo and ohi <= hi:
                    big, small = (lo, hi), (olo, ohi)
                else:
                    continue
                sliver = (small[1], big[1]) if small[0] == big[0] else (big[0], small[0])
                if sliver in published or sliver in seen:
                    continue  # published as such: nothing new is derived
                bigger = value if big == (lo, hi) else ovalue
                smaller = ovalue if big == (lo, hi) else value
                diff = bigger - smaller
                if 0 < diff < threshold:
                    seen.add(sliver)
                    where_big = "here" if big == (lo, hi) else "released"
                    where_small = "released" if big == (lo, hi) else "here"
                    flags.append(
                        DifferencingFlag(
                            old.name,
                            members,
                            column,
                            _group(new.row_dimension, _show_interval(*sliver)),
                            diff,
                            f"{_show_interval(*big)} ({_num(bigger)}, {where_big}) - "
                            f"{_show_interval(*small)} ({_num(smaller)}, {where_small})",
                        )
                    )
    return flags


def _compare_labels(
    new: CountTable, old: CountTable, columns: list[str], threshold: int
) -> list[DifferencingFlag]:
    rows = [r for r in new.cells.index if r in set(old.cells.index)]
    if not rows:
        return []
    flags: list[DifferencingFlag] = []
    a = new.cells.loc[rows, columns].to_numpy(dtype=float)
    b = old.cells.loc[rows, columns].to_numpy(dtype=float)
    diff = np.abs(a - b)
    for i, j in zip(*np.nonzero((diff > 0) & (diff < threshold)), strict=True):
        flags.append(
            DifferencingFlag(
                old.name,
                (rows[i],),
                columns[j],
                _group(new.row_dimension, repr(rows[i])),
                float(diff[i, j]),
                f"|{_num(a[i, j])} here - {_num(b[i, j])} released| (the same cell counted in "
                "two populations)",
            )
        )
    if not flags:  # totals: only when no cell already gives the difference away
        col_a, col_b = np.nansum(a, axis=0), np.nansum(b, axis=0)
        known = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
        for j in np.nonzero(known & (np.abs(col_a - col_b) > 0))[0]:
            d = abs(col_a[j] - col_b[j])
            if d < threshold:
                flags.append(
                    DifferencingFlag(
                        old.name,
                        (),
                        columns[j],
                        f"total over the {len(rows)} shared rows",
                        float(d),
                        f"|{_num(col_a[j])} here - {_num(col_b[j])} released|",
                    )
                )
        if not np.isnan(a).any() and not np.isnan(b).any():
            d = abs(float(a.sum() - b.sum()))
            if 0 < d < threshold and not flags:
                flags.append(
                    DifferencingFlag(
                        old.name,
                        (),
                        None,
                        "total over the shared rows and columns",
                        d,
                        f"|{_num(a.sum())} here - {_num(b.sum())} released|",
                    )
                )
    return flags


def _orientation(new: CountTable, old: CountTable) -> tuple[str, list[str]] | None:
    """How the two tables can be compared along their rows: "intervals", "labels" or None."""
    if new.row_dimension != old.row_dimension:
        return None
    columns = [c for c in new.cells.columns if c in set(old.cells.columns)]
    if not columns:
        return None
    n_new, n_old = len(new.cells.index), len(old.cells.index)
    new_iv = [parse_interval(r) for r in new.cells.index]
    old_iv = [parse_interval(r) for r in old.cells.index]
    if (
        n_new
        and n_old
        and all(new_iv)
        and all(old_iv)
        and max(n_new, n_old) <= MAX_INTERVAL_ROWS
        and _disjoint(new_iv)  # type: ignore[arg-type]
        and _disjoint(old_iv)  # type: ignore[arg-type]
    ):
        return "intervals", columns
    if set(new.cells.index) & set(old.cells.index):
        return "labels", columns
    return None


def differencing_warnings(
    new: CountTable, released: Iterable[CountTable], params: SDCParams | None = None
) -> DifferencingReport:
    """Compare ``new`` with every released table of the same project (module documentation)."""
    params = params or SDCParams()
    threshold = int(params.threshold)
    flags: list[DifferencingFlag] = []
    compared: list[str] = []
    notes: list[str] = []
    for old in released:
        found = False
        for a, b, how in ((new, old, "rows"), (new.transposed(), old.transposed(), "columns")):
            if how == "columns":
                # swapped: the column labels become the compared categories; same-dimension
                # check on the row labels instead (they must share at least one)
                if not set(new.cells.index) & set(old.cells.index):
                    continue
                a = CountTable(a.name, "", a.cells, a.row_totals, a.column_totals)
                b = CountTable(b.name, "", b.cells, b.row_totals, b.column_totals)
            orientation = _orientation(a, b)
            if orientation is None:
                continue
            mode, columns = orientation
            if how == "columns" and mode == "labels":
                continue  # the same cells as the rows comparison
            found = True
            if mode == "intervals":
                flags += _compare_intervals(a, b, columns, threshold)
            else:
                flags += _compare_labels(a, b, columns, threshold)
        if found:
            compared.append(old.name)
        elif len(new.cells.index) > MAX_INTERVAL_ROWS:
            notes.append(f"{old.name}: more than {MAX_INTERVAL_ROWS} rows; compared by label only")
    return DifferencingReport(tuple(flags), tuple(compared), tuple(notes))
