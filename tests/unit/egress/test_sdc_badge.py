"""The SDC badge checkers see on a request (issue #11, defects 2, 4 and 5).

Every output here is made with the real researcher's library (``havre.safe``) in the
project's outputs folder, then added to a request through the real service, as a researcher
would: the traps are tables of whole numbers that are *not* counts (a sum with one dominant
contributor, a mean that comes out whole, a max table), a file edited after the library wrote
it, a session run with a relaxed threshold, and a CSV with no library record. Each must not
get a pass; a genuine count table from the library must.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from egress.files.sdc_badge import LIBRARY_LABEL, LibraryRecords, combine, view_check
from egress.operations.facade import EgressService
from egress.store.models import RequestFile
from egress.web.openapi import openapi_document
from havre.safe import Session
from havre.sdc import SDCParams
from tests.unit.egress.conftest import ACTORS
from tests.unit.egress.test_core import audit_events

alice, olivia = ACTORS["alice"], ACTORS["olivia"]


def people(n: int = 600, seed: int = 1) -> pd.DataFrame:
    """Records with two keys, every combination well populated."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "region": rng.choice(["north", "south"], n),
            "sex": rng.choice(["female", "male"], n),
            "income": rng.integers(20, 60, n),
        }
    )


def session(outputs: Path, name: str = "s1", **params: object) -> Session:
    return Session(outputs / "cardio", params=params or None, name=name, show=False)


def add(svc: EgressService, path: str, rid: str | None = None) -> tuple[str, dict]:
    """Add a file; its entry with the whole stored check (the author is shown verdicts and
    counts only, issue #12: these tests are about the check itself)."""
    rid = rid or svc.create_request(alice, "cardio", "Tables")["id"]
    entry = svc.add_file(alice, rid, path)
    with svc.engine.connect() as conn:
        stored = conn.execute(select(RequestFile.check).where(RequestFile.id == entry["id"]))
        return rid, {**entry, "check": view_check(stored.scalar_one())}


def checker_view(svc: EgressService, rid: str, path: str) -> dict:
    """The file as a checker sees it in the JSON view, once the request is submitted."""
    for group in {f["group"] for f in svc.get_request(alice, rid)["files"]}:
        svc.set_group_context(alice, rid, group, "Incomes by region and sex", "none")
    svc.submit(alice, rid)
    return next(f for f in svc.get_request(olivia, rid)["files"] if f["path"] == path)


# --------------------------------------------------------------------------------------------
# Defect 2: a table of whole numbers that is not a table of counts never gets a count pass


def test_a_sum_with_a_dominant_contributor_is_not_passed(service, outputs):
    df = people()
    df.loc[0, "income"] = 10_000_000  # one person holds nearly all of one cell's total
    s = session(outputs)
    s.crosstab(df.region, df.sex, values=df.income, aggfunc="sum")
    text = (outputs / "cardio/s1/output_0.csv").read_text()
    assert all(float(v) == int(float(v)) for v in text.split()[1].split(",")[1:])  # whole

    rid, entry = add(service, "s1/output_0.csv")
    sdc, badge = entry["check"]["sdc"], entry["check"]["badge"]
    assert sdc["count_rules"]["verdict"] == "pass"  # as counts, every cell is large
    assert badge["verdict"] == sdc["verdict"] == "fail"  # the library's dominance failure
    assert badge["text"] == "SDC: fail"
    assert entry["check"]["library"]["status"] == "matched"
    assert entry["check"]["library"]["statistic"] == "sum"
    assert any("largest 2 contributors" in r for r in entry["check"]["library"]["reasons"])
    assert any("'sum', not counts" in s for s in badge["sentences"])
    assert entry["check"]["library"]["label"] == LIBRARY_LABEL


def test_a_mean_that_comes_out_whole_is_review_not_pass(service, outputs):
    df = people()
    # Every cell's mean is a whole number: incomes of 40 and 60, as many of each per cell.
    df["income"] = np.where(np.arange(len(df)) % 2 == 0, 40, 60)
    df = pd.concat([df, df.assign(income=100 - df.income)], ignore_index=True)
    s = session(outputs)
    s.crosstab(df.region, df.sex, values=df.income, aggfunc="mean")
    assert "50.0" in (outputs / "cardio/s1/output_0.csv").read_text()

    _, entry = add(service, "s1/output_0.csv")
    badge = entry["check"]["badge"]
    assert badge["count_rules_verdict"] == "pass"
    assert badge["verdict"] == "review"
    assert entry["check"]["library"]["statistic"] == "mean"
    assert "statistic 'mean'" in badge["summary"]


def test_a_mean_rounded_by_hand_has_no_record_and_is_review(service, outputs):
    df = people()
    s = session(outputs)
    means = s.crosstab(df.region, df.sex, values=df.income, aggfunc="mean")
    pd.DataFrame(means).round().astype(int).to_csv(outputs / "cardio/rounded_means.csv")

    _, entry = add(service, "rounded_means.csv")
    badge = entry["check"]["badge"]
    assert badge["count_rules_verdict"] == "pass" and badge["verdict"] == "review"
    assert entry["check"]["library"]["status"] == "no_record"
    assert "can't tell which statistic" in badge["summary"]


def test_a_max_table_is_review(service, outputs):
    df = people()
    s = session(outputs)
    s.crosstab(df.region, df.sex, values=df.income, aggfunc="max")
    _, entry = add(service, "s1/output_0.csv")
    badge = entry["check"]["badge"]
    assert badge["count_rules_verdict"] == "pass"
    assert badge["verdict"] == "review"
    assert entry["check"]["library"]["verdict"] == "review"
    assert any("one contributor's own value" in r for r in entry["check"]["library"]["reasons"])


def test_a_genuine_count_table_from_the_library_passes(service, outputs):
    df = people()
    s = session(outputs)
    s.crosstab(df.region, df.sex)
    rid, entry = add(service, "s1/output_0.csv")
    badge, library = entry["check"]["badge"], entry["check"]["library"]
    assert badge["verdict"] == entry["check"]["sdc"]["verdict"] == "pass"
    assert badge["text"] == "SDC: pass"
    assert library["status"] == "matched" and library["statistic"] == "count"
    assert library["relaxed"] == [] and library["params"] == SDCParams().as_dict()
    assert badge["statistic"] == "count" and badge["statistic_source"] == LIBRARY_LABEL
    assert "researcher's library's claim" in badge["verified_by"]
    assert badge["params"] == service.sdc_params.as_dict()
    assert checker_view(service, rid, "s1/output_0.csv")["check"]["badge"]["verdict"] == "pass"


def test_a_small_count_fails_whatever_the_record_claims(service, outputs):
    df = people(n=40)
    s = session(outputs)
    s.crosstab(df.region, df.sex, values=df.income, aggfunc="mean")
    # The researcher overwrites the mean table with small counts (the record now mismatches).
    path = outputs / "cardio/s1/output_0.csv"
    path.write_text("region,female,male\nnorth,3,12\nsouth,11,14\n")
    _, entry = add(service, "s1/output_0.csv")
    assert entry["check"]["badge"]["verdict"] == "fail"


def test_a_csv_without_any_library_record_is_review(service, outputs):
    # tables/smoking.csv (conftest): large whole numbers, written by hand, no results.json.
    _, entry = add(service, "tables/smoking.csv")
    check = entry["check"]
    assert check["library"]["status"] == "no_record"
    assert check["badge"]["verdict"] == check["sdc"]["verdict"] == "review"
    assert check["sdc"]["count_rules"]["verdict"] == "pass"
    assert check["sdc"]["statistic"] is None  # not claimed to be counts
    assert "No library record" in check["badge"]["sentences"][0]


# --------------------------------------------------------------------------------------------
# Defect 4: files changed after the library checked them


def test_a_file_edited_after_the_library_wrote_it_is_flagged(service, outputs):
    df = people()
    s = session(outputs)
    s.crosstab(df.region, df.sex)
    path = outputs / "cardio/s1/output_0.csv"
    path.write_text(path.read_text().replace("region", "area"))  # edited by hand
    rid, entry = add(service, "s1/output_0.csv")
    library, badge = entry["check"]["library"], entry["check"]["badge"]
    assert library["status"] == "changed"
    assert "Changed after the library checked it" in library["message"]
    assert "verdict" not in library and "reasons" not in library and "statistic" not in library
    assert badge["verdict"] == "review" and badge["statistic"] is None
    seen = checker_view(service, rid, "s1/output_0.csv")["check"]
    assert seen["library"]["status"] == "changed" and seen["badge"]["verdict"] == "review"


def test_an_acro_style_checksum_file_is_used_when_the_record_has_no_sha256(service, outputs):
    df = people()
    s = session(outputs)
    s.crosstab(df.region, df.sex)
    results = outputs / "cardio/s1/results.json"
    doc = json.loads(results.read_text())
    for entry in doc["results"]["output_0"]["files"]:
        entry.pop("sha256")
    results.write_text(json.dumps(doc))
    _, entry = add(service, "s1/output_0.csv")
    assert entry["check"]["library"]["status"] == "matched"
    (outputs / "cardio/s1/output_0.csv").write_text("region,female,male\nnorth,30,40\n")
    _, entry = add(service, "s1/output_0.csv")
    assert entry["check"]["library"]["status"] == "changed"


def test_submit_compares_again_with_the_records_as_they_are_then(service, outputs, engine):
    df = people()
    s = session(outputs)
    s.crosstab(df.region, df.sex)
    folder = outputs / "cardio/s1"
    shutil.move(folder / "results.json", outputs / "cardio/results.away")
    rid, entry = add(service, "s1/output_0.csv")
    assert entry["check"]["library"]["status"] == "no_record"
    assert entry["check"]["badge"]["verdict"] == "review"
    shutil.move(outputs / "cardio/results.away", folder / "results.json")
    seen = checker_view(service, rid, "s1/output_0.csv")["check"]
    assert seen["library"]["status"] == "matched" and seen["badge"]["verdict"] == "pass"
    (submitted,) = [e for e in audit_events(engine, rid) if e["event"] == "SUBMITTED"]
    assert submitted["details"]["sdc_rechecked"] == {
        "s1/output_0.csv": {"library_record": "matched", "sdc_verdict": "pass"}
    }
    assert service.verify_audit().ok


def test_a_record_that_matched_when_added_is_kept_when_the_session_is_run_again(service, outputs):
    df = people()
    session(outputs).crosstab(df.region, df.sex, values=df.income, aggfunc="sum")
    rid, entry = add(service, "s1/output_0.csv")
    assert entry["check"]["library"]["statistic"] == "sum"
    # The session is run again with other data: its record now describes other bytes.
    again = Session(outputs / "cardio", name="s1", replace=True, show=False)
    again.crosstab(people(seed=2).region, people(seed=2).sex)
    seen = checker_view(service, rid, "s1/output_0.csv")["check"]
    assert seen["library"]["status"] == "matched" and seen["library"]["statistic"] == "sum"
    assert "no longer holds it" in seen["library"]["message"]
    assert seen["badge"]["verdict"] == "review"


# --------------------------------------------------------------------------------------------
# Defect 5: relaxed parameters are shown, and cap the verdict


def test_a_relaxed_threshold_is_review_naming_the_parameter(service, outputs):
    df = people()
    s = session(outputs, threshold=3)
    s.crosstab(df.region, df.sex)
    rid, entry = add(service, "s1/output_0.csv")
    badge, library = entry["check"]["badge"], entry["check"]["library"]
    assert library["params"]["threshold"] == 3
    assert library["relaxed"] == [{"name": "threshold", "library": 3, "project": 10}]
    assert badge["verdict"] == "review"
    assert any("threshold 3 instead of the project's 10" in s for s in badge["sentences"])
    seen = checker_view(service, rid, "s1/output_0.csv")["check"]
    assert seen["library"]["relaxed"][0]["name"] == "threshold"


def test_a_relaxation_is_relative_to_the_project_parameters(make_service, outputs):
    svc = make_service(sdc_params=SDCParams(threshold=20))
    df = people()
    session(outputs).crosstab(df.region, df.sex)  # the library's default threshold, 10
    _, entry = add(svc, "s1/output_0.csv")
    assert entry["check"]["library"]["relaxed"] == [
        {"name": "threshold", "library": 10, "project": 20}
    ]
    assert entry["check"]["badge"]["verdict"] == "review"


def test_unreadable_records_are_review_with_the_reason(service, outputs):
    df = people()
    session(outputs).crosstab(df.region, df.sex)
    (outputs / "cardio/s1/results.json").write_text("{not json")
    _, entry = add(service, "s1/output_0.csv")
    assert entry["check"]["library"]["status"] == "unreadable"
    assert "not valid JSON" in entry["check"]["library"]["message"]
    assert entry["check"]["badge"]["verdict"] == "review"


def test_a_library_output_the_service_cannot_check_shows_the_claim_as_review(service, outputs):
    df = people()
    s = session(outputs)
    s.crosstab(df.region, df.sex, values=df.income, aggfunc="mean")  # fractional means
    _, entry = add(service, "s1/output_0.csv")
    check = entry["check"]
    assert check["library"]["status"] == "matched" and check["library"]["verdict"] == "pass"
    assert check["badge"]["verdict"] == "review"  # fractional: not counts, whoever reads it
    _, notes = add(service, "notes.txt")
    assert notes["check"]["sdc"] is None and notes["check"]["badge"]["verdict"] is None
    # A file the service does not check at all: the library's pass is shown as review.
    library = {"status": "matched", "statistic": "mean", "verdict": "pass", "relaxed": []}
    for count in (None, {"checked": False, "reason": "not a table of counts"}):
        sdc, badge = combine(count, library, SDCParams())
        assert badge["verdict"] == "review" and badge["verified_by"] is None
        assert "did not check this file itself" in badge["sentences"][0]


# --------------------------------------------------------------------------------------------
# The pure parts


def test_the_badge_is_never_better_than_any_input():
    params = SDCParams()
    count = {"checked": True, "verdict": "pass", "summary": "ok", "reasons": []}
    matched = {
        "status": "matched",
        "statistic": "count",
        "verdict": "pass",
        "relaxed": [],
        "reasons": [],
    }
    order = {"pass": 0, "review": 1, "fail": 2}
    for count_verdict in order:
        for lib_verdict in order:
            for statistic in ("count", "sum", None):
                for status in ("matched", "changed", "no_record", "unreadable"):
                    lib = {**matched, "verdict": lib_verdict, "statistic": statistic}
                    lib["status"] = status
                    _, badge = combine({**count, "verdict": count_verdict}, lib, params)
                    v = order[badge["verdict"]]
                    assert v >= order[count_verdict]
                    if status == "matched":
                        assert v >= order[lib_verdict]
                    if status != "matched" or statistic != "count":
                        assert v >= order["review"]


def test_legacy_checks_stored_before_badges_are_capped_in_the_view():
    stored = {"sdc": {"checked": True, "verdict": "pass", "summary": "ok", "reasons": []}}
    seen = view_check(stored)
    assert seen["sdc"]["verdict"] == "review" and seen["badge"]["verdict"] == "review"
    assert stored["sdc"]["verdict"] == "pass"  # the stored record is not touched


def test_records_of_one_folder_are_read_once(tmp_path):
    reads: list[str] = []

    def read(path: str) -> bytes | None:
        reads.append(path)
        return None

    records = LibraryRecords(read, SDCParams())
    for name in ("a.csv", "b.csv"):
        assert records.for_file(f"s1/{name}", "0" * 64)["status"] == "no_record"
    assert reads == ["s1/results.json"]


@pytest.mark.parametrize(
    "doc",
    [b"[]", b'{"results": []}', b'{"results": {"o": 3}}', "\u00e9".encode("latin-1")],
)
def test_odd_results_files_never_raise(doc):
    records = LibraryRecords(lambda path: doc if path.endswith(".json") else None, SDCParams())
    assert records.for_file("x.csv", "0" * 64)["status"] in ("unreadable", "no_record")


# --------------------------------------------------------------------------------------------
# The HTML pages show what the JSON view holds (one computation, rendered by both pages)


def render(template: str, **context: object) -> str:
    from egress.files.render import render_for_checker
    from egress.web.base import jinja_environment

    base = {
        "prefix": "/services/egress/",
        "url": lambda *parts: "/services/egress/" + "/".join(map(str, parts)),
        "user": "olivia",
        "actor": olivia,
        "xsrf": "",
        "hub_home": "/hub/home",
    }
    if template == "file.html":
        f = context["f"]
        data = f.get("_bytes", b"")
        context["rendered"] = render_for_checker("csv", data, name=f["path"])
        context.setdefault("differencing", None)
    return jinja_environment().get_template(template).render(**base, **context)


def test_the_request_and_file_pages_show_the_badge_the_json_view_holds(service, outputs):
    df = people()
    s = session(outputs, threshold=3)
    s.crosstab(df.region, df.sex)
    s.crosstab(df.region, df.sex, values=df.income, aggfunc="sum")
    tiny = people(n=5)
    s.crosstab(tiny.region, tiny.sex)
    s.request_exception("output_2", "the <b>regions</b> are public")
    path = outputs / "cardio/s1/output_1.csv"
    path.write_text(path.read_text() + "\n")  # changed after the library checked it
    rid, _ = add(service, "s1/output_0.csv")
    add(service, "s1/output_1.csv", rid)
    add(service, "tables/smoking.csv", rid)
    add(service, "s1/output_2.csv", rid)
    checker_view(service, rid, "s1/output_2.csv")  # submitted: checkers see no draft (#12)
    view = service.get_request(olivia, rid)
    schema = openapi_document()["components"]["schemas"]["RequestFile"]
    for f in view["files"]:
        jsonschema.validate(f, schema)  # the JSON view is what the API document says
    page = render("request.html", r=view, outputs=None, reexecutions=[])
    for f in view["files"]:
        assert f["check"]["badge"]["text"] in page
    assert page.count("SDC: review") == 3 and "SDC: pass" not in page
    assert page.count("SDC: fail") == 1
    assert "Relaxed parameters:" in page and "threshold 3 (project: 10)" in page
    assert "asked for an exception: the &lt;b&gt;regions&lt;/b&gt; are public" in page
    assert "Changed after the library checked it." in page
    assert "No library record" in page

    relaxed = next(f for f in view["files"] if f["path"] == "s1/output_0.csv")
    detail = render("file.html", r=view, f=relaxed)
    assert "SDC: review" in detail and "threshold 3 instead of the project&#39;s 10" in detail
    assert '<table class="sdc-params">' in detail and "(relaxed)" in detail
    changed = next(f for f in view["files"] if f["path"] == "s1/output_1.csv")
    detail = render("file.html", r=view, f=changed)
    assert "Changed after the library checked it." in detail
    assert "The library&#39;s reasons" not in detail  # its verdict is not shown for other bytes


def test_the_openapi_document_describes_the_badge():
    schemas = openapi_document()["components"]["schemas"]
    check = schemas["RequestFile"]["properties"]["check"]["properties"]
    assert {"sdc", "library", "badge"} <= set(check)
    assert check["library"]["properties"]["status"]["enum"] == [
        "matched",
        "changed",
        "no_record",
        "unreadable",
    ]
    request_files = schemas["Request"]["properties"]["files"]["items"]
    assert request_files == {"$ref": "#/components/schemas/RequestFile"}


def test_an_acro_output_folder_is_read_through_its_checksum_files(
    service, outputs, tmp_path, monkeypatch
):
    """ACRO 1.0.2's own results.json: no statistic, checksums only in checksums/<name>.txt."""
    acro = pytest.importorskip("acro")
    monkeypatch.chdir(tmp_path)  # ACRO keeps its working files in the current folder
    df = people()
    session = acro.ACRO(suppress=False)
    session.crosstab(df.region, df.sex)
    session.finalise(str(tmp_path / "acro-out"), "json")
    shutil.copytree(tmp_path / "acro-out", outputs / "cardio/acro")
    (name,) = [
        f["name"]
        for f in json.loads((outputs / "cardio/acro/results.json").read_text())["results"][
            "output_0"
        ]["files"]
    ]
    _, entry = add(service, f"acro/{name}")
    library, badge = entry["check"]["library"], entry["check"]["badge"]
    assert library["status"] == "matched" and library["verdict"] == "pass"
    assert library["statistic"] is None  # ACRO's record doesn't say: not known to be counts
    assert badge["verdict"] == "review" and "'not stated'" in badge["summary"]
    path = outputs / "cardio/acro" / name
    path.write_text(path.read_text() + "\n")
    _, entry = add(service, f"acro/{name}")
    assert entry["check"]["library"]["status"] == "changed"
