"""Havre's safe-analysis library: pandas and statsmodels calls that check their own outputs.

In a notebook inside the enclave::

    import havre.safe as safe

    table = safe.crosstab(df["region"], df["age_band"])           # a DataFrame, with its verdict
    means = safe.crosstab(df["region"], df["age_band"], values=df["cost"], aggfunc="mean")
    model = safe.ols("cost ~ age + C(region)", df)                  # statsmodels results
    safe.request_exception("output_1", "cells below 10 are structural zeros ...")
    safe.finalise()                                                 # results.json + checksums

Every call computes what pandas or statsmodels would, checks it with the SDC rules engine
(:mod:`havre.sdc`, the same code the egress service runs), writes the output into
``outputs/<session>/output_<n>.<ext>`` and records it, with its verdict (pass, review or fail)
and the reasons, in ``outputs/<session>/results.json`` (ACRO's format). Tables come back as
DataFrames that show their verdict in the notebook.

The module-level functions use a default :class:`Session`, made on first use
(:func:`get_session`); :func:`new_session` starts another (e.g. with other parameters or
another folder). The egress service re-checks what it can on the server: the verdict shown
here informs, checkers decide. Guide: ``docs/researcher-safe-analysis.md``.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from havre.sdc import SDCParams

from .display import SafeTable, verdict_badge_html
from .outputs import Output, OutputNameError, validate_name
from .session import Session, library_version

__all__ = [
    "Output",
    "OutputNameError",
    "SDCParams",
    "SafeTable",
    "Session",
    "add_comments",
    "crosstab",
    "custom_output",
    "describe",
    "finalise",
    "get_session",
    "hist",
    "histogram",
    "library_version",
    "logit",
    "new_session",
    "ols",
    "output",
    "pivot_table",
    "probit",
    "remove_output",
    "rename_output",
    "request_exception",
    "results",
    "set_session",
    "validate_name",
    "verdict_badge_html",
]

_lock = threading.Lock()
_default: Session | None = None


def get_session() -> Session:
    """The default session (made on first use, with the default folder and parameters)."""
    global _default
    with _lock:
        if _default is None:
            _default = Session()
        return _default


def new_session(*args: Any, **kwargs: Any) -> Session:
    """Start a new default session (arguments as :class:`Session`) and return it."""
    session = Session(*args, **kwargs)
    set_session(session)
    return session


def set_session(session: Session) -> None:
    """Make ``session`` the default one."""
    global _default
    if not isinstance(session, Session):
        raise TypeError("set_session: give a Session")
    with _lock:
        _default = session


def crosstab(
    index: Any,
    columns: Any = None,
    values: Any = None,
    aggfunc: Any = None,
    margins: bool = False,
    suppress: bool = False,
    round_base: int | bool | None = None,
    **pandas_kwargs: Any,
) -> SafeTable:
    """:func:`pandas.crosstab`, checked and recorded (see :meth:`Session.crosstab`)."""
    return get_session().crosstab(
        index, columns, values, aggfunc, margins, suppress, round_base, **pandas_kwargs
    )


def pivot_table(
    data: pd.DataFrame,
    index: Any = None,
    columns: Any = None,
    values: Any = None,
    aggfunc: Any = "mean",
    margins: bool = False,
    suppress: bool = False,
    round_base: int | bool | None = None,
    **pandas_kwargs: Any,
) -> SafeTable:
    """:func:`pandas.pivot_table`, checked and recorded (see :meth:`Session.pivot_table`)."""
    return get_session().pivot_table(
        data, index, columns, values, aggfunc, margins, suppress, round_base, **pandas_kwargs
    )


def describe(data: pd.DataFrame | pd.Series) -> SafeTable:
    """``data.describe()``, checked and recorded (see :meth:`Session.describe`)."""
    return get_session().describe(data)


def histogram(values: Any, bins: Any = 10, range: Any = None) -> SafeTable:
    """Histogram counts, checked and recorded (see :meth:`Session.histogram`)."""
    return get_session().histogram(values, bins, range)


def hist(values: Any, bins: Any = 10, range: Any = None, ax: Any = None, **kwargs: Any) -> Any:
    """A histogram plot, checked and recorded (see :meth:`Session.hist`)."""
    return get_session().hist(values, bins, range, ax, **kwargs)


def ols(formula_or_y: Any, data: Any = None, **kwargs: Any) -> Any:
    """OLS regression, checked and recorded (see :meth:`Session.ols`)."""
    return get_session().ols(formula_or_y, data, **kwargs)


def logit(formula_or_y: Any, data: Any = None, **kwargs: Any) -> Any:
    """Logistic regression, checked and recorded (see :meth:`Session.logit`)."""
    return get_session().logit(formula_or_y, data, **kwargs)


def probit(formula_or_y: Any, data: Any = None, **kwargs: Any) -> Any:
    """Probit regression, checked and recorded (see :meth:`Session.probit`)."""
    return get_session().probit(formula_or_y, data, **kwargs)


def custom_output(path: Any, comment: str | None = None) -> Output:
    """Add a file the library did not make (always to review)."""
    return get_session().custom_output(path, comment)


def request_exception(output_id: str, reason: str) -> Output:
    """Ask for an exception for a failing (or to-review) output, with a reason."""
    return get_session().request_exception(output_id, reason)


def add_comments(output_id: str, comment: str) -> Output:
    """Add a comment for the checkers to an output."""
    return get_session().add_comments(output_id, comment)


def remove_output(output_id: str) -> None:
    """Remove an output (files, checksums and record)."""
    get_session().remove_output(output_id)


def rename_output(old: str, new: str) -> Output:
    """Rename an output and its files."""
    return get_session().rename_output(old, new)


def output(output_id: str) -> Output:
    """One recorded output (status, reasons, files)."""
    return get_session().output(output_id)


def results() -> pd.DataFrame:
    """A summary of the default session's outputs, one row each."""
    return get_session().results()


def finalise() -> Any:
    """Write ``results.json``, ``config.json`` and the checksums again (idempotent)."""
    return get_session().finalise()
