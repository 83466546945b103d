"""Benchmark: the egress service's check of a published count table, on the path it really runs.

For each table (an n x n count table with a "Total" row and column, Poisson counts; with 0% or
2% of the inner cells blank, as a researcher's suppression leaves them), written to CSV bytes:

- ``egress.files.checks.check_file(name, data)``: the file check every submitted file gets
  (encoding, delimiter, consistent fields, formula injection...);
- ``havre.sdc.published.check_count_csv_text(text, delimiter=..., params=...)``: the SDC
  check the service runs on the checked bytes (parse, cell rules, margins, recoverability);
- ``OutputCheck.as_record()``: the record the service stores (verdict, summary, reasons);

timed together ("server path") and apart; the median of ``--runs`` runs after one warm-up.
Baseline, in the same process and on the same bytes: ``pandas.read_csv(io.BytesIO(data),
index_col=0)``, the least any reader of the file must do; the ratio server path / baseline is
what to compare across machines.

Targets: the server path under 1 s for 1,000,000 cells, with and without blank cells, and
linear growth in cells (250,000, 1,000,000, 2,000,000 and 4,000,000 cells: the time per million
cells stays flat).  The file check refuses CSVs over 2,000,000 cells, so for the 4,000,000-cell
table the "server" column is the sum of the three parts, each timed on its own.

``--before COMMIT`` also times, once per 1,000,000-cell table (it is slow), the code of an
older commit (``git archive`` of its ``egress/`` into a temporary folder, run in a child
process): the service's old ``_frequency_table_check`` path on the same bytes.

Usage::

    .venv/bin/python benchmarks/sdc_server_benchmark.py [--sizes 500 1000 2000] [--runs 5]
        [--blanks 0 0.02] [--before 8206a36] [--json benchmarks/results/sdc-server-DATE.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from host_facts import cpu_model  # noqa: E402

from egress.files.checks import check_file  # noqa: E402
from havre.sdc import SDCParams  # noqa: E402
from havre.sdc.published import check_count_csv_text  # noqa: E402


def count_table_bytes(size: int, blank_share: float, seed: int = 0) -> bytes:
    """An ``size`` x ``size`` count table with true margins labelled "All" (as pandas and the
    older code know them), ``blank_share`` of the inner cells blank, as CSV bytes."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(30.0, size=(size, size)).astype(float)
    full = np.vstack(
        [
            np.hstack([counts, counts.sum(axis=1, keepdims=True)]),
            np.append(counts.sum(axis=0), counts.sum()),
        ]
    )
    if blank_share:
        inner = full[:-1, :-1]
        inner[rng.random(inner.shape) < blank_share] = np.nan
    table = pd.DataFrame(
        full,
        index=pd.Index([f"r{i:04d}" for i in range(size)] + ["All"], name="region"),
        columns=[f"c{j:04d}" for j in range(size)] + ["All"],
    )
    return table.to_csv(float_format="%.0f").encode()


def timed(fn: Callable[[], object], runs: int) -> dict[str, object]:
    """Median and individual wall times of ``runs`` calls of ``fn`` after one warm-up."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "runs": times}


def server_path(name: str, data: bytes, params: SDCParams) -> object:
    """What the service runs on a submitted count CSV: file check, SDC check, record."""
    result = check_file(name, data)
    text = result.release_bytes.decode("utf-8-sig")
    check = check_count_csv_text(text, delimiter=",", params=params)
    return check.as_record()


_BEFORE = textwrap.dedent(
    """
    import csv, io, math, sys, time
    sys.path.insert(0, sys.argv[1])
    from egress.files.checks import check_file
    from havre.sdc import SDCParams, check_frequency_csv, read_table_csv
    data = open(sys.argv[2], "rb").read()
    start = time.perf_counter()
    result = check_file("table.csv", data)
    text = result.release_bytes.decode("utf-8-sig")
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    for row in rows[1:]:  # the old per-cell validation loop of egress/core.py
        for cell in row[1:]:
            cell = cell.strip()
            if cell:
                value = float(cell)
                assert math.isfinite(value) and value >= 0 and value == int(value)
    check = check_frequency_csv(read_table_csv(text), params=SDCParams())
    check.as_record()
    print(time.perf_counter() - start)
    print(check.summary[:120])
    """
)


def time_before(commit: str, data: bytes) -> dict[str, object]:
    """One run of an older commit's service path on ``data``, in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "egress"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        path = Path(tmp) / "table.csv"
        path.write_bytes(data)
        out = subprocess.run(
            [sys.executable, "-c", _BEFORE, tmp, str(path)],
            check=True,
            capture_output=True,
            text=True,
            cwd=tmp,
        ).stdout.splitlines()
    return {"seconds": float(out[0]), "summary": out[1] if len(out) > 1 else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 1412, 2000])
    parser.add_argument("--blanks", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", help="also time this older commit once (1M-cell tables)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    params = SDCParams()
    header = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/sdc_server_benchmark.py", *(argv or sys.argv[1:])]),
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg()[0],
        "commit": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
    }
    print(
        f"{header['date']}  Python {header['python']}  pandas {header['pandas']}  "
        f"{header['cpus']} CPUs ({header['cpu']})  load {header['load_average_start']:.1f}"
    )
    print(f"median of {args.runs} runs after a warm-up; seconds")
    print(
        f"{'table':<26}{'cells':>11}{'read_csv':>10}{'file chk':>10}{'sdc chk':>10}"
        f"{'record':>9}{'server':>9}{'ratio':>7}{'s/M cells':>11}"
    )
    rows = []
    for size in args.sizes:
        for share in args.blanks:
            data = count_table_bytes(size, share)
            cells = (size + 1) ** 2
            result = check_file("table.csv", data)
            refused = result.release_bytes is None
            text = data.decode() if refused else result.release_bytes.decode("utf-8-sig")
            check = check_count_csv_text(text, delimiter=",", params=params)
            blanks = int(np.isnan(check.table.to_numpy()).sum())
            row = {
                "size": size,
                "cells": cells,
                "blank_share": share,
                "blank_cells": blanks,
                "bytes": len(data),
                "verdict": check.summary[:160],
                "file_check_problems": list(result.problems),
                "baseline_read_csv": timed(
                    lambda data=data: pd.read_csv(io.BytesIO(data), index_col=0), args.runs
                ),
                "file_check": timed(lambda data=data: check_file("table.csv", data), args.runs),
                "sdc_check": timed(
                    lambda text=text: check_count_csv_text(text, delimiter=",", params=params),
                    args.runs,
                ),
                "record": timed(lambda check=check: check.as_record(), args.runs),
            }
            if refused:
                # Over the file check's limit the service never gets this far; file check +
                # SDC check + record stands in for the path, to show the growth.
                parts = ("file_check", "sdc_check", "record")
                row["server_path"] = {"median": sum(row[p]["median"] for p in parts)}
                row["note"] = "refused by the file check: " + "; ".join(result.problems)
            else:
                row["server_path"] = timed(
                    lambda data=data: server_path("table.csv", data, params), args.runs
                )
            server = row["server_path"]["median"]
            row["ratio_to_read_csv"] = server / row["baseline_read_csv"]["median"]
            row["seconds_per_million_cells"] = server / cells * 1e6
            if args.before and size == 1000:
                row["before"] = time_before(args.before, data)
            rows.append(row)
            label = f"{size} x {size} + margins, {share:.0%} blank"
            print(
                f"{label:<26}{cells:>11,}{row['baseline_read_csv']['median']:>10.3f}"
                f"{row['file_check']['median']:>10.3f}{row['sdc_check']['median']:>10.3f}"
                f"{row['record']['median']:>9.3f}{server:>9.3f}{row['ratio_to_read_csv']:>6.1f}x"
                f"{row['seconds_per_million_cells']:>11.3f}"
            )
            if refused:
                print(f"{'':<26}{row['note']} (server = sum of the parts)")
            if "before" in row:
                print(f"{'':<26}before ({args.before}): {row['before']['seconds']:.2f} s, 1 run")
    million = [r for r in rows if r["size"] == 1000]
    targets = {
        "server path under 1 s for 1,000,000 cells": all(
            r["server_path"]["median"] < 1.0 for r in million
        )
        if million
        else None,
    }
    per_million = [r["seconds_per_million_cells"] for r in rows]
    spread = max(per_million) / min(per_million) if per_million else None
    print(f"time per million cells, largest / smallest: {spread:.2f}x (flat = linear growth)")
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'not measured' if met is None else 'MISSED'}")
    header["load_average_end"] = os.getloadavg()[0]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {**header, "runs": args.runs, "rows": rows, "targets": targets}
        document["per_million_spread"] = spread
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
