"""Re-execution: the operations delegate to :mod:`egress.reexecution.service`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from egress.audit.chain import (
    EventType,
)
from egress.domain.policy import Actor, Permission
from egress.operations.base import ServiceBase
from egress.reexecution import service as reexecution_service
from egress.reexecution.jobs import JobsFolder


class ReexecutionOperations(ServiceBase):
    """Re-execution operations of :class:`egress.operations.facade.EgressService`."""

    # -- trusted re-execution (the runner is another container: egress.reexecution.service) ---

    @property
    def reexecution_jobs(self) -> JobsFolder:
        """The jobs folder shared with the re-execution runner (``<state_dir>/reexec``)."""
        jobs = getattr(self, "_reexecution_jobs", None)
        if jobs is None:
            jobs = self._reexecution_jobs = JobsFolder(Path(self.enclave.state_dir) / "reexec")
        return jobs

    @reexecution_jobs.setter
    def reexecution_jobs(self, jobs: JobsFolder) -> None:
        self._reexecution_jobs = jobs

    def request_reexecution(
        self, actor: Actor, request_id: str, file_id: int, parameters: object = None
    ) -> dict[str, Any]:
        """Ask the runner to re-run notebook ``file_id`` of the request (queued; see
        ``docs/checker-reexecution.md``). Audited as REEXECUTION_REQUESTED."""
        return reexecution_service.request(self, actor, request_id, file_id, parameters)

    def list_reexecutions(self, actor: Actor, request_id: str) -> list[dict[str, Any]]:
        """The request's trusted re-executions, newest first."""
        return reexecution_service.list_for_request(self, actor, request_id)

    def reexecution(self, actor: Actor, request_id: str, reexecution_id: str) -> dict[str, Any]:
        """One re-execution with the submitted files compared to the trusted outputs."""
        return reexecution_service.detail(self, actor, request_id, reexecution_id)

    def record_reexecution_view(
        self, actor: Actor, request_id: str, reexecution_id: str, path: str, sha256: str
    ) -> None:
        """Audit a checker's view of a re-execution's executed notebook (bytes made from the
        data, shown in the browser) as FILE_VIEWED, like any other file view."""
        with self.writing("view_reexecution", actor, request_id) as tx:
            request = self.load_request(tx.session, request_id)
            self.require(tx.session, actor, Permission.VIEW_FILE, request)
            tx.audit(
                actor,
                EventType.FILE_VIEWED,
                request,
                object=path,
                file_hashes={path: sha256} if sha256 else {},
                details={"reexecution_id": str(reexecution_id)[:64], "round": request.round},
            )

    def collect_reexecutions(self) -> int:
        """Take in the runner's finished results (signed, stored, audited as RE_EXECUTED)."""
        return reexecution_service.collect(self)
