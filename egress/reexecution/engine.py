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

The request, the result, the comparison and the record are in :mod:`egress.reexecution.model`;
the checks on a run's inputs, its scratch folder and the collection of its outputs in
:mod:`egress.reexecution.scratch`; this module holds the container and the run.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import yaml
from docker.types import LogConfig, Mount

from egress.reexecution.model import (
    DATA,
    ENV_SDC_PARAMS,
    ENV_TRUSTED_RUN,
    EXECUTED_NAME,
    HOME,
    INPUT_NAME,
    MAX_LOG_BYTES,
    NOTEBOOK_GID,
    NOTEBOOK_UID,
    OUTPUTS,
    OUTPUTS_NAME,
    PARAMS_NAME,
    RUN_LABEL,
    SDC_PARAMS_NAME,
    CollectionLimits,
    ReexecutionRequest,
    ReexecutionResult,
    Refused,
    Status,
    forced_sdc_params,
)
from egress.reexecution.scratch import (
    check_extra_files,
    check_limits,
    clean_notebook,
    collect_outputs,
    data_group,
    make_scratch,
    parameters_yaml,
    read_regular,
    remove_tree,
)
from havre.enclave.config import Project
from havre.enclave.hardening import hardened_host_config
from havre.enclave.hashing import sha256_hex

_LOG_DRIVER = LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "1"})


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
    collection_limits: CollectionLimits = CollectionLimits(),  # noqa: B008 - frozen
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
        check_limits(limits)
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
        extra = check_extra_files(request.extra_files)
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
            scratch = make_scratch(
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
            group_add=data_group(data_path),
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
            executed = read_regular(
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
            remove_tree(scratch)
