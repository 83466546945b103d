"""Havre's JupyterLab extension (labextension/): the committed build is the build of the sources.

The notebook image copies labextension/prebuilt/ as it is (no Node.js in the image, no npm
when images are built); scripts/build-labextension.sh writes it and records, in
prebuilt/havre-build.sha256, the sha256 of the sources it built and of what it wrote. Editing
the sources without rebuilding, or the build by hand, fails here. (The same digest as the
script's, computed independently.)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "labextension"
PREBUILT = EXT / "prebuilt"
RECORD = PREBUILT / "havre-build.sha256"
REBUILD = "run `bash scripts/build-labextension.sh` and commit labextension/prebuilt/"


def digest(root: Path, paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def record() -> dict[str, str]:
    return dict(line.split(" ", 1) for line in RECORD.read_text().splitlines() if line)


def test_the_committed_build_is_the_build_of_the_sources() -> None:
    sources = [EXT / "package.json", EXT / "yarn.lock", *(EXT / "src").rglob("*.js")]
    assert record()["sources"] == digest(EXT, sources), f"the sources changed: {REBUILD}"


def test_the_committed_build_was_not_edited_by_hand() -> None:
    built = [p for p in PREBUILT.rglob("*") if p.is_file() and p != RECORD]
    assert record()["prebuilt"] == digest(PREBUILT, built), f"prebuilt/ was edited: {REBUILD}"


def test_the_build_is_for_the_notebook_images_jupyterlab_and_loads() -> None:
    lock = (REPO / "images" / "requirements" / "notebook.lock").read_text()
    lab = re.search(r"^jupyterlab==([0-9.]+)", lock, re.M).group(1)
    assert record()["jupyterlab"] == lab, f"built for another JupyterLab: {REBUILD}"
    source, built = (json.loads((d / "package.json").read_text()) for d in (EXT, PREBUILT))
    assert (built["name"], built["version"]) == (source["name"], source["version"])
    assert (PREBUILT / built["jupyterlab"]["_build"]["load"]).is_file()


def test_the_images_lab_settings_do_not_disable_it() -> None:
    page_config = REPO / "images" / "notebook" / "etc-jupyter" / "labconfig" / "page_config.json"
    disabled = json.loads(page_config.read_text()).get("disabledExtensions", {})
    name = json.loads((EXT / "package.json").read_text())["name"]
    assert not any(k == name or k.startswith(name + ":") for k, on in disabled.items() if on)
