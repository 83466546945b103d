"""Wire the hub: read the enclave config and configure JupyterHub's classes.

``jupyterhub_config.py`` at the top of the repository calls :func:`configure_hub`. It runs
inside the hub container, which the local start command (``havre up``) or Ansible starts with:

* the enclave config at ``$HAVRE_CONFIG``;
* the enclave state folder mounted at the same path as on the host (so the spawner can make
  homes and outputs folders that Docker then bind-mounts into notebook containers);
* the Docker socket (the hub is the enclave's control plane);
* ``$HAVRE_HUB_CONTAINER``, ``$HAVRE_EGRESS_CONTAINER`` and ``$HAVRE_FRONT_NETWORK`` naming its
  own container, the egress service's and the network the proxy's public port is published on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spawner.enclave import EnclaveConfig, EnclaveConfigError, load_enclave_config

HUB_PORT = 8081
PROXY_PORT = 8000
EGRESS_PORT = 8090


def secrets_dir(enclave: EnclaveConfig) -> Path:
    """Where the enclave's secrets live (files of mode 0600, never in the config)."""
    return enclave.state_dir / "secrets"


def read_secret(enclave: EnclaveConfig, name: str) -> str:
    """One secret, refusing a file that other users could read."""
    path = secrets_dir(enclave) / name
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{path} must be readable by its owner only (mode {mode:o})")
    return path.read_text().strip()


def own_front_address(container: str, network: str) -> str:
    """This container's IPv4 address on the front network, asked of the Docker engine.

    The proxy's public port is bound to this address only, so notebook containers (which
    share project networks with the hub) can't reach the proxy.
    """
    import docker

    client = docker.APIClient(version="auto")
    try:
        attrs = client.inspect_container(container)
    finally:
        client.close()
    address = attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
    if not address:
        raise RuntimeError(f"container {container} has no address on network {network}")
    return address


def configure_hub(c: Any, environ: Mapping[str, str] = os.environ) -> EnclaveConfig:
    """Fill JupyterHub's config object ``c`` for this enclave; exit on an invalid config."""
    try:
        enclave = load_enclave_config(environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"))
    except EnclaveConfigError as err:
        print(f"havre: refusing to start: {err}", file=sys.stderr)
        sys.exit(78)  # EX_CONFIG

    hub_container = environ.get("HAVRE_HUB_CONTAINER", f"{enclave.name}-hub")
    egress_container = environ.get("HAVRE_EGRESS_CONTAINER", f"{enclave.name}-egress")
    front_network = environ.get("HAVRE_FRONT_NETWORK", f"{enclave.name}-front")
    hub_state = enclave.state_dir / "hub"

    # -- hub and proxy
    front_ip = environ.get("HAVRE_PROXY_BIND_IP") or own_front_address(hub_container, front_network)
    c.JupyterHub.bind_url = f"http://{front_ip}:{PROXY_PORT}/"
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{HUB_PORT}"
    c.JupyterHub.hub_connect_url = f"http://{hub_container}:{HUB_PORT}"
    c.ConfigurableHTTPProxy.auth_token = read_secret(enclave, "proxy-auth-token")
    c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
    c.JupyterHub.db_url = f"sqlite:///{hub_state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(secrets_dir(enclave) / "cookie-secret")
    c.JupyterHub.pid_file = str(hub_state / "jupyterhub.pid")
    c.JupyterHub.allow_named_servers = True
    # no fixed limit: a user has at most one server per project they belong to, and the
    # spawner forgets refused attempts (see ProjectSpawner.forget_refused_server)
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.shutdown_on_logout = False

    # -- who may log in (identity provider integration replaces this; see docs/sysadmin)
    users = set(enclave.output_checkers)
    for project in enclave.projects.values():
        users |= project.members
    c.JupyterHub.authenticator_class = "spawner.demo_auth.DemoPasswordAuthenticator"
    c.DemoPasswordAuthenticator.password_file = str(secrets_dir(enclave) / "demo-passwords.json")
    c.Authenticator.allowed_users = users

    # -- spawner
    c.JupyterHub.spawner_class = "spawner.project_spawner.ProjectSpawner"
    c.ProjectSpawner.enclave_config_path = str(enclave.source)
    c.ProjectSpawner.prefix = enclave.name
    c.ProjectSpawner.attach_containers = [hub_container, egress_container]
    c.ProjectSpawner.start_timeout = 120
    c.ProjectSpawner.http_timeout = 60
    c.ProjectSpawner.debug = False

    # -- the egress (output-checking) service, reached through the proxy
    c.JupyterHub.services = [
        {
            "name": "egress",
            "url": f"http://{egress_container}:{EGRESS_PORT}",
            "api_token": read_secret(enclave, "egress-api-token"),
            "oauth_no_confirm": True,
            "display": True,
        }
    ]
    c.JupyterHub.load_roles = [
        {
            "name": "egress-service",
            "description": "What the egress service needs: who a user is and their groups.",
            "scopes": ["read:users:name", "read:users:groups", "read:groups"],
            "services": ["egress"],
        }
    ]
    return enclave
