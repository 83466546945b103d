"""Benchmark: checked crosstabs through ``havre.safe`` against plain pandas and ACRO 1.0.2,
and the egress service's check of a 1,000,000-cell count table read from CSV.

Targets:

- a checked table through ``havre.safe`` within 2x of plain ``pandas.crosstab``;
- at least 10x faster than ACRO 1.0.2 on the same call;
- the server-side check of a 1,000,000-cell CSV (``havre.sdc.check_frequency_csv`` on a
  1000 x 1000 count table) under 1 s.

Same process, same data (1,000,000 records, 50 regions x 100 ages, skewed positive costs, as in
``havre.sdc.bench``): for each of a count crosstab and a mean crosstab (dominance and p-ratio
checks), with one key per axis (region by age, 5,000 cells) and with two plain keys per axis
(``count2``/``mean2``: region and sex by age band and smoker, 2,000 cells, every combination
shown), the median of ``--runs`` runs (after one warm-up run) of

- ``pandas.crosstab(...)``;
- ``havre.safe`` ``Session.crosstab(...)``: the check, the reasons, and the recording (CSV,
  ``results.json``, checksums, flushed to disk) into a temporary folder;
- ``acro.ACRO(suppress=False).crosstab(...)``: median of ``--acro-runs`` runs (no warm-up: it
  is slow), as a researcher would call it (its records kept in memory; ``finalise`` not timed).

Then a 1000 x 1000 count table (Poisson counts, some small cells, margins ``All``) is written to
a CSV file and timed: ``pandas.read_csv`` + ``check_frequency_csv``, and the check alone.

Usage::

    .venv/bin/python benchmarks/sdc_benchmark.py [--rows 1000000] [--runs 5] [--acro-runs 3]
        [--skip-acro] [--json results.json]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from havre.safe import Session  # noqa: E402
from havre.sdc import check_frequency_csv  # noqa: E402
from havre.sdc.bench import make_records  # noqa: E402


def timed(fn: Callable[[], object], runs: int, warm_up: bool = True) -> dict[str, object]:
    """Median and individual wall times of ``runs`` calls of ``fn`` (seconds)."""
    if warm_up:
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "runs": times}


def quiet(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with its prints and warnings swallowed (ACRO logs every check)."""

    def run() -> object:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            with redirect_stderr(io.StringIO()):
                return fn()

    return run


def load_acro() -> object | None:
    try:
        import acro
        from acro.version import __version__
    except Exception as exc:  # not installed: reported, not fatal
        print(f"ACRO not available ({exc!r}): skipping its timings")
        return None
    logging.disable(logging.INFO)
    print(f"ACRO {__version__}")
    return acro


def count_table_csv(path: Path, size: int, seed: int = 0) -> pd.DataFrame:
    """A size x size count table with margins, written to ``path``; returns the table."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(25.0, size=(size, size))
    small = rng.random((size, size)) < 0.02
    counts[small] = rng.integers(0, 10, int(small.sum()))
    table = pd.DataFrame(
        counts,
        index=pd.Index([f"r{i:04d}" for i in range(size)], name="row"),
        columns=[f"c{j:04d}" for j in range(size)],
    )
    table["All"] = table.sum(axis=1)
    table.loc["All"] = table.sum(axis=0)
    table.to_csv(path)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--acro-runs", type=int, default=3)
    parser.add_argument("--csv-size", type=int, default=1000)
    parser.add_argument("--skip-acro", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    print(
        f"{datetime.now(UTC).isoformat(timespec='seconds')}  Python {platform.python_version()}"
        f"  pandas {pd.__version__}  numpy {np.__version__}  {os.cpu_count()} CPUs"
        f"  load {os.getloadavg()[0]:.1f}"
    )
    df = make_records(args.rows)
    # Two plain (non-categorical) keys per axis: 50 regions x 2 sexes by 10 age bands x 2
    # smoking statuses = 100 x 20 cells, every combination shown (issue #11).
    rng = np.random.default_rng(1)
    df["sex"] = np.array(["F", "M"])[rng.integers(0, 2, len(df))]
    df["band"] = df["age"] // 10
    df["smoker"] = np.array(["no", "yes"])[rng.integers(0, 2, len(df))]
    rows2, cols2 = [df["region"], df["sex"]], [df["band"], df["smoker"]]
    print(f"{args.rows:,} records, 50 regions x 100 ages; median of {args.runs} runs")
    acro = None if args.skip_acro else load_acro()
    results: dict[str, dict[str, object]] = {}

    with tempfile.TemporaryDirectory() as tmp:
        session = Session(Path(tmp) / "outputs", name="bench", show=False)
        calls = {
            "count": {
                "pandas": lambda: pd.crosstab(df["region"], df["age"]),
                "safe": lambda: session.crosstab(df["region"], df["age"]),
            },
            "mean": {
                "pandas": lambda: pd.crosstab(
                    df["region"], df["age"], values=df["cost"], aggfunc="mean"
                ),
                "safe": lambda: session.crosstab(
                    df["region"], df["age"], values=df["cost"], aggfunc="mean"
                ),
            },
            "count2": {
                "pandas": lambda: pd.crosstab(rows2, cols2),
                "safe": lambda: session.crosstab(rows2, cols2),
            },
            "mean2": {
                "pandas": lambda: pd.crosstab(rows2, cols2, values=df["cost"], aggfunc="mean"),
                "safe": lambda: session.crosstab(rows2, cols2, values=df["cost"], aggfunc="mean"),
            },
        }
        if acro is not None:
            acro_session = acro.ACRO(suppress=False)
            calls["count2"]["acro"] = quiet(lambda: acro_session.crosstab(rows2, cols2))
            calls["mean2"]["acro"] = quiet(
                lambda: acro_session.crosstab(rows2, cols2, values=df["cost"], aggfunc="mean")
            )
            calls["count"]["acro"] = quiet(lambda: acro_session.crosstab(df["region"], df["age"]))
            calls["mean"]["acro"] = quiet(
                lambda: acro_session.crosstab(
                    df["region"], df["age"], values=df["cost"], aggfunc="mean"
                )
            )
        for table, tools in calls.items():
            for tool, fn in tools.items():
                if tool == "acro":
                    result = timed(fn, args.acro_runs, warm_up=False)
                else:
                    result = timed(fn, args.runs)
                results[f"{table}/{tool}"] = result
                runs = ", ".join(f"{t:.3f}" for t in result["runs"])
                print(f"  {table:<6} {tool:<7} {result['median']:8.3f} s   ({runs})")
        # The check really ran: the last safe mean table's verdict.
        last = session.output(list(session.outputs)[-1])
        print(f"  (last safe output: {last.summary})")

        csv_path = Path(tmp) / "table.csv"
        size = args.csv_size
        count_table_csv(csv_path, size)
        read_and_check = timed(
            lambda: check_frequency_csv(pd.read_csv(csv_path, index_col=0)), args.runs
        )
        loaded = pd.read_csv(csv_path, index_col=0)
        check_only = timed(lambda: check_frequency_csv(loaded), args.runs)
        verdict = check_frequency_csv(loaded)
        results["csv/read+check"] = read_and_check
        results["csv/check"] = check_only
        cells = (size + 1) * (size + 1)
        print(f"  server check of a {size} x {size} count CSV (+ margins: {cells:,} cells)")
        print(f"    read_csv + check_frequency_csv {read_and_check['median']:8.3f} s")
        print(f"    check_frequency_csv alone      {check_only['median']:8.3f} s")
        print(f"    ({verdict.summary[:100]})")

    ratios: dict[str, float] = {}
    for table in ("count", "mean", "count2", "mean2"):
        safe_t = results[f"{table}/safe"]["median"]
        ratios[f"{table}: safe / pandas"] = safe_t / results[f"{table}/pandas"]["median"]
        if f"{table}/acro" in results:
            ratios[f"{table}: acro / safe"] = results[f"{table}/acro"]["median"] / safe_t
    print("ratios:")
    for name, value in ratios.items():
        print(f"  {name:<22} {value:6.2f}x")
    targets = {
        "within 2x of pandas": all(
            v <= 2.0 for k, v in ratios.items() if k.endswith("safe / pandas")
        ),
        "at least 10x faster than ACRO": all(
            v >= 10.0 for k, v in ratios.items() if k.endswith("acro / safe")
        )
        if acro is not None
        else None,
        "server check of 1,000,000 cells under 1 s": read_and_check["median"] < 1.0,
    }
    for name, met in targets.items():
        print(f"  target {name}: {'met' if met else 'not measured' if met is None else 'MISSED'}")
    if args.json:
        document = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "python": platform.python_version(),
            "pandas": pd.__version__,
            "rows": args.rows,
            "results": results,
            "ratios": ratios,
            "targets": targets,
        }
        args.json.write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
