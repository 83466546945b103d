"""One log format for every Havre service: JSON lines a SIEM can read.

Every service (hub, egress service, identity provider, spawn broker, re-execution runner)
calls :func:`configure` at start-up (the hub through :func:`traitlets_logging_config`, since
JupyterHub sets up its own logging). The format comes from ``$HAVRE_LOG_FORMAT``, which the
stack launcher sets from the enclave config's ``logging.format`` (``json`` unless the config
says ``text``); a service started by hand without it logs text, as before.

A JSON line holds ``time`` (UTC, RFC 3339, milliseconds), ``level``, ``service``, ``logger``
and ``message``; then, where known, ``event`` (a stable name, see :data:`SECURITY_EVENTS`),
``user``, ``project``, ``request_id`` (an egress release request), ``session_id`` (a break-glass
window), ``event_id`` (the audit log's event) and the other fields the call gave; and
``exception`` (the traceback) when there is one. A message holding a line break stays one
line (JSON escapes it): a user name can't forge a log line.

Security events are logged at WARNING by :func:`security_event` under a name from
:data:`SECURITY_EVENTS` (an unknown name is refused, so the table in
``docs/sysadmin/logs.md`` stays the whole list). Standard library only.

A service whose own ``main`` sets up plain logging can be started through the launcher,
``python -m havre.enclave.logs SERVICE COMMAND [ARGS...]`` (:data:`LOG_LAUNCHER`): it calls
:func:`configure` and then runs the console script ``COMMAND`` of the same environment, whose
``logging.basicConfig`` then finds the root logger set up and changes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

#: The environment variable naming the format; the stack launcher sets it.
FORMAT_ENV = "HAVRE_LOG_FORMAT"
#: The command that starts a console script with its logs in the enclave's format (see above).
LOG_LAUNCHER = ("python", "-m", "havre.enclave.logs")
#: The formats a service can log in (``logging.format`` in the enclave config).
FORMATS = ("json", "text")
#: The text format: what the services logged before JSON.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Every security event's stable name, and what it means (docs/sysadmin/logs.md's table).
SECURITY_EVENTS: dict[str, str] = {
    "login.refused": "hub: a signed-in user has no Havre project or role: no access",
    "spawn.refused": "hub: a server start refused (not a member, unknown project or image, the "
    "broker's refusal)",
    "membership.lost": "hub: a running server stopped because its user left the project or "
    "their sign-in was revoked",
    "break_glass.refused": "hub: opening another user's server refused (not eligible, or "
    "outside the break-glass window)",
    "break_glass.activated": "hub: break glass activated (reason, target, until)",
    "break_glass.used": "hub: another user's server opened under break glass",
    "break_glass.ended": "hub: a break-glass window ended (expired, logout, ended, left the group)",
    "break_glass.unrecorded": "hub: a break-glass step refused or retried because the audit log "
    "could not record it",
    "download.refused": "hub's download guard: a download route of a notebook server refused",
    "desktop.paste_refused": "a remote desktop's RFB relay: a paste into the desktop dropped "
    "(the project allows none, over the limit, not text)",
    "desktop.rfb_refused": "a remote desktop's RFB relay: a VNC connection closed on a message "
    "it can't parse",
    "egress.refused": "egress service: an operation refused for lack of permission (HTTP 403)",
    "egress.file_refused": "egress service: a file refused by its file check",
    "audit.verify_failed": "egress service: the audit log or database failed verification",
    "audit.checkpoint_appended": "egress service: a release's missing audit checkpoint appended",
    "broker.refused": "spawn broker: a caller's request refused",
    "reexecution.refused": "re-execution runner: a job refused or dropped",
    "idp.login_failed": "identity provider: a sign-in refused (wrong user name or password)",
    "idp.rate_limited": "identity provider: a sign-in refused by the rate limit (too many "
    "failures for the user name or from the address)",
    "idp.client_auth_failed": "identity provider: a client's secret refused (token or "
    "revocation endpoint)",
    "idp.token_reused": "identity provider: an authorization code or a rotated refresh token "
    "presented again; what it issued is revoked",
    "idp.pkce_refused": "identity provider: an authorization without PKCE S256, or a code "
    "exchanged with a missing or wrong code_verifier",
    "idp.grant_refused": "identity provider: a code or refresh token presented by another "
    "client than it was issued to, or a code exchanged with another redirect_uri",
    "idp.admin_refused": "identity provider: an admin API call without the admin token",
}

#: Fields a call or the context may give, in the order they are written after ``event``.
CONTEXT_FIELDS = ("user", "project", "request_id", "session_id", "event_id", "client_ip")

_NO_FIELDS: Mapping[str, Any] = types.MappingProxyType({})
_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "havre_log_context", default=_NO_FIELDS
)
_RECORD_KEY = "havre_fields"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (``user``, ``project``, ``request_id``, ...) to every line logged inside."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def security_event(
    logger: logging.Logger | logging.LoggerAdapter[Any],
    event: str,
    message: str,
    *args: object,
    **fields: Any,
) -> None:
    """Log security event ``event`` at WARNING, with ``fields`` (user, project, ...)."""
    if event not in SECURITY_EVENTS:
        raise ValueError(
            f"{event!r} is not a security event of havre.enclave.logs.SECURITY_EVENTS; add it "
            "there and to docs/sysadmin/logs.md"
        )
    fields = {key: value for key, value in fields.items() if value is not None}
    logger.warning(message, *args, extra={_RECORD_KEY: {"event": event, **fields}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module's docstring)."""

    def __init__(self, service: str = "", **_ignored: Any) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = {**_CONTEXT.get(), **(getattr(record, _RECORD_KEY, None) or {})}
        if "event" in fields:
            line["event"] = fields.pop("event")
        for key in CONTEXT_FIELDS:
            if fields.get(key) is not None:
                line[key] = fields.pop(key)
        for key, value in fields.items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def json_formatter(service: str = "", **ignored: Any) -> JsonFormatter:
    """The formatter, for :func:`logging.config.dictConfig` (``"()"``)."""
    return JsonFormatter(service, **ignored)


def log_format(environ: Mapping[str, str] = os.environ) -> str:
    """The format ``$HAVRE_LOG_FORMAT`` names (``text`` when unset); refuses another."""
    value = environ.get(FORMAT_ENV, "") or "text"
    if value not in FORMATS:
        raise ValueError(f"{FORMAT_ENV} must be one of {', '.join(FORMATS)} (got {value!r})")
    return value


def configure(
    service: str,
    *,
    level: int | str = logging.INFO,
    fmt: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in the format ``fmt`` (default:
    :func:`log_format`), replacing the root logger's handlers. Returns the handler."""
    chosen = log_format() if fmt is None else fmt
    if chosen not in FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(FORMATS)} (got {chosen!r})")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else _text_formatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def _text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT)


def traitlets_logging_config(service: str, fmt: str) -> dict[str, Any]:
    """For a traitlets application (JupyterHub's ``logging_config``): its console handler in
    the JSON format, and the root logger's records (Havre's own loggers) through it too.
    Empty for ``text`` (the application keeps its own format)."""
    if fmt == "text":
        return {}
    if fmt not in FORMATS:
        raise ValueError(f"the log format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    return {
        "formatters": {"console": {"()": f"{__name__}.json_formatter", "service": service}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }


def launch(argv: Sequence[str] | None = None) -> int:
    """``python -m havre.enclave.logs SERVICE COMMAND [ARGS...]``: :func:`configure` the logs of
    ``SERVICE`` then run the console script ``COMMAND`` of this environment with ``ARGS``."""
    import importlib.metadata

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m havre.enclave.logs SERVICE COMMAND [ARGS...]", file=sys.stderr)
        return 2
    service, command, rest = args[0], args[1], args[2:]
    found = importlib.metadata.entry_points(group="console_scripts", name=command)
    if not found:
        print(f"havre.enclave.logs: there is no command {command!r} here", file=sys.stderr)
        return 2
    try:
        configure(service)
    except ValueError as err:
        print(f"{command}: refusing to start: {err}", file=sys.stderr)
        return 78  # EX_CONFIG
    entry = next(iter(found)).load()
    sys.argv = [command, *rest]
    result = entry()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(launch())
