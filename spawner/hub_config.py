"""Wire the hub: read the enclave config and configure JupyterHub's classes.

``jupyterhub_config.py`` at the top of the repository calls :func:`configure_hub`. It runs
inside the hub container, which the local start command (``havre up``) or Ansible starts with:

* the enclave config at ``$HAVRE_CONFIG``;
* only its own state (``<state_dir>/hub``: database, cookie secret's folder) and the secrets
  it reads, at the same paths as on the host; no project data, homes or outputs, no Docker
  socket: notebook servers are started by the spawn broker (``havre/broker/``), whose Unix
  socket folder and the hub's broker secret are mounted (``$HAVRE_BROKER_SOCKET``,
  ``$HAVRE_BROKER_SECRET``);
* ``$HAVRE_HUB_CONTAINER``, ``$HAVRE_EGRESS_CONTAINER`` and ``$HAVRE_FRONT_NETWORK`` naming its
  own container, the egress service's and the network the proxy's public port is published on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyterhub.handlers.static import CacheControlStaticFilesHandler

from havre.enclave.config import (
    ADMINS_HUB_GROUP,
    SERVER_ACCESS_HUB_GROUP,
    EnclaveConfig,
    EnclaveConfigError,
    load_enclave_config,
)
from havre.enclave.live import LiveEnclave, live_config
from havre.enclave.logs import log_format, traitlets_logging_config
from havre.enclave.ports import EGRESS_PORT, GUARD_PORT, HUB_PORT, PROXY_PORT
from spawner.download_policy import CROSS_ORIGIN_OPENER_POLICY
from spawner.hub_pages import configure_pages


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


def address_toward(gateway: str) -> str:
    """This container's own IPv4 address on the network whose gateway is ``gateway``: the
    source address the kernel picks to reach it (a UDP ``connect`` sends nothing)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((gateway, 9))
        return probe.getsockname()[0]


def own_front_address(container: str, network: str) -> str:
    """This container's IPv4 address on the front network, asked of the Docker engine
    (only where the hub has the socket; ``havre up`` gives ``$HAVRE_FRONT_GATEWAY`` instead).

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


def work_around_jupyterhub_bugs() -> None:
    """Fixes for JupyterHub 6.1.1 that Havre's settings run into.

    * ``BaseHandler.refresh_auth`` reads ``self._token_authenticated``, which is only set on
      token-authenticated requests; a cookie-authenticated API call whose sign-in was revoked
      at the identity provider then fails with AttributeError (HTTP 500) instead of 403
      "login again". Every other reader uses ``getattr(..., False)``: give the class that
      default.
    """
    from jupyterhub.handlers.base import BaseHandler

    if not hasattr(BaseHandler, "_token_authenticated"):
        BaseHandler._token_authenticated = False


def configure_hub(c: Any, environ: Mapping[str, str] = os.environ) -> EnclaveConfig:
    """Fill JupyterHub's config object ``c`` for this enclave; exit on an invalid config."""
    work_around_jupyterhub_bugs()
    try:
        enclave = load_enclave_config(environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"))
        fmt = log_format(environ)
    except (EnclaveConfigError, ValueError) as err:
        print(f"havre: refusing to start: {err}", file=sys.stderr)
        sys.exit(78)  # EX_CONFIG
    # the hub's lines, and those of Havre's code in it (break glass, the download guard), in
    # the one format of every service ($HAVRE_LOG_FORMAT, from the config's logging.format)
    c.JupyterHub.logging_config = traitlets_logging_config("hub", fmt)

    hub_container = environ.get("HAVRE_HUB_CONTAINER", f"{enclave.name}-hub")
    egress_container = environ.get("HAVRE_EGRESS_CONTAINER", f"{enclave.name}-egress")
    front_network = environ.get("HAVRE_FRONT_NETWORK", f"{enclave.name}-front")
    hub_state = enclave.state_dir / "hub"

    # -- hub and proxy
    front_ip = environ.get("HAVRE_PROXY_BIND_IP") or (
        address_toward(environ["HAVRE_FRONT_GATEWAY"])
        if environ.get("HAVRE_FRONT_GATEWAY")
        else own_front_address(hub_container, front_network)
    )
    c.JupyterHub.bind_url = f"http://{front_ip}:{PROXY_PORT}/"
    c.JupyterHub.hub_bind_url = f"http://0.0.0.0:{HUB_PORT}"
    c.JupyterHub.hub_connect_url = f"http://{hub_container}:{HUB_PORT}"
    c.ConfigurableHTTPProxy.auth_token = read_secret(enclave, "proxy-auth-token")
    c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
    c.JupyterHub.db_url = f"sqlite:///{hub_state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(secrets_dir(enclave) / "cookie-secret")
    c.JupyterHub.pid_file = str(hub_state / "jupyterhub.pid")
    # the proxy's pid on the container's tmpfs: a pid file left by a killed hub would make the
    # restarted one take a stranger's pid for a running proxy
    c.ConfigurableHTTPProxy.pid_file = "/tmp/jupyterhub-proxy.pid"
    # a hub restart (an upgrade, a crash) leaves researchers' servers running: the new hub
    # finds them again (the spawner's state keeps each container's address for the guard)
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.allow_named_servers = True
    # no fixed limit: a user has at most one server per project they belong to, and the
    # spawner forgets refused attempts (see ProjectSpawner.forget_refused_server)
    c.JupyterHub.named_server_limit_per_user = 0
    c.JupyterHub.shutdown_on_logout = False
    # after sign-in: the hub's home page (the project list), not the default server's spawn
    # page (Havre has no project-less server)
    c.JupyterHub.redirect_to_server = False
    c.JupyterHub.default_url = "/hub/home"

    # -- who users are: OpenID Connect (the embedded provider, or the site's own)
    configure_identity(c, enclave, environ)

    # -- spawner
    c.JupyterHub.spawner_class = "spawner.project_spawner.ProjectSpawner"
    c.ProjectSpawner.enclave_config_path = str(enclave.source)
    # the spawn broker starts the servers (the hub has no Docker socket)
    c.ProjectSpawner.broker_socket = environ.get(
        "HAVRE_BROKER_SOCKET", "/run/havre-broker/broker.sock"
    )
    c.ProjectSpawner.broker_secret_file = environ.get(
        "HAVRE_BROKER_SECRET", str(secrets_dir(enclave) / "broker-hub")
    )
    c.ProjectSpawner.start_timeout = 120
    c.ProjectSpawner.http_timeout = 60
    c.ProjectSpawner.debug = False
    c.ProjectSpawner.membership_check_interval = enclave.identity.membership_check_seconds
    if enclave.identity.membership_check_seconds:
        c.ProjectSpawner.poll_interval = min(30, enclave.identity.membership_check_seconds)
    # the proxy reaches notebook servers through the download guard (spawner/download_guard.py)
    c.ProjectSpawner.download_guard_address = "127.0.0.1"
    c.ProjectSpawner.download_guard_port = GUARD_PORT

    # -- the hub's pages: the user's projects (titles read live), spawn progress, refusals
    configure_pages(c, LiveEnclave(live_config(enclave.source)))  # type: ignore[arg-type]
    configure_page_headers(c)

    # -- the egress (output-checking) service, reached through the proxy
    c.JupyterHub.services = [
        {
            "name": "egress",
            "url": f"http://{egress_container}:{EGRESS_PORT}",
            "api_token": read_secret(enclave, "egress-api-token"),
            "oauth_no_confirm": True,
            "oauth_client_allowed_scopes": ["read:users:groups!user"],
            "display": True,
        }
    ]
    c.JupyterHub.load_roles = least_privilege_roles()
    configure_metrics_reader(c, enclave)
    configure_culler(c, enclave)

    # -- break glass: activated on /hub/break-glass, audited by the egress service
    from spawner import break_glass_hub  # the hub's packages: not for the host's CLI

    break_glass_hub.configure(
        c,
        state_file=hub_state / "break-glass.json",
        egress_url=f"http://{egress_container}:{EGRESS_PORT}",
        api_token=read_secret(enclave, "egress-api-token"),
        minutes=enclave.identity.break_glass_minutes,
    )
    return enclave


#: What an ordinary user may do: their own servers, nothing else. JupyterHub's default
#: ``self`` scope also lets users mint API tokens (a way to script downloads from outside the
#: browser) and share their servers with other users; Havre gives neither.
USER_SCOPES = [
    "read:users!user",
    "users:activity!user",
    "servers!user",
    "access:servers!user",
    "read:tokens!user",
    "access:services!service=egress",
]
#: What an administrator may do (the ``hub-administrator`` role of the admin groups): see
#: users and groups, manage servers and delete users; not enter a user's server, read their
#: OAuth tokens (auth state) or mint tokens. Groups are read-only: project, checker and
#: break-glass membership comes only from the identity provider (the authenticator writes the
#: hub's groups at each sign-in), so an administrator can't grant access, to himself or anyone.
ADMIN_SCOPES = [
    "admin-ui",
    "users",
    "delete:users",
    "admin:servers",
    "list:groups",
    "read:groups",
    "list:services",
    "read:services",
    "read:hub",
    "read:roles",
    "read:metrics",
    "proxy",
    "shutdown",
]


def least_privilege_roles() -> list[dict[str, Any]]:
    """JupyterHub roles: narrowed ``user`` and ``admin``, and the explicit break-glass role."""
    return [
        {"name": "user", "scopes": USER_SCOPES},
        {
            # Not JupyterHub's built-in "admin" role (which includes access:servers and
            # can't be narrowed): nobody gets that one.
            "name": "hub-administrator",
            "description": "Hub administration without access to users' servers.",
            "scopes": ADMIN_SCOPES,
            "groups": [ADMINS_HUB_GROUP],
        },
        {
            # members only while an activated window is open (spawner/break_glass_hub.py)
            "name": "server-access",
            "description": "Break glass: open another user's notebook server, while an "
            "activation (reason, target, time limit) is open. Every step is audited.",
            "scopes": ["access:servers", "read:users", "list:users"],
            "groups": [SERVER_ACCESS_HUB_GROUP],
        },
        {
            "name": "egress-service",
            "description": "What the egress service needs: who a user is and their groups.",
            "scopes": ["read:users:name", "read:users:groups", "read:groups"],
            "services": ["egress"],
        },
        {
            "name": "idle-culler",
            "description": "Stop idle and too-old notebook servers.",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        },
    ]


#: The hub service whose token (the secret of this name) reads ``/hub/metrics`` and nothing else.
METRICS_SERVICE = "prometheus"
METRICS_SECRET = "hub-metrics-token"


def configure_metrics_reader(c: Any, enclave: EnclaveConfig) -> None:
    """A hub service for Prometheus (:data:`METRICS_SERVICE`): no URL, no server, no login;
    its API token (the secret :data:`METRICS_SECRET`, made by ``havre up``) holds one scope,
    ``read:metrics``. Nothing when the secret is not there (a state folder of an older
    ``havre up``)."""
    if not (secrets_dir(enclave) / METRICS_SECRET).exists():
        return
    c.JupyterHub.services.append(
        {"name": METRICS_SERVICE, "api_token": read_secret(enclave, METRICS_SECRET)}
    )
    c.JupyterHub.load_roles.append(
        {
            "name": "metrics-reader",
            "description": "Read the hub's Prometheus metrics (/hub/metrics), nothing else.",
            "scopes": ["read:metrics"],
            "services": [METRICS_SERVICE],
        }
    )


def configure_culler(c: Any, enclave: EnclaveConfig) -> None:
    """The idle culler, a hub-managed service, with the enclave's limits."""
    culling = enclave.culling
    if not (culling.idle_seconds or culling.max_age_seconds):
        c.JupyterHub.load_roles = [r for r in c.JupyterHub.load_roles if r["name"] != "idle-culler"]
        return
    command = [sys.executable, "-m", "jupyterhub_idle_culler", "--cull-every=60"]
    command.append(f"--timeout={culling.idle_seconds or 10**9}")
    if culling.max_age_seconds:
        command.append(f"--max-age={culling.max_age_seconds}")
    c.JupyterHub.services.append({"name": "idle-culler", "command": command})


#: The hub's pages: no page may frame them (JupyterHub's default is ``'self'``, and every
#: project server shares the hub's origin), and a page that opens one with ``window.open`` gets
#: no handle on it (see :data:`spawner.download_policy.CROSS_ORIGIN_OPENER_POLICY`).
HUB_PAGE_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'; report-uri /hub/security/csp-report",
    "Cross-Origin-Opener-Policy": CROSS_ORIGIN_OPENER_POLICY,
}
#: The hub's static files (scripts, styles, images): the same, and nothing runs in one opened
#: as a page (a page of the origin that opened or framed it would script it freely otherwise).
HUB_STATIC_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": CROSS_ORIGIN_OPENER_POLICY,
}


class HeadedStaticFiles(CacheControlStaticFilesHandler):
    """JupyterHub's static file handler, with :data:`HUB_STATIC_HEADERS` on every answer."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        for name, value in HUB_STATIC_HEADERS.items():
            self.set_header(name, value)


def configure_page_headers(c: Any) -> None:
    """Response headers of every hub page and static file: the hub shares its origin with the
    notebook servers and the egress service, so no other page may frame or open one of its own."""
    c.JupyterHub.tornado_settings = {
        "headers": dict(HUB_PAGE_HEADERS),
        "static_handler_class": HeadedStaticFiles,
    }


def allowed_by(enclave: EnclaveConfig) -> tuple[set[str], set[str]]:
    """Who may sign in: the hub groups Havre gives, and the users the config lists (who
    need no group)."""
    listed = set(enclave.output_checkers)
    for project in enclave.projects.values():
        listed |= project.members
    return set(enclave.all_hub_groups()), listed


def configure_identity(c: Any, enclave: EnclaveConfig, environ: Mapping[str, str]) -> None:
    """Log in with OpenID Connect; map the provider's groups to Havre's hub groups."""
    ident = enclave.identity
    public_url = environ.get("HAVRE_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
    # GenericOAuthenticator telling "provider down" from "sign-in refused" (named, not
    # imported: the host's command line loads this module without the hub's packages)
    c.JupyterHub.authenticator_class = "spawner.authenticator.HavreOAuthenticator"
    auth = c.GenericOAuthenticator  # read by HavreOAuthenticator, its subclass
    if ident.provider == "embedded":
        browser = environ.get("HAVRE_IDP_PUBLIC_URL", "http://127.0.0.1:8001").rstrip("/")
        internal = environ.get("HAVRE_IDP_INTERNAL_URL", browser).rstrip("/")
        auth.authorize_url = f"{browser}/authorize"
        auth.token_url = f"{internal}/token"
        auth.userdata_url = f"{internal}/userinfo"
        c.HavreOAuthenticator.revocation_url = f"{internal}/revoke"
        auth.client_id = "jupyterhub"
        auth.client_secret = read_secret(enclave, "idp-client-jupyterhub")
        auth.logout_redirect_url = (
            f"{browser}/logout?client_id=jupyterhub&post_logout_redirect_uri={public_url}/hub/login"
        )
        auth.login_service = "Havre sign-in"
        groups_claim, username_claim = "groups", "preferred_username"
        auth.scope = ["openid", "profile", "email", "groups"]
    else:
        oidc = ident.oidc
        assert oidc is not None  # the config validation requires it
        auth.authorize_url = oidc.authorize_url
        auth.token_url = oidc.token_url
        auth.userdata_url = oidc.userdata_url
        auth.client_id = oidc.client_id
        auth.client_secret = Path(oidc.client_secret_file).read_text().strip()
        if oidc.logout_url:
            auth.logout_redirect_url = oidc.logout_url
        auth.login_service = "single sign-on"
        groups_claim, username_claim = oidc.groups_claim, oidc.username_claim
        auth.scope = list(oidc.scopes)
    auth.oauth_callback_url = f"{public_url}/hub/oauth_callback"
    auth.username_claim = username_claim
    auth.enable_pkce = True
    auth.basic_auth = True
    auth.manage_groups = True
    auth.enable_auth_state = True

    # projects, their groups and listed members are read live from the config file, at every
    # sign-in and refresh: a project or member change needs no hub restart (havre/enclave/live.py)
    live = live_config(enclave.source)

    def provider_groups_to_hub_groups(auth_state: dict[str, Any]) -> list[str]:
        user = (auth_state or {}).get("oauth_user") or {}
        groups = user.get(groups_claim)
        if not isinstance(groups, list):
            return []  # no groups claim: no project, no role (fail closed)
        return live.current().hub_groups_for(groups)

    def follow_the_config(authenticator: Any, auth_state: Any) -> Any:
        """Before each sign-in or refresh is checked: who may sign in, as the file says now."""
        allowed_groups, allowed_users = allowed_by(live.current())
        if authenticator.allowed_groups != allowed_groups:
            authenticator.allowed_groups = allowed_groups
        if authenticator.allowed_users != allowed_users:
            authenticator.allowed_users = allowed_users
        return auth_state

    auth.auth_state_groups_key = provider_groups_to_hub_groups
    auth.modify_auth_state_hook = follow_the_config
    auth.allowed_groups, auth.allowed_users = allowed_by(enclave)
    auth.admin_groups = set()  # see the hub-administrator role
    auth.admin_users = set()
    auth.custom_403_message = (
        "You signed in, but your account is in no Havre project group and has no Havre "
        "role (the identity provider sent no matching groups), so Havre gives you no access. "
        "Ask your project's data custodian to add you to the project's group."
    )
    c.Authenticator.auto_login = True  # straight to the provider's sign-in page
    c.Authenticator.refresh_pre_spawn = True
    c.Authenticator.auth_refresh_age = ident.refresh_seconds
    c.CryptKeeper.keys = [bytes.fromhex(read_secret(enclave, "jupyterhub-crypt-key"))]
    if public_url.startswith("https://"):
        c.JupyterHub.cookie_options = {"secure": True, "samesite": "Lax"}
