"""Unit tests for havre.host.synthetic_data: deterministic synthetic hospital stays."""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import Counter
from decimal import Decimal

import pytest

from havre.host.synthetic_data import (
    AGE_BANDS,
    CHAPTERS,
    COLUMNS,
    REGIONS,
    hospital_stays,
    write_hospital_stays_csv,
)

# Pinned digests: if one of these changes, every published demo dataset changes with it.
# Only update them on purpose (and say so in the changelog).
GOLDEN = {
    (200, 1): "61f46531dded6119b58c6d4830d4be6dfaa0d6b2be83d2c053d76fb2c0a4d996",
    (5000, 1): "1428ccc8783678895004d3b0d22a9fad920042e8a1ca29265fca442f93812357",
}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    return list(hospital_stays(5000, 1))


def read_csv(path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("n_rows", "seed"), sorted(GOLDEN))
def test_golden_digest(tmp_path, n_rows, seed):
    path = tmp_path / "stays.csv"
    digest = write_hospital_stays_csv(path, n_rows, seed)
    assert digest == GOLDEN[(n_rows, seed)]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_defaults_are_5000_rows_seed_1(tmp_path):
    assert write_hospital_stays_csv(tmp_path / "a.csv") == GOLDEN[(5000, 1)]


def test_same_seed_same_bytes(tmp_path):
    a = write_hospital_stays_csv(tmp_path / "a.csv", 1000, 7)
    b = write_hospital_stays_csv(tmp_path / "b.csv", 1000, 7)
    assert a == b
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_different_seeds_differ(tmp_path):
    digests = {write_hospital_stays_csv(tmp_path / f"{s}.csv", 500, s) for s in range(5)}
    assert len(digests) == 5


def test_iterator_matches_file(tmp_path, rows):
    path = tmp_path / "stays.csv"
    write_hospital_stays_csv(path, 5000, 1)
    from_file = read_csv(path)
    assert len(from_file) == len(rows)
    for parsed, row in zip(from_file, rows, strict=True):
        assert parsed == {k: str(v) for k, v in row.items()}


def test_file_format(tmp_path):
    path = tmp_path / "stays.csv"
    write_hospital_stays_csv(path, 300, 3)
    data = path.read_bytes()
    text = data.decode("utf-8")  # valid UTF-8
    assert b"\r" not in data
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == 301
    assert "Île-de-France" in text  # non-ASCII written as UTF-8, not escaped


@pytest.mark.parametrize("n_rows", [0, 1, 999, 1000, 1001, 2500])
def test_row_count(tmp_path, n_rows):
    path = tmp_path / "stays.csv"
    write_hospital_stays_csv(path, n_rows, 2)
    parsed = read_csv(path)
    assert len(parsed) == n_rows
    assert [int(r["stay_id"]) for r in parsed] == list(range(1, n_rows + 1))
    assert len(list(hospital_stays(n_rows, 2))) == n_rows


def test_columns_and_domains(rows):
    for row in rows:
        assert tuple(row) == COLUMNS
        assert row["age_band"] in AGE_BANDS
        assert row["sex"] in ("F", "M")
        assert row["region"] in REGIONS
        assert row["diagnosis_chapter"] in CHAPTERS
        los = row["length_of_stay_days"]
        assert isinstance(los, int) and 1 <= los <= 180
        cost = row["cost_eur"]
        assert isinstance(cost, Decimal) and cost > 0
        assert cost == cost.quantize(Decimal("0.01")) and cost.as_tuple().exponent == -2
    assert len(REGIONS) == 8
    assert {"0-17", "18-39", "40-64", "65-79", "80+"} == set(AGE_BANDS)


def test_every_category_is_used(rows):
    for column, domain in (
        ("age_band", AGE_BANDS),
        ("sex", ("F", "M")),
        ("region", REGIONS),
        ("diagnosis_chapter", CHAPTERS),
    ):
        assert {r[column] for r in rows} == set(domain), column


def test_realistic_shape(rows):
    ages = Counter(r["age_band"] for r in rows)
    assert ages["40-64"] > ages["0-17"] * 2  # skewed age bands
    regions = Counter(r["region"] for r in rows)
    assert regions.most_common(1)[0][0] == "Île-de-France"
    # No pregnancies for men.
    assert not any(r["sex"] == "M" and r["diagnosis_chapter"] == "XV Pregnancy" for r in rows)
    # Length of stay: skewed to the right, longer for older patients.
    los = sorted(r["length_of_stay_days"] for r in rows)
    median, mean = los[len(los) // 2], sum(los) / len(los)
    assert mean > median
    assert max(los) >= 30

    def mean_los(band):
        values = [r["length_of_stay_days"] for r in rows if r["age_band"] == band]
        return sum(values) / len(values)

    assert mean_los("80+") > mean_los("18-39") > mean_los("0-17")


def test_cost_correlates_with_length_of_stay(rows):
    xs = [float(r["length_of_stay_days"]) for r in rows]
    ys = [float(r["cost_eur"]) for r in rows]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    assert cov / (vx * vy) ** 0.5 > 0.8


def test_rare_small_cells_exist(rows):
    cells = Counter((r["region"], r["age_band"], r["diagnosis_chapter"]) for r in rows)
    small = [cell for cell, count in cells.items() if count < 5]
    assert len(small) >= 20
    # Corse is a small region: every one of its region x age x chapter cells is small.
    assert sum(1 for r in rows if r["region"] == "Corse") < 100
    # Some clinically rare combinations occur, but only a handful of times.
    kids_circulatory = sum(
        1 for r in rows if r["age_band"] == "0-17" and r["diagnosis_chapter"] == "IX Circulatory"
    )
    assert 1 <= kids_circulatory < 10


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "stays.csv"
    path.write_text("old content\n")
    write_hospital_stays_csv(path, 100, 1)
    assert os.listdir(tmp_path) == ["stays.csv"]
    assert path.read_text(encoding="utf-8").startswith("stay_id,")


def test_failed_write_leaves_old_file_and_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "stays.csv"
    path.write_text("old content\n")

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write_hospital_stays_csv(path, 100, 1)
    assert os.listdir(tmp_path) == ["stays.csv"]
    assert path.read_text() == "old content\n"


def test_write_into_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_hospital_stays_csv(tmp_path / "missing" / "stays.csv", 10, 1)
    assert os.listdir(tmp_path) == []


def test_written_file_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_hospital_stays_csv(tmp_path / "stays.csv", 10, 1)
    finally:
        os.umask(old)
    assert (tmp_path / "stays.csv").stat().st_mode & 0o777 == 0o644


def test_accepts_str_path(tmp_path):
    digest = write_hospital_stays_csv(str(tmp_path / "stays.csv"), 200, 1)
    assert digest == GOLDEN[(200, 1)]


@pytest.mark.parametrize(("n_rows", "seed"), [(-1, 1), (1.5, 1), ("10", 1), (True, 1), (10, "1")])
def test_bad_arguments(tmp_path, n_rows, seed):
    with pytest.raises(ValueError):
        hospital_stays(n_rows, seed)
    with pytest.raises(ValueError):
        write_hospital_stays_csv(tmp_path / "x.csv", n_rows, seed)
    assert os.listdir(tmp_path) == []


def test_generator_is_lazy():
    it = hospital_stays(10**12, 1)
    first = next(iter(it))
    assert first["stay_id"] == 1


def test_csv_is_readable_without_quoting_surprises(tmp_path):
    path = tmp_path / "stays.csv"
    write_hospital_stays_csv(path, 2000, 5)
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8")))
    widths = {len(row) for row in reader}
    assert widths == {len(COLUMNS)}
