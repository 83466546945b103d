"""``havre-reexec-runner``: runs the trusted re-executions the egress service asks for.

The egress service faces the browsers and has no Docker socket; neither has this process: it
asks the **spawn broker** (:mod:`havre.broker`) for each re-execution container, with its own
secret, which lets it start, inspect, stop and remove re-execution runs and nothing else; the
broker builds the container from the enclave config (:func:`havre.broker.policy.reexec_spec`).
It has **no network at all** (``havre up`` starts it as ``<enclave>-runner`` with
``network_mode=none``, the egress image, uid 1000, read-only root, no capabilities). Its only
input is the jobs folder it shares with the service (:mod:`egress.reexecution.jobs`):

1. at start, it removes what a previous runner left behind: re-execution containers whose
   scratch folder is under this runner's ``work/`` folder, scratch folders, half-written
   temporary files; jobs still in ``running/`` are started again, unless they were already
   started :data:`~egress.reexecution.jobs.MAX_ATTEMPTS` times (then they are reported failed:
   a notebook that kills the runner doesn't get to kill it for ever);
2. it claims the oldest job in ``inbox/``, checks it (protocol, the notebook's sha256, the
   project exists in the enclave config), runs it with
   :func:`egress.reexecution.engine.run_notebook` using **only** the enclave config and its own
   options for what matters: the project's image (which must be on the enclave's allow-list),
   data folder and CPU/memory/process limits,
   and the time limit given to this runner (``--time-limit``); the SDC parameters the
   service sends with the job are forced in the run (``HAVRE_TRUSTED_REEXECUTION=1`` and a
   read-only ``HAVRE_SDC_PARAMS`` file), raised to ACRO's defaults wherever they are weaker,
   so a job can make the rules stricter, never laxer;
3. it publishes the result folder in one rename (the service then stores it, signs its record
   and writes the audit events), and takes the next job. One job at a time.

A job's file is data, never configuration: it can name a project of the enclave, a notebook (by
content, checked), papermill parameters (checked by ``egress.reexecution.engine``) and SDC
parameters that can only tighten ACRO's defaults, nothing else.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from egress.reexecution.jobs import (
    MAX_ATTEMPTS,
    JobsFolder,
    ProtocolError,
    failure_report,
    result_report,
)
from egress.reexecution.model import RUN_LABEL, ReexecutionRequest
from egress.reexecution.scratch import remove_tree
from havre.enclave.config import EnclaveConfig, load_enclave_config

log = logging.getLogger("egress.reexecution_runner")


class _BrokerRun:
    """One re-execution container, as :func:`egress.reexecution.engine.run_notebook` drives it,
    through the broker (kill and remove are the broker's ``reexec.stop`` and
    ``reexec.remove``)."""

    def __init__(self, broker: Any, project: str, run_id: str, container_id: str = "") -> None:
        self.broker = broker
        self.fields = {"project": project, "run_id": run_id}
        self.id = container_id
        self.name = f"run {run_id}"
        self.attrs: dict[str, Any] = {}

    def start(self) -> None:
        """The broker started it already (``reexec.start`` creates and starts)."""

    def wait(self, timeout: float | None = None) -> dict[str, int]:
        import requests.exceptions

        deadline = time.monotonic() + (timeout if timeout is not None else 10**9)
        while True:
            answer = self.broker.call("reexec.inspect", **self.fields)
            if answer.get("state") in ("exited", "dead", "absent"):
                return {"StatusCode": int(answer.get("exit_code") or 0)}
            if time.monotonic() >= deadline:
                raise requests.exceptions.ReadTimeout("the run is still going")
            time.sleep(0.2)

    def kill(self) -> None:
        self.broker.call("reexec.stop", **self.fields)

    def logs(self, **_ignored: Any) -> bytes:
        return self.broker.call("reexec.logs", **self.fields)["log"].encode()

    def reload(self) -> None:
        answer = self.broker.call("reexec.inspect", **self.fields)
        self.attrs = {"State": {"OOMKilled": bool(answer.get("oom_killed"))}}

    def remove(self, force: bool = True) -> None:
        self.broker.call("reexec.remove", **self.fields)


class BrokerEngine:
    """The part of a docker-py client :func:`egress.reexecution.engine.run_notebook` and
    :meth:`Runner.clean_up` use, over the spawn broker.

    What ``run_notebook`` would give Docker (image, mounts, hardening, user, command...) is not
    sent: the broker builds the same container itself from the enclave config
    (:func:`havre.broker.policy.reexec_spec`); only the project and the run's id travel,
    and the run's scratch folder is the one ``run_notebook`` made under the jobs folder's
    ``work/`` (``reexec-<run id>``).
    """

    def __init__(self, broker: Any, enclave: EnclaveConfig) -> None:
        self.broker = broker
        self.enclave = enclave
        self.images = self
        self.containers = self
        self._projects_by_image = {p.image: p.slug for p in enclave.projects.values()}

    # client.images
    def get(self, image: str) -> Any:
        """The image's id, as the broker resolves it for a project that runs it."""
        import docker.errors

        from havre.broker.client import BrokerError

        slug = self._projects_by_image.get(image)
        if slug is None:
            raise docker.errors.ImageNotFound(f"no project runs {image}")
        try:
            answer = self.broker.call("reexec.image", project=slug)
        except BrokerError as err:
            if err.status == 503:
                raise docker.errors.ImageNotFound(err.message) from None
            raise
        return type("Image", (), {"id": answer["image_id"]})()

    # client.containers
    def create(self, _image: str, _command: Any = None, **kwargs: Any) -> _BrokerRun:
        labels = kwargs.get("labels") or {}
        project, run_id = labels["havre.project"], labels[RUN_LABEL]
        answer = self.broker.call("reexec.start", project=project, run_id=run_id)
        return _BrokerRun(self.broker, project, run_id, answer.get("id", ""))

    def list(self, **_filters: Any) -> list[_BrokerRun]:
        """This enclave's re-execution runs (all of them are this runner's)."""
        from havre.broker.policy import reexec_scratch

        runs = []
        for run in self.broker.call("reexec.list")["runs"]:
            item = _BrokerRun(self.broker, run["project"], run["run_id"])
            scratch = reexec_scratch(self.enclave, run["run_id"])
            item.attrs = {"Mounts": [{"Source": str(scratch)}]}
            runs.append(item)
        return runs

    def close(self) -> None:
        """Nothing to close: each call is one connection."""


#: The jobs folder under the enclave's state folder (``havre up`` shares it with the service).
JOBS_SUBDIR = "reexec"


def jobs_folder(enclave: EnclaveConfig) -> JobsFolder:
    """The enclave's jobs folder (``<state_dir>/reexec``)."""
    return JobsFolder(Path(enclave.state_dir) / JOBS_SUBDIR)


class Runner:
    """One runner over one enclave's jobs folder (see the module documentation)."""

    def __init__(
        self,
        enclave: EnclaveConfig,
        folder: JobsFolder,
        client: Any,
        *,
        time_limit: int | None = None,
    ) -> None:
        if time_limit is None:  # the enclave config's review.reexecution_seconds
            time_limit = enclave.review.reexecution_seconds
        if not 1 <= int(time_limit) <= 24 * 3600:
            raise ValueError("the time limit must be 1 to 86400 seconds")
        self.enclave = enclave
        self.folder = folder
        self.client = client
        self.time_limit = int(time_limit)
        self.stopping = False

    # -- recovery ------------------------------------------------------------------------------

    def clean_up(self) -> None:
        """Remove leftover containers, scratch folders and temporary files of earlier runs."""
        work = str(self.folder.work.resolve()) + "/"
        for container in self.client.containers.list(
            all=True, filters={"label": [RUN_LABEL, f"havre.enclave={self.enclave.name}"]}
        ):
            mounts = container.attrs.get("Mounts") or []
            if any(str(m.get("Source", "")).startswith(work) for m in mounts):
                log.warning("removing leftover re-execution container %s", container.name)
                try:
                    container.remove(force=True)
                except Exception as err:  # already gone, being removed
                    log.info("could not remove %s: %s", container.name, err)
        for entry in os.scandir(self.folder.work):
            if entry.name.startswith("reexec-"):
                remove_tree(Path(entry.path))
        removed = self.folder.remove_leftovers()
        if removed:
            log.info("removed %d half-written temporary files", removed)

    def recover(self) -> int:
        """Run again (or report failed) the jobs a previous runner left in ``running/``."""
        claimed = self.folder.claimed()
        for job_id in claimed:
            log.warning("job %s was left running by a previous runner", job_id)
            self.process(job_id)
        return len(claimed)

    # -- one job -------------------------------------------------------------------------------

    def process(self, job_id: str) -> str:
        """Run one claimed job and publish its result; the result's status."""
        attempt = self.folder.start_attempt(job_id)
        job = self.folder.unreadable_job(job_id)
        if attempt > MAX_ATTEMPTS:
            if job is None:
                self.folder.drop_claimed(job_id)
                return "dropped"
            reason = (
                f"the runner stopped {attempt - 1} times while running this job; "
                "it is not run again"
            )
            self.folder.finish(job_id, failure_report(job, "failed", reason))
            log.error("job %s: %s", job_id, reason)
            return "failed"
        try:
            job, notebook = self.folder.load_claimed(job_id)
        except ProtocolError as err:
            if job is None:
                log.error("job %s dropped: its file can't be read (%s)", job_id, err)
                self.folder.drop_claimed(job_id)
                return "dropped"
            self.folder.finish(job_id, failure_report(job, "refused", str(err)))
            return "refused"
        project = self.enclave.projects.get(job.project)
        if project is None:
            reason = f"there is no project {job.project!r} in this enclave's config"
            self.folder.finish(job_id, failure_report(job, "refused", reason))
            return "refused"

        from egress.reexecution.engine import run_notebook

        request = ReexecutionRequest(
            notebook=notebook,
            parameters=dict(job.parameters),
            project=project,
            image=project.image,
            timeout_seconds=self.time_limit,
            labels={"havre.enclave": self.enclave.name},
            sdc_params=job.sdc_params,
        )
        log.info(
            "job %s: running %s of request %s (project %s, image %s, time limit %d s)",
            job_id,
            job.notebook_path,
            job.request_id,
            project.slug,
            project.image,
            self.time_limit,
        )
        try:
            result = run_notebook(
                self.client,
                request,
                workdir_root=self.folder.work,
                allowed_images=self.enclave.allowed_images,
            )
        except Exception as err:  # the Docker engine failed, not the notebook
            log.exception("job %s: the run failed", job_id)
            reason = f"the runner could not run the notebook: {type(err).__name__}: {err}"
            self.folder.finish(job_id, failure_report(job, "failed", reason[:2000]))
            return "failed"
        report = result_report(
            job, result, limits_source=f"enclave config; time limit {self.time_limit} s (runner)"
        )
        self.folder.finish(
            job_id, report, executed_notebook=result.executed_notebook, outputs=result.outputs
        )
        log.info("job %s: %s in %.1f s %s", job_id, result.status, result.duration_s, result.reason)
        return result.status

    # -- the loop ------------------------------------------------------------------------------

    def run_pending(self) -> int:
        """Claim and run every job waiting now; how many were run."""
        count = 0
        while not self.stopping and (job_id := self.folder.claim_next()) is not None:
            self.process(job_id)
            count += 1
        return count

    def serve(self, poll_seconds: float = 1.0) -> None:
        """Recover, then run jobs as they come until :attr:`stopping`."""
        self.clean_up()
        self.recover()
        while not self.stopping:
            if not self.run_pending():
                time.sleep(poll_seconds)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``havre-reexec-runner``."""
    parser = argparse.ArgumentParser(
        prog="havre-reexec-runner",
        description="Run the egress service's trusted re-execution jobs (through the spawn "
        "broker; started by `havre up` in a container with no network).",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"),
        help="the enclave config file (default: $HAVRE_CONFIG or /etc/havre/enclave.yaml)",
    )
    parser.add_argument(
        "--jobs",
        default="",
        help=f"the jobs folder shared with the egress service (default: <state_dir>/{JOBS_SUBDIR})",
    )
    parser.add_argument(
        "--time-limit",
        type=int,
        default=None,
        help="seconds a notebook may run before it is stopped (default: the enclave config's "
        "review.reexecution_seconds)",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often to look for new jobs"
    )
    parser.add_argument(
        "--once", action="store_true", help="run the jobs waiting now, then exit (no recovery)"
    )
    parser.add_argument(
        "--broker-socket",
        default="",
        help="the spawn broker's Unix socket: ask it for re-execution containers (as `havre "
        "up` runs it); without it, the Docker engine is used directly (tests, development)",
    )
    parser.add_argument(
        "--broker-secret", default="", help="file with the runner's own broker secret"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    enclave = load_enclave_config(args.config)
    folder = JobsFolder(args.jobs) if args.jobs else jobs_folder(enclave)
    for sub in (folder.inbox, folder.running, folder.results, folder.work):
        if not sub.is_dir():
            parser.error(f"{sub} is missing: `havre up` prepares the jobs folder")
    client: Any
    if args.broker_socket:
        from havre.broker.client import BrokerClient

        broker = BrokerClient(args.broker_socket, secret_file=args.broker_secret, timeout=60)
        client = BrokerEngine(broker, enclave)
    else:
        import docker

        client = docker.from_env(version="auto")
    runner = Runner(enclave, folder, client, time_limit=args.time_limit)

    def stop(*_: Any) -> None:
        runner.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("havre-reexec-runner: jobs in %s, time limit %d s", folder.root, runner.time_limit)
    if args.once:
        runner.run_pending()
    else:
        runner.serve(args.poll_seconds)
    client.close()


__all__ = ["JOBS_SUBDIR", "BrokerEngine", "Runner", "jobs_folder", "main"]
