"""A safe-analysis session: every call records an output, with its verdict, in one folder.

Each call computes what the researcher asked for and checks it with Havre's SDC rules engine
(:mod:`havre.sdc`, the same code the egress service runs): tables in :mod:`.tables`, histograms
in :mod:`.histograms`, regressions in :mod:`.models`, each giving back a
:class:`~havre.safe.records.Draft`. The session numbers the draft, writes its files into the
session's folder (:class:`~havre.safe.outputs.SessionFolder`) and records it in
``results.json`` (ACRO's format). See ``docs/researcher-safe-analysis.md`` for the researcher's
guide.

The session's parameters come from the notebook (``params=``) or from the project
(``$HAVRE_SDC_PARAMS``); in a trusted re-execution the project's are a floor a notebook can't
go below. A member can read a colleague's session folder, never change it.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import getpass
import itertools
import json
import linecache
import os
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd

from havre.sdc import SDCParams

from . import histograms, models, tables
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
from .records import Draft

__all__ = ["Session", "library_version"]

#: Environment variables the session reads.
ENV_OUTPUTS_DIR = "HAVRE_OUTPUTS_DIR"
ENV_PROJECT = "HAVRE_PROJECT"
ENV_PARAMS = "HAVRE_SDC_PARAMS"
#: Set to ``1`` by the trusted re-execution runner: ``$HAVRE_SDC_PARAMS`` is then a floor
#: that a notebook's own ``params=`` can't go below (see ``_forced_params``).
ENV_TRUSTED_RUN = "HAVRE_TRUSTED_REEXECUTION"


@functools.cache
def library_version() -> str:
    """Havre's version (from the installed package metadata)."""
    try:
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

    def _record(self, draft: Draft, command: str) -> Output:
        """Write the draft's files, record it as the next output, rewrite ``results.json``."""
        with self._lock:
            first = not self.folder.exists() or not (self.folder.path / CONFIG_FILE).exists()
            numbered = self._next
            uid = self._next_uid()
            written: list[str] = []
            entries = []
            try:
                if first:
                    self._write_config()
                for ext, data, sdc in draft.files:
                    file_name = f"{uid}.{ext}"
                    digest = self.folder.write(file_name, data)
                    written.append(file_name)
                    entries.append({"name": file_name, "sdc": sdc, "sha256": digest})
                output = Output(
                    uid=uid,
                    status=draft.status,
                    output_type=draft.output_type,
                    properties=draft.properties,
                    files=entries,
                    outcome=draft.outcome or {},
                    command=command,
                    summary=draft.summary,
                    timestamp=_now(),
                    comments=list(draft.comments),
                    exception="",
                    fair=draft.fair or {},
                    havre=draft.havre or {},
                    check=draft.check,
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
        table, draft = tables.crosstab(
            self.params,
            index,
            columns,
            values,
            aggfunc,
            margins,
            suppress,
            round_base,
            pandas_kwargs,
        )
        return SafeTable.wrap(table, self._record(draft, command))

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
        table, draft = tables.pivot_table(
            self.params,
            data,
            index,
            columns,
            values,
            aggfunc,
            margins,
            suppress,
            round_base,
            pandas_kwargs,
        )
        return SafeTable.wrap(table, self._record(draft, command))

    def describe(self, data: pd.DataFrame | pd.Series) -> SafeTable:
        """:meth:`pandas.DataFrame.describe` of the numeric columns, checked and recorded.

        Rows: count (threshold), mean (threshold, dominance, p-ratio, negatives), std
        (degrees of freedom), min and max (always to review: one person's value), 25%, 50%,
        75% (threshold, like a median). A Series gives a one-column table.
        """
        command = _caller_command("describe(...)")
        table, draft = tables.describe(self.params, data)
        return SafeTable.wrap(table, self._record(draft, command))

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
        histogram = histograms.check(self.params, values, bins, range)
        output = self._record(histograms.draft(histogram, png=None), command)
        return SafeTable.wrap(histogram.table, output)

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
        histogram = histograms.check(self.params, values, bins, range)
        ax, png = histograms.plot(histogram, values, ax, plot_kwargs)
        output = self._record(histograms.draft(histogram, png=png), command)
        self._show(output)
        return ax

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
        results, draft = models.fit(self.params, method, formula_or_y, data, kwargs)
        output = self._record(draft, command)
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
        draft = Draft(
            output_type="custom",
            properties={"method": "custom", "mitigation": "none", "source": source.name},
            files=[(suffix, data, {})],
            status="review",
            summary=f"review: {finding}",
            havre={"verdict": "review", "reasons": [finding], "reasons_total": 1},
            comments=[comment] if comment else [],
        )
        return self._record(draft, command)

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
