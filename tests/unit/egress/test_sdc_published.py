"""Unit tests for havre.sdc.published: the server's check of a published count table.

Golden tables are CSV text as a researcher would write it; the verdicts are worked out by
hand in the comments.  The property tests audit the fast margin algebra against linear
programming (``scipy.optimize.linprog``): for every blank cell, its smallest and largest value
over all non-negative tables agreeing with everything published.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from havre.sdc import Rule, SDCParams, Verdict, check_frequency_csv, protect_pattern
from havre.sdc.published import (
    MARGIN_WORDS,
    _bridges,
    _determined,
    _line_system,
    audit_margins,
    check_count_csv_text,
    recoverable_cells,
)
from tests.hypothesis_budget import examples

DEFAULTS = SDCParams()


def check(text: str, params: SDCParams = DEFAULTS, delimiter: str = ","):
    """The service's check of a CSV text (lines may be indented for readability)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return check_count_csv_text("\n".join(lines) + "\n", delimiter=delimiter, params=params)


def recoverable(result) -> list[tuple[str, str]]:
    flags = result.flags(Rule.RECOVERABLE)
    return [(str(r), str(c)) for r, c in flags.stack()[flags.stack()].index]


def fail_texts(result) -> list[str]:
    return [f.text for f in result.findings if f.verdict is Verdict.FAIL]


def grid(result) -> list[list[str]]:
    return result.cell_verdicts.to_numpy().tolist()


# --------------------------------------------------------------------------------------
# Reading: what is a table of counts
# --------------------------------------------------------------------------------------


def test_a_table_of_labels_and_numbers_is_checked():
    result = check(
        """
        region,0-17,80+
        Bretagne,9,10
        Corse,1,0
        """
    )
    assert result is not None
    assert grid(result) == [["fail", "pass"], ["fail", "fail"]]
    assert result.reasons[0] == "cell (Bretagne, 0-17): 9 contributors, below the threshold of 10"
    assert result.properties["margin_rows"] == [] and result.properties["margin_columns"] == []


@pytest.mark.parametrize(
    "text",
    [
        "a,b\nx,hello\n",  # text in a cell
        "a,b\nx,nan\ny,4\n",  # "nan" is no number
        "a,b\nx,inf\ny,4\n",  # nor is infinity
        "a,b\nx,1e400\n",  # overflows to infinity
        "a,b,c\nx,4,hello\n",  # text after the numbers
        "a\nx\ny\n",  # labels only
        "a,b\nx,\ny,\n",  # no number at all
        "a,b\n",  # a header only
        "",  # nothing
        'a,b\nx,"4\n',  # broken quoting
        "a,b\nx,4,5,6\ny,1\n",  # ragged rows
    ],
)
def test_what_is_not_a_table_of_counts_is_not_checked(text):
    assert check_count_csv_text(text, delimiter=",", params=DEFAULTS) is None


def test_blank_cells_are_suppressed_and_odd_numbers_reviewed():
    result = check(
        """
        g,x,y
        a,12,2.5
        b, ,-3
        c,40,40
        """
    )
    # (b, x) is blank (whitespace): suppressed; 2.5 and -3 are no counts: review.
    assert grid(result) == [["pass", "review"], ["pass", "review"], ["pass", "pass"]]
    assert result.rule_counts["not_a_count"] == 2
    assert "1 cell is blank (taken as suppressed)" in [f.text for f in result.findings]


def test_tab_separated_and_several_label_columns():
    result = check(
        """
        region\tsex\tyes\tno
        A\tm\t12\t20
        A\tf\t15\t30
        All\t\t27\t50
        """,
        delimiter="\t",
    )
    assert result.table.index.nlevels == 2
    assert result.properties["margin_rows"] == ["(All, )"]
    assert result.verdict is Verdict.PASS


def test_the_two_entry_points_agree():
    text = "g,x,y,Total\na,12,,30\nb,20,25,45\nTotal,32,43,75\n"
    from_text = check_count_csv_text(text, delimiter=",", params=DEFAULTS)
    frame = pd.read_csv(io.StringIO(text), index_col=0)
    from_frame = check_frequency_csv(frame)
    assert from_text.summary == from_frame.summary
    assert from_text.reasons == from_frame.reasons


# --------------------------------------------------------------------------------------
# Margins: found by label (any usual word) and by value, and verified
# --------------------------------------------------------------------------------------

LABELS = ["All", "all", "Total", "Totals", "TOTAL", " total ", "Sum", "Overall", "Grand total",
          "Ensemble", "Total général", "Tous", "Somme", "Total (all regions)"]  # fmt: skip


@pytest.mark.parametrize("label", LABELS)
def test_a_row_dropped_by_hand_with_the_true_totals_kept_fails(label):
    # Region C (5 men, 4 women) was deleted by hand; the totals still include it, so
    # total - shown = C's counts: published by subtraction.
    result = check(
        f"""
        region,men,women,{label}
        A,20,30,50
        B,40,25,65
        {label},65,59,124
        """
    )
    assert result.verdict is Verdict.FAIL
    texts = fail_texts(result)
    assert any(
        text.startswith("column (men): the margin")
        and "add up to 60; the difference, 5, is a line left out" in text
        for text in texts
    ), texts


@pytest.mark.parametrize("label", LABELS)
def test_a_blank_cell_is_recoverable_whatever_the_margin_is_called(label):
    result = check(
        f"""
        region,men,women,{label}
        A,20,,50
        B,40,25,65
        {label},60,55,115
        """
    )
    assert recoverable(result) == [("A", "women")]
    assert result.verdict is Verdict.FAIL
    assert (
        "cell (A, women): suppressed, but its value (30) can be recovered by subtracting the "
        "published cells from a published total"
    ) in result.reasons


def test_margin_words_are_english_and_french():
    assert {"total", "all", "sum", "overall", "ensemble", "total général", "tous", "somme"} <= (
        MARGIN_WORDS
    )


def test_an_unlabelled_total_row_is_found_by_its_values():
    # "Z" is A + B + C in every column where that can be checked: a total in disguise.
    result = check(
        """
        region,x,y,z
        A,20,,30
        B,40,25,10
        C,11,12,13
        Z,71,67,53
        """
    )
    assert result.properties["margin_rows"] == ["(Z)"]
    assert recoverable(result) == [("A", "y")]
    assert any("taken as a margin" in f.text for f in result.findings)


def test_unlabelled_totals_are_found_when_every_column_has_a_blank():
    # 12 x 12 counts, one blank in every row and column (a shifted diagonal), totals labelled
    # "Grand" and "G" (no margin word): no column can be checked exactly, but the last row is
    # at least the sum of the shown cells everywhere; each row's lone blank is recoverable.
    rng = np.random.default_rng(5)
    inner = rng.poisson(30, (12, 12)).astype(float)
    full = np.vstack(
        [np.hstack([inner, inner.sum(1, keepdims=True)]), np.append(inner.sum(0), inner.sum())]
    )
    for i in range(12):
        full[i, (i + 3) % 12] = np.nan
    frame = pd.DataFrame(
        full,
        index=[f"r{i}" for i in range(12)] + ["Grand"],
        columns=[f"c{j}" for j in range(12)] + ["G"],
    )
    result = check(frame.to_csv(float_format="%.0f"))
    assert result.properties["margin_rows"] == ["(Grand)"]
    assert result.properties["margin_columns"] == ["(G)"]
    assert len(recoverable(result)) == 12
    expected = inner[np.arange(12), (np.arange(12) + 3) % 12]
    assert result.cells.stats["recovered"].dropna().tolist() == expected.tolist()


def test_rows_that_only_happen_to_add_up_in_one_column_are_not_margins():
    result = check(
        """
        region,x,y,z
        A,20,30,12
        B,40,25,10
        C,60,11,14
        """
    )
    assert result.properties["margin_rows"] == []
    assert result.verdict is Verdict.PASS


@pytest.mark.parametrize("where", [0, 1])
def test_a_margin_at_the_top_or_in_the_middle(where):
    lines = ["A,20,,50", "B,40,25,65"]
    lines.insert(where, "Total,60,55,115")
    result = check("region,men,women,Total\n" + "\n".join(lines))
    assert recoverable(result) == [("A", "women")]


def test_a_grand_total_on_a_one_way_table():
    # One column of counts and a total: the one blank is the total minus the rest.
    result = check(
        """
        region,n
        A,20
        B,
        C,31
        Total,60
        """
    )
    assert recoverable(result) == [("B", "n")]
    assert result.cells.stats["recovered"].dropna().tolist() == [9.0]
    # and a dropped line is the difference
    dropped = check("region,n\nA,20\nC,31\nTotal,60\n")
    assert any("the difference, 9, is a line left out" in t for t in fail_texts(dropped))


def test_a_grand_total_alone_still_gives_a_lone_blank_away():
    # Only the corner (125) is shown of the margins: 125 - 30 - 40 - 25 = 30 for (A, x).
    result = check(
        """
        g,x,y,Total
        A,,30,
        B,40,25,
        Total,,,125
        """
    )
    assert ("A", "x") in recoverable(result)
    values = result.cells.stats["recovered"].to_numpy().reshape(result.shape)
    assert values[0, 0] == 30


def test_subtotals_are_not_checked_automatically_and_say_so():
    result = check(
        """
        region,sex,yes,no
        G,m,12,20
        G,f,15,30
        G,Total,27,50
        H,m,12,20
        H,f,15,30
        H,Total,27,50
        All,,54,100
        """
    )
    assert result.verdict is Verdict.FAIL
    assert any("(G, Total), (H, Total) are subtotals" in t for t in fail_texts(result))


def test_a_margin_smaller_than_its_shown_cells_is_inconsistent():
    result = check(
        """
        region,men,women,Total
        A,20,,50
        B,40,25,65
        Total,50,55,115
        """
    )
    assert any(
        "column (men): the margin (Total) shows 50, less than the 60" in t
        for t in fail_texts(result)
    )


def test_blank_cells_that_add_up_to_a_small_count_fail():
    # Row A's two blanks add up to 4 (50 - 46): a small count, however it is split.
    result = check(
        """
        region,w,x,y,z,Total
        A,20,26,,,50
        B,40,25,30,30,125
        """
    )
    assert any(
        "row (A): its 2 blank cells add up to 4 (the margin (Total) minus the shown cells), "
        "below the threshold of 10: together they are a small count" in t
        for t in fail_texts(result)
    )
    assert result.verdict is Verdict.FAIL


def test_blank_cells_that_add_up_to_zero_are_all_zero():
    result = check(
        """
        region,w,x,y,Total
        A,20,,,20
        B,40,25,30,95
        """
    )
    assert recoverable(result) == [("A", "x"), ("A", "y")]
    assert result.cells.stats["recovered"].dropna().tolist() == [0.0, 0.0]


def test_a_cycle_of_blanks_protects_and_a_bridge_does_not():
    # Blanks at (A,x) (A,y) (B,x) (B,y): a rectangle, each row and column has two; every
    # value can move round the cycle: nothing recoverable.
    # The true table: A (12, 18, 30), B (20, 15, 40), C (20, 25, 30).
    rectangle = """
        g,x,y,z,Total
        A,,,30,60
        B,,,40,75
        C,20,25,30,75
        Total,52,58,100,210
        """
    assert recoverable(check(rectangle)) == []
    # One more blank, (C, z), hanging off the rectangle by itself in column z: a bridge.
    bridged = rectangle.replace("C,20,25,30,75", "C,20,25,,75")
    assert recoverable(check(bridged)) == [("C", "z")]


def test_a_zero_forced_by_non_negativity_through_several_lines():
    # The true table: A (6, 6, 20, 20), B (6, 6, 20, 20), C (0, 0, 15, 15), D (20, 20, 15, 15).
    # Rows A and B hold blanks only in columns x and y, and those blanks add up (12 + 12) to
    # all that columns x and y miss (12 + 12): so C's blanks in x and y must be 0, although
    # no single line says so.  Linear algebra alone does not find it; the flow does.
    result = check(
        """
        g,x,y,z,w,Total
        A,,,20,20,52
        B,,,20,20,52
        C,,,,,30
        D,20,20,,,70
        Total,32,32,70,70,204
        """
    )
    got = recoverable(result)
    assert got == [("C", "x"), ("C", "y")]
    values = result.table.to_numpy(dtype=float)
    low, high = _lp_bounds(values, row_margin=4, col_margin=4)
    blank = [(result.table.index[r], result.table.columns[c])
             for r, c in np.argwhere(~np.isfinite(values))]  # fmt: skip
    pinned = [cell for cell, lo, hi in zip(blank, low, high, strict=True) if hi - lo < 1e-6]
    assert pinned == got


def test_small_upper_bounds_through_several_lines_fail():
    # The 2 x 2 block (r0, r2) x (c0, c1) adds up to 5 although no single line shows it:
    # rows r0 and r2 total 15 between them, and 10 of that is in column c2.
    result = check(
        """
        g,c0,c1,c2,Total
        r0,,,,
        r1,,,40,65
        r2,,,,
        Total,,,50,80
        """
    )
    texts = fail_texts(result)
    assert any(
        t.startswith(
            "cell (r0, c0): suppressed, but the margins and shown cells show it is at "
            "most 5, below the threshold of 10"
        )  # fmt: skip
        for t in texts
    ), texts


def test_several_margin_rows_must_agree_and_fill_each_other_in():
    result = check(
        """
        g,x,y
        A,20,30
        B,40,25
        Total,60,
        All,60,55
        """
    )
    assert ("Total", "y") in recoverable(result)
    disagree = check("g,x,y\nA,20,30\nB,40,25\nTotal,60,55\nAll,61,55\n")
    assert any("are all margins (totals) but disagree" in t for t in fail_texts(disagree))


def test_a_total_of_the_shown_cells_only_says_nothing_about_the_blanks():
    # Labelled as the total of the shown cells: 30 = 30; the blank is not 0, it is unknown.
    result = check(
        """
        g,x,y,All (shown cells)
        A,30,,30
        B,40,25,65
        All (shown cells),70,25,95
        """
    )
    assert recoverable(result) == []
    assert fail_texts(result) == []
    wrong = check("g,x,y,All (shown cells)\nA,30,,35\nB,40,25,65\n")
    assert any("labelled a total of the shown cells" in t for t in fail_texts(wrong))


def test_negative_or_fractional_tables_still_get_the_linear_check():
    result = check(
        """
        g,x,y,Total
        A,-2,,5.5
        B,4,1,5
        Total,2,8.5,10.5
        """
    )
    assert recoverable(result) == [("A", "y")]
    assert result.cells.stats["recovered"].dropna().tolist() == [7.5]
    assert result.rule_counts["not_a_count"] >= 2


# --------------------------------------------------------------------------------------
# Moved from test_sdc_tables.py: the count-table checks given a DataFrame
# --------------------------------------------------------------------------------------


def test_frequency_csv_threshold_and_zeros():
    table = pd.DataFrame(
        {"0-17": [9, 1], "80+": [10, 0]}, index=pd.Index(["Bretagne", "Corse"], name="region")
    )
    result = check_frequency_csv(table)
    assert grid(result) == [["fail", "pass"], ["fail", "fail"]]
    assert result.reasons[0] == "cell (Bretagne, 0-17): 9 contributors, below the threshold of 10"


def test_frequency_csv_blank_and_odd_cells():
    table = pd.DataFrame({"x": [12, "", "c"], "y": [2.5, -3, 40]})
    result = check_frequency_csv(table)
    # blanks and markers: suppressed (not checked); 2.5 and -3 are no counts: review.
    assert grid(result) == [["pass", "review"], ["pass", "review"], ["pass", "pass"]]
    assert result.rule_counts["not_a_count"] == 2
    assert result.findings[-1].text == "2 cells are blank (taken as suppressed)"


def test_frequency_csv_catches_the_totals_leak():
    # A naive release: the small cell blanked, the margins left as they were.
    table = pd.DataFrame(
        {"A": [20, 25, 45], "B": [30, 35, 65], "C": [np.nan, 40, 43], "All": [53, 100, 153]},
        index=["X", "Y", "All"],
    )
    result = check_frequency_csv(table)
    assert result.verdict is Verdict.FAIL
    assert result.flags(Rule.RECOVERABLE).to_numpy().tolist()[0] == [False, False, True, False]
    assert result.reasons == (
        "cell (X, C): suppressed, but its value (3) can be recovered by subtracting the "
        "published cells from a published total",
        "1 cell is blank (taken as suppressed)",
    )


def test_a_bridge_between_two_rectangles_is_caught():
    # Two suppressed rectangles joined by one cell: every row and column has two suppressed
    # cells, yet the joining cell follows from the totals (it is a bridge).
    pattern = np.zeros((4, 4), dtype=bool)
    pattern[np.ix_([0, 1], [0, 1])] = True
    pattern[np.ix_([2, 3], [2, 3])] = True
    assert not recoverable_cells(pattern).any()
    bridged = pattern.copy()
    bridged[0, 2] = True
    exposed = recoverable_cells(bridged)
    assert exposed.tolist()[0][2] is True and exposed.sum() == 1
    protected = protect_pattern(bridged, np.full((4, 4), 20.0))
    assert (protected >= bridged).all()
    assert not recoverable_cells(protected).any()


# --------------------------------------------------------------------------------------
# Properties: the fast algebra against linear algebra and linear programming
# --------------------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    seed=st.integers(0, 2**32 - 1),
    density=st.floats(0.05, 0.8),
)
def test_bridges_are_exactly_the_linearly_determined_blanks(shape, seed, density):
    pattern = np.random.default_rng(seed).random(shape) < density
    a, positions = _line_system(pattern)
    dense = np.zeros(shape, dtype=bool)
    determined = _determined(a)
    dense[positions[determined, 0], positions[determined, 1]] = True
    assert (recoverable_cells(pattern) == dense).all()


def test_bridges_of_a_multigraph():
    # Parallel edges are a cycle; a self-loop is never a bridge; a path is all bridges.
    assert _bridges(3, np.array([0, 0, 1]), np.array([1, 1, 2])).tolist() == [False, False, True]
    assert _bridges(2, np.array([0, 0]), np.array([0, 1])).tolist() == [False, True]


def _lp_bounds(
    values: np.ndarray, row_margin: int | None, col_margin: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value of each blank cell (row-major) over the non-negative tables
    that agree with every shown cell and every margin equation (``inf`` when unbounded)."""
    n_rows, n_cols = values.shape
    blank = np.argwhere(~np.isfinite(values))
    where = {tuple(p): i for i, p in enumerate(blank)}
    lines = []
    if col_margin is not None:
        lines += [([(r, c) for c in range(n_cols) if c != col_margin], (r, col_margin))
                  for r in range(n_rows)]  # fmt: skip
    if row_margin is not None:
        lines += [([(r, c) for r in range(n_rows) if r != row_margin], (row_margin, c))
                  for c in range(n_cols)]  # fmt: skip
    a_eq = np.zeros((len(lines), len(blank)))
    b_eq = np.zeros(len(lines))
    for i, (members, total) in enumerate(lines):
        for sign, cell in [(1.0, m) for m in members] + [(-1.0, total)]:
            if cell in where:
                a_eq[i, where[cell]] += sign
            else:
                b_eq[i] -= sign * values[cell]
    low, high = np.zeros(len(blank)), np.zeros(len(blank))
    for j in range(len(blank)):
        cost = np.zeros(len(blank))
        cost[j] = 1.0
        lo = linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        hi = linprog(-cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        assert lo.status == 0, "the true table is a solution"
        low[j] = lo.fun
        high[j] = -hi.fun if hi.status == 0 else np.inf
    return low, high


@st.composite
def published_tables(draw):
    """A true count table with margins on one or both axes, then random blanks anywhere
    (margins included): (published values, margin row or None, margin column or None)."""
    n_rows, n_cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    cell = st.sampled_from([0, 0, 1, 3, 8, 12, 20, 35])
    inner = np.array([[draw(cell) for _ in range(n_cols)] for _ in range(n_rows)], dtype=float)
    axes = draw(st.sampled_from(["rows", "columns", "both"]))
    full, row_margin, col_margin = inner, None, None
    if axes in ("columns", "both"):  # a margin column: every row has a total
        full = np.hstack([full, full.sum(axis=1, keepdims=True)])
        col_margin = n_cols
    if axes in ("rows", "both"):
        full = np.vstack([full, full.sum(axis=0, keepdims=True)])
        row_margin = n_rows
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.floats(0.1, 0.7))
    blank = np.random.default_rng(seed).random(full.shape) < density
    return np.where(blank, np.nan, full), row_margin, col_margin


@settings(max_examples=examples(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=published_tables())
def test_no_blank_the_lp_pins_down_is_passed(table):
    values, row_margin, col_margin = table
    if np.isfinite(values).all():
        return
    rows = pd.Index([f"r{i}" for i in range(values.shape[0])])
    cols = pd.Index([f"c{j}" for j in range(values.shape[1])])
    if row_margin is not None:
        rows = rows.where(np.arange(len(rows)) != row_margin, "Total")
    if col_margin is not None:
        cols = cols.where(np.arange(len(cols)) != col_margin, "Total")
    audit = audit_margins(values, rows, cols, DEFAULTS)
    if audit.margin_rows != ([] if row_margin is None else [row_margin]) or (
        audit.margin_columns != ([] if col_margin is None else [col_margin])
    ):
        return  # another line also adds up (found by value): a different equation system
    low, high = _lp_bounds(values, row_margin, col_margin)
    blank = np.argwhere(~np.isfinite(values))
    pinned = np.abs(high - low) < 1e-6
    recovered = audit.recovered[blank[:, 0], blank[:, 1]]
    # The fast algebra marks exactly the blanks the LP pins down, with the LP's value.
    assert (np.isfinite(recovered) == pinned).all(), (values, low, high, recovered)
    assert np.allclose(recovered[pinned], low[pinned])
    result = check_frequency_csv(pd.DataFrame(values, index=rows, columns=cols))
    if pinned.any():
        assert result.verdict is Verdict.FAIL
    # A blank the LP bounds below the threshold (without pinning it) is a small count: fails.
    if ((high < DEFAULTS.threshold) & ~pinned).any():
        assert result.verdict is Verdict.FAIL, (values, low, high, result.reasons)
