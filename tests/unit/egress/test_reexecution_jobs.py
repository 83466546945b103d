"""The re-execution job protocol (egress.reexecution.jobs), the runner's checks and recovery
(egress.reexecution.runner, up to the point where Docker starts), and the service's side
(egress.reexecution.service): asking, taking a result in, signing, auditing, comparing.

The run itself (Docker, papermill) is tested for real in tests/integration; here a finished
result is published with the same ``JobsFolder.finish`` the runner uses, from a
``ReexecutionResult`` made by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from sqlalchemy import select

from egress.audit.chain import EventType
from egress.audit.signing import verify_record
from egress.domain.policy import PermissionDenied
from egress.operations.facade import InvalidInput, NotFound
from egress.reexecution.jobs import (
    MAX_ATTEMPTS,
    Job,
    JobsFolder,
    ProtocolError,
    failure_report,
    new_job_id,
    output_sdc_metadata,
    result_report,
)
from egress.reexecution.model import ReexecutionResult, Refused, compare_outputs, forced_sdc_params
from egress.reexecution.runner import Runner
from egress.reexecution.service import IN_RUN_LABEL, RESEARCHER_LABEL, SERVICE_LABEL
from egress.store.models import AuditEventRow, Reexecution
from havre.sdc import SDCParams
from tests.unit.egress.conftest import ACTORS

alice, bob, olivia, oscar = ACTORS["alice"], ACTORS["bob"], ACTORS["olivia"], ACTORS["oscar"]
adam, carol = ACTORS["adam"], ACTORS["carol"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


NOTEBOOK = nbformat.writes(new_notebook(cells=[new_code_cell("print('hello')")])).encode()
TABLE = b"sex,smoker,non-smoker\nfemale,34,120\nmale,41,98\n"
RESULTS_JSON = json.dumps(
    {
        "version": "1.0.2",
        "results": {
            "output_0": {
                "uid": "output_0",
                "status": "pass",
                "type": "table",
                "files": [{"name": "smoking.csv", "sdc": {}, "sha256": sha(TABLE)}],
                "summary": "pass; ",
                "exception": "",
                "havre": {"reasons": []},
            },
            "output_1": {
                "uid": "output_1",
                "status": "fail",
                "type": "table",
                "files": [{"name": "means.csv", "sdc": {}}],
                "summary": "fail; threshold: 2 cells suppressed",
                "havre": {"reasons": ["2 cells below the threshold of 10"]},
            },
        },
    }
).encode()


def make_job(**changes) -> Job:
    fields = {
        "job_id": new_job_id(),
        "request_id": "req1",
        "project": "cardio",
        "notebook_path": "analysis.ipynb",
        "notebook_sha256": sha(NOTEBOOK),
        "parameters": {"year": 2024},
        "requested_by": "olivia",
        "requested_at": "2026-03-01T09:00:00.000000Z",
    }
    fields.update(changes)
    return Job(**fields)


def make_result(
    outputs: dict[str, bytes], status: str = "completed", reason: str = ""
) -> ReexecutionResult:
    now = datetime(2026, 3, 1, 9, 1, tzinfo=UTC)
    return ReexecutionResult(
        status=status,  # type: ignore[arg-type]
        executed_notebook=NOTEBOOK.replace(b"hello", b"hello!"),
        outputs=outputs,
        log="papermill ran\n",
        started_at=now,
        finished_at=now + timedelta(seconds=3),
        duration_s=3.0,
        exit_code=0 if status == "completed" else 1,
        image_id="sha256:" + "0" * 64,
        container_id="c" * 64,
        reason=reason,
        image="havre/notebook:0.1.0",
        notebook_sha256=sha(NOTEBOOK),
        parameters={"year": 2024},
        limits={"cpu": 1.0, "memory_bytes": 2**30, "pids": 256, "timeout_seconds": 600},
    )


@pytest.fixture
def jobs(tmp_path) -> JobsFolder:
    folder = JobsFolder(tmp_path / "reexec")
    folder.prepare()
    return folder


def publish(jobs: JobsFolder, job_id: str, outputs: dict[str, bytes], **kw) -> None:
    """What the runner does after a run: claim (already done), report, publish."""
    job, _notebook = jobs.load_claimed(job_id)
    result = make_result(outputs, **kw)
    jobs.finish(
        job_id,
        result_report(job, result, limits_source="test"),
        executed_notebook=result.executed_notebook,
        outputs=result.outputs,
    )


# --------------------------------------------------------------------------------------------
# The protocol


def test_a_job_goes_inbox_running_finished_and_is_always_found(jobs):
    job = make_job()
    assert jobs.location(job.job_id) is None
    jobs.submit(job, NOTEBOOK)
    assert jobs.location(job.job_id) == "queued"
    assert jobs.claim_next() == job.job_id
    assert jobs.claim_next() is None
    assert jobs.location(job.job_id) == "running"
    loaded, notebook = jobs.load_claimed(job.job_id)
    assert loaded == job and notebook == NOTEBOOK
    outputs = {"t/smoking.csv": TABLE, "t/results.json": RESULTS_JSON}
    publish(jobs, job.job_id, outputs)
    assert jobs.location(job.job_id) == "finished"
    assert os.listdir(jobs.running) == [] and os.listdir(jobs.inbox) == []
    assert jobs.finished() == [job.job_id]
    result = jobs.read_result(job.job_id)
    assert result.job == job and result.outputs == outputs and result.status == "completed"
    by_path = {o["path"]: o for o in result.report["outputs"]}
    assert by_path["t/smoking.csv"]["sha256"] == sha(TABLE)
    assert by_path["t/smoking.csv"]["sdc"]["status"] == "pass"
    jobs.discard_result(job.job_id)
    assert jobs.location(job.job_id) is None


def test_files_are_group_shared_and_never_half_written(jobs):
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    for folder in (jobs.root, jobs.inbox, jobs.running, jobs.results, jobs.work):
        assert oct(os.stat(folder).st_mode & 0o7777) == "0o2770"
    assert not [n for n in os.listdir(jobs.inbox) if n.startswith(".tmp-")]
    jobs.claim_next()
    publish(jobs, job.job_id, {"a.csv": TABLE})
    assert oct(os.stat(jobs.results / job.job_id).st_mode & 0o7777) == "0o2770"
    # a result folder the runner was writing when it died is removed, never read
    (jobs.results / f".tmp-{new_job_id()}-dead").mkdir()
    (jobs.inbox / ".tmp-1234-x.job.json").write_text("{")
    assert jobs.remove_leftovers() == 2
    assert jobs.finished() == [job.job_id]


def test_the_notebook_must_match_its_sha256(jobs):
    with pytest.raises(ProtocolError, match="don't match"):
        jobs.submit(make_job(), NOTEBOOK + b" ")
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    (jobs.inbox / f"{job.job_id}.ipynb").chmod(0o640)
    (jobs.inbox / f"{job.job_id}.ipynb").write_bytes(NOTEBOOK.replace(b"hello", b"evil!"))
    jobs.claim_next()
    with pytest.raises(ProtocolError, match="sha256"):
        jobs.load_claimed(job.job_id)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"image": "attacker/image"}, "unknown job fields"),
        ({"data_path": "/etc"}, "unknown job fields"),
        ({"timeout_seconds": 10**9}, "unknown job fields"),
        ({"project": "../../etc"}, "bad project"),
        ({"notebook_path": "../x.ipynb"}, "not a plain relative path"),
        ({"notebook_sha256": "ABC"}, "64 lower-case hex"),
        ({"parameters": ["x"]}, "must be an object"),
        ({"schema": "other/1"}, "schema"),
    ],
)
def test_a_job_carries_nothing_security_relevant(jobs, change, match):
    data = {**make_job().as_json(), **change}
    with pytest.raises(ProtocolError, match=match):
        Job.from_json(data)


def test_a_tampered_result_is_refused(jobs):
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    jobs.claim_next()
    publish(jobs, job.job_id, {"a.csv": TABLE})
    blob = jobs.results / job.job_id / "blobs" / sha(TABLE)
    blob.write_bytes(TABLE.replace(b"34", b"35"))
    with pytest.raises(ProtocolError, match="don't match its sha256"):
        jobs.read_result(job.job_id)
    blob.unlink()
    with pytest.raises(ProtocolError, match="missing"):
        jobs.read_result(job.job_id)
    report_path = jobs.results / job.job_id / "result.json"
    report = json.loads(report_path.read_text())
    report["outputs"] = [{"path": "../../etc/passwd", "sha256": sha(TABLE)}]
    report_path.write_text(json.dumps(report))
    with pytest.raises(ProtocolError, match="relative path"):
        jobs.read_result(job.job_id)
    os.symlink("/etc/passwd", jobs.results / job.job_id / "link")
    report_path.unlink()
    os.symlink(jobs.results / job.job_id / "link", report_path)
    with pytest.raises(ProtocolError, match="can't be read"):
        jobs.read_result(job.job_id)


def test_publishing_twice_keeps_the_first_result(jobs):
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    jobs.claim_next()
    publish(jobs, job.job_id, {"a.csv": TABLE})
    # a runner that died after publishing but before cleaning up runs the job again
    jobs.running.joinpath(f"{job.job_id}.job.json").write_text(json.dumps(job.as_json()))
    jobs.finish(job.job_id, failure_report(job, "failed", "second"))
    assert jobs.read_result(job.job_id).status == "completed"
    assert jobs.claimed() == []


def test_sdc_metadata_from_results_json_files():
    files = {"s1/results.json": RESULTS_JSON, "s1/smoking.csv": TABLE, "bad/results.json": b"{"}
    found, problems = output_sdc_metadata(files)
    assert set(found) == {"s1/smoking.csv", "s1/means.csv"}
    assert found["s1/means.csv"]["status"] == "fail"
    assert found["s1/means.csv"]["reasons"] == ["2 cells below the threshold of 10"]
    assert found["s1/means.csv"]["results_json"] == "s1/results.json"
    assert problems == ["bad/results.json: not an ACRO-style results file (JSONDecodeError)"]
    evil = json.dumps({"results": {"o": {"files": [{"name": "../x"}]}}}).encode()
    found, problems = output_sdc_metadata({"results.json": evil})
    assert found == {} and "bad file" in problems[0]


# --------------------------------------------------------------------------------------------
# The runner, up to Docker


def runner(enclave, jobs) -> Runner:
    return Runner(enclave, jobs, client=None, time_limit=30)


def test_runner_refuses_a_job_for_a_project_not_in_the_config(enclave, jobs):
    job = make_job(project="nosuchproject")
    jobs.submit(job, NOTEBOOK)
    assert runner(enclave, jobs).run_pending() == 1
    result = jobs.read_result(job.job_id)
    assert result.status == "refused" and "no project 'nosuchproject'" in result.report["reason"]


def test_runner_refuses_a_notebook_that_does_not_match(enclave, jobs):
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    (jobs.inbox / f"{job.job_id}.ipynb").chmod(0o640)
    (jobs.inbox / f"{job.job_id}.ipynb").write_bytes(b"{}")
    runner(enclave, jobs).run_pending()
    assert jobs.read_result(job.job_id).status == "refused"


def test_a_job_that_keeps_killing_the_runner_is_failed_not_run_again(enclave, jobs):
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    jobs.claim_next()
    for _ in range(MAX_ATTEMPTS):  # two runners started it and died
        jobs.start_attempt(job.job_id)
    r = runner(enclave, jobs)
    assert r.recover() == 1
    result = jobs.read_result(job.job_id)
    assert result.status == "failed"
    assert f"stopped {MAX_ATTEMPTS} times" in result.report["reason"]


def test_an_unreadable_job_is_dropped(enclave, jobs):
    job_id = new_job_id()
    (jobs.inbox / f"{job_id}.job.json").write_text("not json")
    assert runner(enclave, jobs).run_pending() == 1
    assert jobs.location(job_id) is None and jobs.finished() == []


def test_runner_time_limit_is_checked(enclave, jobs):
    with pytest.raises(ValueError):
        Runner(enclave, jobs, client=None, time_limit=0)


def test_runner_time_limit_comes_from_the_enclave_config_unless_given(enclave, jobs):
    assert Runner(enclave, jobs, client=None).time_limit == enclave.review.reexecution_seconds
    assert Runner(enclave, jobs, client=None, time_limit=45).time_limit == 45


# --------------------------------------------------------------------------------------------
# The service's side


@pytest.fixture
def svc(service, jobs, outputs):
    cardio = outputs / "cardio"
    (cardio / "analysis.ipynb").write_bytes(NOTEBOOK)
    (cardio / "s1").mkdir()
    (cardio / "s1" / "smoking.csv").write_bytes(TABLE)
    (cardio / "s1" / "results.json").write_bytes(RESULTS_JSON)
    service.reexecution_jobs = jobs
    return service


def new_request(svc, *, submit=True):
    rid = svc.create_request(alice, "cardio", "Smoking tables")["id"]
    ids = {}
    for path in ("analysis.ipynb", "s1/smoking.csv"):  # results.json stays in the folder
        ids[path] = svc.add_file(alice, rid, path, "main")["id"]
    svc.set_group_context(alice, rid, "main", "Smoking by sex", "Counts of 10 or more")
    if submit:
        svc.submit(alice, rid)
    return rid, ids


def events(engine, rid, kind):
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEventRow.line).where(
                AuditEventRow.request_id == rid, AuditEventRow.event == kind
            )
        ).all()
    return [json.loads(r.line) for r in rows]


def test_checker_asks_runner_answers_service_signs_and_compares(svc, jobs, engine):
    rid, ids = new_request(svc)
    entry = svc.request_reexecution(olivia, rid, ids["analysis.ipynb"], {"year": 2024})
    assert entry["status"] == "queued" and entry["notebook_sha256"] == sha(NOTEBOOK)
    assert jobs.location(entry["id"]) == "queued"
    with pytest.raises(PermissionDenied, match="already waiting"):
        svc.request_reexecution(oscar, rid, ids["analysis.ipynb"])
    (requested,) = events(engine, rid, EventType.REEXECUTION_REQUESTED)
    assert requested["actor"] == "olivia" and requested["object"] == "analysis.ipynb"
    assert requested["file_hashes"] == {"analysis.ipynb": sha(NOTEBOOK)}

    # the runner: same table, a results.json, and one more file
    job_id = jobs.claim_next()
    assert job_id == entry["id"]
    trusted_results = RESULTS_JSON.replace(b"pass; ", b"pass (trusted); ")
    publish(
        jobs,
        job_id,
        {"s1/smoking.csv": TABLE, "s1/results.json": trusted_results, "s1/extra.txt": b"x"},
    )
    (listed,) = svc.list_reexecutions(olivia, rid)
    assert listed["status"] == "completed" and jobs.finished() == []
    assert svc.collect_reexecutions() == 0  # taken in once

    detail = svc.reexecution(olivia, rid, entry["id"])
    lines = {c["path"]: c for c in detail["comparison"]}
    assert lines["s1/smoking.csv"]["status"] == "identical"
    assert lines["s1/results.json"]["status"] == "only-trusted"
    assert lines["s1/extra.txt"]["status"] == "only-trusted"
    assert "analysis.ipynb" not in lines  # the notebook that was re-run is not an output
    assert lines["s1/smoking.csv"]["run_sdc"]["summary"] == "pass (trusted); "
    assert lines["s1/smoking.csv"]["researcher_sdc"]["summary"] == "pass; "
    assert lines["s1/smoking.csv"]["researcher_sdc"]["label"] == RESEARCHER_LABEL
    assert detail["researcher_metadata_problems"] == []
    by_path = {o["path"]: o for o in detail["outputs"]}
    assert by_path["s1/smoking.csv"]["sdc_label"] == IN_RUN_LABEL
    assert by_path["s1/extra.txt"]["sdc_label"] is None
    assert detail["executed_notebook_bytes"] == NOTEBOOK.replace(b"hello", b"hello!")
    assert detail["log"] == "papermill ran\n"

    # the record is signed by the service and names every output by sha256
    record = detail["record"]
    assert verify_record(record, svc.public_key())
    assert record["record"]["request"]["request_id"] == rid
    assert record["record"]["request"]["requested_by"] == "olivia"
    assert {o["path"]: o["sha256"] for o in record["record"]["outputs"]} == {
        "s1/smoking.csv": sha(TABLE),
        "s1/results.json": sha(trusted_results),
        "s1/extra.txt": sha(b"x"),
    }
    assert record["record"]["network"] == "none"
    # the outputs are in the content store
    assert svc.content.get(sha(trusted_results)) == trusted_results

    (done,) = events(engine, rid, EventType.RE_EXECUTED)
    assert done["actor"] == "havre-reexec-runner"
    assert done["details"]["status"] == "completed"
    assert done["details"]["outputs"]["s1/smoking.csv"] == sha(TABLE)
    assert svc.verify_audit().ok
    # the same comparison as the library's, from the stored blobs
    assert [c.status for c in compare_outputs({"s1/smoking.csv": sha(TABLE)}, {})] == [
        "only-submitted"
    ]


def test_who_may_ask(svc):
    rid, ids = new_request(svc, submit=False)
    nb = ids["analysis.ipynb"]
    svc.request_reexecution(alice, rid, nb)  # the author, before submitting
    with pytest.raises(PermissionDenied) as refused:
        svc.request_reexecution(olivia, rid, nb)
    assert refused.value.status == 403  # checkers: no draft is shown to them (issue #12)
    assert "has not been submitted" in refused.value.reason
    for actor in (bob, adam, carol):
        with pytest.raises(PermissionDenied) as refused:
            svc.request_reexecution(actor, rid, nb)
        assert refused.value.status == 403
    with pytest.raises(InvalidInput, match="not a notebook"):
        svc.request_reexecution(alice, rid, ids["s1/smoking.csv"])
    for bad in ({"__import__": 1}, {"x": float("nan")}, ["x"], {"class": 1}):
        with pytest.raises(InvalidInput):
            svc.request_reexecution(alice, rid, nb, bad)
    # a re-execution's outputs are bytes made from the data: never shown to the author (#12)
    with pytest.raises(PermissionDenied, match="never gives authors"):
        svc.reexecution(alice, rid, "f" * 32)
    svc.submit(alice, rid)
    with pytest.raises(NotFound):
        svc.reexecution(olivia, rid, "f" * 32)


def test_failed_and_timeout_results_are_recorded_with_their_reason(svc, jobs, engine):
    rid, ids = new_request(svc)
    entry = svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    jobs.claim_next()
    publish(jobs, entry["id"], {}, status="timeout", reason="still running after 30 s; killed")
    (listed,) = svc.list_reexecutions(olivia, rid)
    assert listed["status"] == "timeout" and "30 s" in listed["reason"]
    detail = svc.reexecution(olivia, rid, entry["id"])
    assert {c["status"] for c in detail["comparison"]} == {"only-submitted"}
    (done,) = events(engine, rid, EventType.RE_EXECUTED)
    assert done["details"]["status"] == "timeout"


def test_an_unusable_result_fails_the_run_and_stores_nothing(svc, jobs):
    rid, ids = new_request(svc)
    entry = svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    jobs.claim_next()
    publish(jobs, entry["id"], {"evil.csv": b"a,b\n1,2\n"})
    (jobs.results / entry["id"] / "blobs" / sha(b"a,b\n1,2\n")).write_bytes(b"other")
    (listed,) = svc.list_reexecutions(olivia, rid)
    assert listed["status"] == "failed" and "can't be used" in listed["reason"]
    assert not svc.content.exists(sha(b"other")) and jobs.finished() == []
    assert svc.verify_audit().ok


def test_a_lost_job_is_closed_as_failed(svc, jobs, clock, engine):
    rid, ids = new_request(svc)
    entry = svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    for suffix in (".job.json", ".ipynb"):  # as if the service died before writing the job
        (jobs.inbox / f"{entry['id']}{suffix}").unlink()
    assert svc.collect_reexecutions() == 0  # too recent to be called lost
    clock.advance(minutes=3)
    assert svc.collect_reexecutions() == 1
    (listed,) = svc.list_reexecutions(olivia, rid)
    assert listed["status"] == "failed" and "lost" in listed["reason"]
    with engine.connect() as conn:
        row = conn.execute(select(Reexecution.status)).one()
    assert row.status == "failed"


def test_a_result_for_no_known_job_is_discarded(svc, jobs):
    job = make_job()
    jobs.submit(job, NOTEBOOK)
    jobs.claim_next()
    publish(jobs, job.job_id, {"a.csv": TABLE})
    assert svc.collect_reexecutions() == 1
    assert jobs.finished() == [] and not svc.content.exists(sha(TABLE))


def test_a_jobs_folder_that_cannot_be_written_fails_the_run_with_a_reason(svc, tmp_path):
    from egress.operations.facade import EgressError

    rid, ids = new_request(svc)
    svc.reexecution_jobs = JobsFolder(tmp_path / "missing")  # never prepared
    with pytest.raises(EgressError) as refused:
        svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    assert refused.value.status == 503 and "administrator" in refused.value.reason
    (listed,) = svc.list_reexecutions(olivia, rid)
    assert listed["status"] == "failed" and "could not queue" in listed["reason"]
    assert svc.verify_audit().ok


# --------------------------------------------------------------------------------------------
# SDC verdicts of a trusted run: forced parameters, the service's own recomputation, the
# verdict shown (the worst), and what the checker is told re-execution proves


PROJECT = SDCParams()  # the service's parameters in these tests (threshold 10)
#: Region b has 2 and 1 records: fails a threshold of 10, passes a relaxed threshold of 1.
SMALL = b"region,F,M\na,16,16\nb,2,1\n"
BIG = b"region,F,M\na,16,16\nb,20,11\n"
MEANS = b"region,F,M\na,31.5,36.0\nb,26.0,13.0\n"


def results_doc(files: dict[str, tuple[bytes, str, str, dict | None]]) -> bytes:
    """A results.json as the safe library writes one: name -> (bytes, status, statistic,
    params); ``params`` None leaves them out (as ACRO's own results.json does)."""
    results = {}
    for i, (name, (data, status, statistic, params)) in enumerate(sorted(files.items())):
        havre = {"statistic": statistic, "reasons": [f"{status} by the library"]}
        if params is not None:
            havre["params"] = params
        results[f"output_{i}"] = {
            "uid": f"output_{i}",
            "status": status,
            "type": "table",
            "properties": {"statistic": statistic},
            "files": [{"name": name, "sdc": {}, "sha256": sha(data)}],
            "summary": f"{status}: as the library says",
            "exception": "",
            "havre": havre,
        }
    return json.dumps({"version": "0.1.0", "results": results}).encode()


def relaxed(**changes) -> dict:
    return {**PROJECT.as_dict(), **changes}


def reexecute(svc, jobs, researcher: dict[str, bytes], run: dict[str, bytes], **result_kw):
    """The researcher's folder s2/ (files + her results.json), a submitted request of the
    notebook and her files, a re-execution whose run wrote ``run``; the checker's detail."""
    cardio = svc.outputs_root("cardio")
    (cardio / "s2").mkdir(exist_ok=True)
    for name, data in researcher.items():
        (cardio / "s2" / name).write_bytes(data)
    rid = svc.create_request(alice, "cardio", "Tables")["id"]
    ids = {"analysis.ipynb": svc.add_file(alice, rid, "analysis.ipynb", "main")["id"]}
    for name in researcher:
        if name != "results.json":
            ids[name] = svc.add_file(alice, rid, f"s2/{name}", "main")["id"]
    svc.set_group_context(alice, rid, "main", "Tables", "Counts of 10 or more")
    svc.submit(alice, rid)
    entry = svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    job_id = jobs.claim_next()
    job, _notebook = jobs.load_claimed(job_id)
    result = make_result({f"s2/{n}": d for n, d in run.items()})
    result = replace(result, **{"sdc_params": PROJECT.as_dict(), **result_kw})
    jobs.finish(
        job_id,
        result_report(job, result, limits_source="test"),
        executed_notebook=result.executed_notebook,
        outputs=result.outputs,
    )
    return rid, job, svc.reexecution(olivia, rid, entry["id"])


def test_the_job_carries_the_service_sdc_params_and_the_runner_only_tightens_them(svc, jobs):
    svc.sdc_params = SDCParams(threshold=15)
    rid, ids = new_request(svc)
    svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    job, _ = jobs.load_claimed(jobs.claim_next())
    assert job.sdc_params == SDCParams(threshold=15).as_dict()
    assert Job.from_json(job.as_json()) == job
    # what the runner forces: the job's, never below ACRO's defaults
    assert forced_sdc_params(job.sdc_params).threshold == 15
    laxer = forced_sdc_params({"threshold": 1, "dominance_k": 0.99, "p_ratio": 0.2})
    assert (laxer.threshold, laxer.dominance_k, laxer.p_ratio) == (10, 0.9, 0.2)
    assert forced_sdc_params(None) == SDCParams()
    with pytest.raises(Refused, match=r"bad SDC parameters: .*threshold"):
        forced_sdc_params({"threshold": "ten"})
    with pytest.raises(ProtocolError, match="sdc_params must be an object"):
        make_job(sdc_params=[1])


def test_relaxed_researcher_record_and_the_trusted_fail_are_both_shown(svc, jobs):
    """The notebook said Session(params={"threshold": 1}); the trusted run forced 10."""
    mine = results_doc({"small.csv": (SMALL, "pass", "count", relaxed(threshold=1))})
    theirs = results_doc({"small.csv": (SMALL, "fail", "count", PROJECT.as_dict())})
    _rid, _job, detail = reexecute(
        svc,
        jobs,
        {"small.csv": SMALL, "results.json": mine},
        {"small.csv": SMALL, "results.json": theirs},
    )
    line = {c["path"]: c for c in detail["comparison"]}["s2/small.csv"]
    assert line["status"] == "identical"
    assert line["researcher_sdc"]["status"] == "pass"
    assert line["researcher_sdc"]["relaxed"] == ["threshold"]
    assert (
        "relaxed parameters: threshold 1 (project: 10)" in line["researcher_sdc"]["params_problem"]
    )
    assert line["run_sdc"]["status"] == "fail" and line["run_sdc"]["label"] == IN_RUN_LABEL
    assert line["run_sdc"]["relaxed"] == [] and line["run_problems"] == []
    assert line["service_sdc"]["status"] == "fail" and line["service_sdc"]["label"] == SERVICE_LABEL
    assert line["verdict"]["status"] == "fail"
    assert detail["sdc_params"]["threshold"] == 10 and detail["sdc_params_problem"] == ""
    # the signed record names the forced parameters and the service's own verdict
    record = detail["record"]["record"]
    assert verify_record(detail["record"], svc.public_key())
    assert record["sdc_params"]["threshold"] == 10
    assert record["service_sdc"]["s2/small.csv"]["status"] == "fail"


def test_a_notebook_that_disabled_a_rule_in_its_process_gets_no_pass(svc, jobs):
    """The run's results.json says pass under the project's parameters (the notebook
    monkeypatched the check): the service's own count check fails the table."""
    lying = results_doc({"small.csv": (SMALL, "pass", "count", PROJECT.as_dict())})
    _rid, _job, detail = reexecute(
        svc,
        jobs,
        {"small.csv": SMALL, "results.json": lying},
        {"small.csv": SMALL, "results.json": lying},
    )
    line = {c["path"]: c for c in detail["comparison"]}["s2/small.csv"]
    assert line["run_sdc"]["status"] == "pass"
    assert line["service_sdc"]["status"] == "fail"
    assert any("b" in reason for reason in line["service_sdc"]["reasons"])
    assert line["verdict"]["status"] == "fail"
    assert "the service (fail)" in line["verdict"]["summary"]


def test_a_relaxed_record_in_the_trusted_run_fails_even_where_nothing_is_recomputed(svc, jobs):
    """A table of means (the service can't recompute it) whose record, in the trusted run,
    says it was checked with threshold 1: the notebook got round the forced parameters."""
    reset = results_doc({"means.csv": (MEANS, "pass", "mean", relaxed(threshold=1))})
    _rid, _job, detail = reexecute(
        svc,
        jobs,
        {"means.csv": MEANS, "results.json": reset},
        {"means.csv": MEANS, "results.json": reset},
    )
    line = {c["path"]: c for c in detail["comparison"]}["s2/means.csv"]
    assert line["run_sdc"]["status"] == "pass" and line["run_sdc"]["relaxed"] == ["threshold"]
    assert line["run_problems"] == ["checked with relaxed parameters: threshold 1 (project: 10)"]
    assert line["service_sdc"]["status"] == "not-checked"
    assert "statistic as 'mean'" in line["service_sdc"]["summary"]
    assert line["verdict"]["status"] == "fail"


def test_the_service_never_passes_what_it_cannot_check_and_never_upgrades(svc, jobs):
    run = results_doc(
        {
            "means.csv": (MEANS, "pass", "mean", PROJECT.as_dict()),
            "big.csv": (BIG, "pass", "count", PROJECT.as_dict()),
            "acro.csv": (BIG, "pass", "count", None),  # no parameters recorded
            "other.csv": (SMALL, "pass", "count", PROJECT.as_dict()),  # about other bytes
        }
    )
    files = {"means.csv": MEANS, "big.csv": BIG, "acro.csv": BIG, "other.csv": BIG}
    _rid, _job, detail = reexecute(svc, jobs, files, {**files, "results.json": run})
    lines = {c["path"]: c for c in detail["comparison"]}
    # a mean: only the run's verdict, labelled as the run's; the service says why it didn't
    assert lines["s2/means.csv"]["service_sdc"]["status"] == "not-checked"
    assert lines["s2/means.csv"]["verdict"]["status"] == "pass"
    assert lines["s2/means.csv"]["verdict"]["from"] == ["the run's results.json: pass"]
    # a count table both pass
    assert lines["s2/big.csv"]["service_sdc"]["status"] == "pass"
    assert lines["s2/big.csv"]["verdict"]["status"] == "pass"
    # unknown parameters, a record about other bytes: review, not pass
    assert lines["s2/acro.csv"]["verdict"]["status"] == "review"
    assert "does not say which SDC parameters" in lines["s2/acro.csv"]["run_problems"][0]
    assert lines["s2/other.csv"]["verdict"]["status"] == "review"
    assert "another sha256" in lines["s2/other.csv"]["run_problems"][0]
    # results.json itself: no verdict at all
    assert lines["s2/results.json"]["verdict"]["status"] == "none"


def test_a_run_without_forced_parameters_is_not_trusted_for_its_verdicts(svc, jobs):
    """A result from before parameters were forced (or a runner that didn't): review."""
    run = results_doc({"big.csv": (BIG, "pass", "count", PROJECT.as_dict())})
    _rid, _job, detail = reexecute(
        svc, jobs, {"big.csv": BIG}, {"big.csv": BIG, "results.json": run}, sdc_params={}
    )
    line = {c["path"]: c for c in detail["comparison"]}["s2/big.csv"]
    assert detail["sdc_params_problem"] == "the run does not say which SDC parameters it forced"
    assert line["verdict"]["status"] == "review"


def test_the_checker_page_says_what_reexecution_proves_and_never_verified(svc, jobs):
    from egress.web.base import jinja_environment

    mine = results_doc({"small.csv": (SMALL, "pass", "count", relaxed(threshold=1))})
    theirs = results_doc({"small.csv": (SMALL, "fail", "count", PROJECT.as_dict())})
    rid, _job, detail = reexecute(
        svc,
        jobs,
        {"small.csv": SMALL, "results.json": mine},
        {"small.csv": SMALL, "results.json": theirs},
    )
    request = svc.get_request(olivia, rid)
    html = (
        jinja_environment()
        .get_template("reexecution.html")
        .render(
            prefix="/services/egress/",
            url=lambda *parts: "/services/egress/" + "/".join(map(str, parts)),
            user="olivia",
            actor=olivia,
            xsrf="",
            hub_home="/hub/home",
            r=request,
            rx=detail,
            rendered=None,
        )
    )
    assert "verified (trusted" not in html
    assert "Does not prove:" in html and "same sha256" in html
    assert "byte-for-byte" in html
    assert 'data-verdict="fail"' in html
    assert "recomputed by the egress service" in html
    assert "checked with relaxed parameters: threshold 1 (project: 10)" in html
    assert "SDC parameters forced in the run" in html


def test_the_researchers_verdict_is_shown_only_for_the_bytes_it_was_about(svc, jobs, outputs):
    """Issue #13 (small): a file changed after the library checked it gets no verdict there."""
    rid, ids = new_request(svc)
    entry = svc.request_reexecution(olivia, rid, ids["analysis.ipynb"])
    jobs.claim_next()
    publish(jobs, entry["id"], {"s1/smoking.csv": TABLE})
    matched = svc.reexecution(olivia, rid, entry["id"])
    (line,) = [c for c in matched["comparison"] if c["path"] == "s1/smoking.csv"]
    assert line["researcher_sdc"]["summary"] == "pass; "  # control: the library saw these bytes
    # the library's record now names other bytes (the table was rewritten after its check)
    other = json.loads(RESULTS_JSON)
    other["results"]["output_0"]["files"][0]["sha256"] = sha(TABLE + b"edited\n")
    (outputs / "cardio" / "s1" / "results.json").write_text(json.dumps(other))
    changed = svc.reexecution(olivia, rid, entry["id"])
    (line,) = [c for c in changed["comparison"] if c["path"] == "s1/smoking.csv"]
    shown = line["researcher_sdc"]
    assert shown["status"] == "changed" and "pass" not in json.dumps(shown)
    assert "Changed after the library checked it" in shown["summary"]
    assert shown["params_problem"] == ""


def test_viewing_a_runs_executed_notebook_is_audited_and_refused_to_the_author(svc, engine):
    """Issue #12: the executed notebook is bytes made from the data, shown in the browser."""
    rid, _ids = new_request(svc)
    digest = sha(NOTEBOOK)
    with pytest.raises(PermissionDenied, match="never gives authors"):
        svc.record_reexecution_view(alice, rid, "0" * 32, "analysis.ipynb (run 00000000)", digest)
    svc.record_reexecution_view(olivia, rid, "0" * 32, "analysis.ipynb (run 00000000)", digest)
    (viewed,) = events(engine, rid, EventType.FILE_VIEWED)
    assert viewed["actor"] == "olivia" and viewed["details"]["reexecution_id"] == "0" * 32
