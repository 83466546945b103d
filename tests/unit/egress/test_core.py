"""The egress core service end to end, on SQLite and on PostgreSQL.

* the whole story: two researchers and two checkers; a request approved and released, one
  returned and resubmitted with a changed file, one rejected, one by an author who is also a
  checker; the released bytes are the approved snapshot and the signed record verifies;
* every kind of tampering with the stored audit log (and with the tables behind its back) is
  detected;
* a role x state x operation table: allowed, 403 or 409, and nothing changes when refused;
* migrations match the models, notifications, concurrency and the admin CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from egress import cli
from egress.audit.chain import AuditChainError, AuditEvent, Checkpoint
from egress.audit.file_log import read_checkpoints
from egress.audit.replay import export_database_audit
from egress.audit.signing import load_public_key, public_key_path, verify_record
from egress.domain.policy import Actor, PermissionDenied
from egress.domain.workflow import RequestState
from egress.operations.facade import (
    CHECKERS_MARKER,
    EgressService,
    FileRefused,
    InvalidInput,
    NotFound,
    ServicePaths,
    actor_for,
    page_cursor,
)
from egress.store.content import ContentStore
from egress.store.db import current_revision, head_revision, make_engine, migrate
from egress.store.models import (
    AuditEventRow,
    AuditLogRow,
    Base,
    Comment,
    FileGroup,
    Notification,
    Release,
    Request,
    RequestFile,
    Vote,
)
from havre.enclave.config import ReviewPolicy, parse_enclave_config
from tests.unit.egress.conftest import (
    ACTORS,
    ENCLAVE,
    FORMULA_CSV,
    FREQUENCY_TABLE,
    NOTES,
    FakeClock,
    make_outputs,
    new_postgres_database,
    new_sqlite_database,
)

alice, carol, amy, bob = ACTORS["alice"], ACTORS["carol"], ACTORS["amy"], ACTORS["bob"]
olivia, oscar, chloe, adam = ACTORS["olivia"], ACTORS["oscar"], ACTORS["chloe"], ACTORS["adam"]


def refused(status: int, call: Callable[[], object], *, match: str = "") -> str:
    """Run ``call``, expect a refusal with ``status``; return its reason."""
    with pytest.raises((PermissionDenied, FileRefused, NotFound, InvalidInput)) as info:
        call()
    assert info.value.status == status, info.value.reason
    assert match.lower() in info.value.reason.lower(), info.value.reason
    return info.value.reason


def new_request(
    svc: EgressService,
    files: dict[str, str],
    *,
    author=alice,
    title: str = "Tables for paper 1",
    submit: bool = True,
) -> tuple[str, dict[str, dict]]:
    """A request of ``files`` ({path: group}), every group described; submitted by default."""
    rid = svc.create_request(author, "cardio", title)["id"]
    added = {path: svc.add_file(author, rid, path, group) for path, group in files.items()}
    for group in sorted(set(files.values())):
        svc.set_group_context(author, rid, group, f"What {group} shows", "Cells of 10 or more")
    if submit:
        svc.submit(author, rid)
    return rid, added


def review(svc: EgressService, rid: str, checker, votes: dict[int, str], *, submit=True) -> None:
    for file_id, vote in votes.items():
        svc.vote(checker, rid, file_id, vote)
    if submit:
        svc.submit_review(checker, rid)


def audit_events(engine, request_id: str | None = None) -> list[dict]:
    with engine.connect() as conn:
        query = select(AuditEventRow.line).order_by(AuditEventRow.seq)
        if request_id:
            query = query.where(AuditEventRow.request_id == request_id)
        return [json.loads(line) for line in conn.execute(query).scalars()]


# --------------------------------------------------------------------------------------------
# The story


def test_full_story(service, engine, outputs, signing_key, clock, tmp_path):
    svc = service
    public_key = load_public_key(public_key_path(signing_key))

    # Researchers see what they can add; others can't look at a project's outputs.
    listing = svc.list_outputs(alice, "cardio")
    paths = [f["path"] for f in listing["files"]]
    assert "tables/smoking.csv" in paths and "notes.txt" in paths
    refused(403, lambda: svc.list_outputs(bob, "cardio"))
    refused(403, lambda: svc.list_outputs(olivia, "cardio"))

    # --- Request 1: approved and released -------------------------------------------------
    r1 = svc.create_request(alice, "cardio", "Smoking by sex")["id"]
    table = svc.add_file(alice, r1, "tables/smoking.csv", "tables")
    # Whole numbers written by hand, with no library record: read as counts they pass, but
    # nothing says they are counts (issue #11), so the badge is review.
    assert table["check"]["sdc"]["checked"] and table["check"]["sdc"]["verdict"] == "review"
    assert table["check"]["sdc"]["count_rules"]["verdict"] == "pass"
    assert table["check"]["library"]["status"] == "no_record"
    assert table["sha256"] == table["release_sha256"] == hashlib.sha256(FREQUENCY_TABLE).hexdigest()
    formula = svc.add_file(alice, r1, "tables/formula.csv", "tables")
    assert formula["check"]["outcome"] == "neutralised"
    assert formula["release_sha256"] != formula["sha256"]
    assert not formula["check"]["sdc"]["checked"]  # a formula is no count
    notes = svc.add_file(alice, r1, "notes.txt", "notes")
    assert notes["check"]["sdc"] is None

    # Refused files: an archive, a symbolic link, a path outside the outputs folder.
    refused(422, lambda: svc.add_file(alice, r1, "program.zip", "notes"), match="zip")
    os.symlink(outputs / "cardio" / "notes.txt", outputs / "cardio" / "link.txt")
    refused(422, lambda: svc.add_file(alice, r1, "link.txt", "notes"), match="symbolic link")
    refused(422, lambda: svc.add_file(alice, r1, "../diabetes/hba1c.txt", "notes"))
    refused(422, lambda: svc.add_file(alice, r1, "missing.csv", "notes"), match="does not exist")
    refused(403, lambda: svc.add_file(carol, r1, "notes.txt", "notes"), match="author")

    # Every group needs its context before submission.
    refused(409, lambda: svc.submit(alice, r1), match="context")
    svc.set_group_context(alice, r1, "tables", "Smokers by sex", "All cells are 10 or more")
    refused(409, lambda: svc.submit(alice, r1), match="notes")
    svc.set_group_context(alice, r1, "notes", "A methods note", "No data in it")
    assert svc.submit(alice, r1)["state"] == "submitted"

    # Independent reviews.
    files = [table, formula, notes]
    for checker in (olivia, oscar):
        shown = svc.view_file(checker, r1, formula["id"])
        assert shown.sha256 == formula["release_sha256"]
        assert shown.data != FORMULA_CSV and b"'=1+2" in shown.data
        assert shown.media_type.startswith("text/csv")
        review(svc, r1, checker, {f["id"]: "approve" for f in files}, submit=False)
        svc.comment(checker, r1, f"{checker.username}: fine", "private")
        view = svc.get_request(checker, r1)
        assert {tuple(f["votes"]) for f in view["files"]} == {(checker.username,)}
        assert "decision" not in view
    assert svc.submit_review(olivia, r1)["state"] == "under_review"
    refused(409, lambda: svc.vote(olivia, r1, table["id"], "request_changes"), match="already")
    assert {tuple(f["votes"]) for f in svc.get_request(oscar, r1)["files"]} == {("oscar",)}
    # The author sees no votes and no private comments.
    seen_by_alice = svc.get_request(alice, r1)
    assert all(f["votes"] == {} for f in seen_by_alice["files"])
    assert seen_by_alice["comments"] == []
    assert svc.submit_review(oscar, r1)["state"] == "reviewed"
    seen_by_olivia = svc.get_request(olivia, r1)
    assert seen_by_olivia["decision"] == "approvable"
    assert all(
        f["votes"] == {"olivia": "approve", "oscar": "approve"} for f in seen_by_olivia["files"]
    )
    assert len(seen_by_olivia["comments"]) == 2
    assert svc.approve(olivia, r1)["state"] == "approved"

    # The researcher changes the outputs folder after approval: the release is unaffected.
    (outputs / "cardio" / "tables" / "smoking.csv").write_bytes(b"sex,n\nfemale,1\n")
    signed = svc.release(oscar, r1)
    assert verify_record(signed, public_key)
    record = signed["record"]
    assert record["request_id"] == r1 and record["released_by"] == "oscar"
    assert {(f["path"], f["sha256"]) for f in record["files"]} == {
        (f["path"], f["release_sha256"]) for f in files
    }
    assert len(record["votes"]) == 6 and {v["vote"] for v in record["votes"]} == {"approve"}
    assert record["sdc_policy"]["sdc"]["threshold"] == 10
    assert record["sdc_policy"]["verdicts"]["tables/smoking.csv"] == "review"
    assert record["public_comments"] == []  # private comments never go into the record
    for f in files:
        got = svc.download_released(alice, r1, f["id"])
        assert got.data == svc.content.get(f["release_sha256"])
        assert hashlib.sha256(got.data).hexdigest() == f["release_sha256"]
    assert svc.download_released(carol, r1, table["id"]).data == FREQUENCY_TABLE
    refused(403, lambda: svc.download_released(olivia, r1, table["id"]))
    assert svc.release_record(alice, r1) == signed
    # The record's audit head pins the log as it was at release time.
    head = Checkpoint.from_dict(record["audit_head"])
    assert head.log_id == svc.log_id

    # --- Request 2: returned, resubmitted with a changed file, then released -----------------
    (outputs / "cardio" / "tables" / "smoking.csv").write_bytes(FREQUENCY_TABLE)
    r2, f2 = new_request(
        svc, {"tables/smoking.csv": "tables", "tables/regions.csv": "tables", "notes.txt": "notes"}
    )
    smoking, regions, notes2 = (
        f2[p]["id"] for p in ("tables/smoking.csv", "tables/regions.csv", "notes.txt")
    )
    assert f2["tables/regions.csv"]["check"]["sdc"]["verdict"] == "fail"  # a cell of 3
    review(svc, r2, olivia, {smoking: "approve", regions: "request_changes", notes2: "approve"})
    review(
        svc, r2, oscar, {smoking: "approve", regions: "request_changes", notes2: "request_changes"}
    )
    refused(409, lambda: svc.approve(olivia, r2), match="regions.csv")
    assert svc.get_request(oscar, r2)["decision"] == "conflicted"
    assert svc.return_request(oscar, r2)["state"] == "returned"
    svc.comment(alice, r2, "I will suppress the small cell.", "public")
    (outputs / "cardio" / "tables" / "regions.csv").write_bytes(
        b"region,cases\nnorth,\nsouth,150\n"
    )
    changed = svc.add_file(alice, r2, "tables/regions.csv", "tables")
    assert changed["replaced"] and changed["content_changed"] and changed["changed_in_round"] == 2
    unchanged = svc.add_file(alice, r2, "notes.txt", "notes")
    assert unchanged["replaced"] and not unchanged["content_changed"]
    resubmitted = svc.submit(alice, r2)
    assert resubmitted["state"] == "submitted" and resubmitted["round"] == 2
    votes = {f["path"]: f["votes"] for f in svc.get_request(olivia, r2)["files"]}
    assert votes == {
        "notes.txt": {"olivia": "approve"},
        "tables/regions.csv": {"olivia": "undecided"},  # changed: votes reset
        "tables/smoking.csv": {"olivia": "approve"},  # unchanged: approval kept
    }
    votes = {f["path"]: f["votes"] for f in svc.get_request(oscar, r2)["files"]}
    assert votes["notes.txt"] == {"oscar": "undecided"}  # unchanged, but changes were requested
    refused(409, lambda: svc.submit_review(olivia, r2), match="regions.csv")
    review(svc, r2, olivia, {regions: "approve"})
    review(svc, r2, oscar, {regions: "approve", notes2: "approve"})
    svc.approve(oscar, r2)
    record2 = svc.release(olivia, r2)["record"]
    regions_now = b"region,cases\nnorth,\nsouth,150\n"
    entry = {
        "path": "tables/regions.csv",
        "sha256": hashlib.sha256(regions_now).hexdigest(),
        "size": len(regions_now),
    }
    assert entry in record2["files"]
    assert record2["public_comments"][0]["text"] == "I will suppress the small cell."
    with engine.connect() as conn:  # round 1's votes are kept as history
        rounds = conn.execute(select(Vote.round).where(Vote.request_id == r2).distinct())
        assert sorted(rounds.scalars()) == [1, 2]

    # --- Request 3: rejected --------------------------------------------------------------------
    r3, f3 = new_request(svc, {"notes.txt": "notes"})
    for checker in (olivia, oscar):
        review(svc, r3, checker, {f3["notes.txt"]["id"]: "request_changes"})
    assert svc.reject(oscar, r3)["state"] == "rejected"
    refused(409, lambda: svc.submit(alice, r3))
    refused(409, lambda: svc.download_released(alice, r3, f3["notes.txt"]["id"]))

    # --- Request 4: the author is also a checker, and can't review their own request ----------
    r4, f4 = new_request(svc, {"notes.txt": "notes"}, author=amy)
    note4 = f4["notes.txt"]["id"]
    refused(403, lambda: svc.vote(amy, r4, note4, "approve"), match="author")
    refused(403, lambda: svc.submit_review(amy, r4), match="author")
    refused(403, lambda: svc.comment(amy, r4, "looks fine", "private"), match="author")
    assert r4 not in {r["id"] for r in svc.list_requests(amy, mine_to_review=True)}
    assert r4 in {r["id"] for r in svc.list_requests(olivia, mine_to_review=True)}
    # ...but reviews other people's requests.
    r5, f5 = new_request(svc, {"notes.txt": "notes"})
    review(svc, r5, amy, {f5["notes.txt"]["id"]: "approve"})
    assert svc.get_request(amy, r5)["state"] == "under_review"

    # --- The audit log ------------------------------------------------------------------------
    report = svc.verify_audit()
    assert report.ok, report.problem
    states = [
        e["event"]
        for e in audit_events(engine, r2)
        if e["event"] not in ("FILE_VIEWED", "VOTED", "COMMENTED", "CONTEXT_EDITED", "FILE_ADDED")
    ]
    assert states == [
        "REQUEST_CREATED",
        "SUBMITTED",
        "REVIEW_SUBMITTED",
        "REVIEW_SUBMITTED",
        "RETURNED",
        "RESUBMITTED",
        "REVIEW_SUBMITTED",
        "REVIEW_SUBMITTED",
        "APPROVED",
        "RELEASED",
    ]
    assert [e["event"] for e in svc.request_audit(olivia, r1)][:2] == [
        "REQUEST_CREATED",
        "FILE_ADDED",
    ]
    refused(403, lambda: svc.request_audit(alice, r1), match="author")
    # Two releases: two checkpoints outside the database, both still in the log.
    checkpoints = read_checkpoints(tmp_path / "checkpoints.jsonl")
    assert len(checkpoints) == 2
    assert svc.verify_audit(checkpoints).ok
    # Notifications: submission x5 (checkers), reviews complete, return, releases, rejection.
    events = [m.event for m in svc.pending_notifications()]
    assert events.count("submitted") == 6 and events.count("released") == 2
    assert "returned" not in events and "return" in events and "reject" in events
    for message in svc.pending_notifications():
        assert "Smoking" not in message.subject + message.body  # titles never leave by e-mail


# --------------------------------------------------------------------------------------------
# Issue #12: members never get the bytes of a file that is not released; checkers see only
# submitted requests; every byte (or preview) served is an audit event with the actor.


def test_members_never_get_unreleased_bytes_in_any_state(service, outputs):
    secret = b"patient,diagnosis\nAnne Smith,HIV\nBob Jones,hepatitis C\n"
    (outputs / "cardio" / "copied_data.csv").write_bytes(secret)
    rid = service.create_request(alice, "cardio", "Copied data")["id"]
    added = service.add_file(alice, rid, "copied_data.csv")
    fid = added["id"]
    service.set_group_context(alice, rid, added["group"], "What it shows", "None")

    def no_bytes_for_members(stage: str) -> None:
        # the author, a member, and (before submission) a member who is a checker
        for who in (alice, carol, amy) if stage == "draft" else (alice, carol):
            want = "never gives authors" if who is alice else "has not been submitted"
            if who is carol:
                want = "Only output checkers see the contents"
            refused(
                403 if who is not amy else 409,
                lambda who=who: service.view_file(who, rid, fid),
                match=want,
            )
            shown = json.dumps([service.get_request(who, rid), service.preview_file(who, rid, fid)])
            for cell in (b"Anne Smith", b"HIV", b"hepatitis", b"patient", b"diagnosis"):
                assert cell.decode() not in shown, (stage, who.username, cell)

    no_bytes_for_members("draft")
    # a checker who is no member sees nothing of a draft
    refused(403, lambda: service.get_request(olivia, rid), match="has not been submitted")
    refused(403, lambda: service.view_file(olivia, rid, fid), match="has not been submitted")
    service.submit(alice, rid)
    no_bytes_for_members("submitted")
    # positive control: the checker gets exactly the bytes once submitted, and it is audited
    head = len(audit_events(service.engine))
    assert service.view_file(olivia, rid, fid).data == secret
    event = audit_events(service.engine)[-1]
    assert (event["event"], event["actor"], len(audit_events(service.engine))) == (
        "FILE_VIEWED",
        "olivia",
        head + 1,
    )
    service.withdraw(alice, rid)
    no_bytes_for_members("withdrawn after submission")
    assert service.view_file(olivia, rid, fid).data == secret  # it was submitted


def test_a_request_withdrawn_before_submission_is_never_shown_to_checkers(service):
    rid, files = new_request(service, {"notes.txt": "notes"}, submit=False)
    fid = files["notes.txt"]["id"]
    service.withdraw(alice, rid)
    for who in (olivia, oscar, chloe, adam):
        for call in (service.get_request, service.view_file, service.preview_file):
            args = (who, rid) if call == service.get_request else (who, rid, fid)
            refused(403, functools.partial(call, *args), match="has not been submitted")
    assert rid not in [r["id"] for r in service.list_requests(olivia)]
    assert service.get_request(alice, rid)["state"] == "withdrawn"  # its author still sees it


def test_the_preview_is_shape_and_verdicts_and_is_audited(service):
    rid, files = new_request(
        service, {"tables/smoking.csv": "tables", "tables/formula.csv": "tables"}, submit=False
    )
    table, formula = files["tables/smoking.csv"], files["tables/formula.csv"]
    head = len(audit_events(service.engine))
    preview = service.preview_file(alice, rid, table["id"])
    assert preview["shape"] == {"rows": 3, "columns": 3}
    assert preview["check"]["redacted"] and preview["check"]["sdc"]["verdict"] == "review"
    for cell in ("female", "smoker", '"34"', '"120"'):
        assert cell not in json.dumps(preview), cell
    event = audit_events(service.engine)[-1]
    assert len(audit_events(service.engine)) == head + 1
    assert (event["event"], event["actor"], event["object"]) == (
        "FILE_PREVIEWED",
        "alice",
        "tables/smoking.csv",
    )
    # the author's view of the checks: no cell text (the formula's "=1+2"), counts instead
    author_view = service.get_request(alice, rid)
    seen = next(f for f in author_view["files"] if f["id"] == formula["id"])["check"]
    assert "1+2" not in json.dumps(author_view) and "1+2" not in json.dumps(formula)
    assert seen["flagged_cell_count"] == 1 and seen["change_count"] >= 1
    # positive control: a checker, once submitted, sees the cells the check flagged
    service.submit(alice, rid)
    checker = service.get_request(olivia, rid)
    assert "1+2" in json.dumps(checker)
    assert not next(f for f in checker["files"] if f["id"] == formula["id"])["check"].get(
        "redacted"
    )
    verify = service.verify_audit()
    assert verify.ok, verify.problem


def test_release_downloads_stay_the_way_out_audited_with_the_downloader(service):
    rid, files = new_request(service, {"notes.txt": "notes"})
    fid = files["notes.txt"]["id"]
    review(service, rid, olivia, {fid: "approve"})
    review(service, rid, oscar, {fid: "approve"})
    service.approve(oscar, rid)
    refused(409, lambda: service.download_released(carol, rid, fid), match="only released")
    service.release(oscar, rid)
    refused(403, lambda: service.view_file(alice, rid, fid), match="never gives authors")
    assert service.download_released(carol, rid, fid).data == NOTES
    event = audit_events(service.engine)[-1]
    assert (event["event"], event["actor"], event["object"]) == ("DOWNLOADED", "carol", "notes.txt")


def test_released_bytes_are_the_approved_snapshot_even_if_the_store_is_tampered(service):
    rid, files = new_request(service, {"notes.txt": "notes"})
    note = files["notes.txt"]
    for checker in (olivia, oscar):
        review(service, rid, checker, {note["id"]: "approve"})
    service.approve(olivia, rid)
    blob = service.content.path(note["release_sha256"])
    os.chmod(blob, 0o600)
    blob.write_bytes(b"something else entirely\n")
    refused_release = pytest.raises(Exception, match="corrupt")
    with refused_release:
        service.release(olivia, rid)
    assert service.get_request(olivia, rid)["state"] == "approved"  # nothing changed
    blob.write_bytes(NOTES)
    service.release(olivia, rid)
    blob.write_bytes(b"swapped after release\n")
    with pytest.raises(ValueError, match="corrupt"):
        service.download_released(alice, rid, note["id"])


def test_visibility_of_comments_and_votes(service):
    rid, files = new_request(service, {"notes.txt": "notes"}, submit=False)
    note = files["notes.txt"]["id"]
    service.comment(carol, rid, "Draft looks good", "public")
    service.submit(alice, rid)
    service.vote(olivia, rid, note, "approve")
    service.comment(olivia, rid, "Is n=5000 right?", "public", file_id=note)
    service.comment(olivia, rid, "Checker-only note", "private")

    def bodies(actor):
        return [c["body"] for c in service.get_request(actor, rid)["comments"]]

    # Independent review: a checker's comments of the round are hidden from the others.
    assert bodies(olivia) == ["Draft looks good", "Is n=5000 right?", "Checker-only note"]
    assert bodies(oscar) == ["Draft looks good"]
    assert bodies(alice) == ["Draft looks good"]
    assert bodies(adam) == ["Draft looks good"]
    review(service, rid, olivia, {}, submit=True)
    review(service, rid, oscar, {note: "approve"})
    # All reviews in: checkers see everything; members still see no checker comments or votes.
    assert bodies(oscar) == ["Draft looks good", "Is n=5000 right?", "Checker-only note"]
    assert bodies(alice) == ["Draft looks good"]
    assert service.get_request(alice, rid)["files"][0]["votes"] == {}
    service.return_request(olivia, rid)
    # Returned: the author sees the public comments and the votes, never private ones.
    assert bodies(alice) == ["Draft looks good", "Is n=5000 right?"]
    assert service.get_request(alice, rid)["files"][0]["votes"] == {
        "olivia": "approve",
        "oscar": "approve",
    }
    assert service.get_request(alice, rid)["comments"][1]["file"] == "notes.txt"
    refused(403, lambda: service.get_request(bob, rid))


def test_votes_reset_and_undecided_needs_reset_permission(service):
    rid, files = new_request(service, {"notes.txt": "notes", "tables/smoking.csv": "tables"})
    ids = [f["id"] for f in files.values()]
    review(service, rid, olivia, {i: "approve" for i in ids}, submit=False)
    refused(404, lambda: service.reset_votes(olivia, rid, [999_999]))
    assert service.reset_votes(olivia, rid, [ids[0]]) == ["notes.txt"]
    assert service.reset_votes(olivia, rid) == ["tables/smoking.csv"]
    assert service.reset_votes(olivia, rid) == []
    review(service, rid, olivia, {i: "approve" for i in ids})
    review(service, rid, oscar, {i: "approve" for i in ids})
    # Reviewed: votes can change but not go back to undecided.
    service.vote(olivia, rid, ids[0], "request_changes")
    refused(409, lambda: service.vote(olivia, rid, ids[0], "undecided"), match="reset")
    refused(409, lambda: service.reset_votes(olivia, rid), match="reset")
    refused(400, lambda: service.vote(oscar, rid, ids[0], "yes please"))
    refused(404, lambda: service.vote(oscar, rid, 999_999, "approve"))
    assert service.verify_audit().ok


def test_bulk_request_changes_is_one_vote_per_file_and_never_an_approval(service):
    rid, files = new_request(
        service,
        {"notes.txt": "notes", "tables/smoking.csv": "tables", "tables/regions.csv": "tables"},
    )
    ids = {path: f["id"] for path, f in files.items()}
    service.vote(olivia, rid, ids["notes.txt"], "request_changes")
    service.vote(olivia, rid, ids["tables/regions.csv"], "approve")
    refused(404, lambda: service.request_changes(olivia, rid, [999_999]))
    refused(403, lambda: service.request_changes(alice, rid))  # the author
    # the vote already "request changes" is left alone; the approval is turned round
    assert service.request_changes(olivia, rid) == ["tables/regions.csv", "tables/smoking.csv"]
    assert service.request_changes(olivia, rid) == []
    votes = {f["path"]: f["votes"] for f in service.get_request(olivia, rid)["files"]}
    assert {path: v["olivia"] for path, v in votes.items()} == dict.fromkeys(ids, "request_changes")
    # a second checker's votes are untouched, and only the listed files change
    service.vote(oscar, rid, ids["notes.txt"], "approve")
    assert service.request_changes(oscar, rid, [ids["tables/regions.csv"]]) == [
        "tables/regions.csv"
    ]
    votes = {f["path"]: f["votes"] for f in service.get_request(oscar, rid)["files"]}
    assert votes["notes.txt"]["oscar"] == "approve"
    events = [e for e in service.request_audit(adam, rid) if e["event"] == "VOTED"]
    assert len(events) == 2 + 2 + 1 + 1  # one event per vote that changed
    assert service.verify_audit().ok


def test_input_validation_and_unknown_things(service):
    refused(400, lambda: service.create_request(alice, "cardio", "   "))
    refused(400, lambda: service.create_request(alice, "cardio", "x" * 201))
    refused(403, lambda: service.create_request(alice, "diabetes", "Not mine"))
    refused(403, lambda: service.create_request(olivia, "cardio", "Checkers aren't members"))
    refused(404, lambda: service.get_request(alice, "nope"))
    refused(404, lambda: service.get_request(alice, "../../etc"))
    rid = service.create_request(alice, "cardio", "Valid")["id"]
    refused(400, lambda: service.add_file(alice, rid, "notes.txt", "bad\u202egroup"))
    refused(404, lambda: service.remove_file(alice, rid, 12345))
    refused(404, lambda: service.preview_file(alice, rid, "abc"))
    refused(403, lambda: service.view_file(alice, rid, "abc"), match="never gives authors")
    refused(400, lambda: service.comment(alice, rid, "", "public"))
    refused(400, lambda: service.comment(alice, rid, "hi", "secret"))
    refused(400, lambda: service.list_requests(alice, state="pending"))
    # The policy is asked first: whoever may not act gets 403, whatever they sent.
    refused(403, lambda: service.create_request(bob, "cardio", ""))
    refused(403, lambda: service.add_file(bob, rid, "notes.txt", "bad\u202egroup"))
    refused(403, lambda: service.set_group_context(carol, rid, "", "x" * 10**6, ""))
    refused(403, lambda: service.comment(bob, rid, "", "secret"))
    refused(403, lambda: service.vote(carol, rid, "x", "maybe"))


def test_remove_file_removes_its_votes(service):
    rid, files = new_request(service, {"notes.txt": "notes", "tables/smoking.csv": "tables"})
    ids = {p: f["id"] for p, f in files.items()}
    review(service, rid, olivia, {i: "request_changes" for i in ids.values()})
    review(service, rid, oscar, {i: "request_changes" for i in ids.values()})
    service.return_request(olivia, rid)
    service.comment(alice, rid, "dropping the table", "public", file_id=ids["tables/smoking.csv"])
    service.remove_file(alice, rid, ids["tables/smoking.csv"])
    view = service.get_request(alice, rid)
    assert [f["path"] for f in view["files"]] == ["notes.txt"]
    assert view["comments"][-1]["file_id"] is None
    service.submit(alice, rid)
    assert service.verify_audit().ok


def test_list_requests(service, clock):
    r1, _ = new_request(service, {"notes.txt": "notes"}, submit=False)
    clock.advance(days=10)
    r2, _ = new_request(service, {"notes.txt": "notes"})
    r3 = service.create_request(amy, "cardio", "amy's")["id"]
    ids = lambda rows: {r["id"] for r in rows}  # noqa: E731
    assert ids(service.list_requests(alice)) == {r1, r2, r3}
    assert ids(service.list_requests(bob)) == set()
    assert ids(service.list_requests(adam)) == {r2}  # drafts are shown to members only (#12)
    assert ids(service.list_requests(amy)) == {r1, r2, r3}  # a checker who is a member
    assert ids(service.list_requests(olivia)) == {r2}
    assert ids(service.list_requests(olivia, state="submitted")) == {r2}
    assert ids(service.list_requests(olivia, mine_to_review=True)) == {r2}
    assert ids(service.list_requests(alice, older_than=timedelta(days=5))) == {r1}
    assert ids(service.list_requests(alice, project="diabetes")) == set()
    review(service, r2, olivia, {service.get_request(olivia, r2)["files"][0]["id"]: "approve"})
    assert ids(service.list_requests(olivia, mine_to_review=True)) == set()
    assert ids(service.list_requests(oscar, mine_to_review=True)) == {r2}
    summary = service.list_requests(oscar, mine_to_review=True)[0]
    assert summary["reviews_in"] == 1 and summary["reviews_required"] == 2


def test_list_requests_pages_see_every_request_once_even_with_equal_times(service):
    for n in range(6):
        service.create_request(alice, "cardio", f"request {n}")
    everything = service.list_requests(alice)
    # two requests updated in the same microsecond: the id breaks the tie
    with service.engine.begin() as conn:
        same = conn.execute(select(Request.updated_at).where(Request.id == everything[2]["id"]))
        conn.execute(
            update(Request)
            .where(Request.id == everything[3]["id"])
            .values(updated_at=same.scalar_one())
        )
    everything = service.list_requests(alice)
    for size in (1, 2, 4, 6, 7):
        seen, after = [], None
        while True:
            page = service.list_requests(alice, limit=size, after=after)
            seen += page
            if len(page) < size:
                break
            after = page_cursor(page[-1])
        assert [r["id"] for r in seen] == [r["id"] for r in everything], size
    refused(400, lambda: service.list_requests(adam, limit=0))
    for bad in ("nonsense", page_cursor({"updated_at": "yesterday", "id": "x"}), "W10"):
        refused(400, lambda bad=bad: service.list_requests(adam, after=bad), match="position")


def test_actor_for_uses_the_enclave_and_hub_groups(enclave):
    assert actor_for(enclave, "alice") == alice
    a = actor_for(enclave, "zoe", ["project-diabetes", "output-checkers", "hub-admins"])
    assert a.projects == {"diabetes"} and a.is_checker and a.is_admin
    assert not actor_for(enclave, "mallory", ["project-nope"]).projects


def test_reviews_required_comes_from_the_enclave(make_service, enclave):
    svc = make_service()
    svc.enclave = dataclasses.replace(enclave, review=ReviewPolicy(reviews_required=1))
    rid, files = new_request(svc, {"notes.txt": "notes"})
    review(svc, rid, olivia, {files["notes.txt"]["id"]: "approve"})
    assert svc.get_request(olivia, rid)["state"] == "reviewed"
    svc.approve(olivia, rid)


# --------------------------------------------------------------------------------------------
# Tampering


def _released_world(svc: EgressService) -> dict:
    rid, files = new_request(svc, {"notes.txt": "notes", "tables/smoking.csv": "tables"})
    ids = [f["id"] for f in files.values()]
    for checker in (olivia, oscar):
        review(svc, rid, checker, {i: "approve" for i in ids})
    svc.approve(olivia, rid)
    svc.release(oscar, rid)
    other, other_files = new_request(svc, {"notes.txt": "notes"})
    svc.vote(olivia, other, other_files["notes.txt"]["id"], "request_changes")
    svc.comment(olivia, other, "Is n=5000 right?", "public")
    return {"released": rid, "open": other, "files": ids}


def _lines(conn) -> dict[int, str]:
    return dict(conn.execute(select(AuditEventRow.seq, AuditEventRow.line)).all())


def _rehash(line: str, change: Callable[[dict], None]) -> AuditEvent:
    data = json.loads(line)
    change(data)
    event = AuditEvent.from_dict({**data, "hash": ""})
    return AuditEvent.from_dict({**data, "hash": event.compute_hash()})


def _seq_of(conn, event: str, nth: int = 0) -> int:
    seqs = conn.execute(
        select(AuditEventRow.seq).where(AuditEventRow.event == event).order_by(AuditEventRow.seq)
    ).scalars()
    return list(seqs)[nth]


def tamper_update_line(conn, world):
    seq = _seq_of(conn, "VOTED")
    line = _lines(conn)[seq].replace('"approve"', '"request_changes"')
    conn.execute(update(AuditEventRow).where(AuditEventRow.seq == seq).values(line=line))


def tamper_delete_row(conn, world):
    conn.execute(text("DELETE FROM audit_events WHERE seq = 5"))


def tamper_swap_seqs(conn, world):
    conn.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = 6"))
    conn.execute(text("UPDATE audit_events SET seq = 6 WHERE seq = 7"))
    conn.execute(text("UPDATE audit_events SET seq = 7 WHERE seq = -1"))


def tamper_truncate_tail(conn, world):
    conn.execute(
        text("DELETE FROM audit_events WHERE seq > (SELECT max(seq) - 3 FROM audit_events)")
    )


def tamper_truncate_tail_and_move_head(conn, world):
    """Cut the log just before the release and move the recorded head to match."""
    last = _seq_of(conn, "RELEASED") - 1
    line = _lines(conn)[last]
    conn.execute(text("DELETE FROM audit_events WHERE seq > :s"), {"s": last})
    conn.execute(update(AuditLogRow).values(head_seq=last, head_hash=json.loads(line)["hash"]))


def tamper_truncate_everything(conn, world):
    conn.execute(text("DELETE FROM audit_events"))


def tamper_forged_hash(conn, world):
    seq = _seq_of(conn, "VOTED", 1)
    forged = _rehash(_lines(conn)[seq], lambda d: d["details"].update(vote="request_changes"))
    conn.execute(
        update(AuditEventRow)
        .where(AuditEventRow.seq == seq)
        .values(line=forged.to_line().decode().rstrip("\n"))
    )


def tamper_rewrite_whole_chain_after_an_event(conn, world):
    """Edit an event and recompute every later hash and the recorded head: a valid chain."""
    lines = _lines(conn)
    start = _seq_of(conn, "VOTED")
    prev = json.loads(lines[start - 1])["hash"]
    for seq in range(start, max(lines) + 1):

        def change(d, seq=seq, prev=prev):
            d["prev_hash"] = prev
            if seq == start:
                d["details"]["vote"] = "request_changes"

        ev = _rehash(lines[seq], change)
        prev = ev.hash
        conn.execute(
            update(AuditEventRow)
            .where(AuditEventRow.seq == seq)
            .values(line=ev.to_line().decode().rstrip("\n"))
        )
    conn.execute(update(AuditLogRow).values(head_hash=prev))


def tamper_event_column(conn, world):
    conn.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE seq = 3"))


def tamper_inserted_after_head(conn, world):
    last = conn.execute(select(func.max(AuditEventRow.seq))).scalar()
    head = AuditEvent.from_dict(json.loads(_lines(conn)[last]))
    from egress.audit.chain import next_event

    log_id = conn.execute(select(AuditLogRow.log_id)).scalar()
    extra = next_event(head, log_id, actor="mallory", event="APPROVED", request_id=world["open"])
    conn.execute(
        AuditEventRow.__table__.insert().values(
            seq=extra.seq,
            line=extra.to_line().decode().rstrip("\n"),
            event=extra.event,
            actor=extra.actor,
            project=None,
            request_id=extra.request_id,
            time=extra.time,
        )
    )


def tamper_vote_in_the_database(conn, world):
    conn.execute(update(Vote).where(Vote.request_id == world["open"]).values(vote="approve"))


def tamper_state_in_the_database(conn, world):
    conn.execute(update(Request).where(Request.id == world["open"]).values(state="approved"))


def tamper_file_hash_in_the_database(conn, world):
    conn.execute(
        update(RequestFile)
        .where(RequestFile.request_id == world["open"])
        .values(release_sha256=hashlib.sha256(b"other bytes").hexdigest())
    )


def tamper_release_record(conn, world):
    record_json = conn.execute(select(Release.record_json)).scalar()
    signed = json.loads(record_json)
    signed["record"]["files"][0]["sha256"] = hashlib.sha256(b"other").hexdigest()
    conn.execute(update(Release).values(record_json=json.dumps(signed)))


def tamper_review_deleted(conn, world):
    conn.execute(text("DELETE FROM reviews WHERE reviewer = 'oscar'"))


def tamper_group_context(conn, world):
    conn.execute(update(FileGroup).values(controls="none at all"))


def tamper_comment_body(conn, world):
    conn.execute(update(Comment).values(body="edited"))


TAMPERING = {
    "update a line": (tamper_update_line, "altered"),
    "delete a row": (tamper_delete_row, "missing"),
    "swap seqs": (tamper_swap_seqs, "reordered"),
    "truncate the tail": (tamper_truncate_tail, "truncated"),
    "truncate and move the head": (tamper_truncate_tail_and_move_head, "truncated"),
    "truncate everything": (tamper_truncate_everything, "truncated"),
    "forged hash": (tamper_forged_hash, "does not chain"),
    "rewrite the chain": (tamper_rewrite_whole_chain_after_an_event, "rewritten"),
    "edit a query column": (tamper_event_column, "columns"),
    "insert after the head": (tamper_inserted_after_head, "behind the service's back"),
    "change a vote row": (tamper_vote_in_the_database, "vote of olivia"),
    "change a state": (tamper_state_in_the_database, "approved in the database"),
    "change a file hash": (tamper_file_hash_in_the_database, "files differ"),
    "change a release record": (tamper_release_record, "does not verify"),
    "delete a review": (tamper_review_deleted, "reviews differ"),
    "change a group's text": (tamper_group_context, "context or controls"),
    "change a comment": (tamper_comment_body, "comments differ"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampering_is_detected(service, engine, how, db_url, tmp_path, json_log):
    tamper, expected = TAMPERING[how]
    world = _released_world(service)
    before = service.verify_audit()
    assert before.ok, before.problem
    with engine.begin() as conn:
        tamper(conn, world)
    report = service.verify_audit()
    assert not report.ok
    assert expected in report.problem, report.problem
    # The admin command line says the same, and exits 1.
    state = tmp_path / "state"
    paths = ServicePaths(state)
    paths.egress_dir.mkdir(parents=True)
    shutil.copy(service.signing_key_path, paths.signing_key)
    shutil.copy(public_key_path(service.signing_key_path), public_key_path(paths.signing_key))
    shutil.copy(service.checkpoint_path, paths.checkpoints)
    json_log.clear()
    assert cli.main(["--db", db_url, "--state", str(state), "verify"]) == 1
    # and logs the security event a SIEM alerts on (the service's own check did too)
    (line,) = json_log.events("audit.verify_failed")
    assert expected in line["problem"] and line["logger"] == "egress.cli"


def test_a_tampered_head_makes_every_write_fail_closed(service, engine):
    world = _released_world(service)
    with engine.begin() as conn:
        tamper_truncate_tail(conn, world)
    with pytest.raises(AuditChainError, match="head"):
        service.comment(olivia, world["open"], "hello", "public")
    with pytest.raises(AuditChainError):
        service.create_request(alice, "cardio", "new")


def test_checkpoint_file_torn_line_and_garbage(service):
    _released_world(service)
    path = service.checkpoint_path
    assert len(service.checkpoints()) == 1
    with open(path, "a") as f:
        f.write('{"log_id": "x", "se')  # a crash while appending: ignored
    assert service.verify_audit().ok
    path.write_text(path.read_text().replace('{"log_id": "x", "se', "garbage\n"))
    report = service.verify_audit()
    assert not report.ok and "checkpoint file" in report.problem


def test_request_ids_are_letters_and_digits(service):
    for _ in range(20):
        rid = service.create_request(alice, "cardio", "id")["id"]
        assert len(rid) == 12 and rid.isalnum() and rid.isascii()


# --------------------------------------------------------------------------------------------
# Storage: migrations, concurrency, notifications


def test_models_match_the_migrations(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert current_revision(engine) == head_revision()
    migrate(engine)  # idempotent
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_service_refuses_an_unmigrated_database(tmp_path, enclave):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(RuntimeError, match="migrate"):
        EgressService(engine, ContentStore(tmp_path / "c"), enclave)


def test_times_are_utc_on_both_databases(service, engine, clock):
    rid = service.create_request(alice, "cardio", "time")["id"]
    with engine.connect() as conn:
        created = conn.execute(select(Request.created_at).where(Request.id == rid)).scalar()
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0)
    assert service.get_request(alice, rid)["created_at"].endswith("Z")


def test_concurrent_writers_keep_one_chain(make_service, engine):
    services = [make_service() for _ in range(4)]
    rids = [services[0].create_request(alice, "cardio", f"r{i}")["id"] for i in range(4)]
    errors = []

    def work(svc, rid):
        try:
            for n in range(8):
                svc.comment(carol, rid, f"comment {n}", "public")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(s, r)) for s, r in zip(services, rids, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = services[0].verify_audit()
    assert report.ok, report.problem
    assert report.head.seq == 1 + 4 + 32


def test_notifications_are_queued_and_retried(make_service):
    woken = []
    svc = make_service(notifier=lambda: woken.append(1))
    rid, _ = new_request(svc, {"notes.txt": "notes"})
    assert woken == [1]
    [message] = svc.pending_notifications()
    assert (
        message.to
        == (
            f"{CHECKERS_MARKER}alice",  # and whoever is in the checkers group at delivery
            "amy",
            "chloe",
            "olivia",
            "oscar",
        )
        and message.event == "submitted"
    )
    assert rid in message.subject

    def failing(message):
        raise ConnectionRefusedError("smtp down")

    assert svc.deliver_notifications(failing) == {"sent": 0, "failed": 1}
    assert svc.pending_notifications()[0].attempts == 1
    sent = []
    assert svc.deliver_notifications(sent.append) == {"sent": 1, "failed": 0}
    assert [m.id for m in sent] == [message.id] and svc.pending_notifications() == []
    # A notification that keeps failing is given up after max_attempts.
    svc.withdraw(alice, rid)  # no notification for withdrawals
    rid2, _ = new_request(svc, {"notes.txt": "notes"})
    for _ in range(3):
        svc.deliver_notifications(failing, max_attempts=3)
    assert svc.pending_notifications(max_attempts=3) == []
    with svc.engine.connect() as conn:
        row = conn.execute(select(Notification).order_by(Notification.id.desc())).first()
        assert row.attempts == 3 and "smtp down" in row.last_error and row.sent_at is None


def test_a_failing_notifier_never_breaks_the_workflow(make_service):
    def broken():
        raise RuntimeError("boom")

    svc = make_service(notifier=broken)
    rid, _ = new_request(svc, {"notes.txt": "notes"})
    assert svc.get_request(alice, rid)["state"] == "submitted"


def test_export(service, engine):
    _released_world(service)
    out = io.StringIO()
    assert export_database_audit(engine, "jsonl", out).ok
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["event"] == "LOG_OPENED"
    assert len(lines) == len(audit_events(engine))
    out = io.StringIO()
    assert export_database_audit(engine, "csv", out).ok
    rows = out.getvalue().splitlines()
    assert rows[0].startswith("seq,time,actor,event") and len(rows) == len(lines) + 1
    with engine.begin() as conn:
        tamper_delete_row(conn, None)
    out = io.StringIO()
    report = export_database_audit(engine, "jsonl", out)
    assert not report.ok and len(out.getvalue().splitlines()) == len(lines) - 1


def test_admin_cli(service, db_url, tmp_path, capsys, signing_key):
    world = _released_world(service)
    state = tmp_path / "state"
    paths = ServicePaths(state)
    base = ["--db", db_url, "--state", str(state)]
    assert cli.main([*base, "migrate"]) == 0
    assert cli.main([*base, "keygen"]) == 0
    assert cli.main([*base, "keygen"]) == 1  # never overwrites a key
    capsys.readouterr()
    # verify: ok (the release record can't be checked with this new key: it fails).
    assert cli.main([*base, "verify"]) == 1
    assert "does not verify" in capsys.readouterr().err
    shutil.copy(public_key_path(signing_key), public_key_path(paths.signing_key))
    assert cli.main([*base, "verify"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert cli.main([*base, "export", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("seq,time,actor,event")
    output = tmp_path / "audit.jsonl"
    assert cli.main([*base, "export", "--format", "jsonl", "-o", str(output)]) == 0
    assert output.read_text().count("\n") == len(audit_events(service.engine))
    assert cli.main([*base, "pending"]) == 0
    out = capsys.readouterr().out
    assert world["open"] in out and world["released"] not in out
    assert cli.main([*base, "pending", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["id"] == world["open"]
    assert cli.main([*base, "release-record", world["released"]]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["record"]["request_id"] == world["released"]
    assert "signature: valid" in captured.err
    assert cli.main([*base, "release-record", world["open"]]) == 1
    with service.engine.begin() as conn:
        tamper_release_record(conn, world)
    capsys.readouterr()
    assert cli.main([*base, "release-record", world["released"]]) == 1
    assert "INVALID" in capsys.readouterr().err
    assert cli.main(["--state", str(tmp_path / "nowhere"), "verify"]) == 2


# --------------------------------------------------------------------------------------------
# Role x state x operation: 200, 403 or 409; a refusal changes nothing (not even the audit log)

ROLES = {
    "author": alice,
    "author_checker": Actor("alice", frozenset({"cardio"}), is_checker=True),
    "member": carol,
    "reviewer": olivia,  # reviews in the world (review submitted from under_review on)
    "checker": chloe,  # another checker: has voted in submitted/under_review, never reviewed
    "admin": adam,
    "outsider": bob,
}
STATES = [s.value for s in RequestState]
AUTHORS_TURN = {"draft", "returned"}
BEFORE_APPROVAL = {"draft", "submitted", "under_review", "reviewed", "returned"}
REVIEWING = {"submitted", "under_review", "reviewed"}

OPERATIONS: dict[str, Callable[[EgressService, Actor, str, int], object]] = {
    "view": lambda s, a, r, f: s.get_request(a, r),
    "add_file": lambda s, a, r, f: s.add_file(a, r, "tables/smoking.csv", "notes"),
    "remove_file": lambda s, a, r, f: s.remove_file(a, r, f),
    "edit_context": lambda s, a, r, f: s.set_group_context(a, r, "notes", "new", "new"),
    "submit": lambda s, a, r, f: s.submit(a, r),
    "withdraw": lambda s, a, r, f: s.withdraw(a, r),
    "view_file": lambda s, a, r, f: s.view_file(a, r, f),
    "preview": lambda s, a, r, f: s.preview_file(a, r, f),
    "vote": lambda s, a, r, f: s.vote(a, r, f, "approve"),
    "reset_votes": lambda s, a, r, f: s.reset_votes(a, r),
    "request_changes_all": lambda s, a, r, f: s.request_changes(a, r),
    "comment_public": lambda s, a, r, f: s.comment(a, r, "a comment", "public"),
    "comment_private": lambda s, a, r, f: s.comment(a, r, "a checker note", "private"),
    "submit_review": lambda s, a, r, f: s.submit_review(a, r),
    "return": lambda s, a, r, f: s.return_request(a, r),
    "approve": lambda s, a, r, f: s.approve(a, r),
    "reject": lambda s, a, r, f: s.reject(a, r),
    "release": lambda s, a, r, f: s.release(a, r),
    "download": lambda s, a, r, f: s.download_released(a, r, f),
    "revoke": lambda s, a, r, f: s.revoke(a, r, "a disclosure was found"),
}
# Allowed operations that don't move the request or its votes: run on the shared world.
NEUTRAL = {"view", "view_file", "preview", "download", "comment_public", "comment_private"}
# Operations that serve a file's bytes or a preview of them: each is one audit event (#12).
SERVES_BYTES = {"view_file", "preview", "download"}


def expected_status(op: str, role: str, state: str) -> int:
    """The rules, restated independently of egress.domain.policy."""
    if role == "outsider":
        return 403  # not a member, checker or administrator: sees nothing
    author = role in ("author", "author_checker")
    member = author or role == "member"
    checker = role in ("reviewer", "checker")  # a checker who is not the author
    if not member and state in ("draft", "withdrawn"):  # the world's were never submitted
        return 403  # checkers and administrators see only submitted requests (issue #12)
    if op == "view":
        return 200
    if op == "preview":
        return 403 if role == "admin" else 200
    if op in ("add_file", "remove_file", "edit_context", "submit"):
        return (200 if state in AUTHORS_TURN else 409) if author else 403
    if op == "withdraw":
        return (200 if state in BEFORE_APPROVAL else 409) if author else 403
    if op == "view_file":  # bytes before release: reviewing checkers only (issue #12)
        return 200 if checker else 403
    if op == "download":
        return (200 if state == "released" else 409) if member else 403
    if op == "revoke":
        return 403 if member else (200 if state == "released" else 409)
    if not checker:
        if op == "comment_public" and member:
            return 200 if state in AUTHORS_TURN else 409
        return 403
    done = role == "reviewer" and state == "under_review"  # own review in, round independent
    if op in ("vote", "request_changes_all"):
        if state == "reviewed":
            return 200 if role == "reviewer" else 409
        return 200 if state in ("submitted", "under_review") and not done else 409
    if op == "reset_votes":
        return 200 if state in ("submitted", "under_review") and not done else 409
    if op in ("comment_public", "comment_private"):
        return 200 if state in REVIEWING and not done else 409
    if op == "submit_review":  # only the checker has voted on every file and not reviewed yet
        return 200 if role == "checker" and state in ("submitted", "under_review") else 409
    if op in ("return", "approve", "reject"):
        return 200 if state == "reviewed" else 409
    assert op == "release"
    return 200 if state == "approved" else 409


@dataclass
class RoleWorld:
    """One request in each state, on one database; ``restore`` puts every row back."""

    service: EgressService
    requests: dict[str, tuple[str, int]] = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)
    baseline: tuple = ()  # the world as saved: every case starts from it and ends in it

    def save(self) -> None:
        with self.service.engine.connect() as conn:
            self.rows = {
                table.name: [dict(row) for row in conn.execute(select(table)).mappings()]
                for table in Base.metadata.sorted_tables
            }
        self.baseline = _snapshot(self.service.engine)

    def restore(self) -> None:
        tables = Base.metadata.sorted_tables
        with self.service.engine.begin() as conn:
            for table in reversed(tables):
                conn.execute(table.delete())
            for table in tables:
                if self.rows[table.name]:
                    conn.execute(table.insert(), self.rows[table.name])


def _build_states(svc: EgressService) -> dict[str, tuple[str, int]]:
    def fresh(submit: bool = True) -> tuple[str, int]:
        rid, files = new_request(svc, {"notes.txt": "notes"}, submit=submit)
        return rid, files["notes.txt"]["id"]

    def reviewed() -> tuple[str, int]:
        rid, fid = fresh()
        review(svc, rid, olivia, {fid: "approve"})
        review(svc, rid, oscar, {fid: "approve"})
        return rid, fid

    world = {"draft": fresh(submit=False), "submitted": fresh()}
    svc.vote(chloe, world["submitted"][0], world["submitted"][1], "approve")
    rid, fid = world["under_review"] = fresh()
    review(svc, rid, olivia, {fid: "approve"})
    svc.vote(chloe, rid, fid, "approve")
    world["reviewed"] = reviewed()
    world["returned"] = reviewed()
    svc.return_request(oscar, world["returned"][0])
    world["approved"] = reviewed()
    svc.approve(oscar, world["approved"][0])
    world["released"] = reviewed()
    svc.approve(oscar, world["released"][0])
    svc.release(oscar, world["released"][0])
    world["rejected"] = reviewed()
    svc.reject(oscar, world["rejected"][0])
    world["withdrawn"] = fresh(submit=False)
    svc.withdraw(alice, world["withdrawn"][0])
    world["revoked"] = reviewed()
    svc.approve(oscar, world["revoked"][0])
    svc.release(oscar, world["revoked"][0])
    svc.revoke(adam, world["revoked"][0])
    for state, (rid, _fid) in world.items():
        assert svc.get_request(alice, rid)["state"] == state
    return world


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def role_world(request, tmp_path_factory, signing_key, sqlite_template):
    base = tmp_path_factory.mktemp(f"roles-{request.param}")
    outputs = make_outputs(base / "outputs")
    drop = None
    if request.param == "sqlite":
        url = new_sqlite_database(sqlite_template, base)
    else:
        server = request.getfixturevalue("postgres_server")
        url, drop = new_postgres_database(server, request.getfixturevalue("postgres_template"))
    service = EgressService(
        make_engine(url),
        ContentStore(base / "content"),
        parse_enclave_config(ENCLAVE),
        outputs_root=lambda project: outputs / project,
        signing_key_path=signing_key,
        clock=FakeClock(),
    )
    world = RoleWorld(service, _build_states(service))
    world.save()
    yield world
    service.engine.dispose()
    if drop is not None:
        drop()


def _snapshot(engine) -> tuple:
    """Row counts, the audit head, and every row an operation could change."""
    tables = Base.metadata.sorted_tables
    counts = [select(func.count()).select_from(t).scalar_subquery() for t in tables]
    head = [select(c).scalar_subquery() for c in (AuditLogRow.head_seq, AuditLogRow.head_hash)]
    with engine.connect() as conn:
        return (
            tuple(conn.execute(select(*counts, *head)).one()),
            sorted(
                conn.execute(select(Request.id, Request.state, Request.round, Request.updated_at))
            ),
            sorted(conn.execute(select(Vote.file_id, Vote.reviewer, Vote.round, Vote.vote))),
            sorted(
                conn.execute(
                    select(RequestFile.id, RequestFile.sha256, RequestFile.group).union_all(
                        select(FileGroup.id, FileGroup.context, FileGroup.controls)
                    )
                )
            ),
        )


def _head_seq(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(AuditLogRow.head_seq)).scalar_one()


TABLE = [(op, role, state) for op in OPERATIONS for role in ROLES for state in STATES]


@pytest.mark.parametrize(
    ("op", "role", "state"), TABLE, ids=[f"{op}-{role}-{state}" for op, role, state in TABLE]
)
def test_role_state_operation(role_world, op, role, state):
    want = expected_status(op, role, state)
    rid, fid = role_world.requests[state]
    actor = ROLES[role]
    call = OPERATIONS[op]
    svc = role_world.service
    # every case starts from the saved world, whatever ran before it (or if it runs alone)
    assert _snapshot(svc.engine) == role_world.baseline, "the previous case left changes"
    if want != 200:
        with pytest.raises(PermissionDenied) as info:
            call(svc, actor, rid, fid)
        assert info.value.status == want, info.value.reason
        assert info.value.reason
        assert _snapshot(svc.engine) == role_world.baseline  # nothing changed, nothing audited
        return
    if op in NEUTRAL:  # views and comments: audited or stored, then the world is put back
        head_before = _head_seq(svc.engine)
        try:
            call(svc, actor, rid, fid)
            if op in SERVES_BYTES:  # every byte served is an audit event with the actor
                (last,) = audit_events(svc.engine)[-1:]
                assert _head_seq(svc.engine) == head_before + 1
                assert last["actor"] == actor.username and last["request_id"] == rid
        finally:
            role_world.restore()
        return
    head_before = _head_seq(svc.engine)
    try:
        call(svc, actor, rid, fid)
        assert _head_seq(svc.engine) == head_before + 1  # exactly one event
        report = svc.verify_audit()
        assert report.ok, report.problem
    finally:
        role_world.restore()
    assert _head_seq(svc.engine) == role_world.rows["audit_log"][0]["head_seq"]


# --------------------------------------------------------------------------------------------
# Issue #13: every write accepts an Idempotency-Key; a retry returns the first answer


def test_idempotency_keys_keep_the_first_answer_per_actor(service, clock):
    from egress.operations.facade import IdempotencyInProgress, IdempotencyKeyReused, StoredAnswer

    assert service.idempotency_begin(alice, "key-0001", "fp-a") is None  # reserved
    with pytest.raises(IdempotencyInProgress) as running:
        service.idempotency_begin(alice, "key-0001", "fp-a")
    assert running.value.status == 409 and "still being processed" in running.value.reason
    service.idempotency_finish(alice, "key-0001", StoredAnswer(201, "application/json", "", "{}"))
    assert service.idempotency_begin(alice, "key-0001", "fp-a") == StoredAnswer(
        201, "application/json", "", "{}"
    )
    with pytest.raises(IdempotencyKeyReused) as reused:
        service.idempotency_begin(alice, "key-0001", "fp-b")
    assert reused.value.status == 422 and "different request" in reused.value.reason
    assert service.idempotency_begin(carol, "key-0001", "fp-b") is None  # keys are per actor
    refused(400, lambda: service.idempotency_begin(alice, "short", "fp"), match="8 to 128")
    refused(400, lambda: service.idempotency_begin(alice, "bad key!", "fp"), match="8 to 128")
    # an unexpected failure frees the key; an answer is kept 24 hours
    assert service.idempotency_begin(alice, "key-0002", "fp") is None
    service.idempotency_abandon(alice, "key-0002")
    assert service.idempotency_begin(alice, "key-0002", "fp") is None
    clock.advance(hours=23)
    assert service.idempotency_begin(alice, "key-0001", "fp-a") is not None
    clock.advance(hours=2)
    assert service.idempotency_begin(alice, "key-0001", "fp-a") is None  # expired: a new write


@pytest.fixture
def web_service(service, monkeypatch):
    """The real tornado app on loopback, signed in as the ``X-Test-User`` header's user (the
    hub's login and XSRF check are the live tests' part); yields its base URL."""
    import asyncio

    from tornado.httpserver import HTTPServer

    from egress.web import app as web
    from egress.web.base import BaseHandler

    users = {a.username: a for a in ACTORS.values()}

    def current_user(handler):
        name = handler.request.headers.get("X-Test-User", "")
        actor = users.get(name)
        if actor is None:
            return None
        groups = [f"project-{p}" for p in actor.projects]
        return {"name": name, "groups": groups + (["output-checkers"] if actor.is_checker else [])}

    monkeypatch.setattr(BaseHandler, "get_current_user", current_user)
    monkeypatch.setattr(BaseHandler, "check_xsrf_cookie", lambda handler: None)
    started, box = threading.Event(), {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.make_app(service, "/services/egress/", b"s" * 32)
        server = HTTPServer(app)
        sockets = __import__("tornado.netutil", fromlist=["x"]).bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        box.update(loop=loop, port=sockets[0].getsockname()[1], server=server)
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"http://127.0.0.1:{box['port']}/services/egress/"
    box["loop"].call_soon_threadsafe(box["server"].stop)
    box["loop"].call_soon_threadsafe(box["loop"].stop)
    thread.join(10)


def _requests_of(service, actor) -> list[str]:
    return sorted(r["id"] for r in service.list_requests(actor))


def test_a_retried_api_create_returns_the_first_answer_and_creates_nothing(web_service, service):
    import requests

    def post(key, title="Retried", user="alice"):
        headers = {"X-Test-User": user, "Idempotency-Key": key}
        body = {"project": "cardio", "title": title}
        return requests.post(web_service + "api/requests", json=body, headers=headers, timeout=30)

    first = post("create-0001")
    assert first.status_code == 201, first.text
    before = _requests_of(service, alice)
    again = post("create-0001")  # the response was lost: the client sends it again
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _requests_of(service, alice) == before  # no second draft
    other = post("create-0001", title="Another title")
    assert other.status_code == 422 and "different request" in other.json()["message"]
    assert _requests_of(service, alice) == before
    # positive control: a new key is a new request; no key, as before, always runs
    assert post("create-0002").json()["id"] not in before
    plain = requests.post(
        web_service + "api/requests",
        json={"project": "cardio", "title": "no key"},
        headers={"X-Test-User": "alice"},
        timeout=30,
    )
    assert plain.status_code == 201 and len(_requests_of(service, alice)) == len(before) + 2
    # a refusal is an answer too: its retry is the same refusal, and nothing runs twice
    refusal = post("create-0003", user="bob")
    assert refusal.status_code == 403
    assert post("create-0003", user="bob").json() == refusal.json()


def test_api_writes_answer_with_what_changed_and_the_whole_request_on_request(web_service, service):
    # issue #21: a write answers with the request's id and state and the part it changed,
    # without reading the whole request again; GET (or Prefer: return=representation) has it
    import requests
    from sqlalchemy import event

    statements: list[str] = []
    event.listen(service.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    alice_h = {"X-Test-User": "alice"}
    full = {**alice_h, "Prefer": "return=representation"}
    base = web_service + "api/requests"
    rid = requests.post(base, json={"project": "cardio", "title": "W"}, headers=alice_h).json()[
        "id"
    ]

    def write(method: str, path: str, headers: dict, **kw) -> tuple[requests.Response, int]:
        statements.clear()
        answer = requests.request(method, f"{base}/{rid}{path}", headers=headers, timeout=30, **kw)
        return answer, len(statements)

    added, lean_count = write("POST", "/files", alice_h, json={"path": "notes.txt"})
    assert added.status_code == 201, added.text
    body = added.json()
    assert set(body) == {"id", "state", "file"} and (body["id"], body["state"]) == (rid, "draft")
    assert body["file"]["path"] == "notes.txt" and body["file"]["replaced"] is False
    whole = requests.get(f"{base}/{rid}", headers=alice_h, timeout=30).json()
    assert whole["files"][0]["id"] == body["file"]["id"]
    # control: the same write asking for the whole request gets what GET gives, and costs
    # the service the extra read the lean answer saves
    again, full_count = write("POST", "/files", full, json={"path": "tables/smoking.csv"})
    assert again.status_code == 201 and {f["path"] for f in again.json()["files"]} == {
        "notes.txt",
        "tables/smoking.csv",
    }
    assert "comments" in again.json() and "allowed" in again.json()
    assert full_count > lean_count
    group, _ = write("PUT", "/groups/main", alice_h, json={"context": "c", "controls": "k"})
    assert group.json() == {
        "id": rid,
        "state": "draft",
        "group": {"name": "main", "context": "c", "controls": "k"},
    }
    table_id = again.json()["files"][1]["id"]
    removed, _ = write("DELETE", f"/files/{table_id}", alice_h)
    assert removed.json() == {"id": rid, "state": "draft", "removed_file_id": table_id}
    submitted, _ = write("POST", "/submit", alice_h)
    assert submitted.json()["state"] == "submitted" and submitted.json()["files"] == 1
    assert "comments" not in submitted.json()  # the summary, not the whole request


def test_a_resent_form_is_a_retry_of_that_form(web_service, service):
    import re

    import requests

    rid = service.create_request(alice, "cardio", "Form")["id"]
    page = requests.get(
        web_service + f"requests/{rid}", headers={"X-Test-User": "alice"}, timeout=30
    )
    keys = re.findall(r'name="_idempotency_key" value="([^"]+)"', page.text)
    assert len(keys) >= 2 and len(set(keys)) == len(keys)  # one fresh key per form
    form = {"action": "comment", "body": "Please look at table 2", "_idempotency_key": keys[0]}
    for _ in range(3):  # the same form sent three times (a double click, then a reload)
        sent = requests.post(
            web_service + f"requests/{rid}/do",
            data=form,
            headers={"X-Test-User": "alice"},
            allow_redirects=False,
            timeout=30,
        )
        assert sent.status_code == 302 and sent.headers["Location"].endswith(f"/requests/{rid}")
    assert [c["body"] for c in service.get_request(alice, rid)["comments"]] == [form["body"]]


# --------------------------------------------------------------------------------------------
# Issue #13: every release's checkpoint reaches the checkpoint file, even after a crash


def _release_with_a_crash_before_the_append(svc: EgressService, monkeypatch) -> str:
    """A release whose commit happens, then the process 'dies' before the append."""
    import egress.operations.release

    rid, files = new_request(svc, {"notes.txt": "notes"})
    for checker in (olivia, oscar):
        review(svc, rid, checker, {files["notes.txt"]["id"]: "approve"})
    svc.approve(olivia, rid)

    def crash(path, checkpoint):
        raise OSError("killed between the commit and the append")

    with monkeypatch.context() as patched:
        patched.setattr(egress.operations.release, "append_checkpoint", crash)
        svc.release(oscar, rid)
    assert svc.get_request(alice, rid)["state"] == "released"  # the release committed
    return rid


def test_a_checkpoint_lost_in_a_crash_is_appended_at_start_and_verify_is_ok(
    make_service, monkeypatch
):
    svc = make_service()
    _released_world(svc)  # one release whose checkpoint reached the file
    rid = _release_with_a_crash_before_the_append(svc, monkeypatch)
    path = svc.checkpoint_path
    assert len(svc.checkpoints()) == 1
    restarted = make_service()  # the service starts again (egress.service.main reconciles)
    (appended,) = restarted.reconcile_checkpoints()
    assert appended[0] == rid
    released = [e for e in audit_events(svc.engine) if e["event"] == "RELEASED"]
    assert [(c.seq, c.hash) for c in restarted.checkpoints()] == [
        (e["seq"], e["hash"]) for e in released
    ]
    assert restarted.reconcile_checkpoints() == []  # once only
    report = restarted.verify_audit()
    assert report.ok, report.problem
    assert path.read_text().count("\n") == 2


def test_verify_appends_a_lost_checkpoint_and_reports_one_it_cannot_write(
    make_service, monkeypatch, tmp_path, json_log
):
    svc = make_service()
    rid = _release_with_a_crash_before_the_append(svc, monkeypatch)
    assert svc.checkpoints() == []
    report = svc.verify_audit()  # reconciles first
    assert report.ok, report.problem
    # the SIEM's lines: the appended checkpoint, and no verify failure (the control)
    (appended,) = json_log.events("audit.checkpoint_appended")
    assert appended["request_id"] == rid and appended["event_id"] == svc.checkpoints()[0].seq
    assert json_log.events("audit.verify_failed") == []
    assert [c.seq for c in svc.checkpoints()] == [
        e["seq"] for e in audit_events(svc.engine) if e["event"] == "RELEASED"
    ]
    # a checkpoint file that can't be written: verify says which release has no checkpoint
    stuck = make_service(checkpoint_path=tmp_path / "no-such-dir" / "checkpoints.jsonl")
    report = stuck.verify_audit()
    assert not report.ok
    assert f"release of request {rid}" in report.problem and "no checkpoint" in report.problem
    (failed,) = json_log.events("audit.verify_failed")
    assert failed["problem"] == report.problem and failed["service"]
    # nothing is copied out of a log that fails verification
    with svc.engine.begin() as conn:
        conn.execute(
            update(AuditEventRow).values(
                line=func.replace(AuditEventRow.line, '"alice"', '"mallory"')
            )
        )
    fresh = make_service(checkpoint_path=tmp_path / "fresh.jsonl")
    json_log.clear()
    assert fresh.reconcile_checkpoints() == [] and not (tmp_path / "fresh.jsonl").exists()
    first_edited = min(e["seq"] for e in audit_events(svc.engine) if e["actor"] == "mallory")
    assert [line["event_id"] for line in json_log.events("audit.verify_failed")] == [first_edited]


def test_cli_verify_appends_a_lost_checkpoint(service, db_url, tmp_path, capsys, monkeypatch):
    state = tmp_path / "state"
    paths = ServicePaths(state)
    paths.egress_dir.mkdir(parents=True)
    rid = _release_with_a_crash_before_the_append(service, monkeypatch)
    shutil.copy(service.signing_key_path, paths.signing_key)
    shutil.copy(public_key_path(service.signing_key_path), public_key_path(paths.signing_key))
    assert cli.main(["--db", db_url, "--state", str(state), "verify"]) == 0
    captured = capsys.readouterr()
    assert f"appended the missing checkpoint of the release of {rid}" in captured.err
    assert captured.out.startswith("ok: ")
    assert len(read_checkpoints(paths.checkpoints)) == 1
