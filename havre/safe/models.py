"""The library's regressions: OLS, logit and probit (statsmodels), fitted, checked and drafted.

The check is :func:`havre.sdc.check_regression` (enough residual degrees of freedom). The record
holds the model's summary as text, without the date and time it was printed (the same model on
the same data gives the same bytes, e.g. in a trusted re-execution), and its coefficient table
as CSV. statsmodels is imported on the first model, not with the library.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

import numpy as np
import pandas as pd

from havre.sdc import SDCParams, check_regression

from .records import Draft, havre_block, label_text

__all__ = ["METHODS", "fit"]

#: The methods and the statsmodels class each fits when given arrays (formulas go through
#: ``statsmodels.formula.api``).
METHODS = {"ols": "OLS", "logit": "Logit", "probit": "Probit"}


def fit(
    params: SDCParams, method: str, formula_or_y: Any, data: Any, kwargs: dict[str, Any]
) -> tuple[Any, Draft]:
    """Fit ``method`` (``ols("y ~ x", df)`` or ``ols(y, X)``; ``fit_kwargs`` go to ``fit()``,
    other keywords to the model) and check it: the fitted results and the draft."""
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
        model = getattr(sm, METHODS[method])(formula_or_y, data, **kwargs)
    results = model.fit(**fit_kwargs)
    check = check_regression(results, params=params)
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
        "dependent": label_text(getattr(model, "endog_names", "unknown")),
        "independent": [n for n in names if n not in ("const", "Intercept")],
    }
    draft = Draft(
        output_type="regression",
        properties=properties,
        files=[("txt", text, {}), ("csv", coefficients, {})],
        status=check.verdict.label,
        summary=check.summary,
        fair=fair,
        havre=havre_block(check),
        check=check,
    )
    return results, draft


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
