"""pip-audit against a vulnerability database the operator provides (no Internet).

The real ``pip-audit`` audits the build image's lock file (``images/requirements/build.lock``,
hashed, so pip is not run) against ``python -m havre.host.advisories serve`` on loopback,
serving a tiny OSV advisory folder this test writes: one advisory that affects the locked
``wheel`` (reported, with its fix) and one whose fix is the locked ``setuptools`` (not reported:
the control). With an empty folder the same audit finds nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from havre.host.advisories import Advisories

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "images" / "requirements" / "build.lock"


def _pins() -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", LOCK.read_text(), re.M))


def _advisory(ident: str, package: str, events: list[dict]) -> dict:
    return {
        "schema_version": "1.6.0",
        "id": ident,
        "summary": f"test advisory {ident}",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": package},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }


def _bump(version: str) -> str:
    parts = version.split(".")
    return ".".join([*parts[:-1], str(int(parts[-1]) + 1)])


@pytest.fixture
def advisory_db(tmp_path):
    pins = _pins()
    db = tmp_path / "osv"
    db.mkdir()
    hit = _advisory("HAVRE-TEST-1", "wheel", [{"introduced": "0"}, {"fixed": _bump(pins["wheel"])}])
    fixed = _advisory("HAVRE-TEST-2", "setuptools", [{"introduced": "0"},
                                                     {"fixed": pins["setuptools"]}])  # fmt: skip
    (db / "HAVRE-TEST-1.json").write_text(json.dumps(hit))
    (db / "HAVRE-TEST-2.json").write_text(json.dumps(fixed))
    return db


def _audit(db: Path, tmp_path: Path) -> tuple[int, dict]:
    server = subprocess.Popen(
        [sys.executable, "-m", "havre.host.advisories", "serve", "--db", str(db), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = server.stdout.readline()
        url = re.search(r"--osv-url (http://127\.0\.0\.1:\d+/v1/query)", banner).group(1)
        run = subprocess.run(
            [sys.executable, "-m", "pip_audit", "-r", str(LOCK), "--disable-pip"]
            + ["-s", "osv", "--osv-url", url, "--format", "json", "--progress-spinner", "off"]
            + ["--cache-dir", str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return run.returncode, json.loads(run.stdout)


def test_pip_audit_reports_an_advisory_from_the_local_database(advisory_db, tmp_path):
    status, report = _audit(advisory_db, tmp_path)
    by_name = {d["name"]: d for d in report["dependencies"]}
    assert set(by_name) == set(_pins())
    assert status == 1  # pip-audit's "vulnerabilities found"
    (vuln,) = by_name["wheel"]["vulns"]
    assert vuln["id"] == "HAVRE-TEST-1" and vuln["fix_versions"] == [_bump(_pins()["wheel"])]
    assert by_name["setuptools"]["vulns"] == []  # fixed in the locked version: not reported


def test_an_empty_database_reports_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, report = _audit(empty, tmp_path)
    assert status == 0
    assert all(d["vulns"] == [] for d in report["dependencies"])


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.0", False), ("1.2", True), ("1.4.9", True), ("1.5", False), ("2.0", True), ("2.1", True),
     ("2.2", False)],
)  # fmt: skip
def test_osv_ranges_fixed_and_last_affected(version, affected):
    doc = _advisory("X", "Some_Pkg", [{"introduced": "1.2"}, {"fixed": "1.5"},
                                      {"introduced": "2.0"}, {"last_affected": "2.1"}])  # fmt: skip
    assert bool(Advisories([doc]).query("some-pkg", version)) is affected
