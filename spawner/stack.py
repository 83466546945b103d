"""Start and stop an enclave's long-running containers on one Docker host.

``havre up`` (the local start command, and the test suite's fixture) calls :func:`up`:
it prepares the state folder and secrets, checks the images are present, creates the front
network, and (re)starts the egress service and hub containers. Running it again with nothing
changed leaves the running containers alone.

Layout on the host (``state_dir`` from the enclave config)::

    secrets/                 0700: cookie secret, proxy and service tokens (0600 files)
    hub/                     the hub's database
    projects/<slug>/data     the project's data (mounted read-only in notebooks)
    projects/<slug>/outputs  what researchers may ask to release (readable by egress)
    projects/<slug>/homes/<user>   persistent per-user, per-project homes
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from spawner import __version__
from spawner.enclave import EnclaveConfig
from spawner.hub_config import EGRESS_PORT, PROXY_PORT

NOTEBOOK_UID = 1000
NOTEBOOK_GID = 1000
EGRESS_UID = 1001
CONFIG_IN_CONTAINER = "/etc/havre/enclave.yaml"
SECRETS = (
    "cookie-secret",
    "proxy-auth-token",
    "egress-api-token",
    "jupyterhub-crypt-key",
    "idp-client-jupyterhub",
    "idp-admin-token",
)
IDP_PORT = 8001


class StackError(RuntimeError):
    """Something stops the enclave from starting; the message says what to do."""


@dataclass(frozen=True)
class StackOptions:
    """How to run an enclave's containers on this host."""

    bind_ip: str = "127.0.0.1"
    port: int = 8000
    idp_port: int = 8001
    public_host: str = ""  # the host name users type; default: bind_ip
    hub_image: str = f"havre/hub:{__version__}"
    egress_image: str = f"havre/egress:{__version__}"
    wait_seconds: float = 120.0

    @property
    def public_url(self) -> str:
        """Where users open the enclave (the proxy's published port)."""
        return f"http://{self.public_host or self.bind_ip}:{self.port}"

    @property
    def idp_public_url(self) -> str:
        """Where browsers reach the embedded identity provider."""
        return f"http://{self.public_host or self.bind_ip}:{self.idp_port}"


def hub_container_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-hub"


def egress_container_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-egress"


def idp_container_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-idp"


def front_network_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-front"


def prepare_state(enclave: EnclaveConfig) -> None:
    """Create the state folders and any missing secret; never overwrite an existing one."""
    state = enclave.state_dir
    (state / "hub").mkdir(parents=True, exist_ok=True)
    secrets_dir = state / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    for name in SECRETS:
        path = secrets_dir / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
        os.chmod(path, 0o600)
    egress_dir = state / "egress"
    egress_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(egress_dir, EGRESS_UID, EGRESS_UID)
    for slug, project in enclave.projects.items():
        outputs = enclave.outputs_dir(slug)
        homes = enclave.project_dir(slug) / "homes"
        for folder in (project.data_path, outputs, homes):
            folder.mkdir(parents=True, exist_ok=True)
        os.chown(outputs, NOTEBOOK_UID, NOTEBOOK_GID)
        os.chmod(outputs, 0o2770)  # setgid: files stay in the group egress reads with
        os.chmod(homes, 0o755)


def _config_digest(enclave: EnclaveConfig, *images: str) -> str:
    """A digest of what a running container depends on: config file, image ids, addresses."""
    digest = hashlib.sha256(Path(enclave.source).read_bytes())
    for image in images:
        digest.update(image.encode())
    return digest.hexdigest()[:16]


def _image_id(client: docker.DockerClient, image: str) -> str:
    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        raise StackError(
            f"image {image} is not on this host: build it with `bash images/build.sh` "
            "(or load it with `docker load`)"
        ) from None


def _ensure_front_network(client: docker.DockerClient, enclave: EnclaveConfig) -> None:
    name = front_network_name(enclave)
    try:
        client.networks.get(name)
    except docker.errors.NotFound:
        client.networks.create(
            name,
            driver="bridge",
            internal=False,
            check_duplicate=True,
            labels={"havre.enclave": enclave.name, "havre.role": "front"},
        )


def _project_networks(client: docker.DockerClient, enclave: EnclaveConfig) -> list[str]:
    nets = client.networks.list(filters={"label": f"havre.enclave={enclave.name}"})
    return [n.name for n in nets if (n.attrs.get("Labels") or {}).get("havre.project")]


def _replace_container(
    client: docker.DockerClient, name: str, digest: str
) -> docker.models.containers.Container | None:
    """The running container ``name`` if it is current; else remove it and return None."""
    try:
        existing = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    if existing.status == "running" and existing.labels.get("havre.digest") == digest:
        return existing
    existing.remove(force=True)
    return None


def _attach(client: docker.DockerClient, container: str, networks: list[str]) -> None:
    for net in networks:
        try:
            client.networks.get(net).connect(container)
        except docker.errors.APIError as err:
            if "already exists" not in str(err):
                raise


def _start_egress(client: docker.DockerClient, enclave: EnclaveConfig, opts: StackOptions) -> None:
    name = egress_container_name(enclave)
    digest = _config_digest(enclave, _image_id(client, opts.egress_image), opts.public_url)
    if _replace_container(client, name, digest):
        return
    token = (enclave.state_dir / "secrets" / "egress-api-token").read_text().strip()
    prefix = "/services/egress/"
    client.containers.run(
        opts.egress_image,
        name=name,
        detach=True,
        user=f"{EGRESS_UID}:{EGRESS_UID}",
        group_add=[str(NOTEBOOK_GID)],
        network=front_network_name(enclave),
        environment={
            "HAVRE_CONFIG": CONFIG_IN_CONTAINER,
            "HAVRE_EGRESS_PORT": str(EGRESS_PORT),
            "JUPYTERHUB_API_TOKEN": token,
            "JUPYTERHUB_API_URL": f"http://{hub_container_name(enclave)}:8081/hub/api",
            "JUPYTERHUB_SERVICE_NAME": "egress",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{EGRESS_PORT}",
            "JUPYTERHUB_CLIENT_ID": "service-egress",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_HOST": "",
            "HAVRE_PUBLIC_URL": opts.public_url,
        },
        volumes={
            str(Path(enclave.source).resolve()): {"bind": CONFIG_IN_CONTAINER, "mode": "ro"},
            str(enclave.state_dir / "projects"): {
                "bind": str(enclave.state_dir / "projects"),
                "mode": "ro",
            },
            str(enclave.state_dir / "egress"): {
                "bind": str(enclave.state_dir / "egress"),
                "mode": "rw",
            },
        },
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=64m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        pids_limit=256,
        restart_policy={"Name": "unless-stopped"},
        labels={"havre.enclave": enclave.name, "havre.role": "egress", "havre.digest": digest},
    )


def idp_config_text(enclave: EnclaveConfig, opts: StackOptions) -> str:
    """The embedded identity provider's config for this enclave and these addresses."""
    state = enclave.state_dir
    return "\n".join(
        [
            "# Written by `havre up`; changes are overwritten.",
            f"issuer: {opts.idp_public_url}",
            f"state_dir: {state / 'idp'}",
            f"users_file: {state / 'idp' / 'users.json'}",
            f"admin_token_file: {state / 'secrets' / 'idp-admin-token'}",
            "clients:",
            "  - client_id: jupyterhub",
            "    name: Havre",
            f"    client_secret_file: {state / 'secrets' / 'idp-client-jupyterhub'}",
            f"    redirect_uris: [{opts.public_url}/hub/oauth_callback]",
            f"    post_logout_redirect_uris: [{opts.public_url}/hub/login]",
            "access_token_seconds: 300",
            "refresh_token_seconds: 86400",
            "",
        ]
    )


def _start_idp(client: docker.DockerClient, enclave: EnclaveConfig, opts: StackOptions) -> None:
    """The embedded OpenID Connect provider (only when no external one is configured)."""
    name = idp_container_name(enclave)
    if enclave.identity.provider != "embedded":
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        return
    idp_dir = enclave.state_dir / "idp"
    idp_dir.mkdir(mode=0o700, exist_ok=True)
    config_file = idp_dir / "idp.yaml"
    text = idp_config_text(enclave, opts)
    if not config_file.exists() or config_file.read_text() != text:
        config_file.write_text(text)
    users = idp_dir / "users.json"
    if not users.exists():
        fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("{}\n")
    digest = _config_digest(enclave, _image_id(client, opts.hub_image), text)
    if _replace_container(client, name, digest):
        return
    secret_files = [
        str(enclave.state_dir / "secrets" / s) for s in ("idp-admin-token", "idp-client-jupyterhub")
    ]
    client.containers.run(
        opts.hub_image,
        ["havre-idp", "--config", str(config_file), "--port", str(IDP_PORT)],
        name=name,
        detach=True,
        user="0:0",
        network=front_network_name(enclave),
        ports={f"{IDP_PORT}/tcp": (opts.bind_ip, opts.idp_port)},
        volumes={
            str(idp_dir): {"bind": str(idp_dir), "mode": "rw"},
            **{path: {"bind": path, "mode": "ro"} for path in secret_files},
        },
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        pids_limit=128,
        restart_policy={"Name": "unless-stopped"},
        labels={"havre.enclave": enclave.name, "havre.role": "idp", "havre.digest": digest},
    )


def _start_hub(client: docker.DockerClient, enclave: EnclaveConfig, opts: StackOptions) -> None:
    name = hub_container_name(enclave)
    digest = _config_digest(
        enclave, _image_id(client, opts.hub_image), opts.public_url, opts.idp_public_url
    )
    if _replace_container(client, name, digest):
        return
    state = str(enclave.state_dir)
    client.containers.run(
        opts.hub_image,
        name=name,
        detach=True,
        network=front_network_name(enclave),
        ports={f"{PROXY_PORT}/tcp": (opts.bind_ip, opts.port)},
        environment={
            "HAVRE_CONFIG": CONFIG_IN_CONTAINER,
            "HAVRE_HUB_CONTAINER": name,
            "HAVRE_EGRESS_CONTAINER": egress_container_name(enclave),
            "HAVRE_FRONT_NETWORK": front_network_name(enclave),
            "HAVRE_PUBLIC_URL": opts.public_url,
            "HAVRE_IDP_PUBLIC_URL": opts.idp_public_url,
            "HAVRE_IDP_INTERNAL_URL": f"http://{idp_container_name(enclave)}:{IDP_PORT}",
        },
        volumes={
            str(Path(enclave.source).resolve()): {"bind": CONFIG_IN_CONTAINER, "mode": "ro"},
            state: {"bind": state, "mode": "rw"},
            "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
        restart_policy={"Name": "unless-stopped"},
        labels={"havre.enclave": enclave.name, "havre.role": "hub", "havre.digest": digest},
    )


def wait_for_hub(
    client: docker.DockerClient, enclave: EnclaveConfig, url: str, timeout: float
) -> None:
    """Wait until the hub answers through the proxy; fail with its logs if it exits."""
    deadline = time.monotonic() + timeout
    health = url.rstrip("/") + "/hub/health"
    while time.monotonic() < deadline:
        container = client.containers.get(hub_container_name(enclave))
        if container.status in ("exited", "dead", "restarting") or container.attrs.get(
            "RestartCount"
        ):
            logs = container.logs(tail=30).decode(errors="replace")
            raise StackError(f"the hub container stopped; its last log lines:\n{logs}")
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise StackError(f"the hub did not answer at {health} within {timeout:.0f} s")


def up(enclave: EnclaveConfig, opts: StackOptions | None = None) -> str:
    """Start (or leave running) the enclave's containers; return the public URL."""
    opts = opts or StackOptions()
    client = docker.from_env(version="auto")
    try:
        for image in (opts.hub_image, opts.egress_image, *enclave.allowed_images):
            _image_id(client, image)
        prepare_state(enclave)
        _ensure_front_network(client, enclave)
        _start_idp(client, enclave, opts)
        _start_egress(client, enclave, opts)
        _start_hub(client, enclave, opts)
        project_nets = _project_networks(client, enclave)
        _attach(client, egress_container_name(enclave), project_nets)
        _attach(client, hub_container_name(enclave), project_nets)
        url = opts.public_url + "/"
        wait_for_hub(client, enclave, url, opts.wait_seconds)
        return url
    finally:
        client.close()


def down(enclave: EnclaveConfig, *, purge: bool = False) -> None:
    """Stop the enclave's containers; with ``purge`` also its networks and state folder."""
    client = docker.from_env(version="auto")
    try:
        label = f"havre.enclave={enclave.name}"
        for container in client.containers.list(all=True, filters={"label": label}):
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass  # removed meanwhile (notebook containers remove themselves)
            except docker.errors.APIError as err:
                if "already in progress" not in str(err):
                    raise
        if purge:
            for network in client.networks.list(filters={"label": label}):
                network.reload()
                for attached in network.attrs.get("Containers") or {}:
                    try:
                        network.disconnect(attached, force=True)
                    except docker.errors.APIError:
                        pass
                network.remove()
    finally:
        client.close()
    if purge:
        import shutil

        shutil.rmtree(enclave.state_dir, ignore_errors=True)
