"""Published count tables: what the egress server can check from a CSV/TSV file of counts.

Moved out of :mod:`egress.sdc.tables` (which re-exports these names):

* :func:`read_table_csv` — a CSV/TSV table as the service reads one;
* :func:`check_frequency_csv` — a published count table when only the counts are at hand;
* :func:`recoverable_cells` — which suppressed cells follow from the true row and column totals.

Only numpy and pandas; no I/O.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from . import tables as _tables
from .params import SDCParams
from .rules import CellReasons, Finding, Rule, Verdict, evaluate_cells

__all__ = ["check_frequency_csv", "read_table_csv", "recoverable_cells"]


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


def check_frequency_csv(
    table: pd.DataFrame | pd.Series,
    *,
    params: SDCParams | None = None,
    margins_name: str | None = "All",
) -> _tables.OutputCheck:
    """Check a published count table given only as counts (e.g. read from a CSV file).

    Without records only the counts can be checked: threshold and zeros per cell (margins
    included: they are published counts too).  Blank or non-numeric cells are taken as
    suppressed.  Cells that are not counts (negative or fractional) go to review.  When the
    table has margins (a row and/or column labelled ``margins_name``), a suppressed cell whose
    value follows from the published totals and cells (the "totals leak") fails.
    """
    params = params or SDCParams()
    if isinstance(table, pd.Series):
        table = table.to_frame()
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame (got {type(table).__name__})")
    numeric = table.apply(pd.to_numeric, errors="coerce").astype(float)
    values = numeric.to_numpy()
    flat = values.ravel()
    n_rows, n_cols = values.shape
    rows_pos = np.repeat(np.arange(n_rows), n_cols)
    cols_pos = np.tile(np.arange(n_cols), n_rows)
    index = pd.MultiIndex.from_arrays(
        [_flat_labels(numeric.index).take(rows_pos), _flat_labels(numeric.columns).take(cols_pos)]
    )
    recovered = _recover_from_margins(values, numeric.index, numeric.columns, margins_name)
    stats = pd.DataFrame(
        {"count": flat, "value": flat, "recovered": recovered.ravel()}, index=index
    )
    reasons = evaluate_cells(stats, params, Rule.THRESHOLD | Rule.ZEROS, "count")
    mask = reasons.mask.copy()
    visible = np.isfinite(flat)
    not_count = visible & ((flat < 0) | (flat != np.floor(flat)))
    mask[not_count] |= np.uint16(Rule.NOT_A_COUNT)
    # A negative or fractional "count" is no count: don't also call it small or empty.
    mask[not_count] &= ~np.uint16(Rule.THRESHOLD | Rule.ZEROS)
    mask[np.isfinite(recovered.ravel())] |= np.uint16(Rule.RECOVERABLE)
    reasons = CellReasons(index, mask, stats, params, "count")
    n_suppressed = int(np.count_nonzero(~visible))
    findings = []
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
    return _tables.OutputCheck(
        kind="frequency-csv",
        statistic="count",
        params=params,
        table=numeric,
        cells=reasons,
        findings=tuple(findings),
        properties={"method": "csv", "margins_name": margins_name},
    )


def _flat_labels(labels: pd.Index) -> pd.Index:
    """Labels as one flat index (tuples for a MultiIndex)."""
    if isinstance(labels, pd.MultiIndex):
        return pd.Index(list(labels), tupleize_cols=False)
    return labels


def _is_margin(labels: pd.Index, margins_name: str | None) -> np.ndarray:
    if margins_name is None:
        return np.zeros(len(labels), dtype=bool)
    if isinstance(labels, pd.MultiIndex):
        return np.asarray(labels.get_level_values(0) == margins_name)
    return np.asarray([label == margins_name for label in labels], dtype=bool)


def _recover_from_margins(
    values: np.ndarray, index: pd.Index, columns: pd.Index, margins_name: str | None
) -> np.ndarray:
    """Values of blank cells that follow from the published cells and totals (NaN elsewhere).

    Every row and column of the table gives one equation: its inner cells add up to its
    margin cell.  The blank cells are the unknowns; a blank cell's value is determined when
    its unit vector lies in the row space of the equations (exact linear algebra, which
    covers chains of subtractions).
    """
    out = np.full(values.shape, np.nan)
    row_m, col_m = _is_margin(index, margins_name), _is_margin(columns, margins_name)
    if not (row_m.sum() == 1 or col_m.sum() == 1):
        return out
    inner_rows, inner_cols = np.flatnonzero(~row_m), np.flatnonzero(~col_m)
    lines: list[tuple[list[tuple[int, int]], tuple[int, int]]] = []
    if col_m.sum() == 1:
        c_tot = int(np.flatnonzero(col_m)[0])
        for r in range(values.shape[0]):
            lines.append(([(r, int(c)) for c in inner_cols], (r, c_tot)))
    if row_m.sum() == 1:
        r_tot = int(np.flatnonzero(row_m)[0])
        for c in range(values.shape[1]):
            lines.append(([(int(r), c) for r in inner_rows], (r_tot, c)))
    unknown = ~np.isfinite(values)
    if not unknown.any() or not lines:
        return out
    positions = [tuple(p) for p in np.argwhere(unknown)]
    column_of = {p: j for j, p in enumerate(positions)}
    a = np.zeros((len(lines), len(positions)))
    b = np.zeros(len(lines))
    for i, (members, total) in enumerate(lines):
        for sign, where in [(1.0, m) for m in members] + [(-1.0, total)]:
            if where in column_of:
                a[i, column_of[where]] += sign
            else:
                b[i] -= sign * values[where]
    determined = _determined(a)
    if determined.any():
        solution = np.linalg.lstsq(a, b, rcond=None)[0]
        for j in np.flatnonzero(determined):
            out[positions[j]] = solution[j]
    return out


def _determined(a: np.ndarray) -> np.ndarray:
    """For a system ``a @ x = b`` in unknowns ``x``: which unknowns it determines uniquely.

    ``x_j`` is determined exactly when the unit vector ``e_j`` lies in the row space of
    ``a``, i.e. when the orthogonal projection onto the row space keeps ``e_j``: the squared
    norm of column ``j`` of the right singular vectors (non-zero singular values) is 1.
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
    subtractions, and any combination of them (linear algebra, see :func:`_determined`).
    """
    pattern = np.asarray(suppressed, dtype=bool)
    out = np.zeros(pattern.shape, dtype=bool)
    if not pattern.any():
        return out
    a, positions = _line_system(pattern)
    determined = _determined(a)
    out[positions[determined, 0], positions[determined, 1]] = True
    return out
