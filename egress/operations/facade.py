"""The egress service's facade: every operation on a release request goes through it, and only it.

The web layer (``egress.service``) and the admin command line (``egress.cli``) are thin shells
around :class:`EgressService`. Each operation

1. takes an :class:`~egress.domain.policy.Actor` (built from the hub user with :func:`actor_for`);
2. runs in **one database transaction** that first locks the audit log
   (``egress.audit.db_log.lock``: ``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on
   PostgreSQL), so that everything it reads is current and no other writer interleaves;
3. asks ``egress.domain.policy.require`` whether the actor may do it now (403/409 with the policy's
   sentence otherwise) and ``egress.domain.workflow.next_state`` where the request goes;
4. writes its changes **and** its audit event(s) **and** any notification e-mails to the outbox
   in that same transaction: the audit log and the data can never disagree, whatever crashes.

Refused operations (403, 409, and 400/404/422 from this module) change nothing and are **not**
written to the audit log: the log records what happened to requests, and a refused attempt
happened to nothing. They are logged by the service's ordinary logger (``egress.core``, level
INFO) with the actor, the operation, the request and the reason.

Files
    ``add_file`` reads the file from the project's outputs folder (``havre.enclave.outputs_folder``,
    never following links), runs the automatic checks (``egress.files.checks.check_file``) and,
    for a CSV/TSV table of numbers, the SDC count-table rules, set against the researcher's
    library's record of that exact file (``egress.files.sdc_badge``: no count pass unless the record
    for these bytes says counts; changed files and relaxed parameters flagged; compared again
    on submission); it refuses failing files (422, with every reason).
    The snapshot (and the neutralised/sanitised version, when it differs) goes into the
    content store *before* the transaction; if the transaction then fails, the blob is an
    unreferenced leftover, never a reference to something missing. Reviewers see, and the
    release contains, exactly the ``release_sha256`` blob. The SDC verdict informs the
    checkers; it does not refuse a file (humans decide).

    Adding a file whose path is already in the request replaces it: if its bytes changed, its
    votes start again (``workflow.votes_after_file_change``) when the request is resubmitted.
    Removing a file deletes its votes.

Rounds
    A request starts in round 1. Resubmitting a returned request starts the next round: every
    file's votes of the last round are carried over with ``workflow.votes_after_resubmit``
    (approvals stay, requests for changes become undecided), except for files whose bytes
    changed, which get ``workflow.votes_after_file_change`` (all undecided). Every reviewer must
    submit a review again. The number of reviews required is read from
    ``enclave.review.reviews_required`` each time the request is submitted.

Verification
    :meth:`EgressService.verify_audit` runs :func:`egress.audit.replay.verify_database` (the
    chain, the checkpoints, then the log replayed against the tables).
"""

from __future__ import annotations

from egress.audit.replay import (
    export_database_audit,
    missing_release_checkpoints,
    reconcile_checkpoints,
    verify_database,
)
from egress.domain.errors import (
    EgressError,
    FileRefused,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
)
from egress.operations.audit import AuditOperations
from egress.operations.base import Transaction
from egress.operations.comments import CommentOperations
from egress.operations.common import (
    CHECKERS_MARKER,
    FileContent,
    OutboxMessage,
    ServicePaths,
    StoredAnswer,
    actor_for,
    new_request_id,
    page_cursor,
)
from egress.operations.files import FileOperations
from egress.operations.notifications import NotificationOperations
from egress.operations.reexecution import ReexecutionOperations
from egress.operations.release import ReleaseOperations
from egress.operations.requests import RequestOperations
from egress.operations.reviews import ReviewOperations
from egress.operations.sdc import (
    member_check,
)
from egress.operations.views import RequestViews

__all__ = [
    "CHECKERS_MARKER",
    "EgressError",
    "EgressService",
    "FileContent",
    "FileRefused",
    "IdempotencyInProgress",
    "IdempotencyKeyReused",
    "InvalidInput",
    "NotFound",
    "OutboxMessage",
    "ServicePaths",
    "StoredAnswer",
    "Transaction",
    "actor_for",
    "export_database_audit",
    "member_check",
    "missing_release_checkpoints",
    "new_request_id",
    "page_cursor",
    "reconcile_checkpoints",
    "verify_database",
]


class EgressService(
    RequestOperations,
    FileOperations,
    ReviewOperations,
    CommentOperations,
    ReleaseOperations,
    ReexecutionOperations,
    RequestViews,
    AuditOperations,
    NotificationOperations,
):
    """Every operation of the egress service (see the module documentation).

    ``engine``: a migrated database (``egress.store.db.make_engine`` + ``migrate``).
    ``content``: the content store of snapshots. ``enclave``: the enclave config (projects,
    members, checkers, reviews required). ``outputs_root``: project slug -> its outputs folder
    (default: ``enclave.outputs_dir``). ``signing_key_path``: the Ed25519 private key that signs
    release records (``egress.audit.signing.generate_key``); loaded when first needed.
    ``clock``: returns an aware UTC datetime (tests pass a fake). ``notifier``: called with no
    arguments after a transaction that queued notifications commits (e.g. to wake the sender);
    its failures are logged and ignored. ``checkpoint_path``: a JSON-lines file outside the
    database where the audit head is appended after each release (and read by
    :meth:`verify_audit`). ``service_url``: the service's public URL, for links in e-mails.
    """
