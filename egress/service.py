"""The egress (output-checking) service: a JupyterHub service at ``/services/egress/``.

This module holds the web process: Hub OAuth login (users are who the hub says they are) and
the routes. The release-request workflow, policy, audit log and disclosure checks live in their
own pure modules beside it.
"""

from __future__ import annotations

import json
import os
import signal

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import ioloop, web

from spawner.enclave import EnclaveConfig, load_enclave_config

DEFAULT_PORT = 8090


class HealthHandler(web.RequestHandler):
    """Liveness probe for the stack launcher and Ansible (no login, no data)."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"status": "ok"}))


class WhoAmIHandler(HubOAuthenticated, web.RequestHandler):
    """The logged-in user and the projects they can ask releases for (JSON)."""

    @property
    def enclave(self) -> EnclaveConfig:
        return self.settings["enclave"]

    @web.authenticated
    def get(self) -> None:
        user = self.get_current_user()
        name, groups = user["name"], user.get("groups") or []
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(
            json.dumps(
                {
                    "name": name,
                    "projects": [p.slug for p in self.enclave.projects_of(name, groups)],
                    "output_checker": self.enclave.is_checker(name, groups),
                }
            )
        )


def make_app(enclave: EnclaveConfig, prefix: str) -> web.Application:
    """The tornado application, routes under ``prefix`` (``/services/egress/``)."""
    return web.Application(
        [
            (url_path_join(prefix, "healthz"), HealthHandler),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
            (url_path_join(prefix, "api/whoami"), WhoAmIHandler),
            (prefix, WhoAmIHandler),
        ],
        cookie_secret=os.urandom(32),
        enclave=enclave,
        xsrf_cookies=False,
    )


def main() -> None:
    """Console entry point ``havre-egress``."""
    enclave = load_enclave_config(os.environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/egress/")
    app = make_app(enclave, prefix)
    port = int(os.environ.get("HAVRE_EGRESS_PORT", DEFAULT_PORT))
    app.listen(port, address="0.0.0.0")
    loop = ioloop.IOLoop.current()
    signal.signal(signal.SIGTERM, lambda *_: loop.add_callback_from_signal(loop.stop))
    print(f"havre-egress listening on :{port}{prefix}", flush=True)
    loop.start()


if __name__ == "__main__":
    main()
