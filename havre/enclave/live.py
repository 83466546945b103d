"""Project and member changes without restarting anything.

The enclave config's projects (titles, members, groups, new projects) and its output checkers
change often; everything else in it (identity, images, limits, review settings, the state
folder) rarely. The long-running containers therefore read the config *live*:

* ``havre up`` publishes the config it was given into ``<state_dir>/config/enclave.yaml``
  (:func:`publish_config`: written beside, then renamed, so a reader sees the old file or the
  new one, never half of each); the hub, the egress service and the re-execution runner mount
  that *folder* read-only (a bind-mounted single file would keep showing the replaced one);
* each reads it through :class:`LiveConfig`, which re-reads the file when its inode, size or
  modification time changed, so a change is seen at the next request or membership check;
* each container's restart digest leaves out what it reads live (:func:`restart_digest`):
  ``havre up`` then replaces a container only when something it read at start changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import yaml

from havre.enclave.config import EnclaveConfig, load_enclave_config

#: the published copy's folder under the state folder, and its name there
LIVE_CONFIG_DIR = "config"
LIVE_CONFIG_NAME = "enclave.yaml"
#: the per-project keys every container reads live (never a reason to restart one)
LIVE_PROJECT_KEYS = ("title", "members", "groups")

log = logging.getLogger("havre.config")


def live_config_path(enclave: EnclaveConfig) -> Path:
    """``<state_dir>/config/enclave.yaml``: the copy the containers read."""
    return enclave.state_dir / LIVE_CONFIG_DIR / LIVE_CONFIG_NAME


def publish_config(enclave: EnclaveConfig, changes: list[str] | None = None) -> Path:
    """Put the config file's bytes at :func:`live_config_path` (atomically; only if they
    differ). Returns the folder to mount."""
    target = live_config_path(enclave)
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(target.parent, 0o755)
    data = Path(enclave.source).read_bytes()
    if target.exists() and target.read_bytes() == data:
        return target.parent
    partial = target.with_name(f".{LIVE_CONFIG_NAME}.{os.getpid()}.new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(partial, 0o644)
    os.replace(partial, target)
    if changes is not None:
        changes.append(f"published the config to {target}")
    return target.parent


def restart_digest(enclave: EnclaveConfig, *, projects: str) -> str:
    """A digest of the config as a container reads it at start.

    ``projects``: ``"none"`` (the hub, the egress service: they read projects and output
    checkers live), ``"paths"`` (the runner: each project's data folder is one of its mounts,
    so a new project restarts it; titles, members and groups don't) or ``"all"``.
    """
    data = yaml.safe_load(Path(enclave.source).read_text()) or {}
    if not isinstance(data, dict):  # pragma: no cover - load_enclave_config refused it already
        data = {"": data}
    # monitoring: scrape_from is read live by the egress service, and the egress container's
    # own digest covers publish (havre.host.services): no other container reads either
    data.pop("monitoring", None)
    if projects != "all":
        data.pop("output_checkers", None)
        raw = data.pop("projects", None) or {}
        if projects == "paths" and isinstance(raw, dict):
            data["projects"] = {
                slug: {k: v for k, v in (p or {}).items() if k not in LIVE_PROJECT_KEYS}
                for slug, p in raw.items()
            }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class LiveConfig:
    """The enclave config at ``path``, re-read whenever the file is replaced or rewritten.

    :meth:`current` costs one ``stat`` when nothing changed. An unreadable or invalid file
    raises :class:`havre.enclave.config.EnclaveConfigError` (callers fail closed: no spawn, no
    sign-in), and is read again at the next call.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._key: tuple[int, ...] | None = None
        self._config: EnclaveConfig | None = None
        self.reloads = 0

    def current(self) -> EnclaveConfig:
        """The config as the file says now."""
        try:
            st = os.stat(self.path)
            key: tuple[int, ...] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = ()
        with self._lock:
            if self._config is not None and key == self._key:
                return self._config
            config = load_enclave_config(self.path)  # raises EnclaveConfigError
            if self._config is not None:
                self.reloads += 1
                log.info(
                    "enclave config %s changed: re-read (%d projects)",
                    self.path,
                    len(config.projects),
                )
            self._config, self._key = config, key
            return config


class LiveEnclave:
    """Reads like an :class:`~havre.enclave.config.EnclaveConfig`, always the file's current one
    (for code that keeps a config object from start, such as the hub's page variables)."""

    def __init__(self, live: LiveConfig) -> None:
        object.__setattr__(self, "_live", live)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._live.current(), name)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("the live enclave config is read-only")


_live_configs: dict[str, LiveConfig] = {}


def live_config(path: str | os.PathLike[str]) -> LiveConfig:
    """One :class:`LiveConfig` per path in this process."""
    key = os.fspath(path)
    found = _live_configs.get(key)
    if found is None:
        found = _live_configs[key] = LiveConfig(key)
    return found
