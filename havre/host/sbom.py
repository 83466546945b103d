"""Software bills of materials (CycloneDX) of Havre's images: written by ``images/build.sh``
after each build, read by the host's commands (``havre status``).

``write`` makes ``images/sbom/<name>.cdx.json`` for one built image: the Python packages that
are really in the image (``pip list`` run inside it, so what the Dockerfile removed after the
install is not listed and Havre's own wheel is), each with the sha256 of its wheel from the
image's lock file (``images/requirements/<name>.lock``; Havre's own wheel from the build
context), turned into CycloneDX JSON by ``cyclonedx-py`` (PyPI's ``cyclonedx-bom``). The SBOM's
``metadata.component`` is the image itself: its tag, and its image id (``docker image inspect``'s
``Id``) as the ``havre:image-id`` property and as the component's SHA-256, so a reader can tell
whether the SBOM describes the image a container runs or an older build.

``read_sbom(image)`` is the reading side: a small summary, or ``None`` when no SBOM was written.

    python -m havre.host.sbom write --name egress --tag havre/egress:0.1.0 --image-id sha256:..
        --packages FREEZE --lock images/requirements/egress.lock [--wheel havre-0.1.0-....whl]
        --output images/sbom/egress.cdx.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: where build.sh writes the SBOMs: images/sbom/ of the checkout (override: HAVRE_SBOM_DIR)
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "images" / "sbom"
IMAGE_ID_PROPERTY = "havre:image-id"
IMAGE_TAG_PROPERTY = "havre:image-tag"


def sbom_dir() -> Path:
    return Path(os.environ.get("HAVRE_SBOM_DIR") or DEFAULT_DIR)


def image_name(image: str) -> str:
    """``havre/egress:0.1.0`` or ``egress`` -> ``egress`` (the SBOM's file name)."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_hashes(lock_text: str) -> dict[tuple[str, str], list[str]]:
    """``{(name, version): [sha256, ...]}`` from a lock file in pip's hash-checking format."""
    found: dict[tuple[str, str], list[str]] = {}
    joined = lock_text.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if pin:
            key = (_canonical(pin.group(1)), pin.group(2))
            found[key] = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
    return found


def requirements_with_hashes(
    installed: str, lock_text: str, wheels: dict[tuple[str, str], str] | None = None
) -> str:
    """The image's ``pip list --format=freeze`` as a requirements file, every line carrying
    the sha256 the lock (or, for Havre's own wheel, the build) gave its file."""
    hashes = locked_hashes(lock_text)
    for key, digest in (wheels or {}).items():
        hashes[(_canonical(key[0]), key[1])] = [digest]
    lines = []
    for line in installed.splitlines():
        pin = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$", line.strip())
        if not pin:
            continue
        name, version = _canonical(pin.group(1)), pin.group(2)
        digests = hashes.get((name, version), [])
        lines.append(" ".join([f"{name}=={version}", *(f"--hash=sha256:{d}" for d in digests)]))
    return "\n".join(sorted(lines)) + "\n"


def wheel_key(path: Path) -> tuple[str, str]:
    """(name, version) of a wheel file name."""
    name, version = path.name.split("-")[:2]
    return name, version


def write(
    *,
    name: str,
    tag: str,
    image_id: str,
    installed: str,
    lock_text: str,
    output: Path,
    wheels: list[Path] | None = None,
) -> Path:
    """Write the CycloneDX SBOM of one built image to ``output`` (atomically)."""
    extra = {wheel_key(w): hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels or []}
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="havre-sbom-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text(requirements_with_hashes(installed, lock_text, extra))
        raw = Path(tmp) / "bom.json"
        run = subprocess.run(
            [sys.executable, "-m", "cyclonedx_py", "requirements", str(reqs)]
            + ["--output-format", "JSON", "--output-file", str(raw)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"cyclonedx-py failed for {tag}: {run.stderr.strip()}")
        bom = json.loads(raw.read_text())
    digest = image_id.removeprefix("sha256:")
    version = tag.rsplit(":", 1)[1] if ":" in tag.rsplit("/", 1)[-1] else ""
    metadata = bom.setdefault("metadata", {})
    metadata["component"] = {
        "type": "container",
        "bom-ref": image_id,
        "name": tag.rsplit(":", 1)[0] if version else tag,
        "version": version,
        "hashes": [{"alg": "SHA-256", "content": digest}],
        "description": f"Havre {name} image",
    }
    metadata["properties"] = [
        *[p for p in metadata.get("properties", []) if not p["name"].startswith("havre:")],
        {"name": IMAGE_TAG_PROPERTY, "value": tag},
        {"name": IMAGE_ID_PROPERTY, "value": image_id},
    ]
    partial = output.with_name(output.name + ".partial")
    partial.write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n")
    partial.replace(output)
    return output


@dataclass(frozen=True)
class SbomInfo:
    """What ``havre status`` shows of one image's SBOM."""

    path: Path
    image_tag: str  #: the tag the SBOM was written for
    image_id: str  #: the image id it describes (``sha256:...``)
    components: int  #: packages listed
    sha256: str  #: the SBOM file's own sha256 (to compare with a copy kept elsewhere)
    created: str  #: the SBOM's timestamp

    def describes(self, image_id: str) -> bool:
        """Whether this SBOM was written for the image with this id (not an older build)."""
        return bool(image_id) and image_id == self.image_id


def read_sbom(image: str, directory: Path | None = None) -> SbomInfo | None:
    """The SBOM written for ``image`` (``havre/egress:0.1.0`` or ``egress``), or ``None``.

    Raises ``ValueError`` with a sentence when the file is there but is not an SBOM this
    module wrote."""
    path = (directory or sbom_dir()) / f"{image_name(image)}.cdx.json"
    if not path.is_file():
        return None
    data = path.read_bytes()
    try:
        bom = json.loads(data)
        metadata = bom["metadata"]
        props = {p["name"]: p["value"] for p in metadata.get("properties", [])}
        return SbomInfo(
            path=path,
            image_tag=props[IMAGE_TAG_PROPERTY],
            image_id=props[IMAGE_ID_PROPERTY],
            components=len(bom.get("components", [])),
            sha256=hashlib.sha256(data).hexdigest(),
            created=metadata.get("timestamp", ""),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path} is not an SBOM written by images/build.sh ({err!r}); "
            "rebuild the image to write it again"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m havre.host.sbom")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write one image's SBOM (images/build.sh calls this)")
    w.add_argument("--name", required=True)
    w.add_argument("--tag", required=True)
    w.add_argument("--image-id", required=True)
    w.add_argument("--packages", type=Path, required=True, help="pip list --format=freeze")
    w.add_argument("--lock", type=Path, required=True)
    w.add_argument("--wheel", type=Path, action="append", default=[])
    w.add_argument("--output", type=Path, required=True)
    r = sub.add_parser("read", help="print the summary of one image's SBOM")
    r.add_argument("image")
    args = parser.parse_args(argv)
    if args.command == "write":
        try:
            out = write(
                name=args.name,
                tag=args.tag,
                image_id=args.image_id,
                installed=args.packages.read_text(),
                lock_text=args.lock.read_text(),
                output=args.output,
                wheels=args.wheel,
            )
        except (OSError, RuntimeError) as err:
            print(f"havre.host.sbom: error: {err}", file=sys.stderr)
            return 1
        print(out)
        return 0
    try:
        info = read_sbom(args.image)
    except ValueError as err:
        print(f"havre.host.sbom: error: {err}", file=sys.stderr)
        return 1
    if info is None:
        print(f"no SBOM for {args.image} in {sbom_dir()}", file=sys.stderr)
        return 1
    print(json.dumps({**info.__dict__, "path": str(info.path)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
