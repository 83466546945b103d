"""Email notifications for the release-request workflow (SMTP), never blocking the workflow.

The workflow never waits on email: the core service writes a notification to its outbox in
the same transaction as the state change, and a background task calls :func:`deliver_outbox`
(in a worker thread: ``smtplib`` blocks), which marks each row sent or failed and never raises.
A failed row is retried on a later run; :attr:`NotificationError.temporary` says whether a
retry can help.

What a message contains
    Only the request's id and project, who acted, and a link to the request on the egress
    service. Never file names, file contents, comments, votes or anything from the outputs:
    email leaves the enclave, so a checker or author signs in to see the rest. The request's
    title is left out by default too (``include_title``): it is unchecked free text, and an
    email to the author carrying it would be a way round output checking.

Who gets which event (the caller picks the addresses; :data:`AUDIENCE` says whose they are)
    ================== ========== =============================================================
    event              audience   why
    ================== ========== =============================================================
    submitted          checkers   a request waits for independent reviews
    review_complete    checkers   every required review is in; a checker approves, returns or
                                  rejects. Not the author: the reviews are the checkers' and the
                                  author hears the decision
    returned           author     changes are asked for
    released           author     the files are out
    rejected           author     nothing will be released
    ================== ========== =============================================================
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "AUDIENCE",
    "EVENTS",
    "DeliveryCounts",
    "NotificationError",
    "SmtpSettings",
    "SmtpSettingsError",
    "deliver_outbox",
    "message_for",
    "parse_smtp_settings",
    "plain_message",
    "send",
]

log = logging.getLogger("havre.egress.notify")

MAX_TITLE_CHARS = 120
"""Longest request title put in a subject or body (longer ones end with an ellipsis)."""

AUDIENCE: dict[str, str] = {
    "submitted": "checkers",
    "review_complete": "checkers",
    "returned": "author",
    "released": "author",
    "rejected": "author",
}
"""Whose addresses the caller should give :func:`message_for` for each event."""

EVENTS = tuple(AUDIENCE)
"""The workflow events that send email."""

_SUBJECTS = {
    "submitted": "[Havre] Release request {id} in {project} is waiting for review",
    "review_complete": "[Havre] Release request {id} in {project}: all reviews are in",
    "returned": "[Havre] Release request {id} in {project} was returned to you",
    "released": "[Havre] Release request {id} in {project} was released",
    "rejected": "[Havre] Release request {id} in {project} was rejected",
}

_FIRST_LINES = {
    "submitted": (
        "{actor} submitted release request {id} in project {project}. It needs independent "
        "reviews by output checkers."
    ),
    "review_complete": (
        "Every required review of release request {id} in project {project} is in (the last "
        "one by {actor}). A checker can now approve it, return it to the author, or reject it."
    ),
    "returned": (
        "{actor} returned your release request {id} in project {project} for changes. Read "
        "the checkers' comments, change the files or their descriptions, and submit it again."
    ),
    "released": (
        "Your release request {id} in project {project} was released by {actor}. The approved "
        "files can now be downloaded from the request page."
    ),
    "rejected": (
        "{actor} rejected your release request {id} in project {project}. Nothing from it "
        "will be released; the request page gives the reason."
    ),
}

_FOOTER = (
    "This message was sent by Havre's egress service. It holds no file names, file contents "
    "or comments; sign in to see the request."
)


class SmtpSettingsError(ValueError):
    """Invalid SMTP settings; ``problems`` lists each, as ``"<key>: <what is wrong>"``."""

    def __init__(self, problems: Iterable[str], source: str = "<settings>") -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"invalid SMTP settings in {source}:"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))


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
    problems = []
    if not isinstance(s.host, str) or not re.fullmatch(r"[A-Za-z0-9.:\[\]_-]{1,253}", s.host):
        problems.append(f"host: must be a host name or IP address (got {s.host!r})")
    problem = _address_problem(s.sender)
    if problem:
        problems.append(f"sender: {problem}")
    if isinstance(s.port, bool) or not isinstance(s.port, int) or not 1 <= s.port <= 65535:
        problems.append(f"port: must be an integer from 1 to 65535 (got {s.port!r})")
    for key in ("starttls", "ssl"):
        if not isinstance(getattr(s, key), bool):
            problems.append(f"{key}: must be true or false (got {getattr(s, key)!r})")
    if s.starttls is True and s.ssl is True:
        problems.append("ssl: ssl (TLS from the start) and starttls can't both be true")
    if s.username is not None and (not isinstance(s.username, str) or not s.username):
        problems.append(f"username: must be a non-empty string (got {s.username!r})")
    if s.password_file is not None and (
        not isinstance(s.password_file, str) or not s.password_file.startswith("/")
    ):
        problems.append(f"password_file: must be an absolute path (got {s.password_file!r})")
    if s.username and not s.password_file:
        problems.append("password_file: is required when username is set")
    if s.password_file and not s.username:
        problems.append("username: is required when password_file is set")
    if s.username and not (s.starttls or s.ssl):
        problems.append("username: logging in needs ssl or starttls (no password in clear)")
    if s.ca_file is not None and (not isinstance(s.ca_file, str) or not s.ca_file.startswith("/")):
        problems.append(f"ca_file: must be an absolute path (got {s.ca_file!r})")
    if (
        isinstance(s.timeout, bool)
        or not isinstance(s.timeout, int | float)
        or not 0 < s.timeout <= 300
    ):
        problems.append(
            f"timeout: must be a number of seconds above 0, at most 300 (got {s.timeout!r})"
        )
    return problems


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
    ``<path>.<key>`` (unknown keys too, so a typo is not silently ignored). ``source`` names
    the file for the message.
    """
    if not isinstance(mapping, Mapping):
        raise SmtpSettingsError([f"{path}: must be a mapping (got {mapping!r})"], source)
    problems = [
        f"{path}.{key}: unknown key; expected one of {', '.join(_KEYS)}"
        for key in mapping
        if key not in _KEYS
    ]
    values = {key: mapping[key] for key in _KEYS if key in mapping}
    # A missing required key is reported with every other problem: check the rest with a
    # stand-in value.
    for key, stand_in in (("host", "localhost"), ("sender", "havre@localhost")):
        if key not in mapping:
            problems.append(f"{path}.{key}: is required")
            values[key] = stand_in
    try:
        settings = SmtpSettings(**values)
    except SmtpSettingsError as error:
        problems.extend(f"{path}.{p}" for p in error.problems)
    if problems:
        raise SmtpSettingsError(problems, source)
    return settings


# --- messages ------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _one_line(value: object, limit: int) -> str:
    text = re.sub(r"\s+", " ", _CONTROL.sub(" ", str(value))).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _check_link(link: str) -> str:
    if (
        not isinstance(link, str)
        or not re.fullmatch(r"https?://[^\s\x00-\x1f\x7f]+", link)
        or len(link) > 2000
    ):
        raise ValueError(f"link must be an http(s) URL without spaces (got {link!r})")
    return link


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

    For a caller that composes its own text (e.g. an outbox row holding subject and body);
    :func:`message_for` uses it too. Raises ``ValueError`` for no or invalid recipients.
    """
    message = EmailMessage()
    message["To"] = ", ".join(_recipients(recipients))
    message["Subject"] = _one_line(subject, 200) or "[Havre]"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body if body.endswith("\n") else body + "\n")
    return message


def message_for(
    event: str,
    *,
    request_id: str | int,
    project: str,
    title: str,
    recipients: list[str],
    link: str,
    actor: str,
    include_title: bool = False,
) -> EmailMessage:
    """The plain-text email for a workflow ``event`` (one of :data:`EVENTS`).

    ``recipients`` are the addresses of :data:`AUDIENCE` ``[event]`` (the caller looks them
    up); ``link`` the request's page on the egress service; ``actor`` who did what triggered
    the event. ``From``, ``Date`` and ``Message-ID`` are added by :func:`send` when missing.

    The title is left out unless ``include_title`` is true: it is free text the researcher
    typed, no checker has approved it, and email leaves the enclave, so a title would be a way
    to send data out (for instance to the author's own mailbox with "returned"). With
    ``include_title`` it goes in the body only, on one line, cut to :data:`MAX_TITLE_CHARS`.

    Raises ``ValueError`` for an unknown event, no or invalid recipients, or a non-http link.
    """
    if event not in AUDIENCE:
        raise ValueError(f"unknown notification event {event!r}; expected one of {EVENTS}")
    fields = {
        "id": _one_line(request_id, 64),
        "project": _one_line(project, 64),
        "actor": _one_line(actor, 64) or "someone",
    }
    lines = [_FIRST_LINES[event].format(**fields), "", f"Request:  {fields['id']}"]
    if include_title:
        lines.append(f"Title:    {_one_line(title, MAX_TITLE_CHARS) or '(no title)'}")
    lines += [
        f"Project:  {fields['project']}",
        "",
        f"Open the request: {_check_link(link)}",
        "",
        "-- ",
        _FOOTER,
    ]
    message = plain_message(recipients, _SUBJECTS[event].format(**fields), "\n".join(lines))
    message["X-Havre-Event"] = event
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


class DeliveryCounts(NamedTuple):
    """What :func:`deliver_outbox` did: rows marked sent and rows marked failed."""

    sent: int
    failed: int


def _message_of(row: Any) -> EmailMessage:
    if isinstance(row, EmailMessage):
        return row
    if isinstance(row, Mapping):
        return row["message"]
    return row.message


def deliver_outbox(
    rows: Iterable[Any],
    settings: SmtpSettings,
    mark_sent: Callable[[Any], object],
    mark_failed: Callable[[Any, NotificationError], object],
    *,
    message_of: Callable[[Any], EmailMessage] = _message_of,
) -> DeliveryCounts:
    """Try to send every row of the outbox; never raises; returns how many were sent/failed.

    A row is an :class:`EmailMessage`, a mapping with a ``"message"`` key, an object with a
    ``message`` attribute, or anything ``message_of`` understands. Each row ends in exactly one
    of ``mark_sent(row)`` or ``mark_failed(row, error)``. One connection is used for the batch;
    if the server can't be reached at all, every remaining row is marked failed with that same
    error at once (no waiting for a timeout per row); if the connection drops mid-batch, it is
    opened again for the next row. An exception from ``mark_sent``/``mark_failed`` is logged
    and the row counted as failed (the caller's store decides what happens to it).
    """
    sent = failed = 0
    smtp: smtplib.SMTP | None = None
    unreachable: NotificationError | None = None
    try:
        for row in rows:
            try:
                message = message_of(row)
                if not isinstance(message, EmailMessage):
                    raise TypeError(f"expected an EmailMessage, got {type(message).__name__}")
            except Exception as error:  # noqa: BLE001 - a bad row must not stop the batch
                _mark(
                    mark_failed, row, NotificationError(f"not a message: {error}", temporary=False)
                )
                failed += 1
                continue
            error = unreachable
            if error is None:
                try:
                    if smtp is None:
                        smtp = _connect(settings)
                    _transmit(smtp, settings, message)
                except NotificationError as exc:
                    error = exc
                    if smtp is None:
                        unreachable = exc  # connecting failed: don't try again this batch
                    elif _connection_lost(exc.__cause__):
                        _close(smtp)
                        smtp = None  # reconnect for the next row
            if error is None:
                if _mark(mark_sent, row):
                    sent += 1
                else:
                    failed += 1
            else:
                log.warning("notification not sent: %s", error)
                _mark(mark_failed, row, error)
                failed += 1
    except Exception:  # noqa: BLE001 - e.g. the rows iterator itself failed
        log.exception("delivering the notification outbox stopped early")
    finally:
        _close(smtp)
    return DeliveryCounts(sent, failed)


def _mark(callback: Callable[..., object], *args: Any) -> int:
    """Call a mark callback; 1 if it worked, 0 (logged) if it raised."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - the outbox store's failure must not stop the batch
        log.exception("marking a notification row failed")
        return 0
    return 1
