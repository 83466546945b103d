"""Distinct identities: a uid per (user, project) server and a gid per project.

Pure module (standard library only; no Docker, no web code). Before this, every notebook
server ran as uid 1000, which is also the first account on most hosts, and every member of a
project shared one ``outputs/`` folder as that one uid. Now:

* each (user, project) server runs as a **uid of its own**, and each project has a **group of
  its own**; both come from one range that no host account, no host group and no subordinate
  id range (``/etc/subuid``, ``/etc/subgid``: rootless containers) uses. The default range is
  ``2_000_000`` to ``2_999_999`` (:data:`DEFAULT_BASE`, :data:`DEFAULT_SIZE`);
* the allocation is a **table kept in the state folder** (``<state_dir>/identities/
  table.json``), written atomically under a lock. An id, once given, is never given to anyone
  else, even after the user leaves the project, so a file's owner stays attributable for as
  long as the file exists; the table travels with the state folder (back-up, restore, moving
  host), so ids are stable across restarts and hosts. A deterministic derivation (a hash of
  the names) would need the same table anyway to handle its collisions, and could not promise
  that an id is never reused;
* :func:`folder_plan` says who owns what on the host (see ``docs/architecture.md``,
  "Identities and filesystems"): project folder and data ``root:<project gid>`` 0750 (files
  0640), homes 0700 per uid, ``outputs/`` owned by the egress service's uid with the project's
  group, sticky and setgid (members write their own files, read each other's, and can't
  delete or rename a colleague's; the egress service lists it and reads what it needs).

Every error is an :class:`IdentityError` with a sentence saying what to fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BASE = 2_000_000
"""First id of Havre's range (uids and gids)."""

DEFAULT_SIZE = 1_000_000
"""How many ids the range holds."""

LEGACY_UID = 1000
"""The uid (and gid) every notebook server ran as before per-server identities."""

EGRESS_UID = 1001
"""The egress service's uid and gid (images/egress/Dockerfile): reads outputs and the table."""

TABLE_SCHEMA = "havre.identities/1"
TABLE_DIR = "identities"
TABLE_NAME = "table.json"

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"


class IdentityError(ValueError):
    """An identity can't be allocated or the table can't be used; the message says why."""


@dataclass(frozen=True)
class HostIds:
    """The ids the host already uses: accounts, groups and subordinate ranges."""

    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    ranges: tuple[tuple[int, int], ...] = ()  # (first, count) from /etc/subuid, /etc/subgid

    def used(self, n: int) -> bool:
        """Whether ``n`` is a host uid or gid, or inside a subordinate range."""
        if n in self.uids or n in self.gids:
            return True
        return any(first <= n < first + count for first, count in self.ranges)


def _ids_column(text: str, column: int) -> set[int]:
    found: set[int] = set()
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > column and parts[column].strip().isdigit():
            found.add(int(parts[column]))
    return found


def _ranges(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            found.append((int(parts[1]), int(parts[2])))
    return found


def parse_host_ids(
    passwd: str = "", group: str = "", subuid: str = "", subgid: str = ""
) -> HostIds:
    """The host's ids from the text of ``/etc/passwd``, ``/etc/group``, ``/etc/sub[ug]id``."""
    return HostIds(
        uids=frozenset(_ids_column(passwd, 2)),
        gids=frozenset(_ids_column(passwd, 3) | _ids_column(group, 2)),
        ranges=tuple(_ranges(subuid) + _ranges(subgid)),
    )


def read_host_ids(etc: Path = Path("/etc")) -> HostIds:
    """:func:`parse_host_ids` of this host's files (a missing file counts as empty)."""

    def text(name: str) -> str:
        try:
            return (etc / name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    return parse_host_ids(text("passwd"), text("group"), text("subuid"), text("subgid"))


def range_problems(base: int, size: int, host: HostIds) -> list[str]:
    """Why ``[base, base + size)`` can't be Havre's range (empty: it can)."""
    problems: list[str] = []
    if not isinstance(base, int) or not isinstance(size, int) or isinstance(base, bool):
        return ["the identity range's base and size must be whole numbers"]
    if base < 65_536:
        problems.append(
            f"the identity range starts at {base}, below 65536: ordinary host accounts live "
            "there; choose a base of at least 65536 (the default is 2000000)"
        )
    if size < 16:
        problems.append(f"the identity range holds {size} ids; it needs at least 16")
    if base + size - 1 > _MAX_ID:
        problems.append(f"the identity range ends above {_MAX_ID}, the largest usable id")
    clashing = sorted(n for n in host.uids | host.gids if base <= n < base + size)
    if clashing:
        problems.append(
            f"host accounts or groups use ids inside Havre's range ({base} to "
            f"{base + size - 1}): {', '.join(map(str, clashing[:5]))}; choose another base"
        )
    for first, count in host.ranges:
        if first < base + size and base < first + count:
            problems.append(
                f"the subordinate id range {first} to {first + count - 1} (/etc/subuid or "
                f"/etc/subgid) overlaps Havre's range ({base} to {base + size - 1}); "
                "choose another base"
            )
    return problems


def require_slug(slug: object) -> str:
    """``slug`` if it is a project slug, else :class:`IdentityError`."""
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise IdentityError(f"{slug!r} is not a project name (lower-case letters, digits, '-').")
    return slug


def require_username(username: object) -> str:
    """``username`` if it is a Havre user name, else :class:`IdentityError`."""
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise IdentityError(
            f"{username!r} is not a user name (lower-case letters, digits, '.', '_', '@', '-')."
        )
    return username


@dataclass(frozen=True)
class Identity:
    """Who a notebook server runs as."""

    user: str
    project: str
    uid: int
    gid: int


@dataclass
class IdentityTable:
    """Ids given so far: ``projects`` (slug -> gid), ``servers`` ("user/project" -> uid).

    ``next_id`` only grows: an id is never given twice.
    """

    base: int = DEFAULT_BASE
    size: int = DEFAULT_SIZE
    next_id: int = DEFAULT_BASE
    projects: dict[str, int] = field(default_factory=dict)
    servers: dict[str, int] = field(default_factory=dict)

    def _take(self, host: HostIds) -> int:
        n = max(self.next_id, self.base)
        taken = set(self.projects.values()) | set(self.servers.values())
        while n < self.base + self.size and (host.used(n) or n in taken):
            n += 1
        if n >= self.base + self.size:
            raise IdentityError(
                f"Havre's identity range ({self.base} to {self.base + self.size - 1}) is used "
                "up; give it more ids (identities.size in the enclave config)."
            )
        self.next_id = n + 1
        return n

    def project_gid(self, slug: str, host: HostIds = HostIds()) -> int:
        """The project's gid, allocated on first use."""
        slug = require_slug(slug)
        if slug not in self.projects:
            self.projects[slug] = self._take(host)
        return self.projects[slug]

    def identity(self, username: str, slug: str, host: HostIds = HostIds()) -> Identity:
        """The (user, project) server's identity, allocated on first use."""
        key = f"{require_username(username)}/{require_slug(slug)}"
        gid = self.project_gid(slug, host)
        if key not in self.servers:
            self.servers[key] = self._take(host)
        return Identity(username, slug, self.servers[key], gid)

    def owner_of(self, uid: int) -> tuple[str, str] | None:
        """``(user, project)`` of a server uid, or None when the uid is not one of Havre's."""
        for key, n in self.servers.items():
            if n == uid:
                user, _, project = key.rpartition("/")
                return user, project
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "schema": TABLE_SCHEMA,
            "base": self.base,
            "size": self.size,
            "next_id": self.next_id,
            "projects": dict(sorted(self.projects.items())),
            "servers": dict(sorted(self.servers.items())),
        }

    @classmethod
    def from_json(cls, doc: object, source: str = "the identity table") -> IdentityTable:
        """Parse and check a table; a damaged one is refused, never silently reset."""
        bad = IdentityError(
            f"{source} is damaged (not a {TABLE_SCHEMA} document); restore it from the "
            "back-up: ids must never be given twice."
        )
        if not isinstance(doc, Mapping) or doc.get("schema") != TABLE_SCHEMA:
            raise bad
        base, size, next_id = doc.get("base"), doc.get("size"), doc.get("next_id")
        projects, servers = doc.get("projects"), doc.get("servers")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (base, size, next_id)):
            raise bad
        if not isinstance(projects, Mapping) or not isinstance(servers, Mapping):
            raise bad
        assert isinstance(base, int) and isinstance(size, int) and isinstance(next_id, int)
        table = cls(base=base, size=size, next_id=next_id)
        seen: set[int] = set()
        for mapping, target in ((projects, table.projects), (servers, table.servers)):
            for key, n in mapping.items():
                if not isinstance(n, int) or isinstance(n, bool) or n in seen:
                    raise bad
                if not base <= n < min(next_id, base + size):
                    raise bad
                seen.add(n)
                target[str(key)] = n
        for key in table.servers:
            user, _, project = key.rpartition("/")
            try:
                require_username(user)
                require_slug(project)
            except IdentityError:
                raise bad from None
        return table


def table_path(state_dir: Path) -> Path:
    """``<state_dir>/identities/table.json``."""
    return Path(state_dir) / TABLE_DIR / TABLE_NAME


def load_table(path: Path, base: int = DEFAULT_BASE, size: int = DEFAULT_SIZE) -> IdentityTable:
    """The table at ``path``; a new empty one (with this range) if the file doesn't exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return IdentityTable(base=base, size=size, next_id=base)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    table = IdentityTable.from_json(doc, str(path))
    if (table.base, table.size) != (base, size) and (table.projects or table.servers):
        raise IdentityError(
            f"{path} was made with the range {table.base}+{table.size}, the config now says "
            f"{base}+{size}; ids already given can't move. Put the old range back."
        )
    table.base, table.size = base, size
    table.next_id = max(table.next_id, base)
    return table


def save_table(table: IdentityTable, path: Path, *, reader_gid: int | None = None) -> None:
    """Write ``table`` atomically (a new file renamed over the old one).

    Mode 0600 (root only); with ``reader_gid``, 0640 and that group may read it (the egress
    service, which names the owner of a file in a release request). The folder holding it is
    made 0750 (0700 without a reader).
    """
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if reader_gid is None else 0o640
    if os.geteuid() == 0:
        os.chown(folder, 0, 0 if reader_gid is None else reader_gid)
    os.chmod(folder, 0o700 if reader_gid is None else 0o750)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".table-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            if os.geteuid() == 0 and reader_gid is not None:
                os.fchown(f.fileno(), 0, reader_gid)
            json.dump(table.to_json(), f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked_table(
    path: Path,
    *,
    base: int = DEFAULT_BASE,
    size: int = DEFAULT_SIZE,
    reader_gid: int | None = None,
) -> Iterator[IdentityTable]:
    """The table, locked against other writers (hub threads, ``havre up``), saved on exit
    when it changed. An exception inside the block leaves the file as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.parent / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        table = load_table(path, base, size)
        before = table.to_json()
        yield table
        if table.to_json() != before or not path.exists():
            save_table(table, path, reader_gid=reader_gid)
    finally:
        os.close(lock_fd)


def owners_of(table_file: Path) -> dict[int, str]:
    """uid -> user name, from a table file (empty when there is none); for the egress service."""
    try:
        table = load_table_any(table_file)
    except FileNotFoundError:
        return {}
    return {uid: key.rpartition("/")[0] for key, uid in table.servers.items()}


def load_table_any(path: Path) -> IdentityTable:
    """The table at ``path`` whatever its range (``FileNotFoundError`` when absent)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    return IdentityTable.from_json(doc, str(path))


# --- the folder plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderRule:
    """A folder (or, with ``files_mode``, a tree) and who owns it."""

    path: Path
    uid: int
    gid: int
    mode: int
    files_mode: int | None = None  # data: every file below gets this mode and owner too


def project_plan(
    project_dir: Path, data_dir: Path, gid: int, reader_uid: int = EGRESS_UID
) -> list[FolderRule]:
    """The project's folders.

    * the project folder ``root:<gid>`` 0751: others may pass through to ``outputs`` (the
      egress service) but not list it;
    * ``data`` ``root:<gid>`` 0750, its files 0640: the project's servers only;
    * ``outputs`` ``<reader_uid>:<gid>`` 3570: members (the group) create files, which keep
      the project's group (setgid) and can be deleted or renamed only by their owner
      (sticky); the egress service (``reader_uid``, mounted read-only) lists it and reads
      files through their "others" bits (the notebooks' umask 022 gives 0644);
    * ``homes`` ``root:root`` 0700: each home is mounted on its own.
    """
    return [
        FolderRule(project_dir, 0, gid, 0o751),
        FolderRule(data_dir, 0, gid, 0o750, files_mode=0o640),
        FolderRule(project_dir / "outputs", reader_uid, gid, 0o3570),
        FolderRule(project_dir / "homes", 0, 0, 0o700),
    ]


def home_plan(home: Path, identity: Identity) -> list[FolderRule]:
    """The server's home (its own uid only) and the mount point of ``outputs`` in it."""
    return [
        FolderRule(home, identity.uid, identity.gid, 0o700),
        FolderRule(home / "outputs", identity.uid, identity.gid, 0o750),
    ]


def apply_rule(rule: FolderRule) -> bool:
    """Create the folder if needed and set its owner and mode; True if anything changed.

    With ``files_mode`` the tree below is set too (directories get ``rule.mode``), without
    following symbolic links.
    """
    changed = False
    path = rule.path
    if not path.is_dir():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        changed = True
    changed |= _set(path, rule.uid, rule.gid, rule.mode)
    if rule.files_mode is not None:
        for root, dirs, files in os.walk(path):
            for name in dirs:
                changed |= _set(Path(root) / name, rule.uid, rule.gid, rule.mode)
            for name in files:
                changed |= _set(Path(root) / name, rule.uid, rule.gid, rule.files_mode)
    return changed


def _set(path: Path, uid: int, gid: int, mode: int) -> bool:
    st = os.lstat(path)
    if os.path.islink(path):
        return False
    changed = False
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.lchown(path, uid, gid)
        changed = True
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
        changed = True
    return changed


def migrate_tree(root: Path, old_uid: int, identity: Identity) -> int:
    """Give everything under ``root`` owned by ``old_uid`` to ``identity``; how many changed.

    For homes made when every server ran as :data:`LEGACY_UID`. Symbolic links are changed
    themselves (``lchown``), never followed.
    """
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = Path(dirpath) / name if name else Path(dirpath)
            st = os.lstat(path)
            if st.st_uid == old_uid:
                os.lchown(path, identity.uid, identity.gid)
                count += 1
    return count


def groups_for(table: IdentityTable, slugs: Iterable[str]) -> list[int]:
    """The gids of ``slugs`` that have one (for the egress service's extra groups)."""
    return [table.projects[s] for s in slugs if s in table.projects]
