"""A researcher's browser session against a running hub, done with plain HTTP.

Logs in through the hub's login form, starts and stops project servers through the REST API
with the session cookie (as JupyterLab's hub page does), and runs code in a real kernel over
the Jupyter websocket protocol.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from html import unescape
from urllib.parse import urljoin

import requests
import websocket


class HubError(AssertionError):
    """The hub answered something a test did not expect."""


def login_form(html: str) -> tuple[str, dict[str, str]] | None:
    """The action and hidden fields of the identity provider's login form, if any."""
    match = re.search(r'<form[^>]*method="post"[^>]*action="([^"]*)"', html)
    if match is None:
        return None
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html)
    return unescape(match.group(1)), {name: unescape(value) for name, value in hidden}


@dataclass
class HubUser:
    """One logged-in user of the hub."""

    base_url: str
    name: str
    password: str
    session: requests.Session = field(default_factory=requests.Session)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def login(self) -> HubUser:
        """Sign in as a browser does: hub -> identity provider's login page -> hub."""
        response = self.sign_in()
        if response.status_code != 200 or not self.session.cookies.get("jupyterhub-session-id"):
            raise HubError(f"login of {self.name} failed: {response.status_code}")
        return self

    def sign_in(self, password: str | None = None, next_path: str = "/hub/home"):
        """The whole sign-in dance; returns the final response (not raising on refusal)."""
        page = self.session.get(
            self.url(f"hub/oauth_login?next={next_path}"), timeout=30, allow_redirects=True
        )
        form = login_form(page.text)
        if form is None:
            raise HubError(f"no login form at {page.url}: {page.status_code} {page.text[:200]}")
        action, fields = form
        fields.update({"username": self.name, "password": password or self.password})
        return self.session.post(
            urljoin(page.url, action), data=fields, timeout=30, allow_redirects=True
        )

    def _api_headers(self) -> dict[str, str]:
        return {"X-XSRFToken": self.session.cookies.get("_xsrf", path="/hub/") or ""}

    def api(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """A hub REST API call authenticated by the session cookie."""
        return self.session.request(
            method,
            self.url(f"hub/api/{path.lstrip('/')}"),
            headers=self._api_headers(),
            timeout=60,
            **kwargs,
        )

    def start_server(self, project: str, owner: str | None = None) -> requests.Response:
        return self.api("POST", f"users/{owner or self.name}/servers/{project}")

    def server_model(self, project: str) -> dict | None:
        r = self.api("GET", f"users/{self.name}")
        r.raise_for_status()
        return r.json().get("servers", {}).get(project)

    def wait_ready(self, project: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(project)
            if model and model.get("ready"):
                return model
            if model is None:
                raise HubError(f"{self.name}'s server {project} is gone (failed to start?)")
            time.sleep(0.5)
        raise HubError(f"{self.name}'s server {project} not ready within {timeout} s")

    def stop_server(self, project: str, timeout: float = 60) -> None:
        r = self.api("DELETE", f"users/{self.name}/servers/{project}")
        if r.status_code not in (202, 204):
            raise HubError(f"stop failed: {r.status_code} {r.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.server_model(project) is not None:
            time.sleep(0.5)

    # -- the notebook server, through the proxy

    def server_url(self, project: str, path: str = "") -> str:
        return self.url(f"user/{self.name}/{project}/{path.lstrip('/')}")

    def open_server(self, project: str) -> None:
        """Go through the server's OAuth login, as a browser does on first visit."""
        r = self.session.get(self.server_url(project, "lab"), timeout=60)
        if r.status_code != 200:
            raise HubError(f"opening {project} gave {r.status_code}")

    def run_code(self, project: str, code: str, timeout: float = 60) -> dict:
        """Run ``code`` in a new kernel; return {'stdout', 'stderr', 'error'}."""
        self.open_server(project)
        xsrf = self.session.cookies.get("_xsrf", path=f"/user/{self.name}/{project}/") or ""
        r = self.session.post(
            self.server_url(project, "api/kernels"),
            headers={"X-XSRFToken": xsrf},
            json={"name": "python3"},
            timeout=60,
        )
        if r.status_code != 201:
            raise HubError(f"kernel start gave {r.status_code}: {r.text[:200]}")
        kernel_id = r.json()["id"]
        try:
            return self._execute(project, kernel_id, code, timeout)
        finally:
            self.session.delete(
                self.server_url(project, f"api/kernels/{kernel_id}"),
                headers={"X-XSRFToken": xsrf},
                timeout=30,
            )

    def _execute(self, project: str, kernel_id: str, code: str, timeout: float) -> dict:
        ws_url = self.server_url(project, f"api/kernels/{kernel_id}/channels").replace(
            "http://", "ws://", 1
        )
        cookie = "; ".join(f"{c.name}={c.value}" for c in self.session.cookies)
        ws = websocket.create_connection(ws_url, header=[f"Cookie: {cookie}"], timeout=timeout)
        try:
            msg_id = uuid.uuid4().hex
            ws.send(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "username": self.name,
                            "session": uuid.uuid4().hex,
                            "msg_type": "execute_request",
                            "version": "5.3",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "content": {"code": code, "silent": False, "stop_on_error": True},
                        "channel": "shell",
                    }
                )
            )
            out = {"stdout": "", "stderr": "", "error": None}
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                content = msg["content"]
                if kind == "stream":
                    out[content["name"]] += content["text"]
                elif kind == "error":
                    out["error"] = f"{content['ename']}: {content['evalue']}"
                elif kind == "status" and content["execution_state"] == "idle":
                    return out
            raise HubError(f"code did not finish within {timeout} s")
        finally:
            ws.close()
