"""The stack's service containers, one starter each: identity provider, egress service,
spawn broker, re-execution runner, hub.

Each is hardened by :func:`havre.enclave.hardening.service_hardening` (through
:func:`_service_container`, never spelled by hand) and replaced only when its config digest
changes; the hub and the egress service reach the project networks, nothing else does.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import docker
import docker.errors

from havre.enclave.config import EnclaveConfig
from havre.enclave.hardening import service_hardening
from havre.enclave.jobs_folder import prepare_jobs_folder
from havre.enclave.live import live_config_path
from havre.enclave.ports import EGRESS_PORT, PROXY_PORT
from havre.host.containers import (
    config_digest,
    image_id,
    replace_container,
    tls_digest,
    tls_volume_mounts,
)
from havre.host.layout import (
    BROKER_DIR,
    BROKER_SOCKET,
    BROKER_SOCKET_DIR,
    BROKER_SOCKET_SUBDIR,
    CONFIG_IN_CONTAINER,
    EGRESS_UID,
    HUB_SECRETS,
    HUB_UID,
    IDP_INTERNAL_PORT,
    IDP_PORT,
    LIVE_CONFIG_IN_CONTAINER,
    NOTEBOOK_GID,
    NOTEBOOK_UID,
    REEXEC_JOBS,
    TLS_IN_CONTAINER,
    StackError,
    StackOptions,
    broker_container_name,
    egress_container_name,
    front_network_name,
    hub_container_name,
    idp_container_name,
    project_mounts,
    runner_container_name,
)


def start_egress(
    client: docker.DockerClient,
    enclave: EnclaveConfig,
    opts: StackOptions,
    changes: list[str] | None = None,
) -> None:
    name = egress_container_name(enclave)
    digest = config_digest(
        enclave,
        image_id(client, opts.egress_image),
        opts.public_url,
        "reexec-jobs",
        "no-fwd",
        "uids",
        project_mounts(enclave),
    )
    if replace_container(client, name, digest, changes):
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
        },
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


def start_runner(
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
    digest = config_digest(
        enclave,
        image_id(client, opts.egress_image),
        str(opts.reexecution_time_limit),
        "broker-1",
        projects="paths",  # each project's data folder is one of its mounts
    )
    if replace_container(client, name, digest, changes):
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


def start_idp(
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
        "\0".join([image_id(client, opts.hub_image), text, tls_digest(opts), "no-fwd"]).encode()
    ).hexdigest()[:16]
    if replace_container(client, name, digest, changes):
        return
    secret_files = [
        str(enclave.state_dir / "secrets" / s) for s in ("idp-admin-token", "idp-client-jupyterhub")
    ]
    command = ["havre-idp", "--config", str(config_file), "--port", str(IDP_PORT)]
    tls_volumes: dict[str, dict[str, str]] = {}
    if opts.tls_cert:
        # the browser's side over HTTPS with the proxy's certificate; the hub's back channel
        # (token and userinfo calls) in plain HTTP on the front network only
        tls_volumes = tls_volume_mounts(opts)
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


def _broker_volumes(enclave: EnclaveConfig, caller: str) -> dict[str, dict[str, str]]:
    """The broker's socket folder and ``caller``'s own secret (read-only)."""
    secret = str(enclave.state_dir / "secrets" / f"broker-{caller}")
    return {
        str(enclave.state_dir / BROKER_SOCKET_SUBDIR): {"bind": BROKER_SOCKET_DIR, "mode": "rw"},
        secret: {"bind": secret, "mode": "ro"},
    }


def start_broker(
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
    digest = config_digest(
        enclave, image_id(client, opts.hub_image), "broker-1", project_mounts(enclave)
    )
    if replace_container(client, name, digest, changes):
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


def start_hub(
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
    digest = config_digest(
        enclave,
        image_id(client, opts.hub_image),
        opts.public_url,
        opts.idp_public_url,
        tls_digest(opts),
        "no-fwd",
        "broker-1",
        front_gateway,
        secrets_digest,
    )
    if replace_container(client, name, digest, changes):
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
