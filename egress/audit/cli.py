"""``python -m egress.audit``: check, export, checkpoint and repair a JSON-lines audit log.

Command line::

    python -m egress.audit verify FILE [--checkpoint FILE ...] [--log-id ID] [--full]
    python -m egress.audit export FILE --format csv|jsonl [--output OUT]
    python -m egress.audit checkpoint FILE          # print the head checkpoint (JSON)
    python -m egress.audit repair FILE              # drop an incomplete last line

``verify`` and ``export`` exit 0 when the log verifies, and 1 with the problem on stderr if not.
"""

from __future__ import annotations

import argparse
import errno
import sys

from egress.audit.chain import Checkpoint
from egress.audit.export import export_file
from egress.audit.file_log import AuditFile, read_checkpoints, repair_truncated_tail
from egress.audit.verify import VerifyReport, verify_file

__all__ = ["main"]


def _report_line(report: VerifyReport, path: str) -> str:
    if report.ok:
        head = report.head
        assert head is not None
        return (
            f"{path}: ok: {report.events_checked} events verified; head: event {head.seq} "
            f"{head.hash}"
        )
    where = f" (first bad event: {report.first_bad_seq})" if report.first_bad_seq else ""
    return f"{path}: FAILED{where}: {report.problem}"


def _cli_checkpoints(paths: list[str]) -> list[Checkpoint]:
    cps: list[Checkpoint] = []
    for p in paths:
        cps.extend(read_checkpoints(p))
    return cps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m egress.audit", description="Check and export Havre's audit log."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def log_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="the audit log (JSON lines)")
        p.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="FILE",
            help="a checkpoint file (JSON or JSON lines; a release record works too). The log "
            "must still hold every checkpointed event. Repeatable.",
        )
        p.add_argument("--log-id", help="the log's id (default: from the checkpoint/first event)")

    ver = sub.add_parser("verify", help="verify the hash chain (exit 1 if it fails)")
    log_args(ver)
    ver.add_argument(
        "--full",
        action="store_true",
        help="also parse every event in full (slower): a verified log is then also a readable "
        "one, even past the last checkpoint",
    )
    exp = sub.add_parser("export", help="export the events (and verify them)")
    log_args(exp)
    exp.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    exp.add_argument("--output", "-o", help="write here instead of stdout")
    sub.add_parser("checkpoint", help="print the head checkpoint as JSON").add_argument("file")
    sub.add_parser("repair", help="drop an incomplete last line").add_argument("file")
    args = parser.parse_args(argv)

    try:
        if args.command == "checkpoint":
            print(AuditFile(args.file).checkpoint().to_json())
            return 0
        if args.command == "repair":
            result = repair_truncated_tail(args.file)
            if result.action == "none":
                print(f"{args.file}: nothing to repair (the last line is complete)")
            elif result.action == "completed":
                print(f"{args.file}: event {result.seq} was whole; added its missing newline")
            else:
                print(
                    f"{args.file}: dropped an incomplete line of {len(result.dropped)} bytes "
                    f"(event {result.seq} was never completely written)"
                )
            return 0
        cps = _cli_checkpoints(args.checkpoint)
        if args.command == "verify":
            report = verify_file(args.file, args.log_id, checkpoints=cps, full_parse=args.full)
            line = _report_line(report, args.file)
            print(line, file=sys.stdout if report.ok else sys.stderr)
        else:
            report = export_file(
                args.file, args.format, args.output, log_id=args.log_id, checkpoints=cps
            )
            if not report.ok:
                print(_report_line(report, args.file), file=sys.stderr)
        return 0 if report.ok else 1
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
            return 1
        print(f"{args.file}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
