"""Unit tests for egress.audit: the hash-chained audit log, checkpoints, its file store, the CLI.

Most tests attack a log (edit, delete, reorder, forge, splice, truncate, cut a line) and check
that verification names the first bad event with a clear sentence. Each attack is run against
both verifiers: ``verify`` over events and the faster ``verify_file`` over a JSON-lines file.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from egress.audit.chain import (
    FIELDS,
    AuditChainError,
    AuditEvent,
    AuditFormatError,
    Checkpoint,
    EventType,
    IncompleteLineError,
    MalformedLineError,
    canonical_json,
    format_time,
    genesis_hash,
    next_event,
)
from egress.audit.cli import main
from egress.audit.file_log import (
    AuditFile,
    append_checkpoint,
    read_checkpoints,
    read_jsonl,
    repair_truncated_tail,
)
from egress.audit.verify import verify, verify_file, verify_lines
from tests.hypothesis_budget import examples

REPO = Path(__file__).resolve().parents[3]
LOG = "havre-test-log"
OTHER_LOG = "another-log"
T0 = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def write_log(events: list[AuditEvent], path: Path) -> None:
    """The events as a JSON-lines log, as the live log stores them."""
    path.write_bytes(b"".join(ev.to_line() for ev in events))


def chained(events: list[AuditEvent], log_id: str = LOG, **fields) -> AuditEvent:
    """Append the event after ``events[-1]`` (or the first) to ``events`` and return it."""
    events.append(next_event(events[-1] if events else None, log_id, **fields))
    return events[-1]


def make_events(n: int, log_id: str = LOG) -> list[AuditEvent]:
    """A realistic, deterministic log of n events: LOG_OPENED, then requests' lives."""
    kinds = [e for e in EventType if e is not EventType.LOG_OPENED]
    events: list[AuditEvent] = []
    head = None
    for i in range(n):
        when = T0 + timedelta(seconds=i, microseconds=i)
        if i == 0:
            fields = {
                "actor": "havre",
                "event": EventType.LOG_OPENED,
                "details": {"log_id": log_id},
            }
        else:
            fields = {
                "actor": ["alice", "bob", "carol"][i % 3],
                "event": kinds[i % len(kinds)],
                "project": "hospital-stays",
                "request_id": f"req-{i // 10}",
                "object": f"outputs/table_{i}.csv",
                "file_hashes": {f"outputs/table_{i}.csv": SHA_A},
                "details": {"n": i, "note": "Länge des Aufenthalts", "cells": [1, 2, 3]},
            }
        head = next_event(head, log_id, time=when, **fields)
        events.append(head)
    return events


def rehash(original: AuditEvent, /, **changes: object) -> AuditEvent:
    """What a forger does: change fields and recompute the event's own hash."""
    edited = dataclasses.replace(original, **changes)
    return dataclasses.replace(edited, hash=edited.compute_hash())


def rehash_tail(events: list[AuditEvent], start: int, **changes: object) -> list[AuditEvent]:
    """Edit events[start] and recompute every hash after it: a consistent, forged chain."""
    out = list(events[:start])
    prev = out[-1].hash if out else genesis_hash(LOG)
    for i, ev in enumerate(events[start:]):
        edited = dataclasses.replace(ev, prev_hash=prev, **(changes if i == 0 else {}))
        edited = dataclasses.replace(edited, hash=edited.compute_hash())
        out.append(edited)
        prev = edited.hash
    return out


def head_of(events: list[AuditEvent], log_id: str = LOG) -> Checkpoint:
    return Checkpoint.of(events[-1], log_id)


def _verify_events(tmp: Path, events: list[AuditEvent], log_id: str = LOG, **kw):
    return verify(iter(events), log_id, **kw)


def _verify_file(tmp: Path, events: list[AuditEvent], log_id: str = LOG, **kw):
    path = tmp / "log.jsonl"
    write_log(events, path)
    return verify_file(path, log_id, **kw)


def _verify_file_full_parse(tmp: Path, events: list[AuditEvent], log_id: str = LOG, **kw):
    path = tmp / "log.jsonl"
    write_log(events, path)
    return verify_file(path, log_id, full_parse=True, **kw)


def _verify_read_jsonl(tmp: Path, events: list[AuditEvent], log_id: str = LOG, **kw):
    path = tmp / "log.jsonl"
    write_log(events, path)
    return verify(read_jsonl(path), log_id, **kw)


def _verify_lines(tmp: Path, events: list[AuditEvent], log_id: str = LOG, **kw):
    # As a database column would hold them: str, no newline.
    return verify_lines((ev.to_line()[:-1].decode() for ev in events), log_id, **kw)


VERIFIERS = [
    _verify_events,
    _verify_file,
    _verify_file_full_parse,
    _verify_read_jsonl,
    _verify_lines,
]


@pytest.fixture(params=VERIFIERS, ids=lambda f: f.__name__)
def check(request, tmp_path):
    """check(events, **kw) -> VerifyReport, by each of the verifiers."""
    return lambda events, log_id=LOG, **kw: request.param(tmp_path, events, log_id, **kw)


def assert_bad(report, first_bad_seq: int, *words: str) -> None:
    assert not report.ok
    assert report.first_bad_seq == first_bad_seq, report.problem
    assert report.problem and report.problem.endswith(".")
    for word in words:
        assert word in report.problem, report.problem


# --------------------------------------------------------------------------------------------
# Canonical form, genesis, building events


def test_genesis_hash_is_sha256_of_prefix_and_log_id():
    expected = hashlib.sha256(b"havre-audit-genesis:" + LOG.encode()).hexdigest()
    assert genesis_hash(LOG) == expected
    assert genesis_hash(LOG) != genesis_hash(OTHER_LOG)


def test_canonical_form_is_exactly_sorted_compact_utf8_json():
    ev = next_event(
        None,
        LOG,
        actor="zoë",
        event=EventType.FILE_ADDED,
        project="p",
        request_id="r",
        object="a.csv",
        file_hashes={"a.csv": SHA_A},
        details={"b": 1, "a": [True, None, 1.5]},
        time="2025-03-01T09:30:00.000001Z",
    )
    expected = (
        '{"actor":"zoë","details":{"a":[true,null,1.5],"b":1},"event":"FILE_ADDED",'
        f'"file_hashes":{{"a.csv":"{SHA_A}"}},"object":"a.csv",'
        f'"prev_hash":"{genesis_hash(LOG)}","project":"p","request_id":"r","seq":1,'
        '"time":"2025-03-01T09:30:00.000001Z"}'
    ).encode()
    assert ev.canonical() == expected
    assert ev.hash == hashlib.sha256(expected).hexdigest() == ev.compute_hash()
    # The stored line is the canonical JSON of all fields, hash included, and one line.
    line = ev.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == ev.to_dict()
    assert line[:-1] == canonical_json(ev.to_dict())
    assert list(json.loads(line)) == list(FIELDS)


def test_next_event_chains_seq_and_prev_hash():
    first = next_event(None, LOG, actor="havre", event="LOG_OPENED")
    second = next_event(first, LOG, actor="alice", event=EventType.REQUEST_CREATED)
    assert (first.seq, first.prev_hash) == (1, genesis_hash(LOG))
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.event == "REQUEST_CREATED"
    assert second.file_hashes == {} and second.details == {}
    assert second.project is None and second.request_id is None and second.object is None


def test_times_are_utc_microseconds_with_z():
    ev = next_event(None, LOG, actor="a", event=EventType.LOG_OPENED)
    assert datetime.strptime(ev.time, "%Y-%m-%dT%H:%M:%S.%fZ")
    paris = timezone(timedelta(hours=1))
    assert format_time(datetime(2025, 1, 1, 13, 0, tzinfo=paris)) == "2025-01-01T12:00:00.000000Z"
    with pytest.raises(AuditChainError, match="timezone-aware"):
        format_time(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"actor": ""}, "actor"),
        ({"event": "MADE_UP"}, "unknown event type"),
        ({"time": "2025-03-01 09:30:00"}, "time"),
        ({"time": "2025-03-01T09:30:00Z"}, "time"),
        ({"time": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"file_hashes": {"a.csv": "not-a-hash"}}, "sha256"),
        ({"file_hashes": {"a.csv": SHA_A.upper()}}, "sha256"),
        ({"file_hashes": {"": SHA_A}}, "paths"),
        ({"details": {"x": float("nan")}}, "NaN"),
        ({"details": {"x": float("inf")}}, "NaN"),
        ({"details": {1: "x"}}, "non-string key"),
        ({"details": {"x": {1, 2}}}, "not JSON"),
        ({"details": {"x": "\ud800"}}, "UTF-8"),
        ({"details": ["not", "a", "mapping"]}, "mapping"),
        ({"project": 3}, "project"),
        ({"object": b"bytes"}, "object"),
    ],
)
def test_next_event_rejects_bad_fields(fields, message):
    kwargs = {"actor": "alice", "event": EventType.VOTED, **fields}
    with pytest.raises(AuditChainError, match=message):
        next_event(None, LOG, **kwargs)


def test_next_event_rejects_a_bad_log_id():
    for bad in ("", "a\nb", None):
        with pytest.raises(AuditChainError, match="log_id"):
            next_event(None, bad, actor="a", event=EventType.LOG_OPENED)


def test_next_event_refuses_to_extend_a_tampered_head():
    head = make_events(3)[-1]
    with pytest.raises(AuditChainError, match="does not match its own hash"):
        next_event(dataclasses.replace(head, actor="mallory"), LOG, actor="a", event="VOTED")


def test_next_event_holds_a_copy_of_what_it_hashed():
    details = {"votes": ("approve", "approve"), "nested": {"k": "v"}}
    ev = next_event(None, LOG, actor="a", event=EventType.VOTED, details=details)
    details["nested"]["k"] = "changed later"
    assert ev.details == {"votes": ["approve", "approve"], "nested": {"k": "v"}}
    assert ev.compute_hash() == ev.hash


def test_event_types_are_stored_by_name():
    assert len(EventType) == 27  # with the three break-glass events
    for member in EventType:
        assert member.value == member.name


# --------------------------------------------------------------------------------------------
# An intact log


def test_an_intact_log_verifies(check):
    events = make_events(30)
    report = check(events, expected_head=head_of(events))
    assert report.ok, report.problem
    assert report.events_checked == 30
    assert report.first_bad_seq is None and report.problem is None
    assert report.head == head_of(events)


def test_an_intact_log_verifies_against_every_earlier_checkpoint(check):
    events = make_events(30)
    cps = [Checkpoint.of(ev, LOG) for ev in events[::7]]
    report = check(events, checkpoints=cps, expected_head=Checkpoint.genesis(LOG))
    assert report.ok, report.problem


def test_the_empty_log_verifies_with_the_genesis_as_head(check):
    report = check([])
    assert report.ok and report.events_checked == 0
    assert report.head == Checkpoint.genesis(LOG)


# --------------------------------------------------------------------------------------------
# Attacks and accidents


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "mallory"),
        ("time", "2025-03-01T09:30:05.000006Z"),
        ("details", {"n": 5, "note": "Länge des Aufenthalts", "cells": [1, 2, 4]}),
        ("event", "APPROVED"),
        ("object", "outputs/other.csv"),
        ("file_hashes", {"outputs/table_5.csv": SHA_B}),
        ("project", None),
        ("request_id", "req-9"),
    ],
)
def test_an_edited_field_is_detected_at_that_event(check, field, value):
    events = make_events(12)
    assert getattr(events[5], field) != value
    events[5] = dataclasses.replace(events[5], **{field: value})
    report = check(events)
    assert_bad(report, 6, "event 6 was altered", "no longer matches its hash")
    assert report.head == Checkpoint.of(events[4], LOG)


def test_an_edited_prev_hash_or_seq_is_an_alteration(check):
    events = make_events(8)
    tampered = list(events)
    tampered[3] = dataclasses.replace(events[3], prev_hash=SHA_B)
    assert_bad(check(tampered), 4, "altered")
    tampered = list(events)
    tampered[3] = dataclasses.replace(events[3], seq=40)
    assert_bad(check(tampered), 4, "altered")


def test_an_edited_hash_is_detected(check):
    events = make_events(8)
    events[7] = dataclasses.replace(events[7], hash=SHA_B)
    assert_bad(check(events), 8, "event 8 was altered")


def test_a_deleted_event_in_the_middle_is_detected(check):
    events = make_events(12)
    del events[6]  # seq 7
    report = check(events)
    assert_bad(report, 7, "event 7 is missing", "event 8 follows event 6", "deleted")
    assert report.head == Checkpoint.of(events[5], LOG)


def test_several_deleted_events_are_named(check):
    events = make_events(12)
    del events[3:6]  # seq 4, 5, 6
    assert_bad(check(events), 4, "events 4 to 6 are missing")


def test_a_deleted_first_event_is_detected(check):
    events = make_events(6)[1:]
    assert_bad(check(events), 1, "the log starts at event 2, not 1", "event 1 is missing")


def test_swapped_events_are_detected(check):
    events = make_events(10)
    events[3], events[4] = events[4], events[3]
    assert_bad(check(events), 4, "event 4 is missing", "reordered")


def test_an_event_moved_to_the_end_is_detected(check):
    events = make_events(10)
    events.append(events.pop(2))
    assert_bad(check(events), 3, "event 3 is missing")


def test_a_duplicated_event_is_detected(check):
    events = make_events(10)
    events.insert(5, events[4])  # seq 5 twice
    assert_bad(check(events), 5, "event 5 appears after event 5", "duplicated")


def test_an_inserted_forged_event_with_a_correct_own_hash_is_detected(check):
    events = make_events(10)
    # The forger builds a perfectly chained event 5 after the real event 4...
    forged = next_event(
        events[3], LOG, actor="mallory", event=EventType.APPROVED, time=events[4].time
    )
    assert forged.seq == 5 and forged.compute_hash() == forged.hash
    # ...and slips it in before the real event 5.
    events.insert(4, forged)
    report = check(events)
    assert_bad(report, 5, "event 5 appears after event 5", "inserted")
    assert report.head == Checkpoint.of(events[3], LOG)


def test_a_replaced_event_with_a_correct_own_hash_is_detected(check):
    events = make_events(10)
    events[4] = next_event(events[3], LOG, actor="mallory", event="APPROVED", time=events[4].time)
    assert_bad(check(events), 5, "event 6 does not chain to event 5", "forged")


def test_a_forged_hash_breaks_the_next_link(check):
    events = make_events(10)
    events[4] = rehash(events[4], actor="mallory")  # edited, and its own hash recomputed
    report = check(events)
    assert_bad(report, 5, "event 6 does not chain to event 5", "re-hashed")
    assert report.head == Checkpoint.of(events[3], LOG)


def test_a_forged_first_event_breaks_the_next_link(check):
    events = make_events(5)
    events[0] = rehash(events[0], actor="mallory")
    assert_bad(check(events), 1, "event 2 does not chain to event 1")


def test_a_rehashed_tail_is_invisible_without_a_checkpoint(check):
    """The documented limit of a hash chain, and why checkpoints exist.

    Whoever can write the log can edit an event and recompute every later hash: the result is a
    valid chain, and no check of the log alone can tell.
    """
    events = make_events(20)
    forged = rehash_tail(events, 7, actor="mallory")
    assert forged[7].actor == "mallory" and forged[-1].hash != events[-1].hash
    assert check(forged).ok


def test_a_deletion_hidden_by_rehashing_still_leaves_a_gap_in_seq(check):
    events = make_events(12)
    del events[5]  # seq 6 gone; the forger re-chains the rest but keeps their numbers
    forged = rehash_tail(events, 5)
    assert [ev.seq for ev in forged[4:7]] == [5, 7, 8]
    assert_bad(check(forged), 6, "event 6 is missing")
    # Renumbering as well makes a consistent chain: only a checkpoint tells.
    renumbered = rehash_tail([dataclasses.replace(ev, seq=n) for n, ev in enumerate(forged, 1)], 5)
    assert check(renumbered).ok
    assert not check(renumbered, expected_head=head_of(make_events(12))).ok


def test_a_rehashed_tail_is_caught_by_a_checkpoint(check):
    events = make_events(20)
    checkpoint = head_of(events)  # kept outside the log before the attack
    forged = rehash_tail(events, 7, actor="mallory")
    report = check(forged, expected_head=checkpoint)
    assert_bad(report, 1, "event 20 differs from the checkpoint", "rewritten", "1 to 20")
    assert report.head is None


def test_an_older_checkpoint_narrows_down_a_rewrite(check):
    events = make_events(20)
    older, newer = Checkpoint.of(events[4], LOG), head_of(events)
    forged = rehash_tail(events, 7, actor="mallory")
    report = check(forged, expected_head=newer, checkpoints=[older])
    assert_bad(report, 6, "event 20 differs", "events 6 to 20")
    assert report.head == older


def test_a_rewrite_after_the_checkpoint_is_not_the_checkpoints_business(check):
    events = make_events(20)
    checkpoint = Checkpoint.of(events[9], LOG)
    forged = rehash_tail(events, 12, actor="mallory")
    # Events after the checkpoint are only chained to it: catching this needs a later one.
    assert check(forged, expected_head=checkpoint).ok
    assert not check(forged, checkpoints=[checkpoint, head_of(events)]).ok


def test_a_truncated_tail_is_invisible_without_a_checkpoint(check):
    events = make_events(20)
    assert check(events[:15]).ok


def test_a_truncated_tail_is_caught_by_a_checkpoint(check):
    events = make_events(20)
    report = check(events[:15], expected_head=head_of(events))
    assert_bad(report, 16, "ends at event 15", "recorded event 20", "events 16 to 20", "truncated")
    assert report.head == head_of(events[:15])


def test_a_log_truncated_to_nothing_is_caught_by_a_checkpoint(check):
    events = make_events(5)
    assert_bad(check([], expected_head=head_of(events)), 1, "the log is empty", "truncated")


def test_truncation_followed_by_forged_appends_is_caught_by_a_checkpoint(check):
    events = make_events(20)
    forged = list(events[:15])
    for i in range(5):
        chained(forged, actor="mallory", event=EventType.FILE_VIEWED, details={"i": i})
    assert check(forged).ok  # a valid chain...
    report = check(forged, expected_head=head_of(events))  # ...but not the one checkpointed
    assert_bad(report, 1, "event 20 differs")


def test_another_logs_events_are_rejected_by_their_genesis(check):
    theirs = make_events(8, OTHER_LOG)
    report = check(theirs, LOG)
    assert_bad(report, 1, "event 1 does not start log", "another log")


def test_events_spliced_from_another_log_break_the_chain(check):
    ours, theirs = make_events(10), make_events(10, OTHER_LOG)
    # Same seq numbers, so only the hash chain tells them apart.
    assert_bad(check(ours[:6] + theirs[6:]), 6, "event 7 does not chain to event 6")
    assert_bad(check(theirs[:6] + ours[6:]), 1, "event 1 does not start log")


def test_a_checkpoint_of_another_log_is_refused(check):
    report = check(make_events(5), expected_head=head_of(make_events(5, OTHER_LOG), OTHER_LOG))
    assert not report.ok and report.first_bad_seq is None
    assert "checkpoint is for log 'another-log'" in report.problem


def test_contradictory_checkpoints_are_refused(check):
    events = make_events(5)
    cp = head_of(events)
    report = check(events, checkpoints=[cp, dataclasses.replace(cp, hash=SHA_B)])
    assert not report.ok and "disagree" in report.problem
    bad_genesis = Checkpoint(LOG, 0, SHA_B, "")
    assert "genesis" in check(events, checkpoints=[bad_genesis]).problem


def test_a_checkpoint_with_the_wrong_hash_for_an_intact_log_fails(check):
    events = make_events(10)
    cp = dataclasses.replace(Checkpoint.of(events[5], LOG), hash=SHA_B)
    assert_bad(check(events, checkpoints=[cp]), 1, "event 6 differs")


# --------------------------------------------------------------------------------------------
# The JSON-lines file


def write_lines(path: Path, events: list[AuditEvent], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(ev.to_line() for ev in events) + tail)


def test_verify_lines_takes_bytes_or_str_with_or_without_newlines():
    events = make_events(5)
    for lines in (
        [ev.to_line() for ev in events],
        [ev.to_line()[:-1] for ev in events],
        [ev.to_line().decode() for ev in events],
    ):
        report = verify_lines(lines, LOG, expected_head=head_of(events))
        assert report.ok and report.events_checked == 5


def test_jsonl_round_trip(tmp_path):
    events = make_events(25)
    path = tmp_path / "log.jsonl"
    write_log(events, path)
    assert list(read_jsonl(path)) == events
    with open(path, "rb") as f:
        assert list(read_jsonl(f)) == events
    assert path.read_bytes().count(b"\n") == 25


@pytest.mark.parametrize("cut", [1, 40, -2])
def test_an_incomplete_last_line_is_reported_distinctly(tmp_path, cut):
    events = make_events(10)
    path = tmp_path / "log.jsonl"
    write_lines(path, events[:9], events[9].to_line()[:cut])
    report = verify_file(path, LOG)
    assert_bad(report, 10, "incomplete last line", "interrupted while writing event 10")
    assert "the 9 events before it verify" in report.problem
    assert report.head == head_of(events[:9])
    # The generic verifier over read_jsonl says the same.
    again = verify(read_jsonl(path), LOG)
    assert (again.ok, again.first_bad_seq, again.problem) == (False, 10, report.problem)
    with pytest.raises(IncompleteLineError):
        list(read_jsonl(path))


def test_an_incomplete_line_covered_by_a_checkpoint_is_a_cut_not_a_crash(tmp_path):
    events = make_events(10)
    path = tmp_path / "log.jsonl"
    write_lines(path, events[:7], events[7].to_line()[:50])
    report = verify_file(path, LOG, expected_head=head_of(events))
    assert_bad(report, 8, "the last line is incomplete", "recorded event 10", "was cut")


def test_repair_drops_only_the_incomplete_line(tmp_path):
    events = make_events(10)
    path = tmp_path / "log.jsonl"
    partial = events[9].to_line()[:100]
    write_lines(path, events[:9], partial)
    result = repair_truncated_tail(path)
    assert (result.action, result.seq, result.dropped) == ("dropped", 10, partial)
    assert list(read_jsonl(path)) == events[:9]
    assert verify_file(path, LOG).ok
    assert repair_truncated_tail(path).action == "none"
    assert list(read_jsonl(path)) == events[:9]


def test_repair_keeps_a_whole_event_that_only_lacks_its_newline(tmp_path):
    events = make_events(10)
    path = tmp_path / "log.jsonl"
    write_lines(path, events[:9], events[9].to_line()[:-1])
    assert not verify_file(path, LOG).ok
    result = repair_truncated_tail(path)
    assert (result.action, result.seq) == ("completed", 10)
    assert list(read_jsonl(path)) == events
    assert verify_file(path, LOG, expected_head=head_of(events)).ok


def test_repair_drops_an_unterminated_line_that_does_not_chain(tmp_path):
    events = make_events(10)
    path = tmp_path / "log.jsonl"
    forged = rehash(events[9], actor="mallory", prev_hash=SHA_B)
    write_lines(path, events[:9], forged.to_line()[:-1])
    assert repair_truncated_tail(path).action == "dropped"
    assert list(read_jsonl(path)) == events[:9]


def test_repair_of_a_lone_partial_first_line(tmp_path):
    path = tmp_path / "log.jsonl"
    write_lines(path, [], make_events(1)[0].to_line()[:30])
    assert repair_truncated_tail(path).seq == 1
    assert path.read_bytes() == b""


def test_repair_never_drops_a_complete_event_wherever_the_cut(tmp_path):
    events = make_events(4)
    data = b"".join(ev.to_line() for ev in events)
    path = tmp_path / "log.jsonl"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        repair_truncated_tail(path)
        complete = data[:cut].count(b"\n")
        kept = list(read_jsonl(path))
        # Every event whose line was complete is kept; a whole last event is kept too.
        assert kept[:complete] == events[:complete]
        assert len(kept) in (complete, complete + 1)
        if len(kept) == complete + 1:  # only its newline was missing
            assert data[:cut] + b"\n" == b"".join(ev.to_line() for ev in events[: complete + 1])
        assert verify_file(path, LOG).ok


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b"this is not json\n", "not JSON"),
        (b"[1, 2, 3]\n", "exactly the event fields"),
        (b'{"seq": 3}\n', "exactly the event fields"),
        (b"\xff\xfe\n", "not JSON"),
    ],
)
def test_a_malformed_line_is_reported_with_its_line_number(tmp_path, bad_line, reason):
    events = make_events(6)
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(ev.to_line() for ev in events[:3]) + bad_line)
    report = verify_file(path, LOG)
    assert_bad(report, 4, "line 4 is not a valid audit event", reason)
    generic = verify(read_jsonl(path), LOG)
    assert_bad(generic, 4, "line 4 is not a valid audit event")
    with pytest.raises(MalformedLineError):
        list(read_jsonl(path))


def test_an_extra_field_is_malformed(tmp_path):
    events = make_events(3)
    data = events[2].to_dict() | {"approved_by_admin": True}
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(ev.to_line() for ev in events[:2]) + canonical_json(data) + b"\n")
    assert_bad(verify_file(path, LOG), 3, "line 3")


def test_a_reformatted_but_unchanged_line_still_verifies(tmp_path):
    """verify_file hashes stored bytes, with a fallback to the canonical form of the content."""
    events = make_events(6)
    path = tmp_path / "log.jsonl"
    pretty = json.dumps(events[3].to_dict(), indent=None, ensure_ascii=True) + "\n"
    lines = [ev.to_line() for ev in events]
    lines[3] = pretty.encode()
    path.write_bytes(b"".join(lines))
    assert verify_file(path, LOG).ok
    edited = pretty.replace('"actor": "alice"', '"actor": "mallory"').replace(
        '"actor": "bob"', '"actor": "mallory"'
    )
    edited = edited.replace('"actor": "carol"', '"actor": "mallory"')
    assert edited != pretty
    lines[3] = edited.encode()
    path.write_bytes(b"".join(lines))
    assert_bad(verify_file(path, LOG), 4, "altered")


def test_tricky_contents_that_look_like_the_hash_member(tmp_path, check):
    """File names and text containing '"hash":' must not confuse the fast verifier."""
    events: list[AuditEvent] = []
    chained(events, actor="havre", event=EventType.LOG_OPENED)
    chained(
        events,
        actor='x","hash":"' + "0" * 64,
        event=EventType.FILE_ADDED,
        object=',"hash":"' + "1" * 64 + '"',
        file_hashes={"a": SHA_A, "hash": SHA_B, "zzz": SHA_A},
        details={"hash": SHA_A, "text": ',"hash":"' + SHA_B + '"}', "\\": '\\"'},
    )
    chained(events, actor="bob", event=EventType.VOTED, details={"v": "é\u2028\x00"})
    assert check(events).ok
    tampered = list(events)
    tampered[1] = dataclasses.replace(events[1], file_hashes={"a": SHA_A, "hash": SHA_A})
    assert_bad(check(tampered), 2, "altered")


@pytest.mark.parametrize("full_parse", [False, True])
def test_any_single_byte_change_is_detected_even_without_a_checkpoint(tmp_path, full_parse):
    """Change any one byte of any line (a bit flip, a hand edit): it is never accepted."""
    events = make_events(3)
    lines = [ev.to_line() for ev in events]
    path = tmp_path / "log.jsonl"
    for n, target in enumerate(lines):
        for pos in range(len(target) - 1):  # every byte but the newline
            for replacement in (b"0", b"a", b" ", b'"', b"\\"):
                if target[pos : pos + 1] == replacement:
                    continue
                mutated = target[:pos] + replacement + target[pos + 1 :]
                path.write_bytes(b"".join(lines[:n]) + mutated + b"".join(lines[n + 1 :]))
                report = verify_file(path, LOG, full_parse=full_parse)
                assert not report.ok, (n, pos, replacement)
                assert report.first_bad_seq == n + 1, report.problem


def test_a_consistent_rewrite_into_garbage_needs_full_parse_to_be_seen(tmp_path):
    """The fast check hashes every byte but doesn't parse the members before the hash.

    So an attacker who appends (or rewrites, past the last checkpoint) a line whose body isn't
    valid JSON *and* gives it a correct hash gets past it, as any consistent rewrite does
    without a checkpoint; ``full_parse`` catches it, and a checkpoint would have caught it.
    """
    events = make_events(3)
    body = b'{"actor":"mallory","details":{"oops":},"event":"X","file_hashes":{}'
    tail = (
        f',"object":null,"prev_hash":"{events[-1].hash}","project":null,"request_id":null,'
        f'"seq":4,"time":"2025-03-01T09:31:00.000000Z"}}'
    ).encode()
    digest = hashlib.sha256(body + tail).hexdigest()
    garbage = body + f',"hash":"{digest}"'.encode() + tail + b"\n"
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(ev.to_line() for ev in events) + garbage)
    assert verify_file(path, LOG).ok
    assert_bad(verify_file(path, LOG, full_parse=True), 4, "line 4 is not a valid audit event")
    assert_bad(verify(read_jsonl(path), LOG), 4, "line 4")
    # Valid JSON, wrong shape, correct hash: the same.
    wrong = next_event(events[-1], LOG, actor="mallory", event="VOTED")
    fields = wrong.to_dict(include_hash=False) | {"details": ["not", "an", "object"]}
    line = canonical_json(fields | {"hash": hashlib.sha256(canonical_json(fields)).hexdigest()})
    line += b"\n"
    path.write_bytes(b"".join(ev.to_line() for ev in events) + line)
    assert verify_file(path, LOG).ok
    assert_bad(verify_file(path, LOG, full_parse=True), 4, "details must be an object")


# --------------------------------------------------------------------------------------------
# AuditFile: the simplest real store


def test_audit_file_create_append_read_verify(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditFile.create(path, LOG, actor="installer", details={"host": "tre-1"})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert AuditFile(path).log_id == LOG
    first = AuditFile(path).head()
    assert first.event == "LOG_OPENED" and first.details == {"host": "tre-1", "log_id": LOG}
    a = log.append(actor="alice", event=EventType.REQUEST_CREATED, project="p", request_id="r1")
    b = log.append(
        actor="alice",
        event=EventType.FILE_ADDED,
        project="p",
        request_id="r1",
        object="out.csv",
        file_hashes={"out.csv": SHA_A},
    )
    assert (a.seq, b.seq, b.prev_hash) == (2, 3, a.hash)
    assert list(log) == [first, a, b]
    assert log.head() == b
    assert log.checkpoint() == Checkpoint(LOG, 3, b.hash, b.time)
    report = log.verify(expected_head=log.checkpoint())
    assert report.ok and report.events_checked == 3
    # Reopened by another process: the log id comes from the first event.
    assert AuditFile(path).verify().ok


def test_audit_file_create_never_overwrites(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditFile.create(path, LOG)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        AuditFile.create(path, LOG)
    assert path.read_bytes() == before


def test_audit_file_appends_are_fsynced(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    log = AuditFile.create(path, LOG)
    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_size)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    log.append(actor="a", event=EventType.FILE_VIEWED)
    # fsync came after the line was written (the synced size is the final size).
    assert synced == [path.stat().st_size]


def test_audit_file_refuses_to_append_after_an_interrupted_write(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditFile.create(path, LOG)
    log.append(actor="a", event=EventType.FILE_VIEWED)
    with open(path, "ab") as f:
        f.write(b'{"actor":"b","deta')
    with pytest.raises(AuditFormatError, match="incomplete"):
        log.append(actor="a", event=EventType.FILE_VIEWED)
    with pytest.raises(AuditFormatError, match="incomplete"):
        log.head()
    assert repair_truncated_tail(path).action == "dropped"
    assert log.append(actor="a", event=EventType.FILE_VIEWED).seq == 3
    assert log.verify().ok


def test_audit_file_refuses_to_append_to_a_tampered_head(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditFile.create(path, LOG)
    log.append(actor="alice", event=EventType.FILE_VIEWED)
    path.write_bytes(path.read_bytes().replace(b'"actor":"alice"', b'"actor":"mallory"'))
    with pytest.raises(AuditChainError, match="altered"):
        log.append(actor="bob", event=EventType.FILE_VIEWED)


def test_audit_file_handles_very_long_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditFile.create(path, LOG)
    big = log.append(actor="a", event=EventType.CHECKS_RUN, details={"blob": "x" * 50_000})
    assert log.head() == big
    nxt = log.append(actor="a", event=EventType.CHECKS_RUN)
    assert nxt.prev_hash == big.hash and log.verify().ok


def _append_many(path: str, who: str, count: int) -> None:
    log = AuditFile(path)
    for i in range(count):
        log.append(actor=who, event=EventType.FILE_VIEWED, details={"i": i})


def test_concurrent_appends_from_several_processes_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditFile.create(path, LOG)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), f"p{n}", 15)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    report = verify_file(path)
    assert report.ok, report.problem
    assert report.events_checked == 1 + 4 * 15


def test_checkpoint_files_round_trip(tmp_path):
    events = make_events(10)
    cps_path = tmp_path / "elsewhere" / "checkpoints.jsonl"
    cps_path.parent.mkdir()
    for ev in events[::3]:
        append_checkpoint(cps_path, Checkpoint.of(ev, LOG))
    cps = read_checkpoints(cps_path)
    assert [c.seq for c in cps] == [1, 4, 7, 10]
    single = tmp_path / "head.json"
    single.write_text(json.dumps(head_of(events).to_dict(), indent=2))
    assert read_checkpoints(single) == [head_of(events)]
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"record": {"audit_head": head_of(events).to_dict()}}))
    assert read_checkpoints(record) == [head_of(events)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"log_id": "x", "seq": -1, "hash": "00"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_checkpoints(bad)


# --------------------------------------------------------------------------------------------
# Command line


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "egress.audit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def audit_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditFile.create(path, LOG)
    log.append(actor="alice", event=EventType.REQUEST_CREATED, project="p", request_id="r1")
    log.append(
        actor="alice",
        event=EventType.FILE_ADDED,
        project="p",
        request_id="r1",
        object='=HYPERLINK("http://evil")',
        file_hashes={'=HYPERLINK("http://evil")': SHA_A},
    )
    log.append(actor="bob", event=EventType.COMMENTED, details={"text": "ok, Zeilen <10"})
    return path


def test_cli_verify_ok_and_checkpoint(audit_file, tmp_path):
    result = run_cli("checkpoint", str(audit_file))
    assert result.returncode == 0
    cp = Checkpoint.from_dict(json.loads(result.stdout))
    assert cp == AuditFile(audit_file).checkpoint()
    cp_file = tmp_path / "cp.json"
    cp_file.write_text(result.stdout)
    result = run_cli("verify", str(audit_file), "--checkpoint", str(cp_file))
    assert result.returncode == 0, result.stderr
    assert "ok: 4 events verified" in result.stdout
    result = run_cli("verify", "--full", str(audit_file), "--log-id", LOG)
    assert result.returncode == 0 and "ok: 4 events verified" in result.stdout


def test_cli_verify_reports_tampering_and_exits_1(audit_file, tmp_path):
    cp_file = tmp_path / "cp.jsonl"
    append_checkpoint(cp_file, AuditFile(audit_file).checkpoint())
    audit_file.write_bytes(audit_file.read_bytes().replace(b'"bob"', b'"eve"'))
    result = run_cli("verify", str(audit_file))
    assert result.returncode == 1
    assert "FAILED (first bad event: 4): event 4 was altered" in result.stderr
    # Truncation: only visible with the checkpoint.
    lines = audit_file.read_bytes().splitlines(keepends=True)
    audit_file.write_bytes(b"".join(lines[:3]))
    assert run_cli("verify", str(audit_file)).returncode == 0
    result = run_cli("verify", str(audit_file), "--checkpoint", str(cp_file))
    assert result.returncode == 1 and "truncated" in result.stderr


def test_cli_verify_needs_a_log_id_when_the_first_event_is_gone(audit_file):
    lines = audit_file.read_bytes().splitlines(keepends=True)
    audit_file.write_bytes(b"".join(lines[1:]))
    result = run_cli("verify", str(audit_file))
    assert result.returncode == 1 and "--log-id" in result.stderr
    result = run_cli("verify", str(audit_file), "--log-id", LOG)
    assert result.returncode == 1 and "event 1 is missing" in result.stderr


def test_cli_export_jsonl_is_the_log(audit_file):
    result = run_cli("export", str(audit_file), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == audit_file.read_bytes()


def test_cli_export_csv_defuses_formulas(audit_file, tmp_path):
    out = tmp_path / "audit.csv"
    result = run_cli("export", str(audit_file), "--format", "csv", "--output", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[2]["object"] == '\'=HYPERLINK("http://evil")'
    assert json.loads(rows[3]["details"]) == {"text": "ok, Zeilen <10"}
    assert rows[0]["project"] == "" and rows[3]["hash"] == AuditFile(audit_file).head().hash


def test_cli_export_of_a_tampered_log_exits_1(audit_file):
    audit_file.write_bytes(audit_file.read_bytes().replace(b'"bob"', b'"eve"'))
    result = run_cli("export", str(audit_file), "--format", "csv")
    assert result.returncode == 1
    assert result.stdout.count("\n") == 5  # still exported, for the investigation
    assert "event 4 was altered" in result.stderr


def test_cli_repair(audit_file):
    with open(audit_file, "ab") as f:
        f.write(b'{"actor":"ali')
    result = run_cli("verify", str(audit_file))
    assert result.returncode == 1 and "incomplete last line" in result.stderr
    result = run_cli("repair", str(audit_file))
    assert result.returncode == 0 and "dropped an incomplete line of 13 bytes" in result.stdout
    assert run_cli("verify", str(audit_file)).returncode == 0
    assert "nothing to repair" in run_cli("repair", str(audit_file)).stdout


def test_cli_main_in_process(audit_file, capsys):
    assert main(["verify", str(audit_file)]) == 0
    assert "ok: 4 events" in capsys.readouterr().out
    assert main(["verify", str(audit_file) + ".missing"]) == 1
    assert "error" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Properties: for random logs and a random single mutation, verification fails

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
event_fields = st.fixed_dictionaries(
    {
        "actor": st.text(min_size=1, max_size=10),
        "event": st.sampled_from(list(EventType)),
        "project": st.none() | st.text(max_size=10),
        "request_id": st.none() | st.text(max_size=10),
        "object": st.none() | st.text(max_size=20),
        "file_hashes": st.dictionaries(
            st.text(min_size=1, max_size=12), st.sampled_from([SHA_A, SHA_B]), max_size=3
        ),
        "details": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    }
)


def build(fields_list: list[dict], log_id: str = LOG) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for i, fields in enumerate(fields_list):
        chained(events, log_id, time=T0 + timedelta(microseconds=i), **fields)
    return events


MUTATIONS = (
    "edit",  # change a field, keep the stale hash
    "forge",  # change a field, recompute that event's hash
    "delete",
    "swap",
    "duplicate",
    "insert_forged",
    "truncate",
    "rehash_tail",
)


def mutate(events: list[AuditEvent], kind: str, data) -> tuple[list[AuditEvent], int]:
    """Apply one mutation; returns the mutated log and the index it was applied at."""
    n = len(events)
    i = data.draw(st.integers(0, n - 1), label="index")
    out = list(events)
    if kind in ("edit", "forge", "rehash_tail"):
        name = data.draw(st.sampled_from(["actor", "time", "details", "object", "event"]))
        if name == "time":
            new = format_time(T0 + timedelta(days=1))
        elif name == "details":
            new = {**events[i].details, "tampered": True}
        elif name == "event":
            new = "REVOKED" if events[i].event != "REVOKED" else "RELEASED"
        else:
            new = (getattr(events[i], name) or "") + "x"
        assert new != getattr(events[i], name)
        if kind == "edit":
            out[i] = dataclasses.replace(events[i], **{name: new})
        elif kind == "forge":
            out[i] = rehash(events[i], **{name: new})
        else:
            out = rehash_tail(events, i, **{name: new})
    elif kind == "delete":
        del out[i]
    elif kind == "swap":
        assume(n >= 2)
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="other")
        out[i], out[j] = out[j], out[i]
    elif kind == "duplicate":
        out.insert(data.draw(st.integers(0, n), label="where"), events[i])
    elif kind == "insert_forged":
        # A perfectly chained event after events[i], placed before events[i+1].
        assume(i < n - 1)
        forged = next_event(events[i], LOG, actor="mallory", event=EventType.APPROVED)
        out.insert(i + 1, forged)
    elif kind == "truncate":
        out = out[:i]
    return out, i


def visible_without_checkpoint(kind: str, index: int, n: int) -> bool:
    """Whether a hash chain alone shows this mutation.

    Rewriting the end is invisible: cutting the tail, re-hashing every event from some point
    on, and forging or deleting the very last event (nothing follows it to disagree).
    """
    if kind in ("truncate", "rehash_tail"):
        return False
    return not (kind in ("forge", "delete") and index == n - 1)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields_list=st.lists(event_fields, min_size=1, max_size=8),
    kind=st.sampled_from(MUTATIONS),
    data=st.data(),
)
def test_any_single_mutation_fails_verification_against_the_head_checkpoint(
    fields_list, kind, data
):
    events = build(fields_list)
    checkpoint = head_of(events)
    mutated, index = mutate(events, kind, data)
    report = verify(mutated, LOG, expected_head=checkpoint)
    assert not report.ok, kind
    assert report.problem and report.first_bad_seq is not None
    # Every verifier agrees, word for word.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        write_log(mutated, path)
        others = [
            verify_file(path, LOG, expected_head=checkpoint),
            verify_file(path, LOG, expected_head=checkpoint, full_parse=True),
            verify(read_jsonl(path), LOG, expected_head=checkpoint),
        ]
    others.append(verify_lines([ev.to_line() for ev in mutated], LOG, expected_head=checkpoint))
    for other in others:
        assert other == report
    # Without the checkpoint, everything but a rewrite of the end is still caught.
    plain = verify(mutated, LOG)
    assert plain.ok is not visible_without_checkpoint(kind, index, len(events)), kind


@settings(max_examples=examples(200), deadline=None)
@given(fields_list=st.lists(event_fields, min_size=2, max_size=8), data=st.data())
def test_first_bad_seq_points_at_the_mutated_event(fields_list, data):
    events = build(fields_list)
    i = data.draw(st.integers(0, len(events) - 2))  # not the last: nothing would follow it
    edited = mutate_one_field(events[i])
    stale = events[:i] + [edited] + events[i + 1 :]
    assert verify(stale, LOG).first_bad_seq == i + 1
    forged = events[:i] + [rehash(edited)] + events[i + 1 :]
    assert verify(forged, LOG).first_bad_seq == i + 1
    deleted = events[:i] + events[i + 1 :]
    assert verify(deleted, LOG).first_bad_seq == i + 1


def mutate_one_field(event: AuditEvent) -> AuditEvent:
    return dataclasses.replace(event, actor=event.actor + "!")


@settings(max_examples=examples(200), deadline=None)
@given(fields_list=st.lists(event_fields, min_size=0, max_size=8))
def test_random_logs_round_trip_and_verify(fields_list):
    events = build(fields_list)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "log.jsonl"
        write_log(events, path)
        assert list(read_jsonl(path)) == events
        cp = head_of(events) if events else Checkpoint.genesis(LOG)
        report = verify_file(path, LOG, expected_head=cp)
    assert report.ok, report.problem
    assert report.head == cp and report.events_checked == len(events)


@given(value=json_values)
def test_canonical_json_is_stable_through_a_json_round_trip(value):
    try:
        once = canonical_json(value)
    except UnicodeEncodeError:
        assume(False)
    assert canonical_json(json.loads(once)) == once
