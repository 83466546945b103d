"""Tests for egress.notifications.smtp against a real SMTP server (aiosmtpd) on 127.0.0.1.

Each test that sends starts its own server on a free local port, with a handler that records
what arrives (and can refuse recipients or data); TLS tests make a throw-away certificate.
"""

from __future__ import annotations

import socket
import ssl
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from egress.notifications.smtp import (
    NotificationError,
    SmtpSettings,
    SmtpSettingsError,
    parse_smtp_settings,
    plain_message,
    send,
)
from tests.certificates import self_signed

SENDER = "havre-egress@enclave.example.org"
LINK = "https://havre.example.org/services/egress/requests/42"


# --- a real SMTP server ----------------------------------------------------------------------


class Recorder:
    """aiosmtpd handler: keeps every accepted envelope; can refuse some recipients or data."""

    def __init__(self) -> None:
        self.envelopes: list = []
        self.refuse: dict[str, str] = {}
        self.data_reply: str | None = None
        self.ehlo_count = 0
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlo_count += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def received(self, index: int = -1) -> EmailMessage:
        return message_from_bytes(self.envelopes[index].content, policy=policy.default)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def start_server():
    controllers = []

    def start(**kwargs) -> tuple[Recorder, int]:
        recorder = Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return recorder, port

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 that is bound but not listening: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def settings_for(port: int, **overrides) -> SmtpSettings:
    values = {"host": "127.0.0.1", "port": port, "sender": SENDER, "timeout": 5}
    values.update(overrides)
    return SmtpSettings(**values)


def submitted(recipients=("checker1@example.org", "checker2@example.org")):
    """A message as the service's outbox writes them: ids and states only, never the title."""
    return plain_message(
        list(recipients) if isinstance(recipients, tuple) else recipients,
        "[Havre] Release request R-42 in hospital-stays is waiting for review",
        f"alice submitted release request R-42 in project hospital-stays.\n\n"
        f"Open the request: {LINK}\n",
    )


# --- settings --------------------------------------------------------------------------------


def test_parse_settings_defaults_and_values():
    settings = parse_smtp_settings({"host": "smtp.example.org", "sender": SENDER}, "enclave.yaml")
    assert (settings.port, settings.starttls, settings.ssl, settings.timeout) == (
        25,
        False,
        False,
        10,
    )
    assert settings.username is None and settings.password_file is None
    full = parse_smtp_settings(
        {
            "host": "relay.example.org",
            "port": 587,
            "starttls": True,
            "username": "havre",
            "password_file": "/run/secrets/smtp",
            "sender": SENDER,
            "timeout": 2.5,
        },
        "enclave.yaml",
    )
    assert full.port == 587 and full.starttls and full.timeout == 2.5


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"host": "h", "sender": SENDER, "port": "25"}, "smtp.port: must be an integer"),
        ({"host": "h", "sender": SENDER, "port": 70000}, "smtp.port: must be an integer"),
        ({"host": "h", "sender": SENDER, "hots": "x"}, "smtp.hots: unknown key"),
        ({"sender": SENDER}, "smtp.host: is required"),
        ({"host": "h"}, "smtp.sender: is required"),
        ({"host": "h", "sender": "not an address"}, "smtp.sender: must be"),
        (
            {"host": "h", "sender": SENDER, "starttls": "yes"},
            "smtp.starttls: must be true or false",
        ),
        ({"host": "h", "sender": SENDER, "ssl": True, "starttls": True}, "smtp.ssl: "),
        (
            {"host": "h", "sender": SENDER, "username": "u", "starttls": True},
            "smtp.password_file: is required",
        ),
        (
            {"host": "h", "sender": SENDER, "username": "u", "password_file": "/p"},
            "smtp.username: logging in needs ssl or starttls",
        ),
        (
            {
                "host": "h",
                "sender": SENDER,
                "starttls": True,
                "username": "u",
                "password_file": "p",
            },
            "smtp.password_file: must be an absolute path",
        ),
        ({"host": "h", "sender": SENDER, "timeout": 0}, "smtp.timeout: must be a number"),
        ({"host": "bad host", "sender": SENDER}, "smtp.host: must be a host name"),
    ],
)
def test_parse_settings_errors_name_the_key(mapping, expected):
    with pytest.raises(SmtpSettingsError) as caught:
        parse_smtp_settings(mapping, "/etc/havre/enclave.yaml")
    message = str(caught.value)
    assert message.startswith("invalid SMTP settings in /etc/havre/enclave.yaml:")
    assert expected in message, message


def test_parse_settings_lists_every_problem():
    with pytest.raises(SmtpSettingsError) as caught:
        parse_smtp_settings({"host": "h", "sender": "x", "port": 0, "timeout": "10"}, "cfg")
    assert len(caught.value.problems) == 3
    with pytest.raises(SmtpSettingsError) as caught:
        parse_smtp_settings({"port": "x", "typo": 1}, "cfg")
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "smtp.typo",
        "smtp.host",
        "smtp.sender",
        "smtp.port",
    ]
    with pytest.raises(SmtpSettingsError, match="smtp: must be a mapping"):
        parse_smtp_settings(["host"], "cfg")  # type: ignore[arg-type]


# --- messages --------------------------------------------------------------------------------


def test_plain_message_keeps_the_subject_on_one_line():
    message = plain_message(["a@example.org"], "Hello\r\nBcc: x@evil.example", "Body")
    assert message["Subject"] == "Hello Bcc: x@evil.example" and message["Bcc"] is None
    assert message.get_content() == "Body\n"


# --- sending through a real server -----------------------------------------------------------


def test_send_delivers_to_a_real_server(server):
    recorder, port = server
    message = submitted()
    send(settings_for(port), message)
    assert len(recorder.envelopes) == 1
    envelope = recorder.envelopes[0]
    assert envelope.mail_from == SENDER
    assert envelope.rcpt_tos == ["checker1@example.org", "checker2@example.org"]
    received = recorder.received()
    assert received["Subject"] == (
        "[Havre] Release request R-42 in hospital-stays is waiting for review"
    )
    assert received["From"] == SENDER
    assert received["To"] == "checker1@example.org, checker2@example.org"
    assert received["Message-ID"].endswith("@enclave.example.org>") and received["Date"]
    body = received.get_content()
    assert "alice submitted release request R-42 in project hospital-stays" in body
    assert "Length of stay by region" not in body
    assert f"Open the request: {LINK}" in body


def test_closed_port_raises_a_temporary_failure(closed_port):
    settings = settings_for(closed_port)
    with pytest.raises(NotificationError) as caught:
        send(settings, submitted())
    assert caught.value.temporary
    assert f"127.0.0.1:{closed_port}" in str(caught.value)


def test_refused_recipient_is_a_permanent_failure(server):
    recorder, port = server
    recorder.refuse["gone@example.org"] = "550 5.1.1 No such user"
    with pytest.raises(NotificationError) as caught:
        send(settings_for(port), submitted(recipients=["gone@example.org"]))
    assert not caught.value.temporary
    assert "gone@example.org" in caught.value.refused and "550" in str(caught.value)
    assert recorder.envelopes == []


def test_partly_refused_recipients(server):
    recorder, port = server
    recorder.refuse["gone@example.org"] = "450 4.2.1 Mailbox busy"
    with pytest.raises(NotificationError) as caught:
        send(settings_for(port), submitted(recipients=["ok@example.org", "gone@example.org"]))
    assert caught.value.temporary and list(caught.value.refused) == ["gone@example.org"]
    assert recorder.envelopes[0].rcpt_tos == ["ok@example.org"]


def test_temporary_data_refusal(server):
    recorder, port = server
    recorder.data_reply = "451 4.3.0 Try again later"
    with pytest.raises(NotificationError, match="451") as caught:
        send(settings_for(port), submitted())
    assert caught.value.temporary


def test_missing_password_file(server, tmp_path):
    _, port = server
    settings = settings_for(
        port, starttls=True, username="havre", password_file=str(tmp_path / "missing")
    )
    # The server offers no STARTTLS, so that is what fails first.
    with pytest.raises(NotificationError, match="does not offer STARTTLS") as caught:
        send(settings, submitted())
    assert not caught.value.temporary
    with pytest.raises(NotificationError, match="can't read the SMTP password file"):
        settings.password()


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1."""
    return self_signed(tmp_path_factory.mktemp("tls"))


def server_tls(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def authenticator_for(recorder: Recorder, password: bytes):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            recorder.logins.append((auth_data.login, auth_data.password))
            ok = auth_data.password == password
            return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535
        return AuthResult(success=False, handled=False)

    return authenticate


def test_starttls_with_login(start_server, certificate, tmp_path):
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret pass\n")
    recorder = None

    def authenticate(*args):
        return authenticator_for(recorder, b"s3cret pass")(*args)

    recorder, port = start_server(
        tls_context=server_tls(certificate),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    settings = settings_for(
        port,
        starttls=True,
        username="havre",
        password_file=str(password_file),
        ca_file=str(certificate[0]),
    )
    send(settings, submitted())
    assert recorder.logins == [(b"havre", b"s3cret pass")]
    assert recorder.envelopes[0].rcpt_tos == ["checker1@example.org", "checker2@example.org"]

    password_file.write_text("wrong\n")
    with pytest.raises(NotificationError, match="535") as caught:
        send(settings, submitted())
    assert not caught.value.temporary


def test_starttls_refuses_an_unknown_certificate(start_server, certificate):
    recorder, port = start_server(tls_context=server_tls(certificate), require_starttls=True)
    with pytest.raises(NotificationError, match="CERTIFICATE_VERIFY_FAILED|certificate") as caught:
        send(settings_for(port, starttls=True), submitted())  # system CAs only
    assert not caught.value.temporary
    assert recorder.envelopes == []


def test_implicit_tls(start_server, certificate):
    recorder, port = start_server(ssl_context=server_tls(certificate))
    send(settings_for(port, ssl=True, ca_file=str(certificate[0])), submitted())
    assert len(recorder.envelopes) == 1
