"""Crash safety of the egress core: SIGKILL at random moments never breaks the log or the data.

A worker process drives release requests through the whole workflow against a SQLite file
(adding freshly written files, voting, reviewing, returning, resubmitting with a changed file,
approving, releasing, downloading). The test kills it with SIGKILL at random moments (30 times,
each 0-200 ms after it is ready), then checks what it left:

* the audit log verifies, including the replay of every event against the tables and the
  checkpoints appended after each release;
* no request is released (or revoked) without a release record, and no record exists for a
  request that isn't; every record's signature verifies and lists the files' release hashes;
* no audit event is duplicated or lost: each request's state is the one its last state-changing
  event recorded, and each request has exactly one REQUEST_CREATED event;
* every blob in the content store verifies, and every file of every request has its snapshot
  and release bytes there;

and then that the service carries on from there (more releases) and still verifies.

``HAVRE_CRASH_SEED`` makes a run reproducible (the seed is printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from egress.audit.signing import generate_key, load_public_key, public_key_path, verify_record
from egress.operations.facade import EgressService
from egress.store.content import ContentStore
from egress.store.db import make_engine, migrate
from egress.store.models import AuditEventRow, Release, Request, RequestFile
from havre.enclave.config import parse_enclave_config
from tests.unit.egress.conftest import ACTORS, ENCLAVE, make_outputs

REPO = Path(__file__).resolve().parents[3]
KILLS = 30
MAX_DELAY = 0.2
FINAL_STATES = ("released", "rejected", "withdrawn", "revoked")
alice, olivia, oscar, adam = ACTORS["alice"], ACTORS["olivia"], ACTORS["oscar"], ACTORS["adam"]


def open_service(base: Path) -> EgressService:
    return EgressService(
        make_engine(f"sqlite:///{base / 'egress.db'}"),
        ContentStore(base / "content"),
        parse_enclave_config(ENCLAVE),
        outputs_root=lambda project: base / "outputs" / project,
        signing_key_path=base / "signing-key.pem",
        checkpoint_path=base / "checkpoints.jsonl",
    )


def _write_output(base: Path, relative: str) -> None:
    path = base / "outputs" / "cardio" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"{relative}: {os.urandom(8).hex()}\n".encode() * 50)


def step(svc: EgressService, base: Path) -> str:
    """Move the oldest unfinished request one operation forward (or start a new one).

    Stateless: everything is read back from the database, so a killed worker resumes where
    the last committed transaction left things.
    """
    # read as the author: administrators don't see drafts (issue #12)
    active = [r for r in svc.list_requests(alice) if r["state"] not in FINAL_STATES]
    if not active:
        number = len(svc.list_requests(alice)) + 1
        svc.create_request(alice, "cardio", f"crash {number}")
        return "create"
    summary = active[-1]
    rid, state, number = summary["id"], summary["state"], int(summary["title"].split()[-1])
    view = svc.get_request(alice, rid)
    files = view["files"]
    if state in ("draft", "returned"):
        if state == "returned" and not any(f["changed_in_round"] > view["round"] for f in files):
            _write_output(base, files[0]["path"])  # the researcher changes a file...
            svc.add_file(alice, rid, files[0]["path"], "results")  # ...and adds it again
            return "change"
        if len(files) < 2:
            relative = f"gen/{rid}-{len(files)}.txt"
            _write_output(base, relative)
            svc.add_file(alice, rid, relative, "results")
            return "add"
        if not all(g["context"] and g["controls"] for g in view["groups"]):
            svc.set_group_context(alice, rid, "results", "Counts", "All cells are 10 or more")
            return "context"
        svc.submit(alice, rid)
        return "submit"
    if state in ("submitted", "under_review"):
        for checker in (olivia, oscar):
            if checker.username in view["reviewers"]:
                continue
            mine = svc.get_request(checker, rid)["files"]
            for f in mine:
                if f["votes"].get(checker.username, "undecided") == "undecided":
                    svc.vote(checker, rid, f["id"], "approve")
                    return "vote"
            svc.submit_review(checker, rid)
            return "review"
    if state == "reviewed":
        if number % 3 == 0 and view["round"] == 1:
            svc.return_request(olivia, rid)
            return "return"
        svc.approve(olivia, rid)
        return "approve"
    if state == "approved":
        svc.release(oscar, rid)
        if number % 4 == 0:
            svc.revoke(adam, rid, "a test of revocation")
        else:
            svc.download_released(alice, rid, files[0]["id"])
        return "release"
    raise AssertionError(f"unexpected state {state}")


def worker(base: str) -> None:
    """The process the test kills: steps forever."""
    svc = open_service(Path(base))
    print("ready", flush=True)
    while True:
        step(svc, Path(base))


def _start_and_kill(base: Path, delay: float) -> None:
    code = "import sys; from tests.unit.egress.test_core_crash import worker; worker(sys.argv[1])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(base)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=60):
                raise AssertionError("the worker did not start within 60 s")
        line = proc.stdout.readline()
        if line != b"ready\n":
            proc.wait(10)
            raise AssertionError(f"the worker failed: {line!r} {proc.stderr.read().decode()}")
        time.sleep(delay)
        if proc.poll() is not None:
            raise AssertionError(f"the worker died by itself: {proc.stderr.read().decode()}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()


def check_invariants(svc: EgressService) -> dict[str, int]:
    report = svc.verify_audit()
    assert report.ok, report.problem
    public = load_public_key(public_key_path(svc.signing_key_path))
    with svc.engine.connect() as conn:
        requests = {r.id: r for r in conn.execute(select(Request))}
        releases = {r.request_id: r for r in conn.execute(select(Release))}
        files = list(conn.execute(select(RequestFile)))
        lines = [json.loads(line) for line in conn.execute(select(AuditEventRow.line)).scalars()]
        seqs = list(conn.execute(select(AuditEventRow.seq).order_by(AuditEventRow.seq)).scalars())
        assert seqs == list(range(1, len(seqs) + 1))
        assert conn.execute(select(func.count(func.distinct(AuditEventRow.line)))).scalar() == len(
            seqs
        )
    # Released (or revoked) if and only if there is a release record, and it verifies.
    for rid, request in requests.items():
        has_record = rid in releases
        assert has_record == (request.state in ("released", "revoked")), (rid, request.state)
        if has_record:
            signed = json.loads(releases[rid].record_json)
            assert verify_record(signed, public)
            listed = {(f["path"], f["sha256"]) for f in signed["record"]["files"]}
            assert listed == {(f.path, f.release_sha256) for f in files if f.request_id == rid}
    assert set(releases) <= set(requests)
    # Each request's state is the one its last state-changing event recorded.
    last_state: dict[str, str] = {}
    created: dict[str, int] = {}
    for event in lines:
        rid = event["request_id"]
        if rid is None:
            continue
        if "state" in event["details"]:
            last_state[rid] = event["details"]["state"]
        if event["event"] == "REQUEST_CREATED":
            created[rid] = created.get(rid, 0) + 1
    assert {rid: r.state for rid, r in requests.items()} == last_state
    assert created == dict.fromkeys(requests, 1)
    # The content store: every blob intact, every file's bytes there.
    assert svc.content.verify_all() == []
    for f in files:
        assert svc.content.get(f.sha256) and svc.content.get(f.release_sha256)
    return {
        "requests": len(requests),
        "released": len(releases),
        "events": len(seqs),
        "leftover_temp_files": len(svc.content.temporary_files()),
    }


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_everything_consistent(tmp_path):
    seed = int(os.environ.get("HAVRE_CRASH_SEED", random.randrange(2**32)))
    # pytest shows a failed test's output: whichever assertion fails, the seed is there
    print(f"to replay this run: HAVRE_CRASH_SEED={seed}")
    rng = random.Random(seed)
    base = tmp_path
    make_outputs(base / "outputs")
    engine = make_engine(f"sqlite:///{base / 'egress.db'}")
    migrate(engine)
    engine.dispose()
    generate_key(base / "signing-key.pem")

    for _ in range(KILLS):
        _start_and_kill(base, rng.uniform(0, MAX_DELAY))

    svc = open_service(base)
    after_kills = check_invariants(svc)
    assert after_kills["events"] > 1, f"seed {seed}: the worker never got anything done"

    # The service carries on from whatever the last kill left, to more releases.
    for _ in range(200):
        step(svc, base)
        if check_released(svc) >= after_kills["released"] + 2:
            break
    final = check_invariants(svc)
    assert final["released"] >= after_kills["released"] + 2, f"seed {seed}: {final}"
    assert svc.content.remove_temporary_files() == final["leftover_temp_files"]
    assert svc.verify_audit(svc.checkpoints()).ok
    svc.engine.dispose()


def check_released(svc: EgressService) -> int:
    with svc.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Release)).scalar()
