"""Unit tests for havre.sdc.params and havre.sdc.rules: parameters, per-cell rules, verdicts.

Expected values are worked out by hand in the comments next to each case.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havre.sdc import (
    ACRO_ALIASES,
    Rule,
    SDCParams,
    SDCParamsError,
    Verdict,
    check_dof,
    evaluate_cells,
    round_to_base,
)
from havre.sdc.rules import (
    describe_cell,
    dominance_rule,
    format_label,
    missing_rule,
    negative_rule,
    p_ratio_rule,
    rule_mask,
    rule_verdict,
    threshold_rule,
    verdict_codes,
    zeros_rule,
)
from tests.hypothesis_budget import examples

DEFAULTS = SDCParams()

# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def test_defaults_are_acros():
    assert DEFAULTS.as_dict() == {
        "threshold": 10,
        "zeros_are_disclosive": True,
        "dominance_n": 2,
        "dominance_k": 0.90,
        "p_ratio": 0.10,
        "min_residual_dof": 10,
        "check_missing_values": False,
        "round_base": 5,
        "negatives": "review",
    }
    assert DEFAULTS.as_acro_dict() == {
        "safe_threshold": 10,
        "safe_dof_threshold": 10,
        "safe_nk_n": 2,
        "safe_nk_k": 0.90,
        "safe_pratio_p": 0.10,
        "safe_round_base": 5,
        "zeros_are_disclosive": True,
        "check_missing_values": False,
    }


def test_acro_aliases_are_accepted():
    acro = {
        "safe_threshold": 5,
        "safe_dof_threshold": 20,
        "safe_nk_n": 1,
        "safe_nk_k": 0.5,
        "safe_pratio_p": 0.2,
        "zeros_are_disclosive": False,
        "check_missing_values": True,
        "safe_round_base": 10,
    }
    params = SDCParams.from_mapping(acro)
    assert params == SDCParams(
        threshold=5,
        min_residual_dof=20,
        dominance_n=1,
        dominance_k=0.5,
        p_ratio=0.2,
        zeros_are_disclosive=False,
        check_missing_values=True,
        round_base=10,
    )
    # Round trip through ACRO's names.
    assert SDCParams.from_mapping(params.as_acro_dict()) == params
    assert set(ACRO_ALIASES.values()) <= set(SDCParams.field_names())


def test_havre_names_and_partial_mappings():
    assert SDCParams.from_mapping({"threshold": 20, "negatives": "fail"}) == SDCParams(
        threshold=20, negatives="fail"
    )
    assert SDCParams.from_mapping({}) == DEFAULTS
    assert SDCParams.from_mapping(None) == DEFAULTS
    # An int is fine where a share is expected.
    assert SDCParams.from_mapping({"safe_nk_k": 1}).dominance_k == 1


#: every name the parser knows, as an unknown-key message lists them
ALLOWED = ", ".join(sorted(set(SDCParams.field_names()) | set(ACRO_ALIASES)))


def _problems(mapping, source="sdc"):
    with pytest.raises(SDCParamsError) as err:
        SDCParams.from_mapping(mapping, source=source)
    return err.value.problems


def test_bad_values_are_named_with_key_and_value():
    assert _problems({"safe_threshold": "ten"}) == [
        "sdc.safe_threshold: must be a whole number of at least 1 (got 'ten')"
    ]
    assert _problems({"threshold": 0}) == [
        "sdc.threshold: must be a whole number of at least 1 (got 0)"
    ]
    # YAML's `yes` arrives as True: not a number, and the message says why it is a boolean.
    assert _problems({"threshold": True}) == [
        "sdc.threshold: must be a whole number of at least 1 (got True); note: YAML reads "
        "unquoted yes/no/on/off/true/false as booleans, quote the value"
    ]
    assert _problems({"threshold": 10.0}) == [
        "sdc.threshold: must be a whole number of at least 1 (got 10.0)"
    ]
    assert _problems({"safe_nk_k": 1.5}) == [
        "sdc.safe_nk_k: must be a number above 0 and at most 1 (a share of the cell total) "
        "(got 1.5)"
    ]
    assert _problems({"dominance_k": 0}) == [
        "sdc.dominance_k: must be a number above 0 and at most 1 (a share of the cell total) "
        "(got 0)"
    ]
    assert _problems({"p_ratio": float("nan")}) == [
        "sdc.p_ratio: must be a number from 0 to 1 (got nan)"
    ]
    assert _problems({"zeros_are_disclosive": "no"}) == [
        "sdc.zeros_are_disclosive: must be true or false (got 'no')"
    ]
    assert _problems({"negatives": "ignore"}) == [
        "sdc.negatives: must be one of review, fail, absolute (got 'ignore')"
    ]
    assert _problems({"safe_dof_threshold": -1}) == [
        "sdc.safe_dof_threshold: must be a whole number of at least 0 (got -1)"
    ]


def test_every_problem_is_reported_at_once():
    problems = _problems(
        {"safe_threshold": -3, "treshold": 5, "check_missing_values": 1},
        source="projects.cardio.sdc",
    )
    assert problems == [
        "projects.cardio.sdc.safe_threshold: must be a whole number of at least 1 (got -3)",
        "projects.cardio.sdc.treshold: unknown key 'treshold', did you mean 'threshold'? "
        f"(allowed keys: {ALLOWED})",
        "projects.cardio.sdc.check_missing_values: must be true or false (got 1)",
    ]
    message = str(SDCParamsError(problems, "projects.cardio.sdc"))
    assert message.startswith(
        "invalid SDC parameters in projects.cardio.sdc:\n  - projects.cardio.sdc.safe_threshold"
    )


def test_a_parameter_given_under_both_names_is_refused():
    assert _problems({"threshold": 10, "safe_threshold": 10}) == [
        "sdc: 'threshold' and 'safe_threshold' set the same parameter (threshold); give only one"
    ]
    assert _problems({"safe_nk_k": 0.9, "dominance_k": 0.8}) == [
        "sdc: 'safe_nk_k' and 'dominance_k' set the same parameter (dominance_k); give only one"
    ]


def test_unknown_and_unsupported_keys():
    assert _problems({"survival_safe_threshold": 10}) == [
        "sdc.survival_safe_threshold: ACRO parameter not supported: "
        "survival tables are not checked by Havre's rules yet"
    ]
    assert _problems({"colour": "red"}) == [
        f"sdc.colour: unknown key 'colour' (allowed keys: {ALLOWED})"
    ]
    assert _problems({3: 10}) == [f"sdc.3: unknown key 3 (allowed keys: {ALLOWED})"]
    assert _problems([("threshold", 10)]) == [
        "sdc: must be a mapping of parameters (got [('threshold', 10)])"
    ]


def test_direct_construction_is_validated():
    with pytest.raises(SDCParamsError) as err:
        SDCParams(threshold=-1, negatives="maybe")
    assert err.value.problems == [
        "threshold: must be a whole number of at least 1 (got -1)",
        "negatives: must be one of review, fail, absolute (got 'maybe')",
    ]
    # The error survives pickling (it crosses process boundaries in the server).
    again = pickle.loads(pickle.dumps(err.value))
    assert again.problems == err.value.problems


def test_merged_applies_project_overrides():
    enclave = SDCParams.from_mapping({"threshold": 10, "safe_nk_k": 0.8})
    project = enclave.merged({"safe_threshold": 20, "check_missing_values": True})
    assert project == SDCParams(threshold=20, dominance_k=0.8, check_missing_values=True)
    assert enclave.merged(None) == enclave
    with pytest.raises(SDCParamsError) as err:
        enclave.merged({"threshold": 5, "safe_threshold": 6}, source="projects.x.sdc")
    assert "projects.x.sdc: 'threshold' and 'safe_threshold'" in err.value.problems[0]


def test_merged_can_refuse_weaker_overrides():
    enclave = DEFAULTS
    stricter = enclave.merged({"threshold": 20, "safe_nk_k": 0.8}, allow_weaker=False)
    assert stricter.threshold == 20
    with pytest.raises(SDCParamsError) as err:
        enclave.merged(
            {"threshold": 5, "zeros_are_disclosive": False, "negatives": "absolute"},
            source="projects.cardio.sdc",
            allow_weaker=False,
        )
    assert err.value.problems == [
        "projects.cardio.sdc.threshold: may not be less strict than the enclave's 10 (got 5)",
        "projects.cardio.sdc.zeros_are_disclosive: may not be less strict than the enclave's "
        "True (got False)",
        "projects.cardio.sdc.negatives: may not be less strict than the enclave's 'review' "
        "(got 'absolute')",
    ]
    assert SDCParams(dominance_k=0.95).weaker_than(DEFAULTS) == ["dominance_k"]
    assert DEFAULTS.weaker_than(DEFAULTS) == []


# --------------------------------------------------------------------------------------
# Verdicts and rule flags
# --------------------------------------------------------------------------------------


def test_verdict_order_worst_wins():
    assert Verdict.PASS < Verdict.REVIEW < Verdict.FAIL
    assert Verdict.worst([Verdict.PASS, Verdict.FAIL, Verdict.REVIEW]) is Verdict.FAIL
    assert Verdict.worst([]) is Verdict.PASS
    assert str(Verdict.REVIEW) == "review"
    assert Verdict.from_label("fail") is Verdict.FAIL
    with pytest.raises(ValueError):
        Verdict.from_label("maybe")


def test_rule_verdicts():
    assert rule_verdict(Rule.THRESHOLD, DEFAULTS) is Verdict.FAIL
    assert rule_verdict(Rule.ZEROS, DEFAULTS) is Verdict.FAIL
    assert rule_verdict(Rule.DOMINANCE, DEFAULTS) is Verdict.FAIL
    assert rule_verdict(Rule.P_RATIO, DEFAULTS) is Verdict.FAIL
    assert rule_verdict(Rule.DOF, DEFAULTS) is Verdict.FAIL
    assert rule_verdict(Rule.MISSING, DEFAULTS) is Verdict.REVIEW
    assert rule_verdict(Rule.MIN_MAX, DEFAULTS) is Verdict.REVIEW
    assert rule_verdict(Rule.NEGATIVE, DEFAULTS) is Verdict.REVIEW
    assert rule_verdict(Rule.NEGATIVE, SDCParams(negatives="fail")) is Verdict.FAIL
    assert rule_verdict(Rule.NEGATIVE, SDCParams(negatives="absolute")) is Verdict.PASS
    # The worst rule of a cell wins.
    mask = np.array([0, Rule.MISSING, Rule.MISSING | Rule.THRESHOLD, Rule.NEGATIVE], np.uint16)
    assert verdict_codes(mask, DEFAULTS).tolist() == [0, 1, 2, 1]
    assert verdict_codes(mask, SDCParams(negatives="fail")).tolist() == [0, 1, 2, 2]


def test_threshold_boundary():
    counts = [0, 1, 9, 10, 11]
    assert threshold_rule(counts, DEFAULTS).tolist() == [False, True, True, False, False]
    assert threshold_rule(counts, SDCParams(threshold=11)).tolist() == [
        False,
        True,
        True,
        True,
        False,
    ]


def test_zeros_rule_and_structural_zeros():
    assert zeros_rule([0, 1, 10], DEFAULTS).tolist() == [True, False, False]
    # Structural zeros (e.g. pregnancies among men): a project declares zeros not disclosive.
    assert zeros_rule([0, 1, 10], SDCParams(zeros_are_disclosive=False)).tolist() == [
        False,
        False,
        False,
    ]


def test_dominance_boundary_exactly_90_percent():
    # top 2 / total: 90/100 = 0.90 (fails: at the limit), 89/100 (passes), 9/10 (fails).
    top2 = [90, 89, 9, 0.9]
    total = [100, 100, 10, 1]
    assert dominance_rule(top2, total, DEFAULTS).tolist() == [True, False, True, True]
    # An all-zero cell has no dominance to speak of.
    assert dominance_rule([0], [0], DEFAULTS).tolist() == [False]


def test_p_ratio_boundary():
    # (total - largest - second) / largest against p = 0.10.
    total = [120, 119.99, 30, 0, 5]
    largest = [100, 100, 20, 0, 5]
    second = [10, 10, 0, 0, 0]
    count = [12, 12, 11, 11, 1]
    # 10/100 = 0.10 is not below p: passes; 9.99/100 fails; 10/20 passes; all zero: fails
    # (zeros are disclosive); a single contributor: 0/5 fails.
    assert p_ratio_rule(total, largest, second, count, DEFAULTS).tolist() == [
        False,
        True,
        False,
        True,
        True,
    ]
    no_zeros = SDCParams(zeros_are_disclosive=False)
    assert p_ratio_rule(total, largest, second, count, no_zeros).tolist()[3] is False
    # Empty cells are the zeros rule's business, not the p-ratio's.
    assert p_ratio_rule([0], [0], [0], [0], DEFAULTS).tolist() == [False]


def test_negative_and_missing_rules():
    assert negative_rule([-0.01, 0, 3, np.nan], DEFAULTS).tolist() == [True, False, False, False]
    assert not negative_rule([-1], SDCParams(negatives="absolute")).any()
    assert missing_rule([0, 2], DEFAULTS).tolist() == [False, False]
    assert missing_rule([0, 2], SDCParams(check_missing_values=True)).tolist() == [False, True]


def test_rule_mask_needs_its_columns():
    stats = pd.DataFrame({"count": [12]})
    with pytest.raises(ValueError, match="dominance rule needs a 'total' column"):
        rule_mask(stats, DEFAULTS, Rule.DOMINANCE)
    with pytest.raises(ValueError, match="needs a 'top_n' column"):
        rule_mask(
            stats.assign(total=1, largest=1, second=0),
            SDCParams(dominance_n=3),
            Rule.DOMINANCE,
        )


# --------------------------------------------------------------------------------------
# Cells: verdicts and reasons in words
# --------------------------------------------------------------------------------------


def _magnitude_cells() -> pd.DataFrame:
    """Five cells of a sum table, statistics written out by hand."""
    index = pd.MultiIndex.from_tuples(
        [
            ("Bretagne", "80+"),
            ("Bretagne", "0-17"),
            ("Corse", "80+"),
            ("Corse", "0-17"),
            ("Normandie", "80+"),
        ],
        names=["region", "age"],
    )
    return pd.DataFrame(
        {
            # 3 contributors; 12 contributors 45+45+10x1; 12 x 10; empty; 12 with a -5
            "count": [3, 12, 12, 0, 12],
            "total": [30, 100, 120, 0, 115],
            "largest": [10, 45, 10, 0, 10],
            "second": [10, 45, 10, 0, 10],
            "minimum": [10, 1, 10, np.nan, -5],
            "missing": [0, 0, 2, 3, 0],
        },
        index=index,
    )


def test_evaluate_cells_verdicts_and_reasons():
    rules = (
        Rule.THRESHOLD | Rule.ZEROS | Rule.DOMINANCE | Rule.P_RATIO | Rule.NEGATIVE | Rule.MISSING
    )
    cells = evaluate_cells(_magnitude_cells(), SDCParams(check_missing_values=True), rules, "sum")
    # Bretagne 80+: 3 contributors (threshold), 20/30 = 67% (no dominance), p: 10/10 = 1.
    # Bretagne 0-17: 90/100 = exactly 90%: dominance; p: 10/45 = 0.22 passes.
    # Corse 80+: 20/120 = 17%, p = 100/10 = 10: only the missing values: review.
    # Corse 0-17: empty: zeros; and 3 missing values.
    # Normandie 80+: a negative value: review.
    assert cells.verdicts.tolist() == ["fail", "fail", "review", "fail", "review"]
    assert cells.flags(Rule.DOMINANCE).tolist() == [False, True, False, False, False]
    assert cells.counts() == {
        "threshold": 1,
        "zeros": 1,
        "dominance": 1,
        "p_ratio": 0,
        "negative": 1,
        "missing": 2,
        "min_max": 0,
        "dof": 0,
        "not_a_count": 0,
        "recoverable": 0,
    }
    assert cells.rules_of(3) == Rule.ZEROS | Rule.MISSING
    # Worst cells first, then in table order.
    assert cells.texts == (
        "cell (Bretagne, 80+): 3 contributors, below the threshold of 10",
        "cell (Bretagne, 0-17): the largest 2 contributors make 90.0% of the cell total, "
        "at or above the limit of 90%",
        "cell (Corse, 0-17): no contributors (all 3 values are missing); "
        "zeros are disclosive under these rules",
        "cell (Corse, 0-17): 3 records with a missing value; a checker must review",
        "cell (Corse, 80+): 2 records with a missing value; a checker must review",
        "cell (Normandie, 80+): holds negative values (smallest -5); dominance and p-ratio were "
        "computed on absolute values; a checker must review",
    )
    reasons = cells.reason_series()
    assert (
        reasons.iloc[2]
        == "cell (Corse, 80+): 2 records with a missing value; a checker must review"
    )
    assert cells.verdict is Verdict.FAIL


def test_missing_values_off_by_default():
    rules = Rule.THRESHOLD | Rule.ZEROS | Rule.MISSING
    cells = evaluate_cells(_magnitude_cells(), DEFAULTS, rules, "sum")
    # Corse 80+ (2 missing of 14 records, 12 contributors) passes when missing values are
    # not checked; Corse 0-17 (all missing) is an empty cell.
    assert cells.verdicts.tolist() == ["fail", "pass", "pass", "fail", "pass"]


def test_reason_texts_for_other_rules():
    params = DEFAULTS
    assert describe_cell("80+", Rule.MIN_MAX, {"count": 12}, params, "maximum") == [
        "cell (80+): a maximum is one contributor's own value; a checker must review"
    ]
    assert describe_cell(("F", "80+"), Rule.DOF, {"count": 10, "dof": 9}, params, "std") == [
        "cell (F, 80+): a std over 10 contributors has 9 degrees of freedom, below the minimum "
        "of 10"
    ]
    assert describe_cell("a", Rule.THRESHOLD, {"count": 1}, params) == [
        "cell (a): 1 contributor, below the threshold of 10"
    ]
    p_text = describe_cell("a", Rule.P_RATIO, {"total": 105, "largest": 100, "second": 1}, params)
    assert p_text == [
        "cell (a): without its 2 largest contributions the cell total is 4.0% of the largest, "
        "below p = 10% (the second largest contributor could estimate the largest)"
    ]
    assert describe_cell("a", Rule.NOT_A_COUNT, {"value": 2.5}, params) == [
        "cell (a): 2.5 is not a count (a whole number of 0 or more); a checker must review"
    ]
    assert format_label(("Île-de-France", 3)) == "(Île-de-France, 3)"


def test_dof_check_boundary():
    assert check_dof(9, DEFAULTS) == (
        Verdict.FAIL,
        "residual degrees of freedom 9, below the minimum of 10",
    )
    assert check_dof(10, DEFAULTS) == (
        Verdict.PASS,
        "residual degrees of freedom 10, at least the minimum of 10",
    )
    assert check_dof(np.float64(9.0), DEFAULTS)[0] is Verdict.FAIL
    assert check_dof(float("nan"), DEFAULTS)[0] is Verdict.REVIEW
    assert check_dof(None, DEFAULTS)[0] is Verdict.REVIEW
    assert check_dof(9, SDCParams(min_residual_dof=5))[0] is Verdict.PASS


def test_round_to_base():
    assert round_to_base([0, 2, 2.5, 3, 7, 8, -3, np.nan], 5).tolist()[:7] == [
        0,
        0,
        5,
        5,
        5,
        10,
        -5,
    ]
    assert np.isnan(round_to_base([np.nan], 5)[0])
    with pytest.raises(ValueError):
        round_to_base([1], 0)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

counts_st = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30)


@settings(max_examples=examples(200), deadline=None)
@given(counts=counts_st, t1=st.integers(1, 30), extra=st.integers(0, 30), zeros=st.booleans())
def test_raising_the_threshold_never_turns_fail_into_pass(counts, t1, extra, zeros):
    stats = pd.DataFrame({"count": counts})
    rules = Rule.THRESHOLD | Rule.ZEROS
    low = SDCParams(threshold=t1, zeros_are_disclosive=zeros)
    high = SDCParams(threshold=t1 + extra, zeros_are_disclosive=zeros)
    before = evaluate_cells(stats, low, rules).codes
    after = evaluate_cells(stats, high, rules).codes
    assert (after >= before).all()


@settings(max_examples=examples(200), deadline=None)
@given(
    top=st.floats(0, 1e6),
    rest=st.floats(0, 1e6),
    k1=st.floats(0.05, 1.0),
    k2=st.floats(0.05, 1.0),
)
def test_lowering_k_never_turns_a_dominance_fail_into_pass(top, rest, k1, k2):
    strict, loose = min(k1, k2), max(k1, k2)
    total = top + rest
    flagged_loose = dominance_rule([top], [total], SDCParams(dominance_k=loose))[0]
    flagged_strict = dominance_rule([top], [total], SDCParams(dominance_k=strict))[0]
    assert flagged_strict or not flagged_loose
