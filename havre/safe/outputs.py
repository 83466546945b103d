"""Output records and the session folder: ACRO's ``results.json`` format, atomic writes, checksums.

One :class:`Output` per recorded call (a table, a model, a histogram...), serialised the way ACRO
1.0.2 serialises its records (``acro/record.py``), so tools that read ACRO's ``results.json`` can
read Havre's::

    {"version": ..., "tool": {...}, "results": {"output_0": {
        "uid", "status", "type", "properties", "files": [{"name", "sdc"}], "outcome",
        "command", "summary", "timestamp", "comments", "exception", "fair", "havre"}}}

``havre`` holds what ACRO's record has no place for: the verdict's reasons in words, the count
of cells per rule, the parameters the check used and the sha256 of each file as written.

:class:`SessionFolder` is the only code that writes: into one folder,
``<outputs>/<session name>/``, and nowhere else. Every name is checked (one path component, no
separators, no hidden or look-alike names: :func:`validate_name`), every write goes to a hidden
temporary file in the same folder and is renamed over the target (:func:`atomic_write`), so a
reader (the egress service) sees the old file or the new one, never half of one. Checksums are
written as ACRO writes them: ``checksums/<file name>.txt`` holding the sha256 in hex.

Standard library only (plus :mod:`havre.enclave.outputs_folder` for the name rules).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havre.enclave.hashing import sha256_hex
from havre.enclave.outputs_folder import OutputPathError, validate_relative_path

from .display import verdict_badge_html

__all__ = [
    "CHECKSUMS_DIR",
    "CONFIG_FILE",
    "FORMAT",
    "RESERVED_NAMES",
    "RESULTS_FILE",
    "Output",
    "OutputNameError",
    "SessionFolder",
    "atomic_write",
    "sha256_hex",
    "validate_name",
]

#: The results file, as ACRO names it.
RESULTS_FILE = "results.json"
#: The session's parameters (ACRO writes its config there).
CONFIG_FILE = "config.json"
#: Folder of ``<file name>.txt`` checksum files, as ACRO writes them.
CHECKSUMS_DIR = "checksums"
#: Names an output may not take.
RESERVED_NAMES = frozenset({RESULTS_FILE, CONFIG_FILE, CHECKSUMS_DIR})
#: The results format this library writes (ACRO's, as of ``acro`` 1.0.2).
FORMAT = "acro-results-1.0.2"

_STATUS = ("pass", "review", "fail")


class OutputNameError(ValueError):
    """A session or output name that is refused (it could write outside the outputs folder)."""


def validate_name(name: object, what: str = "output name", *, reserved_ok: bool = False) -> str:
    """``name`` if it is a safe single file or folder name, else :class:`OutputNameError`.

    Refused: non-strings, empty names, path separators (``/``, ``\\``, the platform's
    separators), ``.`` and ``..``, hidden names (leading ``.``), reserved names
    (``results.json``, ``config.json``, ``checksums``, unless ``reserved_ok``: the library's own
    files) and anything the egress service's own
    name rules refuse (control, invisible or look-alike characters; see
    :func:`havre.enclave.outputs_folder.validate_relative_path`).
    """
    if not isinstance(name, str):
        raise OutputNameError(f"{what} must be a string (got {type(name).__name__})")
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or any(s in name for s in seps):
        raise OutputNameError(
            f"{what} {name!r} is refused: give a plain name without path separators"
        )
    if name in (".", "..") or name.startswith("."):
        raise OutputNameError(f"{what} {name!r} is refused: it may not start with a dot")
    if name in RESERVED_NAMES and not reserved_ok:
        raise OutputNameError(f"{what} {name!r} is refused: the name is reserved")
    try:
        validate_relative_path(name)
    except OutputPathError as exc:
        raise OutputNameError(f"{what} refused: {exc}") from None
    return name


def _umask() -> int:
    # Read the process umask without changing it for long (no threads are racing at import).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write(folder: Path, name: str, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``folder/name`` atomically: a hidden temporary file in ``folder``,
    flushed to disk (``durable``), then renamed over the target. Returns the target path.

    ``name`` must pass :func:`validate_name` (so the file is inside ``folder``). The temporary
    file is created exclusively (``O_EXCL``, never following a symbolic link) with a hidden
    name, which the egress service does not list; the rename replaces a symbolic link planted
    at the target rather than writing through it.
    """
    validate_name(name, "file name", reserved_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        target = folder / name
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


@dataclass
class Output:
    """One recorded output, in ACRO's record shape (plus Havre's ``havre`` block).

    ``check`` is the :class:`havre.sdc.OutputCheck` behind the verdict when the output was
    made in this kernel (``None`` for outputs read back from ``results.json``).
    """

    uid: str
    status: str
    output_type: str
    properties: dict[str, Any]
    files: list[dict[str, Any]]
    outcome: dict[str, Any]
    command: str
    summary: str
    timestamp: str
    comments: list[str] = field(default_factory=list)
    exception: str = ""
    fair: dict[str, Any] = field(default_factory=dict)
    havre: dict[str, Any] = field(default_factory=dict)
    check: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.status not in _STATUS:
            raise ValueError(f"status must be one of {', '.join(_STATUS)} (got {self.status!r})")

    # -- views ------------------------------------------------------------------------------

    @property
    def reasons(self) -> list[str]:
        """The verdict's reasons in words (worst cells first)."""
        return list(self.havre.get("reasons", []))

    @property
    def file_names(self) -> list[str]:
        """Names of the output's files, in the session folder."""
        return [f["name"] for f in self.files]

    def as_json(self) -> dict[str, Any]:
        """The record as written in ``results.json`` (ACRO's field order)."""
        return {
            "uid": self.uid,
            "status": self.status,
            "type": self.output_type,
            "properties": self.properties,
            "files": self.files,
            "outcome": self.outcome,
            "command": self.command,
            "summary": self.summary,
            "timestamp": self.timestamp,
            "comments": list(self.comments),
            "exception": self.exception,
            "fair": self.fair,
            "havre": self.havre,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Output:
        """A record read back from ``results.json``."""
        return cls(
            uid=str(data["uid"]),
            status=str(data["status"]),
            output_type=str(data.get("type", "")),
            properties=dict(data.get("properties") or {}),
            files=[dict(f) for f in data.get("files") or []],
            outcome=dict(data.get("outcome") or {}),
            command=str(data.get("command", "")),
            summary=str(data.get("summary", "")),
            timestamp=str(data.get("timestamp", "")),
            comments=[str(c) for c in data.get("comments") or []],
            exception=str(data.get("exception", "")),
            fair=dict(data.get("fair") or {}),
            havre=dict(data.get("havre") or {}),
        )

    def _repr_html_(self) -> str:
        return verdict_badge_html(self)

    def __str__(self) -> str:
        lines = [f"{self.uid}: {self.status.upper()} ({self.output_type}) {self.summary}"]
        lines += [f"  - {r}" for r in self.reasons[:20]]
        if len(self.reasons) > 20:
            lines.append(f"  ... and {len(self.reasons) - 20} more")
        if self.exception:
            lines.append(f"  exception requested: {self.exception}")
        return "\n".join(lines)


class SessionFolder:
    """The one folder a session writes to: ``<outputs_dir>/<name>/``.

    Created on the first write (so a session that records nothing leaves nothing behind).
    Refuses to use a folder that is a symbolic link. With ``durable``, files are flushed to
    disk before they replace the old ones (checksum files are not: :meth:`Session.finalise`
    rewrites them).
    """

    def __init__(self, outputs_dir: Path, name: str, *, durable: bool = True) -> None:
        self.outputs_dir = Path(outputs_dir)
        self.name = validate_name(name, "session name")
        self.path = self.outputs_dir / self.name
        self.durable = durable

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def ensure(self) -> Path:
        """Create the folder (and the outputs folder) if needed; return its path."""
        self.outputs_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir()
        except FileExistsError:
            pass
        self._check_real_dir(self.path)
        checksums = self.path / CHECKSUMS_DIR
        try:
            checksums.mkdir()
        except FileExistsError:
            pass
        self._check_real_dir(checksums)
        return self.path

    @staticmethod
    def _check_real_dir(path: Path) -> None:
        if path.is_symlink() or not path.is_dir():
            raise OutputNameError(f"{path} is not a plain folder (a symbolic link?): refused")

    def write(self, name: str, data: bytes) -> str:
        """Write a file of the session (atomically) and its checksum; return its sha256."""
        folder = self.ensure()
        atomic_write(folder, name, data, durable=self.durable)
        digest = sha256_hex(data)
        self.write_checksum(name, digest)
        return digest

    def write_checksum(self, name: str, digest: str) -> None:
        """``checksums/<name>.txt`` holding ``digest`` (ACRO's layout)."""
        validate_name(name, "file name", reserved_ok=True)
        atomic_write(
            self.ensure() / CHECKSUMS_DIR, f"{name}.txt", digest.encode("ascii"), durable=False
        )

    def remove(self, name: str) -> None:
        """Remove a file of the session and its checksum (missing files are fine)."""
        validate_name(name, "file name", reserved_ok=True)
        for path in (self.path / name, self.path / CHECKSUMS_DIR / f"{name}.txt"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def rename(self, old: str, new: str) -> None:
        """Rename a file of the session (and its checksum); refuses to overwrite."""
        validate_name(old, "file name", reserved_ok=True)
        validate_name(new, "file name", reserved_ok=True)
        if os.path.lexists(self.path / new):
            raise FileExistsError(f"{new} already exists in {self.path}")
        os.replace(self.path / old, self.path / new)
        old_sum = self.path / CHECKSUMS_DIR / f"{old}.txt"
        if os.path.lexists(old_sum):
            os.replace(old_sum, self.path / CHECKSUMS_DIR / f"{new}.txt")

    def read(self, name: str) -> bytes:
        """Read a file of the session as it is on disk now."""
        validate_name(name, "file name", reserved_ok=True)
        with open(self.path / name, "rb") as handle:
            return handle.read()

    def prune_checksums(self, keep: Iterable[str]) -> None:
        """Remove checksum files of files the session no longer has."""
        folder = self.path / CHECKSUMS_DIR
        if not folder.is_dir():
            return
        wanted = {f"{name}.txt" for name in keep}
        for entry in os.scandir(folder):
            if entry.name.endswith(".txt") and entry.name not in wanted and entry.is_file():
                os.unlink(entry.path)


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and other simple values found in properties."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
