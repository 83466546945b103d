"""Images are built from lock files with hashes: a wheel whose sha256 is not locked is refused.

Attack: one wheel of the egress image's wheel folder (``images/.wheels/egress``, filled by
``images/build.sh``) is swapped for a file of the same name with other bytes (a wheel with one
more module in it, as a poisoned mirror or a hand-edited cache would give). Both of the build's
guards refuse it, with a sentence naming the file: the host-side check ``images/build.sh
--check-wheels`` runs before any ``docker build`` (the real script, on a copy of the
repository), and the image's own pip step (``pip install --no-index --require-hashes
--find-links wheels -r <the lock>``, as in the Dockerfiles, here with ``--dry-run`` so nothing
is installed). Control: the same two commands on the untouched folder pass.

Also checked: every image's lock pins every package once with one sha256, and was made from the
requirements file next to it (``scripts/lock-dependencies.sh`` writes the source's sha256).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "images" / "requirements"
IMAGES = ("build", "hub", "egress", "notebook")


@pytest.mark.parametrize("name", IMAGES)
def test_each_lock_pins_every_package_with_one_hash_and_matches_its_source(name):
    lock = (REQUIREMENTS / f"{name}.lock").read_text()
    source = hashlib.sha256((REQUIREMENTS / f"{name}.txt").read_bytes()).hexdigest()
    stale = f"{name}.lock is stale: run scripts/lock-dependencies.sh"
    assert f"# source-sha256: {source}" in lock, stale
    pins = re.findall(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", lock, re.M)
    body = [line for line in lock.splitlines() if line and not line.startswith("#")]
    assert len(body) == 2 * len(pins) > 0  # nothing but pin + hash pairs
    names = [pin[0] for pin in pins]
    assert len(names) == len(set(names))
    # every top-level pin of the source is locked at the same version
    for line in (REQUIREMENTS / f"{name}.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            top, version = line.split("==")
            assert (re.sub(r"[._]", "-", top.lower()), version) in {(n, v) for n, v, _ in pins}


def _wheel_folder(name: str) -> Path:
    folder = REPO / "images" / ".wheels" / name
    if not (folder / ".requirements.sha256").is_file():
        pytest.skip(f"needs images/.wheels/{name}, filled by `bash images/build.sh` (no build yet)")
    return folder


def _copy_repo(dest: Path) -> Path:
    """What build.sh --check-wheels reads, the wheel folders hard-linked (no copy of the MBs)."""
    repo = dest / "repo"
    (repo / "images").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", repo)
    shutil.copy(REPO / "images" / "build.sh", repo / "images")
    shutil.copytree(REPO / "images" / "lib", repo / "images" / "lib")
    (repo / "scripts" / "lib").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "lib" / "progress.sh", repo / "scripts" / "lib")
    shutil.copytree(REQUIREMENTS, repo / "images" / "requirements")
    for name in ("build", "egress"):
        shutil.copytree(
            REPO / "images" / ".wheels" / name,
            repo / "images" / ".wheels" / name,
            copy_function=os.link,
        )
    return repo


def _check_wheels(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(repo / "images" / "build.sh"), "--only", "egress", "--check-wheels"],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _image_pip_step(wheels: Path, lock: Path, tmp: Path) -> subprocess.CompletedProcess:
    """The Dockerfiles' pip step, on this host's CPython 3.11, without installing anything."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        + ["--no-index", "--no-cache-dir", "--require-hashes", "--disable-pip-version-check"]
        + ["--find-links", str(wheels), "-r", str(lock), "--report", str(tmp / "report.json")],
        env={**os.environ, "PIP_CONSTRAINT": "", "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_wheel_whose_hash_is_not_locked_is_refused_by_the_build(tmp_path):
    _wheel_folder("build")
    _wheel_folder("egress")
    repo = _copy_repo(tmp_path)
    wheels = repo / "images" / ".wheels" / "egress"
    lock = repo / "images" / "requirements" / "egress.lock"

    # control: the folder build.sh filled passes both guards
    control = _check_wheels(repo)
    assert control.returncode == 0, control.stderr
    assert "wheels for egress: every file matches images/requirements/egress.lock" in control.stderr
    step = _image_pip_step(wheels, lock, tmp_path)
    assert step.returncode == 0, step.stderr
    assert (tmp_path / "report.json").is_file()

    # attack: PyYAML's wheel, same name, one module more (a new file, not the hard link)
    (target,) = wheels.glob("pyyaml-*.whl") or wheels.glob("PyYAML-*.whl")
    poisoned = tmp_path / target.name
    shutil.copy(target, poisoned)
    with zipfile.ZipFile(poisoned, "a") as whl:
        whl.writestr("yaml/_extra.py", "print('not what was locked')\n")
    target.unlink()
    shutil.copy(poisoned, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()

    refused = _check_wheels(repo)
    assert refused.returncode == 1
    assert (
        f"{target} (sha256 {digest}) is not in {lock}: its hash is not locked, so it is refused"
        in refused.stderr
    )
    assert "nothing built" not in refused.stderr

    step = _image_pip_step(wheels, lock, tmp_path)
    assert step.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in step.stderr
    assert digest in step.stderr  # pip names the hash it got


def test_a_requirements_change_without_a_new_lock_is_refused(tmp_path):
    _wheel_folder("build")
    _wheel_folder("egress")
    repo = _copy_repo(tmp_path)
    req = repo / "images" / "requirements" / "egress.txt"
    req.write_text(req.read_text() + "six==1.17.0\n")
    refused = _check_wheels(repo)
    assert refused.returncode == 1
    assert (
        "images/requirements/egress.txt changed since images/requirements/egress.lock was made: "
        "run bash scripts/lock-dependencies.sh egress" in refused.stderr
    )


def test_build_progress_on_a_terminal_and_quiet_on_a_pipe(tmp_path):
    """images/build.sh's steps (here the --check-wheels run) on a terminal; the same run on a
    pipe prints its usual ==> lines and no progress line."""
    from tests.unit.test_progress import LINE, _run_on_a_terminal

    _wheel_folder("build")
    _wheel_folder("egress")
    repo = _copy_repo(tmp_path)
    argv = ["bash", str(repo / "images" / "build.sh"), "--only", "egress", "--check-wheels"]
    _out, err = _run_on_a_terminal(argv, tmp_path / "unused", "never")
    for text in ("wheels for build: waiting on images/requirements/build.lock",
                 "wheels for egress: waiting on images/requirements/egress.lock",
                 "wheels checked"):  # fmt: skip
        assert re.search(LINE.format(label="images/build.sh", text=re.escape(text)), err), err
    piped = _check_wheels(repo)
    assert piped.returncode == 0
    assert "==> wheels for egress: every file matches" in piped.stderr
    assert "images/build.sh [" not in piped.stderr


@pytest.mark.parametrize("name", ("hub", "egress", "notebook"))
def test_each_image_installs_its_lock_with_require_hashes(name):
    """The pip step the refusal test runs is the Dockerfiles' own: hashes required, from the
    lock that build.sh puts in the context as requirements.txt."""
    dockerfile = (REPO / "images" / name / "Dockerfile").read_text().replace("\\\n", " ")
    (step,) = [line for line in dockerfile.splitlines() if "-r /tmp/havre/requirements.txt" in line]
    assert {"--no-index", "--require-hashes", "--find-links"} <= set(step.split()), step
    build = (REPO / "images" / "build.sh").read_text()
    assert 'cp "$IMAGES_DIR/requirements/$name.lock" "$ctx/requirements.txt"' in build
