"""Per-output disclosure checks: tables computed from records, published count tables, models.

The same functions serve the egress server and the researchers' library, so a researcher sees
in the notebook the verdict a checker will see:

* :func:`check_frequency_table` — a count crosstab computed from records;
* :func:`check_magnitude_table` — a crosstab of ``sum``, ``mean``, ``median``, ``std``,
  ``min``, ``max`` or ``count`` of a value column;
* :func:`check_histogram` — a histogram of one column;
* :func:`check_regression` — a fitted model's residual degrees of freedom;
* :func:`check_frequency_csv` — a published count table when only the counts are at hand
  (what the server can check from a CSV file);
* :func:`suppress` — the table with failing cells masked, secondary suppression so no masked
  cell can be worked out from totals, and margins recomputed from the published cells.

Each check returns an :class:`OutputCheck`: the overall verdict (the worst cell), per-cell
verdicts and reasons, counts per rule, a summary sentence, the parameters used, and
:meth:`OutputCheck.to_acro_sdc` for ACRO's ``results.json`` ``sdc`` block.

How tables are computed (fast: no per-cell Python loop).  Each grouping column is factorised
once (sorted labels, like :func:`pandas.crosstab`); the row and column codes are combined into
one cell code per record; counts and sums are ``numpy.bincount`` over the cell codes; the
largest contributions per cell come from ``numpy.maximum.at`` passes, each pass taking out the
current largest values (ties counted), so the (n, k) rule needs at most ``max(n, 2)`` passes.

Only numpy and pandas; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .output_check import OutputCheck
from .params import SDCParams

# Published count tables (read from CSV, margins, recoverability) live in .published;
# re-exported here so existing imports keep working.
from .published import (
    _is_margin,
    check_frequency_csv,
    recoverable_cells,
)
from .published import (
    read_table_csv as read_table_csv,
)
from .rules import (
    Finding,
    Rule,
    Verdict,
    check_dof,
    evaluate_cells,
)

__all__ = [
    "MAX_CELLS",
    "RULES_FOR",
    "STATISTICS",
    "OutputCheck",
    "check_frequency_csv",
    "check_frequency_table",
    "check_histogram",
    "check_magnitude_table",
    "check_regression",
    "protect_pattern",
    "recoverable_cells",
    "suppress",
]

#: The statistics a magnitude table may show.
STATISTICS = ("count", "sum", "mean", "median", "std", "min", "max")

_BASE = Rule.THRESHOLD | Rule.ZEROS | Rule.MISSING
#: ACRO's rule set per statistic (missing values only count when ``check_missing_values``).
RULES_FOR: dict[str, Rule] = {
    "count": _BASE,
    "sum": _BASE | Rule.DOMINANCE | Rule.P_RATIO | Rule.NEGATIVE,
    "mean": _BASE | Rule.DOMINANCE | Rule.P_RATIO | Rule.NEGATIVE,
    "median": _BASE,
    "min": _BASE | Rule.MIN_MAX,
    "max": _BASE | Rule.MIN_MAX,
    "std": _BASE | Rule.DOF,
}

#: Statistics whose cells add up to the margins (suppression can recompute those margins).
_ADDITIVE = ("count", "sum", "mean")

#: Refuse tables larger than this many cells (a typo such as grouping by an id column).
MAX_CELLS = 5_000_000

# ----------------------------------------------------------------------------------------
# From records to cells
# ----------------------------------------------------------------------------------------


def _keys(name: str, keys: str | Sequence[str] | None, df: pd.DataFrame) -> list[str]:
    if keys is None:
        return []
    out = [keys] if isinstance(keys, str) else list(keys)
    if not out and name == "index":
        raise ValueError("index: give at least one column to group by")
    missing = [k for k in out if k not in df.columns]
    if missing:
        raise KeyError(f"{name}: no such column(s): {', '.join(map(repr, missing))}")
    return out


def _key_codes(col: pd.Series, observed: bool) -> tuple[np.ndarray, pd.Index, int]:
    """Codes and sorted labels of one grouping column, and how many records have no value.

    Records with a missing value get a level of their own, a ``NaN`` label after the others
    (as :func:`pandas.crosstab` does with ``dropna=False``, which ACRO uses): they are shown
    and checked like any other cell, never left out (a count left out of a table is
    published unchecked).  A categorical column gives all its categories unless
    ``observed``.
    """
    if isinstance(col.dtype, pd.CategoricalDtype) and not observed:
        codes = col.cat.codes.to_numpy().astype(np.int64)
        labels = pd.Index(col.cat.categories, name=col.name)
    else:
        try:
            raw, uniques = pd.factorize(col, sort=True)
        except TypeError:  # labels of mixed types that can't be ordered
            raw, uniques = pd.factorize(col, sort=False)
        codes = raw.astype(np.int64, copy=False)
        labels = pd.Index(uniques, name=col.name)
    missing = codes < 0
    n_missing = int(np.count_nonzero(missing))
    if n_missing:
        codes = np.where(missing, len(labels), codes)
        labels = labels.insert(len(labels), np.nan)
    return codes, labels, n_missing


def _axis(df: pd.DataFrame, keys: list[str], observed: bool) -> tuple[np.ndarray, pd.Index, int]:
    """Per-record codes and the labels of one table axis, and how many records have a
    missing key on it.

    Several keys give the full product of each key's levels (as ACRO shows them: pandas'
    ``dropna=False``), so a combination nobody is in is an empty cell that is shown and
    checked, never a row or column left out (which would publish the empty cell by
    omission).  More than :data:`MAX_CELLS` combinations are refused with a sentence.
    """
    parts = [_key_codes(df[k], observed) for k in keys]
    no_key = np.zeros(len(df), dtype=bool)
    for codes, labels, n_missing in parts:
        if n_missing:
            no_key |= codes == len(labels) - 1
    n_missing = int(np.count_nonzero(no_key))
    if len(parts) == 1:
        return parts[0][0], parts[0][1], n_missing
    sizes = [max(len(labels), 1) for _, labels, _ in parts]
    product = float(np.prod(sizes, dtype=float))
    if product > MAX_CELLS:
        levels = " x ".join(f"{size:,}" for size in sizes)
        raise ValueError(
            f"{', '.join(map(str, keys))} have {levels} levels: {product:,.0f} combinations, "
            f"more than the {MAX_CELLS:,} cells a table may have (every combination is shown "
            "and checked, as ACRO does); group fewer or coarser keys"
        )
    combined = np.zeros(len(df), dtype=np.int64)
    for (codes, _, _), size in zip(parts, sizes, strict=True):
        combined = combined * size + codes
    return combined, pd.MultiIndex.from_product([p[1] for p in parts], names=keys), n_missing


def cell_labels(rows: pd.Index, cols: pd.Index) -> pd.MultiIndex:
    """Labels of a table's cells in row-major order (row levels, then column levels)."""
    nr, nc = len(rows), len(cols)
    positions = (np.repeat(np.arange(nr), nc), np.tile(np.arange(nc), nr))
    arrays: list[Any] = []
    names: list[Any] = []
    for labels, pos in zip((rows, cols), positions, strict=True):
        if isinstance(labels, pd.MultiIndex):
            for i in range(labels.nlevels):
                arrays.append(labels.get_level_values(i).take(pos))
                names.append(labels.names[i])
        else:
            arrays.append(labels.take(pos))
            names.append(labels.name)
    return pd.MultiIndex.from_arrays(arrays, names=names)


@dataclass
class _Cells:
    """Records mapped to the cells of a table (every record is in the table: a missing key
    is a level of its own)."""

    cell: np.ndarray  # cell code of each record
    rows: pd.Index
    cols: pd.Index
    missing_keys: int  # records with a missing key (in the NaN row or column)

    @property
    def n(self) -> int:
        return len(self.rows) * len(self.cols)

    def take(self, values: np.ndarray) -> np.ndarray:
        """``values`` of the records in the table (all of them)."""
        return values

    def index(self) -> pd.MultiIndex:
        """Labels of the cells in row-major order (row key levels, then column key levels)."""
        return cell_labels(self.rows, self.cols)

    def frame(self, flat: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            flat.reshape(len(self.rows), len(self.cols)), index=self.rows, columns=self.cols
        )


def _cells(
    df: pd.DataFrame,
    index: str | Sequence[str],
    columns: str | Sequence[str] | None,
    column_label: str,
    observed: bool,
) -> _Cells:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame of records (got {type(df).__name__})")
    row_keys = _keys("index", index, df)
    col_keys = _keys("columns", columns, df)
    row_codes, rows, missing = _axis(df, row_keys, observed)
    if col_keys:
        col_codes, cols, col_missing = _axis(df, col_keys, observed)
        if col_missing:
            missing = int(np.count_nonzero(_missing_mask(df, row_keys + col_keys)))
    else:
        col_codes, cols = np.zeros(len(df), dtype=np.int64), pd.Index([column_label])
    n_cells = len(rows) * len(cols)
    if n_cells > MAX_CELLS:
        raise ValueError(
            f"a table of {len(rows):,} x {len(cols):,} = {n_cells:,} cells is more than the "
            f"{MAX_CELLS:,} a table may have; group fewer or coarser keys"
        )
    return _Cells(row_codes * len(cols) + col_codes, rows, cols, missing)


def _missing_mask(df: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Records with a missing value in any of ``keys``."""
    out = np.zeros(len(df), dtype=bool)
    for key in keys:
        out |= df[key].isna().to_numpy()
    return out


def _units(
    df: pd.DataFrame, contributor: str | None, cells: _Cells
) -> tuple[np.ndarray, int] | None:
    """Contributor codes of the kept records (missing ids count as one contributor)."""
    if contributor is None:
        return None
    if contributor not in df.columns:
        raise KeyError(f"contributor: no such column: {contributor!r}")
    codes, uniques = pd.factorize(df[contributor])
    n_units = len(uniques) + 1
    codes = np.where(codes < 0, n_units - 1, codes).astype(np.int64)
    return cells.take(codes), n_units


def _per_contributor(
    cell: np.ndarray, units: np.ndarray, n_units: int, values: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One entry per (cell, contributor): its cell code and (if values) its summed value."""
    pair = cell * n_units + units
    codes, uniques = pd.factorize(pair)
    pair_cell = np.asarray(uniques, dtype=np.int64) // n_units
    if values is None:
        return pair_cell, None
    return pair_cell, np.bincount(codes, weights=values, minlength=len(uniques))


def _top_values(
    cell: np.ndarray, values: np.ndarray, n_cells: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: the largest and second largest of ``values`` (>= 0) and the sum of the n
    largest (ties counted: two equal largest values are the largest and the second)."""
    need = max(n, 2)
    work = np.array(values, dtype=float)
    largest = np.zeros(n_cells)
    second = np.zeros(n_cells)
    top_n = np.zeros(n_cells)
    filled = np.zeros(n_cells, dtype=np.int64)
    for _ in range(need):
        current = np.full(n_cells, -1.0)
        np.maximum.at(current, cell, work)
        active = (current >= 0) & (filled < need)
        if not active.any():
            break
        at_max = (work == current[cell]) & (work >= 0)
        ties = np.where(active, np.bincount(cell[at_max], minlength=n_cells), 0)
        largest = np.where(active & (filled == 0), current, largest)
        second = np.where(active & (filled <= 1) & (filled + ties >= 2), current, second)
        take = np.clip(np.minimum(ties, n - filled), 0, None)
        top_n += np.where(active, take * current, 0.0)
        filled += ties
        work[at_max] = -1.0
    return largest, second, top_n


def _missing_keys_finding(cells: _Cells, keys: list[str], params: SDCParams) -> list[Finding]:
    """A note that records with a missing key are a row or column of their own (checked like
    any cell).  It gives no count: their count is in the table, checked by the rules (and
    blanked with the cell when the table is suppressed)."""
    if not cells.missing_keys:
        return []
    verdict = Verdict.REVIEW if params.check_missing_values else Verdict.PASS
    return [
        Finding(
            Rule.MISSING,
            verdict,
            "records with a missing grouping value are shown as a row or column of their "
            "own (labelled NaN, blank in a CSV file) and checked like any cell",
        )
    ]


def _empty_finding(cells: _Cells) -> list[Finding]:
    if cells.n:
        return []
    return [Finding(None, Verdict.REVIEW, "the table has no cells (no records to tabulate)")]


def _all_keys(index: str | Sequence[str], columns: str | Sequence[str] | None) -> list[str]:
    out = [index] if isinstance(index, str) else list(index)
    if columns is not None:
        out += [columns] if isinstance(columns, str) else list(columns)
    return out


# ----------------------------------------------------------------------------------------
# The checks
# ----------------------------------------------------------------------------------------


def check_frequency_table(
    df: pd.DataFrame,
    index: str | Sequence[str],
    columns: str | Sequence[str] | None = None,
    *,
    params: SDCParams | None = None,
    contributor: str | None = None,
    observed: bool = False,
) -> OutputCheck:
    """Check the count crosstab of ``df`` by ``index`` (rows) and ``columns``.

    Rules: threshold and zeros.  ``columns=None`` gives a one-way table (one ``count``
    column).  With ``contributor`` (an id column, e.g. a patient id), contributors are the
    distinct ids in a cell rather than its records; the table still counts records.
    Categorical grouping columns show all their categories (empty ones as zero cells, e.g.
    empty bins from :func:`pandas.cut`) unless ``observed=True``.  Several keys on an axis
    show every combination of their levels (empty ones as zero cells, as ACRO does).  Records
    with a missing grouping value are a ``NaN`` row or column of their own, checked like any
    other (as in ACRO, which calls pandas with ``dropna=False``).
    """
    params = params or SDCParams()
    cells = _cells(df, index, columns, "count", observed)
    records = np.bincount(cells.cell, minlength=cells.n)
    units = _units(df, contributor, cells)
    if units is None:
        count = records
    else:
        pair_cell, _ = _per_contributor(cells.cell, units[0], units[1], None)
        count = np.bincount(pair_cell, minlength=cells.n)
    stats = pd.DataFrame({"count": count, "records": records}, index=cells.index())
    reasons = evaluate_cells(stats, params, Rule.THRESHOLD | Rule.ZEROS, "count")
    findings = _missing_keys_finding(cells, _all_keys(index, columns), params)
    findings += _empty_finding(cells)
    return OutputCheck(
        kind="frequency",
        statistic="count",
        params=params,
        table=cells.frame(records),
        cells=reasons,
        findings=tuple(findings),
        properties={"method": "crosstab", "index": index, "columns": columns},
    )


def check_magnitude_table(
    df: pd.DataFrame,
    index: str | Sequence[str],
    columns: str | Sequence[str] | None,
    values: str,
    aggfunc: str = "mean",
    *,
    params: SDCParams | None = None,
    contributor: str | None = None,
    observed: bool = False,
) -> OutputCheck:
    """Check a crosstab of ``aggfunc`` of ``values`` by ``index`` and ``columns``.

    Rules per statistic (ACRO's): ``count`` — threshold, zeros; ``sum``/``mean`` — threshold,
    zeros, (n, k) dominance, p-ratio, negatives; ``median`` — threshold, zeros; ``min``/``max``
    — threshold, zeros, and every non-empty cell goes to review (one contributor's own value);
    ``std`` — threshold, zeros and degrees of freedom (contributors - 1 at least
    ``min_residual_dof``).  Missing values (NaN, infinities) are left out of the statistic;
    with ``check_missing_values`` the cells holding them go to review.  Contributors to a cell
    are its records with a value or, with ``contributor``, the distinct ids among them (the
    dominance rules then use each contributor's summed value).
    """
    params = params or SDCParams()
    if aggfunc not in STATISTICS:
        raise ValueError(f"aggfunc must be one of {', '.join(STATISTICS)} (got {aggfunc!r})")
    if values not in df.columns:
        raise KeyError(f"values: no such column: {values!r}")
    try:
        raw = df[values].to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"values: column {values!r} is not numeric") from exc
    cells = _cells(df, index, columns, aggfunc, observed)
    n = cells.n
    v = cells.take(raw)
    cell = cells.cell
    missing = ~np.isfinite(v)
    units = _units(df, contributor, cells)
    stats: dict[str, np.ndarray] = {}
    if missing.any():
        stats["missing"] = np.bincount(cell[missing], minlength=n)
        keep = ~missing
        cell, v = cell[keep], v[keep]
        if units is not None:
            units = (units[0][keep], units[1])
    else:
        stats["missing"] = np.zeros(n, dtype=np.int64)
    records = np.bincount(cell, minlength=n)
    total_sum = np.bincount(cell, weights=v, minlength=n)
    if units is None:
        contrib_cell, contrib = cell, v
    else:
        contrib_cell, contrib = _per_contributor(cell, units[0], units[1], v)
    stats["count"] = records if units is None else np.bincount(contrib_cell, minlength=n)
    stats["records"] = records
    stats["sum"] = total_sum

    rules = RULES_FOR[aggfunc]
    if rules & Rule.DOMINANCE:
        magnitude = np.abs(contrib)
        minimum = np.full(n, np.inf)
        np.minimum.at(minimum, contrib_cell, contrib)
        stats["minimum"] = np.where(np.isfinite(minimum), minimum, np.nan)
        stats["total"] = np.bincount(contrib_cell, weights=magnitude, minlength=n)
        largest, second, top_n = _top_values(contrib_cell, magnitude, n, params.dominance_n)
        stats["largest"], stats["second"], stats["top_n"] = largest, second, top_n
    if rules & Rule.DOF:
        stats["dof"] = stats["count"] - 1.0

    table_values = _statistic(aggfunc, cell, v, n, records, total_sum)
    frame = pd.DataFrame(stats, index=cells.index())
    reasons = evaluate_cells(frame, params, rules, aggfunc)
    findings = _missing_keys_finding(cells, _all_keys(index, columns), params)
    findings += _empty_finding(cells)
    return OutputCheck(
        kind="magnitude",
        statistic=aggfunc,
        params=params,
        table=cells.frame(table_values),
        cells=reasons,
        findings=tuple(findings),
        properties={
            "method": "crosstab",
            "index": index,
            "columns": columns,
            "values": values,
            "aggfunc": aggfunc,
        },
    )


def _statistic(
    aggfunc: str,
    cell: np.ndarray,
    v: np.ndarray,
    n: int,
    records: np.ndarray,
    total_sum: np.ndarray,
) -> np.ndarray:
    """The statistic per cell (NaN for an empty cell, except counts)."""
    empty = records == 0
    if aggfunc == "count":
        return records
    if aggfunc == "sum":
        return np.where(empty, np.nan, total_sum)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total_sum / records
    if aggfunc == "mean":
        return np.where(empty, np.nan, mean)
    if aggfunc == "std":
        deviation = v - mean[cell]
        squares = np.bincount(cell, weights=deviation * deviation, minlength=n)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(records >= 2, np.sqrt(squares / (records - 1)), np.nan)
    if aggfunc in ("min", "max"):
        out = np.full(n, np.inf if aggfunc == "min" else -np.inf)
        (np.minimum if aggfunc == "min" else np.maximum).at(out, cell, v)
        return np.where(empty, np.nan, out)
    # median
    medians = pd.Series(v).groupby(cell).median()
    out = np.full(n, np.nan)
    out[medians.index.to_numpy()] = medians.to_numpy()
    return out


def check_histogram(
    values: Any,
    bins: int | Sequence[float] = 10,
    *,
    params: SDCParams | None = None,
    range: tuple[float, float] | None = None,
) -> OutputCheck:
    """Check a histogram of ``values`` (bins as for :func:`numpy.histogram`).

    Each bin is a cell of a one-way count table: threshold, and zeros for empty bins.  A
    histogram with data always goes to review as well: its outer bins show where the data
    starts and ends (with ACRO's advice to check the minimum and maximum).
    """
    params = params or SDCParams()
    x = np.asarray(pd.Series(values).to_numpy(dtype=float, na_value=np.nan), dtype=float)
    finite = np.isfinite(x)
    counts, edges = np.histogram(x[finite], bins=bins, range=range)
    labels = pd.IntervalIndex.from_breaks(edges, closed="left", name="bin")
    stats = pd.DataFrame(
        {"count": counts, "records": counts},
        index=pd.MultiIndex.from_arrays([labels], names=["bin"]),
    )
    reasons = evaluate_cells(stats, params, Rule.THRESHOLD | Rule.ZEROS, "count")
    findings = []
    if finite.any():
        findings.append(
            Finding(
                Rule.MIN_MAX,
                Verdict.REVIEW,
                f"a histogram shows the range of the data (from {x[finite].min():g} to "
                f"{x[finite].max():g}): the extremes may be single people's values",
            )
        )
    if not finite.all():
        # No count: how many values are missing is not a checked cell of the histogram.
        findings.append(
            Finding(
                Rule.MISSING,
                Verdict.REVIEW if params.check_missing_values else Verdict.PASS,
                "missing values are left out of the histogram",
            )
        )
    table = pd.DataFrame({"count": counts}, index=labels)
    return OutputCheck(
        kind="histogram",
        statistic="count",
        params=params,
        table=table,
        cells=reasons,
        findings=tuple(findings),
        properties={"method": "histogram", "bins": len(counts)},
    )


def check_regression(dof_resid: Any, *, params: SDCParams | None = None) -> OutputCheck:
    """Check a model by its residual degrees of freedom (fails below ``min_residual_dof``).

    ``dof_resid`` is a number or anything with a ``df_resid`` attribute (a statsmodels model
    or results object).  An unknown or non-finite value goes to review.
    """
    params = params or SDCParams()
    dof = getattr(dof_resid, "df_resid", dof_resid)
    verdict, text = check_dof(dof, params)
    shown = float(dof) if verdict != Verdict.REVIEW else None
    return OutputCheck(
        kind="regression",
        statistic=None,
        params=params,
        findings=(Finding(Rule.DOF, verdict, text),),
        properties={"method": "regression", "dof": shown},
    )


# ----------------------------------------------------------------------------------------
# Suppression
# ----------------------------------------------------------------------------------------


def _candidates(
    pattern: np.ndarray, weights: np.ndarray, r: int, c: int, along_row: bool
) -> list[tuple[int, int]]:
    """Unsuppressed cells in row ``r`` (or column ``c``) to suppress next, best first:
    non-empty cells before empty ones, then cells whose crossing line already has suppressed
    cells (a line with exactly one first: the new cell protects both lines), then the
    smallest, then table order."""
    if along_row:
        free = np.flatnonzero(~pattern[r, :])
        crossing = pattern[:, free].sum(axis=0)
        w = weights[r, free]
    else:
        free = np.flatnonzero(~pattern[:, c])
        crossing = pattern[free, :].sum(axis=1)
        w = weights[free, c]
    joins = np.where(crossing == 1, 2, np.where(crossing >= 2, 1, 0))
    order = np.lexsort((free, w, -joins, w <= 0))
    if along_row:
        return [(r, int(free[i])) for i in order]
    return [(int(free[i]), c) for i in order]


def _needs_more(suppressed: np.ndarray, weights: np.ndarray, need_total: float) -> bool:
    """Whether a line with these suppressed cells must have one more: a lone suppressed cell
    is its total minus the published cells; a group of suppressed cells adding up to fewer
    than ``need_total`` is itself a small (disclosive) cell once the true total is known."""
    k = int(suppressed.sum())
    if k == 0:
        return False
    if k == 1:
        return True
    return bool(weights[suppressed].sum() < need_total)


def protect_pattern(
    primary: np.ndarray,
    weights: np.ndarray | None = None,
    params: SDCParams | None = None,
) -> np.ndarray:
    """The suppression pattern: ``primary`` cells plus secondary (complementary) cells chosen
    so that no suppressed cell can be recovered from true row and column totals.

    1. While some row or column holds exactly one suppressed cell (that cell would be its
       total minus the published cells), or suppressed cells adding up (by ``weights``, the
       counts) to fewer than ``params.threshold`` (their sum would be a small cell), suppress
       one more cell in that line: preferably non-empty, in a crossing line that already has
       suppressed cells, and small.
    2. Audit the pattern with :func:`recoverable_cells` (which also catches cells exposed by
       combinations of lines, e.g. a suppressed cell bridging two suppressed rectangles); for
       each cell still recoverable, try the candidates of its row and column in the same
       order and keep the first that protects it.

    Suppression only grows, so this ends; in the worst case every cell is suppressed.
    Without ``params`` only step 1's first condition and step 2 apply.
    """
    pattern = np.array(primary, dtype=bool)
    w = np.ones(pattern.shape) if weights is None else np.nan_to_num(np.asarray(weights, float))
    need_total = float(params.threshold) if params is not None else 0.0
    for _ in range(pattern.size + 1):
        _complete_lines(pattern, w, need_total)
        exposed = np.argwhere(recoverable_cells(pattern))
        if not len(exposed):
            return pattern
        r, c = (int(x) for x in exposed[0])
        options = _candidates(pattern, w, r, c, True) + _candidates(pattern, w, r, c, False)
        if not options:  # nothing left to suppress around it
            return pattern
        for option in options[:20]:
            trial = pattern.copy()
            trial[option] = True
            if not recoverable_cells(trial)[r, c]:
                pattern = trial
                break
        else:
            for along_row in (True, False):
                best = _candidates(pattern, w, r, c, along_row)
                if best:
                    pattern[best[0]] = True
    return pattern


def _complete_lines(pattern: np.ndarray, weights: np.ndarray, need_total: float) -> None:
    """Step 1 of :func:`protect_pattern`, in place."""
    n_rows, n_cols = pattern.shape
    changed = True
    while changed:
        changed = False
        if n_cols >= 2:
            for r in range(n_rows):
                if _needs_more(pattern[r, :], weights[r, :], need_total):
                    options = _candidates(pattern, weights, r, 0, True)
                    if options:
                        pattern[options[0]] = True
                        changed = True
        if n_rows >= 2:
            for c in range(n_cols):
                if _needs_more(pattern[:, c], weights[:, c], need_total):
                    options = _candidates(pattern, weights, 0, c, False)
                    if options:
                        pattern[options[0]] = True
                        changed = True


def _margin_label(labels: pd.Index, name: str) -> Any:
    if isinstance(labels, pd.MultiIndex):
        return (name,) + ("",) * (labels.nlevels - 1)
    return name


def _strip_margins(table: pd.DataFrame, name: str) -> pd.DataFrame:
    rows = ~_is_margin(table.index, name)
    cols = ~_is_margin(table.columns, name)
    return table.loc[rows, cols]


def suppress(
    check: OutputCheck,
    table: pd.DataFrame | None = None,
    *,
    margins: bool = True,
    margins_name: str = "All",
    secondary: bool = True,
) -> pd.DataFrame:
    """The table to publish: failing cells masked (NaN), secondary suppression, and margins
    recomputed from the published cells only.

    ``table`` defaults to ``check.table``; margins already in it (labelled ``margins_name``)
    are dropped and recomputed.  Cells that fail are masked (cells to *review* are left for
    the checkers).  For counts, sums and means, :func:`protect_pattern` adds secondary
    suppression so that no masked cell can be recovered even from the true totals; then
    margins are the totals of the *published* cells (the sum, or for a mean the
    count-weighted mean, of the cells left), so subtracting published cells from a published
    margin gives nothing away.  A line whose cells are all masked gets a blank margin.
    Other statistics (median, std, min, max) do not add up, so only the failing cells are
    masked and no margins are added.  One-way tables get only the column total.
    """
    if check.cells is None or check.table is None:
        raise ValueError(f"a {check.kind} output has no cells to suppress")
    # A published table checked with its margins: work on its inner cells.
    inner_rows = ~_is_margin(check.table.index, check.properties.get("margins_name"))
    inner_cols = ~_is_margin(check.table.columns, check.properties.get("margins_name"))
    inner = np.ix_(inner_rows, inner_cols)
    shape = (int(inner_rows.sum()), int(inner_cols.sum()))
    if table is None:
        base = check.table.iloc[inner_rows, inner_cols]
    else:
        base = _strip_margins(table, margins_name)
    if base.shape != shape:
        raise ValueError(
            f"the table is {base.shape[0]} x {base.shape[1]} without margins but the check was "
            f"of a {shape[0]} x {shape[1]} table"
        )
    stats = check.cells.stats

    def grid(values: Any) -> np.ndarray:
        return np.asarray(values).reshape(check.shape)[inner]

    primary = grid(check.cells.codes) == Verdict.FAIL
    primary |= ~np.isfinite(base.to_numpy(dtype=float))  # blank cells stay blank
    additive = check.statistic in _ADDITIVE
    weights_col = "records" if "records" in stats else "count"
    weights = np.nan_to_num(grid(stats[weights_col].to_numpy(dtype=float)))
    pattern = protect_pattern(primary, weights, check.params) if additive and secondary else primary
    out = base.astype(float).mask(pattern)
    if not (margins and additive):
        return out
    published = ~pattern
    n_rows, n_cols = shape
    if check.statistic == "mean":
        sums = np.where(published, grid(stats["sum"].to_numpy(dtype=float)), 0.0)
        counts = np.where(published, weights, 0.0)

        def total(axis: int | None) -> Any:
            with np.errstate(divide="ignore", invalid="ignore"):
                s, n = sums.sum(axis=axis), counts.sum(axis=axis)
                return np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)

    else:
        cells = np.where(published, np.nan_to_num(out.to_numpy(dtype=float)), 0.0)
        any_published = published

        def total(axis: int | None) -> Any:
            s = cells.sum(axis=axis)
            return np.where(any_published.any(axis=axis), s, np.nan)

    result = out.copy()
    if n_cols >= 2:
        result[_margin_label(out.columns, margins_name)] = total(1)
    if n_rows >= 2:
        row = list(total(0))
        if n_cols >= 2:
            row.append(float(total(None)))
        label = _margin_label(out.index, margins_name)
        if isinstance(out.index, pd.MultiIndex):
            labels = pd.MultiIndex.from_tuples([label], names=out.index.names)
        else:
            labels = pd.Index([label], name=out.index.name)
        margin_row = pd.DataFrame([row], index=labels, columns=result.columns)
        result = pd.concat([result, margin_row])
    return result
