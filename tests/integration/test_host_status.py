"""``havre status`` on the running test enclave (issue #19): its containers, images, the
servers running per project, the requests waiting for checkers (asked of the egress
container), the audit log's last verification and a certificate's expiry.

Control and problem with the same command: while the audit log has never been verified the
command exits 1 naming it; after a checker verifies it (the egress API), it shows "passed"
and that problem is gone. A stopped service container is a problem too (the runner is
stopped, then started again).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from havre.host.layout import runner_container_name
from tests.certificates import self_signed
from tests.integration.test_egress_flow import Egress

REPO = Path(__file__).resolve().parents[2]


def havre_status(enclave, *args: str) -> tuple[int, str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "havre.host.cli",
            "status",
            "--config",
            str(enclave.config.source),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    return result.returncode, result.stdout + result.stderr


def test_havre_status_shows_the_enclave(enclave, alice_cardio, tmp_path):
    alice, _server = alice_cardio  # a running server in cardio
    request = Egress(alice).ok(
        "POST", "api/requests", 201, json={"project": "cardio", "title": "Status"}
    )
    assert request["state"] == "draft"  # not waiting for checkers

    cert, _key = self_signed(tmp_path)
    code, out = havre_status(enclave, "--json", "--tls-cert", str(cert))
    status = json.loads(out)
    roles = {c["role"]: c["state"] for c in status["containers"]}
    for role in ("broker", "idp", "egress", "runner", "hub"):
        assert roles.get(role) == "running", (role, roles)
    assert "alice" in status["servers"].get("cardio", []), status["servers"]
    assert all(not v.startswith("(not") for v in status["images"].values()), status["images"]
    assert set(status["sboms"]) == set(status["images"])  # each: a digest, or "no SBOM"
    assert status["pending"] is not None, status["pending_error"]
    assert status["certificates"][0]["days_left"] == 0
    if status["last_verify"] is None:  # nobody verified yet in this session: a problem
        assert code == 1 and any("never been verified" in p for p in status["problems"])

    Egress(enclave.user("olivia")).ok("GET", "api/audit/verify")
    code, text = havre_status(enclave)
    print(f"\n$ havre status --config {enclave.config.source}\n{text}")  # for the run's log
    assert code == 0 and "No problems found." in text, text  # control
    assert "passed at" in text and "never been verified" not in text, text
    assert "cardio" in text and "Requests waiting for output checkers" in text
    assert "SBOM: " in text

    runner = enclave.docker.containers.get(runner_container_name(enclave.config))
    runner.stop(timeout=10)
    try:
        code, text = havre_status(enclave)
        assert code == 1 and "is exited, not running" in text, text
    finally:
        runner.start()
