"""``havre status`` (issue #19): what it shows and what it calls a problem, on plain data.

The live command on the test enclave: tests/integration/test_host_status.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import pytest

from havre.host.sbom import write as write_sbom
from havre.host.status import (
    ContainerRow,
    Status,
    certificate_row,
    container_rows,
    read_last_verify,
    render,
    sbom_summary,
)
from tests.certificates import self_signed

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


def attrs(name: str, role: str, state: str = "running", **labels: str) -> dict:
    return {
        "Name": f"/{name}",
        "State": {"Status": state},
        "Config": {"Image": f"havre/{role}:0.1.0", "Labels": {"havre.role": role, **labels}},
    }


def healthy(**changes) -> Status:
    rows = container_rows(
        [attrs(f"e-{r}", r) for r in ("hub", "egress", "runner", "broker", "idp")]
        + [
            attrs(
                "e-nb-cardio-alice",
                "notebook",
                **{"havre.project": "cardio", "havre.user": "alice"},
            ),
            attrs(
                "e-nb-cardio-bob", "notebook", **{"havre.project": "cardio", "havre.user": "bob"}
            ),
            attrs(
                "e-nb-diab-carol",
                "notebook",
                "exited",
                **{"havre.project": "diab", "havre.user": "carol"},
            ),
        ]
    )
    base = dict(
        enclave="e",
        containers=rows,
        images={"havre/hub:0.1.0": "0123456789ab"},
        pending=[{"id": "r1", "project": "cardio", "state": "submitted"}],
        last_verify={"ok": True, "at": "2026-12-06T11:00:00+00:00"},
    )
    base.update(changes)
    return Status(**base)


def test_a_healthy_enclave_has_no_problems_and_shows_everything():
    status = healthy()
    assert status.problems() == []
    assert [c.role for c in status.containers][:5] == ["broker", "idp", "egress", "runner", "hub"]
    assert status.servers == {"cardio": ["alice", "bob"]}  # the exited server is not running
    text = render(status)
    for shown in (
        "hub",
        "havre/hub:0.1.0",
        "cardio",
        "2: alice, bob",
        "r1",
        "passed at",
        "No problems",
    ):
        assert shown in text, shown
    data = status.as_json()
    assert json.loads(json.dumps(data))["servers"] == {"cardio": ["alice", "bob"]}


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        (
            {"containers": [ContainerRow("e-hub", "hub", "running", "x")]},
            "The egress container does not exist",
        ),
        (
            {
                "containers": container_rows(
                    [
                        attrs(f"e-{r}", r, "exited" if r == "egress" else "running")
                        for r in ("hub", "egress", "runner", "broker", "idp")
                    ]
                )
            },
            "(e-egress) is exited, not running",
        ),
        (
            {"pending": None, "pending_error": "its container is not running."},
            "could not list pending requests: its container is not running.",
        ),
        ({"last_verify": None}, "never been verified"),
        ({"last_verify": {"ok": False, "at": "2026-12-06T11:00:00+00:00"}}, "FAILED"),
    ],
)
def test_each_problem_is_a_sentence(change, sentence):
    status = healthy(**change)
    problems = status.problems()
    assert any(sentence in p for p in problems), problems
    assert "Problems:" in render(status)


def test_certificate_expiry(tmp_path):
    cert, _key = self_signed(tmp_path)  # valid for a day from now
    now = datetime.datetime.now(datetime.UTC)
    row = certificate_row(cert, now)
    assert row.days_left == 0 and row.path == str(cert)
    assert any("expires in 0 days" in p for p in healthy(certificates=[row]).problems())
    later = certificate_row(cert, now + datetime.timedelta(days=3))
    assert any("expired on" in p for p in healthy(certificates=[later]).problems())
    earlier = certificate_row(cert, now - datetime.timedelta(days=60))  # control: 60 days left
    assert healthy(certificates=[earlier]).problems() == []
    assert "valid until" in render(healthy(certificates=[earlier]))


def test_the_last_verification_file(tmp_path):
    from egress.monitoring.verify_record import FILE_NAME, record_verify
    from havre.host.status import LAST_VERIFY_FILE

    assert LAST_VERIFY_FILE == Path("egress") / FILE_NAME  # where the service writes it
    path = tmp_path / LAST_VERIFY_FILE
    assert read_last_verify(path) is None
    record_verify(path, False, NOW)  # the egress service's writer, read by the host's reader
    assert read_last_verify(path) == {"ok": False, "at": NOW.isoformat()}
    path.write_text("{not json")
    assert read_last_verify(path) is None


def test_an_images_sbom_digest_or_no_sbom(tmp_path):
    """The SBOM images/build.sh writes next to the images (``<name>.cdx.json``): its digest
    and size, whether it describes the image on the host; "no SBOM" without one."""
    image_id = "sha256:" + "ab12" * 16
    wheel = tmp_path / "havre-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"a wheel")
    path = tmp_path / "egress.cdx.json"
    write_sbom(
        name="egress",
        tag="havre/egress:0.1.0",
        image_id=image_id,
        installed="havre==0.1.0\ntornado==6.5\n",
        lock_text="",
        output=path,
        wheels=[wheel],
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert sbom_summary("havre/egress:0.1.0", "ab12ab12ab", tmp_path) == (
        f"sha256:{digest} (2 components)"
    )
    assert sbom_summary("havre/egress:0.1.0", "ffffffffff", tmp_path).endswith("of another build)")
    assert sbom_summary("havre/hub:0.1.0", "ab12ab12ab", tmp_path) == "no SBOM"
    (tmp_path / "notebook.cdx.json").write_text("[1, 2")
    assert "not an SBOM written by images/build.sh" in sbom_summary(
        "havre/notebook:0.1.0", "", tmp_path
    )
    text = render(healthy(sboms={"havre/hub:0.1.0": "sha256:0123 (3 components)"}))
    assert "SBOM: sha256:0123 (3 components)" in text
    assert "SBOM: no SBOM" in render(healthy())
