"""The cluster-spawn benchmark's figures (benchmarks/cluster_spawn.py): a failed start is
counted and listed apart, never a sample of the medians and p95, and the recorded results
say so of themselves."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from benchmarks.cluster_spawn import failure, summarize

RESULTS = sorted(
    (Path(__file__).resolve().parents[2] / "benchmarks" / "results").glob("cluster-spawn-*.json")
)


def test_failed_starts_are_counted_and_listed_but_not_in_the_figures():
    samples = [
        3.0,
        "round 1: ReadTimeout: Pool is closed.",
        1.0,
        2.0,
        "round 2: TimeoutError: not ready within 300 s",
        10.0,
    ]
    summary = summarize(samples)
    assert summary["ready_median_s"] == 2.5  # of 1, 2, 3 and 10 only
    assert summary["ready_p95_s"] == 10.0
    assert (summary["ready"], summary["failed"]) == (4, 2)
    assert summary["failures"] == [samples[1], samples[4]]
    assert summary["samples"] == [3.0, 1.0, 2.0, 10.0]
    # control: the failures taken as 0 s samples (what the script once wrote) move the median
    assert statistics.median([0.0 if isinstance(s, str) else s for s in samples]) != 2.5


def test_a_mode_whose_starts_all_failed_has_no_figures():
    summary = summarize(["round 1: ConnectionError: refused"] * 3)
    assert summary["ready_median_s"] is None and summary["ready_p95_s"] is None
    assert (summary["ready"], summary["failed"], summary["samples"]) == (0, 3, [])


def test_a_failure_is_named_by_its_exception():
    assert failure(TimeoutError("not ready within 300 s")) == (
        "TimeoutError: not ready within 300 s"
    )
    assert failure(RuntimeError()) == "RuntimeError"


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_the_recorded_results_figures_are_those_of_their_ready_starts(path):
    data = json.loads(path.read_text())
    for mode, row in data["modes"].items():
        assert all(isinstance(s, float) and s > 0 for s in row["samples"]), mode
        assert row["ready"] + row["failed"] == data["spawns"] * data["rounds"], mode
        recomputed = summarize(row["samples"] + row["failures"])
        for key in ("ready_median_s", "ready_p95_s", "ready", "failed"):
            assert row[key] == recomputed[key], (mode, key)
