"""E-mail over SMTP for the egress service's notifications: the settings, a checked plain-text
message, and sending it.

The workflow never waits on e-mail: an operation writes its notification (subject and body,
composed by the operation) to the outbox in the same transaction as the state change, and
:mod:`egress.notifications.mailer` sends the outbox with :func:`send` (in a worker thread:
``smtplib`` blocks). :attr:`NotificationError.temporary` says whether a retry can help.

What a message contains: only the request's id and state, and a link to the request on the
egress service. Never titles, file names, file contents, comments or votes: e-mail leaves the
enclave, so a checker or author signs in to see the rest.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from havre.enclave.config.problems import ConfigProblemsError, Problems, join_path

__all__ = [
    "NotificationError",
    "SmtpSettings",
    "SmtpSettingsError",
    "parse_smtp_settings",
    "plain_message",
    "send",
]

log = logging.getLogger("havre.egress.notify")


class SmtpSettingsError(ConfigProblemsError):
    """Invalid SMTP settings; ``problems`` lists each, as ``"<key>: <what is wrong>"``."""

    what = "SMTP settings in"

    def __init__(self, problems: Iterable[str], source: str = "<settings>") -> None:
        super().__init__(problems, source)


class NotificationError(Exception):
    """An email could not be sent.

    ``temporary`` is true when a later retry may work (the server could not be reached, timed
    out, or answered with a 4xx code) and false when it won't without a change (5xx: a refused
    sender or recipient, failed login; a message that can't be sent as built). ``refused``
    maps each refused recipient to the server's ``(code, message)``.
    """

    def __init__(
        self,
        message: str,
        *,
        temporary: bool = True,
        refused: Mapping[str, tuple[int, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.refused = dict(refused or {})


_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _address_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return "must be an email address such as havre@example.org"
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or not _ADDRESS.fullmatch(value):
        return f"must be a plain email address such as havre@example.org (got {value!r})"
    return None


@dataclass(frozen=True, kw_only=True)
class SmtpSettings:
    """How the egress service reaches its mail relay.

    ``ssl`` is TLS from the first byte (port 465); ``starttls`` upgrades a plain connection
    (port 587 or 25); both verify the server's certificate against the system's CAs, or
    ``ca_file`` when set. ``username`` logs in with the password read from ``password_file``
    at each send (never stored in settings or logs); login needs ``ssl`` or ``starttls``.
    ``timeout`` (seconds) bounds every network step, so a dead relay can't hold a worker long.
    """

    host: str
    sender: str
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_file: str | None = None
    timeout: float = 10
    ca_file: str | None = None

    def __post_init__(self) -> None:
        problems = _settings_problems(self)
        if problems:
            raise SmtpSettingsError(problems, "SmtpSettings(...)")

    def password(self) -> str | None:
        """The password from ``password_file`` (first line), or ``None`` without a username."""
        if not self.username or not self.password_file:
            return None
        try:
            text = Path(self.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise NotificationError(
                f"can't read the SMTP password file {self.password_file}: "
                f"{getattr(error, 'strerror', None) or error}",
                temporary=False,
            ) from None
        password = text.splitlines()[0] if text else ""
        if not password:
            raise NotificationError(
                f"the SMTP password file {self.password_file} is empty", temporary=False
            )
        return password


def _settings_problems(s: SmtpSettings) -> list[str]:
    p = Problems()
    if not isinstance(s.host, str) or not re.fullmatch(r"[A-Za-z0-9.:\[\]_-]{1,253}", s.host):
        p.add("host", "must be a host name or IP address", s.host)
    problem = _address_problem(s.sender)
    if problem:
        p.add("sender", problem)
    if isinstance(s.port, bool) or not isinstance(s.port, int) or not 1 <= s.port <= 65535:
        p.add("port", "must be an integer from 1 to 65535", s.port)
    for name in ("starttls", "ssl"):
        if not isinstance(getattr(s, name), bool):
            p.add(name, "must be true or false", getattr(s, name))
    if s.starttls is True and s.ssl is True:
        p.add("ssl", "ssl (TLS from the start) and starttls can't both be true")
    if s.username is not None and (not isinstance(s.username, str) or not s.username):
        p.add("username", "must be a non-empty string", s.username)
    if s.password_file is not None and (
        not isinstance(s.password_file, str) or not s.password_file.startswith("/")
    ):
        p.add("password_file", "must be an absolute path", s.password_file)
    if s.username and not s.password_file:
        p.add("password_file", "is required when username is set")
    if s.password_file and not s.username:
        p.add("username", "is required when password_file is set")
    if s.username and not (s.starttls or s.ssl):
        p.add("username", "logging in needs ssl or starttls (no password in clear)")
    if s.ca_file is not None and (not isinstance(s.ca_file, str) or not s.ca_file.startswith("/")):
        p.add("ca_file", "must be an absolute path", s.ca_file)
    if (
        isinstance(s.timeout, bool)
        or not isinstance(s.timeout, int | float)
        or not 0 < s.timeout <= 300
    ):
        p.add("timeout", "must be a number of seconds above 0, at most 300", s.timeout)
    return p.items


_KEYS = (
    "host",
    "port",
    "starttls",
    "ssl",
    "username",
    "password_file",
    "sender",
    "timeout",
    "ca_file",
)


def parse_smtp_settings(
    mapping: Mapping[str, Any], source: str, *, path: str = "smtp"
) -> SmtpSettings:
    """:class:`SmtpSettings` from a config mapping (e.g. the ``smtp`` section of a YAML file).

    Raises :class:`SmtpSettingsError` listing every problem, each naming its key as
    ``<path>.<key>`` (an unknown key too, with the closest allowed one: a typo is not silently
    ignored). ``source`` names the file for the message.
    """
    p = Problems()
    if not isinstance(mapping, Mapping):
        p.add(path, "must be a mapping", mapping)
        raise SmtpSettingsError(p.items, source)
    p.unknown_keys(mapping, path, _KEYS)
    values = {key: mapping[key] for key in _KEYS if key in mapping}
    # A missing required key is reported with every other problem: check the rest with a
    # stand-in value.
    for key, stand_in in (("host", "localhost"), ("sender", "havre@localhost")):
        if key not in mapping:
            p.add(join_path(path, key), "is required")
            values[key] = stand_in
    try:
        settings = SmtpSettings(**values)
    except SmtpSettingsError as error:
        p.items.extend(join_path(path, problem) for problem in error.problems)
    p.raise_if_any(SmtpSettingsError, source)
    return settings


# --- messages ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _one_line(value: object, limit: int) -> str:
    text = re.sub(r"\s+", " ", _CONTROL.sub(" ", str(value))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _recipients(recipients: Iterable[str]) -> list[str]:
    if isinstance(recipients, str):
        raise ValueError("recipients must be a list of addresses, not one string")
    seen: dict[str, str] = {}
    for address in recipients:
        problem = _address_problem(address)
        if problem:
            raise ValueError(f"recipient {address!r}: {problem}")
        seen.setdefault(address.lower(), address)
    if not seen:
        raise ValueError("a notification needs at least one recipient")
    return list(seen.values())


def plain_message(recipients: list[str], subject: str, body: str) -> EmailMessage:
    """A plain-text message with checked recipients and a one-line subject.

    For a caller that composes its own text (an outbox row holding subject and body).
    Raises ``ValueError`` for no or invalid recipients.
    """
    message = EmailMessage()
    message["To"] = ", ".join(_recipients(recipients))
    message["Subject"] = _one_line(subject, 200) or "[Havre]"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body if body.endswith("\n") else body + "\n")
    return message


# --- sending -------------------------------------------------------------------------------


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as error:
        raise NotificationError(
            f"can't load the CA file {settings.ca_file}: {error}", temporary=False
        ) from None


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode("utf-8", "replace") if error.smtp_error else ""
        return f"{error.smtp_code} {text}".strip()
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused: " + ", ".join(
            f"{rcpt} ({code} {msg.decode('utf-8', 'replace')})"
            for rcpt, (code, msg) in error.recipients.items()
        )
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _connection_lost(error: BaseException | None) -> bool:
    """Whether the connection is gone (smtplib's own errors are OSErrors too, but most of them
    leave the connection usable)."""
    if isinstance(error, smtplib.SMTPException):
        return isinstance(error, smtplib.SMTPServerDisconnected)
    return isinstance(error, OSError)


def _temporary(error: BaseException) -> bool:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPResponseException):
        return 400 <= error.smtp_code < 500
    if isinstance(error, ssl.SSLCertVerificationError | smtplib.SMTPNotSupportedError):
        return False
    return _connection_lost(error)


def _connect(settings: SmtpSettings) -> smtplib.SMTP:
    """A connected, TLS-upgraded, logged-in client; :class:`NotificationError` if not."""
    where = f"{settings.host}:{settings.port}"
    smtp: smtplib.SMTP | None = None
    try:
        if settings.ssl:
            smtp = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=_tls_context(settings),
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        smtp.ehlo()
        if settings.starttls:
            if not smtp.has_extn("starttls"):
                raise NotificationError(
                    f"the SMTP server {where} does not offer STARTTLS", temporary=False
                )
            smtp.starttls(context=_tls_context(settings))
            smtp.ehlo()
        password = settings.password()
        if settings.username and password is not None:
            smtp.login(settings.username, password)
        return smtp
    except NotificationError:
        _close(smtp)
        raise
    except (OSError, smtplib.SMTPException) as error:
        _close(smtp)
        raise NotificationError(
            f"can't connect to the SMTP server {where}: {_describe(error)}",
            temporary=_temporary(error),
        ) from error


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is None:
        return
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


def _transmit(smtp: smtplib.SMTP, settings: SmtpSettings, message: EmailMessage) -> None:
    if "From" not in message:
        message["From"] = settings.sender
    if "Date" not in message:
        message["Date"] = formatdate(localtime=False)
    if "Message-ID" not in message:
        message["Message-ID"] = make_msgid(domain=settings.sender.rsplit("@", 1)[1])
    try:
        refused = smtp.send_message(message, from_addr=settings.sender)
    except (OSError, smtplib.SMTPException) as error:
        refused_map = getattr(error, "recipients", None)
        raise NotificationError(
            f"the SMTP server {settings.host}:{settings.port} did not take the message: "
            f"{_describe(error)}",
            temporary=_temporary(error),
            refused=refused_map if isinstance(refused_map, dict) else None,
        ) from error
    except (ValueError, TypeError) as error:  # e.g. a message without recipients
        raise NotificationError(f"the message can't be sent: {error}", temporary=False) from error
    if refused:
        # Some recipients got it; a retry would send it to them again, so the caller decides.
        raise NotificationError(
            "some recipients were refused: "
            + ", ".join(
                f"{rcpt} ({code} {msg.decode('utf-8', 'replace')})"
                for rcpt, (code, msg) in refused.items()
            ),
            temporary=all(400 <= code < 500 for code, _ in refused.values()),
            refused=refused,
        )


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    """Send one message through the relay; :class:`NotificationError` on any failure.

    Opens a connection (TLS and login as ``settings`` say), sends, closes. Blocks for at most
    a few times ``settings.timeout``: call it from a worker thread, not the event loop.
    """
    smtp = _connect(settings)
    try:
        _transmit(smtp, settings, message)
    finally:
        _close(smtp)
