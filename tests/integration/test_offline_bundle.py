"""The offline bundle: exported on this (connected) host, installed where there is no network.

``scripts/offline-bundle.sh export`` runs for real here: the Debian packages (the whole
Depends/Pre-Depends/Recommends closure, from the Debian mirror) and the wheels (from the package
index) are downloaded as on a site's export host. Only the image part is cut down, with the
documented switch ``HAVRE_BUNDLE_IMAGES=base`` (the base image alone, ~30 MB gzipped, instead of
~1.9 GB of images): saving more images proves nothing more about the install path.

The install runs in a container of ``havre/base:bookworm`` (Debian 12 minbase: no Docker, no
Python, no iproute2) started with ``--network none``: no interface but loopback, so any step
that wanted an index or a mirror would fail. dockerd can't run in a container, so the install
is run with ``--no-images`` and the image archive is checked from here (its tags, without
loading it). Controls: in that same container, the same ``pip install`` without the bundle's
wheels fails, and the container has no route anywhere; a bundle with one byte changed, a file
added or a file removed is refused before anything is installed (no package, no /opt/havre).

About 3 minutes on a 2-core machine (export ~40 s, install ~2 min).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "offline-bundle.sh"
BASE_IMAGE = "havre/base:bookworm"

#: what the bundle must install on a fresh Debian 12 (scripts/lib/*.sh and the Ansible roles)
EXPECTED_PACKAGES = (
    "docker.io",
    "iptables",
    "python3",
    "python3-venv",
    "python3-apt",
    "iproute2",
    "openssl",
    "ca-certificates",
    "age",
)

#: measurements printed at the end of the module (size in MB, seconds)
MEASURED: dict[str, float] = {}


def _docker_ok() -> None:
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            f"needs a running Docker engine (scripts/run-tests.sh starts one): {probe.stderr}"
        )
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode:
        pytest.skip(f"needs image {BASE_IMAGE}: build it with `bash images/build.sh`")
    if os.geteuid() != 0:
        pytest.skip("the bundle's export and install run as root (CI runs as root)")


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    _docker_ok()
    dest = tmp_path_factory.mktemp("offline") / "bundle"
    started = time.monotonic()
    run = subprocess.run(
        ["bash", str(SCRIPT), "export", str(dest)],
        env={**os.environ, "HAVRE_BUNDLE_IMAGES": "base"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    MEASURED["export_seconds"] = time.monotonic() - started
    assert run.returncode == 0, run.stdout + run.stderr
    MEASURED["bundle_mb"] = _du_mb(dest)
    for part in ("debs", "wheels", "images", "source"):
        MEASURED[f"{part}_mb"] = _du_mb(dest / part)
    return dest


def _in_container(
    mounts: dict[Path, str], script: str, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run bash SCRIPT in a fresh havre/base:bookworm with no network at all."""
    argv = ["docker", "run", "--rm", "--network", "none"]
    for host, inside in mounts.items():
        argv += ["-v", f"{host}:{inside}:ro"]
    argv += [BASE_IMAGE, "bash", "-c", script]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


INSTALL_AND_PROBE = r"""
set -u
echo "== before"; command -v python3 dockerd ip || true
start=$SECONDS
bash /bundle/offline-bundle.sh install /bundle --no-images; echo "INSTALL_RC=$?"
echo "INSTALL_SECONDS=$((SECONDS - start))"
for p in __PACKAGES__; do dpkg-query -W -f='PKG ${Package} ${db:Status-Status}\n' "$p"; done
dockerd --version && echo DOCKERD_OK
python3 -m venv /tmp/probe-venv && echo VENV_OK
/opt/havre/venv/bin/havre --help >/dev/null && echo HAVRE_HELP_OK
/opt/havre/venv/bin/havre check-config --help >/dev/null && echo HAVRE_CHECK_CONFIG_OK
/opt/havre/venv/bin/ansible-playbook --version | head -n1
/opt/havre/venv/bin/python -c 'import yaml, cryptography, docker, requests, argon2
print("IMPORTS_OK")'
test -f /opt/havre/src/ansible/site.yml && echo SOURCE_OK
# the venv's pip stays on the bundle's wheels (upgrade.yml's reinstall from the source works)
/opt/havre/venv/bin/pip install --quiet /opt/havre/src && echo REINSTALL_FROM_SOURCE_OK
# Ansible on the offline host: the playbooks load, and package_facts (the docker role's test for
# what to install with apt) sees the bundle's packages, so the role runs no apt
cd /opt/havre/src/ansible
/opt/havre/venv/bin/ansible-playbook -i inventories/local/hosts.yml site.yml --syntax-check \
    2>&1 | grep -q '^playbook: site.yml' && echo SYNTAX_OK
/opt/havre/venv/bin/ansible -i inventories/local/hosts.yml havre -m ansible.builtin.package_facts \
    2>&1 | grep -q '"name": "docker.io"' && echo PACKAGE_FACTS_DOCKER_OK
cd /
echo "LINKS $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
# control: the same install without the bundle's wheels (the index is all pip has then)
/tmp/probe-venv/bin/pip install --retries 0 --timeout 5 -r /bundle/wheels/requirements.txt \
    >/tmp/control.log 2>&1; echo "CONTROL_RC=$?"
tail -n 2 /tmp/control.log
# a second install (a newer bundle, or the same again) keeps what is installed and succeeds
bash /bundle/offline-bundle.sh install /bundle --no-images 2>&1 | grep -E 'already installed|error'
echo "SECOND_RC=${PIPESTATUS[0]}"
/opt/havre/venv/bin/havre --help >/dev/null && echo HAVRE_HELP_AFTER_SECOND_OK
"""


@pytest.fixture(scope="module")
def installed(bundle: Path) -> subprocess.CompletedProcess:
    script = INSTALL_AND_PROBE.replace("__PACKAGES__", " ".join(EXPECTED_PACKAGES))
    started = time.monotonic()
    run = _in_container({bundle: "/bundle"}, script)
    MEASURED["install_container_seconds"] = time.monotonic() - started
    print(
        "\noffline bundle (HAVRE_BUNDLE_IMAGES=base): "
        + ", ".join(f"{k}={v:.1f}" for k, v in sorted(MEASURED.items()))
    )
    return run


def test_export_writes_every_part_and_a_manifest_of_every_file(bundle: Path) -> None:
    manifest = (bundle / "MANIFEST").read_text()
    listed = {
        line.split("  ", 1)[1]
        for line in manifest.splitlines()
        if line and not line.startswith("#")
    }
    on_disk = {
        str(p.relative_to(bundle))
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "MANIFEST"
    }
    assert listed == on_disk
    version = next(
        line.split('"')[1]
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.startswith("version = ")
    )
    assert f"# havre {version}\n" in manifest
    assert any(line.startswith("# deb docker.io ") for line in manifest.splitlines())
    assert any(
        line.startswith("# image havre/base:bookworm sha256:") for line in manifest.splitlines()
    )
    wheels = {p.name.split("-")[0].lower() for p in (bundle / "wheels").glob("*.whl")}
    assert {
        "havre",
        "ansible_core",
        "pip",
        "setuptools",
        "wheel",
        "cryptography",
        "docker",
    } <= wheels
    # the closure is for a fresh host, not what this host happens to lack: libc6 and the
    # Python runtime are in it although this host has them
    debs = {p.name.split("_")[0] for p in (bundle / "debs").glob("*.deb")}
    assert {"libc6", "python3.11-minimal", "containerd", "runc"} | set(EXPECTED_PACKAGES) <= debs
    assert (bundle / "debs" / "INSTALL").read_text().split() == list(EXPECTED_PACKAGES)


def test_image_archive_holds_the_saved_image(bundle: Path) -> None:
    archive = next((bundle / "images").glob("havre-images-*.tar.gz"))
    with gzip.open(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name == "manifest.json":
                manifest = json.load(tar.extractfile(member))
                break
        else:
            pytest.fail("no manifest.json in the docker save archive")
    tags = [tag for entry in manifest for tag in entry.get("RepoTags") or []]
    assert tags == [BASE_IMAGE]


def test_image_archive_loads_as_the_image_in_the_manifest(bundle: Path) -> None:
    """docker load of the bundle's archive (here the base image, already on this host: the
    load changes no tag) gives the image id the MANIFEST records."""
    archive = next((bundle / "images").glob("havre-images-*.tar.gz"))
    with gzip.open(archive) as raw:
        load = subprocess.run(
            ["docker", "load"], stdin=raw, capture_output=True, text=True, timeout=300
        )
    assert load.returncode == 0, load.stderr
    assert f"Loaded image: {BASE_IMAGE}" in load.stdout
    recorded = next(
        line.split()[-1]
        for line in (bundle / "MANIFEST").read_text().splitlines()
        if line.startswith(f"# image {BASE_IMAGE} ")
    )
    now = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", BASE_IMAGE], capture_output=True, text=True
    )
    assert now.stdout.strip() == recorded


def test_install_needs_no_network_and_gives_docker_python_venv_and_havre(
    installed: subprocess.CompletedProcess,
) -> None:
    out = installed.stdout
    assert "INSTALL_RC=0" in out, out + installed.stderr
    for package in EXPECTED_PACKAGES:
        assert f"PKG {package} installed" in out, out
    for marker in (
        "DOCKERD_OK",
        "VENV_OK",
        "HAVRE_HELP_OK",
        "HAVRE_CHECK_CONFIG_OK",
        "IMPORTS_OK",
        "SOURCE_OK",
        "REINSTALL_FROM_SOURCE_OK",
        "SYNTAX_OK",
        "PACKAGE_FACTS_DOCKER_OK",
    ):
        assert marker in out, out + installed.stderr
    assert "ansible-playbook [core 2.18." in out
    assert "Docker version 20.10" in out
    # the container really had no way out: loopback only
    links = next(line for line in out.splitlines() if line.startswith("LINKS "))
    assert links.split()[1:] == ["lo"], links


def test_a_second_install_leaves_installed_packages_and_succeeds(
    installed: subprocess.CompletedProcess,
) -> None:
    out = installed.stdout
    assert "SECOND_RC=0" in out, out + installed.stderr
    assert "already installed; left as they are" in out, out
    assert "HAVRE_HELP_AFTER_SECOND_OK" in out, out


def test_control_the_same_pip_install_without_the_bundle_fails(
    installed: subprocess.CompletedProcess,
) -> None:
    out = installed.stdout
    assert "CONTROL_RC=0" not in out and "CONTROL_RC=" in out, out
    assert "No matching distribution" in out or "Could not find a version" in out, out


def _copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest, copy_function=os.link)  # hard links: instant, no 180 MB copy
    return dest


def _rewrite(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link: the original bundle stays as it was
    path.write_bytes(data)


TAMPERINGS = ("one-byte", "extra-wheel", "missing-deb", "manifest-sha256")


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_tampered_bundle_is_refused_before_anything_is_installed(
    bundle: Path, tmp_path: Path, tampering: str
) -> None:
    copy = _copy_bundle(bundle, tmp_path / "bundle")
    env_prefix = ""
    if tampering == "one-byte":
        target = next((copy / "wheels").glob("ansible_core-*.whl"))
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        _rewrite(target, bytes(data))
        expected = f"{target.relative_to(copy)} differs from its MANIFEST"
    elif tampering == "extra-wheel":
        wheel = next((copy / "wheels").glob("requests-*.whl"))
        extra = copy / "wheels" / "requests-99.0.0-py3-none-any.whl"
        extra.write_bytes(wheel.read_bytes())
        expected = "which its MANIFEST does not list"
    elif tampering == "missing-deb":
        target = next((copy / "debs").glob("docker.io_*.deb"))
        target.unlink()
        expected = "listed in its MANIFEST but missing"
    else:  # a wheel changed AND its MANIFEST line redone: only the printed sha256 sees it
        manifest = copy / "MANIFEST"
        printed = hashlib.sha256(manifest.read_bytes()).hexdigest()
        target = next((copy / "wheels").glob("ansible_core-*.whl"))
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        _rewrite(target, bytes(data))
        rel = str(target.relative_to(copy))
        lines = [
            f"{hashlib.sha256(data).hexdigest()}  {rel}" if line.endswith(f"  {rel}") else line
            for line in manifest.read_text().splitlines()
        ]
        _rewrite(manifest, ("\n".join(lines) + "\n").encode())
        # control: without the expected sha256 this bundle verifies (its MANIFEST was redone)
        unchecked = subprocess.run(
            ["bash", str(SCRIPT), "verify", str(copy)], capture_output=True, text=True
        )
        assert unchecked.returncode == 0, unchecked.stderr
        env_prefix = f"HAVRE_BUNDLE_SHA256={printed} "
        expected = f"not the {printed} you expect"
    script = (
        f"{env_prefix}bash /bundle/offline-bundle.sh install /bundle; echo RC=$?; "
        "dpkg-query -W docker.io python3 2>&1 | head -n 2; "
        "test -e /opt/havre && echo OPT_HAVRE_EXISTS || echo OPT_HAVRE_ABSENT"
    )
    run = _in_container({copy: "/bundle"}, script, timeout=120)
    out = run.stdout + run.stderr
    assert "RC=1" in run.stdout, out
    assert expected in run.stderr, out
    assert "Nothing was installed" in run.stderr or "nothing was installed" in run.stderr, out
    assert "no packages found matching docker.io" in out and "OPT_HAVRE_ABSENT" in run.stdout, out


def test_untampered_copy_verifies(bundle: Path, tmp_path: Path) -> None:
    """The positive control of the tamper tests: a hard-linked copy, untouched, verifies."""
    copy = _copy_bundle(bundle, tmp_path / "bundle")
    run = subprocess.run(
        ["bash", str(copy / "offline-bundle.sh"), "verify", str(copy)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "bundle verified" in run.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["install", "/nonexistent/bundle"], "is not a directory"),
        (["install"], "usage: bash offline-bundle.sh install DIR"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["verify", "/etc"], "/etc has no MANIFEST"),
    ],
)
def test_bad_arguments_get_a_sentence(argv: list[str], expected: str) -> None:
    run = subprocess.run(["bash", str(SCRIPT), *argv], capture_output=True, text=True)
    assert run.returncode != 0
    assert expected in run.stderr
    assert "Traceback" not in run.stderr and "unbound variable" not in run.stderr


def test_export_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    _docker_ok()
    (tmp_path / "something").write_text("keep me")
    run = subprocess.run(
        ["bash", str(SCRIPT), "export", str(tmp_path)], capture_output=True, text=True
    )
    assert run.returncode != 0
    assert "exists and is not empty" in run.stderr
    assert (tmp_path / "something").read_text() == "keep me"
