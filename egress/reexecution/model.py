"""What a trusted re-execution is asked and what it gives back: the request, the limits,
the result, the comparison with the submitted files and the record the service signs, with the
run folder's names and caps. No Docker here: the egress service reads and records results with
these alone; :mod:`egress.reexecution.engine` runs them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from egress.audit.chain import canonical_json, format_time
from havre.enclave.config import Project
from havre.enclave.hashing import sha256_hex
from havre.sdc.params import SDCParams, SDCParamsError

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
#: What the runner sets in the container so that the safe-analysis library forces the
#: project's SDC parameters (``havre.safe.session``: ``params=`` may be stricter, not weaker).
ENV_TRUSTED_RUN = "HAVRE_TRUSTED_REEXECUTION"
ENV_SDC_PARAMS = "HAVRE_SDC_PARAMS"

MAX_NOTEBOOK_BYTES = 64 * 1024**2
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_EXTRA_FILES_BYTES = 64 * 1024**2
MAX_LOG_BYTES = 64 * 1024
#: Docker keeps at most this much of the container's stdout/stderr (json-file driver).

Status = Literal["completed", "failed", "timeout", "refused"]
_HEX64 = re.compile(r"[0-9a-f]{64}")


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
