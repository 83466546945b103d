"""Limits of the SDC rules engine (``havre.sdc``) found by the safe-analysis library's tests,
and how the server-side check covers them (documented in docs/checker-sdc-rules.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from havre.sdc import SDCParams, check_frequency_csv, check_frequency_table, suppress


def test_the_server_flags_a_suppressed_line_that_the_margins_still_give_away():
    """A line whose cells are all empty can't be hidden by suppression while the grand total
    and the other lines' totals are published: they say the line sums to 0, so every cell in
    it is 0. ``suppress()`` blanks the line; the server's recoverability check (which sees only
    the published CSV) still finds it, so the checker is told."""
    # Row r0 and columns c0, c3 are empty (zeros fail); r1 and r2 hold 10s.
    counts = np.array([[0, 0, 0, 0], [0, 10, 10, 0], [0, 10, 10, 0]])
    rows, cols = np.nonzero(counts)
    records = pd.DataFrame(
        {
            "r": pd.Categorical(
                np.repeat([f"r{i}" for i in rows], counts[rows, cols]),
                categories=[f"r{i}" for i in range(3)],
            ),
            "c": pd.Categorical(
                np.repeat([f"c{j}" for j in cols], counts[rows, cols]),
                categories=[f"c{j}" for j in range(4)],
            ),
        }
    )
    check = check_frequency_table(records, "r", "c", params=SDCParams())
    published = suppress(check, margins=True)
    assert published.loc["r0"].isna().all()  # the whole row is blank, its margin too
    server = check_frequency_csv(published, margins_name="All")
    assert server.rule_counts["recoverable"] > 0, server.reasons
    assert server.verdict.label == "fail"
