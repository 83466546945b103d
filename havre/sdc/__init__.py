"""Statistical disclosure control (SDC) rules: the automatic checks behind output release.

A pure rules engine (numpy and pandas only: no web, database or file access), shared by the
egress server and the researchers' library.  It gives each output, and each cell of a table,
a verdict — pass, review or fail — with reasons a checker can read.  Humans decide: the
verdict informs the two checkers, it does not release anything by itself.

* :mod:`havre.sdc.params` — :class:`SDCParams`, the thresholds (ACRO's defaults and names);
* :mod:`havre.sdc.rules` — the per-cell rules, vectorised, and the reasons in words;
* :mod:`havre.sdc.tables` — checks of whole outputs and suppression.

Checker-facing documentation: ``docs/checker-sdc-rules.md``.
"""

from .params import ACRO_ALIASES, NEGATIVES_CHOICES, SDCParams, SDCParamsError
from .rules import (
    ALL_RULES,
    CellReasons,
    Finding,
    Rule,
    Verdict,
    check_dof,
    evaluate_cells,
    round_to_base,
)
from .tables import (
    STATISTICS,
    OutputCheck,
    check_frequency_csv,
    check_frequency_table,
    check_histogram,
    check_magnitude_table,
    check_regression,
    protect_pattern,
    read_table_csv,
    recoverable_cells,
    suppress,
)

__all__ = [
    "ACRO_ALIASES",
    "ALL_RULES",
    "NEGATIVES_CHOICES",
    "STATISTICS",
    "CellReasons",
    "Finding",
    "OutputCheck",
    "Rule",
    "SDCParams",
    "SDCParamsError",
    "Verdict",
    "check_dof",
    "check_frequency_csv",
    "check_frequency_table",
    "check_histogram",
    "check_magnitude_table",
    "check_regression",
    "evaluate_cells",
    "protect_pattern",
    "read_table_csv",
    "recoverable_cells",
    "round_to_base",
    "suppress",
]
