"""The library's tables: ``crosstab``, ``pivot_table`` and ``describe``, computed, checked and
drafted for the record.

The rules are never evaluated here: tables go through
:func:`havre.sdc.check_frequency_table` / :func:`havre.sdc.check_magnitude_table`, margins are
checked as one-way tables of the same statistic over the margin's records and put next to the
cells, suppression is :func:`havre.sdc.suppress`. One statistic per table, each checked under
its own rules; a suppressed table of an additive statistic with blank cells has no margins
(totals of the published cells would read as if the blanks were 0, and true totals could give
them away). Rounding changes what is published, never the verdict (which is of the unrounded
values).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from havre.sdc import (
    CellReasons,
    OutputCheck,
    SDCParams,
    Verdict,
    check_frequency_table,
    check_magnitude_table,
    round_to_base,
)
from havre.sdc import (
    suppress as sdc_suppress,
)
from havre.sdc.tables import STATISTICS, _axis, cell_labels

from .records import MAX_CELLS_RECORDED, Draft, cell_outcomes, havre_block, label_text

__all__ = ["DESCRIBE_RULES", "crosstab", "describe", "pivot_table"]

#: Functions accepted as ``aggfunc`` and the statistic (rules) each one means.
_AGGFUNC_ALIASES: dict[Any, str] = {
    np.sum: "sum",
    np.mean: "mean",
    np.median: "median",
    np.std: "std",
    np.min: "min",
    np.max: "max",
    builtins.sum: "sum",
    builtins.min: "min",
    builtins.max: "max",
    len: "count",
}


#: The rows of ``describe`` and the rules (statistic) each is checked under. Quartiles are
#: order statistics like the median.
DESCRIBE_RULES = {
    "count": "count",
    "mean": "mean",
    "std": "std",
    "min": "min",
    "25%": "median",
    "50%": "median",
    "75%": "median",
    "max": "max",
}

#: pandas' keyword arguments the table calls accept, and their defaults.
_TABLE_OPTIONS = {
    "rownames": None,
    "colnames": None,
    "margins_name": "All",
    "dropna": True,
    "observed": False,
    "contributor": None,
}


@dataclass(eq=False)
class _TableSpec:
    """What a table call asked for: the records (``frame``), the keys of its axes, values and
    contributor columns in it, and the researcher's names for them."""

    method: str
    frame: pd.DataFrame
    row_keys: list[str]
    col_keys: list[str]
    row_names: list[Any]
    col_names: list[Any]
    values_key: str | None
    values_name: Any
    statistic: str | None
    contributor: str | None
    observed: bool
    margins: bool
    margins_name: str
    suppress: bool
    round_base: int | bool | None

    def __post_init__(self) -> None:
        self.margins = bool(self.margins)
        self.suppress = bool(self.suppress)
        if self.round_base is not None and not isinstance(self.round_base, bool):
            if not isinstance(self.round_base, int | np.integer) or self.round_base < 1:
                raise ValueError("round_base: a whole number of at least 1, or True")


def crosstab(
    params: SDCParams,
    index: Any,
    columns: Any,
    values: Any,
    aggfunc: Any,
    margins: bool,
    suppress: bool,
    round_base: int | bool | None,
    pandas_kwargs: dict[str, Any],
) -> tuple[pd.DataFrame, Draft]:
    """:func:`pandas.crosstab` of Series or arrays, checked: the published table and its draft
    (arguments as :meth:`havre.safe.Session.crosstab`)."""
    options = _table_options(pandas_kwargs, "crosstab")
    rows = _as_series_list(index, "row")
    cols = _as_series_list(columns, "col")
    if not rows:
        raise ValueError("index: give at least one grouping variable")
    if options["rownames"] is not None:
        rows = [s.rename(n) for s, n in zip(rows, _names(options["rownames"], rows), strict=True)]
    if options["colnames"] is not None:
        cols = [s.rename(n) for s, n in zip(cols, _names(options["colnames"], cols), strict=True)]
    if (values is None) != (aggfunc is None):
        raise ValueError("values and aggfunc go together: give both or neither")
    statistic = None if values is None else _aggfunc_name(aggfunc)
    row_keys = [f"__row{i}" for i in range(len(rows))]
    col_keys = [f"__col{i}" for i in range(len(cols))]
    items = list(zip(row_keys, rows, strict=True)) + list(zip(col_keys, cols, strict=True))
    value_name = None
    if values is not None:
        value_series = _as_series_list(values, "values")
        if len(value_series) != 1:
            raise ValueError("values: give one column of values")
        value_name = value_series[0].name
        items.append(("__values", value_series[0]))
    contributor = options["contributor"]
    if contributor is not None:
        items.append(("__contributor", _as_series_list(contributor, "contributor")[0]))
    data = _aligned(items)
    spec = _TableSpec(
        method="crosstab",
        frame=data,
        row_keys=row_keys,
        col_keys=col_keys,
        row_names=[s.name for s in rows],
        col_names=[s.name for s in cols],
        values_key=None if values is None else "__values",
        values_name=value_name,
        statistic=statistic,
        contributor="__contributor" if contributor is not None else None,
        observed=options["observed"],
        margins=margins,
        margins_name=options["margins_name"],
        suppress=suppress,
        round_base=round_base,
    )
    return _checked(params, spec)


def pivot_table(
    params: SDCParams,
    data: pd.DataFrame,
    index: str | Sequence[str] | None,
    columns: str | Sequence[str] | None,
    values: str | None,
    aggfunc: Any,
    margins: bool,
    suppress: bool,
    round_base: int | bool | None,
    pandas_kwargs: dict[str, Any],
) -> tuple[pd.DataFrame, Draft]:
    """:func:`pandas.pivot_table` of one column of ``data``, checked: the published table and
    its draft (arguments as :meth:`havre.safe.Session.pivot_table`)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError("data must be a pandas DataFrame")
    options = _table_options(pandas_kwargs, "pivot_table")
    if values is None:
        raise ValueError("values: name the one column to summarise")
    if isinstance(values, list | tuple):
        if len(values) != 1:
            raise ValueError("values: one column per table (call once per column)")
        values = values[0]
    row_keys = _key_list(index, "index")
    if not row_keys:
        raise ValueError("index: name at least one column to group by")
    col_keys = _key_list(columns, "columns")
    for key in [*row_keys, *col_keys, values]:
        if key not in data.columns:
            raise KeyError(f"no such column: {key!r}")
    contributor = options["contributor"]
    if contributor is not None and contributor not in data.columns:
        raise KeyError(f"contributor: no such column: {contributor!r}")
    spec = _TableSpec(
        method="pivot_table",
        frame=data,
        row_keys=row_keys,
        col_keys=col_keys,
        row_names=list(row_keys),
        col_names=list(col_keys),
        values_key=values,
        values_name=values,
        statistic=_aggfunc_name(aggfunc),
        contributor=contributor,
        observed=options["observed"],
        margins=margins,
        margins_name=options["margins_name"],
        suppress=suppress,
        round_base=round_base,
    )
    return _checked(params, spec)


def _checked(params: SDCParams, spec: _TableSpec) -> tuple[pd.DataFrame, Draft]:
    """The table ``spec`` asks for, checked (with its margins), suppressed and rounded as
    asked: the published table and its draft."""
    check = _check_table(spec, spec.row_keys, spec.col_keys or None, params)
    inner = check
    if spec.margins and not spec.suppress:
        check = _with_margins(spec, check, params)
    comments: list[str] = []
    mitigation = "none"
    status = check.verdict.label
    summary = check.summary
    secondary = None
    if spec.suppress:
        mitigation = "suppress"
        table = sdc_suppress(inner, margins=spec.margins, margins_name=spec.margins_name)
        blanked = table.iloc[: inner.shape[0], : inner.shape[1]].isna().to_numpy()
        additive = spec.statistic in (None, "count", "sum", "mean")
        margins_dropped = bool(spec.margins and additive and blanked.any())
        if margins_dropped:
            # Totals of the published cells would read as if the blanks were 0 (the
            # egress service flags such a table), and the true totals are what the
            # suppression protects against: a table with blanks has no margins.
            table = sdc_suppress(inner, margins=False)
        primary = inner.verdict_codes == Verdict.FAIL
        empty_before = ~np.isfinite(inner.table.to_numpy(dtype=float))
        secondary = blanked & ~primary & ~empty_before
        n_primary, n_secondary = int(primary.sum()), int(secondary.sum())
        if n_primary:
            status = "review"
            note = (
                f"suppression applied: {n_primary} failing "
                f"{'cell' if n_primary == 1 else 'cells'} blanked"
            )
            if n_secondary:
                note += f", and {n_secondary} more so that none can be worked out from totals"
            comments.append(note)
            summary = f"review (suppressed): {check.summary}; {note}"
        if margins_dropped:
            comments.append(
                "margins are not shown: with blank cells, totals of the published cells "
                "would read as if the blanks were 0, and true totals could give them away"
            )
        if spec.margins and not additive:
            comments.append(
                f"margins are not shown: a suppressed {spec.statistic} table "
                "has no totals that add up"
            )
    else:
        table = check.table.copy()
    if spec.round_base is not None and spec.round_base is not False:
        base = params.round_base if spec.round_base is True else spec.round_base
        mitigation = "round" if mitigation == "none" else f"{mitigation}+round"
        table = pd.DataFrame(
            {c: round_to_base(table[c].to_numpy(dtype=float), base) for c in table.columns},
            index=table.index,
        )[table.columns]
        comments.append(
            f"published values rounded to a multiple of {base}; the verdict is of the "
            "unrounded values"
        )
    if spec.statistic in (None, "count"):
        table = _as_counts(table)
    table = _publishable(table, spec)
    properties = {
        "method": spec.method,
        "mitigation": mitigation,
        "statistic": spec.statistic or "count",
        "index": [label_text(n) for n in spec.row_names],
        "columns": [label_text(n) for n in spec.col_names],
        "values": None if spec.values_name is None else label_text(spec.values_name),
        "margins": bool(spec.margins),
        "shape": list(table.shape),
    }
    if mitigation.endswith("round"):
        properties["round_base"] = params.round_base if spec.round_base is True else spec.round_base
    csv = table.to_csv().encode("utf-8")
    sdc = (inner if spec.suppress else check).to_acro_sdc(
        suppressed=spec.suppress, max_positions=MAX_CELLS_RECORDED
    )
    outcome, recorded = cell_outcomes(inner if spec.suppress else check, table, secondary)
    fair = {
        "dependent": "unknown" if spec.values_name is None else label_text(spec.values_name),
        "independent": [label_text(n) for n in spec.row_names + spec.col_names],
    }
    draft = Draft(
        output_type="table",
        properties=properties,
        files=[("csv", csv, sdc)],
        status=status,
        summary=summary,
        outcome=outcome,
        fair=fair,
        havre=havre_block(check, {"recorded": recorded}),
        comments=comments,
        check=check,
    )
    return table, draft


def describe(params: SDCParams, data: pd.DataFrame | pd.Series) -> tuple[pd.DataFrame, Draft]:
    """``data.describe()`` of the numeric columns, each row checked under the rules of its
    statistic (:data:`DESCRIBE_RULES`): the table and its draft."""
    frame = data.to_frame() if isinstance(data, pd.Series) else data
    if not isinstance(frame, pd.DataFrame):
        raise TypeError("describe: give a pandas DataFrame or Series")
    numeric = frame.select_dtypes(include="number").select_dtypes(exclude="bool")
    if numeric.shape[1] == 0:
        raise ValueError("describe: no numeric columns to describe")
    table = numeric.describe().reindex(list(DESCRIBE_RULES))
    key = pd.Categorical.from_codes(np.zeros(len(numeric), dtype=np.int8), categories=[0])
    one = pd.DataFrame({"__all": key}, index=numeric.index)
    masks, stats = [], []
    cache: dict[tuple[int, str], OutputCheck] = {}
    for i, column in enumerate(numeric.columns):
        frame_i = one.assign(__v=numeric[column].to_numpy())
        for statistic in set(DESCRIBE_RULES.values()):
            cache[(i, statistic)] = check_magnitude_table(
                frame_i, "__all", None, "__v", statistic, params=params
            )
    for row in DESCRIBE_RULES.values():
        for i in range(numeric.shape[1]):
            sub = cache[(i, row)].cells
            masks.append(sub.mask)
            stats.append(sub.stats.reset_index(drop=True))
    labels = cell_labels(table.index.rename("statistic"), table.columns.rename("variable"))
    all_stats = pd.concat(stats, ignore_index=True)
    all_stats.index = labels
    cells = CellReasons(labels, np.concatenate(masks), all_stats, params, None)
    check = OutputCheck(
        kind="describe",
        statistic=None,
        params=params,
        table=table,
        cells=cells,
        properties={"method": "describe"},
    )
    properties = {
        "method": "describe",
        "mitigation": "none",
        "columns": [label_text(c) for c in numeric.columns],
        "shape": list(table.shape),
    }
    sdc = check.to_acro_sdc(max_positions=MAX_CELLS_RECORDED)
    outcome, recorded = cell_outcomes(check, table, None)
    draft = Draft(
        output_type="table",
        properties=properties,
        files=[("csv", table.to_csv().encode("utf-8"), sdc)],
        status=check.verdict.label,
        summary=check.summary,
        outcome=outcome,
        fair={"dependent": "unknown", "independent": [label_text(c) for c in numeric.columns]},
        havre=havre_block(check, {"rules_per_row": dict(DESCRIBE_RULES), "recorded": recorded}),
        check=check,
    )
    return table, draft


def _as_series_list(axis: Any, prefix: str) -> list[pd.Series]:
    """An index/columns argument (Series, array, DataFrame, or a list of them) as Series."""
    if axis is None:
        return []
    if isinstance(axis, pd.DataFrame):
        items: list[Any] = [axis[c] for c in axis.columns]
    elif isinstance(axis, pd.Series | pd.Index | pd.Categorical):
        items = [axis]
    elif isinstance(axis, np.ndarray):
        items = [axis] if axis.ndim == 1 else [axis[:, i] for i in range(axis.shape[1])]
    elif isinstance(axis, list | tuple):
        if axis and all(np.isscalar(x) for x in axis):
            items = [np.asarray(axis)]
        else:
            items = list(axis)
    else:
        raise TypeError(f"{prefix}: expected a Series, an array or a list of them")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, pd.Series):
            series = item
        elif isinstance(item, pd.Index):
            series = pd.Series(item, name=item.name)
            series.attrs["_havre_array"] = True
        else:
            series = pd.Series(item)
            series.attrs["_havre_array"] = True
        if series.name is None:
            series = series.rename(f"{prefix}_{i}")
        out.append(series)
    return out


def _aggfunc_name(aggfunc: Any) -> str:
    if isinstance(aggfunc, list | tuple | set | dict | pd.Series | np.ndarray):
        raise ValueError(
            f"aggfunc: one statistic per table (got {aggfunc!r}); call once per statistic, "
            "e.g. aggfunc='mean' then aggfunc='std', so each table is checked under its own rules"
        )
    try:
        known = aggfunc in _AGGFUNC_ALIASES
    except TypeError:  # an unhashable object
        known = False
    if isinstance(aggfunc, str):
        name = aggfunc
    elif known:
        name = _AGGFUNC_ALIASES[aggfunc]
    else:
        raise ValueError(
            f"aggfunc must be one of {', '.join(STATISTICS)} (got {aggfunc!r}); "
            "other statistics are not checked automatically: ask a checker"
        )
    if name not in STATISTICS:
        raise ValueError(f"aggfunc must be one of {', '.join(STATISTICS)} (got {name!r})")
    return name


def _marginlabel_text(labels: pd.Index, name: str) -> Any:
    if isinstance(labels, pd.MultiIndex):
        return (name,) + ("",) * (labels.nlevels - 1)
    return name


def _appendlabel_text(labels: pd.Index, name: str) -> pd.Index:
    label = _marginlabel_text(labels, name)
    if isinstance(labels, pd.MultiIndex):
        return labels.append(pd.MultiIndex.from_tuples([label], names=labels.names))
    return pd.Index(list(labels) + [label], name=labels.name, tupleize_cols=False)


def _rename_axes(table: pd.DataFrame, row_names: list[Any], col_names: list[Any] | None) -> None:
    """Give a table's axes the researcher's names (in place)."""
    if isinstance(table.index, pd.MultiIndex):
        table.index = table.index.set_names(row_names)
    else:
        table.index = table.index.rename(row_names[0])
    if col_names:
        if isinstance(table.columns, pd.MultiIndex):
            table.columns = table.columns.set_names(col_names)
        else:
            table.columns = table.columns.rename(col_names[0])


def _table_options(kwargs: dict[str, Any], method: str) -> dict[str, Any]:
    unknown = sorted(set(kwargs) - set(_TABLE_OPTIONS))
    if unknown:
        raise TypeError(
            f"{method}: unsupported argument(s) {', '.join(unknown)}; supported: "
            f"{', '.join(_TABLE_OPTIONS)}"
        )
    options = {**_TABLE_OPTIONS, **kwargs}
    if not isinstance(options["margins_name"], str) or not options["margins_name"]:
        raise ValueError("margins_name must be a non-empty string")
    return options


def _names(names: Any, series: list[pd.Series]) -> list[Any]:
    out = [names] if isinstance(names, str) else list(names)
    if len(out) != len(series):
        raise ValueError(f"{len(out)} names given for {len(series)} variables")
    return out


def _key_list(keys: Any, what: str) -> list[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    if isinstance(keys, list | tuple):
        return list(keys)
    raise TypeError(f"{what}: give a column name or a list of column names")


def _aligned(items: list[tuple[str, pd.Series]]) -> pd.DataFrame:
    """One frame of the call's variables, aligned on their index as :func:`pandas.crosstab`
    does: Series by their index, arrays given the (first) Series' index."""
    real = [s for _, s in items if not s.attrs.get("_havre_array")]
    index = real[0].index if real else None
    columns: dict[str, Any] = {}
    for key, series in items:
        if series.attrs.get("_havre_array") and index is not None:
            if len(series) != len(index):
                raise ValueError(
                    f"{series.name}: {len(series)} values where the other variables have "
                    f"{len(index)}"
                )
            series = pd.Series(series.array, index=index, name=series.name)
        columns[key] = series
    # No copy: the records are only read (a copy of 1,000,000 rows costs more than the check).
    return pd.DataFrame(columns, copy=False)


def _check_table(
    spec: _TableSpec,
    index: list[str],
    columns: list[str] | None,
    params: SDCParams,
    frame: pd.DataFrame | None = None,
) -> OutputCheck:
    frame = spec.frame if frame is None else frame
    if spec.values_key is None:
        check = check_frequency_table(
            frame,
            index,
            columns,
            params=params,
            contributor=spec.contributor,
            observed=spec.observed,
        )
    else:
        check = check_magnitude_table(
            frame,
            index,
            columns,
            spec.values_key,
            spec.statistic or "mean",
            params=params,
            contributor=spec.contributor,
            observed=spec.observed,
        )
    return check


def _positions(frame: pd.DataFrame, keys: list[str], observed: bool, size: int) -> np.ndarray:
    """Each record's position on a table axis: the codes the check itself used
    (:func:`havre.sdc.tables._axis`), so a missing key lands in its NaN row or column."""
    codes, labels, _ = _axis(frame, keys, observed)
    if len(labels) != size:  # pragma: no cover - the same function made the table
        raise RuntimeError("the table's axis changed between the check and its margins")
    return codes


def _with_margins(spec: _TableSpec, inner: OutputCheck, params: SDCParams) -> OutputCheck:
    """The table with margins, each margin checked as a cell (a one-way table of the same
    statistic over the margin's records), in one :class:`OutputCheck`."""
    table = inner.table
    n_rows, n_cols = table.shape
    frame = spec.frame
    row_pos = _positions(frame, spec.row_keys, spec.observed, n_rows)
    has_cols = bool(spec.col_keys)
    col_pos = (
        _positions(frame, spec.col_keys, spec.observed, n_cols)
        if has_cols
        else np.zeros_like(row_pos)
    )
    keep = (row_pos >= 0) & (col_pos >= 0)
    extra: dict[str, Any] = {}
    if spec.values_key is not None:
        extra[spec.values_key] = frame[spec.values_key].to_numpy()
    if spec.contributor is not None:
        extra[spec.contributor] = frame[spec.contributor].to_numpy()

    def keyed(codes: np.ndarray, size: int) -> pd.DataFrame:
        codes = np.where(keep, codes, -1)
        key = pd.Categorical.from_codes(codes, categories=pd.RangeIndex(size))
        return pd.DataFrame({"__margin": key, **extra}, index=frame.index)

    grand = _check_table(spec, ["__margin"], None, params, keyed(np.zeros_like(row_pos), 1))
    name = spec.margins_name
    if has_cols:
        row_margin = _check_table(spec, ["__margin"], None, params, keyed(row_pos, n_rows))
        col_margin = _check_table(spec, ["__margin"], None, params, keyed(col_pos, n_cols))
        out_index = _appendlabel_text(table.index, name)
        out_columns = _appendlabel_text(table.columns, name)
        values = np.empty((n_rows + 1, n_cols + 1))
        values[:n_rows, :n_cols] = table.to_numpy(dtype=float)
        values[:n_rows, n_cols] = row_margin.table.iloc[:, 0].to_numpy(dtype=float)
        values[n_rows, :n_cols] = col_margin.table.iloc[:, 0].to_numpy(dtype=float)
        values[n_rows, n_cols] = grand.table.iloc[0, 0]
        pieces = [inner, row_margin, col_margin, grand]
        pos = np.empty((n_rows + 1, n_cols + 1), dtype=np.int64)
        pos[:n_rows, :n_cols] = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
        pos[:n_rows, n_cols] = n_rows * n_cols + np.arange(n_rows)
        pos[n_rows, :n_cols] = n_rows * n_cols + n_rows + np.arange(n_cols)
        pos[n_rows, n_cols] = n_rows * n_cols + n_rows + n_cols
    else:
        out_index = _appendlabel_text(table.index, name)
        out_columns = table.columns
        values = np.empty((n_rows + 1, n_cols))
        values[:n_rows] = table.to_numpy(dtype=float)
        values[n_rows, 0] = grand.table.iloc[0, 0]
        pieces = [inner, grand]
        pos = np.arange(n_rows + 1, dtype=np.int64).reshape(n_rows + 1, 1)
    out = pd.DataFrame(values, index=out_index, columns=out_columns)
    if spec.statistic in (None, "count"):
        out = out.astype(np.int64)
    masks = np.concatenate([p.cells.mask for p in pieces])
    stats = pd.concat([p.cells.stats.reset_index(drop=True) for p in pieces], ignore_index=True)
    order = pos.ravel()
    labels = cell_labels(out.index, out.columns)
    stats = stats.iloc[order]
    stats.index = labels
    cells = CellReasons(labels, masks[order], stats, params, inner.statistic)
    properties = dict(inner.properties)
    properties["margins_name"] = name
    return OutputCheck(
        kind=inner.kind,
        statistic=inner.statistic,
        params=params,
        table=out,
        cells=cells,
        findings=inner.findings,
        properties=properties,
    )


def _publishable(table: pd.DataFrame, spec: _TableSpec) -> pd.DataFrame:
    """The table with the researcher's axis names (and pivot_table's column label)."""
    table = table.copy()
    if spec.col_keys:
        _rename_axes(table, spec.row_names, spec.col_names)
    else:
        _rename_axes(table, spec.row_names, None)
        if spec.method == "pivot_table" and spec.values_name is not None:
            table.columns = pd.Index([spec.values_name])
        elif spec.values_key is None:
            table.columns = pd.Index(["count"])
    return table


def _as_counts(table: pd.DataFrame) -> pd.DataFrame:
    """A count table as whole numbers: int64, or nullable Int64 where cells are blank."""
    values = table.to_numpy(dtype=float)
    finite = np.isfinite(values)
    if not np.all(values[finite] == np.floor(values[finite])):
        return table
    if finite.all():
        return table.astype(np.int64)
    return table.astype("Int64")
