"""Unit tests of the researchers' safe-analysis library (``havre.safe``).

What a call returns (the usual pandas/statsmodels objects, with the verdict attached), what it
writes (the output files, ``results.json`` in ACRO's layout, checksums), suppression and
rounding, exceptions and housekeeping, the refusals that keep writes inside the session
folder, atomic writes, the notebook badge, and that the egress service's own check of a
suppressed table (``check_frequency_csv`` on the CSV the library wrote) finds nothing to fail.
The comparison with ACRO itself is in ``test_acro_differential.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import havre.safe as safe
import havre.safe.outputs as outputs_module
from havre.safe import OutputNameError, SafeTable, Session
from havre.safe.records import label_key as K
from havre.sdc import SDCParams, check_frequency_csv, recoverable_cells
from tests.hypothesis_budget import examples

matplotlib.use("Agg")


@pytest.fixture
def session(tmp_path):
    return Session(tmp_path / "outputs", name="s1", show=False)


@pytest.fixture
def df():
    rng = np.random.default_rng(7)
    n = 400
    frame = pd.DataFrame(
        {
            "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.4, 0.18, 0.02]),
            "band": rng.choice(["0-17", "18-64", "65+"], n),
            "cost": np.round(rng.gamma(2.0, 100.0, n), 1),
            "pid": rng.integers(0, 150, n),
        }
    )
    frame["y"] = 3 * frame["cost"] + rng.normal(size=n)
    frame["b"] = (frame["cost"] + rng.normal(scale=80, size=n) > 200).astype(int)
    return frame


def _results(session):
    with open(session.path / "results.json", encoding="utf-8") as handle:
        return json.load(handle)


def _files_under(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )


# ----------------------------------------------------------------------------------------
# Tables: what comes back
# ----------------------------------------------------------------------------------------


def test_count_crosstab_is_pandas_crosstab_with_a_verdict(session, df):
    table = session.crosstab(df["region"], df["band"])
    expected = pd.crosstab(df["region"], df["band"])
    assert isinstance(table, SafeTable) and isinstance(table, pd.DataFrame)
    pd.testing.assert_frame_equal(pd.DataFrame(table), expected, check_names=True)
    output = table.safe_output
    assert output.uid == "output_0"
    assert output.status == "fail"  # the 'west' row is tiny
    assert any("west" in r and "below the threshold of 10" in r for r in output.reasons)


def test_derived_tables_are_plain_dataframes_without_a_verdict(session, df):
    table = session.crosstab(df["region"], df["band"])
    for derived in (table + 1, table.copy(), table.iloc[:2], table.T):
        assert type(derived) is pd.DataFrame
        assert getattr(derived, "safe_output", None) is None


def test_mean_crosstab_matches_pandas_and_checks_dominance(session, df):
    df = df.copy()
    df.loc[df.index[0], ["region", "band", "cost"]] = ["north", "65+", 1_000_000.0]
    table = session.crosstab(df["region"], df["band"], values=df["cost"], aggfunc="mean")
    expected = pd.crosstab(df["region"], df["band"], values=df["cost"], aggfunc="mean")
    pd.testing.assert_frame_equal(pd.DataFrame(table), expected, check_exact=False, rtol=1e-12)
    assert table.safe_output.outcome[K("65+")][K("north")] == "dominance; p_ratio"


@pytest.mark.parametrize("aggfunc", ["count", "sum", "mean", "median", "std", "min", "max"])
def test_every_statistic_matches_pandas(session, df, aggfunc):
    table = session.crosstab(df["region"], df["band"], values=df["cost"], aggfunc=aggfunc)
    expected = pd.crosstab(df["region"], df["band"], values=df["cost"], aggfunc=aggfunc)
    pd.testing.assert_frame_equal(
        pd.DataFrame(table), expected, check_exact=False, rtol=1e-9, check_dtype=False
    )
    assert table.safe_output.properties["statistic"] == aggfunc


def test_min_and_max_go_to_review_at_least(session, df):
    big = df[df["region"].isin(["north", "south"])]
    table = session.crosstab(big["region"], big["band"], values=big["cost"], aggfunc="max")
    assert table.safe_output.status == "review"
    assert any("one contributor's own value" in r for r in table.safe_output.reasons)


@pytest.mark.parametrize("aggfunc", [None, "sum", "mean", "median"])
def test_margins_match_pandas_and_are_checked(session, df, aggfunc):
    kwargs = {} if aggfunc is None else {"values": df["cost"], "aggfunc": aggfunc}
    table = session.crosstab(df["region"], df["band"], margins=True, **kwargs)
    expected = pd.crosstab(df["region"], df["band"], margins=True, **kwargs)
    pd.testing.assert_frame_equal(
        pd.DataFrame(table), expected, check_exact=False, rtol=1e-9, check_dtype=False
    )
    check = table.safe_output.check
    assert check.table.shape == expected.shape
    # The 'west' margin (a row total of a few records) is a small cell too.
    west_total = int((df["region"] == "west").sum())
    assert west_total < 10
    assert table.safe_output.outcome[K("All")][K("west")].startswith("threshold")


def test_one_way_table_and_multiple_keys(session, df):
    one_way = session.crosstab(df["region"])
    assert list(one_way.columns) == ["count"]
    assert one_way["count"].sum() == len(df)
    two_keys = session.crosstab([df["region"], df["band"]], df["b"], rownames=["r", "g"])
    expected = pd.crosstab([df["region"], df["band"]], df["b"], rownames=["r", "g"])
    pd.testing.assert_frame_equal(pd.DataFrame(two_keys), expected)


def test_arrays_take_the_index_of_the_series(session, df):
    shuffled = df.sample(frac=1.0, random_state=1)
    table = session.crosstab(shuffled["region"], shuffled["band"].to_numpy())
    expected = pd.crosstab(shuffled["region"], shuffled["band"].to_numpy())
    pd.testing.assert_frame_equal(pd.DataFrame(table), expected)


def test_pivot_table_matches_pandas(session, df):
    table = session.pivot_table(df, index="region", columns="band", values="cost", aggfunc="sum")
    expected = pd.pivot_table(df, index="region", columns="band", values="cost", aggfunc="sum")
    pd.testing.assert_frame_equal(pd.DataFrame(table), expected, check_exact=False, rtol=1e-12)
    assert table.safe_output.properties["method"] == "pivot_table"
    one_col = session.pivot_table(df, index="region", values="cost")
    assert list(one_col.columns) == ["cost"]


def test_contributor_counts_distinct_ids(session):
    frame = pd.DataFrame({"g": ["a"] * 12, "h": ["x"] * 12, "pid": [1, 2, 3] * 4})
    by_record = session.crosstab(frame["g"], frame["h"])
    by_person = session.crosstab(frame["g"], frame["h"], contributor=frame["pid"])
    assert by_record.safe_output.status == "pass"
    assert by_person.safe_output.status == "fail"  # 12 stays of 3 patients
    assert int(by_person.iloc[0, 0]) == 12  # the table still counts records


def test_missing_grouping_values_are_a_checked_row(session):
    frame = pd.DataFrame({"g": ["a"] * 12 + [None], "h": ["x"] * 13})
    table = session.crosstab(frame["g"], frame["h"])
    assert int(table.iloc[0, 0]) == 12
    assert int(table.iloc[1, 0]) == 1 and pd.isna(table.index[1])
    assert table.safe_output.status == "fail"
    assert any("missing grouping value" in r for r in table.safe_output.reasons)


def test_refusals_of_bad_arguments(session, df):
    with pytest.raises(TypeError, match="unsupported argument"):
        session.crosstab(df["region"], df["band"], normalize=True)
    with pytest.raises(ValueError, match="together"):
        session.crosstab(df["region"], df["band"], values=df["cost"])
    with pytest.raises(ValueError, match="aggfunc"):
        session.crosstab(df["region"], df["band"], values=df["cost"], aggfunc="mode")
    with pytest.raises(ValueError, match="one column"):
        session.pivot_table(df, index="region", values=["cost", "y"])
    with pytest.raises(KeyError):
        session.pivot_table(df, index="nope", values="cost")
    assert session.outputs == {}  # nothing recorded


# ----------------------------------------------------------------------------------------
# Suppression and rounding
# ----------------------------------------------------------------------------------------


def test_suppression_blanks_failing_cells_and_protects_them(session, df):
    table = session.crosstab(df["region"], df["band"], margins=True, suppress=True)
    output = table.safe_output
    inner = pd.DataFrame(table)
    assert inner.loc["west"].isna().all()
    pattern = inner.isna().to_numpy()
    assert not recoverable_cells(pattern).any()
    # A table with blanks has no margins: totals of the published cells would read as if the
    # blanks were 0 (the egress service fails that), true totals could give them away.
    assert "All" not in inner.index and "All" not in inner.columns
    assert any("margins are not shown" in c for c in output.comments)
    assert output.status == "review"
    assert output.properties["mitigation"] == "suppress"
    assert output.files[0]["sdc"]["summary"]["suppressed"] is True
    assert any("suppression applied" in c for c in output.comments)


def test_a_suppressed_table_without_blanks_keeps_its_true_margins(session, df):
    big = pd.concat([df] * 10, ignore_index=True)
    table = session.crosstab(big["region"], big["band"], margins=True, suppress=True)
    assert not pd.DataFrame(table).isna().any().any()
    assert table.loc["All", "All"] == len(big)
    assert table.iloc[:-1, :-1].to_numpy().sum() == len(big)


@st.composite
def count_grids(draw):
    n_rows, n_cols = draw(st.integers(2, 5)), draw(st.integers(2, 5))
    cell = st.one_of(st.just(0), st.integers(1, 9), st.integers(10, 40))
    return [draw(st.lists(cell, min_size=n_cols, max_size=n_cols)) for _ in range(n_rows)]


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=count_grids(), margins=st.booleans())
def test_the_server_finds_nothing_to_fail_in_a_suppressed_table(tmp_path_factory, counts, margins):
    # Records making the given count table; the library suppresses it; the egress service's
    # check of the CSV it wrote (no records, only the numbers) must then pass every published
    # cell and find no blank cell recoverable from the totals.
    rows, cols = [], []
    for i, line in enumerate(counts):
        for j, n in enumerate(line):
            rows += [f"r{i}"] * n
            cols += [f"c{j}"] * n
    frame = pd.DataFrame(
        {
            "r": pd.Categorical(rows, categories=[f"r{i}" for i in range(len(counts))]),
            "c": pd.Categorical(cols, categories=[f"c{j}" for j in range(len(counts[0]))]),
        }
    )
    session = Session(tmp_path_factory.mktemp("srv"), show=False, durable=False)
    table = session.crosstab(frame["r"], frame["c"], margins=margins, suppress=True)
    name = table.safe_output.files[0]["name"]
    published = pd.read_csv(session.path / name, index_col=0)
    server = check_frequency_csv(published, margins_name="All" if margins else None)
    assert server.rule_counts["threshold"] == 0
    assert server.rule_counts["zeros"] == 0
    # Nothing blanked can be worked out, and the verdict has no failing cell at all (a
    # suppressed table with blanks has no margins; without blanks its margins are true).
    assert server.rule_counts["recoverable"] == 0, server.reasons
    assert server.verdict.label != "fail", server.reasons


def test_rounding_rounds_the_published_values_only(session, df):
    table = session.crosstab(df["region"], df["band"], round_base=True)
    assert (pd.DataFrame(table).to_numpy() % 5 == 0).all()
    plain = session.crosstab(df["region"], df["band"])
    assert table.safe_output.status == plain.safe_output.status  # the verdict is unrounded
    assert table.safe_output.properties["mitigation"] == "round"
    assert table.safe_output.properties["round_base"] == 5
    with pytest.raises(ValueError, match="round_base"):
        session.crosstab(df["region"], df["band"], round_base=0)


# ----------------------------------------------------------------------------------------
# describe, histograms, models
# ----------------------------------------------------------------------------------------


def test_describe_matches_pandas_and_flags_extremes(session, df):
    table = session.describe(df[["cost", "y"]])
    pd.testing.assert_frame_equal(pd.DataFrame(table), df[["cost", "y"]].describe())
    output = table.safe_output
    assert output.status == "review"  # min and max
    assert output.outcome[K("cost")][K("min")] == "min_max"
    assert output.outcome[K("cost")][K("count")] == "ok"
    small = session.describe(df["cost"].iloc[:5])
    assert small.safe_output.status == "fail"
    assert small.safe_output.outcome[K("cost")][K("std")].startswith("threshold")


def test_histogram_counts_empty_bins_as_zeros(session):
    values = pd.Series([1.0] * 30 + [9.0] * 30, name="x")
    table = session.histogram(values, bins=4)
    assert list(table["count"]) == [30, 0, 0, 30]
    output = table.safe_output
    assert output.status == "fail"
    assert output.output_type == "histogram"
    assert sum("no contributors" in r for r in output.reasons) == 2


def test_hist_writes_the_png_and_the_counts(session):
    values = pd.Series(np.arange(100.0), name="age")
    ax = session.hist(values, bins=5)
    output = session.output("output_0")
    assert output.file_names == ["output_0.png", "output_0.csv"]
    assert (session.path / "output_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    counts = pd.read_csv(session.path / "output_0.csv", index_col=0)
    assert list(counts["count"]) == [20] * 5
    assert ax.get_xlabel() == "age"
    assert output.status == "review"  # the outer bins show the range


def test_ols_returns_the_statsmodels_results(session, df):
    results = session.ols("y ~ cost + C(region)", df)
    direct = smf.ols("y ~ cost + C(region)", df).fit()
    np.testing.assert_allclose(results.params, direct.params)
    output = results.safe_output
    assert output.status == "pass"
    assert output.properties["dof"] == int(direct.df_resid)
    assert output.file_names == ["output_0.txt", "output_0.csv"]
    coefficients = pd.read_csv(session.path / "output_0.csv", index_col=0)
    assert list(coefficients.index) == list(direct.params.index)


def test_models_with_few_residual_degrees_of_freedom_fail(session, df):
    small = df.iloc[:12]
    x = small[["cost"]].assign(const=1.0)
    ols = session.ols(small["y"], x)  # 12 - 2 = 10: passes
    assert ols.safe_output.status == "pass"
    ols = session.ols(small["y"].iloc[:11], x.iloc[:11])  # 9: fails
    assert ols.safe_output.status == "fail"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logit = session.logit("b ~ cost", df)
        probit = session.probit(df["b"], df[["cost"]].assign(const=1.0))
    assert logit.safe_output.status == probit.safe_output.status == "pass"
    assert logit.safe_output.properties["method"] == "logit"


# ----------------------------------------------------------------------------------------
# What is written
# ----------------------------------------------------------------------------------------


def test_results_json_has_acros_fields(session, df):
    session.crosstab(df["region"], df["band"])
    document = _results(session)
    assert set(document) >= {"version", "tool", "results"}
    record = document["results"]["output_0"]
    assert list(record)[:12] == [
        "uid",
        "status",
        "type",
        "properties",
        "files",
        "outcome",
        "command",
        "summary",
        "timestamp",
        "comments",
        "exception",
        "fair",
    ]
    assert record["type"] == "table"
    assert record["properties"]["method"] == "crosstab"
    assert record["files"][0]["name"] == "output_0.csv"
    assert record["files"][0]["sdc"] == session.output("output_0").check.to_acro_sdc()
    assert record["command"] == 'session.crosstab(df["region"], df["band"])'
    assert record["outcome"][K("0-17")][K("west")] == "threshold"
    assert record["havre"]["params"] == SDCParams().as_dict()
    assert record["havre"]["reasons"]


def test_command_of_a_call_over_several_lines(session, df):
    session.crosstab(
        df["region"],
        df["band"],
    )
    command = session.output("output_0").command
    assert command.startswith("session.crosstab(") and command.endswith(")")
    assert 'df["band"]' in command


def test_files_and_checksums_match(session, df):
    table = session.crosstab(df["region"], df["band"])
    csv = (session.path / "output_0.csv").read_bytes()
    assert csv == pd.DataFrame(table).to_csv().encode("utf-8")
    for name in ("output_0.csv", "results.json", "config.json"):
        digest = hashlib.sha256((session.path / name).read_bytes()).hexdigest()
        assert (session.path / "checksums" / f"{name}.txt").read_text() == digest
    config = json.loads((session.path / "config.json").read_text())
    assert config["safe_threshold"] == 10


def test_nothing_is_written_outside_the_session_folder(tmp_path, df):
    session = Session(tmp_path / "outputs", name="s1", show=False)
    session.crosstab(df["region"], df["band"], suppress=True, margins=True)
    session.describe(df["cost"])
    session.histogram(df["cost"])
    session.ols("y ~ cost", df)
    session.finalise()
    for path in _files_under(tmp_path):
        assert path.startswith(os.path.join("outputs", "s1") + os.sep), path
        assert not os.path.basename(path).startswith(".")  # no temporary file left


def test_a_session_writes_nothing_until_it_records(tmp_path):
    Session(tmp_path / "outputs", show=False)
    assert not (tmp_path / "outputs").exists()


# ----------------------------------------------------------------------------------------
# Exceptions, comments and housekeeping
# ----------------------------------------------------------------------------------------


def test_request_exception_on_a_failing_output(session, df):
    session.crosstab(df["region"], df["band"])
    session.request_exception("output_0", "  'west' is a structural zero region  ")
    assert _results(session)["results"]["output_0"]["exception"] == (
        "'west' is a structural zero region"
    )
    with pytest.raises(ValueError, match="explain"):
        session.request_exception("output_0", "   ")
    with pytest.raises(KeyError, match="output_9"):
        session.request_exception("output_9", "reason")


def test_request_exception_refused_for_a_passing_output(session, df):
    big = df[df["region"].isin(["north", "south"])]
    session.crosstab(big["region"], big["band"])
    with pytest.raises(ValueError, match="no exception is needed"):
        session.request_exception("output_0", "please")


def test_remove_and_rename(session, df):
    session.crosstab(df["region"], df["band"])
    session.describe(df["cost"])
    session.remove_output("output_0")
    assert not (session.path / "output_0.csv").exists()
    assert not (session.path / "checksums" / "output_0.csv.txt").exists()
    assert list(_results(session)["results"]) == ["output_1"]
    session.rename_output("output_1", "cost_summary")
    assert (session.path / "cost_summary.csv").exists()
    assert (session.path / "checksums" / "cost_summary.csv.txt").exists()
    record = _results(session)["results"]["cost_summary"]
    assert record["uid"] == "cost_summary"
    assert record["files"][0]["name"] == "cost_summary.csv"
    session.crosstab(df["region"], df["band"])
    assert "output_2" in session.outputs  # numbering carries on


@pytest.mark.parametrize(
    "name", ["../escape", "a/b", "a\\b", ".hidden", "..", "", "checksums", "x\u202eexe", "ａ/b"]
)
def test_names_that_could_escape_are_refused(session, df, name):
    session.crosstab(df["region"], df["band"])
    with pytest.raises(OutputNameError):
        session.rename_output("output_0", name)
    with pytest.raises(OutputNameError):
        Session(session.outputs_dir, name=name, show=False)


def test_a_symlinked_session_folder_is_refused(tmp_path, df):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "outputs").mkdir()
    os.symlink(outside, tmp_path / "outputs" / "s1")
    session = Session(tmp_path / "outputs", name="s2", show=False)
    session.folder.path = tmp_path / "outputs" / "s1"  # as if swapped after the check
    with pytest.raises(OutputNameError, match="symbolic link"):
        session.crosstab(df["region"], df["band"])
    assert list(outside.iterdir()) == []


def test_an_existing_session_is_refused_unless_resumed(tmp_path, df):
    first = Session(tmp_path, name="s", show=False)
    first.crosstab(df["region"], df["band"])
    first.request_exception("output_0", "reason")
    with pytest.raises(FileExistsError, match="resume=True"):
        Session(tmp_path, name="s", show=False)
    again = Session(tmp_path, name="s", resume=True, show=False)
    assert again.output("output_0").exception == "reason"
    again.crosstab(df["region"], df["band"])
    assert list(_results(again)["results"]) == ["output_0", "output_1"]


def test_finalise_is_idempotent_and_notices_edited_files(session, df):
    session.crosstab(df["region"], df["band"])
    session.finalise()
    before = {p: (session.path / p).read_bytes() for p in _files_under(session.path)}
    session.finalise()
    after = {p: (session.path / p).read_bytes() for p in _files_under(session.path)}
    assert before == after
    original = (session.path / "checksums" / "output_0.csv.txt").read_text()
    (session.path / "output_0.csv").write_text("region,0-17\nwest,3\n")
    with pytest.warns(UserWarning, match="output_0.csv"):
        session.finalise()
    assert (session.path / "checksums" / "output_0.csv.txt").read_text() == original


def test_finalise_drops_checksums_of_removed_files(session, df):
    session.crosstab(df["region"], df["band"])
    stray = session.path / "checksums" / "gone.csv.txt"
    stray.write_text("0" * 64)
    session.finalise()
    assert not stray.exists()


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(session, df, monkeypatch):
    session.crosstab(df["region"], df["band"])
    before = (session.path / "results.json").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(outputs_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        session.crosstab(df["region"], df["band"])
    monkeypatch.undo()
    assert (session.path / "results.json").read_bytes() == before
    assert not [p for p in os.listdir(session.path) if p.startswith(".")]
    assert list(session.outputs) == ["output_0"]


def test_results_summary_frame(session, df):
    assert session.results().empty
    session.crosstab(df["region"], df["band"])
    session.ols("y ~ cost", df)
    summary = session.results()
    assert list(summary.index) == ["output_0", "output_1"]
    assert list(summary["status"]) == ["fail", "pass"]
    assert list(summary["type"]) == ["table", "regression"]


def test_custom_output_is_always_to_review(session, tmp_path):
    source = tmp_path / "figure.svg"
    source.write_text("<svg/>")
    output = session.custom_output(source, "a figure of the model")
    assert output.status == "review"
    assert (session.path / "output_0.svg").read_text() == "<svg/>"
    assert output.comments == ["a figure of the model"]


# ----------------------------------------------------------------------------------------
# Parameters, default session, display
# ----------------------------------------------------------------------------------------


def test_params_from_a_mapping_with_acro_names(tmp_path, df):
    session = Session(tmp_path, params={"safe_threshold": 5}, show=False)
    table = session.crosstab(df["region"], df["band"])
    assert table.safe_output.havre["params"]["threshold"] == 5
    assert table.safe_output.havre["relaxed"] == ["threshold"]
    assert _results(session)["session"]["relaxed"] == ["threshold"]


def test_params_from_the_environment(tmp_path, monkeypatch, df):
    path = tmp_path / "sdc.json"
    path.write_text(json.dumps({"threshold": 20}))
    monkeypatch.setenv("HAVRE_SDC_PARAMS", str(path))
    session = Session(tmp_path / "out", show=False)
    assert session.params.threshold == 20


def test_module_level_functions_use_a_default_session(tmp_path, monkeypatch, df):
    monkeypatch.setenv("HAVRE_OUTPUTS_DIR", str(tmp_path / "outs"))
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    monkeypatch.setattr(safe, "_default", None)
    table = safe.crosstab(df["region"], df["band"])
    session = safe.get_session()
    assert session.path.parent == tmp_path / "outs"
    assert session.name.startswith("ada-")
    assert table.safe_output is session.output("output_0")
    safe.request_exception("output_0", "structural")
    assert list(safe.results().index) == ["output_0"]
    assert safe.finalise() == session.path
    other = safe.new_session(tmp_path / "other", name="second", show=False)
    assert safe.get_session() is other


def test_default_session_names_are_unique(tmp_path, df):
    a = Session(tmp_path, show=False)
    a.crosstab(df["region"], df["band"])
    b = Session(tmp_path, show=False)
    assert a.name != b.name


def test_the_badge_shows_the_verdict_and_escapes_labels(session):
    frame = pd.DataFrame({"g": ["<script>alert(1)</script>"] * 3, "h": ["x"] * 3})
    table = session.crosstab(frame["g"], frame["h"])
    html = table._repr_html_()
    assert html.startswith('<div class="havre-sdc-verdict"')
    assert ">FAIL</span>" in html
    assert "<script>" not in html.split("</div>")[0]
    assert "&lt;script&gt;" in html
    assert "<table" in html  # then the table itself
    text = str(table.safe_output)
    assert text.startswith("output_0: FAIL")


def test_the_session_shows_its_outputs(session, df):
    session.crosstab(df["region"], df["band"])
    html = session._repr_html_()
    assert "output_0" in html and "FAIL" in html
    assert "s1" in repr(session)


def test_models_show_their_badge_in_ipython(session, df, monkeypatch):
    shown = []
    ipython = pytest.importorskip("IPython")
    import IPython.display

    monkeypatch.setattr(ipython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    session.show = True
    session.ols("y ~ cost", df)
    assert shown and shown[0].uid == "output_0"


def test_results_json_is_valid_with_unicode_labels(session):
    frame = pd.DataFrame({"g": ["Île-de-France"] * 12, "h": ["表"] * 12})
    session.crosstab(frame["g"], frame["h"])
    record = _results(session)["results"]["output_0"]
    assert record["outcome"][K("表")][K("Île-de-France")] == "ok"
    text = io.StringIO((session.path / "output_0.csv").read_text(encoding="utf-8"))
    assert "Île-de-France" in text.getvalue()


def _analysis(session, df):
    session.crosstab(df["region"], df["band"], suppress=True, margins=True)
    session.crosstab(df["region"], df["band"], values=df["cost"], aggfunc="mean")
    session.describe(df[["cost"]])
    session.hist(df["cost"], bins=8)
    session.ols("y ~ cost + C(region)", df)


def test_replace_starts_a_named_session_again(tmp_path, df):
    first = Session(tmp_path, name="analysis", show=False)
    _analysis(first, df)
    first.finalise()
    keep = first.path / "notes.txt"  # not the library's: left alone
    keep.write_text("mine")
    again = Session(tmp_path, name="analysis", replace=True, show=False)
    assert again.outputs == {}
    assert sorted(os.listdir(again.path)) == ["checksums", "notes.txt"]
    assert os.listdir(again.path / "checksums") == []
    again.crosstab(df["region"], df["band"])
    assert list(_results(again)["results"]) == ["output_0"]
    with pytest.raises(ValueError, match="choose one"):
        Session(tmp_path, name="analysis", replace=True, resume=True, show=False)


def test_the_same_analysis_writes_the_same_files(tmp_path, df):
    # What a trusted re-execution compares: the same notebook on the same data must write the
    # same bytes (results.json aside: it holds timestamps).
    runs = []
    for folder in ("run1", "run2"):
        session = Session(tmp_path / folder, name="analysis", show=False)
        _analysis(session, df)
        session.finalise()
        runs.append(
            {
                p: (session.path / p).read_bytes()
                for p in _files_under(session.path)
                if "results.json" not in p
            }
        )
    assert runs[0].keys() == runs[1].keys()
    different = [p for p in runs[0] if runs[0][p] != runs[1][p]]
    assert different == []
    text = (tmp_path / "run1" / "analysis" / "output_4.txt").read_text()
    clock = [line.split()[:2] for line in text.splitlines() if line.startswith(("Date:", "Time:"))]
    assert clock == [["Date:", "-"], ["Time:", "-"]]
