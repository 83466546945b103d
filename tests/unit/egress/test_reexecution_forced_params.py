"""Trusted re-execution forces the project's SDC parameters on the safe-analysis library.

The runner sets ``HAVRE_TRUSTED_REEXECUTION=1`` and ``HAVRE_SDC_PARAMS`` (a read-only file with
the project's parameters) in the container; a notebook's own ``params=`` may then be stricter,
never weaker. Outside a trusted run the notebook's parameters are used as given (and recorded
as relaxed, for the checker).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

import havre.safe as safe
from havre.sdc import SDCParams

#: 12 records: region "b" has 3 (below the project's threshold of 10, above a relaxed 1).
RECORDS = pd.DataFrame(
    {"region": ["a"] * 9 + ["b"] * 3, "sex": ["F", "M", "F"] * 3 + ["F", "M", "F"]}
)


@pytest.fixture
def trusted_env(tmp_path, monkeypatch):
    path = tmp_path / "sdc-params.json"
    path.write_text(json.dumps({"threshold": 10, "dominance_k": 0.9}))
    monkeypatch.setenv("HAVRE_SDC_PARAMS", str(path))
    monkeypatch.setenv("HAVRE_TRUSTED_REEXECUTION", "1")
    return path


def results(session: safe.Session) -> dict:
    return json.loads((session.path / "results.json").read_text())


def test_a_relaxed_params_argument_is_overridden_in_a_trusted_run(tmp_path, trusted_env):
    with pytest.warns(UserWarning, match=r"forced; threshold 1 -> 10"):
        session = safe.Session(tmp_path / "out", params={"threshold": 1}, name="s", show=False)
    assert session.params.threshold == 10
    session.crosstab(RECORDS["region"], RECORDS["sex"])
    doc = results(session)
    assert doc["session"]["params"]["threshold"] == 10
    assert doc["session"]["relaxed"] == []
    record = doc["results"]["output_0"]
    assert record["status"] == "fail"  # region b's cells are below 10
    assert record["havre"]["params"]["threshold"] == 10


def test_stricter_params_are_kept_in_a_trusted_run(tmp_path, trusted_env):
    session = safe.Session(
        tmp_path / "out", params={"threshold": 20, "dominance_k": 0.5}, name="s", show=False
    )
    assert session.params.threshold == 20 and session.params.dominance_k == 0.5


def test_only_the_relaxed_rules_are_raised(tmp_path, trusted_env):
    with pytest.warns(UserWarning, match="dominance_k"):
        session = safe.Session(
            tmp_path / "out",
            params={"threshold": 30, "dominance_k": 0.99, "zeros_are_disclosive": False},
            name="s",
            show=False,
        )
    assert session.params.threshold == 30  # stricter: kept
    assert session.params.dominance_k == 0.9  # weaker: the project's
    assert session.params.zeros_are_disclosive is True
    assert session.params.weaker_than(SDCParams(threshold=10, dominance_k=0.9)) == []


def test_outside_a_trusted_run_the_notebook_params_are_used_and_recorded_relaxed(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("HAVRE_TRUSTED_REEXECUTION", raising=False)
    monkeypatch.delenv("HAVRE_SDC_PARAMS", raising=False)
    session = safe.Session(tmp_path / "out", params={"threshold": 1}, name="s", show=False)
    session.crosstab(RECORDS["region"], RECORDS["sex"])
    doc = results(session)
    assert doc["results"]["output_0"]["status"] == "pass"
    assert doc["results"]["output_0"]["havre"]["relaxed"] == ["threshold"]
