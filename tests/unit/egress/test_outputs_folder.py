"""Tests for havre.enclave.outputs_folder: listing and reading a folder that researchers control.

The core is ``HOSTILE_READS``, a table written out by hand: one row per hostile folder layout or
requested path (how it is built in ``tmp_path``, which path is asked for, and the message the
refusal must contain). After every row, the outputs folder and the place outside it must be
exactly as they were: reading never changes, follows or loses anything.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havre.enclave import outputs_folder
from havre.enclave.outputs_folder import (
    OutputEntry,
    OutputPathError,
    SkippedEntry,
    component_problem,
    display_path,
    list_outputs,
    read_output,
    scan_outputs,
    validate_relative_path,
)
from tests.hypothesis_budget import examples
from tests.unit.source_imports import imported_packages

CSV = b"region,n\nNorth,12\n"
SECRET = b"the other project's data\n"


@dataclasses.dataclass
class Folder:
    """An outputs folder (``root``) and a place outside it (``outside``) with a secret file."""

    root: Path
    outside: Path

    def file(self, relative: str, data: bytes = CSV) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def link(self, relative: str, target: str | Path) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
        return path


@pytest.fixture
def folder(tmp_path) -> Folder:
    root = tmp_path / "outputs"
    outside = tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_bytes(SECRET)
    (tmp_path / "x.csv").write_bytes(SECRET)  # what "../x.csv" would reach
    (root / "table.csv").write_bytes(CSV)
    return Folder(root, outside)


def snapshot(*places: Path) -> dict[bytes, tuple]:
    """Everything about every entry under ``places``: type, size, mtime, inode, content, link."""
    state: dict[bytes, tuple] = {}
    for place in places:
        for dirpath, dirnames, filenames in os.walk(os.fsencode(place)):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                content = None
                if stat.S_ISREG(info.st_mode):
                    with open(path, "rb") as handle:
                        content = handle.read()
                elif stat.S_ISLNK(info.st_mode):
                    content = os.readlink(path)
                state[path] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, content)
    return state


# --- the hostile reads table ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Read:
    """One hostile read: build the layout, ask for ``relative``, expect ``message``."""

    id: str
    build: Callable[[Folder], None]
    relative: str | Callable[[Folder], str]
    message: str
    max_bytes: int = 1024


def nothing(folder: Folder) -> None:
    pass


def fifo(folder: Folder) -> None:
    os.mkfifo(folder.root / "pipe.csv")


def unix_socket(folder: Folder) -> None:
    here = os.getcwd()
    os.chdir(folder.root)  # a socket path must be short: bind a relative one
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("s.csv")
    finally:
        os.chdir(here)


def device(folder: Folder) -> None:
    try:
        os.mknod(folder.root / "null.csv", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating device files needs privileges")


R = Read
# fmt: off
HOSTILE_READS: list[Read] = [
    # -- paths that leave the folder
    R("traversal", nothing, "../x.csv", "'..' component"),
    R("traversal-inside", lambda f: f.file("a/b.csv"), "a/../../x.csv", "'..' component"),
    R("dot-component", lambda f: f.file("a/b.csv"), "a/./b.csv", "'.' component"),
    R("absolute", nothing, "/etc/passwd", "absolute path"),
    R("absolute-inside-root", nothing, lambda f: str(f.root / "table.csv"), "absolute path"),
    R("backslash", nothing, "..\\x.csv", "backslash"),
    R("nul", nothing, "table.csv\x00.png", "NUL character"),
    R("empty", nothing, "", "the path is empty"),
    R("trailing-slash", lambda f: f.file("a/b.csv"), "a/", "empty path component"),
    R("double-slash", lambda f: f.file("a/b.csv"), "a//b.csv", "empty path component"),
    # -- symbolic links, anywhere, pointing anywhere
    R("symlink-to-etc-passwd", lambda f: f.link("passwd.csv", "/etc/passwd"), "passwd.csv",
      "symbolic link"),
    R("symlink-to-file-outside", lambda f: f.link("s.csv", f.outside / "secret.csv"), "s.csv",
      "symbolic link"),
    R("symlink-to-dir-outside", lambda f: f.link("d", f.outside), "d/secret.csv",
      "symbolic link"),
    R("relative-symlink-to-dir-outside", lambda f: f.link("d", "../elsewhere"), "d/secret.csv",
      "symbolic link"),
    R("symlink-to-file-inside", lambda f: f.link("copy.csv", "table.csv"), "copy.csv",
      "symbolic link"),
    R("symlink-loop", lambda f: f.link("loop.csv", "loop.csv"), "loop.csv", "symbolic link"),
    R("dangling-symlink", lambda f: f.link("gone.csv", "nowhere.csv"), "gone.csv",
      "symbolic link"),
    # -- things that are not regular files
    R("fifo", fifo, "pipe.csv", "FIFO"),
    R("socket", unix_socket, "s.csv", "socket"),
    R("device-file", device, "null.csv", "device file"),
    R("directory", lambda f: f.file("sub/a.csv"), "sub", "is a directory, not a regular file"),
    R("file-as-directory", nothing, "table.csv/x.csv", "is a regular file, not a directory"),
    R("missing", nothing, "nope.csv", "does not exist"),
    R("oversized", lambda f: f.file("big.csv", b"x" * 1025), "big.csv",
      "larger than the limit of 1024 bytes"),
    # -- names
    R("hidden-file", lambda f: f.file(".secret.csv"), ".secret.csv", "hidden"),
    R("hidden-dir", lambda f: f.file(".ipynb_checkpoints/a.ipynb"),
      ".ipynb_checkpoints/a.ipynb", "hidden"),
    R("fullwidth-solidus", lambda f: f.file("a\uff0fb.csv"), "a\uff0fb.csv",
      "U+FF0F FULLWIDTH SOLIDUS"),
    R("ligature", lambda f: f.file("\ufb01le.csv"), "\ufb01le.csv", "look-alike"),
    R("bidi-override", lambda f: f.file("evil\u202eexe.csv"), "evil\u202eexe.csv",
      "U+202E RIGHT-TO-LEFT OVERRIDE"),
    R("bidi-isolate", lambda f: f.file("a\u2066b.csv"), "a\u2066b.csv", "bidirectional"),
    R("zero-width-space", lambda f: f.file("ta\u200bble.csv"), "ta\u200bble.csv",
      "U+200B ZERO WIDTH SPACE"),
    R("zero-width-joiner", lambda f: f.file("a\u200db.csv"), "a\u200db.csv", "invisible"),
    R("not-nfc", lambda f: f.file("cafe\u0301.csv"), "cafe\u0301.csv", "NFC"),
    R("cyrillic-lookalike", lambda f: f.file("t\u0430ble.csv"), "t\u0430ble.csv",
      "mixes Cyrillic and Latin letters in the word"),
    R("greek-lookalike", lambda f: f.file("\u03bfk.csv"), "\u03bfk.csv",
      "mixes Greek and Latin letters"),
    R("non-utf8-name", lambda f: f.file(os.fsdecode(b"caf\xe9.csv")), os.fsdecode(b"caf\xe9.csv"),
      "not valid UTF-8"),
    R("newline-in-name", lambda f: f.file("a\nb.csv"), "a\nb.csv", "control character (U+000A)"),
    R("leading-space", lambda f: f.file(" table.csv"), " table.csv", "space"),
    R("long-name", nothing, "a" * 256 + ".csv", "longer than 255 bytes"),
]
# fmt: on


@pytest.mark.parametrize("row", HOSTILE_READS, ids=[row.id for row in HOSTILE_READS])
@pytest.mark.timeout(20)  # a FIFO must never make a read hang
def test_hostile_read_is_refused_and_loses_nothing(row: Read, folder: Folder):
    row.build(folder)
    relative = row.relative(folder) if callable(row.relative) else row.relative
    before = snapshot(folder.root.parent)

    with pytest.raises(OutputPathError) as caught:
        read_output(folder.root, relative, max_bytes=row.max_bytes)

    assert row.message in caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert isinstance(caught.value, ValueError)
    assert SECRET.decode() not in caught.value.reason
    assert snapshot(folder.root.parent) == before
    assert read_output(folder.root, "table.csv", max_bytes=1024) == CSV  # nothing lost


def test_the_hostile_reads_table_is_big_and_has_unique_ids():
    assert len(HOSTILE_READS) >= 35
    assert len({row.id for row in HOSTILE_READS}) == len(HOSTILE_READS)


# --- races: a file or folder swapped between listing and reading, or while opening ----------


def test_file_swapped_for_a_symlink_after_listing_is_refused(folder: Folder):
    assert [e.path for e in list_outputs(folder.root)] == ["table.csv"]
    (folder.root / "swap.tmp").symlink_to(folder.outside / "secret.csv")
    os.replace(folder.root / "swap.tmp", folder.root / "table.csv")
    with pytest.raises(OutputPathError, match="symbolic link"):
        read_output(folder.root, "table.csv", max_bytes=1024)


def test_directory_swapped_for_a_symlink_after_listing_is_refused(folder: Folder):
    folder.file("sub/t.csv")
    assert "sub/t.csv" in [e.path for e in list_outputs(folder.root)]
    (folder.outside / "t.csv").write_bytes(SECRET)
    os.rename(folder.root / "sub", folder.root / "old")
    folder.link("sub", folder.outside)
    with pytest.raises(OutputPathError, match="symbolic link"):
        read_output(folder.root, "sub/t.csv", max_bytes=1024)


def _swap_just_before_open(monkeypatch, name: str, swap: Callable[[], None]) -> list[str]:
    """Make ``swap`` run right before ``read_output`` opens ``name`` (after it was lstat-ed)."""
    real_open = os.open
    swapped: list[str] = []

    def racing_open(path, flags, *args, **kwargs):
        if path == name and not swapped:
            swap()
            swapped.append(name)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(outputs_folder.os, "open", racing_open)
    return swapped


def test_symlink_swapped_in_between_the_check_and_the_open_is_refused(folder, monkeypatch):
    def swap():
        (folder.root / "swap.tmp").symlink_to(folder.outside / "secret.csv")
        os.replace(folder.root / "swap.tmp", folder.root / "table.csv")

    swapped = _swap_just_before_open(monkeypatch, "table.csv", swap)
    with pytest.raises(OutputPathError, match="changed while it was being opened"):
        read_output(folder.root, "table.csv", max_bytes=1024)
    assert swapped


def test_directory_symlink_swapped_in_while_opening_is_refused(folder, monkeypatch):
    folder.file("sub/t.csv")
    (folder.outside / "t.csv").write_bytes(SECRET)

    def swap():
        os.rename(folder.root / "sub", folder.root / "old")
        (folder.root / "sub").symlink_to(folder.outside)

    swapped = _swap_just_before_open(monkeypatch, "sub", swap)
    with pytest.raises(OutputPathError, match="changed while it was being opened"):
        read_output(folder.root, "sub/t.csv", max_bytes=1024)
    assert swapped


@pytest.mark.timeout(20)
def test_fifo_swapped_in_while_opening_does_not_hang(folder, monkeypatch):
    def swap():
        os.unlink(folder.root / "table.csv")
        os.mkfifo(folder.root / "table.csv")

    _swap_just_before_open(monkeypatch, "table.csv", swap)
    with pytest.raises(OutputPathError, match="changed while it was being opened"):
        read_output(folder.root, "table.csv", max_bytes=1024)


def test_file_replaced_by_another_file_while_opening_is_refused(folder, monkeypatch):
    def swap():
        (folder.root / "new.tmp").write_bytes(b"other,data\n")
        os.replace(folder.root / "new.tmp", folder.root / "table.csv")

    _swap_just_before_open(monkeypatch, "table.csv", swap)
    with pytest.raises(OutputPathError, match="changed while it was being opened; try again"):
        read_output(folder.root, "table.csv", max_bytes=1024)


def test_file_growing_while_read_is_refused(folder, monkeypatch):
    real_read = os.pread

    grown = []

    def growing_read(fd, size, offset):
        chunk = real_read(fd, size, offset)
        if not grown:
            with open(folder.root / "table.csv", "ab") as handle:
                handle.write(b"South,40\n")
            grown.append(True)
        return chunk

    monkeypatch.setattr(outputs_folder.os, "pread", growing_read)
    with pytest.raises(OutputPathError, match="changed while it was being read; try again"):
        read_output(folder.root, "table.csv", max_bytes=1024)


def test_a_file_growing_past_the_limit_while_read_is_refused(folder, monkeypatch):
    """The size looked fine when checked; the file then grew: at most max_bytes + 1 are read."""
    real_read = os.pread
    sizes = []

    def read_after_growth(fd, size, offset):
        if not sizes:
            with open(folder.root / "table.csv", "ab") as handle:
                handle.write(b"x" * 5000)
        sizes.append(size)
        return real_read(fd, size, offset)

    monkeypatch.setattr(outputs_folder.os, "pread", read_after_growth)
    with pytest.raises(OutputPathError, match="larger than the limit of 1024 bytes"):
        read_output(folder.root, "table.csv", max_bytes=1024)
    assert sum(sizes) <= 1025


# --- reading what is fine ------------------------------------------------------------------


def test_reads_files_in_sub_folders_and_with_non_latin_names(folder: Folder):
    folder.file("figures/2024/plot.csv", b"a\n1\n")
    folder.file("résultats/表1.csv", b"b\n2\n")
    folder.file("αβγ.csv", b"c\n3\n")  # Greek only: no mixing with Latin
    assert read_output(folder.root, "figures/2024/plot.csv", max_bytes=10) == b"a\n1\n"
    assert read_output(folder.root, "résultats/表1.csv", max_bytes=10) == b"b\n2\n"
    assert read_output(folder.root, "αβγ.csv", max_bytes=10) == b"c\n3\n"


def test_reads_exactly_max_bytes_and_empty_files(folder: Folder):
    folder.file("exact.csv", b"x" * 1024)
    folder.file("empty.csv", b"")
    assert read_output(folder.root, "exact.csv", max_bytes=1024) == b"x" * 1024
    assert read_output(folder.root, "empty.csv", max_bytes=1024) == b""
    with pytest.raises(OutputPathError, match="larger than the limit of 1023 bytes"):
        read_output(folder.root, "exact.csv", max_bytes=1023)


def test_reads_large_files_in_chunks(folder: Folder):
    data = os.urandom(3 * 1024 * 1024 + 17)
    folder.file("big.png", data)
    assert read_output(folder.root, "big.png", max_bytes=len(data)) == data


def test_a_symlinked_root_is_configuration_and_is_followed(folder: Folder, tmp_path):
    (tmp_path / "root-link").symlink_to(folder.root)
    assert read_output(tmp_path / "root-link", "table.csv", max_bytes=100) == CSV


def test_missing_root(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        read_output(tmp_path / "nope", "a.csv", max_bytes=10)
    with pytest.raises(OutputPathError, match="does not exist"):
        list_outputs(tmp_path / "nope")


def test_negative_max_bytes_is_a_programming_error(folder: Folder):
    with pytest.raises(ValueError, match="max_bytes"):
        read_output(folder.root, "table.csv", max_bytes=-1)


def test_no_file_descriptor_is_leaked(folder: Folder):
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        read_output(folder.root, "table.csv", max_bytes=100)
        with pytest.raises(OutputPathError):
            read_output(folder.root, "table.csv", max_bytes=1)
        with pytest.raises(OutputPathError):
            read_output(folder.root, "table.csv/x", max_bytes=100)
        scan_outputs(folder.root)
    assert len(os.listdir("/proc/self/fd")) == before


# --- listing -------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_listing_offers_regular_files_only_and_reports_everything_else(folder: Folder):
    folder.file("figures/plot.png", b"png")
    folder.file("figures/deep/t.csv", b"t")
    folder.file(".hidden.csv")
    folder.file(".ipynb_checkpoints/nb-checkpoint.ipynb")
    folder.file("evil\u202eexe.csv")
    folder.file("ta\u200bble.csv")
    folder.file(os.fsdecode(b"caf\xe9.csv"))
    folder.link("passwd.csv", "/etc/passwd")
    folder.link("outside", folder.outside)
    folder.link("figures/inside.csv", "../table.csv")
    fifo(folder)
    unix_socket(folder)
    before = snapshot(folder.root.parent)

    listing = scan_outputs(folder.root)

    assert [e.path for e in listing.entries] == [
        "figures/deep/t.csv",
        "figures/plot.png",
        "table.csv",
    ]
    table = next(e for e in listing.entries if e.path == "table.csv")
    info = os.stat(folder.root / "table.csv")
    assert table == OutputEntry("table.csv", info.st_size, info.st_mtime, info.st_uid)
    skipped = {entry.path: entry.reason for entry in listing.skipped}
    assert skipped == {
        ".hidden.csv": "skipped: it is hidden (the name starts with '.')",
        ".ipynb_checkpoints": "skipped: it is hidden (the name starts with '.')",
        "caf\\xe9.csv": "skipped: it is not valid UTF-8",
        "evil\\u202eexe.csv": skipped["evil\\u202eexe.csv"],
        "figures/inside.csv": "skipped: it is a symbolic link (links are never followed)",
        "outside": "skipped: it is a symbolic link (links are never followed)",
        "passwd.csv": "skipped: it is a symbolic link (links are never followed)",
        "pipe.csv": "skipped: it is a FIFO (named pipe)",
        "s.csv": "skipped: it is a socket",
        "ta\\u200bble.csv": "skipped: it has an invisible character (U+200B ZERO WIDTH SPACE)",
    }
    assert "bidirectional control character" in skipped["evil\\u202eexe.csv"]
    assert list_outputs(folder.root) == listing.entries
    assert snapshot(folder.root.parent) == before
    for entry in listing.entries:  # everything listed can be read
        read_output(folder.root, entry.path, max_bytes=100)


def test_unreadable_folders_are_reported_not_raised(folder: Folder, monkeypatch):
    folder.file("locked/a.csv")
    real_scandir = os.scandir
    locked = os.stat(folder.root / "locked").st_ino

    def scandir(fd):
        if os.fstat(fd).st_ino == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(fd)

    monkeypatch.setattr(outputs_folder.os, "scandir", scandir)
    listing = scan_outputs(folder.root)
    assert [e.path for e in listing.entries] == ["table.csv"]
    assert listing.skipped == [SkippedEntry("locked", "skipped: it can't be read")]


def test_read_errors_become_output_path_errors(folder: Folder, monkeypatch):
    def broken_read(fd, size, offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(outputs_folder.os, "pread", broken_read)
    with pytest.raises(OutputPathError, match="can't be read: Input/output error"):
        read_output(folder.root, "table.csv", max_bytes=100)


def test_listing_refuses_a_folder_with_too_many_entries(folder: Folder):
    for number in range(12):
        folder.file(f"f{number}.csv")
    assert len(list_outputs(folder.root, max_files=13)) == 13
    with pytest.raises(OutputPathError, match="more than 12 entries"):
        list_outputs(folder.root, max_files=12)


def test_listing_stops_at_the_depth_limit(folder: Folder, monkeypatch):
    monkeypatch.setattr(outputs_folder, "MAX_DEPTH", 2)
    folder.file("a/b/c/deep.csv")
    folder.file("a/b/ok.csv")
    listing = scan_outputs(folder.root)
    assert [e.path for e in listing.entries] == ["a/b/ok.csv", "table.csv"]
    assert listing.skipped[0].path == "a/b/c"
    assert "nested deeper than 2 folders" in listing.skipped[0].reason


@pytest.mark.timeout(60)
def test_listing_while_files_are_swapped_never_follows_a_link(folder: Folder):
    """A researcher swapping a folder and a symlink in a loop never gets a file listed twice
    or anything from outside listed or read.

    Outside holds ``inside.csv`` too, with other bytes: a read that followed the link would
    return them. Positive control, deterministic: with the link in place, a naive reader
    (``open`` following links) gets the outside bytes, and ``read_output`` refuses."""
    (folder.outside / "only-outside.csv").write_bytes(SECRET)
    (folder.outside / "inside.csv").write_bytes(SECRET)
    folder.file("sub/inside.csv")
    os.rename(folder.root / "sub", folder.root / "sub.real")
    os.symlink(folder.outside, folder.root / "sub")
    with open(folder.root / "sub" / "inside.csv", "rb") as naive:
        assert naive.read() == SECRET  # the control: following the link leaks
    with pytest.raises(OutputPathError):
        read_output(folder.root, "sub/inside.csv", max_bytes=100)
    os.unlink(folder.root / "sub")
    os.rename(folder.root / "sub.real", folder.root / "sub")
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            try:
                os.rename(folder.root / "sub", folder.root / "sub.real")
                os.symlink(folder.outside, folder.root / "sub")
                os.unlink(folder.root / "sub")
                os.rename(folder.root / "sub.real", folder.root / "sub")
            except OSError:
                pass

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for _ in range(300):
            paths = [e.path for e in scan_outputs(folder.root).entries]
            assert not any("only-outside" in p for p in paths)
            try:
                data = read_output(folder.root, "sub/inside.csv", max_bytes=100)
            except OutputPathError:
                continue
            assert data == CSV
    finally:
        stop.set()
        thread.join()


# --- names ---------------------------------------------------------------------------------


def test_display_path_escapes_invisible_characters():
    assert display_path("evil\u202eexe.csv") == "evil\\u202eexe.csv"
    assert display_path("a\nb") == "a\\x0ab"
    assert display_path(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert display_path("a\\b") == "a\\\\b"
    assert display_path("résultats/表1.csv") == "résultats/表1.csv"


def test_valid_paths_return_their_components():
    assert validate_relative_path("a/b/c.csv") == ("a", "b", "c.csv")
    assert validate_relative_path("table 1.csv") == ("table 1.csv",)


def test_a_path_must_be_text():
    with pytest.raises(OutputPathError, match="a path must be text"):
        validate_relative_path(b"table.csv")  # type: ignore[arg-type]


@settings(max_examples=examples(500), deadline=None)
@given(st.text(max_size=30))
def test_validation_either_accepts_or_says_why(relative):
    try:
        components = validate_relative_path(relative)
    except OutputPathError as error:
        assert error.reason
        return
    assert "/".join(components) == relative
    assert all(component_problem(c) is None for c in components)
    assert not relative.startswith("/") and ".." not in components
    assert all(c.isprintable() for c in relative)


@settings(max_examples=examples(200), deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12))
def test_anything_accepted_can_be_created_and_read_back(tmp_path_factory, name):
    if validate_name_safely(name) is None:
        return
    root = tmp_path_factory.mktemp("outputs")
    (root / name).write_bytes(b"x")
    assert read_output(root, name, max_bytes=1) == b"x"
    assert [e.path for e in list_outputs(root)] == [name]


def validate_name_safely(name: str) -> tuple[str, ...] | None:
    try:
        components = validate_relative_path(name)
    except OutputPathError:
        return None
    return components if len(components) == 1 else None


def test_outputs_folder_imports_only_the_standard_library():
    import sys

    imported = imported_packages(outputs_folder)
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_the_module_never_opens_anything_for_writing():
    source = Path(outputs_folder.__file__).read_text(encoding="utf-8")
    for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND", "unlink", "rename"):
        assert flag not in source


def test_every_hostile_row_is_documented():
    doc = Path(__file__).parents[3] / "docs" / "checker-file-checks.md"
    text = doc.read_text(encoding="utf-8")
    missing = [row.id for row in HOSTILE_READS if f"| `{row.id}` |" not in text]
    assert not missing, f"add these rows to docs/checker-file-checks.md: {missing}"


# --- a file rewritten while it is read -------------------------------------------------------


#: Writers run as processes of their own (as a researcher's kernel does), so that they keep
#: writing while the test process reads: versions are 256 KiB of A, of B, of C, written in
#: 4 KiB pieces, until the file "stop" appears beside the target.
WRITERS = {
    # overwrite in place, half a version at a time with a short pause between the halves (as a
    # program writing row by row does): mid-way the file is half new, half old, same size,
    # and its times don't move while the writer pauses
    "rewrite_in_place": """
import os, sys, time
path, n = sys.argv[1], 0
while not os.path.exists(path + ".stop"):
    data = bytes([65 + n % 3]) * 256 * 1024
    with open(path, "r+b") as f:
        for start in (0, len(data) // 2):
            f.write(data[start : start + len(data) // 2])
            f.flush()
            time.sleep(0.01)
    n += 1
""",
    # write a new file beside it and rename it over the old one
    "replace_by_rename": """
import os, sys
path, n = sys.argv[1], 0
while not os.path.exists(path + ".stop"):
    with open(path + ".tmp", "wb") as f:
        f.write(bytes([65 + n % 3]) * 256 * 1024)
    os.replace(path + ".tmp", path)
    n += 1
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_file_rewritten_during_the_read_is_never_returned_mixed(folder: Folder, writer):
    """Bounded: 300 reads while another process rewrites the file; each read is refused or
    returns exactly one version (the snapshot is whole, never half old, half new)."""
    versions = [bytes([65 + n]) * 256 * 1024 for n in range(3)]
    path = folder.file("busy.csv", versions[0])
    # control: a quiet file reads back whole
    assert read_output(folder.root, "busy.csv", max_bytes=1 << 20) == versions[0]
    first = path.stat()
    process = subprocess.Popen([sys.executable, "-c", WRITERS[writer], str(path)])
    deadline = time.monotonic() + 30  # the reads start once the writer is writing
    while (path.stat().st_mtime_ns, path.stat().st_ino) == (first.st_mtime_ns, first.st_ino):
        assert time.monotonic() < deadline and process.poll() is None, "the writer never wrote"
        time.sleep(0.01)
    whole = refused = attempt = 0
    started = time.monotonic()
    try:
        # at least 300 reads, over at least two seconds (many of the writer's cycles)
        while attempt < 300 or time.monotonic() - started < 2:
            attempt += 1
            try:
                data = read_output(folder.root, "busy.csv", max_bytes=1 << 20)
            except OutputPathError as err:
                assert any(
                    f"{what} while it was being {when}" in err.reason
                    for what in ("changed", "replaced")
                    for when in ("read", "opened")
                ), err.reason
                refused += 1
                continue
            assert data in versions, (
                f"read {attempt} returned a mixture: {sorted(set(data))[:5]}, {len(data)} bytes"
            )
            whole += 1
    finally:
        Path(f"{path}.stop").touch()
        process.wait(30)
    print(f"\n{writer}: {whole} whole reads, {refused} refused, none mixed")
