"""E-mail about release requests through a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import socket
import time

import pytest
from aiosmtpd.controller import Controller

from egress.notifications.mailer import Mailer
from egress.notifications.smtp import SmtpSettings
from tests.unit.egress.conftest import ACTORS
from tests.unit.egress.test_core import new_request


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def relay():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_submit_mails_the_checkers_and_release_mails_the_author(service, relay):
    inbox, port = relay
    settings = SmtpSettings(host="127.0.0.1", port=port, sender="havre@hospital.example")
    # olivia and oscar are listed in the config; chloe is a checker through her hub group
    mailer = Mailer(
        service,
        settings,
        "{username}@hospital.example",
        checkers=lambda: {"olivia", "chloe", "alice"},
    )
    rid, _files = new_request(service, {"tables/smoking.csv": "main"})
    assert mailer.deliver() == {"sent": 1, "failed": 0}
    deadline = time.monotonic() + 5
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    (recipients, content), *_ = inbox.messages
    assert "olivia@hospital.example" in recipients and "oscar@hospital.example" in recipients
    assert "chloe@hospital.example" in recipients
    assert "alice@hospital.example" not in recipients  # never the author as a checker
    assert rid in content and "smoking" not in content  # ids only: no file names leave
    assert mailer.deliver() == {"sent": 0, "failed": 0}  # sent once


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_dead_relay_delays_mail_and_never_blocks_the_workflow(service):
    settings = SmtpSettings(host="127.0.0.1", port=free_port(), sender="h@x.example", timeout=2)
    mailer = Mailer(service, settings, "{username}@x.example", checkers=lambda: set())
    rid, files = new_request(service, {"tables/smoking.csv": "main"})
    assert mailer.deliver() == {"sent": 0, "failed": 1}
    # the workflow goes on: a checker reviews while the mail waits in the outbox
    file_id = files["tables/smoking.csv"]["id"]
    service.vote(ACTORS["olivia"], rid, file_id, "approve")
    assert service.submit_review(ACTORS["olivia"], rid)["state"] == "under_review"
    assert len(service.pending_notifications()) == 1  # retried later
