"""Deliver the egress service's queued e-mails, away from the request that queued them.

Operations (:mod:`egress.operations`) write notifications into an outbox in their own
transaction; :class:`Mailer` sends them later through the relay configured in the enclave config
(``notifications.smtp``), turning usernames into addresses with
``notifications.address_template``. A relay that is down delays e-mail; it never blocks or
undoes a step of the workflow (the row is retried, up to a limit).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable, Iterable

from egress.notifications.smtp import SmtpSettings, parse_smtp_settings, plain_message, send
from egress.operations.facade import CHECKERS_MARKER, EgressService, OutboxMessage
from havre.enclave.config import CHECKERS_HUB_GROUP, EnclaveConfig

log = logging.getLogger("egress.mailer")


def hub_group_members(group: str) -> list[str]:
    """Members of a hub group, asked of the hub with the service's own token (read:groups)."""
    url = os.environ.get("JUPYTERHUB_API_URL", "").rstrip("/")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not url or not token:
        return []
    request = urllib.request.Request(
        f"{url}/groups/{group}", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return list(json.load(response).get("users", []))
    except Exception as exc:  # a hub hiccup delays e-mail, nothing else
        log.warning("can't list the members of hub group %s: %s", group, exc)
        return []


class Mailer:
    """Sends what the outbox holds; one instance per service process."""

    def __init__(
        self,
        service: EgressService,
        settings: SmtpSettings,
        address_template: str,
        *,
        transport: Callable[[SmtpSettings, object], None] = send,
        checkers: Callable[[], set[str]] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.address_template = address_template
        self.transport = transport
        self.checkers = checkers or (lambda: checkers_now(service.enclave))

    @classmethod
    def from_enclave(cls, service: EgressService, enclave: EnclaveConfig) -> Mailer | None:
        """The mailer the enclave config asks for, or ``None`` when e-mail is off."""
        notifications = enclave.notifications
        if notifications.smtp is None:
            return None
        settings = parse_smtp_settings(notifications.smtp, enclave.source, path="smtp")
        return cls(service, settings, notifications.address_template)

    def recipients(self, usernames: Iterable[str]) -> set[str]:
        """Usernames, with the checkers marker expanded to the checkers of now."""
        names: set[str] = set()
        for name in usernames:
            if name.startswith(CHECKERS_MARKER):
                author = name[len(CHECKERS_MARKER) :]
                names |= self.checkers() - {author}
            else:
                names.add(name)
        return names

    def addresses(self, usernames: Iterable[str]) -> list[str]:
        names = self.recipients(usernames)
        return sorted({self.address_template.format(username=name) for name in names})

    def _send(self, message: OutboxMessage) -> None:
        email = plain_message(self.addresses(message.to), message.subject, message.body)
        self.transport(self.settings, email)

    def deliver(self) -> dict[str, int]:
        """Send what is queued (blocking: run it in a worker thread)."""
        return self.service.deliver_notifications(self._send)


def checkers_now(enclave: EnclaveConfig) -> set[str]:
    """Everyone who checks outputs: listed in the config, or in the checkers' hub group."""
    return set(enclave.output_checkers) | set(hub_group_members(CHECKERS_HUB_GROUP))
