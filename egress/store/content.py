"""Content-addressed storage of the snapshots taken of files submitted for release.

Every blob lives at ``<root>/sha256/<first 2 hex digits>/<remaining 62 hex digits>``, named by
the sha256 of its bytes. The egress service snapshots a file from the outputs folder into this
store when it is added to a request (and the neutralised/sanitised version that would be
released, when it differs); reviewers look at those bytes, and exactly those bytes are released,
whatever happens to the outputs folder afterwards.

Writes are crash-safe and idempotent: :meth:`ContentStore.put` writes a temporary file in the
blob's own directory, fsyncs it, hard-links it into place (:func:`os.link`, which never replaces
an existing name, unlike a rename) and fsyncs the directory, so a blob is either absent or
complete, and never overwritten. Blobs are mode 0640; a crash can leave a temporary file
(``.tmp-*``) behind, which :meth:`ContentStore.remove_temporary_files` deletes.

Reads verify: :meth:`ContentStore.get` re-hashes the bytes and raises :class:`CorruptContent`
when they no longer match their name (disk corruption or tampering), so corrupted bytes are
never shown to a checker or released.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ContentStore", "ContentNotFound", "CorruptContent", "sha256_hex"]

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o640
DIR_MODE = 0o750


class ContentNotFound(KeyError):
    """No blob with this sha256 in the store."""


class CorruptContent(ValueError):
    """A blob's bytes no longer hash to its name."""

    def __init__(self, sha256: str, actual: str, path: Path) -> None:
        super().__init__(
            f"content {sha256} is corrupt: {path} now hashes to {actual}; it must not be used"
        )
        self.sha256 = sha256
        self.actual = actual
        self.path = path


def sha256_hex(data: bytes) -> str:
    """The lowercase hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _check_digest(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
    return sha256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ContentStore:
    """Blobs on disk, named by their sha256 (see the module documentation)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._blobs = self.root / "sha256"

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` is (or would be) stored."""
        digest = _check_digest(sha256)
        return self._blobs / digest[:2] / digest[2:]

    def exists(self, sha256: str) -> bool:
        """Whether the blob is stored (its content is not checked)."""
        return self.path(sha256).is_file()

    def _ensure_dir(self, directory: Path) -> None:
        if directory.is_dir():
            return
        created = []
        for parent in (self.root, self._blobs, directory):
            if not parent.is_dir():
                try:
                    parent.mkdir(mode=DIR_MODE)
                    created.append(parent)
                except FileExistsError:
                    pass
        for parent in created:
            _fsync_dir(parent.parent)

    def put(self, data: bytes) -> str:
        """Store ``data`` (if not already there) and return its sha256. Durable on return."""
        digest = sha256_hex(data)
        target = self.path(digest)
        if target.is_file():
            return digest
        directory = target.parent
        self._ensure_dir(directory)
        tmp = directory / f"{_TEMP_PREFIX}{target.name[:8]}-{os.getpid()}-{os.urandom(6).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, FILE_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link, not rename: never replaces a blob that appeared meanwhile.
                os.link(tmp, target)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        _fsync_dir(directory)
        return digest

    def get(self, sha256: str) -> bytes:
        """The blob's bytes, verified against its name.

        Raises :class:`ContentNotFound` if it is missing and :class:`CorruptContent` if its
        bytes no longer match.
        """
        target = self.path(sha256)
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise ContentNotFound(sha256) from None
        actual = sha256_hex(data)
        if actual != sha256:
            raise CorruptContent(sha256, actual, target)
        return data

    def __iter__(self) -> Iterator[str]:
        """Every stored sha256 (temporary files excluded), in no particular order."""
        if not self._blobs.is_dir():
            return
        for prefix in sorted(os.listdir(self._blobs)):
            sub = self._blobs / prefix
            if len(prefix) != 2 or not sub.is_dir():
                continue
            for name in sorted(os.listdir(sub)):
                digest = prefix + name
                if not name.startswith(".") and _SHA256_RE.fullmatch(digest):
                    yield digest

    def verify_all(self) -> list[str]:
        """Re-hash every blob; the problems found (empty when every blob is intact)."""
        problems = []
        for digest in self:
            try:
                self.get(digest)
            except CorruptContent as exc:
                problems.append(str(exc))
            except OSError as exc:
                problems.append(f"content {digest} can't be read: {exc}")
        return problems

    def temporary_files(self) -> list[Path]:
        """Leftovers of writes interrupted by a crash."""
        if not self._blobs.is_dir():
            return []
        return sorted(self._blobs.glob(f"*/{_TEMP_PREFIX}*"))

    def remove_temporary_files(self) -> int:
        """Delete the leftovers of interrupted writes; returns how many there were.

        Only run it while no ``put`` is in progress (e.g. at service start).
        """
        found = self.temporary_files()
        for tmp in found:
            tmp.unlink(missing_ok=True)
        return len(found)
