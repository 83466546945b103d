"""The e-mail outbox: pending notifications and their delivery state."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import select

from egress.operations.base import ServiceBase
from egress.operations.common import (
    OutboxMessage,
    log,
)
from egress.store.db import read_session, write_session
from egress.store.models import (
    Notification,
)


class NotificationOperations(ServiceBase):
    """Outbox operations of :class:`egress.operations.facade.EgressService`."""

    def pending_notifications(self, max_attempts: int = 5) -> list[OutboxMessage]:
        """Notifications not sent yet (and not given up on), oldest first."""
        with read_session(self.engine) as session:
            return [
                _message(n)
                for n in session.execute(
                    select(Notification)
                    .where(Notification.sent_at.is_(None), Notification.attempts < max_attempts)
                    .order_by(Notification.id)
                ).scalars()
            ]

    def deliver_notifications(
        self, send: Callable[[OutboxMessage], None], *, max_attempts: int = 5, limit: int = 100
    ) -> dict[str, int]:
        """Send queued notifications with ``send``; failures are counted and retried later.

        A failing ``send`` never affects the workflow: the row's ``attempts`` goes up and its
        ``last_error`` is kept; after ``max_attempts`` it is left alone. Returns
        ``{"sent": n, "failed": m}``. Run one deliverer at a time (a crash between sending and
        recording can send a message twice; never zero times).
        """
        sent = failed = 0
        for message in self.pending_notifications(max_attempts)[:limit]:
            error = None
            try:
                send(message)
            except Exception as exc:  # a failed e-mail must never stop the workflow
                error = f"{type(exc).__name__}: {exc}"[:2000]
                log.warning("notification %s failed: %s", message.id, error)
            with write_session(self.engine) as session:
                row = session.get(Notification, message.id)
                if row is None or row.sent_at is not None:
                    continue
                row.attempts += 1
                if error is None:
                    row.sent_at = self.now()
                    sent += 1
                else:
                    row.last_error = error
                    failed += 1
        return {"sent": sent, "failed": failed}


def _message(row: Notification) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        event=row.event,
        to=tuple(json.loads(row.to)),
        subject=row.subject,
        body=row.body,
        created_at=row.created_at,
        attempts=row.attempts,
    )
