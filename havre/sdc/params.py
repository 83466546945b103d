"""SDC parameters: the thresholds behind every automatic disclosure check.

One :class:`SDCParams` value holds every number the rules use.  It comes from the enclave
config (the ``sdc`` section, overridable per project) and is written into the release record
(:meth:`SDCParams.as_dict`) so that a release always says which criteria it was checked
against.

Defaults are ACRO's (``acro`` 1.0.2, ``default.yaml``).  Havre's own names are the primary
ones; ACRO's names are accepted as aliases so that an ACRO config can be pasted in:

=========================  ======================  =======  ==================================
Havre name                 ACRO alias              default  meaning
=========================  ======================  =======  ==================================
``threshold``              ``safe_threshold``      10       minimum contributors per cell
``zeros_are_disclosive``   (same)                  true     empty cells fail
``dominance_n``            ``safe_nk_n``           2        n of the (n, k) dominance rule
``dominance_k``            ``safe_nk_k``           0.90     k of the (n, k) dominance rule
``p_ratio``                ``safe_pratio_p``       0.10     p of the p-ratio rule
``min_residual_dof``       ``safe_dof_threshold``  10       minimum residual degrees of freedom
``check_missing_values``   (same)                  false    cells with missing values: review
``round_base``             ``safe_round_base``     5        base of the rounding helpers
``negatives``              (none)                  review   cells with negative values
=========================  ======================  =======  ==================================

Parsing is strict, on the enclave config's problems collector
(:mod:`havre.enclave.config.problems`): an unknown key is refused with the closest known name
offered (a misspelt threshold must not silently fall back to a weaker default), a parameter
given under both its names is refused, and every problem is reported at once, each naming the
key as written by its dotted path (``projects.cardio.sdc.safe_threshold``) and the offending
value.

Standard library and :mod:`havre.enclave` only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from havre.enclave.config.problems import ConfigProblemsError, Problems, join_path, show_value

__all__ = [
    "ACRO_ALIASES",
    "NEGATIVES_CHOICES",
    "SDCParams",
    "SDCParamsError",
]

#: ACRO's parameter names, mapped to Havre's.
ACRO_ALIASES: Mapping[str, str] = {
    "safe_threshold": "threshold",
    "safe_dof_threshold": "min_residual_dof",
    "safe_nk_n": "dominance_n",
    "safe_nk_k": "dominance_k",
    "safe_pratio_p": "p_ratio",
    "safe_round_base": "round_base",
    # These two have the same name in both.
    "zeros_are_disclosive": "zeros_are_disclosive",
    "check_missing_values": "check_missing_values",
}

#: What to do with a cell whose dominance is checked and that holds negative values.
#: Dominance and p-ratio are always computed on absolute values; this says what *else*
#: happens to the cell: ``review`` (a checker must look), ``fail``, or ``absolute`` (trust the
#: absolute-value rules and do nothing more).
NEGATIVES_CHOICES = ("review", "fail", "absolute")

#: ACRO keys Havre knows of but does not implement (a clearer refusal than "unknown").
_ACRO_UNSUPPORTED = {
    "survival_safe_threshold": "survival tables are not checked by Havre's rules yet",
}


class SDCParamsError(ConfigProblemsError):
    """Invalid SDC parameters; ``problems`` lists every problem found, each with its dotted
    path; ``source`` names where the parameters came from (a dotted path in a config file, a
    record's field, or ``SDCParams(...)`` for direct construction)."""

    what = "SDC parameters in"

    def __init__(self, problems: Iterable[str], source: str = "SDCParams(...)") -> None:
        super().__init__(problems, source)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _check_value(name: str, value: object) -> str | None:
    """The problem with ``value`` for the Havre parameter ``name``, or None when it is fine."""
    if name in ("threshold", "dominance_n", "round_base"):
        if not _is_int(value) or value < 1:
            return "must be a whole number of at least 1"
    elif name == "min_residual_dof":
        if not _is_int(value) or value < 0:
            return "must be a whole number of at least 0"
    elif name in ("zeros_are_disclosive", "check_missing_values"):
        if not isinstance(value, bool):
            return "must be true or false"
    elif name == "dominance_k":
        if not _is_number(value) or not 0 < value <= 1:
            return "must be a number above 0 and at most 1 (a share of the cell total)"
    elif name == "p_ratio":
        if not _is_number(value) or not 0 <= value <= 1:
            return "must be a number from 0 to 1"
    elif name == "negatives":
        if value not in NEGATIVES_CHOICES:
            return "must be one of " + ", ".join(NEGATIVES_CHOICES)
    return None


@dataclass(frozen=True)
class SDCParams:
    """Parameters of the statistical disclosure control rules (defaults as ACRO's).

    Construct directly (values are validated) or from a config mapping with
    :meth:`from_mapping`, which also accepts ACRO's names.
    """

    #: A cell with fewer contributors than this (but at least one) fails.
    threshold: int = 10
    #: Whether an empty cell (no contributors) fails.
    zeros_are_disclosive: bool = True
    #: The n of the (n, k) dominance rule: how many of the largest contributors are summed.
    dominance_n: int = 2
    #: The k of the (n, k) dominance rule: the n largest at or above this share of the total fail.
    dominance_k: float = 0.90
    #: p-ratio: a cell fails when (total - largest - second) / largest is below this.
    p_ratio: float = 0.10
    #: Models (and standard deviations) need at least this many residual degrees of freedom.
    min_residual_dof: int = 10
    #: Whether a cell whose contributors have missing values goes to review.
    check_missing_values: bool = False
    #: Base of the rounding helpers (:func:`havre.sdc.rules.round_to_base`).
    round_base: int = 5
    #: What happens to a dominance-checked cell holding negative values (see
    #: :data:`NEGATIVES_CHOICES`).
    negatives: str = "review"

    def __post_init__(self) -> None:
        p = Problems()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            problem = _check_value(f.name, value)
            if problem:
                p.add(f.name, problem, value)
        p.raise_if_any(SDCParamsError, "SDCParams(...)")

    # ------------------------------------------------------------------------------------
    # Building from config
    # ------------------------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Havre's parameter names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def _parse(cls, mapping: object, source: str) -> dict[str, Any]:
        """Validate a config mapping; return the values under Havre's names."""
        if mapping is None:
            return {}
        p = Problems()
        if not isinstance(mapping, Mapping):
            p.add(source, "must be a mapping of parameters", mapping)
            p.raise_if_any(SDCParamsError, source)
            return {}
        known = (*cls.field_names(), *(a for a in ACRO_ALIASES if a not in cls.field_names()))
        values: dict[str, Any] = {}
        given_as: dict[str, str] = {}
        for key, value in mapping.items():
            if key in _ACRO_UNSUPPORTED:
                p.add(
                    join_path(source, key),
                    f"ACRO parameter not supported: {_ACRO_UNSUPPORTED[key]}",
                )
                continue
            if not isinstance(key, str) or key not in known:
                p.unknown_keys({key: value}, source, known)
                continue
            name = ACRO_ALIASES.get(key, key)
            if name in given_as:
                p.add(
                    source,
                    f"{given_as[name]!r} and {key!r} set the same parameter ({name}); "
                    "give only one",
                )
                continue
            given_as[name] = key
            problem = _check_value(name, value)
            if problem:
                p.add(join_path(source, key), problem, value)
                continue
            values[name] = value
        p.raise_if_any(SDCParamsError, source)
        return values

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, source: str = "sdc") -> SDCParams:
        """Parameters from a config mapping (Havre names or ACRO aliases); missing keys default.

        ``source`` is the dotted path of the mapping in the config file, used in messages
        (``sdc.safe_threshold: must be a whole number of at least 1 (got 'ten')``).

        Raises :class:`SDCParamsError` naming every bad key and value.
        """
        return cls(**cls._parse(mapping, source))

    def merged(
        self,
        overrides: Mapping[str, Any] | None,
        source: str = "sdc",
        *,
        allow_weaker: bool = True,
    ) -> SDCParams:
        """These parameters with ``overrides`` applied (e.g. a project's ``sdc`` section).

        Overrides use the same names and validation as :meth:`from_mapping`.  With
        ``allow_weaker=False`` an override that makes any rule less strict is refused.
        """
        result = dataclasses.replace(self, **self._parse(overrides, source))
        if not allow_weaker:
            p = Problems()
            for name in result.weaker_than(self):
                p.add(
                    join_path(source, name),
                    f"may not be less strict than the enclave's {show_value(getattr(self, name))} "
                    f"(got {show_value(getattr(result, name))})",
                )
            p.raise_if_any(SDCParamsError, source)
        return result

    def weaker_than(self, other: SDCParams) -> list[str]:
        """Names of the parameters where these are less strict than ``other``.

        Useful to flag project overrides that relax the enclave's rules.
        """
        order = {"absolute": 0, "review": 1, "fail": 2}
        weaker = []
        for name in self.field_names():
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "dominance_k":
                is_weaker = mine > theirs  # a higher share is needed to fail
            elif name == "negatives":
                is_weaker = order[mine] < order[theirs]
            else:
                # Larger is stricter for every other parameter (True > False).
                is_weaker = mine < theirs
            if is_weaker:
                weaker.append(name)
        return weaker

    # ------------------------------------------------------------------------------------
    # Output
    # ------------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """The parameters under Havre's names (for the release record)."""
        return dataclasses.asdict(self)

    def as_acro_dict(self) -> dict[str, Any]:
        """The parameters ACRO knows, under ACRO's names (as in ACRO's ``config.json``)."""
        return {alias: getattr(self, name) for alias, name in ACRO_ALIASES.items()}
