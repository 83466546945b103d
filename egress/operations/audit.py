"""Audit: checkpoints, verification and export of the service's log."""

from __future__ import annotations

import json
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from egress.audit.chain import Checkpoint
from egress.audit.replay import (
    failed_report,
    missing_release_checkpoints,
    reconcile_checkpoints,
    verify_database,
)
from egress.audit.verify import VerifyReport
from egress.monitoring.verify_record import FILE_NAME as VERIFY_RECORD
from egress.monitoring.verify_record import record_verify
from egress.operations.base import ServiceBase
from egress.operations.common import (
    log,
)
from havre.enclave.logs import security_event


class AuditOperations(ServiceBase):
    """Audit operations of :class:`egress.operations.facade.EgressService`."""

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints kept outside the database (``checkpoint_path``), if any.

        An unterminated last line (a crash or power loss while appending) is skipped with a
        warning; any other unreadable line raises ``ValueError``.
        """
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return []
        text_ = self.checkpoint_path.read_text(encoding="utf-8")
        lines = text_.split("\n")
        if lines[-1].strip():
            log.warning("%s: ignoring an incomplete last line", self.checkpoint_path)
        found = []
        for number, line in enumerate(lines[:-1], 1):
            if line.strip():
                try:
                    found.append(Checkpoint.from_dict(json.loads(line)))
                except (ValueError, TypeError) as exc:
                    raise ValueError(
                        f"{self.checkpoint_path}, line {number}: not a checkpoint: {exc}"
                    ) from None
        return found

    def reconcile_checkpoints(self) -> list[tuple[str, Checkpoint]]:
        """Append the checkpoints of releases missing from the checkpoint file (a crash
        between a release's commit and its append); called at start and by :meth:`verify_audit`.
        Nothing is appended unless the log verifies (see :func:`reconcile_checkpoints`)."""
        if self.checkpoint_path is None:
            return []
        try:
            appended, report = reconcile_checkpoints(
                self.engine,
                self.checkpoint_path,
                kept=self.checkpoints(),
                public_key=self._public_or_none(),
            )
        except (OSError, ValueError):
            log.exception("could not reconcile the checkpoint file %s", self.checkpoint_path)
            return []
        if not report.ok:
            security_event(
                log,
                "audit.verify_failed",
                "checkpoints not reconciled: the audit log fails verification: %s",
                report.problem,
                event_id=report.first_bad_seq,
                problem=report.problem,
            )
        return appended

    def _public_or_none(self) -> Ed25519PublicKey | None:
        try:
            return self.public_key()
        except (OSError, ValueError):
            log.exception("the public key can't be loaded; release signatures are not checked")
            return None

    def verify_audit(self, checkpoints: Iterable[Checkpoint] = ()) -> VerifyReport:
        """Verify the audit log and replay it against the tables (see the module docs).

        The checkpoint file is reconciled first (releases whose checkpoint a crash kept out
        of it are appended, when the log verifies); a release still without its checkpoint
        in the file fails the verification, naming it. A failure is logged as the security
        event ``audit.verify_failed``. The result (passed or failed, and when) is kept beside
        the checkpoint file for the metrics (:mod:`egress.monitoring.verify_record`).
        """
        report = self._verify_audit(checkpoints)
        if not report.ok:
            security_event(
                log,
                "audit.verify_failed",
                "the audit log fails verification: %s",
                report.problem,
                event_id=report.first_bad_seq,
                problem=report.problem,
            )
        if self.checkpoint_path is not None:
            try:
                record_verify(self.checkpoint_path.with_name(VERIFY_RECORD), report.ok, self.now())
            except OSError:
                log.exception("could not keep the audit verification's result for the metrics")
        return report

    def _verify_audit(self, checkpoints: Iterable[Checkpoint]) -> VerifyReport:
        """The verification itself (:meth:`verify_audit`)."""
        public = self._public_or_none()
        self.reconcile_checkpoints()
        try:
            kept = self.checkpoints()
        except (OSError, ValueError) as exc:
            return failed_report(None, f"the checkpoint file can't be read: {exc}", self.log_id)
        report = verify_database(self.engine, public_key=public, checkpoints=[*kept, *checkpoints])
        if report.ok and self.checkpoint_path is not None:
            missing = missing_release_checkpoints(self.engine, kept)
            if missing:
                request_id, checkpoint = missing[0]
                return failed_report(
                    report,
                    f"the release of request {request_id} (event {checkpoint.seq}) has no "
                    f"checkpoint in {self.checkpoint_path} ({len(missing)} release(s) missing)",
                    self.log_id,
                )
        return report
