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
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from havre import __version__
from havre.enclave.config import EnclaveConfig
from havre.enclave.hardening import service_hardening
from havre.enclave.jobs_folder import prepare_jobs_folder
from havre.enclave.live import live_config_path, publish_config, restart_digest
from havre.enclave.networks import project_network_options
from havre.enclave.ports import EGRESS_METRICS_PORT, EGRESS_PORT, PROXY_PORT

NOTEBOOK_UID = 1000
NOTEBOOK_GID = 1000
EGRESS_UID = 1001
#: The hub runs as this uid (not root): it owns only its state folder and its secrets.
HUB_UID = 1002
#: the published config's folder (havre/enclave/live.py), mounted read-only: a folder, so a
#: replaced config shows in the running containers, which re-read it (no restart)
LIVE_CONFIG_IN_CONTAINER = "/etc/havre/live"
CONFIG_IN_CONTAINER = f"{LIVE_CONFIG_IN_CONTAINER}/enclave.yaml"
SECRETS = (
    "cookie-secret",
    "proxy-auth-token",
    "egress-api-token",
    "jupyterhub-crypt-key",
    "idp-client-jupyterhub",
    "idp-admin-token",
    "broker-hub",
    "broker-runner",
)
#: The secrets the hub reads: copied for its uid into ``<state_dir>/hub-secrets``, mounted
#: read-only where the hub looks for them (``<state_dir>/secrets``) - none of the others.
HUB_SECRETS = (
    "cookie-secret",
    "proxy-auth-token",
    "egress-api-token",
    "jupyterhub-crypt-key",
    "idp-client-jupyterhub",
    "broker-hub",
)
#: The spawn broker's folders under the state folder: its audit log (the broker only) and its
#: socket (mounted into the broker, the hub and the runner at BROKER_SOCKET_DIR).
BROKER_DIR = "broker"
BROKER_SOCKET_SUBDIR = "broker-socket"
BROKER_SOCKET_DIR = "/run/havre-broker"
BROKER_SOCKET = f"{BROKER_SOCKET_DIR}/broker.sock"
IDP_PORT = 8001
#: The embedded provider's plain-HTTP port for the hub's back channel when browsers get HTTPS
#: on IDP_PORT: never published, reachable only on the enclave's front network.
IDP_INTERNAL_PORT = 8002
#: The re-execution jobs folder under the state folder (shared by egress and the runner).
REEXEC_JOBS = "reexec"
TLS_IN_CONTAINER = "/etc/havre/tls"


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
    tls_cert: str = ""  # PEM certificate (chain) the proxy serves HTTPS with; "": plain HTTP
    tls_key: str = ""  # its PEM private key
    create_project_networks: bool = False  # make every project's network now, bridge "hvp..."
    #: seconds a trusted re-execution may run, overriding the config's review.reexecution_seconds
    reexecution_time_limit: int | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def public_url(self) -> str:
        """Where users open the enclave (the proxy's published port)."""
        return f"{self.scheme}://{self.public_host or self.bind_ip}:{self.port}"

    @property
    def local_url(self) -> str:
        """Where this host reaches the proxy (for the health check)."""
        host = "127.0.0.1" if self.bind_ip in ("0.0.0.0", "") else self.bind_ip
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def idp_public_url(self) -> str:
        """Where browsers reach the embedded identity provider: HTTPS (with the proxy's
        certificate) whenever the proxy serves HTTPS."""
        return f"{self.scheme}://{self.public_host or self.bind_ip}:{self.idp_port}"


def hub_container_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-hub"


def egress_container_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-egress"


def runner_container_name(enclave: EnclaveConfig) -> str:
    """The trusted re-execution runner (asks the broker for re-execution containers)."""
    return f"{enclave.name}-runner"


def idp_container_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-idp"


def front_network_name(enclave: EnclaveConfig) -> str:
    return f"{enclave.name}-front"


def prepare_state(enclave: EnclaveConfig, changes: list[str] | None = None) -> None:
    """Create the state folders and any missing secret; never overwrite an existing one."""
    changes = [] if changes is None else changes
    state = enclave.state_dir
    if not (state / "secrets").exists():
        changes.append(f"created the state folder {state}")
    (state / "hub").mkdir(parents=True, exist_ok=True)
    os.chown(state / "hub", HUB_UID, HUB_UID)  # the hub's own state: it runs as HUB_UID
    os.chmod(state / "hub", 0o700)
    for folder, mode in ((BROKER_DIR, 0o700), (BROKER_SOCKET_SUBDIR, 0o755)):
        (state / folder).mkdir(mode=mode, exist_ok=True)
        os.chmod(state / folder, mode)
    secrets_dir = state / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    for name in SECRETS:
        path = secrets_dir / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            changes.append(f"created the secret {name}")
        os.chmod(path, 0o600)
        if name == "broker-runner":  # read by the runner (uid 1000) and the broker (root)
            os.chown(path, NOTEBOOK_UID, NOTEBOOK_GID)
    egress_dir = state / "egress"
    egress_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(egress_dir, EGRESS_UID, EGRESS_UID)
    prepare_identities(enclave, changes)


def project_mounts(enclave: EnclaveConfig) -> str:
    """With per-project filesystems, the ids of their mounts (see
    :func:`havre.host.project_filesystems.mounts_digest`); "" otherwise."""
    if enclave.project_filesystems != "loop":
        return ""
    from havre.host.project_filesystems import mounts_digest, mounts_generation

    ids = mounts_digest([enclave.project_dir(slug) for slug in enclave.projects])
    generations = ",".join(mounts_generation(enclave.state_dir, s) for s in enclave.projects)
    return f"{ids};{generations}"


def prepare_identities(enclave: EnclaveConfig, changes: list[str]) -> None:
    """Check Havre's id range against the host's accounts, give each project its group, and
    set the projects' folders as :func:`havre.enclave.identities.project_plan` says (data readable
    by the project's group only; legacy outputs files keep their uid, join the group)."""
    from havre.enclave.identities import (
        apply_rule,
        locked_table,
        project_plan,
        range_problems,
        read_host_ids,
        table_path,
    )

    host = read_host_ids()
    problems = range_problems(enclave.uid_base, enclave.uid_count, host)
    if problems:
        raise StackError("Havre's id range can't be used: " + "; ".join(problems) + ".")
    with locked_table(
        table_path(enclave.state_dir),
        base=enclave.uid_base,
        size=enclave.uid_count,
        reader_gid=EGRESS_UID,
    ) as table:
        gids = {slug: table.project_gid(slug, host) for slug in enclave.projects}
    for slug, project in enclave.projects.items():
        if enclave.project_filesystems == "loop":
            from havre.host.project_filesystems import ensure_project_filesystem

            ensure_project_filesystem(
                enclave.state_dir,
                enclave.project_dir(slug),
                slug,
                enclave.project_filesystem_size,
                changes,
            )
        for rule in project_plan(enclave.project_dir(slug), project.data_path, gids[slug]):
            existed = rule.path.is_dir()
            if apply_rule(rule) and existed:
                changes.append(f"set the owner and mode of {rule.path}")
            elif not existed:
                changes.append(f"created {rule.path}")
        outputs = enclave.outputs_dir(slug)
        for entry in outputs.iterdir():  # made when every server was uid 1000
            st = entry.lstat()
            if st.st_gid == NOTEBOOK_GID and not entry.is_symlink():
                os.lchown(entry, -1, gids[slug])


def _config_digest(enclave: EnclaveConfig, *images: str, projects: str = "none") -> str:
    """A digest of what a running container depends on: the config as it reads it at start
    (projects and members are read live: see havre/enclave/live.py), image ids, addresses."""
    digest = hashlib.sha256(restart_digest(enclave, projects=projects).encode())
    digest.update(b"live-config")
    for image in images:
        digest.update(image.encode())
    return digest.hexdigest()[:16]


def _tls_digest(opts: StackOptions) -> str:
    """What the proxy's HTTPS depends on: the certificate and key files' contents."""
    if not opts.tls_cert:
        return ""
    digest = hashlib.sha256()
    for path in (opts.tls_cert, opts.tls_key):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def _tls_volumes(opts: StackOptions) -> dict[str, dict[str, str]]:
    """The proxy's certificate and key, read-only at TLS_IN_CONTAINER (hub and provider)."""
    return {
        str(Path(opts.tls_cert).resolve()): {"bind": f"{TLS_IN_CONTAINER}/cert.pem", "mode": "ro"},
        str(Path(opts.tls_key).resolve()): {"bind": f"{TLS_IN_CONTAINER}/key.pem", "mode": "ro"},
    }


def _image_id(client: docker.DockerClient, image: str) -> str:
    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        raise StackError(
            f"image {image} is not on this host: build it with `bash images/build.sh` "
            "(or load it with `docker load`)"
        ) from None


def _ensure_front_network(
    client: docker.DockerClient, enclave: EnclaveConfig, changes: list[str]
) -> None:
    name = front_network_name(enclave)
    try:
        client.networks.get(name)
    except docker.errors.NotFound:
        changes.append(f"created the network {name}")
        client.networks.create(
            name,
            driver="bridge",
            internal=False,
            check_duplicate=True,
            labels={"havre.enclave": enclave.name, "havre.role": "front"},
        )


def _ensure_project_networks(
    client: docker.DockerClient, enclave: EnclaveConfig, changes: list[str]
) -> None:
    """Make each project's internal network now, its bridge named for the host firewall."""
    for slug in enclave.projects:
        name = enclave.network_name(slug)
        try:
            client.networks.get(name)
            continue
        except docker.errors.NotFound:
            pass
        client.networks.create(
            name,
            driver="bridge",
            internal=True,
            enable_ipv6=False,
            check_duplicate=True,
            options=project_network_options(name),
            labels={"havre.enclave": enclave.name, "havre.project": slug},
        )
        changes.append(f"created the network {name}")


def _project_networks(client: docker.DockerClient, enclave: EnclaveConfig) -> list[str]:
    nets = client.networks.list(filters={"label": f"havre.enclave={enclave.name}"})
    return [n.name for n in nets if (n.attrs.get("Labels") or {}).get("havre.project")]


def _replace_container(
    client: docker.DockerClient, name: str, digest: str, changes: list[str] | None = None
) -> docker.models.containers.Container | None:
    """The running container ``name`` if it is current; else remove it and return None."""
    try:
        existing = client.containers.get(name)
    except docker.errors.NotFound:
        if changes is not None:
            changes.append(f"started {name}")
        return None
    if existing.status == "running" and existing.labels.get("havre.digest") == digest:
        return existing
    existing.remove(force=True)
    if changes is not None:
        changes.append(f"replaced {name}")
    return None


def _attach(
    client: docker.DockerClient,
    container: str,
    networks: list[str],
    changes: list[str] | None = None,
) -> None:
    for net in networks:
        try:
            client.networks.get(net).connect(container)
            if changes is not None:
                changes.append(f"attached {container} to {net}")
        except docker.errors.APIError as err:
            if "already exists" not in str(err):
                raise


def _start_egress(
    client: docker.DockerClient,
    enclave: EnclaveConfig,
    opts: StackOptions,
    changes: list[str] | None = None,
) -> None:
    name = egress_container_name(enclave)
    digest = _config_digest(
        enclave,
        _image_id(client, opts.egress_image),
        opts.public_url,
        "reexec-jobs",
        "no-fwd",
        "uids",
        project_mounts(enclave),
        f"metrics:{enclave.monitoring.publish}",
    )
    if _replace_container(client, name, digest, changes):
        return
    token = (enclave.state_dir / "secrets" / "egress-api-token").read_text().strip()
    prefix = "/services/egress/"
    client.containers.run(
        opts.egress_image,
        name=name,
        detach=True,
        # outputs folders are owned by this uid (havre/enclave/identities.py); the runner's group
        # is for the re-execution jobs folder (egress.reexecution.jobs) only
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
            "HAVRE_EGRESS_METRICS_PORT": str(EGRESS_METRICS_PORT),
        },
        ports=egress_metrics_ports(enclave),
        volumes={
            str(live_config_path(enclave).parent): {"bind": LIVE_CONFIG_IN_CONTAINER, "mode": "ro"},
            str(enclave.state_dir / "projects"): {
                "bind": str(enclave.state_dir / "projects"),
                "mode": "ro",
            },
            str(enclave.state_dir / "egress"): {
                "bind": str(enclave.state_dir / "egress"),
                "mode": "rw",
            },
            # uid -> user, to name the owner of each file in a request (a folder: the table
            # is replaced by a rename, which a bind mount of the file would not show)
            str(enclave.state_dir / "identities"): {
                "bind": str(enclave.state_dir / "identities"),
                "mode": "ro",
            },
            # the re-execution jobs folder, shared with the runner (egress.reexecution.jobs)
            str(enclave.state_dir / REEXEC_JOBS): {
                "bind": str(enclave.state_dir / REEXEC_JOBS),
                "mode": "rw",
            },
        },
        **_service_container(enclave, "egress", digest, tmp="64m", pids=256),
    )


def egress_metrics_ports(enclave: EnclaveConfig) -> dict[str, tuple[str, int]]:
    """The egress container's published ports: its metrics-only port on the host address and
    port of ``monitoring.publish`` when set (and nothing else: the service's own port is
    reached through the hub's proxy only)."""
    publish = enclave.monitoring.publish
    if not publish:
        return {}
    host, _, port = publish.rpartition(":")
    return {f"{EGRESS_METRICS_PORT}/tcp": (host.strip("[]"), int(port))}


def _service_container(
    enclave: EnclaveConfig, role: str, digest: str, *, tmp: str, pids: int
) -> dict[str, object]:
    """What every service container of the stack gets (``docker run`` arguments): the
    hardening of :func:`havre.enclave.hardening.service_hardening` (a read-only root with a
    small ``/tmp``, no capabilities, no privilege gain, a process limit, no IP forwarding),
    restarts with the host, and the labels ``havre down`` and the config digest use."""
    return {
        **service_hardening(tmp_size=tmp, pids=pids),
        "restart_policy": {"Name": "unless-stopped"},
        "labels": {"havre.enclave": enclave.name, "havre.role": role, "havre.digest": digest},
    }


def _start_runner(
    client: docker.DockerClient,
    enclave: EnclaveConfig,
    opts: StackOptions,
    changes: list[str] | None = None,
) -> None:
    """The trusted re-execution runner (``havre-reexec-runner``, the egress image).

    It asks the spawn broker for each re-execution container (its own secret allows nothing
    else) and has no Docker socket and no network at all: uid 1000, read-only root, no
    capabilities; it shares only the jobs folder with the egress service, and reads the
    enclave config and the projects' data folders (to check them; the data goes to the
    re-run's container).
    """
    name = runner_container_name(enclave)
    jobs = enclave.state_dir / REEXEC_JOBS
    prepare_jobs_folder(jobs, uid=NOTEBOOK_UID, gid=NOTEBOOK_GID)
    digest = _config_digest(
        enclave,
        _image_id(client, opts.egress_image),
        str(opts.reexecution_time_limit),
        "broker-1",
        projects="paths",  # each project's data folder is one of its mounts
    )
    if _replace_container(client, name, digest, changes):
        return
    data = {
        str(p.data_path): {"bind": str(p.data_path), "mode": "ro"}
        for p in enclave.projects.values()
    }
    client.containers.run(
        opts.egress_image,
        [
            "havre-reexec-runner",
            "--config",
            CONFIG_IN_CONTAINER,
            "--jobs",
            str(jobs),
            "--broker-socket",
            BROKER_SOCKET,
            "--broker-secret",
            str(enclave.state_dir / "secrets" / "broker-runner"),
            *(
                ["--time-limit", str(int(opts.reexecution_time_limit))]
                if opts.reexecution_time_limit is not None
                else []
            ),
        ],
        name=name,
        detach=True,
        user=f"{NOTEBOOK_UID}:{NOTEBOOK_GID}",
        network_mode="none",
        volumes={
            str(live_config_path(enclave).parent): {"bind": LIVE_CONFIG_IN_CONTAINER, "mode": "ro"},
            str(jobs): {"bind": str(jobs), "mode": "rw"},
            **_broker_volumes(enclave, "runner"),
            **data,
        },
        **_service_container(enclave, "runner", digest, tmp="64m", pids=256),
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


def _start_idp(
    client: docker.DockerClient,
    enclave: EnclaveConfig,
    opts: StackOptions,
    changes: list[str] | None = None,
) -> None:
    """The embedded OpenID Connect provider (only when no external one is configured)."""
    name = idp_container_name(enclave)
    if enclave.identity.provider != "embedded":
        try:
            client.containers.get(name).remove(force=True)
            if changes is not None:
                changes.append(f"removed {name} (an external provider is configured)")
        except docker.errors.NotFound:
            pass
        return
    idp_dir = enclave.state_dir / "idp"
    idp_dir.mkdir(mode=0o700, exist_ok=True)
    config_file = idp_dir / "idp.yaml"
    text = idp_config_text(enclave, opts)
    if not config_file.exists() or config_file.read_text() != text:
        config_file.write_text(text)
        if changes is not None:
            changes.append(f"wrote {config_file}")
    users = idp_dir / "users.json"
    if not users.exists():
        fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("{}\n")
    digest = hashlib.sha256(  # the provider reads its own config, not the enclave's
        "\0".join([_image_id(client, opts.hub_image), text, _tls_digest(opts), "no-fwd"]).encode()
    ).hexdigest()[:16]
    if _replace_container(client, name, digest, changes):
        return
    secret_files = [
        str(enclave.state_dir / "secrets" / s) for s in ("idp-admin-token", "idp-client-jupyterhub")
    ]
    command = ["havre-idp", "--config", str(config_file), "--port", str(IDP_PORT)]
    tls_volumes: dict[str, dict[str, str]] = {}
    if opts.tls_cert:
        # the browser's side over HTTPS with the proxy's certificate; the hub's back channel
        # (token and userinfo calls) in plain HTTP on the front network only
        tls_volumes = _tls_volumes(opts)
        command += [
            "--tls-cert",
            f"{TLS_IN_CONTAINER}/cert.pem",
            "--tls-key",
            f"{TLS_IN_CONTAINER}/key.pem",
            "--internal-port",
            str(IDP_INTERNAL_PORT),
        ]
    client.containers.run(
        opts.hub_image,
        command,
        name=name,
        detach=True,
        user="0:0",
        network=front_network_name(enclave),
        ports={f"{IDP_PORT}/tcp": (opts.bind_ip, opts.idp_port)},
        volumes={
            str(idp_dir): {"bind": str(idp_dir), "mode": "rw"},
            **{path: {"bind": path, "mode": "ro"} for path in secret_files},
            **tls_volumes,
        },
        **_service_container(enclave, "idp", digest, tmp="16m", pids=128),
    )


def broker_container_name(enclave: EnclaveConfig) -> str:
    """The spawn broker: the only container of the enclave with the Docker socket."""
    return f"{enclave.name}-broker"


def _broker_volumes(enclave: EnclaveConfig, caller: str) -> dict[str, dict[str, str]]:
    """The broker's socket folder and ``caller``'s own secret (read-only)."""
    secret = str(enclave.state_dir / "secrets" / f"broker-{caller}")
    return {
        str(enclave.state_dir / BROKER_SOCKET_SUBDIR): {"bind": BROKER_SOCKET_DIR, "mode": "rw"},
        secret: {"bind": secret, "mode": "ro"},
    }


def _start_broker(
    client: docker.DockerClient,
    enclave: EnclaveConfig,
    opts: StackOptions,
    changes: list[str] | None = None,
) -> None:
    """The spawn broker (``havre-broker``, the hub image; see havre/broker/).

    It holds the Docker socket and therefore has nothing else it doesn't need: no network at
    all (it is reached on a Unix socket), read-only root, no capabilities but CHOWN, FOWNER and
    DAC_OVERRIDE (to give a new home to its server's uid), no privilege gain. It mounts the
    projects' folders (homes and outputs it prepares), the identity table, the re-execution
    jobs folder read-only (to check a run's scratch folder), its audit log folder, the socket
    folder and the two callers' secrets; not the other secrets, the egress database or the
    identity provider's signing key.
    """
    name = broker_container_name(enclave)
    state = enclave.state_dir
    socket_path = "/var/run/docker.sock"
    digest = _config_digest(
        enclave, _image_id(client, opts.hub_image), "broker-1", project_mounts(enclave)
    )
    if _replace_container(client, name, digest, changes):
        return
    (state / REEXEC_JOBS).mkdir(exist_ok=True)
    (state / "identities").mkdir(exist_ok=True)
    secret_files = [str(state / "secrets" / f"broker-{c}") for c in ("hub", "runner")]
    same = {
        str(state / "projects"): "rw",
        str(state / "identities"): "rw",
        str(state / REEXEC_JOBS): "ro",
        str(state / BROKER_DIR): "rw",
        **dict.fromkeys(secret_files, "ro"),
    }
    options = _service_container(enclave, "broker", digest, tmp="16m", pids=128)
    options.pop("sysctls")  # no network namespace of its own to set
    client.containers.run(
        opts.hub_image,
        [
            "havre-broker",
            "--config",
            CONFIG_IN_CONTAINER,
            "--socket",
            BROKER_SOCKET,
            "--audit",
            str(state / BROKER_DIR / "audit.jsonl"),
            "--hub-secret",
            secret_files[0],
            "--runner-secret",
            secret_files[1],
            "--attach",
            hub_container_name(enclave),
            "--attach",
            egress_container_name(enclave),
        ],
        name=name,
        detach=True,
        user="0:0",
        network_mode="none",
        cap_add=["CHOWN", "FOWNER", "DAC_OVERRIDE"],
        volumes={
            str(live_config_path(enclave).parent): {"bind": LIVE_CONFIG_IN_CONTAINER, "mode": "ro"},
            socket_path: {"bind": socket_path, "mode": "rw"},
            str(state / BROKER_SOCKET_SUBDIR): {"bind": BROKER_SOCKET_DIR, "mode": "rw"},
            **{path: {"bind": path, "mode": mode} for path, mode in same.items()},
        },
        **options,
    )
    wait_for_broker(enclave)


def wait_for_broker(enclave: EnclaveConfig, timeout: float = 60.0) -> None:
    """Wait until the broker listens (its socket answers); fail with a sentence."""
    import socket as socket_module

    path = enclave.state_dir / BROKER_SOCKET_SUBDIR / "broker.sock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                return
            except OSError:
                time.sleep(0.1)
    raise StackError(f"the spawn broker did not open {path} within {timeout:.0f} s")


def _hub_tls_volumes(enclave: EnclaveConfig, opts: StackOptions) -> dict[str, dict[str, str]]:
    """The proxy's certificate and key, copied for the hub's uid (the originals may be
    readable by root only) into ``<state_dir>/hub-tls`` and mounted read-only."""
    folder = enclave.state_dir / "hub-tls"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chown(folder, HUB_UID, HUB_UID)
    for source, target in ((opts.tls_cert, "cert.pem"), (opts.tls_key, "key.pem")):
        path = folder / target
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Path(source).read_bytes())
        os.chown(path, HUB_UID, HUB_UID)
    return {str(folder): {"bind": TLS_IN_CONTAINER, "mode": "ro"}}


def _hub_secrets(enclave: EnclaveConfig) -> tuple[Path, str]:
    """Copy the hub's secrets (:data:`HUB_SECRETS`) for its uid; the folder and a digest of
    their contents (a rotated secret replaces the hub)."""
    folder = enclave.state_dir / "hub-secrets"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chown(folder, HUB_UID, HUB_UID)
    os.chmod(folder, 0o700)
    digest = hashlib.sha256()
    for name in HUB_SECRETS:
        data = (enclave.state_dir / "secrets" / name).read_bytes()
        digest.update(hashlib.sha256(data).digest())
        path = folder / name
        if path.exists() and path.read_bytes() == data:
            continue
        partial = folder / f".{name}.new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chown(partial, HUB_UID, HUB_UID)
        os.replace(partial, path)
    return folder, digest.hexdigest()


def _start_hub(
    client: docker.DockerClient,
    enclave: EnclaveConfig,
    opts: StackOptions,
    changes: list[str] | None = None,
) -> None:
    """The hub: JupyterHub and its proxy, as HUB_UID, with no Docker socket.

    It mounts only its own state folder, its copies of the secrets it reads, the broker's
    socket folder, the live config and, with TLS, its copy of the certificate: no project
    data, homes or outputs, no identity-provider or egress database secrets.
    """
    name = hub_container_name(enclave)
    hub_secrets, secrets_digest = _hub_secrets(enclave)
    front = client.networks.get(front_network_name(enclave))
    front_gateway = ((front.attrs.get("IPAM") or {}).get("Config") or [{}])[0].get("Gateway", "")
    digest = _config_digest(
        enclave,
        _image_id(client, opts.hub_image),
        opts.public_url,
        opts.idp_public_url,
        _tls_digest(opts),
        "no-fwd",
        "broker-1",
        front_gateway,
        secrets_digest,
    )
    if _replace_container(client, name, digest, changes):
        return
    state = enclave.state_dir
    tls_volumes: dict[str, dict[str, str]] = {}
    command = None
    idp_internal = f"http://{idp_container_name(enclave)}:{IDP_PORT}"
    if opts.tls_cert:
        cert, key = f"{TLS_IN_CONTAINER}/cert.pem", f"{TLS_IN_CONTAINER}/key.pem"
        tls_volumes = _hub_tls_volumes(enclave, opts)
        idp_internal = f"http://{idp_container_name(enclave)}:{IDP_INTERNAL_PORT}"
        # the image's command, plus the proxy's certificate (JupyterHub passes it to the proxy)
        command = [
            "jupyterhub",
            "-f",
            "/srv/havre/jupyterhub_config.py",
            f"--JupyterHub.ssl_cert={cert}",
            f"--JupyterHub.ssl_key={key}",
        ]
    options = _service_container(enclave, "hub", digest, tmp="64m", pids=1024)
    client.containers.run(
        opts.hub_image,
        command,
        name=name,
        detach=True,
        user=f"{HUB_UID}:{HUB_UID}",
        network=front_network_name(enclave),
        ports={f"{PROXY_PORT}/tcp": (opts.bind_ip, opts.port)},
        environment={
            "HOME": "/tmp",
            "HAVRE_CONFIG": CONFIG_IN_CONTAINER,
            "HAVRE_HUB_CONTAINER": name,
            "HAVRE_EGRESS_CONTAINER": egress_container_name(enclave),
            "HAVRE_FRONT_NETWORK": front_network_name(enclave),
            "HAVRE_FRONT_GATEWAY": front_gateway,
            "HAVRE_PUBLIC_URL": opts.public_url,
            "HAVRE_IDP_PUBLIC_URL": opts.idp_public_url,
            "HAVRE_IDP_INTERNAL_URL": idp_internal,
            "HAVRE_BROKER_SOCKET": BROKER_SOCKET,
            "HAVRE_BROKER_SECRET": str(state / "secrets" / "broker-hub"),
        },
        volumes={
            str(live_config_path(enclave).parent): {"bind": LIVE_CONFIG_IN_CONTAINER, "mode": "ro"},
            str(state / "hub"): {"bind": str(state / "hub"), "mode": "rw"},
            # its copies, where it reads secrets; the broker's socket folder
            str(hub_secrets): {"bind": str(state / "secrets"), "mode": "ro"},
            str(state / BROKER_SOCKET_SUBDIR): {"bind": BROKER_SOCKET_DIR, "mode": "rw"},
            **tls_volumes,
        },
        **options,  # read-only root, /tmp (the proxy's pid), no capabilities, no forwarding
    )


def _publishes(client: docker.DockerClient, name: str, port: int) -> bool:
    """Whether the running container ``name`` already publishes this host port."""
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        return False
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    published = {str(b.get("HostPort")) for entries in bindings.values() for b in entries or []}
    return container.status == "running" and str(port) in published


def check_ports(client: docker.DockerClient, enclave: EnclaveConfig, opts: StackOptions) -> None:
    """Refuse a host port held by another program before anything is stopped or replaced
    (else the hub would be removed first and the enclave left down)."""
    wanted = {"--port": (hub_container_name(enclave), opts.port)}
    if enclave.identity.provider == "embedded":
        wanted["--idp-port"] = (idp_container_name(enclave), opts.idp_port)
    address = opts.bind_ip or "0.0.0.0"
    for flag, (name, port) in wanted.items():
        if _publishes(client, name, port):
            continue  # this enclave serves there already
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as err:
                raise StackError(
                    f"port {port} on {address} ({flag}) can't be used: {err.strerror}. Nothing "
                    f"was stopped; free the port or choose another {flag}"
                ) from None


def wait_for_hub(
    client: docker.DockerClient, enclave: EnclaveConfig, url: str, timeout: float
) -> None:
    """Wait until the hub answers through the proxy; fail with its logs if it exits.

    A restart *during* the wait (Docker's restart policy bringing back a hub that crashed at
    start) is a failure; restarts before it (a crash last week, recovered) are not.
    """
    deadline = time.monotonic() + timeout
    health = url.rstrip("/") + "/hub/health"
    restarts_before = client.containers.get(hub_container_name(enclave)).attrs.get(
        "RestartCount", 0
    )
    while time.monotonic() < deadline:
        container = client.containers.get(hub_container_name(enclave))
        if (
            container.status in ("exited", "dead", "restarting")
            or container.attrs.get("RestartCount", 0) > restarts_before
        ):
            logs = container.logs(tail=30).decode(errors="replace")
            raise StackError(f"the hub container stopped; its last log lines:\n{logs}")
        try:
            # the hub's own proxy on this host: a lab's self-signed certificate is fine here
            context = ssl._create_unverified_context() if health.startswith("https") else None
            with urllib.request.urlopen(health, timeout=2, context=context) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise StackError(f"the hub did not answer at {health} within {timeout:.0f} s")


def up(
    enclave: EnclaveConfig, opts: StackOptions | None = None, changes: list[str] | None = None
) -> str:
    """Start (or leave running) the enclave's containers; return the public URL.

    What it changed (created, started, replaced, attached) is appended to ``changes``: an
    empty list means the enclave was already up as configured.
    """
    opts = opts or StackOptions()
    changes = [] if changes is None else changes
    client = docker.from_env(version="auto")
    try:
        for image in (opts.hub_image, opts.egress_image, *enclave.allowed_images):
            _image_id(client, image)
        check_ports(client, enclave, opts)
        prepare_state(enclave, changes)
        publish_config(enclave, changes)
        _ensure_front_network(client, enclave, changes)
        if opts.create_project_networks:
            _ensure_project_networks(client, enclave, changes)
        _start_idp(client, enclave, opts, changes)
        _start_egress(client, enclave, opts, changes)
        _start_broker(client, enclave, opts, changes)
        _start_runner(client, enclave, opts, changes)
        _start_hub(client, enclave, opts, changes)
        project_nets = _project_networks(client, enclave)
        _attach(client, egress_container_name(enclave), project_nets, changes)
        _attach(client, hub_container_name(enclave), project_nets, changes)
        wait_for_hub(client, enclave, opts.local_url + "/", opts.wait_seconds)
        return opts.public_url + "/"
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

        if enclave.project_filesystems == "loop":
            from havre.host.project_filesystems import release_project_filesystem

            for slug in enclave.projects:
                release_project_filesystem(enclave.state_dir, enclave.project_dir(slug), slug)
        shutil.rmtree(enclave.state_dir, ignore_errors=True)
