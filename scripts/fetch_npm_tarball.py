"""Fetch one file out of an npm package's tarball, after checking the tarball's pinned hash.

    python3 scripts/fetch_npm_tarball.py URL INTEGRITY MEMBER DEST

URL is the tarball (e.g. https://registry.npmjs.org/axe-core/-/axe-core-4.14.1.tgz), INTEGRITY
the registry's ``dist.integrity`` for it (``sha512-<base64>``, pinned in the repository),
MEMBER a path inside the package (``axe.min.js``) and DEST the file to write. The tarball is
read into memory, hashed, and refused (exit 1, one sentence, nothing written) unless its
SHA-512 is the pinned one; only then is MEMBER extracted, written next to DEST and renamed
over it. Standard library only: used by scripts/lib/browser.sh on a fresh host, where no npm
is installed (and none is needed).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

#: an npm package's files sit under this folder of its tarball
PACKAGE_ROOT = "package/"
#: the largest tarball read (axe-core's is about 0.6 MB)
MAX_BYTES = 64 * 1024 * 1024


class FetchError(Exception):
    """A refusal, worded for the person running the setup."""


def parse_integrity(integrity: str) -> bytes:
    """The SHA-512 digest an ``sha512-<base64>`` integrity string names."""
    algorithm, _, encoded = integrity.strip().partition("-")
    if algorithm != "sha512" or not encoded:
        raise FetchError(
            f"the pinned integrity {integrity!r} is not of the form sha512-<base64> "
            "(copy dist.integrity from the registry's metadata of that version)"
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except ValueError as err:
        raise FetchError(f"the pinned integrity {integrity!r} is not valid base64: {err}") from err
    if len(digest) != hashlib.sha512().digest_size:
        raise FetchError(f"the pinned integrity {integrity!r} is not a SHA-512 digest")
    return digest


def download(url: str, timeout: float = 60) -> bytes:
    """The bytes at ``url`` (http or https only), at most MAX_BYTES of them."""
    if not url.startswith(("https://", "http://")):
        raise FetchError(f"{url} is not an http(s) address")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (checked above)
            data = response.read(MAX_BYTES + 1)
    except OSError as err:
        raise FetchError(f"could not download {url}: {err}") from err
    if len(data) > MAX_BYTES:
        raise FetchError(f"{url} is larger than {MAX_BYTES} bytes; refused")
    return data


def verified(data: bytes, integrity: str, url: str) -> bytes:
    """``data`` if its SHA-512 is the one ``integrity`` pins; otherwise a refusal."""
    want = parse_integrity(integrity)
    got = hashlib.sha512(data).digest()
    if got != want:
        raise FetchError(
            f"{url} does not match the pinned hash: expected {integrity}, got "
            f"sha512-{base64.b64encode(got).decode()}; nothing was installed (a changed or "
            "corrupted download is refused, never used)"
        )
    return data


def member_bytes(tarball: bytes, member: str) -> bytes:
    """The contents of ``package/<member>`` in the (gzipped) npm tarball."""
    name = PACKAGE_ROOT + member
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            try:
                info = archive.getmember(name)
            except KeyError:
                raise FetchError(f"the package has no {member}") from None
            if not info.isfile():
                raise FetchError(f"{member} in the package is not a regular file")
            extracted = archive.extractfile(info)
            assert extracted is not None  # a regular file always has contents
            return extracted.read()
    except (tarfile.TarError, OSError) as err:
        raise FetchError(f"the package is not a readable gzipped tarball: {err}") from err


def install(data: bytes, dest: Path) -> None:
    """Write ``data`` to ``dest`` atomically (a temporary file in the same folder, renamed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(url: str, integrity: str, member: str, dest: Path) -> None:
    """Download ``url``, check it against ``integrity``, install its ``member`` as ``dest``."""
    parse_integrity(integrity)  # a malformed pin is refused before any download
    tarball = verified(download(url), integrity, url)
    install(member_bytes(tarball, member), dest)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        print("usage: fetch_npm_tarball.py URL INTEGRITY MEMBER DEST", file=sys.stderr)
        return 2
    url, integrity, member, dest = args
    try:
        fetch(url, integrity, member, Path(dest))
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
