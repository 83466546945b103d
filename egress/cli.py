"""``havre-egress-admin``: the egress service's administration commands (run on the host).

::

    havre-egress-admin [--db URL] [--state DIR] migrate
    havre-egress-admin [--db URL] [--state DIR] verify [--checkpoint FILE ...] [--no-replay]
    havre-egress-admin [--db URL] [--state DIR] export --format csv|jsonl [--output FILE]
    havre-egress-admin [--db URL] [--state DIR] pending [--json]
    havre-egress-admin [--db URL] [--state DIR] release-record REQUEST_ID
    havre-egress-admin [--db URL] [--state DIR] keygen

``--state`` is the enclave's state directory (default ``$HAVRE_STATE_DIR`` or
``/var/lib/havre``); the service keeps its files in ``<state>/egress/``: the SQLite database
``egress.db``, the content store ``content/``, the signing key ``signing-key.pem`` (+ ``.pub``)
and the checkpoint file ``audit-checkpoints.jsonl``. ``--db`` overrides the database
(default ``$HAVRE_EGRESS_DB``, else the SQLite file), e.g.
``postgresql+psycopg://havre@db/havre_egress``.

Exit status: 0 when all is well; 1 when ``verify`` (or ``export``) finds the audit log or the
database tampered with, or a release record doesn't verify; 2 on usage or connection errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from egress.audit.file_log import read_checkpoints
from egress.audit.signing import generate_key, load_public_key, public_key_path, verify_record
from egress.audit.verify import VerifyReport
from egress.domain.workflow import Party, RequestState, turn_of
from egress.monitoring.verify_record import FILE_NAME as VERIFY_RECORD
from egress.monitoring.verify_record import record_verify
from egress.operations.facade import (
    ServicePaths,
    export_database_audit,
    missing_release_checkpoints,
    reconcile_checkpoints,
    verify_database,
)
from egress.store.db import make_engine, migrate, read_session
from egress.store.models import Release, Request, Review
from havre.enclave.logs import configure as configure_logs
from havre.enclave.logs import security_event

log = logging.getLogger("egress.cli")

DEFAULT_STATE_DIR = "/var/lib/havre"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="database URL (default: $HAVRE_EGRESS_DB, else sqlite:///<state>/egress/egress.db)",
    )
    common.add_argument(
        "--state",
        default=argparse.SUPPRESS,
        help="the enclave's state directory (default: $HAVRE_STATE_DIR or /var/lib/havre)",
    )
    parser = argparse.ArgumentParser(
        prog="havre-egress-admin",
        description="Administer Havre's egress service: migrations, audit log, releases.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", parents=[common], help="create or upgrade the database schema")
    ver = sub.add_parser(
        "verify", parents=[common], help="verify the audit log and the database (exit 1 if not)"
    )
    ver.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint file kept outside the database (JSON lines, or a release record); "
        "<state>/egress/audit-checkpoints.jsonl is always read when it exists. Repeatable.",
    )
    ver.add_argument(
        "--no-replay",
        action="store_true",
        help="only check the hash chain, not the tables against it",
    )
    exp = sub.add_parser("export", parents=[common], help="export the audit log (and verify it)")
    exp.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    exp.add_argument("--output", "-o", help="write here instead of stdout")
    pen = sub.add_parser("pending", parents=[common], help="requests waiting for output checkers")
    pen.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    rec = sub.add_parser(
        "release-record",
        parents=[common],
        help="print a request's signed release record and check its signature",
    )
    rec.add_argument("request_id")
    sub.add_parser(
        "keygen", parents=[common], help="create the signing key pair (never overwrites one)"
    )
    return parser


def _paths(args: argparse.Namespace) -> tuple[ServicePaths, str]:
    state = getattr(args, "state", None) or os.environ.get("HAVRE_STATE_DIR") or DEFAULT_STATE_DIR
    paths = ServicePaths(Path(state))
    url = getattr(args, "db", None) or os.environ.get("HAVRE_EGRESS_DB") or paths.db_url
    return paths, url


def _record_verify(paths: ServicePaths, ok: bool) -> None:
    """Keep the result for ``/metrics`` and ``havre status`` (egress.monitoring.verify_record)."""
    try:
        record_verify(paths.egress_dir / VERIFY_RECORD, ok, datetime.now(UTC))
    except OSError as exc:
        print(f"could not keep the verification's result: {exc}", file=sys.stderr)


def _report(report: VerifyReport) -> int:
    if report.ok:
        head = report.head
        where = f"; head: event {head.seq} {head.hash}" if head else ""
        print(f"ok: {report.events_checked} events verified, database consistent{where}")
        return 0
    first = f" (first bad event: {report.first_bad_seq})" if report.first_bad_seq else ""
    print(f"FAILED{first}: {report.problem}", file=sys.stderr)
    _log_verify_failed(report.problem, report.first_bad_seq)
    return 1


def _log_verify_failed(problem: str, event_id: int | None = None) -> None:
    """The security event ``audit.verify_failed`` (in the egress container, where
    ``$HAVRE_LOG_FORMAT`` is json, a JSON line on standard error)."""
    security_event(
        log,
        "audit.verify_failed",
        "havre-egress-admin verify: the audit log fails verification: %s",
        problem,
        event_id=event_id,
        problem=problem,
    )


def _public_key(paths: ServicePaths) -> Ed25519PublicKey | None:
    pub = Path(public_key_path(paths.signing_key))
    return load_public_key(pub) if pub.exists() else None


def _age(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "-"
    seconds = int((now - since).total_seconds())
    days, rest = divmod(seconds, 86400)
    return f"{days}d{rest // 3600:02d}h" if days else f"{rest // 3600}h{rest % 3600 // 60:02d}m"


def _pending(url: str, as_json: bool) -> int:
    engine = make_engine(url)
    waiting = [s.value for s in RequestState if turn_of(s) is Party.CHECKERS]
    now = datetime.now(UTC)
    rows = []
    with read_session(engine) as session:
        for request in session.execute(
            select(Request).where(Request.state.in_(waiting)).order_by(Request.submitted_at)
        ).scalars():
            reviews = session.execute(
                select(func.count())
                .select_from(Review)
                .where(Review.request_id == request.id, Review.round == request.round)
            ).scalar_one()
            rows.append(
                {
                    "id": request.id,
                    "project": request.project,
                    "author": request.author,
                    "state": request.state,
                    "round": request.round,
                    "reviews": f"{reviews}/{request.reviews_required}",
                    "submitted_at": request.submitted_at.isoformat()
                    if request.submitted_at
                    else None,
                    "waiting": _age(request.submitted_at, now),
                }
            )
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not rows:
        print("no request is waiting for output checkers")
        return 0
    columns = ("id", "project", "author", "state", "round", "reviews", "waiting")
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
    return 0


def _release_record(url: str, paths: ServicePaths, request_id: str) -> int:
    engine = make_engine(url)
    with read_session(engine) as session:
        record_json = session.execute(
            select(Release.record_json).where(Release.request_id == request_id)
        ).scalar_one_or_none()
    if record_json is None:
        print(f"request {request_id} has no release record", file=sys.stderr)
        return 1
    signed = json.loads(record_json)
    print(json.dumps(signed, indent=2, sort_keys=True, ensure_ascii=False))
    public = _public_key(paths)
    if public is None:
        print(
            f"signature: NOT CHECKED (no public key at {public_key_path(paths.signing_key)})",
            file=sys.stderr,
        )
        return 1
    if verify_record(signed, public):
        key = signed["signature"]["key_id"]
        print(f"signature: valid (ed25519, key id {key})", file=sys.stderr)
        return 0
    print("signature: INVALID: the record was altered or signed by another key", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:  # a command of its own (not called by a program)
        try:
            configure_logs("egress-admin", level=logging.WARNING)
        except ValueError as err:
            print(f"havre-egress-admin: {err}", file=sys.stderr)
            return 2
    paths, url = _paths(args)
    database = make_url(url).database if make_url(url).get_backend_name() == "sqlite" else None
    if args.command not in ("migrate", "keygen") and database and not Path(database).exists():
        print(f"no egress database at {database} (wrong --state or --db?)", file=sys.stderr)
        return 2
    try:
        if args.command == "migrate":
            migrate(make_engine(url))
            shown = make_url(url).render_as_string(hide_password=True)
            print(f"the egress database is up to date ({shown})")
            return 0
        if args.command == "keygen":
            paths.signing_key.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            try:
                generate_key(paths.signing_key)
            except FileExistsError as exc:
                print(str(exc), file=sys.stderr)
                return 1
            print(f"created {paths.signing_key} and {public_key_path(paths.signing_key)}")
            return 0
        if args.command == "verify":
            engine = make_engine(url)
            appended = []
            try:  # releases a crash kept out of the checkpoint file (#13)
                if paths.egress_dir.is_dir():
                    appended, _ = reconcile_checkpoints(
                        engine, paths.checkpoints, public_key=_public_key(paths)
                    )
            except OSError as exc:
                print(f"could not append missing checkpoints: {exc}", file=sys.stderr)
            for request_id, cp in appended:
                print(
                    f"appended the missing checkpoint of the release of {request_id} "
                    f"(event {cp.seq}) to {paths.checkpoints}",
                    file=sys.stderr,
                )
            checkpoints = []
            files = [paths.checkpoints] if paths.checkpoints.exists() else []
            for file in [*files, *args.checkpoint]:
                checkpoints.extend(read_checkpoints(file))
            report = verify_database(
                engine,
                public_key=_public_key(paths),
                checkpoints=checkpoints,
                replay=not args.no_replay,
            )
            if report.ok and (missing := missing_release_checkpoints(engine, checkpoints)):
                request_id, cp = missing[0]
                problem = (
                    f"the release of request {request_id} (event {cp.seq}) has no "
                    f"checkpoint in {paths.checkpoints} ({len(missing)} missing)"
                )
                print(f"FAILED: {problem}", file=sys.stderr)
                _log_verify_failed(problem, cp.seq)
                return 1
            _record_verify(paths, report.ok)
            return _report(report)
        if args.command == "export":
            engine = make_engine(url)
            if args.output:
                with open(args.output, "w", encoding="utf-8", newline="") as out:
                    report = export_database_audit(engine, args.format, out)
            else:
                report = export_database_audit(engine, args.format, sys.stdout)
                sys.stdout.flush()
            if not report.ok:
                print(f"FAILED: {report.problem}", file=sys.stderr)
            return 0 if report.ok else 1
        if args.command == "pending":
            return _pending(url, args.json)
        if args.command == "release-record":
            return _release_record(url, paths, args.request_id)
    except SQLAlchemyError as exc:
        print(
            f"database error: {exc.__class__.__name__}: {str(exc).splitlines()[0]} "
            "(is the database reachable, and migrated with `havre-egress-admin migrate`?)",
            file=sys.stderr,
        )
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
