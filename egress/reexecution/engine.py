"""Trusted re-execution: the egress service re-runs a notebook itself, with no network at all.

When an output checker asks for it, the service runs the researcher's notebook again, in a fresh
container of the project's image, against the project's data, and collects what that run wrote.
The outputs then carry the service's word, not the researcher's: they are the bytes this code
produced on this data, in a container nobody else touched. Their disclosure-control (SDC)
verdicts don't, entirely: the run's ``results.json`` is written inside the notebook's own
process, where the notebook's code can influence it, so the service recomputes what it can
(``egress.reexecution.service.recompute_sdc``). ``docs/checker-reexecution.md`` says what a
re-execution proves and what it doesn't.

One run (:func:`run_notebook`):

1. a scratch folder ``<workdir_root>/reexec-XXXXXXXX`` (0700, owned by the notebook user, uid
   1000) with a clean copy of the notebook (``input.ipynb``, outputs cleared), the parameters
   (``params.yaml``), any ``extra_files`` and an empty ``outputs/``;
2. a container of the project's image (on the enclave's allow-list, present on this host: it is
   never pulled) with ``network_mode="none"`` and the same hardening as every notebook
   container: ``ProjectSpawner.hardened_host_config`` itself is applied (no capabilities,
   no-new-privileges, read-only root, tmpfs ``/tmp``, pids/memory/CPU limits, uid 1000, no
   Docker socket), with the project's data read-only at ``/data`` and the scratch folder as
   ``HOME`` (``/home/researcher``); it runs ``papermill input.ipynb executed.ipynb -f
   params.yaml --cwd /home/researcher --kernel python3 --language python`` (an argument list,
   no shell);
3. a wait of at most ``timeout_seconds``; past it the container is killed ("timeout");
4. ``executed.ipynb`` and every regular file under ``outputs/`` are read (symbolic links and
   other special files are skipped and listed, never followed; sizes and the number of files are
   capped); the container and the scratch folder are removed, whatever happened.

What the checker sees: the web layer renders ``ReexecutionResult.executed_notebook`` with the
render module (``egress.files.render.render_for_checker("notebook", data, name=...)``); this module
renders nothing. :func:`compare_outputs` sets the trusted outputs against the sha256 digests of
the files the researcher submitted, and :func:`trusted_record` is the machine-readable record the
service signs::

    signed = egress.audit.signing.sign_record(trusted_record(result, meta), private_key)

SDC parameters: the project's (``ReexecutionRequest.sdc_params``, raised to ACRO's defaults
where weaker: :func:`forced_sdc_params`) are written to ``.havre-sdc-params.json`` in the
scratch folder, bind-mounted read-only over itself, and named by ``HAVRE_SDC_PARAMS``, with
``HAVRE_TRUSTED_REEXECUTION=1``: the safe-analysis library then sets every rule a notebook's
``params=`` relaxes back to the project's value (stricter values are kept).

SDC metadata: a notebook that uses Havre's safe-analysis library writes
``outputs/<session>/results.json`` (ACRO-style verdicts); it is collected like any other output.
Those verdicts were computed by the library inside the re-executed notebook's process: the
notebook's code could have changed them, so they are shown as the run's, next to the verdict
the service recomputes itself where it can, never as the service's.

The runner drives the Docker engine (whoever calls it can start containers: keep it in the
egress service's trusted side) and bind-mounts ``workdir_root`` sub-folders, so ``workdir_root``
must be a path the Docker engine sees under the same name (a host path). ``run_notebook`` blocks
for the whole run: call it from a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import nbformat
import requests.exceptions
import yaml
from docker.types import LogConfig, Mount

from egress.audit.chain import canonical_json, format_time
from havre.enclave.config import Project
from havre.enclave.hardening import hardened_host_config
from havre.enclave.hashing import sha256_hex
from havre.sdc.params import SDCParams, SDCParamsError

__all__ = [
    "RECORD_SCHEMA",
    "CollectionLimits",
    "Comparison",
    "Refused",
    "ReexecutionRequest",
    "ReexecutionResult",
    "collect_outputs",
    "compare_outputs",
    "forced_sdc_params",
    "notebook_container_config",
    "run_notebook",
    "trusted_record",
]

RECORD_SCHEMA = "havre.reexecution-record/1"

#: Label on every re-execution container (value: the run's id), to find leftovers.
RUN_LABEL = "havre.reexecution"
#: Where things are inside the container (the notebook containers' layout).
HOME = "/home/researcher"
DATA = "/data"
OUTPUTS = f"{HOME}/outputs"
NOTEBOOK_UID = 1000
NOTEBOOK_GID = 1000

INPUT_NAME = "input.ipynb"
EXECUTED_NAME = "executed.ipynb"
PARAMS_NAME = "params.yaml"
OUTPUTS_NAME = "outputs"
#: The project's SDC parameters, in the scratch folder and bind-mounted read-only over itself.
SDC_PARAMS_NAME = ".havre-sdc-params.json"
_RESERVED = frozenset({INPUT_NAME, EXECUTED_NAME, PARAMS_NAME, OUTPUTS_NAME, SDC_PARAMS_NAME})
#: What the runner sets in the container so that the safe-analysis library forces the
#: project's SDC parameters (``havre.safe.session``: ``params=`` may be stricter, not weaker).
ENV_TRUSTED_RUN = "HAVRE_TRUSTED_REEXECUTION"
ENV_SDC_PARAMS = "HAVRE_SDC_PARAMS"

MAX_NOTEBOOK_BYTES = 64 * 1024**2
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_EXTRA_FILES_BYTES = 64 * 1024**2
MAX_LOG_BYTES = 64 * 1024
#: Docker keeps at most this much of the container's stdout/stderr (json-file driver).
_LOG_DRIVER = LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "1"})

Status = Literal["completed", "failed", "timeout", "refused"]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PYTHON_KEYWORDS = frozenset(
    "False None True and as assert async await break class continue def del elif else except "
    "finally for from global if import in is lambda nonlocal not or pass raise return try while "
    "with yield".split()
)


# --------------------------------------------------------------------------------------------
# Requests and results


@dataclass(frozen=True)
class ReexecutionRequest:
    """What to run. ``cpu``/``memory_bytes``/``pids`` default to the project's limits.

    ``parameters`` are papermill parameters (names are Python identifiers; values JSON-like:
    str, int, finite float, bool, None, and lists/dicts of those). ``extra_files`` are written
    next to the notebook (relative paths such as ``"helpers.py"``; not the reserved names
    ``input.ipynb``, ``executed.ipynb``, ``params.yaml``, ``outputs``).
    """

    notebook: bytes
    parameters: Mapping[str, Any]
    project: Project
    image: str
    timeout_seconds: int = 600
    cpu: float | None = None
    memory_bytes: int | None = None
    pids: int | None = None
    extra_files: Mapping[str, bytes] = field(default_factory=dict)
    #: more labels for the run's container (the runner adds ``havre.enclave``, so that
    #: ``havre down`` removes a run still going)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: the project's SDC parameters (Havre's or ACRO's names), forced in the run: see
    #: :func:`forced_sdc_params` (never weaker than ACRO's defaults)
    sdc_params: Mapping[str, Any] | None = None

    @property
    def limits(self) -> dict[str, Any]:
        """The limits the run gets: the request's, else the project's."""
        project_limits = self.project.limits
        return {
            "cpu": float(project_limits.cpu if self.cpu is None else self.cpu),
            "memory_bytes": int(
                project_limits.memory_bytes if self.memory_bytes is None else self.memory_bytes
            ),
            "pids": int(project_limits.pids if self.pids is None else self.pids),
            "timeout_seconds": int(self.timeout_seconds),
        }


@dataclass(frozen=True)
class CollectionLimits:
    """Caps on what is read back from a run (over a cap: status "refused", no outputs)."""

    max_files: int = 256
    max_entries: int = 4096
    max_file_bytes: int = 64 * 1024**2
    max_total_bytes: int = 256 * 1024**2
    max_executed_bytes: int = 64 * 1024**2


@dataclass(frozen=True)
class ReexecutionResult:
    """What a run produced; see :func:`run_notebook` for the meaning of ``status``.

    ``outputs`` maps paths relative to the outputs folder (``"table.csv"``,
    ``"session-1/results.json"``) to their bytes. ``skipped`` lists what was found there and
    not collected (symbolic links, special files, names that aren't UTF-8), each with why.
    ``reason`` explains a status other than "completed". Times are timezone-aware (UTC).
    """

    status: Status
    executed_notebook: bytes | None
    outputs: dict[str, bytes]
    log: str
    started_at: datetime
    finished_at: datetime
    duration_s: float
    exit_code: int | None
    image_id: str | None
    container_id: str | None
    reason: str = ""
    skipped: tuple[str, ...] = ()
    image: str = ""
    notebook_sha256: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    #: the SDC parameters forced in the run (Havre's names); empty if nothing ran
    sdc_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """One path of :func:`compare_outputs`."""

    path: str
    submitted_sha256: str | None
    trusted_sha256: str | None
    status: Literal["identical", "differs", "only-submitted", "only-trusted"]


class Refused(Exception):
    """A request or a run's outputs the service won't vouch for (status "refused")."""


def forced_sdc_params(requested: Mapping[str, Any] | None) -> SDCParams:
    """The SDC parameters a trusted run forces: ``requested`` (the project's, as the egress
    service sends them), raised rule by rule to ACRO's defaults wherever it is less strict.

    The floor means a job file can make a run stricter, never laxer. :class:`Refused` (with
    the parameter named) for parameters that don't parse.
    """
    floor = SDCParams()
    if requested is None:
        return floor
    if not isinstance(requested, Mapping):
        raise Refused("the SDC parameters must be a mapping")
    try:
        params = SDCParams.from_mapping(requested, source="sdc_params")
    except SDCParamsError as err:
        raise Refused(f"bad SDC parameters: {'; '.join(err.problems)}") from None
    weaker = params.weaker_than(floor)
    return dataclasses.replace(params, **{n: getattr(floor, n) for n in weaker})


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# The container


def notebook_container_config(
    project: Project, *, cpu: float, memory_bytes: int, pids: int
) -> dict[str, Any]:
    """docker-py host-config arguments of a re-execution container.

    The notebook containers' hardening is not restated here: the one the spawn broker applies
    (:func:`havre.enclave.hardening.hardened_host_config`) is, so whatever it gains,
    re-execution gains too. Then the network becomes ``"none"`` and the limits the request's.
    """
    config = hardened_host_config(project, network="none")
    config.update(
        network_mode="none",
        pids_limit=int(pids),
        mem_limit=int(memory_bytes),
        memswap_limit=int(memory_bytes),  # no swap
        cpu_period=100_000,  # as DockerSpawner sets cpu_limit
        cpu_quota=int(float(cpu) * 100_000),
        log_config=_LOG_DRIVER,
    )
    return config


def _papermill_command() -> list[str]:
    return [
        "papermill",
        INPUT_NAME,
        EXECUTED_NAME,
        "-f",
        PARAMS_NAME,
        "--cwd",
        HOME,
        "--kernel",
        "python3",
        "--language",
        "python",
        "--no-progress-bar",
    ]


# --------------------------------------------------------------------------------------------
# Checking a request


def _check_value(value: Any, where: str, depth: int = 0) -> None:
    if depth > 16:
        raise Refused(f"parameter {where} is nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused(f"parameter {where} is not a finite number")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused(f"parameter {where} has a key that isn't a string")
            _check_value(item, f"{where}[{key!r}]", depth + 1)
        return
    raise Refused(f"parameter {where} has an unsupported type {type(value).__name__}")


def parameters_yaml(parameters: Mapping[str, Any]) -> bytes:
    """The ``-f`` file papermill reads; refuses names that aren't identifiers (no injection).

    papermill writes ``name = <value>`` into the injected cell, so a name must be a plain Python
    identifier; values are written as YAML by PyYAML and read back to check they survive the
    trip unchanged (papermill reads the file with a safe loader).
    """
    if not isinstance(parameters, Mapping):
        raise Refused("parameters must be a mapping")
    plain: dict[str, Any] = {}
    for name, value in parameters.items():
        if (
            not isinstance(name, str)
            or not _IDENTIFIER.fullmatch(name)
            or name in _PYTHON_KEYWORDS
            or name.startswith("__")
        ):
            raise Refused(f"parameter name {name!r} is not a plain Python identifier")
        _check_value(value, name)
        plain[name] = json.loads(json.dumps(value))  # tuples -> lists, a private copy
    text = yaml.safe_dump(plain, sort_keys=True, allow_unicode=False, default_flow_style=False)
    if (yaml.safe_load(text) or {}) != plain:
        raise Refused("parameters don't survive a YAML round trip")
    data = text.encode("ascii")
    if len(data) > MAX_PARAMETERS_BYTES:
        raise Refused(f"parameters are larger than {MAX_PARAMETERS_BYTES} bytes")
    return data


def clean_notebook(data: bytes) -> bytes:
    """The notebook with outputs, execution counts and widget state cleared (nbformat 4)."""
    if not isinstance(data, bytes | bytearray):
        raise Refused("the notebook must be bytes")
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise Refused(f"the notebook is larger than {MAX_NOTEBOOK_BYTES} bytes")
    try:
        nb = nbformat.reads(bytes(data).decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # any parse or schema problem
        raise Refused(f"not a valid notebook: {type(err).__name__}: {err}"[:500]) from None
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.metadata.pop("widgets", None)
    return nbformat.writes(nb).encode("utf-8")


def _check_extra_files(extra_files: Mapping[str, bytes]) -> dict[str, bytes]:
    checked: dict[str, bytes] = {}
    total = 0
    for name, content in extra_files.items():
        parts = name.split("/") if isinstance(name, str) else []
        if (
            not parts
            or len(parts) > 4
            or not all(_NAME_PART.fullmatch(p) and p not in (".", "..") for p in parts)
            or parts[0] in _RESERVED
        ):
            raise Refused(f"extra file name {name!r} is not allowed")
        if not isinstance(content, bytes | bytearray):
            raise Refused(f"extra file {name!r} must be bytes")
        total += len(content)
        checked[name] = bytes(content)
    if total > MAX_EXTRA_FILES_BYTES:
        raise Refused(f"extra files are larger than {MAX_EXTRA_FILES_BYTES} bytes together")
    prefixes = {"/".join(n.split("/")[:i]) for n in checked for i in range(1, n.count("/") + 1)}
    if prefixes & set(checked):
        raise Refused("an extra file's name is also another extra file's folder")
    return checked


def _check_limits(limits: Mapping[str, Any]) -> None:
    if not 0 < limits["cpu"] <= 64:
        raise Refused("cpu must be in (0, 64]")
    if limits["memory_bytes"] < 64 * 1024**2:
        raise Refused("memory_bytes must be at least 64 MiB")
    if not 16 <= limits["pids"] <= 65536:
        raise Refused("pids must be in [16, 65536]")
    if not 1 <= limits["timeout_seconds"] <= 24 * 3600:
        raise Refused("timeout_seconds must be in [1, 86400]")


# --------------------------------------------------------------------------------------------
# The scratch folder


def _write_owned(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        _chown_fd(fd)
    finally:
        os.close(fd)


def _data_group(data_path: Path) -> list[str]:
    """The project's gid (the group owning its data folder), unless it is root's."""
    gid = os.stat(data_path).st_gid
    return [str(gid)] if gid not in (0, NOTEBOOK_GID) else []


def _chown_fd(fd: int) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, NOTEBOOK_UID, NOTEBOOK_GID)


def _mkdir_owned(path: Path) -> None:
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o700)  # whatever the umask
        _chown_fd(fd)
    finally:
        os.close(fd)


def _make_scratch(
    workdir_root: Path,
    run_id: str,
    notebook: bytes,
    params: bytes,
    extra: Mapping[str, bytes],
    sdc_params: bytes = b"{}",
) -> Path:
    if os.geteuid() not in (0, NOTEBOOK_UID):
        raise Refused(
            f"the runner must run as root or as uid {NOTEBOOK_UID} to give the notebook user "
            "its scratch folder"
        )
    workdir_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = workdir_root / f"reexec-{run_id}"
    _mkdir_owned(scratch)
    _mkdir_owned(scratch / OUTPUTS_NAME)
    _write_owned(scratch / INPUT_NAME, notebook)
    _write_owned(scratch / PARAMS_NAME, params)
    _write_owned(scratch / SDC_PARAMS_NAME, sdc_params, mode=0o444)
    for name, content in extra.items():
        parent = scratch
        for part in name.split("/")[:-1]:
            parent = parent / part
            if not parent.exists():
                _mkdir_owned(parent)
        _write_owned(scratch / name, content)
    return scratch


def _remove_tree(path: Path) -> None:
    """Remove the scratch folder, even where the notebook took permissions away."""

    def retry(func, failed_path, _exc_info) -> None:  # noqa: ANN001
        parent = os.path.dirname(failed_path)
        for target in (parent, failed_path):
            try:
                if not os.path.islink(target):
                    os.chmod(target, 0o700)
            except OSError:
                pass
        func(failed_path)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)


def _read_regular(name: str, cap: int, what: str, dir_fd: int | None = None) -> bytes:
    """Read a regular file, never through a symbolic link; refuse it over ``cap`` bytes.

    ``name`` is relative to ``dir_fd`` when given. A link raises ``OSError`` (``ELOOP``).
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{what} is not a regular file")
        if info.st_size > cap:
            raise Refused(f"{what} is larger than {cap} bytes")
        chunks = []
        remaining = cap + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1024 * 1024))):
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:
            raise Refused(f"{what} is larger than {cap} bytes")
        return data
    finally:
        os.close(fd)


def _open_folder(name: str | os.PathLike[str], what: str, dir_fd: int | None = None) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as err:
        raise Refused(
            f"{what} is not a folder (a link or other file put in its place?): {err}"
        ) from None


def collect_outputs(
    outputs_dir: Path, limits: CollectionLimits = CollectionLimits()
) -> tuple[dict[str, bytes], list[str]]:
    """Every regular file under ``outputs_dir`` by relative path, and what was skipped.

    Walked with folder descriptors opened ``O_NOFOLLOW``: links are never followed (not
    ``outputs_dir`` itself, not a folder in it, not a file); FIFOs, sockets and devices are
    skipped; so are names that aren't UTF-8. :class:`Refused` when ``outputs_dir`` isn't a real
    folder, or over a :class:`CollectionLimits` cap.
    """
    found: dict[str, bytes] = {}
    skipped: list[str] = []
    total = 0
    seen = 0
    stack = [(_open_folder(outputs_dir, "outputs/"), "")]
    try:
        while stack:
            folder_fd, prefix = stack.pop()
            try:
                with os.scandir(folder_fd) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
                for entry in entries:
                    seen += 1
                    if seen > limits.max_entries:
                        raise Refused(
                            f"outputs/ holds more than {limits.max_entries} entries "
                            "(files and folders)"
                        )
                    rel = f"{prefix}{entry.name}"
                    try:
                        rel.encode("utf-8")
                    except UnicodeEncodeError:
                        shown = rel.encode("utf-8", "surrogateescape")
                        skipped.append(f"{shown!r}: name not UTF-8")
                        continue
                    info = os.stat(entry.name, dir_fd=folder_fd, follow_symlinks=False)
                    if stat.S_ISLNK(info.st_mode):
                        skipped.append(f"{rel}: symbolic link (not followed)")
                    elif stat.S_ISDIR(info.st_mode):
                        sub = _open_folder(entry.name, f"outputs/{rel}", dir_fd=folder_fd)
                        stack.append((sub, rel + "/"))
                    elif not stat.S_ISREG(info.st_mode):
                        skipped.append(f"{rel}: not a regular file")
                    else:
                        if len(found) >= limits.max_files:
                            raise Refused(
                                f"the notebook wrote more than {limits.max_files} files "
                                "into outputs/"
                            )
                        data = _read_regular(
                            entry.name, limits.max_file_bytes, f"outputs/{rel}", folder_fd
                        )
                        total += len(data)
                        if total > limits.max_total_bytes:
                            raise Refused(
                                f"the outputs are larger than {limits.max_total_bytes} bytes "
                                "together"
                            )
                        found[rel] = data
            finally:
                os.close(folder_fd)
    finally:
        for folder_fd, _prefix in stack:
            os.close(folder_fd)
    return dict(sorted(found.items())), skipped


# --------------------------------------------------------------------------------------------
# Running


def _tail(raw: bytes) -> str:
    if len(raw) > MAX_LOG_BYTES:
        raw = (
            b"[... log cut: only the last %d bytes are kept ...]\n" % MAX_LOG_BYTES
            + raw[-MAX_LOG_BYTES:]
        )
    return raw.decode("utf-8", errors="replace")


def _container_log(container: Any) -> str:
    try:
        return _tail(container.logs(stdout=True, stderr=True, tail=2000))
    except docker.errors.APIError as err:
        return f"[log unavailable: {err}]"


def run_notebook(
    client: docker.DockerClient,
    request: ReexecutionRequest,
    *,
    workdir_root: Path,
    allowed_images: Collection[str],
    collection_limits: CollectionLimits = CollectionLimits(),
) -> ReexecutionResult:
    """Re-run ``request``'s notebook in a fresh network-less container (see the module doc).

    ``status``:

    - ``"completed"``: papermill exited 0; ``executed_notebook`` and ``outputs`` are the run's;
    - ``"failed"``: papermill exited non-zero (a cell raised: the executed notebook holds the
      traceback; or the kernel died, e.g. out of memory); ``log`` has papermill's output;
    - ``"timeout"``: still running after ``timeout_seconds`` (counted from the container's
      start, papermill's start-up included); the container was killed; what the run had saved
      so far is returned;
    - ``"refused"``: nothing was run (the image isn't the project's, isn't on
      ``allowed_images`` or isn't on this host; a bad notebook, parameter or file name), or
      the run's outputs broke a :class:`CollectionLimits` cap (no outputs are returned).

    Never raises for what a notebook does; Docker engine errors (engine down) propagate, after
    the container and the scratch folder are removed.
    """
    started_at = _now()
    t0 = time.monotonic()
    run_id = secrets.token_hex(8)
    base: dict[str, Any] = {
        "image": request.image,
        "notebook_sha256": sha256_hex(bytes(request.notebook))
        if isinstance(request.notebook, bytes | bytearray)
        else "",
        "parameters": {},
        "limits": {},
        "sdc_params": {},
    }

    def refused(why: str, **extra: Any) -> ReexecutionResult:
        now = _now()
        fields = {
            "executed_notebook": None,
            "outputs": {},
            "log": "",
            "exit_code": None,
            "image_id": None,
            "container_id": None,
            **base,
            **extra,
        }
        return ReexecutionResult(
            status="refused",
            started_at=started_at,
            finished_at=now,
            duration_s=round(time.monotonic() - t0, 3),
            reason=why,
            **fields,
        )

    try:
        try:
            limits = base["limits"] = request.limits
        except (TypeError, ValueError) as err:
            raise Refused(f"bad limits: {err}") from None
        _check_limits(limits)
        if request.image != request.project.image:
            raise Refused(
                f"image {request.image!r} is not project {request.project.slug!r}'s image "
                f"({request.project.image!r})"
            )
        if request.image not in set(allowed_images):
            raise Refused(f"image {request.image!r} is not on the enclave's allow-list")
        params = parameters_yaml(request.parameters)
        sdc_params = forced_sdc_params(request.sdc_params)
        base["sdc_params"] = sdc_params.as_dict()
        base["parameters"] = yaml.safe_load(params) or {}
        notebook = clean_notebook(request.notebook)
        extra = _check_extra_files(request.extra_files)
        data_path = Path(request.project.data_path)
        if not data_path.is_dir():
            raise Refused(f"project data folder {data_path} does not exist")
        try:
            image = client.images.get(request.image)  # never pulled
        except docker.errors.ImageNotFound:
            raise Refused(
                f"image {request.image!r} is not on this host (Havre never pulls it)"
            ) from None
    except Refused as why:
        return refused(str(why))
    base["image_id"] = image.id

    scratch: Path | None = None
    container = None
    try:
        try:
            scratch = _make_scratch(
                Path(workdir_root),
                run_id,
                notebook,
                params,
                extra,
                json.dumps(base["sdc_params"], sort_keys=True).encode("ascii"),
            )
        except Refused as why:
            return refused(str(why))
        host_config = notebook_container_config(
            request.project,
            cpu=limits["cpu"],
            memory_bytes=limits["memory_bytes"],
            pids=limits["pids"],
        )
        container = client.containers.create(
            image.id,  # the id resolved above: the tag can't move under us
            _papermill_command(),
            name=f"havre-reexec-{request.project.slug}-{run_id}",
            user=f"{NOTEBOOK_UID}:{NOTEBOOK_GID}",
            # the data folder's group is the project's (havre/enclave/identities.py): the re-run
            # reads /data as the project's servers do, and nothing of another project
            group_add=_data_group(data_path),
            working_dir=HOME,
            hostname=request.project.slug,
            environment={
                "HOME": HOME,
                "HAVRE_PROJECT": request.project.slug,
                "HAVRE_PROJECT_TITLE": request.project.title,
                "HAVRE_OUTPUTS_DIR": OUTPUTS,
                "HAVRE_DATA_DIR": DATA,
                ENV_TRUSTED_RUN: "1",
                ENV_SDC_PARAMS: f"{HOME}/{SDC_PARAMS_NAME}",
            },
            labels={
                **request.labels,
                RUN_LABEL: run_id,
                "havre.project": request.project.slug,
                "havre.role": "reexecution",
            },
            mounts=[
                Mount(target=DATA, source=str(data_path), type="bind", read_only=True),
                Mount(target=HOME, source=str(scratch), type="bind", read_only=False),
                # over the file in HOME: the notebook (which owns HOME) can't rewrite it
                Mount(
                    target=f"{HOME}/{SDC_PARAMS_NAME}",
                    source=str(scratch / SDC_PARAMS_NAME),
                    type="bind",
                    read_only=True,
                ),
            ],
            network_disabled=True,
            detach=True,
            **host_config,
        )
        container.start()
        run_started = _now()
        run_t0 = time.monotonic()
        deadline = run_t0 + limits["timeout_seconds"]
        timed_out = False
        try:
            exit_code = int(container.wait(timeout=limits["timeout_seconds"])["StatusCode"])
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            if time.monotonic() < deadline - 1:  # not our timeout: the engine went away
                raise
            timed_out = True
            try:
                container.kill()
            except docker.errors.APIError:
                pass  # exited in the meantime
            exit_code = int(container.wait(timeout=30)["StatusCode"])
        finished_at = _now()
        duration = round(time.monotonic() - run_t0, 3)
        log = _container_log(container)
        container.reload()
        if container.attrs.get("State", {}).get("OOMKilled"):
            log += "\n[the container ran out of memory and was killed]"

        executed: bytes | None = None
        problems: list[str] = []
        try:
            executed = _read_regular(
                str(scratch / EXECUTED_NAME),
                collection_limits.max_executed_bytes,
                EXECUTED_NAME,
            )
        except FileNotFoundError:
            problems.append("papermill wrote no executed notebook")
        except Refused as why:
            problems.append(str(why))
        except OSError as err:  # a link put in its place (ELOOP), ...
            problems.append(f"{EXECUTED_NAME} can't be read safely: {err}")
        try:
            outputs, skipped = collect_outputs(scratch / OUTPUTS_NAME, collection_limits)
        except (Refused, OSError) as why:
            return ReexecutionResult(
                status="refused",
                executed_notebook=executed,
                outputs={},
                log=log,
                started_at=run_started,
                finished_at=finished_at,
                duration_s=duration,
                exit_code=exit_code,
                container_id=container.id,
                reason=str(why),
                **base,
            )
        if timed_out:
            status: Status = "timeout"
            problems.insert(0, f"still running after {limits['timeout_seconds']} s; killed")
        elif exit_code != 0:
            status = "failed"
            problems.insert(0, f"papermill exited with status {exit_code}")
        elif executed is None:
            status = "failed"
        else:
            status = "completed"
        return ReexecutionResult(
            status=status,
            executed_notebook=executed,
            outputs=outputs,
            log=log,
            started_at=run_started,
            finished_at=finished_at,
            duration_s=duration,
            exit_code=exit_code,
            container_id=container.id,
            reason="; ".join(problems) if status != "completed" else "",
            skipped=tuple(skipped),
            **base,
        )
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        if scratch is not None:
            _remove_tree(scratch)


# --------------------------------------------------------------------------------------------
# Comparing and recording


def compare_outputs(submitted: Mapping[str, str], trusted: Mapping[str, bytes]) -> list[Comparison]:
    """Set the researcher's files (path -> sha256 hex) against the trusted run's (path -> bytes).

    Paths on both sides are relative to the outputs folder. Sorted by path. Raises
    ``ValueError`` for a submitted digest that isn't 64 hex digits.
    """
    result = []
    for path in sorted(set(submitted) | set(trusted)):
        claimed = submitted.get(path)
        if claimed is not None:
            claimed = claimed.lower()
            if not _HEX64.fullmatch(claimed):
                raise ValueError(f"submitted sha256 of {path!r} is not 64 hex digits")
        actual = sha256_hex(trusted[path]) if path in trusted else None
        if claimed is None:
            status = "only-trusted"
        elif actual is None:
            status = "only-submitted"
        else:
            status = "identical" if claimed == actual else "differs"
        result.append(Comparison(path, claimed, actual, status))
    return result


def trusted_record(
    result: ReexecutionResult,
    request_meta: Mapping[str, Any],
    service_sdc: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The machine-readable record of a trusted run, ready for ``egress.audit.signing.sign_record``.

    ``request_meta`` is the service's context (plain JSON), e.g. ``{"request_id": ...,
    "project": ..., "requested_by": <checker>, "notebook_path": ...}``; it is kept as given
    under ``"request"``. Outputs are listed by path with sha256 and size, not their content.
    ``service_sdc`` (path -> verdict) are the verdicts the service recomputed itself from
    the run's outputs (``egress.reexecution.service.recompute_sdc``); each is recorded with its
    status and summary. Raises ``ValueError``/``TypeError`` if ``request_meta`` isn't plain JSON.
    """
    if not isinstance(request_meta, Mapping):
        raise TypeError("request_meta must be a mapping")
    from egress.audit.signing import runtime_versions

    executed = result.executed_notebook
    record = {
        "schema": RECORD_SCHEMA,
        "request": dict(request_meta),
        "status": result.status,
        "reason": result.reason,
        "image": {"reference": result.image, "id": result.image_id},
        "notebook": {"sha256": result.notebook_sha256},
        "parameters": result.parameters,
        "limits": result.limits,
        "sdc_params": result.sdc_params,
        "service_sdc": {
            path: {k: v.get(k) for k in ("status", "summary", "statistic")}
            for path, v in sorted((service_sdc or {}).items())
        },
        "network": "none",
        "executed_notebook": None
        if executed is None
        else {"sha256": sha256_hex(executed), "size": len(executed)},
        "outputs": [
            {"path": path, "sha256": sha256_hex(data), "size": len(data)}
            for path, data in sorted(result.outputs.items())
        ],
        "skipped": list(result.skipped),
        "started_at": format_time(result.started_at),
        "finished_at": format_time(result.finished_at),
        "duration_s": result.duration_s,
        "exit_code": result.exit_code,
        "container_id": result.container_id,
        "runner": runtime_versions(),
    }
    return json.loads(canonical_json(record))
