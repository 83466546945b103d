"""The field every existing reader of a file's check uses, ``check.sdc.verdict`` (the request
page before issue #11, the release record's ``verdicts``), for each trap of defects 2, 4 and 5:
never ``pass``; and ``pass`` for a genuine count table of the library.

These are the tests shown to fail on the code before the fix (6 of 7 failed there: every trap
read ``pass``); the full behaviour is in ``test_sdc_badge.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tests.unit.egress.test_sdc_badge import add, people, session


def verdict(entry):
    return (entry["check"].get("sdc") or {}).get("verdict")


def test_sum_dominant(service, outputs):
    df = people()
    df.loc[0, "income"] = 10_000_000
    session(outputs).crosstab(df.region, df.sex, values=df.income, aggfunc="sum")
    assert verdict(add(service, "s1/output_0.csv")[1]) != "pass"


def test_whole_mean(service, outputs):
    df = people()
    df["income"] = np.where(np.arange(len(df)) % 2 == 0, 40, 60)
    df = pd.concat([df, df.assign(income=100 - df.income)], ignore_index=True)
    session(outputs).crosstab(df.region, df.sex, values=df.income, aggfunc="mean")
    assert verdict(add(service, "s1/output_0.csv")[1]) != "pass"


def test_max(service, outputs):
    df = people()
    session(outputs).crosstab(df.region, df.sex, values=df.income, aggfunc="max")
    assert verdict(add(service, "s1/output_0.csv")[1]) != "pass"


def test_edited(service, outputs):
    df = people()
    session(outputs).crosstab(df.region, df.sex)
    p = outputs / "cardio/s1/output_0.csv"
    p.write_text(p.read_text().replace("region", "area"))
    assert verdict(add(service, "s1/output_0.csv")[1]) != "pass"


def test_relaxed(service, outputs):
    df = people()
    session(outputs, threshold=3).crosstab(df.region, df.sex)
    assert verdict(add(service, "s1/output_0.csv")[1]) != "pass"


def test_no_results_json(service, outputs):
    assert verdict(add(service, "tables/smoking.csv")[1]) != "pass"


def test_genuine_count_passes(service, outputs):
    df = people()
    session(outputs).crosstab(df.region, df.sex)
    assert verdict(add(service, "s1/output_0.csv")[1]) == "pass"
