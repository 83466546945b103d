"""A local OSV query service for ``pip-audit`` on a site with no Internet access.

``pip-audit --vulnerability-service osv --osv-url URL`` asks one POST per package
(``{"package": {"name", "ecosystem"}, "version"}``) and reads ``{"vulns": [...]}``. This
module answers those questions from a vulnerability database the operator brought in: a folder
of OSV JSON advisories, or the zip file OSV publishes for the PyPI ecosystem (``all.zip``,
downloaded on a connected machine and checked before it is carried in). It listens on loopback
only, and never fetches anything.

    python -m havre.host.advisories serve --db /srv/osv/PyPI-all.zip [--port 8808]
    pip-audit -r images/requirements/hub.lock --disable-pip -s osv \\
        --osv-url http://127.0.0.1:8808/v1/query

See docs/sysadmin/supply-chain.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

ECOSYSTEM = "PyPI"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _documents(db: Path) -> Iterator[dict[str, Any]]:
    if db.is_dir():
        for path in sorted(db.rglob("*.json")):
            yield json.loads(path.read_text())
    elif zipfile.is_zipfile(db):
        with zipfile.ZipFile(db) as archive:
            for name in sorted(archive.namelist()):
                if name.endswith(".json"):
                    yield json.loads(archive.read(name))
    else:
        raise ValueError(f"{db} is neither a folder of OSV JSON files nor a zip of them")


class Advisories:
    """OSV advisories of the PyPI ecosystem, by package."""

    def __init__(self, documents: Iterable[dict[str, Any]]) -> None:
        self.by_package: dict[str, list[dict[str, Any]]] = {}
        self.count = 0
        for doc in documents:
            names = {
                canonical(a["package"]["name"])
                for a in doc.get("affected", [])
                if a.get("package", {}).get("ecosystem") == ECOSYSTEM
            }
            for name in names:
                self.by_package.setdefault(name, []).append(doc)
            self.count += 1

    @classmethod
    def load(cls, db: Path) -> Advisories:
        return cls(_documents(db))

    def query(self, name: str, version: str) -> list[dict[str, Any]]:
        """The advisories that affect ``name`` at ``version``."""
        try:
            wanted = Version(version)
        except InvalidVersion:
            return []
        found = []
        for doc in self.by_package.get(canonical(name), []):
            if doc.get("withdrawn"):
                continue
            for affected in doc.get("affected", []):
                package = affected.get("package", {})
                if package.get("ecosystem") != ECOSYSTEM or canonical(package["name"]) != (
                    canonical(name)
                ):
                    continue
                if version in affected.get("versions", []) or any(
                    _in_range(wanted, r) for r in affected.get("ranges", [])
                ):
                    found.append(doc)
                    break
        return found


def _version(text: str) -> Version | None:
    if text == "0":
        return None  # "introduced: 0": from the first version
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _in_range(version: Version, rng: dict[str, Any]) -> bool:
    """OSV's ECOSYSTEM range: events in version order, introduced opens, fixed (exclusive)
    and last_affected (inclusive) close."""
    if rng.get("type") != "ECOSYSTEM":
        return False
    events = []
    for event in rng.get("events", []):
        ((kind, value),) = event.items()
        parsed = _version(value)
        if kind == "introduced" or parsed is not None:
            events.append((parsed, kind))
    events.sort(key=lambda e: (e[0] is not None, e[0] or Version("0")))
    affected = False
    for bound, kind in events:
        if kind == "introduced" and (bound is None or version >= bound):
            affected = True
        elif kind == "fixed" and bound is not None and version >= bound:
            affected = False
        elif kind == "last_affected" and bound is not None and version > bound:
            affected = False
    return affected


def make_server(advisories: Advisories, bind: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path.rstrip("/") != "/v1/query":
                self.send_error(404, "only POST /v1/query is served")
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(min(length, 1 << 16)))
                package, version = body["package"], str(body["version"])
                if package.get("ecosystem", ECOSYSTEM) != ECOSYSTEM:
                    raise ValueError("only the PyPI ecosystem is served")
                name = str(package["name"])
            except (ValueError, KeyError, TypeError) as err:
                self.send_error(400, f"not an OSV query: {err}")
                return
            vulns = advisories.query(name, version)
            data = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # one line per package would drown the audit's own output

    return ThreadingHTTPServer((bind, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m havre.host.advisories")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="answer pip-audit's OSV queries from a local database")
    serve.add_argument("--db", type=Path, required=True, help="OSV JSON folder or all.zip")
    serve.add_argument("--bind", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8808, help="0: any free port")
    args = parser.parse_args(argv)
    try:
        advisories = Advisories.load(args.db)
    except (OSError, ValueError) as err:
        print(f"havre.host.advisories: error: {err}", file=sys.stderr)
        return 2
    server = make_server(advisories, args.bind, args.port)
    host, port = server.server_address[:2]
    print(
        f"{advisories.count} advisories for {len(advisories.by_package)} packages: "
        f"pip-audit -s osv --osv-url http://{host}:{port}/v1/query",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
