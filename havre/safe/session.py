"""A safe-analysis session: pandas and statsmodels calls that record an output with its verdict.

Each call computes what the researcher asked for, checks it with Havre's SDC rules engine
(:mod:`havre.sdc`, the same code the egress service runs), writes the output into the
session's folder and records it in ``results.json`` (ACRO's format). See
``docs/researcher-safe-analysis.md`` for the researcher's guide.

The rules are never evaluated here: tables go through
:func:`havre.sdc.check_frequency_table` / :func:`havre.sdc.check_magnitude_table`
(margins are checked as one-way tables of the same statistic and put next to the cells),
histograms through :func:`havre.sdc.check_histogram`, models through
:func:`havre.sdc.check_regression`, suppression through :func:`havre.sdc.suppress`.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime
import functools
import getpass
import itertools
import json
import linecache
import os
import re
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from havre.sdc import (
    CellReasons,
    OutputCheck,
    SDCParams,
    Verdict,
    check_frequency_table,
    check_histogram,
    check_magnitude_table,
    check_regression,
    round_to_base,
)
from havre.sdc import (
    suppress as sdc_suppress,
)
from havre.sdc.rules import ALL_RULES
from havre.sdc.tables import STATISTICS, _axis, cell_labels

from .display import SafeTable, escape, verdict_badge_html
from .outputs import (
    CONFIG_FILE,
    FORMAT,
    RESULTS_FILE,
    Output,
    SessionFolder,
    json_default,
    sha256_hex,
    validate_name,
)

__all__ = ["MAX_CELLS_RECORDED", "MAX_REASONS_RECORDED", "Session", "label_key", "library_version"]

#: Reasons (sentences) kept per output in ``results.json``; the counts per rule are always
#: complete.
MAX_REASONS_RECORDED = 500

#: Per-cell records kept per output in ``results.json``: a table of more cells records only
#: its cells that are not ``ok`` in ``outcome`` (at most this many) and at most this many
#: positions per rule in the ``sdc`` block; counts per rule and the verdict are always of every
#: cell, and ``havre.recorded`` says what was left out.  One wide table can't make
#: ``results.json`` too large for the egress service to read (which would lose every record).
MAX_CELLS_RECORDED = 2_000

#: Environment variables the session reads.
ENV_OUTPUTS_DIR = "HAVRE_OUTPUTS_DIR"
ENV_PROJECT = "HAVRE_PROJECT"
ENV_PARAMS = "HAVRE_SDC_PARAMS"
#: Set to ``1`` by the trusted re-execution runner: ``$HAVRE_SDC_PARAMS`` is then a floor
#: that a notebook's own ``params=`` can't go below (see ``_forced_params``).
ENV_TRUSTED_RUN = "HAVRE_TRUSTED_REEXECUTION"

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

#: Statistics whose margins are the statistic over the margin's records (like pandas).
_MODEL_CLASSES = {"ols": "OLS", "logit": "Logit", "probit": "Probit"}

#: The rows of ``describe`` and the rules (statistic) each is checked under. Quartiles are
#: order statistics like the median.
_DESCRIBE_RULES = {
    "count": "count",
    "mean": "mean",
    "std": "std",
    "min": "min",
    "25%": "median",
    "50%": "median",
    "75%": "median",
    "max": "max",
}


@functools.cache
def library_version() -> str:
    """Havre's version (from the installed package metadata)."""
    try:
        from importlib.metadata import version

        return version("havre")
    except Exception:  # not installed as a package (a checkout on sys.path)
        return "0.1.0"


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat()


def _user() -> str:
    user = os.environ.get("JUPYTERHUB_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:
        return "researcher"


def _safe_piece(text: str) -> str:
    """``text`` reduced to characters safe in a folder name."""
    out = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in text)
    return out.strip("-") or "session"


def _params_from_env() -> SDCParams:
    path = os.environ.get(ENV_PARAMS)
    if not path:
        return SDCParams()
    with open(path, encoding="utf-8") as handle:
        mapping = json.load(handle)
    return SDCParams.from_mapping(mapping, source=f"{ENV_PARAMS} ({path})")


def _forced_params(params: SDCParams) -> SDCParams:
    """In a trusted re-execution (``$HAVRE_TRUSTED_REEXECUTION=1``) the project's parameters
    (``$HAVRE_SDC_PARAMS``) are forced: each rule a notebook's ``params=`` makes less strict is
    set back to the project's value (with a warning); stricter values are kept."""
    if os.environ.get(ENV_TRUSTED_RUN) != "1":
        return params
    forced = _params_from_env()
    weaker = params.weaker_than(forced)
    if not weaker:
        return params
    warnings.warn(
        "trusted re-execution: the project's SDC parameters are forced; "
        + ", ".join(f"{n} {getattr(params, n)!r} -> {getattr(forced, n)!r}" for n in weaker),
        stacklevel=3,
    )
    return dataclasses.replace(params, **{n: getattr(forced, n) for n in weaker})


def _caller_command(default: str) -> str:
    """The source of the researcher's call (the first frame outside this package): the whole
    statement's lines, e.g. ``t = safe.crosstab(df.region, df.age)``, as ACRO records it.

    Uses the calling instruction's source positions and :mod:`linecache` (which also holds
    notebook cells), not :func:`inspect.stack` (which reads the source of every frame).
    """
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("havre.safe"):
        frame = frame.f_back
    if frame is None:
        return default
    code = frame.f_code
    start = end = frame.f_lineno
    try:
        position = next(itertools.islice(code.co_positions(), frame.f_lasti // 2, None))
        if position[0] is not None and position[1] is not None:
            start, end = position[0], position[1]
    except (StopIteration, AttributeError, ValueError):
        pass
    if start is None or end is None or end - start > 50:
        return default
    lines = [linecache.getline(code.co_filename, n, frame.f_globals) for n in range(start, end + 1)]
    text = "".join(lines).strip()
    return text or default


def _label(value: Any) -> str:
    """A table label as a JSON key (tuples joined with commas)."""
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


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


def _margin_label(labels: pd.Index, name: str) -> Any:
    if isinstance(labels, pd.MultiIndex):
        return (name,) + ("",) * (labels.nlevels - 1)
    return name


def _append_label(labels: pd.Index, name: str) -> pd.Index:
    label = _margin_label(labels, name)
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


class Session:
    """A safe-analysis session: every call records an output, with its verdict, in
    ``<outputs_dir>/<name>/``.

    ``outputs_dir`` defaults to ``$HAVRE_OUTPUTS_DIR`` or ``./outputs``; ``params`` (an
    :class:`~havre.sdc.SDCParams` or a mapping of parameters, ACRO's names accepted) to the
    file named by ``$HAVRE_SDC_PARAMS``, else ACRO's defaults; ``project`` to
    ``$HAVRE_PROJECT``. ``name`` (the session folder's name) defaults to
    ``<user>-<date>-<time>``, made unique. An existing session folder is refused unless
    ``resume=True``, which reads its ``results.json`` and carries on numbering, or
    ``replace=True``, which removes the outputs it lists (and its results, config and
    checksum files; nothing else) and starts again at ``output_0``: what a notebook run from
    the top wants, e.g. in a trusted re-execution, which then writes the same paths. ``show``
    displays the verdict of models and plots in the notebook (tables show theirs).
    ``durable`` flushes each output file and ``results.json`` to disk before it replaces the
    old one (every write is atomic either way).
    """

    def __init__(
        self,
        outputs_dir: str | os.PathLike[str] | None = None,
        params: SDCParams | Mapping[str, Any] | None = None,
        project: str | None = None,
        *,
        name: str | None = None,
        resume: bool = False,
        replace: bool = False,
        show: bool = True,
        durable: bool = True,
    ) -> None:
        if outputs_dir is None:
            outputs_dir = os.environ.get(ENV_OUTPUTS_DIR) or "outputs"
        self.outputs_dir = Path(outputs_dir).absolute()
        if params is None:
            params = _params_from_env()
        elif isinstance(params, Mapping):
            params = SDCParams.from_mapping(params)
        elif not isinstance(params, SDCParams):
            raise TypeError("params must be an SDCParams or a mapping of parameters")
        self.params: SDCParams = _forced_params(params)
        self.project = project if project is not None else os.environ.get(ENV_PROJECT)
        self.user = _user()
        self.show = show
        self._lock = threading.RLock()
        self._outputs: dict[str, Output] = {}
        self._fragments: dict[str, str] = {}
        self._next = 0
        if name is None:
            self.folder = self._fresh_folder(durable)
        else:
            validate_name(name, "session name")
            self.folder = SessionFolder(self.outputs_dir, name, durable=durable)
            if resume and replace:
                raise ValueError("resume and replace: choose one")
            if self.folder.exists():
                owner = os.lstat(self.folder.path).st_uid
                if owner != os.getuid() and (replace or resume):
                    # each member's server runs as a uid of its own (havre/enclave/identities.py):
                    # a colleague's session folder can be read, never changed
                    raise PermissionError(
                        f"session folder {self.folder.path} was made by another member of the "
                        f"project (uid {owner}): you can't change it; give your session another "
                        f"name, for example {name}-{_safe_piece(self.user)}"
                    )
                if replace:
                    self._clear()
                elif resume:
                    self._load()
                else:
                    raise FileExistsError(
                        f"session folder {self.folder.path} already exists: choose another "
                        "name, pass resume=True to carry on with it, or replace=True to start "
                        "it again"
                    )

    # ------------------------------------------------------------------------------------
    # Session state
    # ------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The session's name (its folder's name)."""
        return self.folder.name

    @property
    def path(self) -> Path:
        """The session's folder."""
        return self.folder.path

    @property
    def outputs(self) -> dict[str, Output]:
        """The recorded outputs by id (a copy of the mapping)."""
        with self._lock:
            return dict(self._outputs)

    def output(self, output_id: str) -> Output:
        """The output called ``output_id`` (``KeyError`` naming the known ones otherwise)."""
        with self._lock:
            try:
                return self._outputs[output_id]
            except KeyError:
                known = ", ".join(self._outputs) or "none yet"
                raise KeyError(
                    f"no output {output_id!r} in this session (known: {known})"
                ) from None

    def _fresh_folder(self, durable: bool) -> SessionFolder:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{_safe_piece(self.user)}-{stamp}"
        for i in range(1, 10_000):
            name = base if i == 1 else f"{base}-{i}"
            folder = SessionFolder(self.outputs_dir, name, durable=durable)
            if not folder.exists():
                return folder
        raise FileExistsError(f"no free session name like {base} in {self.outputs_dir}")

    def _load(self) -> None:
        path = self.folder.path / RESULTS_FILE
        if not path.exists():
            return
        try:
            with open(path, encoding="utf-8") as handle:
                document = json.load(handle)
            records = dict(document.get("results") or {})
            loaded = {uid: Output.from_json(record) for uid, record in records.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"can't read {path} ({exc}): choose another session name, or move that folder"
            ) from None
        for uid, output in loaded.items():
            validate_name(uid, "output name")
            self._outputs[uid] = output
            if uid.startswith("output_") and uid[7:].isdigit():
                self._next = max(self._next, int(uid[7:]) + 1)

    def _clear(self) -> None:
        """Remove what an earlier run of this session wrote (``replace=True``)."""
        self.folder.ensure()
        self._load()
        for output in self._outputs.values():
            for name in output.file_names:
                self.folder.remove(name)
        for name in (RESULTS_FILE, CONFIG_FILE):
            self.folder.remove(name)
        self.folder.prune_checksums(())
        self._outputs.clear()
        self._fragments.clear()
        self._next = 0

    def _session_block(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "user": self.user,
            "params": self.params.as_dict(),
            "acro_params": self.params.as_acro_dict(),
            "relaxed": self.params.weaker_than(SDCParams()),
        }

    def _tool_block(self) -> dict[str, Any]:
        return {
            "@type": "SoftwareApplication",
            "name": "Havre safe-analysis library (havre.safe)",
            "version": library_version(),
            "format": FORMAT,
        }

    def _fragment(self, output: Output) -> str:
        text = self._fragments.get(output.uid)
        if text is None:
            # One line per output: the C JSON encoder (json's indenting encoder is pure
            # Python and ten times slower on a table's per-cell outcome).
            text = json.dumps(output.as_json(), ensure_ascii=False, default=json_default)
            self._fragments[output.uid] = text
        return text

    def _results_bytes(self) -> bytes:
        """``results.json``: ACRO's layout, one line per output (each made once, cached)."""
        head = {
            "version": library_version(),
            "tool": self._tool_block(),
            "session": self._session_block(),
        }
        parts = ["{"]
        for key, value in head.items():
            body = json.dumps(value, indent=4, ensure_ascii=False).replace("\n", "\n    ")
            parts.append(f"    {json.dumps(key)}: {body},")
        entries = [
            f"        {json.dumps(uid, ensure_ascii=False)}: {self._fragment(output)}"
            for uid, output in self._outputs.items()
        ]
        if entries:
            parts.append('    "results": {\n' + ",\n".join(entries) + "\n    }")
        else:
            parts.append('    "results": {}')
        parts.append("}")
        return "\n".join(parts).encode("utf-8")

    def _write_results(self) -> None:
        self.folder.write(RESULTS_FILE, self._results_bytes())

    def _write_config(self) -> None:
        config = dict(self.params.as_acro_dict())
        config["havre"] = self.params.as_dict()
        config["suppress"] = False
        data = json.dumps(config, indent=4).encode("utf-8")
        self.folder.write(CONFIG_FILE, data)

    def _touch(self, output: Output) -> None:
        """``output`` changed: rewrite its JSON and the results file."""
        self._fragments.pop(output.uid, None)
        self._write_results()

    def _show(self, output: Output) -> None:
        if not self.show or "IPython" not in sys.modules:
            return
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is not None:
            display(output)

    # ------------------------------------------------------------------------------------
    # Recording
    # ------------------------------------------------------------------------------------

    def _next_uid(self) -> str:
        while True:
            uid = f"output_{self._next}"
            self._next += 1
            if uid not in self._outputs:
                return uid

    def _record(
        self,
        *,
        output_type: str,
        properties: dict[str, Any],
        files: Sequence[tuple[str, bytes, dict[str, Any]]],
        command: str,
        status: str,
        summary: str,
        outcome: dict[str, Any] | None = None,
        fair: dict[str, Any] | None = None,
        havre: dict[str, Any] | None = None,
        comments: Sequence[str] = (),
        check: OutputCheck | None = None,
    ) -> Output:
        """Write the output's files, record it, rewrite ``results.json``."""
        with self._lock:
            first = not self.folder.exists() or not (self.folder.path / CONFIG_FILE).exists()
            numbered = self._next
            uid = self._next_uid()
            written: list[str] = []
            entries = []
            try:
                if first:
                    self._write_config()
                for ext, data, sdc in files:
                    file_name = f"{uid}.{ext}"
                    digest = self.folder.write(file_name, data)
                    written.append(file_name)
                    entries.append({"name": file_name, "sdc": sdc, "sha256": digest})
                output = Output(
                    uid=uid,
                    status=status,
                    output_type=output_type,
                    properties=properties,
                    files=entries,
                    outcome=outcome or {},
                    command=command,
                    summary=summary,
                    timestamp=_now(),
                    comments=list(comments),
                    exception="",
                    fair=fair or {},
                    havre=havre or {},
                    check=check,
                )
                self._outputs[uid] = output
                self._write_results()
            except BaseException:
                self._next = numbered
                self._outputs.pop(uid, None)
                self._fragments.pop(uid, None)
                for file_name in written:
                    self.folder.remove(file_name)
                raise
            return output

    def _havre_block(self, check: OutputCheck, extra: Mapping[str, Any] | None = None) -> dict:
        reasons, total = _reasons(check, MAX_REASONS_RECORDED)
        block = {
            "verdict": check.verdict.label,
            "kind": check.kind,
            "statistic": check.statistic,
            "summary": check.summary,
            "rule_counts": check.rule_counts,
            "findings": [f.as_dict() for f in check.findings],
            "reasons": reasons,
            "reasons_total": total,
            "params": check.params.as_dict(),
            "relaxed": check.params.weaker_than(SDCParams()),
        }
        if extra:
            block.update(extra)
        return block

    # ------------------------------------------------------------------------------------
    # Tables
    # ------------------------------------------------------------------------------------

    def crosstab(
        self,
        index: Any,
        columns: Any = None,
        values: Any = None,
        aggfunc: Any = None,
        margins: bool = False,
        suppress: bool = False,
        round_base: int | bool | None = None,
        **pandas_kwargs: Any,
    ) -> SafeTable:
        """:func:`pandas.crosstab`, checked and recorded.

        Counts by default; with ``values`` and ``aggfunc`` (count, sum, mean, median, std,
        min, max) a table of that statistic. ``margins`` adds totals (checked like cells).
        ``suppress=True`` returns (and records) the table with failing cells blanked,
        secondary suppression so none can be worked out from totals, and no margins once a
        cell is blank (margins are kept when nothing is blanked). ``round_base`` (a number,
        or True for the session's ``round_base``) rounds the published numbers; the verdict
        is of the unrounded table.

        Also accepted: ``rownames``, ``colnames``, ``margins_name`` (default ``"All"``),
        ``dropna`` (ignored: every cell is shown and checked, as ACRO does), ``observed``
        (categorical columns: only observed categories), ``contributor`` (an id per record,
        e.g. a patient id: contributors are distinct ids).
        """
        command = _caller_command("crosstab(...)")
        options = _table_options(pandas_kwargs, "crosstab")
        rows = _as_series_list(index, "row")
        cols = _as_series_list(columns, "col")
        if not rows:
            raise ValueError("index: give at least one grouping variable")
        if options["rownames"] is not None:
            rows = [
                s.rename(n) for s, n in zip(rows, _names(options["rownames"], rows), strict=True)
            ]
        if options["colnames"] is not None:
            cols = [
                s.rename(n) for s, n in zip(cols, _names(options["colnames"], cols), strict=True)
            ]
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
        return self._table(spec, command)

    def pivot_table(
        self,
        data: pd.DataFrame,
        index: str | Sequence[str] | None = None,
        columns: str | Sequence[str] | None = None,
        values: str | None = None,
        aggfunc: Any = "mean",
        margins: bool = False,
        suppress: bool = False,
        round_base: int | bool | None = None,
        **pandas_kwargs: Any,
    ) -> SafeTable:
        """:func:`pandas.pivot_table` of one ``values`` column, checked and recorded.

        ``aggfunc`` is one of count, sum, mean, median, std, min, max (default mean). Other
        arguments as for :meth:`crosstab`; ``contributor`` names an id column of ``data``.
        """
        command = _caller_command("pivot_table(...)")
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
        return self._table(spec, command)

    def _table(self, spec: _TableSpec, command: str) -> SafeTable:
        check = _check_table(spec, spec.row_keys, spec.col_keys or None, self.params)
        inner = check
        if spec.margins and not spec.suppress:
            check = _with_margins(spec, check, self.params)
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
            base = self.params.round_base if spec.round_base is True else spec.round_base
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
            "index": [_label(n) for n in spec.row_names],
            "columns": [_label(n) for n in spec.col_names],
            "values": None if spec.values_name is None else _label(spec.values_name),
            "margins": bool(spec.margins),
            "shape": list(table.shape),
        }
        if mitigation.endswith("round"):
            properties["round_base"] = (
                self.params.round_base if spec.round_base is True else spec.round_base
            )
        csv = table.to_csv().encode("utf-8")
        sdc = (inner if spec.suppress else check).to_acro_sdc(
            suppressed=spec.suppress, max_positions=MAX_CELLS_RECORDED
        )
        outcome, recorded = _outcome(inner if spec.suppress else check, table, secondary)
        fair = {
            "dependent": "unknown" if spec.values_name is None else _label(spec.values_name),
            "independent": [_label(n) for n in spec.row_names + spec.col_names],
        }
        output = self._record(
            output_type="table",
            properties=properties,
            files=[("csv", csv, sdc)],
            command=command,
            status=status,
            summary=summary,
            outcome=outcome,
            fair=fair,
            havre=self._havre_block(check, {"recorded": recorded}),
            comments=comments,
            check=check,
        )
        return SafeTable.wrap(table, output)

    def describe(self, data: pd.DataFrame | pd.Series) -> SafeTable:
        """:meth:`pandas.DataFrame.describe` of the numeric columns, checked and recorded.

        Rows: count (threshold), mean (threshold, dominance, p-ratio, negatives), std
        (degrees of freedom), min and max (always to review: one person's value), 25%, 50%,
        75% (threshold, like a median). A Series gives a one-column table.
        """
        command = _caller_command("describe(...)")
        frame = data.to_frame() if isinstance(data, pd.Series) else data
        if not isinstance(frame, pd.DataFrame):
            raise TypeError("describe: give a pandas DataFrame or Series")
        numeric = frame.select_dtypes(include="number").select_dtypes(exclude="bool")
        if numeric.shape[1] == 0:
            raise ValueError("describe: no numeric columns to describe")
        table = numeric.describe().reindex(list(_DESCRIBE_RULES))
        key = pd.Categorical.from_codes(np.zeros(len(numeric), dtype=np.int8), categories=[0])
        one = pd.DataFrame({"__all": key}, index=numeric.index)
        masks, stats = [], []
        cache: dict[tuple[int, str], OutputCheck] = {}
        for i, column in enumerate(numeric.columns):
            frame_i = one.assign(__v=numeric[column].to_numpy())
            for statistic in set(_DESCRIBE_RULES.values()):
                cache[(i, statistic)] = check_magnitude_table(
                    frame_i, "__all", None, "__v", statistic, params=self.params
                )
        for row in _DESCRIBE_RULES.values():
            for i in range(numeric.shape[1]):
                sub = cache[(i, row)].cells
                masks.append(sub.mask)
                stats.append(sub.stats.reset_index(drop=True))
        labels = cell_labels(table.index.rename("statistic"), table.columns.rename("variable"))
        all_stats = pd.concat(stats, ignore_index=True)
        all_stats.index = labels
        cells = CellReasons(labels, np.concatenate(masks), all_stats, self.params, None)
        check = OutputCheck(
            kind="describe",
            statistic=None,
            params=self.params,
            table=table,
            cells=cells,
            properties={"method": "describe"},
        )
        properties = {
            "method": "describe",
            "mitigation": "none",
            "columns": [_label(c) for c in numeric.columns],
            "shape": list(table.shape),
        }
        sdc = check.to_acro_sdc(max_positions=MAX_CELLS_RECORDED)
        outcome, recorded = _outcome(check, table, None)
        output = self._record(
            output_type="table",
            properties=properties,
            files=[("csv", table.to_csv().encode("utf-8"), sdc)],
            command=command,
            status=check.verdict.label,
            summary=check.summary,
            outcome=outcome,
            fair={"dependent": "unknown", "independent": [_label(c) for c in numeric.columns]},
            havre=self._havre_block(
                check, {"rules_per_row": dict(_DESCRIBE_RULES), "recorded": recorded}
            ),
            check=check,
        )
        return SafeTable.wrap(table, output)

    # ------------------------------------------------------------------------------------
    # Histograms
    # ------------------------------------------------------------------------------------

    def histogram(
        self,
        values: Any,
        bins: int | Sequence[float] = 10,
        range: tuple[float, float] | None = None,
    ) -> SafeTable:
        """The counts of a histogram of ``values`` (bins as :func:`numpy.histogram`), checked
        and recorded as a table of bins: each bin must reach the threshold, empty bins are
        zero cells, and the output goes to review (its outer bins show the data's range)."""
        command = _caller_command("histogram(...)")
        check, table, properties = self._histogram_check(values, bins, range)
        output = self._record_histogram(check, table, properties, command, png=None)
        return SafeTable.wrap(table, output)

    def hist(
        self,
        values: Any,
        bins: int | Sequence[float] = 10,
        range: tuple[float, float] | None = None,
        ax: Any = None,
        **plot_kwargs: Any,
    ) -> Any:
        """Plot a histogram (matplotlib), checked and recorded: the PNG and the bin counts
        (CSV) are written. The plot shows exactly the checked bins. Returns the Axes."""
        command = _caller_command("hist(...)")
        check, table, properties = self._histogram_check(values, bins, range)
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        edges = np.asarray(properties["edges"], dtype=float)
        counts = table["count"].to_numpy()
        ax.stairs(counts, edges, fill=True, **plot_kwargs)
        name = getattr(values, "name", None)
        if name is not None:
            ax.set_xlabel(str(name))
        ax.set_ylabel("count")
        buffer = BytesIO()
        # no "Software" tag: matplotlib writes its own, which the egress service flags as
        # metadata to check in every PNG (issue #20)
        ax.figure.savefig(buffer, format="png", metadata={"Software": None})
        output = self._record_histogram(check, table, properties, command, png=buffer.getvalue())
        self._show(output)
        return ax

    def _histogram_check(
        self, values: Any, bins: Any, range: Any
    ) -> tuple[OutputCheck, pd.DataFrame, dict[str, Any]]:
        check = check_histogram(values, bins, params=self.params, range=range)
        table = check.table.copy()
        edges = [float(i.left) for i in table.index[:1]] + [float(i.right) for i in table.index]
        name = getattr(values, "name", None)
        properties = {
            "method": "histogram",
            "mitigation": "none",
            "variable": None if name is None else _label(name),
            "bins": len(table),
            "edges": edges,
        }
        return check, table, properties

    def _record_histogram(
        self,
        check: OutputCheck,
        table: pd.DataFrame,
        properties: dict[str, Any],
        command: str,
        png: bytes | None,
    ) -> Output:
        sdc = check.to_acro_sdc(max_positions=MAX_CELLS_RECORDED)
        outcome, recorded = _outcome(check, table, None)
        files = [("csv", table.to_csv().encode("utf-8"), sdc)]
        if png is not None:
            files.insert(0, ("png", png, sdc))
        return self._record(
            output_type="histogram",
            properties=properties,
            files=files,
            command=command,
            status=check.verdict.label,
            summary=check.summary,
            outcome=outcome,
            fair={"dependent": "unknown", "independent": [properties.get("variable")]},
            havre=self._havre_block(check, {"recorded": recorded}),
            check=check,
        )

    # ------------------------------------------------------------------------------------
    # Models
    # ------------------------------------------------------------------------------------

    def ols(self, formula_or_y: Any, data: Any = None, **kwargs: Any) -> Any:
        """Ordinary least squares (statsmodels), checked (residual degrees of freedom) and
        recorded. ``ols("y ~ x + C(g)", df)`` or ``ols(y, X)`` (no constant is added, as in
        statsmodels). ``fit_kwargs`` go to ``fit()``; other keywords to the model.
        Returns the fitted results."""
        return self._model("ols", formula_or_y, data, kwargs, _caller_command("ols(...)"))

    def logit(self, formula_or_y: Any, data: Any = None, **kwargs: Any) -> Any:
        """Logistic regression (statsmodels), checked and recorded; as :meth:`ols`."""
        return self._model("logit", formula_or_y, data, kwargs, _caller_command("logit(...)"))

    def probit(self, formula_or_y: Any, data: Any = None, **kwargs: Any) -> Any:
        """Probit regression (statsmodels), checked and recorded; as :meth:`ols`."""
        return self._model("probit", formula_or_y, data, kwargs, _caller_command("probit(...)"))

    def _model(
        self, method: str, formula_or_y: Any, data: Any, kwargs: dict[str, Any], command: str
    ) -> Any:
        import statsmodels.api as sm
        import statsmodels.formula.api as smf

        fit_kwargs = dict(kwargs.pop("fit_kwargs", None) or {})
        if method != "ols":
            fit_kwargs.setdefault("disp", 0)
        formula = None
        if isinstance(formula_or_y, str):
            formula = formula_or_y
            model = getattr(smf, method)(formula, data=data, **kwargs)
        else:
            model = getattr(sm, _MODEL_CLASSES[method])(formula_or_y, data, **kwargs)
        results = model.fit(**fit_kwargs)
        check = check_regression(results, params=self.params)
        dof = check.properties.get("dof")
        properties = {
            "method": method,
            "mitigation": "none",
            "dof": int(dof) if dof is not None and float(dof).is_integer() else dof,
            "nobs": float(results.nobs),
            "formula": formula,
        }
        text = _reproducible(str(results.summary())).encode("utf-8")
        coefficients = _coefficients(results).to_csv().encode("utf-8")
        names = list(getattr(model, "exog_names", None) or [])
        fair = {
            "dependent": _label(getattr(model, "endog_names", "unknown")),
            "independent": [n for n in names if n not in ("const", "Intercept")],
        }
        output = self._record(
            output_type="regression",
            properties=properties,
            files=[("txt", text, {}), ("csv", coefficients, {})],
            command=command,
            status=check.verdict.label,
            summary=check.summary,
            fair=fair,
            havre=self._havre_block(check),
            check=check,
        )
        try:
            results.safe_output = output
        except Exception:  # a results class that refuses new attributes
            pass
        self._show(output)
        return results

    # ------------------------------------------------------------------------------------
    # Other outputs and housekeeping
    # ------------------------------------------------------------------------------------

    def custom_output(self, path: str | os.PathLike[str], comment: str | None = None) -> Output:
        """Add a file the library did not make (a figure, a document): copied into the
        session folder, always to review (no rule can check it)."""
        command = _caller_command("custom_output(...)")
        source = Path(path)
        suffix = source.suffix.lstrip(".").lower() or "bin"
        validate_name(f"x.{suffix}", "file extension")
        with open(source, "rb") as handle:
            data = handle.read()
        finding = "a file the library did not make: no rule can check it; a checker must review"
        return self._record(
            output_type="custom",
            properties={"method": "custom", "mitigation": "none", "source": source.name},
            files=[(suffix, data, {})],
            command=command,
            status="review",
            summary=f"review: {finding}",
            havre={"verdict": "review", "reasons": [finding], "reasons_total": 1},
            comments=[comment] if comment else [],
        )

    def request_exception(self, output_id: str, reason: str) -> Output:
        """Ask the checkers for an exception for an output that fails or needs review:
        ``reason`` explains why it is safe to release (ACRO's ``exception`` field)."""
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("reason: explain in words why the output is safe to release")
        with self._lock:
            output = self.output(output_id)
            if output.status == "pass":
                raise ValueError(f"{output_id} passes the automatic checks: no exception is needed")
            output.exception = reason.strip()
            self._touch(output)
            return output

    def add_comments(self, output_id: str, comment: str) -> Output:
        """Add a comment for the checkers to an output."""
        if not isinstance(comment, str) or not comment.strip():
            raise ValueError("comment: give some text")
        with self._lock:
            output = self.output(output_id)
            output.comments.append(comment.strip())
            self._touch(output)
            return output

    def remove_output(self, output_id: str) -> None:
        """Remove an output: its files, checksums and record."""
        with self._lock:
            output = self.output(output_id)
            for name in output.file_names:
                self.folder.remove(name)
            del self._outputs[output_id]
            self._fragments.pop(output_id, None)
            self._write_results()

    def rename_output(self, old: str, new: str) -> Output:
        """Rename an output (its id and its files: ``<new>.<ext>``)."""
        validate_name(new, "output name")
        with self._lock:
            output = self.output(old)
            if new in self._outputs:
                raise ValueError(f"an output called {new!r} already exists")
            renames = []
            for entry in output.files:
                ext = entry["name"].rsplit(".", 1)[-1]
                renames.append((entry, f"{new}.{ext}"))
            for _, target in renames:
                validate_name(target, "file name")
            for entry, target in renames:
                self.folder.rename(entry["name"], target)
                entry["name"] = target
            del self._outputs[old]
            self._fragments.pop(old, None)
            output.uid = new
            self._outputs[new] = output
            self._write_results()
            return output

    def results(self) -> pd.DataFrame:
        """A summary of the recorded outputs: one row per output."""
        with self._lock:
            rows = [
                {
                    "output": o.uid,
                    "status": o.status,
                    "type": o.output_type,
                    "method": o.properties.get("method", ""),
                    "summary": o.summary,
                    "exception": o.exception,
                    "files": ", ".join(o.file_names),
                    "command": o.command,
                    "timestamp": o.timestamp,
                }
                for o in self._outputs.values()
            ]
        columns = [
            "status",
            "type",
            "method",
            "summary",
            "exception",
            "files",
            "command",
            "timestamp",
        ]
        if not rows:
            return pd.DataFrame(columns=columns, index=pd.Index([], name="output"))
        return pd.DataFrame(rows).set_index("output")[columns]

    def finalise(self) -> Path:
        """Write ``results.json``, ``config.json`` and every checksum again (idempotent);
        return the session folder.

        Checksums are those of the files as the library wrote them: a file changed since
        (edited by hand) keeps its original checksum, so the egress service sees the change,
        and a warning names it here.
        """
        with self._lock:
            self.folder.ensure()
            self._write_config()
            changed = []
            keep = [RESULTS_FILE, CONFIG_FILE]
            for output in self._outputs.values():
                for entry in output.files:
                    name = entry["name"]
                    keep.append(name)
                    try:
                        on_disk = sha256_hex(self.folder.read(name))
                    except FileNotFoundError:
                        changed.append(f"{name} (missing)")
                        continue
                    expected = entry.get("sha256") or on_disk
                    if on_disk != expected:
                        changed.append(name)
                    self.folder.write_checksum(name, expected)
            self._write_results()
            self.folder.prune_checksums(keep)
            if changed:
                warnings.warn(
                    "files changed since the library wrote them (their checksums no longer "
                    f"match; the egress service will see it): {', '.join(changed)}",
                    stacklevel=2,
                )
            return self.folder.path

    def _repr_html_(self) -> str:
        with self._lock:
            outputs = list(self._outputs.values())
        head = (
            f"<div style='font-family:sans-serif;font-size:12px'><b>safe-analysis session</b> "
            f"<code>{escape(self.name)}</code> ({len(outputs)} outputs) in "
            f"<code>{escape(self.path)}</code></div>"
        )
        return head + "".join(verdict_badge_html(o) for o in outputs)

    def __repr__(self) -> str:
        return f"Session(name={self.name!r}, path={str(self.path)!r}, outputs={len(self._outputs)})"


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


class _TableSpec:
    """What a table call asked for (internal)."""

    def __init__(self, **kwargs: Any) -> None:
        self.method: str = kwargs["method"]
        self.frame: pd.DataFrame = kwargs["frame"]
        self.row_keys: list[str] = kwargs["row_keys"]
        self.col_keys: list[str] = kwargs["col_keys"]
        self.row_names: list[Any] = kwargs["row_names"]
        self.col_names: list[Any] = kwargs["col_names"]
        self.values_key: str | None = kwargs["values_key"]
        self.values_name: Any = kwargs["values_name"]
        self.statistic: str | None = kwargs["statistic"]
        self.contributor: str | None = kwargs["contributor"]
        self.observed: bool = kwargs["observed"]
        self.margins: bool = bool(kwargs["margins"])
        self.margins_name: str = kwargs["margins_name"]
        self.suppress: bool = bool(kwargs["suppress"])
        self.round_base: int | bool | None = kwargs["round_base"]
        if self.round_base is not None and not isinstance(self.round_base, bool):
            if not isinstance(self.round_base, int | np.integer) or self.round_base < 1:
                raise ValueError("round_base: a whole number of at least 1, or True")


_TABLE_OPTIONS = {
    "rownames": None,
    "colnames": None,
    "margins_name": "All",
    "dropna": True,
    "observed": False,
    "contributor": None,
}


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
        out_index = _append_label(table.index, name)
        out_columns = _append_label(table.columns, name)
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
        out_index = _append_label(table.index, name)
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


def _outcome(
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


def _reasons(check: OutputCheck, limit: int) -> tuple[list[str], int]:
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


_CLOCK_LINE = re.compile(r"^(Date:|Time:)(\s+)(\S(?:.*?\S)?)(?=\s{2,}|\s*$)", re.MULTILINE)


def _reproducible(summary: str) -> str:
    """A statsmodels summary without the date and time it was printed (so the same model on
    the same data gives the same bytes, e.g. in a trusted re-execution); layout kept."""

    def blank(match: re.Match[str]) -> str:
        width = len(match.group(2)) + len(match.group(3))
        return match.group(1) + "-".rjust(width)

    return _CLOCK_LINE.sub(blank, summary)


def _coefficients(results: Any) -> pd.DataFrame:
    """A fitted model's coefficient table (estimate, standard error, statistic, p, CI)."""
    params = pd.Series(np.asarray(results.params), index=_param_names(results))
    frame = pd.DataFrame({"coef": params})
    for name, attr in (("std err", "bse"), ("statistic", "tvalues"), ("p-value", "pvalues")):
        value = getattr(results, attr, None)
        if value is not None:
            frame[name] = np.asarray(value)
    try:
        ci = np.asarray(results.conf_int())
        frame["[0.025"], frame["0.975]"] = ci[:, 0], ci[:, 1]
    except Exception:
        pass
    frame.index.name = "variable"
    return frame


def _param_names(results: Any) -> list[str]:
    params = results.params
    if isinstance(params, pd.Series):
        return [str(x) for x in params.index]
    names = getattr(results.model, "exog_names", None)
    return list(names) if names else [f"x{i}" for i in builtins.range(len(params))]
