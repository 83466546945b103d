"""The egress service's refusals that are not policy decisions (HTTP-like ``status``, a
sentence as ``reason``), and the log line every refusal gets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from egress.domain.policy import Actor

__all__ = [
    "EgressError",
    "FileRefused",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InvalidInput",
    "NotFound",
]

#: the service's logger; refusals are logged under the name ``egress.core``
log = logging.getLogger("egress.core")


class EgressError(Exception):
    """A refusal that is not a policy decision; ``status`` is HTTP-like, ``reason`` a sentence.

    The web layer handles it like ``policy.PermissionDenied`` (which has the same two
    attributes).
    """

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidInput(EgressError):
    """Malformed input (an empty title, an unknown vote...)."""

    status = 400


class NotFound(EgressError):
    """No such request, or no such file in it."""

    status = 404


class FileRefused(EgressError):
    """The automatic checks refuse the file; ``problems`` lists every reason."""

    status = 422

    def __init__(self, path: str, problems: list[str], warnings: list[str] | None = None) -> None:
        super().__init__(f"{path} can't be released: " + "; ".join(problems))
        self.path = path
        self.problems = list(problems)
        self.warnings = list(warnings or [])


class IdempotencyKeyReused(EgressError):
    """An ``Idempotency-Key`` sent again with a different request."""

    status = 422


class IdempotencyInProgress(EgressError):
    """A retry arrived while the first request with its key is still running."""

    status = 409


def _refused(op: str, actor: Actor, request_id: str | None, exc: Exception) -> None:
    log.info(
        "refused: %s by %s on %s: %s (%s)",
        op,
        actor.username,
        request_id or "-",
        getattr(exc, "reason", str(exc)),
        getattr(exc, "status", "?"),
    )
