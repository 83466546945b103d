"""Trusted re-execution, the egress service's side: ask the runner, take its results in, show them.

The operations of :class:`egress.core.EgressService` that deal with re-execution delegate here
(``request_reexecution``, ``list_reexecutions``, ``reexecution``, ``collect_reexecutions``);
they follow the core's rules (policy first, one transaction with the audit event, refusals with
a sentence). The runner is another container (:mod:`egress.reexecution_runner`), reached only
through the jobs folder (:mod:`egress.reexecution_jobs`).

Ordering, so that nothing is ever half stored:

* **asking**: the ``reexecutions`` row (``queued``) and the ``REEXECUTION_REQUESTED`` event are
  committed first, then the job is written to the inbox. If the service dies in between, the
  row's job is found nowhere (:meth:`~egress.reexecution_jobs.JobsFolder.location`) and, once
  older than :data:`LOST_AFTER`, the row is closed as ``failed`` ("the job was lost").
* **taking in** a finished result: every blob is checked (sha256) and put into the content
  store, the record is signed, then one transaction sets the row's status, report and signed
  record and writes the ``RE_EXECUTED`` event; only then is the result folder removed. A crash
  before the commit leaves unreferenced blobs (harmless, as for added files) and the result
  folder, which is taken in again; after the commit, the folder is just removed. A result
  whose row is not ``queued`` any more, or has no row, is removed without effect.

Results are taken in whenever a request's re-executions are read (the pages and the API), so a
checker who waits on the page or polls the API sees them as soon as the runner is done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from egress.audit import EventType, canonical_json, format_time
from egress.content_store import ContentNotFound, CorruptContent
from egress.policy import Actor, Permission, PermissionDenied
from egress.reexecution_jobs import Job, JobsFolder, ProtocolError, new_job_id, output_sdc_metadata
from egress.signing import sign_record
from egress.store.models import Reexecution, Request, RequestFile

if TYPE_CHECKING:  # pragma: no cover
    from egress.core import EgressService

log = logging.getLogger("egress.reexecution")

#: A queued job found nowhere in the jobs folder for this long is closed as lost.
LOST_AFTER = timedelta(minutes=2)
#: Parameters (as JSON) larger than this are refused.
MAX_PARAMETERS_JSON = 16 * 1024
#: The name the completion events are written under (the runner did the work).
RUNNER_ACTOR = "havre-reexec-runner"
_RUNNER = Actor(RUNNER_ACTOR, frozenset(), is_checker=False)
TRUSTED_LABEL = "verified (trusted re-execution)"
RESEARCHER_LABEL = "supplied by the researcher, not verified"


def _errors() -> tuple[type[Exception], type[Exception], type[Exception]]:
    from egress.core import EgressError, InvalidInput, NotFound

    return EgressError, InvalidInput, NotFound


def _conflict(reason: str) -> Exception:
    return PermissionDenied(reason, 409)


def _check_parameters(parameters: object) -> dict[str, Any]:
    _, InvalidInput, _ = _errors()
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise InvalidInput("The parameters must be a JSON object (name: value).")
    try:
        text = json.dumps(dict(parameters), allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInput("The parameters must be plain JSON values.") from None
    if len(text) > MAX_PARAMETERS_JSON:
        raise InvalidInput(f"The parameters are larger than {MAX_PARAMETERS_JSON} bytes.")
    from egress.reexecution import Refused, parameters_yaml

    try:
        parameters_yaml(parameters)
    except Refused as why:
        raise InvalidInput(f"Bad parameters: {why}.") from None
    except Exception as err:  # anything else the YAML round trip chokes on
        raise InvalidInput(f"Bad parameters: {type(err).__name__}.") from None
    return json.loads(text)


def _entry(row: Reexecution, *, detail: bool = False) -> dict[str, Any]:
    report = row.report or {}
    entry: dict[str, Any] = {
        "id": row.id,
        "notebook_path": row.notebook_path,
        "notebook_sha256": row.notebook_sha256,
        "parameters": row.parameters,
        "requested_by": row.requested_by,
        "requested_at": format_time(row.requested_at),
        "status": row.status,
        "finished_at": format_time(row.finished_at) if row.finished_at else None,
        "reason": row.reason,
        "duration_s": report.get("duration_s"),
        "image": report.get("image") or None,
        "image_id": report.get("image_id"),
        "limits": report.get("limits") or {},
        "executed_notebook": report.get("executed_notebook"),
        "outputs": [
            {**o, "sdc_label": TRUSTED_LABEL if o.get("sdc") else None}
            for o in report.get("outputs") or []
        ],
        "skipped": report.get("skipped") or [],
    }
    if detail:
        entry["log"] = report.get("log", "")
        entry["sdc_problems"] = report.get("sdc_problems") or []
        entry["record"] = json.loads(row.record_json) if row.record_json else None
    return entry


# --------------------------------------------------------------------------------------------
# Asking


def request(
    svc: EgressService,
    actor: Actor,
    request_id: str,
    file_id: int,
    parameters: object = None,
) -> dict[str, Any]:
    """Queue a trusted re-execution of the request's notebook ``file_id``; its entry."""
    _, InvalidInput, _ = _errors()
    with svc._read("reexecute", actor, request_id) as session:
        req = svc._load(session, request_id)
        svc._require(session, actor, Permission.REEXECUTE, req)
        row = svc._file(session, req, file_id)
        if row.kind != "notebook":
            raise InvalidInput(
                f"{row.path} is not a notebook; only notebooks (.ipynb) can be re-executed."
            )
        path, sha256, project = row.path, row.sha256, req.project
    try:
        params = _check_parameters(parameters)
    except Exception as exc:
        from egress.core import _refused

        _refused("reexecute", actor, request_id, exc)
        raise
    notebook = svc.content.get(sha256)
    job_id = new_job_id()
    with svc._write("reexecute", actor, request_id) as tx:
        req = svc._load(tx.session, request_id)
        svc._require(tx.session, actor, Permission.REEXECUTE, req)
        row = svc._file(tx.session, req, file_id)
        if row.sha256 != sha256:
            raise _conflict(f"{path} changed meanwhile; ask again.")
        waiting = tx.session.execute(
            select(Reexecution.id).where(
                Reexecution.request_id == req.id,
                Reexecution.notebook_path == path,
                Reexecution.status == "queued",
            )
        ).first()
        if waiting is not None:
            raise _conflict(
                f"A re-execution of {path} is already waiting or running; its result comes first."
            )
        rx = Reexecution(
            id=job_id,
            request_id=req.id,
            notebook_path=path,
            notebook_sha256=sha256,
            parameters=params,
            requested_by=actor.username,
            requested_at=tx.now,
            status="queued",
            finished_at=None,
            reason="",
            report=None,
            record_json=None,
        )
        tx.session.add(rx)
        tx.session.flush()
        tx.audit(
            actor,
            EventType.REEXECUTION_REQUESTED,
            req,
            object=path,
            file_hashes={path: sha256},
            details={
                "reexecution_id": job_id,
                "file_id": row.id,
                "parameters_sha256": _sha(canonical_json(params)),
            },
        )
        entry = _entry(rx)
    job = Job(
        job_id=job_id,
        request_id=request_id,
        project=project,
        notebook_path=path,
        notebook_sha256=sha256,
        parameters=params,
        requested_by=actor.username,
        requested_at=entry["requested_at"],
    )
    try:
        svc.reexecution_jobs.submit(job, notebook)
    except (OSError, ProtocolError) as err:
        log.error("re-execution %s could not be queued: %s", job_id, err)
        _close(svc, job_id, "failed", f"the service could not queue the job: {err}", None)
        unavailable = _errors()[0](
            "The re-execution could not be queued (the jobs folder is not writable); "
            "an administrator must check the runner's set-up."
        )
        unavailable.status = 503  # the service's set-up, not the request, is at fault
        raise unavailable from None
    return entry


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Taking results in


def _result_of(job_report: Mapping[str, Any], outputs: Mapping[str, bytes], executed: Any) -> Any:
    """The :class:`egress.reexecution.ReexecutionResult` a result folder describes."""
    from egress.reexecution import ReexecutionResult

    def when(text: object) -> datetime:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))

    return ReexecutionResult(
        status=job_report["status"],
        executed_notebook=executed,
        outputs=dict(outputs),
        log=job_report.get("log", ""),
        started_at=when(job_report["started_at"]),
        finished_at=when(job_report["finished_at"]),
        duration_s=float(job_report.get("duration_s") or 0.0),
        exit_code=job_report.get("exit_code"),
        image_id=job_report.get("image_id"),
        container_id=job_report.get("container_id"),
        reason=job_report.get("reason", ""),
        skipped=tuple(job_report.get("skipped") or ()),
        image=job_report.get("image", ""),
        notebook_sha256=job_report.get("notebook_sha256", ""),
        parameters=dict(job_report.get("parameters") or {}),
        limits=dict(job_report.get("limits") or {}),
    )


def _close(
    svc: EgressService,
    job_id: str,
    status: str,
    reason: str,
    report: Mapping[str, Any] | None,
    signed: Mapping[str, Any] | None = None,
) -> bool:
    """Set a queued row's outcome and write ``RE_EXECUTED``; False if it wasn't queued."""
    with svc._write("reexecution_result", _RUNNER) as tx:
        rx = tx.session.get(Reexecution, job_id)
        if rx is None or rx.status != "queued":
            return False
        req = tx.session.get(Request, rx.request_id)
        rx.status = status
        rx.reason = reason[:4000]
        rx.finished_at = tx.now
        rx.report = dict(report) if report is not None else None
        rx.record_json = json.dumps(signed, sort_keys=True) if signed is not None else None
        outputs = {o["path"]: o["sha256"] for o in (report or {}).get("outputs") or []}
        executed = (report or {}).get("executed_notebook") or {}
        tx.audit(
            RUNNER_ACTOR,
            EventType.RE_EXECUTED,
            req,
            object=rx.notebook_path,
            file_hashes={rx.notebook_path: rx.notebook_sha256},
            details={
                "reexecution_id": rx.id,
                "status": status,
                "reason": reason[:500],
                "executed_sha256": executed.get("sha256"),
                "outputs": outputs,
                "record_sha256": _sha(canonical_json(signed)) if signed is not None else None,
                "duration_s": (report or {}).get("duration_s"),
            },
        )
        return True


def _take_in(svc: EgressService, job_id: str) -> None:
    jobs: JobsFolder = svc.reexecution_jobs
    with svc._read("reexecution_result", _RUNNER) as session:
        rx = session.get(Reexecution, job_id)
        expected = None if rx is None else (rx.status, rx.request_id, rx.notebook_sha256)
        meta = None
        if rx is not None:
            req = session.get(Request, rx.request_id)
            meta = {
                "request_id": rx.request_id,
                "project": req.project if req else None,
                "notebook_path": rx.notebook_path,
                "requested_by": rx.requested_by,
                "requested_at": format_time(rx.requested_at),
                "reexecution_id": rx.id,
            }
    if expected is None or expected[0] != "queued":
        jobs.discard_result(job_id)
        return
    try:
        result = jobs.read_result(job_id)
        job = result.job
        if (job.request_id, job.notebook_sha256) != expected[1:]:
            raise ProtocolError("the result is about another request or notebook")
    except ProtocolError as err:
        log.error("re-execution %s: unusable result: %s", job_id, err)
        _close(svc, job_id, "failed", f"the runner's result can't be used: {err}", None)
        jobs.discard_result(job_id)
        return
    for data in result.outputs.values():
        svc.content.put(data)
    if result.executed_notebook is not None:
        svc.content.put(result.executed_notebook)
    from egress.reexecution import trusted_record

    record = trusted_record(
        _result_of(result.report, result.outputs, result.executed_notebook), meta or {}
    )
    signed = sign_record(record, svc._private())
    _close(svc, job_id, result.status, str(result.report.get("reason", "")), result.report, signed)
    jobs.discard_result(job_id)


def collect(svc: EgressService) -> int:
    """Take in every finished result; close queued rows whose job was lost. How many closed."""
    jobs: JobsFolder = svc.reexecution_jobs
    if not jobs.results.is_dir():
        return 0
    count = 0
    for job_id in jobs.finished():
        try:
            _take_in(svc, job_id)
            count += 1
        except (OSError, ContentNotFound, CorruptContent):
            log.exception("re-execution %s: taking the result in failed; tried again later", job_id)
    now = svc._now()
    with svc._read("reexecution_result", _RUNNER) as session:
        waiting = session.execute(
            select(Reexecution.id, Reexecution.requested_at).where(Reexecution.status == "queued")
        ).all()
    for job_id, requested_at in waiting:
        if now - requested_at > LOST_AFTER and jobs.location(job_id) is None:
            lost = "the job was lost (the service or the runner stopped before it ran)"
            if _close(svc, job_id, "failed", lost, None):
                count += 1
    return count


# --------------------------------------------------------------------------------------------
# Views


def list_for_request(svc: EgressService, actor: Actor, request_id: str) -> list[dict[str, Any]]:
    """The request's re-executions, newest first (takes finished results in first)."""
    with svc._read("list_reexecutions", actor, request_id) as session:
        req = svc._load(session, request_id)
        svc._require(session, actor, Permission.VIEW_FILE, req)
    collect(svc)
    with svc._read("list_reexecutions", actor, request_id) as session:
        rows = session.execute(
            select(Reexecution)
            .where(Reexecution.request_id == request_id)
            .order_by(Reexecution.requested_at.desc(), Reexecution.id)
        ).scalars()
        return [_entry(r) for r in rows]


def researcher_metadata(
    svc: EgressService, project: str, paths: list[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """SDC metadata the researcher's own session wrote for ``paths`` (their ``results.json``).

    Read from the project's outputs folder as it is now (``results.json`` is not a file type
    that can be released, so it is never part of a request): labelled
    :data:`RESEARCHER_LABEL`, because the researcher can write anything there. Only a trusted
    re-execution's ``results.json`` is verified.
    """
    from egress.outputs_folder import OutputPathError, read_output

    root = svc._outputs_root(project)
    files: dict[str, bytes] = {}
    problems: list[str] = []
    for folder in sorted({p.rsplit("/", 1)[0] + "/" if "/" in p else "" for p in paths}):
        try:
            files[f"{folder}results.json"] = read_output(
                root, f"{folder}results.json", max_bytes=8 * 1024**2
            )
        except OutputPathError as err:
            if "does not exist" not in err.reason and "no such" not in err.reason.lower():
                problems.append(f"{folder}results.json: {err.reason}")
    found, more = output_sdc_metadata(files)
    wanted = set(paths)
    return (
        {p: {**m, "label": RESEARCHER_LABEL} for p, m in found.items() if p in wanted},
        problems + more,
    )


def detail(
    svc: EgressService, actor: Actor, request_id: str, reexecution_id: str
) -> dict[str, Any]:
    """One re-execution for the checker: its run, and the submitted files set against it.

    ``comparison``: one line per path in either set (``identical``, ``differs``,
    ``only-submitted``, ``only-trusted``; see ``egress.reexecution.compare_outputs``), with the
    trusted run's SDC verdict (:data:`TRUSTED_LABEL`) and the researcher's own metadata, if
    any (:data:`RESEARCHER_LABEL`). ``executed_notebook_bytes`` is for the renderer.
    """
    from egress.reexecution import compare_outputs

    _, _, NotFound = _errors()
    with svc._read("reexecution", actor, request_id) as session:
        req = svc._load(session, request_id)
        svc._require(session, actor, Permission.VIEW_FILE, req)
    collect(svc)
    with svc._read("reexecution", actor, request_id) as session:
        req_project = svc._load(session, request_id).project
        rx = session.get(Reexecution, str(reexecution_id)[:64])
        if rx is None or rx.request_id != request_id:
            raise NotFound(f"There is no re-execution {reexecution_id!r} of request {request_id}.")
        entry = _entry(rx, detail=True)
        files = session.execute(
            select(RequestFile.path, RequestFile.id, RequestFile.sha256).where(
                RequestFile.request_id == request_id
            )
        ).all()
    submitted_ids = {f.path: f.id for f in files}
    submitted = {f.path: f.sha256 for f in files if f.path != entry["notebook_path"]}
    trusted_meta = {o["path"]: o for o in entry["outputs"]}
    trusted = {path: svc.content.get(o["sha256"]) for path, o in trusted_meta.items()}
    supplied, supplied_problems = researcher_metadata(svc, req_project, sorted(submitted))
    comparison = []
    if entry["status"] in ("completed", "failed", "timeout"):
        for c in compare_outputs(submitted, trusted):
            comparison.append(
                {
                    "path": c.path,
                    "status": c.status,
                    "submitted_sha256": c.submitted_sha256,
                    "trusted_sha256": c.trusted_sha256,
                    "file_id": submitted_ids.get(c.path),
                    "trusted_sdc": (trusted_meta.get(c.path) or {}).get("sdc"),
                    "researcher_sdc": supplied.get(c.path),
                }
            )
    executed = entry.get("executed_notebook")
    entry["comparison"] = comparison
    entry["researcher_metadata"] = supplied
    entry["researcher_metadata_problems"] = supplied_problems
    entry["labels"] = {"trusted": TRUSTED_LABEL, "researcher": RESEARCHER_LABEL}
    entry["executed_notebook_bytes"] = svc.content.get(executed["sha256"]) if executed else None
    return entry
