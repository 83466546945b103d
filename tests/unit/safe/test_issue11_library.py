"""Issue #11, the researcher's library: golden tests with the trap of each defect class.

Each test is written so that it fails on the code before the fix (an assertion about the
verdict or the record, not only a missing name): classes 1 (multi-key axes hide empty
combinations), 7 (per-cell outcomes collide), 8 (one wide table makes results.json unreadable),
9 (records with a missing key published unchecked) and 10 (list aggfunc, a SafeTable edited in
place keeps its badge).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from havre.safe import Session
from havre.sdc import SDCParams, Verdict, check_frequency_table, check_magnitude_table
from havre.sdc.tables import MAX_CELLS


def K(*parts: object) -> str:
    """The unambiguous outcome key of a label: a JSON array of its levels."""
    return json.dumps(list(parts), ensure_ascii=False)


@pytest.fixture
def session(tmp_path):
    return Session(tmp_path, name="s", show=False, durable=False)


def _people() -> pd.DataFrame:
    # Regions N and G, sexes F and M, age bands; nobody in region G is male.
    rows = [("N", "F", "young")] * 15 + [("N", "M", "young")] * 12 + [("G", "F", "young")] * 14
    rows += [("N", "F", "old")] * 11 + [("N", "M", "old")] * 13 + [("G", "F", "old")] * 20
    df = pd.DataFrame(rows, columns=["region", "sex", "age"])
    df["cost"] = np.arange(len(df), dtype=float) % 7 + 10.0
    return df


# ----------------------------------------------------------------------------------------
# 1. Multi-variable axes show every combination
# ----------------------------------------------------------------------------------------


def test_crosstab_with_two_row_keys_shows_and_fails_the_empty_combination(session):
    df = _people()
    table = session.crosstab([df["region"], df["sex"]], df["age"])
    # The trap: ("G", "M") occurs nowhere. Shown as zeros, and zeros fail (as in ACRO).
    assert ("G", "M") in table.index
    assert table.loc[("G", "M")].tolist() == [0, 0]
    assert table.safe_output.status == "fail"
    assert any("cell (G, M, old): no contributors" in r for r in table.safe_output.reasons)
    pd.testing.assert_frame_equal(
        pd.DataFrame(table),
        pd.crosstab([df["region"], df["sex"]], df["age"], dropna=False),
        check_dtype=False,
    )


def test_pivot_table_with_two_keys_on_each_axis_shows_every_combination(session):
    df = _people().assign(smoker=lambda d: np.where(np.arange(len(d)) % 2 == 0, "y", "n"))
    table = session.pivot_table(
        df, index=["region", "sex"], columns=["age", "smoker"], values="cost", aggfunc="mean"
    )
    assert table.shape == (4, 4)
    assert table.loc[("G", "M")].isna().all()  # an empty statistic cell, shown
    verdicts = table.safe_output.check.cell_verdicts
    assert (verdicts.loc[("G", "M")] == "fail").all()
    assert table.safe_output.status == "fail"


def test_mixed_categorical_and_plain_keys_give_the_full_product(session):
    df = _people()
    df["age"] = pd.Categorical(df["age"], categories=["young", "old", "very old"])
    check = check_frequency_table(df, ["region", "age"], "sex")
    assert len(check.table) == 2 * 3
    assert check.table.loc[("G", "very old")].tolist() == [0, 0]
    assert check.table.loc[("G", "young"), "M"] == 0
    assert check.verdict is Verdict.FAIL


def test_too_many_combinations_is_refused_with_a_sentence():
    n = 3000
    df = pd.DataFrame({"a": np.arange(n), "b": np.arange(n) % 1999, "c": np.arange(n) % 7})
    with pytest.raises(ValueError, match=r"combinations, more than the .* cells a table may"):
        check_frequency_table(df, ["a", "b"], "c")
    assert MAX_CELLS >= 4_000_000


# ----------------------------------------------------------------------------------------
# 7. Per-cell outcomes: one key per cell
# ----------------------------------------------------------------------------------------


def test_tuple_labels_with_commas_never_share_an_outcome_key(session):
    # ("x, y", "z") has 12 records and passes; ("x", "y, z") has 2 and fails. Joined with ", "
    # both were "x, y, z", and whichever came last was written for both.
    df = pd.DataFrame(
        {"a": ["x, y"] * 12 + ["x"] * 2, "b": ["z"] * 12 + ["y, z"] * 2, "c": ["p"] * 14}
    )
    table = session.crosstab([df["a"], df["b"]], df["c"])
    outcome = session.output(table.safe_output.uid).outcome
    column = outcome[K("p")]
    assert len(column) == len(table.index)
    assert column[K("x, y", "z")] == "ok"
    assert column[K("x", "y, z")] == "threshold"
    assert column[K("x", "z")] == "zeros"


def test_the_number_1_and_the_text_1_are_two_keys(session):
    df = pd.DataFrame({"r": [1] * 12 + ["1"] * 3, "c": ["p"] * 15})
    table = session.crosstab(df["r"], df["c"])
    column = table.safe_output.outcome[K("p")]
    assert column[K(1)] == "ok"
    assert column[K("1")] == "threshold"
    # Every failing cell reads as failing in results.json (read back from disk).
    record = json.loads((session.path / "results.json").read_text())["results"]["output_0"]
    assert sorted(record["outcome"]['["p"]'].values()) == ["ok", "threshold"]
    assert record["havre"]["recorded"]["label_encoding"] == "json-array"
    # ACRO's loader (pandas.DataFrame.from_dict) still reads it.
    assert pd.DataFrame.from_dict(record["outcome"]).shape == (2, 1)


# ----------------------------------------------------------------------------------------
# 8. One wide table can't blind the checker
# ----------------------------------------------------------------------------------------


def test_a_2000_by_2000_table_keeps_results_json_small_and_the_other_records(session):
    rng = np.random.default_rng(11)
    n = 40_000
    labels = [f"k{i:04d}" for i in range(2000)]
    wide = pd.DataFrame(
        {
            "r": pd.Categorical.from_codes(rng.integers(0, 2000, n), categories=labels),
            "c": pd.Categorical.from_codes(rng.integers(0, 2000, n), categories=labels),
        }
    )
    small = _people()
    session.crosstab(small["region"], small["age"])
    big = session.crosstab(wide["r"], wide["c"])
    session.crosstab(small["sex"], small["age"])
    assert big.shape == (2000, 2000)
    results = session.path / "results.json"
    assert results.stat().st_size < 2 * 1024 * 1024, results.stat().st_size
    document = json.loads(results.read_text())
    assert list(document["results"]) == ["output_0", "output_1", "output_2"]
    record = document["results"]["output_1"]
    assert record["status"] == "fail"
    recorded = record["havre"]["recorded"]
    assert recorded["cells"] == 4_000_000
    assert recorded["outcome"] == "cells not ok"
    assert recorded["outcome_cells"] == 2000
    assert recorded["outcome_not_recorded"] == 4_000_000 - 2000  # every cell fails
    # The counts per rule are of every cell.
    sdc = record["files"][0]["sdc"]
    assert sdc["summary"]["threshold"] == 4_000_000
    assert len(sdc["cells"]["threshold"]) == 2000
    assert (
        record["havre"]["rule_counts"]["threshold"] + record["havre"]["rule_counts"]["zeros"]
        == 4_000_000
    )
    assert document["results"]["output_2"]["status"] == "pass"


def test_a_small_table_records_every_cell(session):
    df = _people()
    table = session.crosstab(df["region"], df["age"])
    recorded = table.safe_output.havre["recorded"]
    assert recorded == {
        "cells": 4,
        "outcome": "every cell",
        "outcome_cells": 4,
        "outcome_not_recorded": 0,
        "label_encoding": "json-array",
    }


# ----------------------------------------------------------------------------------------
# 9. Records with a missing key
# ----------------------------------------------------------------------------------------


def _with_one_missing_region() -> pd.DataFrame:
    df = _people()
    df.loc[0, "region"] = None
    return df


def test_one_record_with_a_missing_region_is_a_failing_cell_not_a_passing_sentence(session):
    df = _with_one_missing_region()
    table = session.crosstab(df["region"], df["age"])
    output = table.safe_output
    assert output.status == "fail"
    assert pd.isna(table.index[-1])
    assert table.iloc[-1].tolist() == [0, 1]
    assert "cell (NaN, young): 1 contributor, below the threshold of 10" in output.reasons
    text = (session.path / "results.json").read_text()
    assert "left out" not in text
    assert not re.search(r"\b1 records? ha(s|ve) no value", text)


def test_the_missing_key_row_is_suppressed_like_any_cell(session):
    df = _with_one_missing_region()
    table = session.crosstab(df["region"], df["age"], margins=True, suppress=True)
    assert pd.isna(table.index[2])
    assert table.iloc[2].isna().all()  # the NaN row's 1 is blank (and protected)
    assert "All" not in table.index  # no margins around blanks
    output = table.safe_output
    assert output.status == "review"
    assert "cell (NaN, young): 1 contributor, below the threshold of 10" in output.reasons
    note = output.check.findings[0].text
    assert "row or column of their own" in note and not re.search(r"\d", note)


def test_missing_keys_match_pandas_with_dropna_false_for_magnitude_tables():
    df = _with_one_missing_region()
    df.loc[5, "age"] = None
    check = check_magnitude_table(df, "region", "age", "cost", "mean")
    expected = pd.crosstab(df["region"], df["age"], values=df["cost"], aggfunc="mean", dropna=False)
    assert check.table.shape == expected.shape
    assert check.table.index[-1] is np.nan or pd.isna(check.table.index[-1])
    assert pd.isna(check.table.columns[-1])
    assert (check.cell_verdicts.iloc[-1] == "fail").all()


# ----------------------------------------------------------------------------------------
# 10. Smaller defects
# ----------------------------------------------------------------------------------------


def test_a_list_aggfunc_is_refused_with_a_sentence(session):
    df = _people()
    with pytest.raises(ValueError, match="one statistic per table"):
        session.crosstab(df["region"], df["age"], values=df["cost"], aggfunc=["mean", "std"])
    with pytest.raises(ValueError, match="one statistic per table"):
        session.pivot_table(df, index="region", values="cost", aggfunc=["mean", "std"])
    assert session.outputs == {}


def test_a_table_edited_in_place_loses_its_pass_badge(session):
    df = _people()
    table = session.crosstab(df["sex"], df["age"])
    assert table.safe_output.status == "pass"
    assert ">PASS<" in table._repr_html_()
    assert not table.edited
    table.loc["F", "old"] = 1  # a disclosive value typed in by hand
    assert table.edited
    html = table._repr_html_()
    assert ">PASS<" not in html
    assert "EDITED: NOT CHECKED" in html
    # The record is of the values as written, untouched.
    assert session.output("output_0").status == "pass"


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.__setitem__("extra", 1),
        lambda t: t.rename(index={"F": "G"}, inplace=True),
        lambda t: t.drop(index="M", inplace=True),
        lambda t: t.iloc.__setitem__((0, 0), t.iloc[0, 0]),  # same value: not an edit
    ],
)
def test_any_in_place_change_is_seen(session, edit):
    table = session.crosstab(_people()["sex"], _people()["age"])
    before = table.copy()
    edit(table)
    assert table.edited == (not table.equals(before) or list(table.index) != list(before.index))


def test_project_defaults_hold_in_these_tests():
    assert SDCParams().threshold == 10
