#!/usr/bin/env python3
"""Back up a Havre enclave into one archive with a manifest of sha256 hashes, check one, and
restore one. Standard library only: it runs with the host's python3 (Debian's 3.11).

    havre_archive.py create  --state DIR --config FILE --output ARCHIVE [--include-data]
                             (--recipients-file FILE | --unencrypted)
    havre_archive.py verify  ARCHIVE [--identity FILE]
    havre_archive.py restore ARCHIVE --state DIR --config FILE [--identity FILE] [--force]

Encryption: with ``--recipients-file`` (age public keys, one a line: ``age1...`` or SSH public
keys) the archive is streamed through ``age`` (Debian's package) and never touches the disk
unencrypted; ``ARCHIVE.age`` is then what is written. ``verify`` and ``restore`` of an
encrypted archive need ``--identity`` (the operator's age identity file): the whole archive is
decrypted into a private temporary folder first (age authenticates every chunk), so a changed
archive or the wrong identity is refused with a sentence before one file is written. An
unencrypted archive is written only with ``--unencrypted`` (a warning is printed).

What goes in (``state/`` is the enclave's state directory):

* ``config/enclave.yaml``: the enclave config;
* ``state/egress/audit-checkpoints.jsonl`` first, then ``state/egress/egress.db`` as a
  consistent online copy (SQLite's backup API, the same as ``sqlite3 .backup``), then the
  append-only content store: so every checkpoint and every stored hash the database refers to
  is in the archive;
* the rest of ``state/``: secrets, signing key, hub database (also a consistent copy), the
  embedded identity provider's users, every project's homes and outputs, and the project data
  only with ``--include-data`` (``data/<slug>/`` for data kept outside the state directory).

``manifest.json`` (the last member) lists every other member with its sha256, size, mode and
owner; ``ARCHIVE.sha256`` next to the archive holds the archive's own hash. ``verify`` and
``restore`` refuse an archive whose members and manifest disagree in any way (changed,
missing or extra file, link, device, absolute or ``..`` path) and say which member.
Exit status: 0 ok; 1 refused (tampered or not a Havre archive); 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

FORMAT = "havre-backup/1"
MANIFEST = "manifest.json"
#: SQLite databases copied with the backup API (paths relative to the state directory)
SQLITE_FILES = ("egress/egress.db", "hub/jupyterhub.sqlite")
#: never archived: SQLite's side files (the copies above are complete), caches
SKIP_SUFFIXES = ("-wal", "-shm", "-journal")


AGE_MAGIC = b"age-encryption.org/v1\n"
_STARTED = time.monotonic()


def _step(what: str) -> None:
    """A progress line on a terminal only (the format of havre/host/progress.py; this script
    runs alone on the host, so it carries its own copy of these few lines)."""
    forced = os.environ.get("HAVRE_PROGRESS", "")
    if forced == "1" or (forced != "0" and sys.stderr.isatty()):
        elapsed = time.monotonic() - _STARTED
        print(f"havre_archive.py [{elapsed:6.1f}s] {what}", file=sys.stderr, flush=True)


class Refused(Exception):
    """The archive is not one this tool wrote, or it was changed since."""


def is_encrypted(archive: Path) -> bool:
    with open(archive, "rb") as f:
        return f.read(len(AGE_MAGIC)) == AGE_MAGIC


def _age() -> str:
    found = shutil.which("age")
    if not found:
        raise SystemExit("error: the age command is missing (Debian: apt-get install age)")
    return found


def decrypt(archive: Path, identity: Path | None, into: Path) -> Path:
    """Decrypt the whole archive into the private folder ``into``; refuse with a sentence."""
    if identity is None:
        raise Refused(f"{archive} is encrypted with age: give the identity file (--identity)")
    if not identity.is_file():
        raise Refused(f"identity file {identity} does not exist")
    plain = into / "archive.tar.gz"
    _step(f"decrypting {archive.name}: waiting on age")
    run = subprocess.run(
        [_age(), "--decrypt", "--identity", str(identity), "--output", str(plain), str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        plain.unlink(missing_ok=True)
        detail = run.stderr.strip().splitlines()[0] if run.stderr.strip() else "no detail"
        if "no identity matched" in run.stderr:
            raise Refused(
                f"{archive} was not encrypted to the identity in {identity} (wrong key?): {detail}"
            )
        raise Refused(f"{archive} could not be decrypted: it was changed or is damaged ({detail})")
    return plain


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Hashing(io.RawIOBase):
    """A reader that hashes exactly the bytes tarfile copies into the archive."""

    def __init__(self, f: io.BufferedReader) -> None:
        self.f, self.digest = f, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data


class Writer:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar, self.entries = tar, {}

    def add_file(self, src: Path, name: str) -> None:
        st = src.lstat()
        if not src.is_file() or src.is_symlink():
            return  # only regular files and folders are archived
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
        info.uid, info.gid = st.st_uid, st.st_gid
        with open(src, "rb") as f:
            reader = _Hashing(f)
            self.tar.addfile(info, reader)
        self.entries[name] = {
            "sha256": reader.digest.hexdigest(),
            "size": info.size,
            "mode": oct(info.mode),
            "uid": info.uid,
            "gid": info.gid,
        }

    def add_dir(self, src: Path, name: str) -> None:
        st = src.lstat()
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, st.st_mode & 0o7777, int(st.st_mtime)
        info.uid, info.gid = st.st_uid, st.st_gid
        self.tar.addfile(info)
        self.entries[name + "/"] = {"mode": oct(info.mode), "uid": info.uid, "gid": info.gid}

    def add_tree(self, src: Path, name: str, skip: set[Path]) -> None:
        if src in skip or not src.exists() or src.is_symlink():
            return
        if src.is_dir():
            self.add_dir(src, name)
            for child in sorted(src.iterdir()):
                self.add_tree(child, f"{name}/{child.name}", skip)
        elif not src.name.endswith(SKIP_SUFFIXES):
            self.add_file(src, name)

    def add_sqlite(self, src: Path, name: str, tmp: Path) -> None:
        copy = tmp / hashlib.sha256(name.encode()).hexdigest()
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as source:
            with sqlite3.connect(copy) as target:
                source.backup(target)
        st = src.stat()
        os.chown(copy, st.st_uid, st.st_gid)
        os.chmod(copy, st.st_mode & 0o7777)
        self.add_file(copy, name)
        copy.unlink()


def _data_paths(config: Path, state: Path) -> dict[str, Path]:
    """Each project's data folder, read from the config (plain YAML; PyYAML if present)."""
    try:
        import yaml  # noqa: PLC0415 - optional: Debian's python3-yaml
    except ImportError:
        return {p.parent.name: p for p in (state / "projects").glob("*/data")}
    doc = yaml.safe_load(config.read_text()) or {}
    found = {}
    for slug, project in (doc.get("projects") or {}).items():
        path = (project or {}).get("data_path") or str(state / "projects" / slug / "data")
        found[slug] = Path(path)
    return found


def create(
    state: Path,
    config: Path,
    output: Path,
    include_data: bool,
    recipients: Path | None = None,
) -> dict:
    state, started = state.resolve(), time.monotonic()
    if recipients is not None:
        keys = [
            line
            for line in (recipients.read_text().splitlines() if recipients.is_file() else [])
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not keys:
            raise SystemExit(f"error: {recipients} holds no age recipient (public key)")
    if not (state / "secrets").is_dir():
        raise SystemExit(f"error: {state} is not an enclave state directory (no secrets/)")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    data_paths = _data_paths(config, state)
    skip = {state / rel for rel in SQLITE_FILES}
    skip |= {state / "egress" / "audit-checkpoints.jsonl", state / "egress" / "content"}
    skip |= {p for p in data_paths.values() if p.is_relative_to(state)}
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    age = None
    if recipients is not None:
        # the plain archive only ever exists in the pipe into age
        age = subprocess.Popen(
            [_age(), "--encrypt", "--recipients-file", str(recipients)],
            stdin=subprocess.PIPE,
            stdout=fd,
        )
        os.close(fd)
        raw_file = age.stdin
        mode = "w|gz"
    else:
        raw_file = os.fdopen(fd, "wb")
        mode = "w:gz"
    _step(f"archiving {state} into {output.name}" + (" (age)" if age else ""))
    with raw_file as raw, tarfile.open(fileobj=raw, mode=mode) as tar:
        writer = Writer(tar)
        writer.add_file(config, "config/enclave.yaml")
        writer.add_dir(state, "state")
        egress = state / "egress"
        if egress.is_dir():
            writer.add_dir(egress, "state/egress")
            # order matters: checkpoints, then the database, then the append-only store
            checkpoints = "audit-checkpoints.jsonl"
            writer.add_tree(egress / checkpoints, f"state/egress/{checkpoints}", set())
            _step("copying the databases: waiting on SQLite's backup API")
            with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
                for rel in SQLITE_FILES:
                    if (state / rel).exists():
                        writer.add_sqlite(state / rel, f"state/{rel}", Path(tmp))
            writer.add_tree(egress / "content", "state/egress/content", set())
        _step("archiving secrets, homes and outputs")
        for child in sorted(state.iterdir()):
            if child.name != "egress":
                writer.add_tree(child, f"state/{child.name}", skip)
        for child in sorted(egress.iterdir()) if egress.is_dir() else []:
            writer.add_tree(child, f"state/egress/{child.name}", skip)
        if include_data:
            for slug, path in data_paths.items():
                name = (
                    f"state/{path.relative_to(state)}"
                    if path.is_relative_to(state)
                    else f"data/{slug}"
                )
                writer.add_tree(path, name, set())
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "state_dir": str(state),
            "include_data": include_data,
            "external_data": {
                slug: str(p) for slug, p in data_paths.items() if not p.is_relative_to(state)
            }
            if include_data
            else {},
            "entries": writer.entries,
        }
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(body), 0o600, int(time.time())
        tar.addfile(info, io.BytesIO(body))
    _step("finishing the archive" + (": waiting on age" if age else ""))
    if age is not None and age.wait() != 0:
        partial.unlink(missing_ok=True)
        raise SystemExit(f"error: age could not encrypt to {recipients} (see above)")
    os.replace(partial, output)
    digest = sha256_file(output)
    Path(f"{output}.sha256").write_text(f"{digest}  {output.name}\n")
    files = sum(1 for k in writer.entries if not k.endswith("/"))
    return {
        "archive": str(output),
        "sha256": digest,
        "bytes": output.stat().st_size,
        "files": files,
        "encrypted": recipients is not None,
        "seconds": round(time.monotonic() - started, 2),
    }


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name


def _check_sidecar(archive: Path) -> None:
    sidecar = Path(f"{archive}.sha256")
    if sidecar.exists():
        _step(f"checking {sidecar.name}")
        expected = sidecar.read_text().split()[0]
        if sha256_file(archive) != expected:
            raise Refused(f"{archive} does not match {sidecar}: the archive was changed")


def verify(archive: Path, identity: Path | None = None) -> dict:
    """Check the archive against its .sha256 (when present), decrypt it when encrypted, and
    check it against its manifest; return the manifest."""
    _check_sidecar(archive)
    if is_encrypted(archive):
        with tempfile.TemporaryDirectory(prefix=".havre-verify-", dir=archive.parent) as tmp:
            return _verify_plain(decrypt(archive, identity, Path(tmp)))
    return _verify_plain(archive)


def _verify_plain(archive: Path) -> dict:
    _step("checking every member against the manifest")
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError) as err:
        raise Refused(f"{archive} is not a readable archive: {err}") from None
    with tar:
        members = tar.getmembers()
        if not members or members[-1].name != MANIFEST:
            raise Refused(f"{archive} has no {MANIFEST} at its end: not a Havre backup")
        manifest = json.loads(tar.extractfile(members[-1]).read())
        if manifest.get("format") != FORMAT:
            raise Refused(f"unknown archive format {manifest.get('format')!r}")
        entries = dict(manifest["entries"])
        for member in members[:-1]:
            key = member.name + ("/" if member.isdir() else "")
            if not _safe_name(member.name):
                raise Refused(f"member {member.name!r}: unsafe path")
            if not (member.isfile() or member.isdir()):
                raise Refused(f"member {member.name!r}: not a regular file or folder")
            entry = entries.pop(key, None)
            if entry is None:
                raise Refused(f"member {member.name!r} is not in the manifest (added)")
            if member.isfile():
                digest = hashlib.sha256()
                stream = tar.extractfile(member)
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
                if digest.hexdigest() != entry["sha256"] or member.size != entry["size"]:
                    raise Refused(f"member {member.name!r}: sha256 differs from the manifest")
            if (oct(member.mode), member.uid, member.gid) != (
                entry["mode"],
                entry["uid"],
                entry["gid"],
            ):
                raise Refused(f"member {member.name!r}: mode or owner differs from the manifest")
        if entries:
            raise Refused(f"missing from the archive: {sorted(entries)[:5]}")
    return manifest


def restore(
    archive: Path, state: Path, config: Path, force: bool, identity: Path | None = None
) -> dict:
    _check_sidecar(archive)
    if is_encrypted(archive):
        # decrypted whole and verified before one file is written
        with tempfile.TemporaryDirectory(prefix=".havre-restore-", dir=archive.parent) as tmp:
            return _restore_plain(decrypt(archive, identity, Path(tmp)), state, config, force)
    return _restore_plain(archive, state, config, force)


def _restore_plain(archive: Path, state: Path, config: Path, force: bool) -> dict:
    manifest = _verify_plain(archive)
    state = state.resolve()
    if state.exists() and any(state.iterdir()) and not force:
        raise SystemExit(f"error: {state} is not empty; restore onto an empty state directory")
    if manifest["state_dir"] != str(state):
        raise SystemExit(
            f"error: the archive is of state directory {manifest['state_dir']}, not {state}: "
            "keep enclave.state_dir the same when moving"
        )
    external = {slug: Path(p) for slug, p in manifest.get("external_data", {}).items()}
    _step(f"restoring {len(manifest['entries'])} entries into {state}")
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar.getmembers()[:-1]:
            parts = PurePosixPath(member.name).parts
            if parts[0] == "state":
                target = state.joinpath(*parts[1:])
            elif parts[0] == "config":
                target = config
            elif parts[0] == "data" and len(parts) > 1 and parts[1] in external:
                target = external[parts[1]].joinpath(*parts[2:])
            else:
                raise Refused(f"member {member.name!r}: unexpected place")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            os.chown(target, member.uid, member.gid)
            os.chmod(target, member.mode)
    return {"restored": str(state), "entries": len(manifest["entries"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="havre_archive.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create")
    c.add_argument("--state", type=Path, required=True)
    c.add_argument("--config", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("--include-data", action="store_true")
    how = c.add_mutually_exclusive_group(required=True)
    how.add_argument("--recipients-file", type=Path, help="age recipients (public keys)")
    how.add_argument("--unencrypted", action="store_true", help="write a plain archive")
    v = sub.add_parser("verify")
    v.add_argument("archive", type=Path)
    v.add_argument("--identity", type=Path, help="age identity file (encrypted archives)")
    r = sub.add_parser("restore")
    r.add_argument("archive", type=Path)
    r.add_argument("--state", type=Path, required=True)
    r.add_argument("--config", type=Path, required=True)
    r.add_argument("--force", action="store_true")
    r.add_argument("--identity", type=Path, help="age identity file (encrypted archives)")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            if args.unencrypted:
                print(
                    "WARNING: writing an UNENCRYPTED backup (--unencrypted): it holds the "
                    "enclave's secrets and signing key in the clear",
                    file=sys.stderr,
                )
            result = create(
                args.state, args.config, args.output, args.include_data, args.recipients_file
            )
        elif args.command == "verify":
            manifest = verify(args.archive, args.identity)
            entries, created = len(manifest["entries"]), manifest["created"]
            result = {"ok": True, "entries": entries, "created": created}
        else:
            result = restore(args.archive, args.state, args.config, args.force, args.identity)
    except Refused as err:
        print(f"REFUSED: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _step("done")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
