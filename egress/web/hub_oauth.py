"""Hub OAuth for an egress service that runs several worker processes.

JupyterHub's :class:`~jupyterhub.services.auth.HubOAuth` keeps each login's OAuth state (the
page to return to, and the PKCE code verifier) in the memory of the process that started the
login. With several workers the hub's redirect back can reach another worker, which then has
no code verifier and the login fails. :class:`SharedStateHubOAuth` keeps that state in files of
a folder every worker reads: one small file per login in progress, mode 0600, gone when the
login completes or after ``oauth_state_max_age``. Only the state's id travels (in the signed
state cookie and the ``state`` parameter); the verifier never leaves the service.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from traitlets import Unicode, default

_STATE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


class SharedStateHubOAuth(HubOAuth):
    """HubOAuth whose logins in progress are visible to every worker process, and that keeps
    the hub's answer about a token for one second only (JupyterHub's default: five minutes):
    after a logout, which deletes the user's tokens at the hub, a copied cookie is refused
    within a second. (0 would mean "forever" to JupyterHub's cache.)"""

    @default("cache_max_age")
    def _one_second(self) -> int:
        return 1

    oauth_state_dir = Unicode(
        "",
        help="""Folder (private to the service, shared by its worker processes) where the
        OAuth state of each login in progress is kept. Empty: in this process's memory, as
        HubOAuth does (enough for a single process).""",
    ).tag(config=True)

    def _path(self, state_id: str) -> Path | None:
        if not self.oauth_state_dir or not _STATE_ID.fullmatch(state_id or ""):
            return None
        return Path(self.oauth_state_dir) / f"{state_id}.json"

    def generate_state(self, next_url: str | None = None, **extra_state: Any) -> str:
        if not self.oauth_state_dir:
            return super().generate_state(next_url, **extra_state)
        state_id = secrets.token_urlsafe(16)
        path = self._path(state_id)
        assert path is not None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"next_url": next_url, **extra_state}, out)
        os.replace(tmp, path)
        return state_id

    def _decode_state(self, state_id: str, /) -> dict[str, Any]:
        if not self.oauth_state_dir:
            return super()._decode_state(state_id)
        path = self._path(state_id)
        try:
            if path is None or time.time() - path.stat().st_mtime > self.oauth_state_max_age:
                return {}
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def clear_oauth_state(self, state_id: str) -> None:
        if not self.oauth_state_dir:
            return super().clear_oauth_state(state_id)
        path = self._path(state_id)
        if path is not None:
            path.unlink(missing_ok=True)
        self.purge_expired_states()

    def purge_expired_states(self) -> int:
        """Remove the files of logins never completed; returns how many went."""
        cutoff, removed = time.time() - self.oauth_state_max_age, 0
        for path in Path(self.oauth_state_dir).glob("*.json"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue  # another worker removed it first
        return removed


class SharedStateOAuthCallback(HubOAuthCallbackHandler):
    """The OAuth callback, with the shared login state."""

    hub_auth_class = SharedStateHubOAuth
