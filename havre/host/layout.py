"""What an enclave's stack is made of on one Docker host: the accounts its services run as,
where its secrets and live config are, its containers' and networks' names, the launcher's
options, and the state folder (prepared before any container starts).

Layout on the host (``state_dir`` from the enclave config)::

    secrets/                 0700: cookie secret, proxy and service tokens (0600 files)
    hub/                     the hub's database
    projects/<slug>/data     the project's data (mounted read-only in notebooks)
    projects/<slug>/outputs  what researchers may ask to release (readable by egress)
    projects/<slug>/homes/<user>   persistent per-user, per-project homes
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from havre import __version__
from havre.enclave.config import EnclaveConfig

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


def broker_container_name(enclave: EnclaveConfig) -> str:
    """The spawn broker: the only container of the enclave with the Docker socket."""
    return f"{enclave.name}-broker"


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
