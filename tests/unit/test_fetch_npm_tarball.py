"""scripts/fetch_npm_tarball.py and havre_ensure_axe (scripts/lib/browser.sh): the accessibility
audit's script is installed only from a tarball whose SHA-512 is the one pinned in the repository.

Each test serves tarballs it made itself from a loopback HTTP server: the genuine one (control:
installed) and a copy with one byte of the script changed (refused with a sentence, nothing
written, an installed copy left as it was).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "fetch_npm_tarball.py"
BROWSER_SH = REPO / "scripts" / "lib" / "browser.sh"
GENUINE = b"/*! axe v0.0.0-test */ window.axe = {run: function () {}};\n"


def npm_tarball(script: bytes) -> bytes:
    """A gzipped npm tarball (``package/...``) holding ``script`` as axe.min.js."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in (
            ("package/package.json", b'{"name": "axe-core"}'),
            ("package/axe.min.js", script),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture(scope="module")
def tarballs() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A loopback server: /genuine.tgz and /tampered.tgz (one byte of the script changed)."""
    files = {
        "/genuine.tgz": npm_tarball(GENUINE),
        "/tampered.tgz": npm_tarball(GENUINE.replace(b"{}", b"{ }")),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str, pin: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), url, pin, "axe.min.js", str(dest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_only_the_tarball_with_the_pinned_hash_is_installed(tarballs, tmp_path: Path) -> None:
    base, files = tarballs
    pin = integrity(files["/genuine.tgz"])
    dest = tmp_path / "node_modules" / "axe-core" / "axe.min.js"

    # attack: the same path, a changed tarball, the genuine one's pin
    refused = fetch(base + "/tampered.tgz", pin, dest)
    assert refused.returncode == 1
    assert "does not match the pinned hash" in refused.stderr
    assert "nothing was installed" in refused.stderr
    assert not dest.exists()

    # control: the genuine tarball under the same pin is installed
    installed = fetch(base + "/genuine.tgz", pin, dest)
    assert installed.returncode == 0, installed.stderr
    assert dest.read_bytes() == GENUINE

    # and a later tampered download leaves the installed copy exactly as it was
    again = fetch(base + "/tampered.tgz", pin, dest)
    assert again.returncode == 1
    assert dest.read_bytes() == GENUINE
    assert [p.name for p in dest.parent.iterdir()] == ["axe.min.js"]  # no temporary left


@pytest.mark.parametrize(
    "pin, sentence",
    [
        ("sha256-" + base64.b64encode(bytes(32)).decode(), "not of the form sha512-<base64>"),
        ("sha512-not*base64", "not valid base64"),
        ("sha512-" + base64.b64encode(bytes(32)).decode(), "not a SHA-512 digest"),
    ],
)
def test_a_malformed_pin_is_refused_before_any_download(tmp_path: Path, pin, sentence) -> None:
    # an address nothing answers on: the refusal must come before any connection is tried
    result = fetch("http://127.0.0.1:9/never.tgz", pin, tmp_path / "axe.min.js")
    assert result.returncode == 1
    assert sentence in result.stderr
    assert not (tmp_path / "axe.min.js").exists()


def test_havre_ensure_axe_refuses_a_tarball_that_is_not_the_pinned_one(
    tarballs, tmp_path: Path
) -> None:
    """The setup's own function, with its own pin, pointed at a changed tarball."""
    base, _ = tarballs
    pinned = re.search(r'^HAVRE_AXE_INTEGRITY="(sha512-[^"]+)"$', BROWSER_SH.read_text(), re.M)
    assert pinned, "scripts/lib/browser.sh pins no HAVRE_AXE_INTEGRITY"
    assert len(base64.b64decode(pinned.group(1).removeprefix("sha512-"))) == 64
    run = subprocess.run(
        ["bash", "-c", f"source {BROWSER_SH}; havre_ensure_axe"],
        env={
            "PATH": "/usr/bin:/bin",
            "HAVRE_AXE_DIR": str(tmp_path / "axe"),
            "HAVRE_AXE_URL": base + "/tampered.tgz",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode != 0
    assert f"expected {pinned.group(1)}" in run.stderr
    assert "axe-core was not installed" in run.stderr
    assert not (tmp_path / "axe" / "node_modules" / "axe-core" / "axe.min.js").exists()
