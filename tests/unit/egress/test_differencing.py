"""Golden tests of the differencing warning (havre.sdc.differencing).

Each case is two small published tables of counts written as CSV (what the egress service
reads), and the exact derived counts that must be flagged, or none.
"""

from __future__ import annotations

import io
import math

import pandas as pd
import pytest

from havre.sdc import SDCParams
from havre.sdc.differencing import (
    count_table,
    differencing_warnings,
    parse_interval,
)


def table(csv: str, name: str = "released.csv"):
    frame = pd.read_csv(io.StringIO(csv), index_col=0, dtype=str, keep_default_na=False)
    return count_table(frame, name=name)


def flags(new_csv: str, *released_csv: str, threshold: int = 10) -> list[tuple]:
    report = differencing_warnings(
        table(new_csv, "new.csv"),
        [table(c, f"released-{i}.csv") for i, c in enumerate(released_csv)],
        SDCParams(threshold=threshold),
    )
    return sorted(((f.group, f.column, f.value) for f in report.flags), key=str)


AGES = """age_band,F,M
0-17,40,38
18-39,120,110
40-64,150,149
65+,90,80
"""


@pytest.mark.parametrize(
    ("label", "interval"),
    [
        ("18-39", (18, 40)),
        ("18 – 39", (18, 40)),
        ("65+", (65, math.inf)),
        (">=65", (65, math.inf)),
        ("80 and over", (80, math.inf)),
        ("<18", (-math.inf, 18)),
        ("under 18", (-math.inf, 18)),
        ("2019", (2019, 2020)),
        ("[0.5, 1.5)", (0.5, 1.5)),
        ("0.5-1.5", (0.5, 1.5)),
        ("Bretagne", None),
        ("39-18", None),
        ("", None),
    ],
)
def test_parse_interval(label, interval):
    assert parse_interval(label) == interval


def test_the_same_table_again_flags_nothing():
    assert flags(AGES, AGES) == []


def test_nested_bands_reveal_a_single_year():
    new = """age_band,F,M
0-17,40,38
18-39,120,110
40-63,147,141
64+,93,88
"""
    # 40-64 (released) - 40-63 (new) = age 64: F 3, M 8, both sexes 11 (not flagged)
    assert flags(new, AGES) == [("age_band 64", "F", 3.0), ("age_band 64", "M", 8.0)]


def test_a_coarser_table_whose_difference_is_published_flags_nothing():
    new = """age_band,F,M
0-39,160,148
40+,240,229
"""
    assert flags(new, AGES) == []


def test_a_small_difference_at_the_upper_end():
    new = """age_band,F,M
0-17,40,38
18-39,120,110
40-64,150,149
65-89,88,80
"""
    # 65+ (released) - 65-89 (new) = 90 and over: F 2, M 0, both sexes (column None) 2
    assert flags(new, AGES) == [
        ("age_band 90 and over", "F", 2.0),
        ("age_band 90 and over", None, 2.0),
    ]


def test_a_suppressed_cell_is_revealed_by_a_new_banding():
    released = """age_band,F,M,All
0-17,,38,
18-64,100,259,359
65+,90,80,170
All,191,377,568
"""
    new = """age_band,F,M
0-64,101,297
65+,90,80
"""
    # 0-64 (new, 101) - 18-64 (released, 100) = the suppressed 0-17 cell: 1
    assert flags(new, released) == [("age_band 0-17", "F", 1.0)]


def test_suppressed_cells_are_unknowns_and_derive_nothing():
    released = AGES.replace("40-64,150,149", "40-64,,")
    new = """age_band,F,M
0-17,40,38
18-39,120,110
40-63,147,141
64+,93,88
"""
    # 40-64 is blank: 40-64 - 40-63 is unknown; 64+ (new) - 65+ (released) still gives 64
    assert flags(new, released) == [("age_band 64", "F", 3.0), ("age_band 64", "M", 8.0)]


def test_same_categories_different_population():
    new = AGES.replace("18-39,120,110", "18-39,122,110").replace("65+,90,80", "65+,90,95")
    # 18-39 F changed by 2 (flagged, and so both sexes); 65+ M by 15 (not)
    assert flags(new, AGES) == [("age_band 18-39", "F", 2.0), ("age_band 18-39", None, 2.0)]


def test_regions_by_label():
    released = """region,F,M
Bretagne,40,51
Corse,12,11
Normandie,70,66
"""
    new = """region,F,M
Bretagne,43,51
Normandie,70,66
"""
    assert flags(new, released) == [("region 'Bretagne'", "F", 3.0)]


def test_totals_over_shared_rows_when_no_cell_gives_it_away():
    released = """region,F,M
Bretagne,,51
Normandie,70,66
"""
    new = """region,F,M
Bretagne,,51
Normandie,70,66
All,112,117
"""
    # the margin row is not a region; the blank cells stay unknown: nothing derived
    assert flags(new, released) == []


def test_other_dimensions_are_not_compared():
    other = AGES.replace("age_band", "length_of_stay")
    new = """age_band,F,M
0-17,41,38
"""
    assert flags(new, other) == []
    assert flags(new.replace("F,M", "X,Y"), AGES) == []  # no column in common


def test_bands_as_columns():
    released = """sex,0-17,18-64,65+
F,40,270,90
M,38,259,80
"""
    new = """sex,0-17,18-63,64+
F,40,268,92
M,38,250,89
"""
    # 18-64 - 18-63 = age 64: F 2, M 9; both sexes 11
    assert flags(new, released) == [("64", "F", 2.0), ("64", "M", 9.0)]


def test_against_several_releases_each_is_named():
    new = """age_band,F,M
40-63,147,149
"""
    report = differencing_warnings(
        table(new, "new.csv"),
        [table(AGES, "req1: ages.csv"), table(AGES.replace("age_band", "x"), "req2: x.csv")],
    )
    assert report.compared == ("req1: ages.csv",)
    assert [(f.released, f.group, f.column, f.value) for f in report.flags] == [
        ("req1: ages.csv", "age_band 64", "F", 3.0),
        ("req1: ages.csv", "age_band 64", None, 3.0),  # M: 0, so both sexes: 3
    ]
    assert report.verdict == "review"
    assert "fewer than 10" in report.flags[0].sentence(10)
    assert "40-64 (150, released) - 40-63 (147, here)" in report.flags[0].derived


def test_inconsistent_populations_are_not_called_small():
    new = """age_band,F,M
40-63,160,149
"""
    # 40-63 larger than 40-64: not the same population; no negative "count" is flagged
    assert flags(new, AGES) == []


# --------------------------------------------------------------------------------------------
# In the egress service: the checker's view of a file


def test_service_compares_a_new_table_with_the_projects_releases(service, outputs):
    from tests.unit.egress.conftest import ACTORS
    from tests.unit.egress.test_core import new_request, review

    olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]
    cardio = outputs / "cardio"
    (cardio / "ages.csv").write_text(AGES)
    (cardio / "ages2.csv").write_text(AGES.replace("40-64,150,149", "40-63,147,141"))
    rid, files = new_request(service, {"ages.csv": "tables"})
    (file_id,) = [f["id"] for f in files.values()]
    assert service.differencing(olivia, rid, file_id)["compared"] == []  # nothing released yet
    for checker in (olivia, oscar):
        review(service, rid, checker, {file_id: "approve"})
    service.approve(olivia, rid)
    service.release(oscar, rid)

    new, new_files = new_request(service, {"ages2.csv": "tables", "notes.txt": "notes"})
    report = service.differencing(olivia, new, new_files["ages2.csv"]["id"])
    assert report["verdict"] == "review" and report["compared"] == [f"{rid}: ages.csv"]
    assert report["flags"][0] == (
        "age_band 64, column 'F': 40-64 (150, released) - 40-63 (147, here) = 3, fewer than 10 "
        f"(with {rid}: ages.csv)"
    )
    assert any("age_band 64, column 'M'" in f and "= 8" in f for f in report["flags"])
    assert service.differencing(olivia, new, new_files["notes.txt"]["id"]) is None


def test_a_published_margin_stands_in_for_suppressed_cells():
    released = """age_band,F
0-17,
18+,150
All,151
"""
    new = """age_band,F
18-64,100
65+,50
"""
    # 0 and over (the margin, 151) - 18 and over (new: 100 + 50) = the suppressed 0-17 cell
    assert flags(new, released) == [("age_band 0-17", "F", 1.0)]
    without_margin = released.replace("All,151\n", "")
    assert flags(new, without_margin) == []
