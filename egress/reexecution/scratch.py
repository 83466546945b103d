"""A re-execution's inputs and its scratch folder: the checks on what a run is given (the
notebook, its papermill parameters, extra files, limits), the folder it runs in (0700, owned
by the notebook user, written without following links) and the collection of what it wrote
(regular files only, never following a link, sizes and counts capped).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nbformat
import yaml

from egress.reexecution.model import (
    EXECUTED_NAME,
    INPUT_NAME,
    MAX_EXTRA_FILES_BYTES,
    MAX_NOTEBOOK_BYTES,
    MAX_PARAMETERS_BYTES,
    NOTEBOOK_GID,
    NOTEBOOK_UID,
    OUTPUTS_NAME,
    PARAMS_NAME,
    SDC_PARAMS_NAME,
    CollectionLimits,
    Refused,
)

_RESERVED = frozenset({INPUT_NAME, EXECUTED_NAME, PARAMS_NAME, OUTPUTS_NAME, SDC_PARAMS_NAME})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_PYTHON_KEYWORDS = frozenset(
    "False None True and as assert async await break class continue def del elif else except "
    "finally for from global if import in is lambda nonlocal not or pass raise return try while "
    "with yield".split()
)


# --------------------------------------------------------------------------------------------
# Checking a request


def _check_value(value: Any, where: str, depth: int = 0) -> None:
    if depth > 16:
        raise Refused(f"parameter {where} is nested too deeply")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Refused(f"parameter {where} is not a finite number")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise Refused(f"parameter {where} has a key that isn't a string")
            _check_value(item, f"{where}[{key!r}]", depth + 1)
        return
    raise Refused(f"parameter {where} has an unsupported type {type(value).__name__}")


def parameters_yaml(parameters: Mapping[str, Any]) -> bytes:
    """The ``-f`` file papermill reads; refuses names that aren't identifiers (no injection).

    papermill writes ``name = <value>`` into the injected cell, so a name must be a plain Python
    identifier; values are written as YAML by PyYAML and read back to check they survive the
    trip unchanged (papermill reads the file with a safe loader).
    """
    if not isinstance(parameters, Mapping):
        raise Refused("parameters must be a mapping")
    plain: dict[str, Any] = {}
    for name, value in parameters.items():
        if (
            not isinstance(name, str)
            or not _IDENTIFIER.fullmatch(name)
            or name in _PYTHON_KEYWORDS
            or name.startswith("__")
        ):
            raise Refused(f"parameter name {name!r} is not a plain Python identifier")
        _check_value(value, name)
        plain[name] = json.loads(json.dumps(value))  # tuples -> lists, a private copy
    text = yaml.safe_dump(plain, sort_keys=True, allow_unicode=False, default_flow_style=False)
    if (yaml.safe_load(text) or {}) != plain:
        raise Refused("parameters don't survive a YAML round trip")
    data = text.encode("ascii")
    if len(data) > MAX_PARAMETERS_BYTES:
        raise Refused(f"parameters are larger than {MAX_PARAMETERS_BYTES} bytes")
    return data


def clean_notebook(data: bytes) -> bytes:
    """The notebook with outputs, execution counts and widget state cleared (nbformat 4)."""
    if not isinstance(data, bytes | bytearray):
        raise Refused("the notebook must be bytes")
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise Refused(f"the notebook is larger than {MAX_NOTEBOOK_BYTES} bytes")
    try:
        nb = nbformat.reads(bytes(data).decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # any parse or schema problem
        raise Refused(f"not a valid notebook: {type(err).__name__}: {err}"[:500]) from None
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    nb.metadata.pop("widgets", None)
    return nbformat.writes(nb).encode("utf-8")


def check_extra_files(extra_files: Mapping[str, bytes]) -> dict[str, bytes]:
    checked: dict[str, bytes] = {}
    total = 0
    for name, content in extra_files.items():
        parts = name.split("/") if isinstance(name, str) else []
        if (
            not parts
            or len(parts) > 4
            or not all(_NAME_PART.fullmatch(p) and p not in (".", "..") for p in parts)
            or parts[0] in _RESERVED
        ):
            raise Refused(f"extra file name {name!r} is not allowed")
        if not isinstance(content, bytes | bytearray):
            raise Refused(f"extra file {name!r} must be bytes")
        total += len(content)
        checked[name] = bytes(content)
    if total > MAX_EXTRA_FILES_BYTES:
        raise Refused(f"extra files are larger than {MAX_EXTRA_FILES_BYTES} bytes together")
    prefixes = {"/".join(n.split("/")[:i]) for n in checked for i in range(1, n.count("/") + 1)}
    if prefixes & set(checked):
        raise Refused("an extra file's name is also another extra file's folder")
    return checked


def check_limits(limits: Mapping[str, Any]) -> None:
    if not 0 < limits["cpu"] <= 64:
        raise Refused("cpu must be in (0, 64]")
    if limits["memory_bytes"] < 64 * 1024**2:
        raise Refused("memory_bytes must be at least 64 MiB")
    if not 16 <= limits["pids"] <= 65536:
        raise Refused("pids must be in [16, 65536]")
    if not 1 <= limits["timeout_seconds"] <= 24 * 3600:
        raise Refused("timeout_seconds must be in [1, 86400]")


# --------------------------------------------------------------------------------------------
# The scratch folder


def _write_owned(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        _chown_fd(fd)
    finally:
        os.close(fd)


def data_group(data_path: Path) -> list[str]:
    """The project's gid (the group owning its data folder), unless it is root's."""
    gid = os.stat(data_path).st_gid
    return [str(gid)] if gid not in (0, NOTEBOOK_GID) else []


def _chown_fd(fd: int) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, NOTEBOOK_UID, NOTEBOOK_GID)


def _mkdir_owned(path: Path) -> None:
    os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o700)  # whatever the umask
        _chown_fd(fd)
    finally:
        os.close(fd)


def make_scratch(
    workdir_root: Path,
    run_id: str,
    notebook: bytes,
    params: bytes,
    extra: Mapping[str, bytes],
    sdc_params: bytes = b"{}",
) -> Path:
    if os.geteuid() not in (0, NOTEBOOK_UID):
        raise Refused(
            f"the runner must run as root or as uid {NOTEBOOK_UID} to give the notebook user "
            "its scratch folder"
        )
    workdir_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = workdir_root / f"reexec-{run_id}"
    _mkdir_owned(scratch)
    _mkdir_owned(scratch / OUTPUTS_NAME)
    _write_owned(scratch / INPUT_NAME, notebook)
    _write_owned(scratch / PARAMS_NAME, params)
    _write_owned(scratch / SDC_PARAMS_NAME, sdc_params, mode=0o444)
    for name, content in extra.items():
        parent = scratch
        for part in name.split("/")[:-1]:
            parent = parent / part
            if not parent.exists():
                _mkdir_owned(parent)
        _write_owned(scratch / name, content)
    return scratch


def remove_tree(path: Path) -> None:
    """Remove the scratch folder, even where the notebook took permissions away."""

    def retry(func, failed_path, _exc_info) -> None:  # noqa: ANN001
        parent = os.path.dirname(failed_path)
        for target in (parent, failed_path):
            try:
                if not os.path.islink(target):
                    os.chmod(target, 0o700)
            except OSError:
                pass
        func(failed_path)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=retry)


def read_regular(name: str, cap: int, what: str, dir_fd: int | None = None) -> bytes:
    """Read a regular file, never through a symbolic link; refuse it over ``cap`` bytes.

    ``name`` is relative to ``dir_fd`` when given. A link raises ``OSError`` (``ELOOP``).
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{what} is not a regular file")
        if info.st_size > cap:
            raise Refused(f"{what} is larger than {cap} bytes")
        chunks = []
        remaining = cap + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1024 * 1024))):
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > cap:
            raise Refused(f"{what} is larger than {cap} bytes")
        return data
    finally:
        os.close(fd)


def _open_folder(name: str | os.PathLike[str], what: str, dir_fd: int | None = None) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as err:
        raise Refused(
            f"{what} is not a folder (a link or other file put in its place?): {err}"
        ) from None


def collect_outputs(
    outputs_dir: Path,
    limits: CollectionLimits = CollectionLimits(),  # noqa: B008 - frozen
) -> tuple[dict[str, bytes], list[str]]:
    """Every regular file under ``outputs_dir`` by relative path, and what was skipped.

    Walked with folder descriptors opened ``O_NOFOLLOW``: links are never followed (not
    ``outputs_dir`` itself, not a folder in it, not a file); FIFOs, sockets and devices are
    skipped; so are names that aren't UTF-8. :class:`Refused` when ``outputs_dir`` isn't a real
    folder, or over a :class:`CollectionLimits` cap.
    """
    found: dict[str, bytes] = {}
    skipped: list[str] = []
    total = 0
    seen = 0
    stack = [(_open_folder(outputs_dir, "outputs/"), "")]
    try:
        while stack:
            folder_fd, prefix = stack.pop()
            try:
                with os.scandir(folder_fd) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
                for entry in entries:
                    seen += 1
                    if seen > limits.max_entries:
                        raise Refused(
                            f"outputs/ holds more than {limits.max_entries} entries "
                            "(files and folders)"
                        )
                    rel = f"{prefix}{entry.name}"
                    try:
                        rel.encode("utf-8")
                    except UnicodeEncodeError:
                        shown = rel.encode("utf-8", "surrogateescape")
                        skipped.append(f"{shown!r}: name not UTF-8")
                        continue
                    info = os.stat(entry.name, dir_fd=folder_fd, follow_symlinks=False)
                    if stat.S_ISLNK(info.st_mode):
                        skipped.append(f"{rel}: symbolic link (not followed)")
                    elif stat.S_ISDIR(info.st_mode):
                        sub = _open_folder(entry.name, f"outputs/{rel}", dir_fd=folder_fd)
                        stack.append((sub, rel + "/"))
                    elif not stat.S_ISREG(info.st_mode):
                        skipped.append(f"{rel}: not a regular file")
                    else:
                        if len(found) >= limits.max_files:
                            raise Refused(
                                f"the notebook wrote more than {limits.max_files} files "
                                "into outputs/"
                            )
                        data = read_regular(
                            entry.name, limits.max_file_bytes, f"outputs/{rel}", folder_fd
                        )
                        total += len(data)
                        if total > limits.max_total_bytes:
                            raise Refused(
                                f"the outputs are larger than {limits.max_total_bytes} bytes "
                                "together"
                            )
                        found[rel] = data
            finally:
                os.close(folder_fd)
    finally:
        for folder_fd, _prefix in stack:
            os.close(folder_fd)
    return dict(sorted(found.items())), skipped
