"""Trusted re-execution, the egress service's side: ask the runner, take its results in, show them.

The service's re-execution operations (:class:`egress.operations.reexecution.ReexecutionOperations`)
delegate here (``request_reexecution``, ``list_reexecutions``, ``reexecution``,
``collect_reexecutions``); they follow the operations' rules (policy first, one transaction with
the audit event, refusals with a sentence). The runner is another container
(:mod:`egress.reexecution.runner`), reached only through the jobs folder
(:mod:`egress.reexecution.jobs`).

Ordering, so that nothing is ever half stored:

* **asking**: the ``reexecutions`` row (``queued``) and the ``REEXECUTION_REQUESTED`` event are
  committed first, then the job is written to the inbox. If the service dies in between, the
  row's job is found nowhere (:meth:`~egress.reexecution.jobs.JobsFolder.location`) and, once
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
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from egress.audit.chain import EventType, canonical_json, format_time
from egress.audit.signing import sign_record
from egress.domain.errors import EgressError, InvalidInput, NotFound, _refused
from egress.domain.policy import Actor, Permission, PermissionDenied
from egress.files.sdc_badge import LibraryRecords
from egress.operations.base import Transaction
from egress.reexecution.jobs import Job, JobsFolder, ProtocolError, new_job_id, output_sdc_metadata
from egress.reexecution.model import ReexecutionResult, Refused, compare_outputs, trusted_record
from egress.reexecution.scratch import parameters_yaml
from egress.store.content import ContentNotFound, ContentStore, CorruptContent
from egress.store.models import Reexecution, Request, RequestFile
from havre.enclave.outputs_folder import OutputPathError, read_output
from havre.sdc import check_frequency_csv, read_table_csv
from havre.sdc.params import SDCParams, SDCParamsError


class ReexecutionHost(Protocol):
    """What these operations use of the egress service (its state and building blocks)."""

    content: ContentStore
    sdc_params: SDCParams
    outputs_root: Callable[[str], Path]

    @property
    def reexecution_jobs(self) -> JobsFolder: ...

    def now(self) -> datetime: ...

    def private_key(self) -> Ed25519PrivateKey: ...

    def writing(
        self, op: str, actor: Actor, request_id: str | None = None
    ) -> AbstractContextManager[Transaction]: ...

    def reading(
        self, op: str, actor: Actor, request_id: str | None = None
    ) -> AbstractContextManager[Session]: ...

    def load_request(self, session: Session, request_id: object) -> Request: ...

    def library_records(self, project: str) -> LibraryRecords: ...

    def permitted(
        self, session: Session, actor: Actor, request_id: object, permission: Permission
    ) -> Request: ...

    def permitted_file(
        self,
        session: Session,
        actor: Actor,
        request_id: object,
        file_id: object,
        permission: Permission,
    ) -> tuple[Request, RequestFile]: ...


log = logging.getLogger("egress.reexecution")

#: A queued job found nowhere in the jobs folder for this long is closed as lost.
LOST_AFTER = timedelta(minutes=2)
#: Parameters (as JSON) larger than this are refused.
MAX_PARAMETERS_JSON = 16 * 1024
#: The name the completion events are written under (the runner did the work).
RUNNER_ACTOR = "havre-reexec-runner"
_RUNNER = Actor(RUNNER_ACTOR, frozenset(), is_checker=False)
#: Verdicts the run's own ``results.json`` records: computed by the safe-analysis library in
#: the re-executed notebook's process, where the notebook's code runs too.
IN_RUN_LABEL = (
    "computed inside the re-executed notebook's process (the notebook's code can influence it)"
)
#: Verdicts the egress service computed itself from the trusted run's output files.
SERVICE_LABEL = "recomputed by the egress service from the trusted run's file"
RESEARCHER_LABEL = "supplied by the researcher, not verified"
#: What a completed re-execution proves, and what it doesn't (shown to checkers as is).
PROVES = (
    "The notebook ran again, unchanged (same sha256), in a fresh container of the project's "
    "image with no network, on the project's data, with the project's SDC parameters forced. "
    "An output marked identical is byte-for-byte the file the researcher submitted: the same "
    "code on the same data produces the same bytes."
)
DOES_NOT_PROVE = (
    "It does not prove the run's own SDC verdicts: they were computed inside the notebook's "
    "process, where the notebook's code can change them (reset the parameters, replace a "
    "check, rewrite results.json). The service recomputes what it can itself (tables of "
    "counts) and shows the worst of the two; other outputs carry only the run's verdict. An "
    "output marked differs or only-submitted is not what the code produces."
)
#: Service recomputation: CSV/TSV outputs larger than this are not recomputed (said so).
MAX_RECOMPUTE_BYTES = 32 * 1024**2
_RANK = {"pass": 0, "review": 1, "fail": 2}


def _conflict(reason: str) -> Exception:
    return PermissionDenied(reason, 409)


def _check_parameters(parameters: object) -> dict[str, Any]:
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
    try:
        parameters_yaml(parameters)
    except Refused as why:
        raise InvalidInput(f"Bad parameters: {why}.") from None
    except Exception as err:  # anything else the YAML round trip chokes on
        raise InvalidInput(f"Bad parameters: {type(err).__name__}.") from None
    return json.loads(text)


def _entry(row: Reexecution, *, detail: bool = False) -> dict[str, Any]:
    report = row.report or {}
    service_sdc = report.get("service_sdc") or {}
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
        "sdc_params": report.get("sdc_params") or {},
        "outputs": [
            {
                **o,
                "sdc_label": IN_RUN_LABEL if o.get("sdc") else None,
                "service_sdc": service_sdc.get(o.get("path")),
            }
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
    svc: ReexecutionHost,
    actor: Actor,
    request_id: str,
    file_id: int,
    parameters: object = None,
) -> dict[str, Any]:
    """Queue a trusted re-execution of the request's notebook ``file_id``; its entry."""
    with svc.reading("reexecute", actor, request_id) as session:
        req, row = svc.permitted_file(session, actor, request_id, file_id, Permission.REEXECUTE)
        if row.kind != "notebook":
            raise InvalidInput(
                f"{row.path} is not a notebook; only notebooks (.ipynb) can be re-executed."
            )
        path, sha256, project = row.path, row.sha256, req.project
    try:
        params = _check_parameters(parameters)
    except Exception as exc:
        _refused("reexecute", actor, request_id, exc)
        raise
    notebook = svc.content.get(sha256)
    job_id = new_job_id()
    with svc.writing("reexecute", actor, request_id) as tx:
        req, row = svc.permitted_file(tx.session, actor, request_id, file_id, Permission.REEXECUTE)
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
        sdc_params=svc.sdc_params.as_dict(),
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
        unavailable = EgressError(
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
    """The :class:`egress.reexecution.model.ReexecutionResult` a result folder describes."""

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
        sdc_params=dict(job_report.get("sdc_params") or {}),
    )


def _close(
    svc: ReexecutionHost,
    job_id: str,
    status: str,
    reason: str,
    report: Mapping[str, Any] | None,
    signed: Mapping[str, Any] | None = None,
) -> bool:
    """Set a queued row's outcome and write ``RE_EXECUTED``; False if it wasn't queued."""
    with svc.writing("reexecution_result", _RUNNER) as tx:
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


def _take_in(svc: ReexecutionHost, job_id: str) -> None:
    jobs: JobsFolder = svc.reexecution_jobs
    with svc.reading("reexecution_result", _RUNNER) as session:
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
    run_meta, _problems = output_sdc_metadata(result.outputs)
    service_sdc = recompute_sdc(result.outputs, run_meta, svc.sdc_params)
    report = {**result.report, "service_sdc": service_sdc}
    record = trusted_record(
        _result_of(report, result.outputs, result.executed_notebook), meta or {}, service_sdc
    )
    signed = sign_record(record, svc.private_key())
    _close(svc, job_id, result.status, str(report.get("reason", "")), report, signed)
    jobs.discard_result(job_id)


def collect(svc: ReexecutionHost) -> int:
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
    now = svc.now()
    with svc.reading("reexecution_result", _RUNNER) as session:
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
# Verdicts the service recomputes, and the verdict shown


def _count_check(text: str, delimiter: str, params: SDCParams) -> Any:
    """The service's own check of a published table of counts (an ``OutputCheck``), or
    ``None`` when the text is not a table of counts (labels, then whole numbers or blanks)."""
    try:
        from havre.sdc.published import check_count_csv_text  # type: ignore[attr-defined]
    except ImportError:
        check_count_csv_text = None
    if check_count_csv_text is not None:
        return check_count_csv_text(text, delimiter=delimiter, params=params)
    import pandas as pd

    frame = read_table_csv(text, delimiter=delimiter)
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        return None
    cells = frame.apply(lambda col: col.str.strip())
    numbers = cells.apply(pd.to_numeric, errors="coerce")
    blank = cells.eq("")
    if bool((numbers.isna() & ~blank).to_numpy().any()) or bool(blank.to_numpy().all()):
        return None
    values = numbers.to_numpy(dtype=float)
    shown = values[~blank.to_numpy()]
    if bool(((shown < 0) | (shown != shown.round())).any()):
        return None
    return check_frequency_csv(frame, params=params)


def recompute_sdc(
    outputs: Mapping[str, bytes],
    run_meta: Mapping[str, Mapping[str, Any]],
    params: SDCParams,
) -> dict[str, dict[str, Any]]:
    """The service's own verdict, path by path, for the trusted run's CSV/TSV outputs.

    Only tables of counts can be checked from a file alone, so a file is checked when the
    run's ``results.json`` records its statistic as ``count`` and the file reads as a table of
    counts; otherwise its entry says why it was not (status ``"not-checked"``, never a pass).
    That the statistic is a count is the run's word; a count check of a table that isn't one
    can only add failures, and the verdict shown is the worst of the run's and the service's.
    """
    found: dict[str, dict[str, Any]] = {}
    for path, data in sorted(outputs.items()):
        lower = path.lower()
        if not lower.endswith((".csv", ".tsv")):
            continue
        statistic = (run_meta.get(path) or {}).get("statistic")
        entry: dict[str, Any] = {
            "label": SERVICE_LABEL,
            "statistic": statistic,
            "params": params.as_dict(),
            "reasons": [],
        }
        if statistic != "count":
            said = f"records its statistic as {statistic!r}" if statistic else "has no record"
            entry.update(
                status="not-checked",
                summary="not recomputed: the service can only check tables of counts from a "
                f"file, and the run's results.json {said} for this file",
            )
        elif len(data) > MAX_RECOMPUTE_BYTES:
            entry.update(
                status="not-checked",
                summary=f"not recomputed: larger than {MAX_RECOMPUTE_BYTES} bytes",
            )
        else:
            delimiter = "\t" if lower.endswith(".tsv") else ","
            try:
                check = _count_check(data.decode("utf-8-sig"), delimiter, params)
            except Exception as err:  # the check informs checkers; it must not lose the run
                log.exception("recomputing the SDC verdict of %s failed", path)
                check = None
                entry["reasons"] = [f"the check could not read the file: {type(err).__name__}"]
            if check is None:
                entry.update(
                    status="not-checked",
                    summary="not recomputed: the file does not read as a table of counts "
                    "(labels in the first column and the header row, then whole numbers)",
                )
            else:
                entry.update(
                    status=check.verdict.label,
                    summary=check.summary,
                    reasons=[str(r) for r in list(check.reasons)[:20]],
                )
        found[path] = entry
    return found


def _param_problem(params: Mapping[str, Any] | None, project: SDCParams) -> tuple[list[str], str]:
    """Which rules ``params`` (a record's) relax against the project's; a sentence if any."""
    if params is None:
        return [], "the record does not say which SDC parameters it was checked with"
    try:
        known = {k: v for k, v in params.items() if k in SDCParams.field_names()}
        theirs = SDCParams.from_mapping(known, source="results.json params")
    except (SDCParamsError, TypeError, ValueError):
        return [], "the record's SDC parameters can't be read"
    relaxed = theirs.weaker_than(project)
    if not relaxed:
        return [], ""
    shown = ", ".join(f"{n} {params.get(n)!r} (project: {getattr(project, n)!r})" for n in relaxed)
    return relaxed, f"checked with relaxed parameters: {shown}"


def shown_verdict(
    run_sdc: Mapping[str, Any] | None,
    service_sdc: Mapping[str, Any] | None,
    run_problems: list[str],
) -> dict[str, Any]:
    """The verdict a checker sees for one output: the worst of the run's and the service's.

    Never better than either: a run verdict with a problem (relaxed or unrecorded parameters, a
    record about other bytes) counts as ``fail`` (relaxed) or ``review`` (otherwise); an
    unknown status counts as ``review``; with no verdict at all the status is ``"none"``.
    """
    candidates: list[tuple[int, str, str]] = []
    if run_sdc is not None:
        status = str(run_sdc.get("status", ""))
        rank = _RANK.get(status, 1)
        for problem in run_problems:
            rank = max(rank, 2 if problem.startswith("checked with relaxed") else 1)
        candidates.append((rank, "the run's results.json", status))
    if service_sdc is not None and service_sdc.get("status") in _RANK:
        status = str(service_sdc["status"])
        candidates.append((_RANK[status], "the service", status))
    if not candidates:
        return {"status": "none", "from": [], "summary": "no SDC verdict for this file"}
    worst = max(rank for rank, _, _ in candidates)
    label = {v: k for k, v in _RANK.items()}[worst]
    return {
        "status": label,
        "from": [f"{who}: {status}" for _, who, status in candidates],
        "summary": f"{label}: the worst of " + "; ".join(f"{w} ({s})" for _, w, s in candidates),
    }


# --------------------------------------------------------------------------------------------
# Views


def list_for_request(svc: ReexecutionHost, actor: Actor, request_id: str) -> list[dict[str, Any]]:
    """The request's re-executions, newest first (takes finished results in first)."""
    with svc.reading("list_reexecutions", actor, request_id) as session:
        svc.permitted(session, actor, request_id, Permission.VIEW_FILE)
    collect(svc)
    with svc.reading("list_reexecutions", actor, request_id) as session:
        rows = session.execute(
            select(Reexecution)
            .where(Reexecution.request_id == request_id)
            .order_by(Reexecution.requested_at.desc(), Reexecution.id)
        ).scalars()
        return [_entry(r) for r in rows]


def researcher_metadata(
    svc: ReexecutionHost, project: str, submitted: Mapping[str, str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """SDC metadata the researcher's own session wrote for the ``submitted`` files ({path:
    sha256}), from their ``results.json``.

    Read from the project's outputs folder as it is now (``results.json`` is not a file type
    that can be released, so it is never part of a request): labelled
    :data:`RESEARCHER_LABEL`, because the researcher can write anything there. A record is
    shown with its verdict only when it is about the submitted bytes (the library's sha256,
    ``LibraryRecords.for_file``); a file changed after the library checked it gets status
    ``changed`` and the sentence saying so, never the old verdict.
    """
    paths = sorted(submitted)
    root = svc.outputs_root(project)
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
    records = svc.library_records(project)
    shown: dict[str, dict[str, Any]] = {}
    for path, meta in found.items():
        if path not in submitted:
            continue
        library = records.for_file(path, submitted[path])
        if library.get("status") == "matched":
            shown[path] = {**meta, "label": RESEARCHER_LABEL, "library_status": "matched"}
        else:  # about other bytes, or no usable record of these: no verdict
            shown[path] = {
                "status": str(library.get("status") or "no_record"),
                "summary": str(library.get("message") or ""),
                "params": None,
                "label": RESEARCHER_LABEL,
                "library_status": str(library.get("status") or "no_record"),
            }
    return shown, problems + more


def detail(
    svc: ReexecutionHost, actor: Actor, request_id: str, reexecution_id: str
) -> dict[str, Any]:
    """One re-execution for the checker: its run, and the submitted files set against it.

    ``comparison``: one line per path in either set (``identical``, ``differs``,
    ``only-submitted``, ``only-trusted``; see ``egress.reexecution.model.compare_outputs``), with
    ``run_sdc`` (the run's ``results.json`` verdict, :data:`IN_RUN_LABEL`, with the rules its
    parameters relax against the project's and any other ``run_problems``), ``service_sdc``
    (the verdict the service recomputed, :data:`SERVICE_LABEL`), ``verdict`` (the worst of the
    two: :func:`shown_verdict`) and the researcher's own metadata, if any
    (:data:`RESEARCHER_LABEL`, with its relaxed rules). ``proves`` and ``does_not_prove`` say
    what re-execution shows; ``project_sdc_params`` are the service's parameters and
    ``sdc_params_problem`` says when the run's forced ones were weaker.
    ``executed_notebook_bytes`` is for the renderer.
    """
    with svc.reading("reexecution", actor, request_id) as session:
        svc.permitted(session, actor, request_id, Permission.VIEW_FILE)
    collect(svc)
    with svc.reading("reexecution", actor, request_id) as session:
        req_project = svc.load_request(session, request_id).project
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
    supplied, supplied_problems = researcher_metadata(svc, req_project, submitted)
    project_params = svc.sdc_params
    for meta in supplied.values():
        if meta.get("library_status") != "matched":  # no verdict shown: nothing to compare
            meta["relaxed"], meta["params_problem"] = [], ""
            continue
        meta["relaxed"], meta["params_problem"] = _param_problem(meta.get("params"), project_params)
    forced_problem = ""
    if entry["sdc_params"]:
        relaxed, _ = _param_problem(entry["sdc_params"], project_params)
        if relaxed:
            forced_problem = (
                "the run forced SDC parameters weaker than the project's now ("
                + ", ".join(relaxed)
                + "): its verdicts were computed under rules the project no longer has"
            )
    elif entry["status"] in ("completed", "failed", "timeout"):
        forced_problem = "the run does not say which SDC parameters it forced"
    comparison = []
    if entry["status"] in ("completed", "failed", "timeout"):
        for c in compare_outputs(submitted, trusted):
            run_sdc = (trusted_meta.get(c.path) or {}).get("sdc")
            problems: list[str] = []
            if run_sdc is not None:
                run_sdc = {
                    "status": "",
                    "summary": "",
                    "reasons": [],
                    "statistic": None,
                    "params": None,
                    "sha256": None,
                    **run_sdc,
                    "label": IN_RUN_LABEL,
                }
                relaxed, problem = _param_problem(run_sdc.get("params"), project_params)
                run_sdc["relaxed"] = relaxed
                problems += [problem] if problem else []
                if forced_problem:
                    problems.append(forced_problem)
                claimed = run_sdc.get("sha256")
                if claimed and c.trusted_sha256 and claimed != c.trusted_sha256:
                    problems.append("the run's results.json gives this file another sha256")
            service_sdc = (trusted_meta.get(c.path) or {}).get("service_sdc")
            comparison.append(
                {
                    "path": c.path,
                    "status": c.status,
                    "submitted_sha256": c.submitted_sha256,
                    "trusted_sha256": c.trusted_sha256,
                    "file_id": submitted_ids.get(c.path),
                    "run_sdc": run_sdc,
                    "run_problems": problems,
                    "service_sdc": service_sdc,
                    "verdict": shown_verdict(run_sdc, service_sdc, problems),
                    "researcher_sdc": supplied.get(c.path),
                }
            )
    executed = entry.get("executed_notebook")
    entry["comparison"] = comparison
    entry["researcher_metadata"] = supplied
    entry["researcher_metadata_problems"] = supplied_problems
    entry["labels"] = {
        "run": IN_RUN_LABEL,
        "service": SERVICE_LABEL,
        "researcher": RESEARCHER_LABEL,
    }
    entry["proves"] = PROVES
    entry["does_not_prove"] = DOES_NOT_PROVE
    entry["project_sdc_params"] = project_params.as_dict()
    entry["sdc_params_problem"] = forced_problem
    entry["executed_notebook_bytes"] = svc.content.get(executed["sha256"]) if executed else None
    return entry
