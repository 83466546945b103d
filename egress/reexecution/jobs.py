"""The re-execution job protocol: files the egress service and the runner exchange.

The egress service has no Docker socket (it faces the browsers); the re-execution runner
(``havre-reexec-runner``, :mod:`egress.reexecution.runner`) has it, and no network at all. They
share one folder, the *jobs folder* (``<state_dir>/reexec/`` under ``havre up``)::

    inbox/<job>.ipynb      the notebook to run (written first)
    inbox/<job>.job.json   the job (written last: its presence means "ready")
    running/<job>.*        claimed by the runner (atomic renames out of inbox/)
    running/<job>.attempts how many times a runner started this job
    results/<job>/         the finished result: result.json, executed.ipynb, blobs/<sha256>
    work/                  the runner's scratch folders (a host path the Docker engine sees)

Every file is written to a hidden temporary name, flushed to disk, then renamed into place, so
a reader sees a whole file or none. A result is a folder assembled under a temporary name and
renamed into ``results/`` in one step. A job id is in exactly one of ``inbox/``, ``running/``,
``results/`` at any instant (a result folder appears before the ``running/`` files go):
:meth:`JobsFolder.location` checks them in that order, so a job that exists is always found.

What is security-relevant never comes from a job: the job names the request, the project (one of
the enclave's), the notebook's sha256 and the papermill parameters; the runner takes the image,
the data folder, the limits and the time limit from the enclave config and its own options, and
checks the notebook's bytes against the sha256 (see ``docs/checker-reexecution.md``).

Both sides treat what they read as untrusted data: sizes are capped, names and digests checked,
every output blob's sha256 verified before the service stores it.

Pure file-system code (no Docker, no database): unit-tested without either.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from havre.enclave.jobs_folder import JOBS_SUBFOLDERS, prepare_jobs_folder

__all__ = [
    "JOB_SCHEMA",
    "RESULT_SCHEMA",
    "Job",
    "JobResult",
    "JobsFolder",
    "ProtocolError",
    "output_sdc_metadata",
]

JOB_SCHEMA = "havre.reexecution-job/1"
RESULT_SCHEMA = "havre.reexecution-result/1"

MAX_JOB_BYTES = 256 * 1024
MAX_RESULT_JSON_BYTES = 8 * 1024**2
MAX_NOTEBOOK_BYTES = 64 * 1024**2
MAX_BLOB_BYTES = 64 * 1024**2
MAX_OUTPUTS = 256
#: A job a runner started this many times without finishing is marked failed, not run again.
MAX_ATTEMPTS = 2

STATUSES = ("completed", "failed", "timeout", "refused")
Location = Literal["queued", "running", "finished"]

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
_PATH_PART = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")


class ProtocolError(ValueError):
    """A job or a result file that doesn't follow the protocol (the message says how)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_job_id() -> str:
    """A random job id: 32 hex digits."""
    return secrets.token_hex(16)


def _relative_path(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 1024:
        raise ProtocolError(f"{what} must be a relative path")
    parts = value.split("/")
    if not all(_PATH_PART.fullmatch(p) and p not in (".", "..") for p in parts):
        raise ProtocolError(f"{what} {value[:100]!r} is not a plain relative path")
    return value


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ProtocolError(message)


# --------------------------------------------------------------------------------------------
# Jobs


@dataclass(frozen=True)
class Job:
    """One re-execution asked for by the egress service (see the module documentation)."""

    job_id: str
    request_id: str
    project: str
    notebook_path: str
    notebook_sha256: str
    parameters: Mapping[str, Any]
    requested_by: str
    requested_at: str
    #: the project's SDC parameters as the service holds them (Havre's names); the runner
    #: forces them in the run, raised to ACRO's defaults where weaker
    #: (``egress.reexecution.model.forced_sdc_params``): a job can make a run stricter, not laxer
    sdc_params: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _check(isinstance(self.job_id, str) and bool(_JOB_ID.fullmatch(self.job_id)), "bad job id")
        _check(
            isinstance(self.request_id, str) and bool(_REQUEST_ID.fullmatch(self.request_id)),
            "bad request id",
        )
        _check(isinstance(self.project, str) and bool(_SLUG.fullmatch(self.project)), "bad project")
        _relative_path(self.notebook_path, "notebook_path")
        _check(
            isinstance(self.notebook_sha256, str) and bool(_HEX64.fullmatch(self.notebook_sha256)),
            "notebook_sha256 must be 64 lower-case hex digits",
        )
        _check(isinstance(self.parameters, Mapping), "parameters must be an object")
        _check(
            isinstance(self.requested_by, str) and 0 < len(self.requested_by) <= 256,
            "bad requested_by",
        )
        _check(isinstance(self.requested_at, str) and len(self.requested_at) <= 64, "bad time")
        _check(
            self.sdc_params is None or isinstance(self.sdc_params, Mapping),
            "sdc_params must be an object",
        )

    def as_json(self) -> dict[str, Any]:
        extra = {} if self.sdc_params is None else {"sdc_params": dict(self.sdc_params)}
        return {
            **extra,
            "schema": JOB_SCHEMA,
            "job_id": self.job_id,
            "request_id": self.request_id,
            "project": self.project,
            "notebook_path": self.notebook_path,
            "notebook_sha256": self.notebook_sha256,
            "parameters": dict(self.parameters),
            "requested_by": self.requested_by,
            "requested_at": self.requested_at,
        }

    @classmethod
    def from_json(cls, data: object) -> Job:
        """A job read back; :class:`ProtocolError` for anything else (unknown keys included)."""
        _check(isinstance(data, dict), "a job must be a JSON object")
        assert isinstance(data, dict)
        _check(data.get("schema") == JOB_SCHEMA, f"a job's schema must be {JOB_SCHEMA}")
        known = {"schema", *cls.__dataclass_fields__}
        _check(not set(data) - known, f"unknown job fields: {sorted(set(data) - known)}")
        try:
            return cls(**{k: v for k, v in data.items() if k != "schema"})
        except TypeError as err:
            raise ProtocolError(f"a job field is missing: {err}") from None


@dataclass(frozen=True)
class JobResult:
    """A finished job read back by the service: the runner's report and the output bytes.

    ``report`` is ``result.json`` (see :func:`result_report`); ``outputs`` maps each output's
    path to its bytes (sha256 checked against the report), ``executed_notebook`` likewise.
    """

    job: Job
    report: dict[str, Any]
    executed_notebook: bytes | None
    outputs: dict[str, bytes] = field(repr=False)

    @property
    def status(self) -> str:
        return str(self.report["status"])


# --------------------------------------------------------------------------------------------
# SDC metadata from results.json files (ACRO's format, as Havre's safe library writes it)


def output_sdc_metadata(files: Mapping[str, bytes]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per output file, the verdict its folder's ``results.json`` records; and the problems.

    ``files`` maps paths relative to the outputs folder to bytes (only ``.../results.json``
    files are read). For each record's files, ``<folder>/<name>`` gets ``{"status", "type",
    "statistic", "summary", "reasons", "uid", "exception", "results_json", "params",
    "sha256"}``: ``statistic`` is the record's (Havre's ``havre.statistic``, else
    ``properties.statistic``; ``None`` when it says none), ``params`` the SDC parameters the
    record says it was checked with (``havre.params``, else the file's ``session.params``;
    ``None`` when neither is an object), ``sha256`` the digest the record gives the file.
    Everything here is what the file *says*; whoever wrote it could write anything. A
    ``results.json`` that isn't ACRO-shaped is reported in the problems list, never raised.
    """
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for path, data in sorted(files.items()):
        if path.rsplit("/", 1)[-1] != "results.json":
            continue
        folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
        try:
            doc = json.loads(data.decode("utf-8"))
            results = doc["results"]
            if not isinstance(results, dict):
                raise TypeError("results is not an object")
            session = doc.get("session") if isinstance(doc.get("session"), dict) else {}
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            problems.append(f"{path}: not an ACRO-style results file ({type(err).__name__})")
            continue
        for uid, record in sorted(results.items()):
            if not isinstance(record, dict):
                problems.append(f"{path}: record {str(uid)[:40]!r} is not an object")
                continue
            havre = record.get("havre") if isinstance(record.get("havre"), dict) else {}
            reasons = havre.get("reasons") if isinstance(havre.get("reasons"), list) else []
            properties = record.get("properties")
            properties = properties if isinstance(properties, dict) else {}
            statistic = havre.get("statistic") or properties.get("statistic")
            params = havre.get("params")
            if not isinstance(params, dict):
                params = session.get("params") if isinstance(session.get("params"), dict) else None
            for entry in record.get("files") or []:
                name = entry.get("name") if isinstance(entry, dict) else None
                if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
                    problems.append(f"{path}: record {str(uid)[:40]!r} names a bad file")
                    continue
                digest = entry.get("sha256")
                found[folder + name] = {
                    "uid": str(uid)[:100],
                    "status": str(record.get("status", ""))[:20],
                    "type": str(record.get("type", ""))[:40],
                    "statistic": str(statistic)[:40] if statistic else None,
                    "params": _plain_params(params),
                    "sha256": digest.lower()
                    if isinstance(digest, str) and _HEX64.fullmatch(digest.lower())
                    else None,
                    "summary": str(record.get("summary", ""))[:500],
                    "reasons": [str(r)[:500] for r in reasons[:20]],
                    "exception": str(record.get("exception", ""))[:2000],
                    "results_json": path,
                }
    return found, problems


def _plain_params(params: object) -> dict[str, Any] | None:
    """SDC parameters as a record gives them: scalar values only, names and size capped."""
    if not isinstance(params, dict):
        return None
    plain: dict[str, Any] = {}
    for name, value in list(params.items())[:40]:
        if isinstance(value, bool | int | float | str) or value is None:
            plain[str(name)[:60]] = value[:60] if isinstance(value, str) else value
    return plain


def result_report(job: Job, result: Any, *, limits_source: str) -> dict[str, Any]:
    """``result.json`` for a :class:`egress.reexecution.model.ReexecutionResult` of ``job``.

    Outputs are listed with sha256, size and the SDC metadata the run's own ``results.json``
    files record (:func:`output_sdc_metadata`).
    """
    from egress.audit.chain import format_time

    sdc, problems = output_sdc_metadata(result.outputs)
    executed = result.executed_notebook
    return {
        "schema": RESULT_SCHEMA,
        "job": job.as_json(),
        "status": result.status,
        "reason": result.reason,
        "log": result.log,
        "started_at": format_time(result.started_at),
        "finished_at": format_time(result.finished_at),
        "duration_s": result.duration_s,
        "exit_code": result.exit_code,
        "image": result.image,
        "image_id": result.image_id,
        "container_id": result.container_id,
        "notebook_sha256": result.notebook_sha256,
        "parameters": result.parameters,
        "limits": result.limits,
        "limits_source": limits_source,
        "sdc_params": dict(getattr(result, "sdc_params", None) or {}),
        "skipped": list(result.skipped),
        "executed_notebook": None
        if executed is None
        else {"sha256": _sha256(executed), "size": len(executed)},
        "outputs": [
            {"path": path, "sha256": _sha256(data), "size": len(data), "sdc": sdc.get(path)}
            for path, data in sorted(result.outputs.items())
        ],
        "sdc_problems": problems,
    }


def failure_report(job: Job, status: str, reason: str) -> dict[str, Any]:
    """``result.json`` for a job that produced no run (refused before Docker, runner crash)."""
    from egress.audit.chain import format_time

    now = format_time(datetime.now(UTC))
    return {
        "schema": RESULT_SCHEMA,
        "job": job.as_json(),
        "status": status,
        "reason": reason,
        "log": "",
        "started_at": now,
        "finished_at": now,
        "duration_s": 0.0,
        "exit_code": None,
        "image": "",
        "image_id": None,
        "container_id": None,
        "notebook_sha256": job.notebook_sha256,
        "parameters": dict(job.parameters),
        "limits": {},
        "limits_source": "",
        "sdc_params": {},
        "skipped": [],
        "executed_notebook": None,
        "outputs": [],
        "sdc_problems": [],
    }


# --------------------------------------------------------------------------------------------
# Durable writes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes, mode: int = 0o640) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.parent / f".tmp-{secrets.token_hex(8)}-{path.name}"
    try:
        _write_new(tmp, data)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _read_capped(path: Path, cap: int, what: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ProtocolError(f"{what} is not a regular file")
        if info.st_size > cap:
            raise ProtocolError(f"{what} is larger than {cap} bytes")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(cap + 1)
        if len(data) > cap:
            raise ProtocolError(f"{what} is larger than {cap} bytes")
        return data
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# The folder


class JobsFolder:
    """The jobs folder shared by the egress service and the runner (module documentation).

    The folders are created group-writable with the set-group-id bit (``2770``): the service
    (uid 1001, in group 1000) and the runner (uid 1000) both read and write them; nothing else
    on the host needs to.
    """

    SUBFOLDERS = JOBS_SUBFOLDERS

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.inbox = self.root / "inbox"
        self.running = self.root / "running"
        self.results = self.root / "results"
        self.work = self.root / "work"

    def prepare(self, *, uid: int | None = None, gid: int | None = None) -> None:
        """Create the folders (mode 2770; owned by ``uid:gid`` when given and allowed)."""
        prepare_jobs_folder(self.root, uid=uid, gid=gid)

    # -- the service's side -------------------------------------------------------------------

    def submit(self, job: Job, notebook: bytes) -> None:
        """Queue ``job`` with ``notebook``'s bytes (checked against ``job.notebook_sha256``)."""
        if _sha256(notebook) != job.notebook_sha256:
            raise ProtocolError("the notebook's bytes don't match the job's notebook_sha256")
        if len(notebook) > MAX_NOTEBOOK_BYTES:
            raise ProtocolError(f"the notebook is larger than {MAX_NOTEBOOK_BYTES} bytes")
        _atomic_write(self.inbox / f"{job.job_id}.ipynb", notebook)
        _atomic_write(
            self.inbox / f"{job.job_id}.job.json",
            json.dumps(job.as_json(), sort_keys=True).encode("utf-8"),
        )

    def location(self, job_id: str) -> Location | None:
        """Where the job is now (``None``: nowhere; checked in the order jobs move)."""
        if (self.inbox / f"{job_id}.job.json").exists():
            return "queued"
        if (self.running / f"{job_id}.job.json").exists():
            return "running"
        if (self.results / job_id / "result.json").exists():
            return "finished"
        return None

    def finished(self) -> list[str]:
        """Ids of the finished results waiting to be taken in, oldest first."""
        ids = []
        for entry in os.scandir(self.results):
            if _JOB_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                ids.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
        return [name for _, name in sorted(ids)]

    def read_result(self, job_id: str) -> JobResult:
        """The finished job, every byte checked; :class:`ProtocolError` if anything is off."""
        if not _JOB_ID.fullmatch(job_id):
            raise ProtocolError("bad job id")
        folder = self.results / job_id
        try:
            raw = _read_capped(folder / "result.json", MAX_RESULT_JSON_BYTES, "result.json")
            report = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError) as err:
            raise ProtocolError(f"result.json can't be read: {err}") from None
        _check(isinstance(report, dict), "result.json must be a JSON object")
        _check(report.get("schema") == RESULT_SCHEMA, f"result schema must be {RESULT_SCHEMA}")
        job = Job.from_json(report.get("job"))
        _check(job.job_id == job_id, "result.json is about another job")
        _check(report.get("status") in STATUSES, "result status is not one of " + str(STATUSES))
        _check(isinstance(report.get("reason"), str), "result reason must be text")
        _check(isinstance(report.get("log"), str), "result log must be text")
        outputs_list = report.get("outputs")
        _check(isinstance(outputs_list, list), "result outputs must be a list")
        assert isinstance(outputs_list, list)
        _check(len(outputs_list) <= MAX_OUTPUTS, f"more than {MAX_OUTPUTS} outputs")
        outputs: dict[str, bytes] = {}
        for entry in outputs_list:
            _check(isinstance(entry, dict), "an output entry must be an object")
            path = _relative_path(entry.get("path"), "output path")
            digest = entry.get("sha256")
            _check(isinstance(digest, str) and bool(_HEX64.fullmatch(digest)), "bad output sha")
            _check(path not in outputs, f"output {path!r} listed twice")
            outputs[path] = self._blob(folder, digest, f"output {path!r}")
        executed = None
        meta = report.get("executed_notebook")
        if meta is not None:
            _check(isinstance(meta, dict), "executed_notebook must be an object or null")
            digest = meta.get("sha256")
            _check(isinstance(digest, str) and bool(_HEX64.fullmatch(digest)), "bad executed sha")
            executed = self._blob(folder, digest, "the executed notebook")
        return JobResult(job=job, report=report, executed_notebook=executed, outputs=outputs)

    @staticmethod
    def _blob(folder: Path, digest: str, what: str) -> bytes:
        try:
            data = _read_capped(folder / "blobs" / digest, MAX_BLOB_BYTES, what)
        except FileNotFoundError:
            raise ProtocolError(f"{what}: its bytes are missing from the result") from None
        except OSError as err:
            raise ProtocolError(f"{what} can't be read: {err}") from None
        _check(_sha256(data) == digest, f"{what}: its bytes don't match its sha256")
        return data

    def discard_result(self, job_id: str) -> None:
        """Remove a result the service has taken in (or refused)."""
        if _JOB_ID.fullmatch(job_id):
            shutil.rmtree(self.results / job_id, ignore_errors=True)

    # -- the runner's side --------------------------------------------------------------------

    def _running_files(self, job_id: str) -> tuple[Path, Path, Path]:
        base = self.running / job_id
        return (
            base.with_name(f"{job_id}.job.json"),
            base.with_name(f"{job_id}.ipynb"),
            base.with_name(f"{job_id}.attempts"),
        )

    def claim_next(self) -> str | None:
        """Move the oldest ready job to ``running/``; its id (``None`` if none is waiting).

        A job whose files don't follow the protocol is claimed too; :meth:`load_claimed` then
        raises and the runner records it as refused.
        """
        ready = []
        for entry in os.scandir(self.inbox):
            name = entry.name
            if name.endswith(".job.json") and _JOB_ID.fullmatch(name[: -len(".job.json")]):
                ready.append((entry.stat(follow_symlinks=False).st_mtime, name[:32]))
        for _, job_id in sorted(ready):
            job_file, notebook, attempts = self._running_files(job_id)
            try:
                os.rename(self.inbox / f"{job_id}.ipynb", notebook)
            except FileNotFoundError:
                pass  # no notebook: load_claimed says so
            try:
                os.rename(self.inbox / f"{job_id}.job.json", job_file)
            except FileNotFoundError:
                continue  # another runner took it
            _atomic_write(attempts, b"0\n")
            _fsync_dir(self.inbox)
            return job_id
        return None

    def claimed(self) -> list[str]:
        """Ids of jobs in ``running/`` (after a runner crash: the ones to recover)."""
        return sorted(
            e.name[:32]
            for e in os.scandir(self.running)
            if e.name.endswith(".job.json") and _JOB_ID.fullmatch(e.name[:32])
        )

    def start_attempt(self, job_id: str) -> int:
        """Count one more start of a claimed job; the count (1 for the first start)."""
        _job, _nb, attempts = self._running_files(job_id)
        try:
            count = int(attempts.read_text().strip() or 0)
        except (OSError, ValueError):
            count = 0
        count += 1
        attempts.unlink(missing_ok=True)
        _atomic_write(attempts, f"{count}\n".encode())
        return count

    def load_claimed(self, job_id: str) -> tuple[Job, bytes]:
        """The claimed job and its notebook (sha256 checked); :class:`ProtocolError` if bad."""
        job_file, notebook_file, _attempts = self._running_files(job_id)
        try:
            job = Job.from_json(json.loads(_read_capped(job_file, MAX_JOB_BYTES, "the job")))
        except (OSError, ValueError) as err:
            if isinstance(err, ProtocolError):
                raise
            raise ProtocolError(f"the job file can't be read: {err}") from None
        _check(job.job_id == job_id, "the job file names another job")
        try:
            notebook = _read_capped(notebook_file, MAX_NOTEBOOK_BYTES, "the notebook")
        except FileNotFoundError:
            raise ProtocolError("the job's notebook is missing") from None
        except OSError as err:
            raise ProtocolError(f"the job's notebook can't be read: {err}") from None
        _check(_sha256(notebook) == job.notebook_sha256, "the notebook doesn't match its sha256")
        return job, notebook

    def unreadable_job(self, job_id: str) -> Job | None:
        """The claimed job if its file parses (for a failure report), else ``None``."""
        job_file, _nb, _attempts = self._running_files(job_id)
        try:
            return Job.from_json(json.loads(_read_capped(job_file, MAX_JOB_BYTES, "the job")))
        except (OSError, ValueError):
            return None

    def finish(
        self,
        job_id: str,
        report: Mapping[str, Any],
        *,
        executed_notebook: bytes | None = None,
        outputs: Mapping[str, bytes] | None = None,
    ) -> None:
        """Publish the result of a claimed job in one rename, then drop its ``running/`` files.

        ``report`` is :func:`result_report`'s or :func:`failure_report`'s; the blobs of
        ``executed_notebook`` and ``outputs`` are written under ``blobs/<sha256>``.
        """
        final = self.results / job_id
        if final.exists():  # finished before a crash that came before cleaning up
            self.drop_claimed(job_id)
            return
        tmp = self.results / f".tmp-{job_id}-{secrets.token_hex(4)}"
        try:
            for folder in (tmp, tmp / "blobs"):
                folder.mkdir(mode=0o770)
                os.chmod(folder, 0o2770)  # whatever the umask: the service deletes it
            blobs = dict.fromkeys([executed_notebook] if executed_notebook is not None else [])
            for data in (outputs or {}).values():
                blobs[data] = None
            written = set()
            for data in blobs:
                digest = _sha256(data)
                if digest not in written:
                    _write_new(tmp / "blobs" / digest, data)
                    written.add(digest)
            _write_new(tmp / "result.json", json.dumps(report, sort_keys=True).encode("utf-8"))
            _fsync_dir(tmp / "blobs")
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.results)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.drop_claimed(job_id)

    def drop_claimed(self, job_id: str) -> None:
        for path in self._running_files(job_id):
            path.unlink(missing_ok=True)

    def remove_leftovers(self) -> int:
        """Remove half-written temporary files and result folders (after a crash)."""
        count = 0
        for folder in (self.inbox, self.running, self.results):
            for entry in os.scandir(folder):
                if entry.name.startswith(".tmp-"):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                    count += 1
        return count
