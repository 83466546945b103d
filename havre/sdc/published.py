"""Published count tables: what the egress server can check from a CSV/TSV file of counts.

* :func:`check_count_csv_text` — the service's check of a CSV/TSV file: ``None`` when the
  text is not a table of labels and numbers, else the :class:`~havre.sdc.OutputCheck`;
* :func:`check_frequency_csv` — the same check of a table already read (a DataFrame);
* :func:`read_table_csv` — a CSV/TSV table as text cells;
* :func:`recoverable_cells` — which suppressed cells follow from the true row and column totals
  (used by the library's secondary suppression).

What is checked (docs/checker-file-checks.md, "Tables of counts"):

1. Every shown cell, margins included: threshold and zeros; a negative or fractional value is
   not a count (review).  Blank cells are taken as suppressed.
2. Margins.  A row or column is a margin when its label (any level, trimmed, any case) is one
   of :data:`MARGIN_WORDS` (English and French), or — on an axis without such a label — when
   its values are the sum of the other lines (so an unlabelled total is found too).  Every
   margin must equal the sum of the cells it totals: exactly when they are all shown; with
   blank cells, at least the shown ones.  A margin that does not add up fails with one
   sentence per line: a line dropped by hand while the true totals are kept is then the
   difference, readable by anyone.  Blank cells in a line with a shown margin whose implied
   sum (margin minus shown cells) is below the threshold fail: together they are a small count.
3. Recoverability.  A blank cell fails when its value is the same in every non-negative
   solution of the margin equations (what an attacker with linear programming learns).
   Exact and fast, without a general LP: with margins on one axis each line stands alone (a
   lone blank, or blanks whose implied sum is 0); with margins on both axes the blanks are the
   edges of a bipartite graph of rows and columns, one equation per vertex.  A feasible
   non-negative solution is a flow (:func:`scipy.sparse.csgraph.maximum_flow`); a blank that
   is 0 in it stays 0 in every solution exactly when its two ends are in different strongly
   connected components of the residual graph; with those forced zeros removed a solution
   positive on every other blank exists, so the rest are determined exactly when they are
   bridges of the graph (on no cycle: a cycle is a direction along which the values can move).
   Cost: O(cells) vectorised work plus O(blanks) graph work.

Only numpy, pandas and scipy; no I/O.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .output_check import OutputCheck
from .params import SDCParams
from .rules import CellReasons, Finding, Rule, Verdict, evaluate_cells, format_label

__all__ = [
    "MARGIN_WORDS",
    "check_count_csv_text",
    "check_frequency_csv",
    "read_table_csv",
    "recoverable_cells",
]

#: Labels that make a row or column a margin (compared trimmed, case-folded, on every level).
MARGIN_WORDS: frozenset[str] = frozenset(
    {
        "all",
        "total",
        "totals",
        "grand total",
        "sum",
        "overall",
        "margin",
        "margins",
        "subtotal",
        "sub-total",
        "ensemble",
        "total général",
        "total general",
        "totaux",
        "tous",
        "toutes",
        "somme",
        "sous-total",
        "marge",
    }
)
#: A label starting with one of these words is a margin too ("Total (all regions)").
_MARGIN_PREFIXES = ("total", "totals", "totaux", "subtotal", "sous-total", "grand total")

#: A label containing one of these is a total of the shown cells only (see
#: :func:`shown_total_labels`).
_SHOWN_WORDS = ("shown", "published", "publié", "affiché")

#: Exact upper bounds of blank cells (one maximum flow each) for tables with margins on both
#: axes and at most this many blank cells not pinned down; beyond, the per-line rule only.
MAX_BOUNDED_BLANKS = 200

#: At most this many sentences about margins (then "and N more").
_MAX_SENTENCES = 20

_TOL = 1e-9


# ----------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------


def read_table_csv(text: str, *, delimiter: str = ",") -> pd.DataFrame:
    """A CSV/TSV table of counts as the egress service reads one: labels in the first column
    and the header row, every cell as text (numbers are parsed by the checks, which say what
    they couldn't read). Raises ``ValueError`` (pandas' parser errors included) on bad text."""
    return pd.read_csv(
        io.StringIO(text),
        sep=delimiter,
        index_col=0,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=True,
    )


def _numeric_column(col: pd.Series) -> np.ndarray | None:
    """A column as floats (NaN for blank cells), or ``None`` if a cell is not a finite number."""
    if col.dtype.kind in "iuf":
        out = col.to_numpy(dtype=float)
    elif col.dtype.kind == "b":
        return None
    else:
        text = col.astype(str).str.strip()
        blank = (text == "").to_numpy()
        out = pd.to_numeric(text.where(~blank), errors="coerce").to_numpy(dtype=float)
        if np.isnan(out[~blank]).any():
            return None
    if np.isinf(out).any():
        return None
    return out


def _parse_count_csv(text: str, delimiter: str) -> tuple[np.ndarray, pd.Index, pd.Index] | None:
    """(values, row labels, column labels) of a table of labels and numbers, or ``None``.

    Leading columns holding text are label levels (a MultiIndex when more than one); every
    other cell must be a finite number or blank (NaN).  Vectorised: one ``pandas.read_csv``
    and one conversion per column.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                sep=delimiter,
                header=0,
                index_col=False,
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=True,
                on_bad_lines="error",
            )
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning, csv.Error):
        return None
    if frame.shape[0] < 1 or frame.shape[1] < 2:
        return None
    kinds = np.array([dtype.kind for dtype in frame.dtypes])
    if np.isin(kinds[1:], ("i", "u", "f")).all():  # the usual case: one conversion
        n_labels = 1
        values = frame.iloc[:, 1:].to_numpy(dtype=float)
        if np.isinf(values).any():
            return None
    else:
        columns: list[np.ndarray] = []
        n_labels = 1
        for position in range(1, frame.shape[1]):
            numbers = _numeric_column(frame.iloc[:, position])
            if numbers is None:
                if columns:  # text after the numbers: not a table of counts
                    return None
                n_labels += 1
                continue
            columns.append(numbers)
        if not columns:
            return None
        values = np.column_stack(columns)
    if not np.isfinite(values).any():
        return None
    levels = [_label_strings(frame.iloc[:, i]) for i in range(n_labels)]
    if n_labels == 1:
        rows = pd.Index(levels[0], name=str(frame.columns[0]))
    else:
        rows = pd.MultiIndex.from_arrays(levels, names=[str(c) for c in frame.columns[:n_labels]])
    cols = pd.Index([str(c) for c in frame.columns[n_labels:]])
    return values, rows, cols


def _label_strings(col: pd.Series) -> list[str]:
    if col.dtype.kind == "f":  # numbers as labels, blanks as ""
        return ["" if math.isnan(x) else f"{x:g}" for x in col.to_numpy(dtype=float)]
    return ["" if isinstance(x, float) and math.isnan(x) else str(x) for x in col]


def check_count_csv_text(text: str, *, delimiter: str, params: SDCParams) -> OutputCheck | None:
    """The egress service's check of a CSV/TSV file's text.

    ``None`` when the text is not a table of labels (first column(s) and the header row) and
    numbers (blank cells allowed: taken as suppressed): the service records "not checked".
    Otherwise the :class:`~havre.sdc.OutputCheck` of :func:`check_frequency_csv` on it.
    Never raises on bad text.
    """
    parsed = _parse_count_csv(text, delimiter)
    if parsed is None:
        return None
    values, rows, cols = parsed
    return _check_grid(values, rows, cols, params, ())


# ----------------------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------------------


def check_frequency_csv(
    table: pd.DataFrame | pd.Series,
    *,
    params: SDCParams | None = None,
    margins_name: str | None = "All",
) -> OutputCheck:
    """Check a published count table given only as counts (e.g. read from a CSV file).

    Without records only the counts can be checked: threshold and zeros per cell (margins
    included: they are published counts too).  Blank or non-numeric cells are taken as
    suppressed.  Cells that are not counts (negative or fractional) go to review.  Margins are
    found by label (:data:`MARGIN_WORDS`, plus ``margins_name``) and by value, verified, and a
    suppressed cell whose value follows from the published totals and cells fails (see the
    module documentation).
    """
    params = params or SDCParams()
    if isinstance(table, pd.Series):
        table = table.to_frame()
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame (got {type(table).__name__})")
    numeric = table.apply(pd.to_numeric, errors="coerce").astype(float)
    values = numeric.to_numpy(dtype=float).copy()
    values[np.isinf(values)] = np.nan
    extra = (margins_name,) if margins_name else ()
    return _check_grid(values, numeric.index, numeric.columns, params, extra)


def _cell_index(rows: pd.Index, cols: pd.Index) -> pd.MultiIndex:
    """One label per cell, row-major: (row label, column label), without copying labels per
    cell when they are unique."""
    n_rows, n_cols = len(rows), len(cols)
    row_codes = np.repeat(np.arange(n_rows), n_cols)
    col_codes = np.tile(np.arange(n_cols), n_rows)
    flat_rows, flat_cols = _flat_labels(rows), _flat_labels(cols)
    if flat_rows.is_unique and flat_cols.is_unique:
        return pd.MultiIndex(
            levels=[flat_rows, flat_cols], codes=[row_codes, col_codes], verify_integrity=False
        )
    return pd.MultiIndex.from_arrays([flat_rows.take(row_codes), flat_cols.take(col_codes)])


def _check_grid(
    values: np.ndarray,
    rows: pd.Index,
    cols: pd.Index,
    params: SDCParams,
    extra_names: Sequence[str],
) -> OutputCheck:
    flat = values.ravel()
    index = _cell_index(rows, cols)
    audit = audit_margins(values, rows, cols, params, extra_names)
    recovered = audit.recovered.ravel()
    stats = pd.DataFrame({"count": flat, "value": flat, "recovered": recovered}, index=index)
    reasons = evaluate_cells(stats, params, Rule.THRESHOLD | Rule.ZEROS, "count")
    mask = reasons.mask.copy()
    visible = np.isfinite(flat)
    not_count = visible & ((flat < 0) | (flat != np.floor(flat)))
    mask[not_count] |= np.uint16(Rule.NOT_A_COUNT)
    # A negative or fractional "count" is no count: don't also call it small or empty.
    mask[not_count] &= ~np.uint16(Rule.THRESHOLD | Rule.ZEROS)
    mask[np.isfinite(recovered)] |= np.uint16(Rule.RECOVERABLE)
    reasons = CellReasons(index, mask, stats, params, "count")
    n_suppressed = int(np.count_nonzero(~visible))
    findings = list(audit.findings)
    if n_suppressed:
        findings.append(
            Finding(
                None,
                Verdict.PASS,
                f"{n_suppressed} {'cell is' if n_suppressed == 1 else 'cells are'} blank "
                "(taken as suppressed)",
            )
        )
    if values.size == 0:
        findings.append(Finding(None, Verdict.REVIEW, "the table has no cells"))
    table = pd.DataFrame(values, index=rows, columns=cols)
    return OutputCheck(
        kind="frequency-csv",
        statistic="count",
        params=params,
        table=table,
        cells=reasons,
        findings=tuple(findings),
        properties={
            "method": "csv",
            "margins_name": extra_names[0] if extra_names else None,
            "margin_rows": [format_label(rows[i]) for i in audit.margin_rows],
            "margin_columns": [format_label(cols[j]) for j in audit.margin_columns],
        },
    )


# ----------------------------------------------------------------------------------------
# Margins
# ----------------------------------------------------------------------------------------


def _flat_labels(labels: pd.Index) -> pd.Index:
    """Labels as one flat index (tuples for a MultiIndex)."""
    if isinstance(labels, pd.MultiIndex):
        return pd.Index(list(labels), tupleize_cols=False)
    return labels


def _is_margin(labels: pd.Index, margins_name: str | None) -> np.ndarray:
    """Labels equal to ``margins_name`` (on the first level): how the library marks the
    margins it adds itself (:func:`havre.sdc.suppress`)."""
    if margins_name is None:
        return np.zeros(len(labels), dtype=bool)
    if isinstance(labels, pd.MultiIndex):
        return np.asarray(labels.get_level_values(0) == margins_name)
    return np.asarray([label == margins_name for label in labels], dtype=bool)


def _is_margin_word(label: Any, extra: frozenset[str]) -> bool:
    word = " ".join(str(label).split()).casefold()
    return word in MARGIN_WORDS or word in extra or word.startswith(_MARGIN_PREFIXES)


def margin_labels(labels: pd.Index, extra_names: Sequence[str] = ()) -> np.ndarray:
    """True for the labels that name a margin: :data:`MARGIN_WORDS` (or ``extra_names``) on
    any level, trimmed and case-folded, or a label starting with "total"."""
    extra = frozenset(" ".join(str(n).split()).casefold() for n in extra_names)
    return _labels_where(labels, lambda text: _is_margin_word(text, extra))


def _labels_where(labels: pd.Index, test: Callable[[str], bool]) -> np.ndarray:
    """True for the labels with a level whose text passes ``test`` (each distinct text
    tested once)."""
    out = np.zeros(len(labels), dtype=bool)
    levels = (
        [labels.get_level_values(i) for i in range(labels.nlevels)]
        if isinstance(labels, pd.MultiIndex)
        else [labels]
    )
    for level in levels:
        uniques, codes = np.unique(np.asarray(level.astype(str)), return_inverse=True)
        hit = np.array([test(u) for u in uniques], dtype=bool)
        out |= hit[codes.ravel()]
    return out


def _margins_by_value(values: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Rows (of ``values``) that are the sum of the other rows not in ``exclude``.

    Where a column has no other blank the row must equal the sum exactly; where it has, the
    row must be at least the sum of the shown cells.  Evidence: a non-zero exact match, or a
    non-zero value at least the sum of three or more shown cells (a large table with blanks in
    every column); at least two such columns (or every column, if fewer) and at least half the
    row's shown cells.  At most one row (the last) is returned."""
    n_rows, n_cols = values.shape
    out = np.zeros(n_rows, dtype=bool)
    if n_rows - int(exclude.sum()) < 3 or n_cols == 0:
        return out
    part = values[~exclude]
    shown = np.isfinite(part)
    cells = np.where(shown, part, 0.0)
    others = cells.sum(axis=0)[None, :] - cells
    other_blanks = (~shown).sum(axis=0)[None, :] - (~shown)
    other_shown = shown.sum(axis=0)[None, :] - shown
    close = np.isclose(part, others, rtol=_TOL, atol=_TOL)
    exactable = shown & (other_blanks == 0)
    at_least = shown & (other_blanks > 0) & (part >= others - _TOL)
    ok = ~shown | (exactable & close) | at_least
    evidence = ((exactable & close) | (at_least & (other_shown >= 3))) & (part != 0)
    n_evidence = evidence.sum(axis=1)
    candidates = (
        ok.all(axis=1) & (n_evidence >= min(2, n_cols)) & (2 * n_evidence >= shown.sum(axis=1))
    )
    if candidates.any():
        last = int(np.flatnonzero(candidates)[-1])
        out[np.flatnonzero(~exclude)[last]] = True
    return out


class MarginAudit:
    """What :func:`audit_margins` found: margin lines, fail sentences, recovered blanks."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.margin_rows: list[int] = []
        self.margin_columns: list[int] = []
        self.findings: list[Finding] = []
        self.recovered = np.full(shape, np.nan)
        self._sentences: list[str] = []

    def fail(self, text: str) -> None:
        self._sentences.append(text)

    def note(self, text: str) -> None:
        self.findings.append(Finding(None, Verdict.PASS, text))

    def finish(self) -> MarginAudit:
        texts = self._sentences
        for text in texts[:_MAX_SENTENCES]:
            self.findings.append(Finding(None, Verdict.FAIL, text))
        if len(texts) > _MAX_SENTENCES:
            more = len(texts) - _MAX_SENTENCES
            self.findings.append(
                Finding(None, Verdict.FAIL, f"and {more} more margin problems like these")
            )
        return self


def _num(x: float) -> str:
    return f"{x:g}" if not float(x).is_integer() else f"{int(x)}"


def audit_margins(
    values: np.ndarray,
    rows: pd.Index,
    cols: pd.Index,
    params: SDCParams,
    extra_names: Sequence[str] = (),
) -> MarginAudit:
    """Find the margins of a published table, verify them, and find the recoverable blanks.

    ``values`` is the table as floats, NaN for a blank (suppressed) cell.  See the module
    documentation for the rules.
    """
    audit = MarginAudit(values.shape)
    if values.size == 0:
        return audit.finish()
    shown_rows, shown_cols = shown_total_labels(rows), shown_total_labels(cols)
    if shown_rows.any() or shown_cols.any():
        _verify_shown_totals(audit, values, rows, cols, shown_rows, shown_cols, extra_names)
    sub_rows, sub_cols = _subtotal_labels(rows, extra_names), _subtotal_labels(cols, extra_names)
    for marks, labels, noun in ((sub_rows, rows, "rows"), (sub_cols, cols, "columns")):
        if marks.any():
            names = ", ".join(format_label(labels[i]) for i in np.flatnonzero(marks)[:5])
            audit.fail(
                f"the {noun} {names}{' ...' if marks.sum() > 5 else ''} are subtotals (a total "
                "word below the first label level); tables with subtotals are not checked "
                "automatically: publish one table per group, or drop the subtotals"
            )
    keep_r = np.flatnonzero(~shown_rows & ~sub_rows)
    keep_c = np.flatnonzero(~shown_cols & ~sub_cols)
    if len(keep_r) and len(keep_c):
        inner = MarginAudit((len(keep_r), len(keep_c)))
        _audit_true_margins(
            inner, values[np.ix_(keep_r, keep_c)], rows[keep_r], cols[keep_c], params, extra_names
        )
        audit.margin_rows = [int(keep_r[i]) for i in inner.margin_rows]
        audit.margin_columns = [int(keep_c[j]) for j in inner.margin_columns]
        audit.recovered[np.ix_(keep_r, keep_c)] = inner.recovered
        audit.findings.extend(inner.findings)
        audit._sentences.extend(inner._sentences)
    return audit.finish()


def _subtotal_labels(labels: pd.Index, extra_names: Sequence[str]) -> np.ndarray:
    """Multi-level labels with a margin word below the first level while the first level is
    a group (``(G, Total)``): subtotals of that group."""
    if not isinstance(labels, pd.MultiIndex):
        return np.zeros(len(labels), dtype=bool)
    first = margin_labels(labels.get_level_values(0), extra_names)
    return margin_labels(labels, extra_names) & ~first


def shown_total_labels(labels: pd.Index) -> np.ndarray:
    """Labels of totals of the *shown* cells only ("All (shown cells)", "Total of published
    cells"): such a line must equal the sum of the shown cells, and says nothing about the
    blank ones."""
    return _labels_where(labels, lambda text: any(w in text.casefold() for w in _SHOWN_WORDS))


def _verify_shown_totals(
    audit: MarginAudit,
    values: np.ndarray,
    rows: pd.Index,
    cols: pd.Index,
    shown_rows: np.ndarray,
    shown_cols: np.ndarray,
    extra_names: Sequence[str],
) -> None:
    """A total of the shown cells must be exactly that (blank cells counted as 0)."""
    for axis, marks, labels, other_marks in (
        (0, shown_rows, rows, margin_labels(rows, extra_names) | shown_rows),
        (1, shown_cols, cols, margin_labels(cols, extra_names) | shown_cols),
    ):
        grid = values if axis == 0 else values.T
        names = cols if axis == 0 else rows
        expected = np.nan_to_num(grid[~other_marks]).sum(axis=0)
        noun = "row" if axis == 0 else "column"
        for i in np.flatnonzero(marks):
            line = grid[i]
            bad = np.flatnonzero(
                np.isfinite(line) & ~np.isclose(line, expected, rtol=_TOL, atol=_TOL)
            )
            if len(bad):
                j = int(bad[0])
                audit.fail(
                    f"{noun} {format_label(labels[i])} is labelled a total of the shown cells, "
                    f"but at {format_label(names[j])} it shows {_num(line[j])} while the shown "
                    f"cells add up to {_num(expected[j])}"
                    + (f" (and {len(bad) - 1} more places)" if len(bad) > 1 else "")
                )


def _audit_true_margins(
    audit: MarginAudit,
    values: np.ndarray,
    rows: pd.Index,
    cols: pd.Index,
    params: SDCParams,
    extra_names: Sequence[str],
) -> None:
    n_rows, n_cols = values.shape
    row_m = margin_labels(rows, extra_names)
    col_m = margin_labels(cols, extra_names)
    how = {"rows": "label", "columns": "label"}
    if not row_m.any():
        row_m = _margins_by_value(values, np.zeros(n_rows, dtype=bool))
        how["rows"] = "value"
    if not col_m.any():
        col_m = _margins_by_value(values.T, np.zeros(n_cols, dtype=bool))
        how["columns"] = "value"
    audit.margin_rows = [int(i) for i in np.flatnonzero(row_m)]
    audit.margin_columns = [int(j) for j in np.flatnonzero(col_m)]
    if not row_m.any() and not col_m.any():
        return
    work = values.copy()
    dropped = {0: np.zeros(0, dtype=int), 1: np.zeros(0, dtype=int)}
    # Several margin lines on an axis must agree; a blank in one shown in another is known.
    for axis, marks, labels in ((0, row_m, rows), (1, col_m, cols)):
        lines = np.flatnonzero(marks)
        if len(lines) < 2:
            continue
        block = work[lines, :] if axis == 0 else work[:, lines].T
        shown = np.isfinite(block)
        high = np.where(shown, block, -np.inf).max(axis=0)
        low = np.where(shown, block, np.inf).min(axis=0)
        disagree = np.flatnonzero(shown.any(axis=0) & ~np.isclose(high, low, rtol=_TOL))
        names = ", ".join(repr(format_label(labels[i])) for i in lines)
        what = "rows" if axis == 0 else "columns"
        if len(disagree):
            audit.fail(
                f"the {what} {names} are all margins (totals) but disagree in "
                f"{len(disagree)} place(s); a margin must be the sum of the cells it totals"
            )
        known = np.where(shown.any(axis=0), high, np.nan)
        for i in lines:
            line = work[i, :] if axis == 0 else work[:, i]
            gap = ~np.isfinite(line) & np.isfinite(known)
            where = (i, np.flatnonzero(gap)) if axis == 0 else (np.flatnonzero(gap), i)
            audit.recovered[where] = known[gap]
            line[gap] = known[gap]
        # Keep the first as the margin; the others are checked through it.
        dropped[axis] = lines[1:]
    active_rows = np.ones(n_rows, dtype=bool)
    active_rows[dropped[0]] = False
    active_cols = np.ones(n_cols, dtype=bool)
    active_cols[dropped[1]] = False
    sub = work[np.ix_(active_rows, active_cols)]
    sub_rows = np.flatnonzero(active_rows)
    sub_cols = np.flatnonzero(active_cols)
    r_m = row_m[active_rows]
    c_m = col_m[active_cols]
    seen = sub[np.isfinite(sub)]
    counts_only = bool(np.all((seen >= 0) & (seen == np.floor(seen))))
    row_names = [format_label(rows[i]) for i in sub_rows]
    col_names = [format_label(cols[j]) for j in sub_cols]
    for axis, noun, marks, names in ((0, "row", r_m, row_names), (1, "column", c_m, col_names)):
        if marks.any() and how["rows" if axis == 0 else "columns"] == "value":
            audit.note(
                f"the {noun} {names[int(np.flatnonzero(marks)[0])]} is taken as a margin: its "
                f"values are the sum of the other {noun}s (at least the sum of their shown "
                "cells where some are blank)"
            )
    _verify_lines(audit, sub, r_m, c_m, row_names, col_names, params, counts_only)
    recovered_sub = _fixed_blanks(sub, r_m, c_m, counts_only, audit, params, row_names, col_names)
    got = np.isfinite(recovered_sub)
    rr, cc = np.nonzero(got)
    audit.recovered[sub_rows[rr], sub_cols[cc]] = recovered_sub[rr, cc]


def _verify_lines(
    audit: MarginAudit,
    sub: np.ndarray,
    r_m: np.ndarray,
    c_m: np.ndarray,
    row_names: list[str],
    col_names: list[str],
    params: SDCParams,
    counts_only: bool,
) -> None:
    """Each line with a shown margin: the margin is the sum of its cells (exactly when all are
    shown, at least the shown ones otherwise); blanks whose implied sum is small fail."""
    if c_m.any():  # a margin column: every row has a total
        c = int(np.flatnonzero(c_m)[0])
        _verify_axis(
            audit, sub[:, ~c_m], sub[:, c], row_names, col_names[c], "row", params, counts_only
        )
    if r_m.any():
        r = int(np.flatnonzero(r_m)[0])
        _verify_axis(
            audit,
            sub[~r_m, :].T,
            sub[r, :],
            col_names,
            row_names[r],
            "column",
            params,
            counts_only,
        )


def _verify_axis(
    audit: MarginAudit,
    inner: np.ndarray,
    margin: np.ndarray,
    line_names: list[str],
    margin_name: str,
    noun: str,
    params: SDCParams,
    counts_only: bool,
) -> None:
    shown = np.isfinite(inner)
    s = np.where(shown, inner, 0.0).sum(axis=1)
    k = (~shown).sum(axis=1)
    has = np.isfinite(margin)
    d = margin - s
    equal = np.isclose(margin, s, rtol=_TOL, atol=_TOL)
    where_total = f"the margin {margin_name}"
    for i in np.flatnonzero(has & (k == 0) & ~equal):
        if d[i] > 0:
            audit.fail(
                f"{noun} {line_names[i]}: {where_total} shows {_num(margin[i])} but the cells it "
                f"totals add up to {_num(s[i])}; the difference, {_num(d[i])}, is a line left "
                "out of the table (or an error), and anyone can read it off"
            )
        else:
            audit.fail(
                f"{noun} {line_names[i]}: {where_total} shows {_num(margin[i])}, less than the "
                f"{_num(s[i])} the cells it totals add up to; the margin is inconsistent"
            )
    if counts_only:
        for i in np.flatnonzero(has & (k >= 1) & (d < -_TOL)):
            audit.fail(
                f"{noun} {line_names[i]}: {where_total} shows {_num(margin[i])}, less than the "
                f"{_num(s[i])} its shown cells add up to; the margin is inconsistent"
            )
        small = has & (k >= 2) & (d > _TOL) & (d < params.threshold)
        for i in np.flatnonzero(small):
            audit.fail(
                f"{noun} {line_names[i]}: its {k[i]} blank cells add up to {_num(d[i])} "
                f"({where_total} minus the shown cells), below the threshold of "
                f"{params.threshold}: together they are a small count"
            )


# ----------------------------------------------------------------------------------------
# Recoverability
# ----------------------------------------------------------------------------------------


def _fixed_blanks(
    sub: np.ndarray,
    r_m: np.ndarray,
    c_m: np.ndarray,
    counts_only: bool,
    audit: MarginAudit,
    params: SDCParams,
    row_names: list[str],
    col_names: list[str],
) -> np.ndarray:
    """Values of the blank cells of ``sub`` that are the same in every solution of the margin
    equations (non-negative solutions when ``counts_only``); NaN elsewhere."""
    out = np.full(sub.shape, np.nan)
    blank = ~np.isfinite(sub)
    if not blank.any():
        return out
    if r_m.any() and c_m.any():
        return _fixed_two_way(
            sub,
            int(np.flatnonzero(r_m)[0]),
            int(np.flatnonzero(c_m)[0]),
            counts_only,
            audit,
            params,
            row_names,
            col_names,
        )
    # Margins on one axis: each line (a column when there is a margin row) stands alone.
    transpose = not r_m.any()
    grid = sub.T if transpose else sub
    marks = c_m if transpose else r_m
    m = int(np.flatnonzero(marks)[0])
    inner = np.delete(grid, m, axis=0)
    inner_pos = np.delete(np.arange(grid.shape[0]), m)
    margin = grid[m, :]
    shown = np.isfinite(inner)
    s = np.where(shown, inner, 0.0).sum(axis=0)
    k = (~shown).sum(axis=0)
    res = np.full(grid.shape, np.nan)
    has = np.isfinite(margin)
    d = margin - s
    lone = has & (k == 1)
    cols = np.flatnonzero(lone)
    rows = np.argmax(~shown[:, cols], axis=0)
    res[inner_pos[rows], cols] = d[cols]
    if counts_only:
        zero = has & (k >= 2) & np.isclose(d, 0, atol=_TOL)
        zr, zc = np.nonzero(~shown & zero[None, :])
        res[inner_pos[zr], zc] = 0.0
    derived = ~has & (k == 0)
    res[m, derived] = s[derived]
    return res.T if transpose else res


def _fixed_two_way(
    sub: np.ndarray,
    r_star: int,
    c_star: int,
    counts_only: bool,
    audit: MarginAudit,
    params: SDCParams,
    row_names: list[str],
    col_names: list[str],
) -> np.ndarray:
    """Margins on both axes: the bipartite graph of rows and columns, a blank cell per edge."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components, maximum_flow

    n_rows, n_cols = sub.shape
    out = np.full(sub.shape, np.nan)
    shown = np.isfinite(sub)
    s_r = np.ones(n_rows)
    s_r[r_star] = -1.0
    t_c = np.ones(n_cols)
    t_c[c_star] = -1.0
    signed = np.where(shown, sub, 0.0) * s_r[:, None] * t_c[None, :]
    # Row r: sum over its blanks of z = s_r t_c x equals demand_r; the same for columns.
    demand_r = -signed.sum(axis=1)
    demand_c = -signed.sum(axis=0)
    er, ec = np.nonzero(~shown)
    sigma = s_r[er] * t_c[ec]
    n = n_rows + n_cols
    u = er
    v = n_rows + ec
    deg = np.bincount(np.concatenate([u, v]), minlength=n)
    demand = np.concatenate([demand_r, demand_c])
    # A line without blanks that does not add up is reported by _verify_lines; the flow
    # (non-negativity) is then skipped and only the linear equations are used.
    consistent = not np.any((deg == 0) & ~np.isclose(demand, 0, atol=1e-6))
    keep = np.ones(len(er), dtype=bool)  # edges that can be non-zero
    values = None
    flows = None
    integral = consistent and counts_only and np.allclose(demand, np.round(demand))
    if integral:
        supply = np.round(np.concatenate([demand_r, -demand_c])).astype(np.int64)
        big = int(np.abs(supply).sum()) + 1
        if big < 2**31 - 1 and supply.sum() == 0:
            tail = np.where(sigma > 0, u, v)
            head = np.where(sigma > 0, v, u)
            src, dst = n, n + 1
            pos = np.flatnonzero(supply > 0)
            neg = np.flatnonzero(supply < 0)
            a = np.concatenate([tail, np.full(len(pos), src), neg])
            b = np.concatenate([head, pos, np.full(len(neg), dst)])
            cap = np.concatenate([np.full(len(tail), big), supply[pos], -supply[neg]]).astype(
                np.int32
            )
            graph = csr_matrix((cap, (a, b)), shape=(n + 2, n + 2))
            result = maximum_flow(graph, src, dst)
            if result.flow_value != int(supply[pos].sum()):
                audit.fail(
                    "the margins cannot all be right: no non-negative values of the blank "
                    "cells make every row and column add up to its total"
                )
                return out
            flow = result.flow.tocsr()
            f = np.asarray(flow[tail, head]).ravel().astype(float)
            back = f > 0
            residual = csr_matrix(
                (
                    np.ones(len(tail) + int(back.sum())),
                    (np.concatenate([tail, head[back]]), np.concatenate([head, tail[back]])),
                ),
                shape=(n, n),
            )
            _, scc = connected_components(residual, directed=True, connection="strong")
            forced_zero = (f == 0) & (scc[tail] != scc[head])
            keep = ~forced_zero
            values = f
            flows = (tail, head, f, big)
        elif supply.sum() != 0:
            audit.fail(
                "the margins cannot all be right: the row totals and the column totals "
                "add up to different grand totals"
            )
            return out
    bridge = np.zeros(len(er), dtype=bool)
    bridge[keep] = _bridges(n, u[keep], v[keep])
    fixed = bridge | ~keep
    free = np.flatnonzero(~fixed)
    if flows is not None and 0 < len(free) <= MAX_BOUNDED_BLANKS:
        # Not pinned down, but maybe known to be small.
        high = _upper_bounds(n, *flows, free)
        small = high < params.threshold
        for e, bound in zip(free[small], high[small], strict=True):
            audit.fail(
                f"cell ({row_names[er[e]][1:-1]}, {col_names[ec[e]][1:-1]}): suppressed, but "
                f"the margins and shown cells show it is at most {_num(bound)}, below the "
                f"threshold of {params.threshold}: a small count is disclosed"
            )
    if not fixed.any():
        return out
    if values is None:
        values = _particular_solution(n, u, v, sigma, demand)
    out[er[fixed], ec[fixed]] = np.where(keep[fixed], values[fixed], 0.0)
    return out


def _upper_bounds(
    n: int, tail: np.ndarray, head: np.ndarray, f: np.ndarray, big: int, which: np.ndarray
) -> np.ndarray:
    """The largest value each blank (flow arc ``tail -> head`` carrying ``f``) takes over all
    non-negative solutions: ``f`` plus the most flow that can go round a cycle through the arc
    (a maximum flow from ``head`` back to ``tail`` in the residual graph, without the arc's
    own reverse).  ``inf`` when unbounded.  Only for the arcs ``which``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    m = len(tail)
    back = np.flatnonzero(f > 0)
    a = np.concatenate([tail, head[back]])
    b = np.concatenate([head, tail[back]])
    cap = np.concatenate([np.full(m, big), f[back]]).astype(np.int32)
    graph = csr_matrix((cap, (a, b)), shape=(n, n))
    graph.sort_indices()
    out = np.full(len(which), np.inf)
    for i, e in enumerate(which.tolist()):
        saved = None
        if f[e] > 0:  # the arc's own reverse would undo the push: leave it out
            lo, hi = graph.indptr[head[e]], graph.indptr[head[e] + 1]
            k = lo + int(np.searchsorted(graph.indices[lo:hi], tail[e]))
            saved = graph.data[k]
            graph.data[k] = 0
        extra = maximum_flow(graph, int(head[e]), int(tail[e])).flow_value
        if saved is not None:
            graph.data[k] = saved
        if extra < big:
            out[i] = f[e] + extra
    return out


def _particular_solution(
    n: int, u: np.ndarray, v: np.ndarray, sigma: np.ndarray, demand: np.ndarray
) -> np.ndarray:
    """A least-squares solution x of the margin equations (exact on determined blanks)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import lsqr

    m = len(u)
    a = csr_matrix(
        (np.concatenate([sigma, sigma]), (np.concatenate([u, v]), np.tile(np.arange(m), 2))),
        shape=(n, m),
    )
    z = lsqr(a, demand, atol=1e-12, btol=1e-12, iter_lim=10 * (n + m))[0]
    return np.round(sigma * z, 9)


def _bridges(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which edges ``(u[i], v[i])`` of an undirected multigraph on ``n`` vertices are bridges
    (on no cycle).  Iterative Tarjan, O(vertices + edges)."""
    m = len(u)
    out = np.zeros(m, dtype=bool)
    if m == 0:
        return out
    ends = np.concatenate([u, v])
    order = np.argsort(ends, kind="stable")
    neighbour = np.concatenate([v, u])[order].tolist()
    edge = np.tile(np.arange(m), 2)[order].tolist()
    start = np.searchsorted(ends[order], np.arange(n + 1)).tolist()
    disc = [-1] * n
    low = [0] * n
    clock = 0
    for root in range(n):
        if disc[root] != -1 or start[root] == start[root + 1]:
            continue
        disc[root] = low[root] = clock
        clock += 1
        stack = [[root, -1, start[root]]]
        while stack:
            frame = stack[-1]
            x, parent_edge, i = frame
            if i < start[x + 1]:
                frame[2] = i + 1
                e = edge[i]
                if e == parent_edge:
                    continue
                y = neighbour[i]
                if disc[y] == -1:
                    disc[y] = low[y] = clock
                    clock += 1
                    stack.append([y, e, start[y]])
                elif disc[y] < low[x]:
                    low[x] = disc[y]
            else:
                stack.pop()
                if stack:
                    p = stack[-1][0]
                    if low[x] < low[p]:
                        low[p] = low[x]
                    if low[x] > disc[p]:
                        out[parent_edge] = True
    return out


def _determined(a: np.ndarray) -> np.ndarray:
    """For a system ``a @ x = b`` in unknowns ``x``: which unknowns it determines uniquely.

    ``x_j`` is determined exactly when the unit vector ``e_j`` lies in the row space of
    ``a``, i.e. when the orthogonal projection onto the row space keeps ``e_j``: the squared
    norm of column ``j`` of the right singular vectors (non-zero singular values) is 1.
    The dense reference for :func:`_bridges` (tests compare them).
    """
    k = a.shape[1]
    if k == 0 or a.shape[0] == 0:
        return np.zeros(k, dtype=bool)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    tol = max(a.shape) * np.finfo(float).eps * (s[0] if s.size else 0.0)
    basis = vt[s > tol]
    return (basis * basis).sum(axis=0) > 1 - 1e-6


def _line_system(pattern: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equations an attacker knowing every true row and column total has about the
    suppressed cells of ``pattern``: one per row and column (lines of one cell excluded:
    their total is the cell itself)."""
    n_rows, n_cols = pattern.shape
    positions = np.argwhere(pattern)
    rows = []
    if n_cols >= 2:
        rows += [positions[:, 0] == r for r in range(n_rows)]
    if n_rows >= 2:
        rows += [positions[:, 1] == c for c in range(n_cols)]
    a = np.array(rows, dtype=float).reshape(len(rows), len(positions))
    return a, positions


def recoverable_cells(suppressed: np.ndarray | pd.DataFrame) -> np.ndarray:
    """Suppressed cells whose value an attacker can work out from the published cells and the
    *true* row and column totals (published elsewhere, or known): a boolean array shaped like
    ``suppressed``.

    This is the strongest subtraction attack on a two-way table: any chain of row and column
    subtractions, and any combination of them.  A suppressed cell is an edge between its row
    and its column (every row is one vertex when rows have no total of their own: a
    one-column table; the same for columns); it is determined exactly when it is a bridge
    (:func:`_bridges`), which is what the dense :func:`_determined` computes too.
    """
    pattern = np.asarray(suppressed, dtype=bool)
    out = np.zeros(pattern.shape, dtype=bool)
    if not pattern.any():
        return out
    n_rows, n_cols = pattern.shape
    r, c = np.nonzero(pattern)
    ground = n_rows + n_cols  # one vertex for every line without an equation
    u = r if n_cols >= 2 else np.full(len(r), ground)
    v = n_rows + c if n_rows >= 2 else np.full(len(c), ground)
    bridge = _bridges(ground + 1, u, v)
    out[r[bridge], c[bridge]] = True
    return out
