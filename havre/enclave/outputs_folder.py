"""Reading a project's outputs folder safely: the egress service reads files researchers control.

Pure module (standard library only). The egress service runs as its own uid and mounts every
project's outputs folder read-only; the researchers of a project can create anything in it:
symbolic links to other places, FIFOs, device files, hidden files, names with invisible or
look-alike characters, and they can swap a file for a symlink at any moment. This module lists
and reads that folder without being fooled by any of it, and **never writes to it**.

Listing (:func:`scan_outputs`, :func:`list_outputs`)
    Walks the folder through directory file descriptors, never following a symbolic link. Regular
    files with acceptable names become :class:`OutputEntry` rows (relative ``/``-separated path,
    size, mtime). Everything else is skipped and reported as a :class:`SkippedEntry` with a reason:
    symbolic links (to a file or a directory, inside or outside the folder), FIFOs, sockets,
    device files, hidden names (starting with ``.``; a hidden directory such as
    ``.ipynb_checkpoints`` is skipped as a whole) and names that :func:`validate_relative_path`
    refuses (non-UTF-8 bytes, control, invisible, bidirectional-override or look-alike
    characters). A folder with more than ``max_files`` entries is refused rather than listed in
    part.

Reading (:func:`read_output`, :func:`read_output_owned` also gives the file's owner uid)
    Validates the relative path (:func:`validate_relative_path`), then opens it one component at
    a time relative to the parent directory's descriptor: directories with
    ``O_RDONLY | O_NOFOLLOW | O_DIRECTORY``, the file with ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK``
    (``O_NONBLOCK`` so a FIFO swapped in can't make the service hang). Before opening, each
    component is ``lstat``-ed and must be a directory or a regular file; after opening, ``fstat``
    must show the same inode and a regular file. A symlink swapped in at any moment therefore
    makes the read fail (``O_NOFOLLOW`` refuses it even if it appears between the two checks).
    At most ``max_bytes + 1`` bytes are read; a larger file is refused. A file that changes size
    or mtime while it is read is refused too ("try again"), so a snapshot is never a mixture.

Names (:func:`validate_relative_path`)
    A relative path must be non-empty, at most 4096 bytes, with no NUL, no backslash, not absolute,
    and made of ``/``-separated components that are not empty, ``.``, ``..`` or hidden. Each
    component must be valid UTF-8, at most 255 bytes, in Unicode NFC form, without control
    characters (``Cc``), invisible or formatting characters (``Cf``: zero-width spaces and joiners,
    bidirectional embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, soft hyphen,
    byte-order mark...), line or paragraph separators, private-use, surrogate or unassigned code
    points, without compatibility characters (any name whose NFKC form differs from its NFC form,
    e.g. FULLWIDTH SOLIDUS U+FF0F that looks like ``/``, or ``ﬁ``), without leading or trailing
    spaces or space characters other than U+0020, and without words (runs of letters) mixing
    scripts that are easily confused with Latin (Latin, Greek, Cyrillic, Armenian, Cherokee):
    ``pаypal.csv`` with a Cyrillic ``а`` is refused, ``αβγ.csv`` and ``表1_results.csv`` are fine.

Errors are :class:`OutputPathError` (a :class:`ValueError`) with a sentence a researcher can act
on; paths in messages are shown with invisible characters escaped (``evil\\u202eexe.csv``).

The root folder itself is configuration (not researcher-controlled) and is opened normally.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

MAX_PATH_BYTES = 4096
"""Longest relative path accepted (UTF-8 bytes)."""

MAX_COMPONENT_BYTES = 255
"""Longest single path component accepted (UTF-8 bytes), as on common Linux filesystems."""

MAX_DEPTH = 64
"""Deepest directory nesting the listing descends into; deeper directories are skipped."""

BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
"""Bidirectional controls: marks, embeddings, overrides and isolates."""

ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u180e\u00ad\u034f")
"""Invisible characters that are easy to hide in a name."""

CONFUSABLE_SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "CHEROKEE")
"""Scripts with letters that look like Latin ones; one component may use only one of them."""

_WORD = re.compile(r"[^\W\d_]+")
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_READ_CHUNK = 1 << 20
#: a file changed less than this many seconds before it is read is read twice (see read_output)
SETTLE_SECONDS = 2.0
#: the pause between those two reads: a write in progress shows as a difference
SETTLE_GAP_SECONDS = 0.05


class OutputPathError(ValueError):
    """A path in the outputs folder is refused, or can't be read safely; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class OutputEntry:
    """A regular file in the outputs folder: ``/``-separated path relative to the root, and
    the uid owning it (each notebook server writes as a uid of its own; -1: not known)."""

    path: str
    size: int
    mtime: float
    uid: int = -1


@dataclass(frozen=True)
class SkippedEntry:
    """Something in the outputs folder that is not offered for release, and why.

    ``path`` is for display: relative, ``/``-separated, invisible characters escaped.
    """

    path: str
    reason: str


@dataclass
class OutputListing:
    """What :func:`scan_outputs` found: the files on offer, and everything skipped."""

    entries: list[OutputEntry] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)


# --- names ---------------------------------------------------------------------------------


def display_path(path: str) -> str:
    """``path`` with invisible, control, non-UTF-8 and non-printable characters escaped."""
    out = []
    for char in path:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char == "\\":
            out.append("\\\\")
        elif char.isprintable() and unicodedata.category(char) not in ("Cf", "Co", "Cn", "Cs"):
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def _char_label(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".rstrip()


def component_problem(component: str) -> str | None:
    """Why one path component (a file or directory name) is refused, or ``None`` if it is fine.

    The reason is a clause that reads after "it": "it has a '..' component (...)".
    """
    if component == "":
        return "it has an empty path component (a doubled or trailing '/')"
    if component in (".", ".."):
        return f"it has a '{component}' component (paths must stay inside the outputs folder)"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in component):
        return "it is not valid UTF-8"
    for char in component:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"it has a control character (U+{ord(char):04X})"
        if char in BIDI_CONTROLS:
            return (
                f"it has a bidirectional control character ({_char_label(char)}), which can make "
                "a name display differently from what it is (e.g. hide the real extension)"
            )
        if char in ZERO_WIDTH or category == "Cf":
            return f"it has an invisible character ({_char_label(char)})"
        if category in ("Zl", "Zp"):
            return f"it has a line or paragraph separator ({_char_label(char)})"
        if category == "Zs" and char != " ":
            return f"it has an unusual space character ({_char_label(char)})"
        if category in ("Co", "Cn"):
            return f"it has a private-use or unassigned character (U+{ord(char):04X})"
    if component.startswith("."):
        return "it is hidden (the name starts with '.')"
    if unicodedata.normalize("NFC", component) != component:
        return "it is not in Unicode NFC form (it has an equivalent composed spelling)"
    if unicodedata.normalize("NFKC", component) != component:
        odd = next((c for c in component if unicodedata.normalize("NFKC", c) != c), component[0])
        return (
            f"it has a compatibility (look-alike) character ({_char_label(odd)}, which stands "
            f"for {unicodedata.normalize('NFKC', odd)!r})"
        )
    if component != component.strip(" "):
        return "a name in it starts or ends with a space"
    for word in _WORD.findall(component):
        scripts = {
            script
            for c in word
            if (script := unicodedata.name(c, " ").split(" ")[0]) in CONFUSABLE_SCRIPTS
        }
        if len(scripts) > 1:
            mixed = " and ".join(s.title() for s in sorted(scripts))
            return f"it mixes {mixed} letters in the word {word!r} (look-alike characters)"
    if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
        return f"a name in it is longer than {MAX_COMPONENT_BYTES} bytes"
    return None


def validate_relative_path(relative: str) -> tuple[str, ...]:
    """Check a path relative to the outputs folder; return its components or raise.

    Raises :class:`OutputPathError` with the reason (see the module documentation for the rules),
    a sentence starting with the path: "'../x.csv' is refused: it has a '..' component (...)".
    """
    if not isinstance(relative, str):
        raise OutputPathError(f"{relative!r} is refused: a path must be text")
    shown = f"'{display_path(relative)}'"
    if relative == "":
        raise OutputPathError("'' is refused: the path is empty")
    if "\x00" in relative:
        raise OutputPathError(f"{shown} is refused: it has a NUL character")
    if relative.startswith("/"):
        raise OutputPathError(
            f"{shown} is refused: it is an absolute path; give a path relative to the outputs "
            "folder"
        )
    if "\\" in relative:
        raise OutputPathError(f"{shown} is refused: it has a backslash; use '/' between folders")
    try:
        size = len(relative.encode("utf-8"))
    except UnicodeEncodeError:
        raise OutputPathError(f"{shown} is refused: it is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise OutputPathError(f"{shown} is refused: it is longer than {MAX_PATH_BYTES} bytes")
    components = tuple(relative.split("/"))
    for component in components:
        problem = component_problem(component)
        if problem is not None:
            raise OutputPathError(f"{shown} is refused: {problem}")
    return components


# --- listing -------------------------------------------------------------------------------


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (links are never followed)"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a regular file"


def _open_root(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OutputPathError(f"the outputs folder {str(root)!r} does not exist") from None
    except NotADirectoryError:
        raise OutputPathError(f"the outputs folder {str(root)!r} is not a directory") from None
    except PermissionError:
        raise OutputPathError(f"the outputs folder {str(root)!r} can't be read") from None


def _names(dir_fd: int) -> list[str]:
    with os.scandir(dir_fd) as entries:
        return sorted(entry.name for entry in entries)


def scan_outputs(root: Path, *, max_files: int = 10_000) -> OutputListing:
    """List the regular files under ``root`` and report everything skipped (never follows links).

    Raises :class:`OutputPathError` when ``root`` can't be opened, or when the folder holds more
    than ``max_files`` entries (files, directories and skipped entries together).
    """
    listing = OutputListing()
    seen = 0

    def visit(dir_fd: int, prefix: str, depth: int) -> None:
        nonlocal seen
        try:
            names = _names(dir_fd)
        except OSError as error:
            if not prefix:
                raise OutputPathError(
                    f"the outputs folder {str(root)!r} can't be read: {error.strerror}"
                ) from None
            shown_dir = display_path(prefix.removesuffix("/"))
            listing.skipped.append(SkippedEntry(shown_dir, "skipped: it can't be read"))
            return
        for name in names:
            seen += 1
            if seen > max_files:
                raise OutputPathError(
                    f"the outputs folder holds more than {max_files} entries; tidy it up "
                    "(or move files into fewer folders) before asking for a release"
                )
            relative = prefix + name
            shown = display_path(relative)
            problem = component_problem(name)
            if problem is not None:
                listing.skipped.append(SkippedEntry(shown, f"skipped: {problem}"))
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                listing.skipped.append(SkippedEntry(shown, "skipped: removed while listing"))
                continue
            except OSError:
                listing.skipped.append(SkippedEntry(shown, "skipped: it can't be read"))
                continue
            if stat.S_ISREG(info.st_mode):
                listing.entries.append(
                    OutputEntry(relative, info.st_size, info.st_mtime, info.st_uid)
                )
            elif stat.S_ISDIR(info.st_mode):
                if depth >= MAX_DEPTH:
                    listing.skipped.append(
                        SkippedEntry(shown, f"skipped: nested deeper than {MAX_DEPTH} folders")
                    )
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError:
                    listing.skipped.append(
                        SkippedEntry(shown, "skipped: changed while listing (or can't be read)")
                    )
                    continue
                try:
                    now = os.fstat(child)
                    if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                        listing.skipped.append(
                            SkippedEntry(shown, "skipped: changed while listing")
                        )
                        continue
                    visit(child, relative + "/", depth + 1)
                finally:
                    os.close(child)
            else:
                listing.skipped.append(
                    SkippedEntry(shown, f"skipped: it is {_kind_of(info.st_mode)}")
                )

    root_fd = _open_root(root)
    try:
        visit(root_fd, "", 0)
    finally:
        os.close(root_fd)
    return listing


def list_outputs(root: Path, *, max_files: int = 10_000) -> list[OutputEntry]:
    """The regular files on offer under ``root``, sorted by path (see :func:`scan_outputs`).

    Skipped entries are not returned here; use :func:`scan_outputs` to show them to the user.
    """
    return scan_outputs(root, max_files=max_files).entries


# --- reading -------------------------------------------------------------------------------


def _open_component(parent_fd: int, name: str, shown: str, *, directory: bool) -> int:
    """Open one component relative to ``parent_fd``, never following a link; return the fd."""
    try:
        before = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise OutputPathError(f"'{shown}' does not exist in the outputs folder") from None
    except OSError as error:
        raise OutputPathError(f"'{shown}' can't be read: {error.strerror}") from None
    wanted = stat.S_ISDIR if directory else stat.S_ISREG
    if not wanted(before.st_mode):
        what = "a directory" if directory else "a regular file"
        raise OutputPathError(
            f"'{shown}' is {_kind_of(before.st_mode)}, not {what}; it can't be released"
        )
    try:
        fd = os.open(name, _DIR_FLAGS if directory else _FILE_FLAGS, dir_fd=parent_fd)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO):
            raise OutputPathError(
                f"'{shown}' changed while it was being opened (it is now a symbolic link or "
                "something else); it can't be released"
            ) from None
        raise OutputPathError(f"'{shown}' can't be opened: {error.strerror}") from None
    try:
        after = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) or not wanted(after.st_mode):
        os.close(fd)
        raise OutputPathError(f"'{shown}' changed while it was being opened; try again")
    return fd


def _read_all(fd: int, max_bytes: int, shown: str) -> bytes:
    """Everything in ``fd`` from offset 0 (``pread``: the file offset is not used)."""
    chunks: list[bytes] = []
    total = 0
    while total <= max_bytes:
        try:
            chunk = os.pread(fd, min(_READ_CHUNK, max_bytes + 1 - total), total)
        except OSError as error:
            raise OutputPathError(f"'{shown}' can't be read: {error.strerror}") from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise OutputPathError(f"'{shown}' is larger than the limit of {max_bytes} bytes")
    return b"".join(chunks)


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_output(root: Path, relative: str, *, max_bytes: int) -> bytes:
    """The bytes of ``relative``: :func:`read_output_owned` without the owner."""
    return read_output_owned(root, relative, max_bytes=max_bytes)[0]


def read_output_owned(root: Path, relative: str, *, max_bytes: int) -> tuple[bytes, int]:
    """The bytes of ``relative`` and the uid owning the file that was read.

    Each notebook server runs as a uid of its own (havre/enclave/identities.py), so the owner says
    which member wrote the file, whoever asks for its release. The uid is the one of the very
    inode read (``fstat`` of the open descriptor, unchanged during the read).

    The bytes of ``relative`` (a regular file under ``root``), read without following links.

    Raises :class:`OutputPathError` for a refused path, a symbolic link or non-regular file
    anywhere along the path, a file larger than ``max_bytes``, or a file that changed while it
    was being read.

    What is returned is one whole version of the file, never half old and half new: the file is
    read through one open descriptor, and refused if its size, times or inode changed during
    the read, or if its name now points to another file (swapped for a new one). File times tick
    coarsely (a few milliseconds), so a rewrite in place within one tick leaves them equal: a
    file changed in the last :data:`SETTLE_SECONDS` is read a second time, and refused unless
    both reads agree.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    components = validate_relative_path(relative)
    shown = display_path(relative)
    fds: list[int] = []
    try:
        current = _open_root(root)
        fds.append(current)
        for index, name in enumerate(components[:-1]):
            part = display_path("/".join(components[: index + 1]))
            current = _open_component(current, name, part, directory=True)
            fds.append(current)
        file_fd = _open_component(current, components[-1], shown, directory=False)
        fds.append(file_fd)
        started = time.time_ns()
        before = os.fstat(file_fd)
        if before.st_size > max_bytes:
            raise OutputPathError(
                f"'{shown}' is {before.st_size} bytes, larger than the limit of {max_bytes} bytes"
            )
        changed = OutputPathError(f"'{shown}' changed while it was being read; try again")
        data = _read_all(file_fd, max_bytes, shown)
        after = os.fstat(file_fd)
        if _identity(after) != _identity(before) or len(data) != after.st_size:
            raise changed
        if started - max(after.st_mtime_ns, after.st_ctime_ns) < SETTLE_SECONDS * 1e9:
            # written a moment ago: a rewrite within one clock tick would look unchanged
            time.sleep(SETTLE_GAP_SECONDS)
            again = _read_all(file_fd, max_bytes, shown)
            if again != data or _identity(os.fstat(file_fd)) != _identity(before):
                raise changed
        try:
            named = os.stat(components[-1], dir_fd=current, follow_symlinks=False)
        except OSError:
            named = None
        if named is None or (named.st_dev, named.st_ino) != (after.st_dev, after.st_ino):
            raise OutputPathError(f"'{shown}' was replaced while it was being read; try again")
        return data, after.st_uid
    finally:
        for fd in reversed(fds):
            os.close(fd)
