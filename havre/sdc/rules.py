"""Per-cell disclosure rules, vectorised over numpy arrays of cell statistics.

Each rule takes arrays with one entry per cell and returns a boolean array: True where the
cell breaks the rule.  :func:`rule_mask` runs a chosen set of rules over a table of cell
statistics and packs the results into one bitmask per cell (a :class:`Rule` flag set);
:func:`verdict_codes` turns bitmasks into verdicts; :func:`evaluate_cells` does both and
returns a :class:`CellReasons`, which also writes the reasons out for a human checker::

    cell (Bretagne, 80+): 3 contributors, below the threshold of 10

Cell statistics (columns of the ``stats`` frame, one row per cell):

``count``
    unweighted contributors (records, or distinct contributor ids) with a value.
``total``
    sum of the contributions' *absolute* values (the cell sum when none is negative).
``largest``, ``second``
    the two largest absolute contributions (0 when there is no such contributor).
``top_n``
    sum of the ``dominance_n`` largest absolute contributions (optional when
    ``dominance_n`` is 1 or 2: derived from ``largest`` and ``second``).
``minimum``
    the smallest (signed) contribution, for the negatives rule.
``missing``
    how many of the cell's records have no value, for the missing-values rule.
``dof``
    degrees of freedom of a cell statistic (``count - 1`` for a standard deviation).

Only numpy and pandas; no I/O.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from .params import SDCParams

__all__ = [
    "ACRO_KEYS",
    "ALL_RULES",
    "CellReasons",
    "Finding",
    "Rule",
    "Verdict",
    "check_dof",
    "describe_cell",
    "dof_rule",
    "dominance_rule",
    "evaluate_cells",
    "format_label",
    "missing_rule",
    "negative_rule",
    "p_ratio_rule",
    "round_to_base",
    "rule_mask",
    "rule_verdict",
    "threshold_rule",
    "verdict_codes",
    "zeros_rule",
]


class Verdict(enum.IntEnum):
    """The outcome of a check; ordered so that the worst wins (``max``)."""

    PASS = 0
    REVIEW = 1
    FAIL = 2

    @property
    def label(self) -> str:
        """``pass``, ``review`` or ``fail`` (ACRO's status words)."""
        return self.name.lower()

    def __str__(self) -> str:
        return self.label

    @classmethod
    def worst(cls, verdicts: Iterable[Verdict | int]) -> Verdict:
        """The worst of ``verdicts`` (PASS when there are none)."""
        return cls(max(verdicts, default=cls.PASS))

    @classmethod
    def from_label(cls, label: str) -> Verdict:
        """The verdict for ``pass``, ``review`` or ``fail``."""
        try:
            return cls[label.upper()]
        except KeyError:
            raise ValueError(f"not a verdict: {label!r}") from None


#: Verdict labels indexed by verdict code, for vectorised conversion.
_LABELS = np.array([v.label for v in Verdict], dtype=object)


class Rule(enum.IntFlag):
    """One disclosure rule; a cell's reasons are a combination (bitmask) of these."""

    THRESHOLD = 1  #: fewer contributors than the threshold (but at least one)
    ZEROS = 2  #: an empty cell, when zeros are disclosive
    DOMINANCE = 4  #: the n largest contributors make at least k of the total
    P_RATIO = 8  #: the rest after the two largest is below p of the largest
    NEGATIVE = 16  #: negative values in a dominance-checked cell
    MISSING = 32  #: missing values among the cell's records
    MIN_MAX = 64  #: a minimum or maximum: one contributor's own value
    DOF = 128  #: too few degrees of freedom
    NOT_A_COUNT = 256  #: a published count that is negative or fractional
    RECOVERABLE = 512  #: a suppressed cell recoverable from a published total

    @property
    def key(self) -> str:
        """The rule's name in counts and records (``threshold``, ``p_ratio``...)."""
        return (self.name or "").lower()


#: Every rule, in the order reasons are listed.
ALL_RULES: tuple[Rule, ...] = tuple(Rule)

#: ACRO's names for the rules it has (results.json ``sdc`` keys).  ACRO counts empty cells
#: under ``threshold``; Havre's standard-deviation degrees-of-freedom rule is a threshold on
#: the contributor count, so it goes there too.
ACRO_KEYS: Mapping[Rule, str] = {
    Rule.THRESHOLD: "threshold",
    Rule.ZEROS: "threshold",
    Rule.DOF: "threshold",
    Rule.DOMINANCE: "nk-rule",
    Rule.P_RATIO: "p-ratio",
    Rule.NEGATIVE: "negative",
    Rule.MISSING: "missing",
}

_FAILING = Rule.THRESHOLD | Rule.ZEROS | Rule.DOMINANCE | Rule.P_RATIO | Rule.DOF | Rule.RECOVERABLE
_REVIEWED = Rule.MISSING | Rule.MIN_MAX | Rule.NOT_A_COUNT


def rule_verdict(rule: Rule, params: SDCParams) -> Verdict:
    """The verdict a cell gets for breaking ``rule`` alone."""
    if rule == Rule.NEGATIVE:
        return {"fail": Verdict.FAIL, "review": Verdict.REVIEW}.get(params.negatives, Verdict.PASS)
    if rule & _FAILING:
        return Verdict.FAIL
    if rule & _REVIEWED:
        return Verdict.REVIEW
    return Verdict.PASS


@dataclass(frozen=True)
class Finding:
    """One reason about a whole output (not a cell), with the verdict it carries."""

    rule: Rule | None
    verdict: Verdict
    text: str

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready form."""
        return {
            "rule": self.rule.key if self.rule is not None else None,
            "verdict": self.verdict.label,
            "text": self.text,
        }


# ----------------------------------------------------------------------------------------
# The rules (vectorised)
# ----------------------------------------------------------------------------------------


def _arr(values: Any, dtype: Any = float) -> np.ndarray:
    return np.asarray(values, dtype=dtype)


def threshold_rule(count: Any, params: SDCParams) -> np.ndarray:
    """Cells with at least one but fewer than ``threshold`` contributors."""
    c = _arr(count)
    return (c > 0) & (c < params.threshold)


def zeros_rule(count: Any, params: SDCParams) -> np.ndarray:
    """Empty cells, when ``zeros_are_disclosive`` (otherwise no cell)."""
    c = _arr(count)
    if not params.zeros_are_disclosive:
        return np.zeros(c.shape, dtype=bool)
    return c == 0


def dominance_rule(top_n: Any, total: Any, params: SDCParams) -> np.ndarray:
    """Cells whose ``dominance_n`` largest contributions are at least ``dominance_k`` of the total.

    ``top_n`` and ``total`` are sums of absolute values.  A cell whose total is 0 (no
    contributor, or all contributions zero) is not flagged here: zeros have their own rules.
    The comparison is on the ratio ``top_n / total`` (so that whole-number inputs land exactly
    on the boundary: 9 of 10 is exactly 0.9, and 0.9 fails).
    """
    top, tot = _arr(top_n), _arr(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tot > 0, top / np.where(tot > 0, tot, 1.0), 0.0)
    return (tot > 0) & (ratio >= params.dominance_k)


def p_ratio_rule(
    total: Any, largest: Any, second: Any, count: Any, params: SDCParams
) -> np.ndarray:
    """Cells where ``(total - largest - second) / largest`` is below ``p_ratio``.

    That ratio is how closely the second largest contributor can estimate the largest one
    (by subtracting their own value from the published total).  Only cells with at least one
    contributor are checked.  When every contribution is zero the ratio is undefined; such a
    cell is flagged when zeros are disclosive (as ACRO does).
    """
    tot, big, sec, c = _arr(total), _arr(largest), _arr(second), _arr(count)
    positive = big > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (tot - big - sec) / np.where(positive, big, 1.0)
    flagged = np.where(positive, ratio < params.p_ratio, params.zeros_are_disclosive)
    return (c > 0) & flagged


def negative_rule(minimum: Any, params: SDCParams) -> np.ndarray:
    """Cells holding a negative contribution (none when ``negatives`` is ``absolute``)."""
    m = _arr(minimum)
    if params.negatives == "absolute":
        return np.zeros(m.shape, dtype=bool)
    return m < 0


def missing_rule(missing: Any, params: SDCParams) -> np.ndarray:
    """Cells with missing values among their records, when ``check_missing_values``."""
    m = _arr(missing)
    if not params.check_missing_values:
        return np.zeros(m.shape, dtype=bool)
    return m > 0


def dof_rule(dof: Any, params: SDCParams) -> np.ndarray:
    """Statistics with fewer than ``min_residual_dof`` degrees of freedom."""
    return _arr(dof) < params.min_residual_dof


def check_dof(dof: float, params: SDCParams) -> tuple[Verdict, str]:
    """Residual degrees of freedom of a model: the verdict and a sentence for the checker."""
    if dof is None or isinstance(dof, bool) or not isinstance(dof, int | float | np.number):
        return Verdict.REVIEW, f"residual degrees of freedom unknown ({dof!r}); check by hand"
    if not math.isfinite(float(dof)):
        return Verdict.REVIEW, f"residual degrees of freedom unknown ({dof!r}); check by hand"
    shown = _num(dof)
    if dof < params.min_residual_dof:
        return (
            Verdict.FAIL,
            f"residual degrees of freedom {shown}, below the minimum of {params.min_residual_dof}",
        )
    return (
        Verdict.PASS,
        f"residual degrees of freedom {shown}, at least the minimum of {params.min_residual_dof}",
    )


def round_to_base(values: Any, base: int) -> np.ndarray:
    """Round to the nearest multiple of ``base`` (halves away from zero); NaN stays NaN.

    A rounding helper for researchers who publish rounded counts (``round_base`` in the
    parameters).  Rounding alone does not make a small cell safe: the rules run on the
    unrounded values.
    """
    if isinstance(base, bool) or not isinstance(base, int) or base < 1:
        raise ValueError(f"base must be a whole number of at least 1 (got {base!r})")
    x = _arr(values)
    return np.sign(x) * np.floor(np.abs(x) / base + 0.5) * base


# ----------------------------------------------------------------------------------------
# Many rules at once
# ----------------------------------------------------------------------------------------


def _column(stats: Mapping[str, Any] | pd.DataFrame, name: str, rule: Rule) -> np.ndarray:
    if name not in stats:
        raise ValueError(f"the {rule.key} rule needs a {name!r} column in the cell statistics")
    return np.asarray(stats[name], dtype=float)


def _top_n(stats: Mapping[str, Any] | pd.DataFrame, params: SDCParams) -> np.ndarray:
    if "top_n" in stats:
        return np.asarray(stats["top_n"], dtype=float)
    if params.dominance_n == 1:
        return _column(stats, "largest", Rule.DOMINANCE)
    if params.dominance_n == 2:
        return _column(stats, "largest", Rule.DOMINANCE) + _column(stats, "second", Rule.DOMINANCE)
    raise ValueError(
        f"the dominance rule with n = {params.dominance_n} needs a 'top_n' column "
        "in the cell statistics"
    )


def rule_mask(
    stats: Mapping[str, Any] | pd.DataFrame, params: SDCParams, rules: Rule
) -> np.ndarray:
    """Run ``rules`` over per-cell ``stats``; one bitmask (uint16 of :class:`Rule`) per cell.

    ``rules`` selects the rules: e.g. ``Rule.THRESHOLD | Rule.ZEROS`` for a count table.
    Columns each rule needs are described in the module docstring.
    """
    count = _column(stats, "count", Rule.THRESHOLD)
    mask = np.zeros(count.shape, dtype=np.uint16)

    def put(rule: Rule, hits: np.ndarray) -> None:
        mask[hits] |= np.uint16(rule)

    if rules & Rule.THRESHOLD:
        hits = threshold_rule(count, params)
        if "missing" in stats and not (rules & Rule.ZEROS and params.zeros_are_disclosive):
            # Records whose values are all missing: no contributor, but not an empty cell
            # either (ACRO counts those records); too few of them is a small cell.
            records = count + np.nan_to_num(np.asarray(stats["missing"], dtype=float))
            hits |= (count == 0) & (records > 0) & (records < params.threshold)
        put(Rule.THRESHOLD, hits)
    if rules & Rule.ZEROS:
        put(Rule.ZEROS, zeros_rule(count, params))
    if rules & Rule.DOMINANCE:
        total = _column(stats, "total", Rule.DOMINANCE)
        put(Rule.DOMINANCE, dominance_rule(_top_n(stats, params), total, params))
    if rules & Rule.P_RATIO:
        put(
            Rule.P_RATIO,
            p_ratio_rule(
                _column(stats, "total", Rule.P_RATIO),
                _column(stats, "largest", Rule.P_RATIO),
                _column(stats, "second", Rule.P_RATIO),
                count,
                params,
            ),
        )
    if rules & Rule.NEGATIVE:
        put(Rule.NEGATIVE, negative_rule(_column(stats, "minimum", Rule.NEGATIVE), params))
    if rules & Rule.MISSING:
        put(Rule.MISSING, missing_rule(_column(stats, "missing", Rule.MISSING), params))
    if rules & Rule.MIN_MAX:
        put(Rule.MIN_MAX, count > 0)
    if rules & Rule.DOF:
        put(Rule.DOF, (count > 0) & dof_rule(_column(stats, "dof", Rule.DOF), params))
    return mask


def verdict_codes(mask: Any, params: SDCParams) -> np.ndarray:
    """Verdict codes (int8: 0 pass, 1 review, 2 fail) for rule bitmasks: the worst rule wins."""
    m = np.asarray(mask, dtype=np.uint16)
    failing, reviewed = int(_FAILING), int(_REVIEWED)
    if params.negatives == "fail":
        failing |= int(Rule.NEGATIVE)
    elif params.negatives == "review":
        reviewed |= int(Rule.NEGATIVE)
    codes = np.zeros(m.shape, dtype=np.int8)
    codes[(m & reviewed) != 0] = Verdict.REVIEW
    codes[(m & failing) != 0] = Verdict.FAIL
    return codes


# ----------------------------------------------------------------------------------------
# Reasons in words
# ----------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    """A number for humans: whole numbers without decimals."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return repr(x)
    if math.isfinite(f) and f == int(f) and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.6g}"


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def _plural(n: Any, word: str) -> str:
    return f"{_num(n)} {word}" + ("" if float(n) == 1 else "s")


def _part(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return "NaN"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"  # a missing key: the row or column of records with no value
    return str(value)


def format_label(label: Any) -> str:
    """A cell label for humans: ``(Bretagne, 80+)``; a missing key reads ``NaN``."""
    parts = label if isinstance(label, tuple) else (label,)
    return "(" + ", ".join(_part(p) for p in parts) + ")"


def describe_cell(
    label: Any,
    rules: Rule | int,
    stats: Mapping[str, Any],
    params: SDCParams,
    statistic: str | None = None,
) -> list[str]:
    """One sentence per rule the cell breaks, e.g.
    ``cell (Bretagne, 80+): 3 contributors, below the threshold of 10``.

    ``stats`` holds the cell's statistics (see the module docstring).
    """
    bits = Rule(int(rules))
    where = f"cell {format_label(label)}"
    get = stats.get
    out = []
    if bits & Rule.THRESHOLD:
        out.append(
            f"{where}: {_plural(get('count'), 'contributor')}, "
            f"below the threshold of {params.threshold}"
        )
    if bits & Rule.ZEROS:
        missing = get("missing") or 0
        detail = (
            f"no contributors (all {_num(missing)} values are missing)"
            if missing
            else "no contributors (an empty cell)"
        )
        out.append(f"{where}: {detail}; zeros are disclosive under these rules")
    if bits & Rule.DOMINANCE:
        n = params.dominance_n
        total = float(get("total"))
        if get("top_n") is not None:
            top = float(get("top_n"))
        elif n <= 2 and get("largest") is not None:
            top = float(get("largest")) + (float(get("second") or 0) if n == 2 else 0.0)
        else:
            top = float("nan")
        share = f"{100 * top / total:.1f}%" if total > 0 and math.isfinite(top) else "all"
        who = "the largest contributor makes" if n == 1 else f"the largest {n} contributors make"
        out.append(
            f"{where}: {who} {share} of the cell total, "
            f"at or above the limit of {_pct(params.dominance_k)}"
        )
    if bits & Rule.P_RATIO:
        largest = float(get("largest"))
        if largest > 0:
            rest = (float(get("total")) - largest - float(get("second"))) / largest
            out.append(
                f"{where}: without its 2 largest contributions the cell total is "
                f"{100 * rest:.1f}% of the largest, below p = {_pct(params.p_ratio)} "
                "(the second largest contributor could estimate the largest)"
            )
        else:
            out.append(
                f"{where}: every contribution is zero (no p-ratio); "
                "zeros are disclosive under these rules"
            )
    if bits & Rule.NEGATIVE:
        then = "fails under these rules" if params.negatives == "fail" else "a checker must review"
        out.append(
            f"{where}: holds negative values (smallest {_num(get('minimum'))}); dominance and "
            f"p-ratio were computed on absolute values; {then}"
        )
    if bits & Rule.MISSING:
        missing = get("missing")
        out.append(
            f"{where}: {_plural(missing, 'record')} with a missing value; a checker must review"
        )
    if bits & Rule.MIN_MAX:
        what = statistic or "minimum or maximum"
        out.append(f"{where}: a {what} is one contributor's own value; a checker must review")
    if bits & Rule.DOF:
        out.append(
            f"{where}: a {statistic or 'statistic'} over "
            f"{_plural(get('count'), 'contributor')} has {_num(get('dof'))} degrees of freedom, "
            f"below the minimum of {params.min_residual_dof}"
        )
    if bits & Rule.NOT_A_COUNT:
        out.append(
            f"{where}: {_num(get('value'))} is not a count (a whole number of 0 or more); "
            "a checker must review"
        )
    if bits & Rule.RECOVERABLE:
        out.append(
            f"{where}: suppressed, but its value ({_num(get('recovered'))}) can be recovered "
            "by subtracting the published cells from a published total"
        )
    return out


@dataclass(frozen=True, eq=False)
class CellReasons:
    """The rules each cell breaks (a bitmask per cell) and what follows from them.

    ``index`` labels the cells (one entry per cell, a tuple for multi-key cells), ``mask``
    holds one :class:`Rule` bitmask per cell and ``stats`` the statistics the rules ran on.
    """

    index: pd.Index
    mask: np.ndarray
    stats: pd.DataFrame
    params: SDCParams
    statistic: str | None = None

    @cached_property
    def codes(self) -> np.ndarray:
        """Verdict codes per cell (int8: 0 pass, 1 review, 2 fail)."""
        return verdict_codes(self.mask, self.params)

    @property
    def verdict(self) -> Verdict:
        """The worst cell's verdict (PASS when there are no cells)."""
        return Verdict(int(self.codes.max())) if self.codes.size else Verdict.PASS

    @property
    def verdicts(self) -> pd.Series:
        """Verdict labels (``pass``/``review``/``fail``) per cell."""
        return pd.Series(_LABELS[self.codes], index=self.index, name="verdict")

    def flags(self, rule: Rule) -> pd.Series:
        """True for the cells breaking ``rule``."""
        return pd.Series((self.mask & int(rule)) != 0, index=self.index, name=rule.key)

    def counts(self) -> dict[str, int]:
        """How many cells break each rule, by rule key (every rule, zeros included)."""
        return {rule.key: int(np.count_nonzero(self.mask & int(rule))) for rule in ALL_RULES}

    def rules_of(self, position: int) -> Rule:
        """The rules broken by the cell at ``position``."""
        return Rule(int(self.mask[position]))

    def describe(self, position: int) -> list[str]:
        """Sentences for the cell at ``position`` (empty when it breaks no rule)."""
        return self._describe_many(np.array([position]))[0]

    def _describe_many(self, positions: np.ndarray) -> list[list[str]]:
        columns = {c: self.stats[c].to_numpy()[positions] for c in self.stats.columns}
        labels = self.index[positions]
        out = []
        for i, p in enumerate(positions):
            bits = int(self.mask[p])
            if not bits:
                out.append([])
                continue
            row = {c: values[i] for c, values in columns.items()}
            out.append(describe_cell(labels[i], bits, row, self.params, self.statistic))
        return out

    def flagged_positions(self) -> np.ndarray:
        """Positions of the cells breaking at least one rule."""
        return np.flatnonzero(self.mask)

    @cached_property
    def _flagged_texts(self) -> dict[int, list[str]]:
        positions = self.flagged_positions()
        return dict(zip(positions.tolist(), self._describe_many(positions), strict=True))

    @cached_property
    def texts(self) -> tuple[str, ...]:
        """Every reason, cell by cell, worst cells first (then in table order)."""
        positions = self.flagged_positions()
        order = positions[np.argsort(-self.codes[positions], kind="stable")]
        texts = self._flagged_texts
        return tuple(text for p in order.tolist() for text in texts[p])

    def reason_series(self) -> pd.Series:
        """Per cell, its reasons joined with ``"; "`` (empty string for a clean cell)."""
        out = np.full(len(self.index), "", dtype=object)
        for p, texts in self._flagged_texts.items():
            out[p] = "; ".join(texts)
        return pd.Series(out, index=self.index, name="reasons")


def evaluate_cells(
    stats: pd.DataFrame,
    params: SDCParams,
    rules: Rule,
    statistic: str | None = None,
) -> CellReasons:
    """Run ``rules`` over a frame of per-cell statistics (one row per cell, labelled by its
    index); the result has per-cell bitmasks, verdicts and human reasons.

    Example: a count table's cells ``evaluate_cells(pd.DataFrame({"count": [3, 12, 0]},
    index=["a", "b", "c"]), SDCParams(), Rule.THRESHOLD | Rule.ZEROS)``.
    """
    if "dof" not in stats and rules & Rule.DOF and "count" in stats:
        stats = stats.assign(dof=np.asarray(stats["count"], dtype=float) - 1)
    mask = rule_mask(stats, params, rules)
    return CellReasons(stats.index, mask, stats, params, statistic)
