"""Timing of the checked crosstabs against plain pandas (prints; asserts nothing).

Run ``python -m havre.sdc.bench [ROWS]``: 1,000,000 records by default, 50 regions x 100
ages, median of 5 runs each of

* ``pandas.crosstab(region, age)`` and :func:`check_frequency_table` (count table, threshold
  and zeros);
* ``pandas.crosstab(region, age, values=cost, aggfunc="mean")`` and
  :func:`check_magnitude_table` with ``aggfunc="mean"`` (threshold, zeros, dominance,
  p-ratio, negatives);

and, for the record, the checks with their reasons written out in words.
For reference (notes, same kind of machine): ACRO 1.0.2 takes 1.76 s and 6.3 s there.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from .tables import check_frequency_table, check_magnitude_table


def make_records(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic records: region (50 labels), age (0-99), cost (skewed, positive)."""
    rng = np.random.default_rng(seed)
    regions = np.array([f"region-{i:02d}" for i in range(50)])
    return pd.DataFrame(
        {
            "region": regions[rng.integers(0, 50, n_rows)],
            "age": rng.integers(0, 100, n_rows),
            "cost": np.round(rng.gamma(2.0, 1000.0, n_rows), 2),
        }
    )


def median_time(fn: Callable[[], object], runs: int = 5) -> float:
    """Median wall time of ``runs`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Print the timings."""
    args = sys.argv[1:] if argv is None else argv
    n_rows = int(args[0]) if args else 1_000_000
    df = make_records(n_rows)
    rows = [
        ("pandas.crosstab count", lambda: pd.crosstab(df["region"], df["age"])),
        ("check_frequency_table", lambda: check_frequency_table(df, "region", "age")),
        (
            "  + reasons in words",
            lambda: check_frequency_table(df, "region", "age").cell_reasons,
        ),
        (
            "pandas.crosstab mean",
            lambda: pd.crosstab(df["region"], df["age"], values=df["cost"], aggfunc="mean"),
        ),
        (
            "check_magnitude_table mean",
            lambda: check_magnitude_table(df, "region", "age", "cost", "mean"),
        ),
        (
            "  + reasons in words",
            lambda: check_magnitude_table(df, "region", "age", "cost", "mean").cell_reasons,
        ),
    ]
    print(f"{n_rows:,} rows, 50 regions x 100 ages, median of 5 runs")
    results = {}
    for name, fn in rows:
        fn()  # warm up
        results[name] = median_time(fn)
        print(f"  {name:<30} {results[name]:8.3f} s")
    count_ratio = results["check_frequency_table"] / results["pandas.crosstab count"]
    mean_ratio = results["check_magnitude_table mean"] / results["pandas.crosstab mean"]
    print(f"  count: checked / plain = {count_ratio:.2f}; mean: checked / plain = {mean_ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
