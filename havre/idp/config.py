"""The embedded provider's configuration file (``idp.yaml``): the model, its checks, secret files.

The checks use the enclave config's problems collector
(:class:`havre.enclave.config.problems.Problems`): every problem is reported at once, each with
its dotted key (``clients[0].redirect_uris[1]``) and the value found, and an unknown key is
refused with the closest allowed key offered.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from havre.enclave.config.problems import ConfigProblemsError, Problems
from havre.idp.constants import _CLIENT_ID_RE, _SECRET_RE, CLIENT_ID_PATTERN, KEY_FILE_NAME
from havre.idp.users import UsersFileError, _write_private, read_users_file


class ConfigError(ConfigProblemsError):
    """An invalid provider config; ``problems`` are ``"key: message"`` lines."""

    what = "provider config"

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(problems, source)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.problems))


@dataclass(frozen=True)
class ClientConfig:
    """A registered relying party (always confidential)."""

    client_id: str
    client_secret_file: Path
    redirect_uris: tuple[str, ...]
    name: str
    post_logout_redirect_uris: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderConfig:
    """The provider's validated config."""

    issuer: str
    state_dir: Path
    users_file: Path
    clients: tuple[ClientConfig, ...]
    admin_token_file: Path | None = None
    access_token_seconds: int = 600
    refresh_token_seconds: int = 86400
    login_failures_per_minute: int = 5
    behind_proxy: bool = False

    def client(self, client_id: str) -> ClientConfig | None:
        """The client registered as ``client_id``, if any."""
        for client in self.clients:
            if client.client_id == client_id:
                return client
        return None


#: the keys of the file, and of each entry of ``clients``
_KEYS = (
    "issuer",
    "state_dir",
    "users_file",
    "admin_token_file",
    "clients",
    "access_token_seconds",
    "refresh_token_seconds",
    "login_failures_per_minute",
    "behind_proxy",
)
_CLIENT_KEYS = (
    "client_id",
    "client_secret_file",
    "redirect_uris",
    "name",
    "post_logout_redirect_uris",
)


def _got(value: object) -> tuple[object, ...]:
    """``(value,)`` for a problem to show, or ``()`` for a missing (null) one."""
    return () if value is None else (value,)


def _check_url(value: object, key: str, p: Problems, *, what: str = "URL") -> str | None:
    if not isinstance(value, str) or not value:
        p.add(key, f"must be an absolute http(s) {what}", *_got(value))
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        p.add(key, f"must be an absolute http(s) {what}", value)
        return None
    if parts.fragment or "#" in value:
        p.add(key, "must not have a fragment", value)
        return None
    if parts.username is not None or parts.password is not None:
        p.add(key, "must not contain credentials", value)
        return None
    return value


def _check_int(
    data: Mapping[str, Any], key: str, default: int, low: int, high: int, p: Problems
) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        p.add(key, f"must be a whole number from {low} to {high}", value)
        return default
    return value


def _check_path(value: object, key: str, base_dir: Path, p: Problems) -> Path | None:
    if not isinstance(value, str) or not value.strip():
        p.add(key, "must be a file system path", *_got(value))
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _check_uri_list(value: object, key: str, p: Problems, *, required: bool) -> tuple[str, ...]:
    if value is None and not required:
        return ()
    if not isinstance(value, list) or (required and not value):
        p.add(key, "must be a list of URLs" + (" (at least one)" if required else ""), *_got(value))
        return ()
    uris = []
    for i, item in enumerate(value):
        uri = _check_url(item, f"{key}[{i}]", p)
        if uri:
            uris.append(uri)
    return tuple(uris)


def _parse_client(item: object, key: str, base_dir: Path, p: Problems) -> ClientConfig | None:
    if not isinstance(item, dict):
        p.add(key, "must be a mapping with client_id, client_secret_file and redirect_uris", item)
        return None
    p.unknown_keys(item, key, _CLIENT_KEYS)
    client_id = item.get("client_id")
    if not isinstance(client_id, str) or not _CLIENT_ID_RE.fullmatch(client_id):
        p.add(f"{key}.client_id", f"required, must match {CLIENT_ID_PATTERN}", *_got(client_id))
        client_id = None
    secret_file = _check_path(
        item.get("client_secret_file"), f"{key}.client_secret_file", base_dir, p
    )
    redirect_uris = _check_uri_list(
        item.get("redirect_uris"), f"{key}.redirect_uris", p, required=True
    )
    logout_uris = _check_uri_list(
        item.get("post_logout_redirect_uris"), f"{key}.post_logout_redirect_uris", p, required=False
    )
    name = item.get("name", client_id)
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 100):
        p.add(f"{key}.name", "must be a short display name", name)
        name = client_id
    if client_id is None or secret_file is None or not redirect_uris:
        return None
    return ClientConfig(client_id, secret_file, redirect_uris, name or client_id, logout_uris)


def _check_private_file(path: Path) -> None:
    """Raise ValueError unless ``path`` is a regular file that only its owner can read."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (create it with `havre-idp --init`)") from None
    except OSError as err:
        raise ValueError(f"{path}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file")
    if st.st_mode & 0o077:
        raise ValueError(
            f"{path}: readable or writable by others (mode {stat.S_IMODE(st.st_mode):o});"
            " run chmod 600"
        )


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The secret in ``path``: a private (0600) file of at least 32 unreserved characters."""
    target = Path(path)
    _check_private_file(target)
    value = target.read_text().strip()
    if not _SECRET_RE.fullmatch(value):
        raise ValueError(
            f"{target}: the secret must be 32 to 512 characters from A-Z a-z 0-9 . _ ~ -"
        )
    return value


def ensure_secret_file(path: str | os.PathLike[str]) -> str:
    """Return the secret in ``path``, first writing a random one (mode 0600) if it is missing."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(target, secrets.token_urlsafe(32) + "\n")
    return read_secret_file(target)


def parse_config(
    data: object, *, source: str = "config", base_dir: Path | None = None, check_files: bool = True
) -> ProviderConfig:
    """Validate a loaded YAML document; raise :class:`ConfigError` listing every problem.

    Relative paths are taken relative to ``base_dir`` (the config file's folder). With
    ``check_files``, the secret files must exist and be private, and the users file, if it
    exists, must be valid.
    """
    p = Problems()
    base = base_dir or Path.cwd()
    if not isinstance(data, dict):
        p.add("(top level)", "must be a mapping of settings", data)
        raise ConfigError(source, p.items)
    p.unknown_keys(data, "", _KEYS)

    issuer = _check_url(data.get("issuer"), "issuer", p)
    if issuer is not None:
        parts = urlsplit(issuer)
        if parts.query:
            p.add("issuer", "must not have a query string", issuer)
        issuer = issuer.rstrip("/")
    state_dir = _check_path(data.get("state_dir"), "state_dir", base, p)
    users_file = _check_path(data.get("users_file"), "users_file", base, p)
    admin_token_file = None
    if data.get("admin_token_file") is not None:
        admin_token_file = _check_path(data.get("admin_token_file"), "admin_token_file", base, p)

    clients: list[ClientConfig] = []
    raw_clients = data.get("clients")
    if not isinstance(raw_clients, list) or not raw_clients:
        p.add("clients", "must be a list of at least one client", *_got(raw_clients))
    else:
        for i, item in enumerate(raw_clients):
            client = _parse_client(item, f"clients[{i}]", base, p)
            if client is None:
                continue
            if any(c.client_id == client.client_id for c in clients):
                p.add(f"clients[{i}].client_id", f"duplicate client_id {client.client_id!r}")
                continue
            clients.append(client)

    access = _check_int(data, "access_token_seconds", 600, 1, 86400, p)
    refresh = _check_int(data, "refresh_token_seconds", 86400, 1, 30 * 86400, p)
    failures = _check_int(data, "login_failures_per_minute", 5, 1, 1000, p)
    behind_proxy = data.get("behind_proxy", False)
    if not isinstance(behind_proxy, bool):
        p.add("behind_proxy", "must be true or false", behind_proxy)
        behind_proxy = False

    if check_files and not p.items:
        _check_config_files(state_dir, users_file, admin_token_file, clients, p)
    if p:
        raise ConfigError(source, p.items)
    assert issuer and state_dir and users_file
    return ProviderConfig(
        issuer=issuer,
        state_dir=state_dir,
        users_file=users_file,
        clients=tuple(clients),
        admin_token_file=admin_token_file,
        access_token_seconds=access,
        refresh_token_seconds=refresh,
        login_failures_per_minute=failures,
        behind_proxy=behind_proxy,
    )


def _check_config_files(
    state_dir: Path | None,
    users_file: Path | None,
    admin_token_file: Path | None,
    clients: list[ClientConfig],
    p: Problems,
) -> None:
    if state_dir is not None:
        if state_dir.exists() and not state_dir.is_dir():
            p.add("state_dir", f"{state_dir}: not a directory")
        key_file = state_dir / KEY_FILE_NAME
        if key_file.exists():
            try:
                _check_private_file(key_file)
            except ValueError as err:
                p.add("state_dir", str(err))
    if users_file is not None:
        if not users_file.parent.is_dir():
            p.add("users_file", f"{users_file.parent}: no such directory")
        elif users_file.exists():
            try:
                _check_private_file(users_file)
                read_users_file(users_file)
            except UsersFileError as err:
                for problem in err.problems:
                    p.add("users_file", problem)
            except ValueError as err:
                p.add("users_file", str(err))
    if admin_token_file is not None:
        try:
            read_secret_file(admin_token_file)
        except ValueError as err:
            p.add("admin_token_file", str(err))
    for i, client in enumerate(clients):
        try:
            read_secret_file(client.client_secret_file)
        except ValueError as err:
            p.add(f"clients[{i}].client_secret_file", str(err))


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> ProviderConfig:
    """Read and validate the YAML config at ``path`` (see :func:`parse_config`)."""
    source = str(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as err:
        raise ConfigError(source, [f"(file): {err.strerror}"]) from None
    except yaml.YAMLError as err:
        raise ConfigError(source, [f"(file): not valid YAML: {err}"]) from None
    return parse_config(
        data, source=source, base_dir=Path(path).resolve().parent, check_files=check_files
    )
