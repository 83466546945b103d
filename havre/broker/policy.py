"""What the spawn broker lets each caller do, and the containers it builds (pure).

No Docker, web or database import here: this module checks a request's shape and, from the
enclave config alone, builds the full specification of the one container the request may
start. The caller never passes any part of a container's specification: not the image, the
mounts, the network, the user, the limits, the capabilities or the command. What a caller may
send is listed in :data:`ACTIONS`; anything else is refused with a sentence.

Callers and what they may do (:data:`CALLER_ACTIONS`):

* ``hub`` (the JupyterHub process, through ``ProjectSpawner``): start, stop and inspect the
  notebook server of user U in project P (for an ``access: desktop`` project, the server and
  its remote desktop: :func:`desktop_spec`; the tier is the config's, never the caller's);
* ``runner`` (``havre-reexec-runner``): learn project P's image id, start, inspect, read the
  log of, stop (kill) and remove the trusted re-execution run R of project P, and list its
  own runs.

Membership: the broker re-checks it against the enclave config, with the hub groups the hub
sends (the hub has them from the identity provider). A user listed as a member is accepted
on the config's word alone; a member through a group is accepted on the hub's word that the
user is in that group (the broker can't ask the provider: it has no network). See
docs/sysadmin/broker.md ("What a compromised hub can still do").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from havre.enclave.config import DESKTOP_PASTE_NONE, EnclaveConfig, Project, project_hub_group
from havre.enclave.hardening import (
    container_hardening,
    hardened_host_config,
    swarm_task_hardening,
)
from havre.enclave.seccomp import security_opt as seccomp_security_opt

#: The notebook server's port inside its container (DockerSpawner's default).
SERVER_PORT = 8888
#: a Swarm task's grace period between SIGTERM and SIGKILL, in nanoseconds
STOP_GRACE_NS = 5_000_000_000
#: Where things are inside notebook and re-execution containers.
HOME = "/home/researcher"
DATA = "/data"
OUTPUTS = f"{HOME}/outputs"
#: The uid and gid notebook servers and re-executions run as (never 0).
NOTEBOOK_UID = 1000
NOTEBOOK_GID = 1000
#: The remote desktop of an ``access: desktop`` project (images/desktop): its front's port
#: (noVNC and its websocket, what the hub's proxy reaches), its fixed non-root uid, the size
#: of its /tmp (its memory, CPU and process limits are the config's ``desktop_limits``).
DESKTOP_PORT = 6080
DESKTOP_UID = 1100
DESKTOP_TMP = "512m"
#: Labels every container the broker starts carries.
ROLE_LABEL = "havre.role"
BROKER_LABEL = "havre.broker"
RUN_LABEL = "havre.reexecution"
#: On a desktop: the notebook container whose network namespace it shares.
DESKTOP_OF_LABEL = "havre.desktop-of"
#: The re-execution jobs folder under the state folder; runs' scratch folders are in work/.
REEXEC_JOBS = "reexec"
REEXEC_SDC_PARAMS = ".havre-sdc-params.json"

#: Each action: the fields it requires and the fields it may carry (nothing else).
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "server.start": (frozenset({"user", "project"}), frozenset({"groups", "env"})),
    "server.stop": (frozenset({"user", "project"}), frozenset()),
    "server.inspect": (frozenset({"user", "project"}), frozenset()),
    "reexec.image": (frozenset({"project"}), frozenset()),
    "reexec.start": (frozenset({"project", "run_id"}), frozenset()),
    "reexec.inspect": (frozenset({"project", "run_id"}), frozenset()),
    "reexec.logs": (frozenset({"project", "run_id"}), frozenset()),
    "reexec.stop": (frozenset({"project", "run_id"}), frozenset()),
    "reexec.remove": (frozenset({"project", "run_id"}), frozenset()),
    "reexec.list": (frozenset(), frozenset()),
}
CALLER_ACTIONS: dict[str, frozenset[str]] = {
    "hub": frozenset({"server.start", "server.stop", "server.inspect"}),
    "runner": frozenset(
        {
            "reexec.image",
            "reexec.start",
            "reexec.inspect",
            "reexec.logs",
            "reexec.stop",
            "reexec.remove",
            "reexec.list",
        }
    ),
}
CALLERS = tuple(CALLER_ACTIONS)

#: Environment variables the hub may give a notebook server (JupyterHub's own: the server's
#: API token, URLs, OAuth client); Havre's and Jupyter's are set by the broker.
_HUB_ENV_KEY = re.compile(r"(JUPYTERHUB_[A-Z0-9_]{1,48}|JPY_API_TOKEN)")
MAX_ENV_ENTRIES = 40
MAX_ENV_VALUE = 4096
MAX_GROUPS = 200
_RUN_ID = re.compile(r"[0-9a-f]{16}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: a server's path as the hub gives it (the desktop's start script checks it again)
_PREFIX = re.compile(
    r"(/[A-Za-z0-9._~-]{1,64}){0,4}/user/[A-Za-z0-9._@~%-]{1,192}/[a-z][a-z0-9-]{1,29}/"
)
#: a hub API token (JupyterHub's are 32 or more URL-safe characters)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class Refused(Exception):
    """A request the broker refuses: ``status`` (an HTTP code) and a sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class BrokerRequest:
    """A checked request: who asks, what for, about whom."""

    caller: str
    action: str
    user: str = ""
    project: str = ""
    run_id: str = ""
    groups: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    def audit_fields(self) -> dict[str, str]:
        """What the audit log records (never the environment: it holds the server's token)."""
        out = {"caller": self.caller, "action": self.action}
        for key in ("user", "project", "run_id"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Mount:
    """One bind mount: a host path at a path in the container."""

    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the broker gives Docker for one container (see :func:`server_spec`)."""

    name: str
    image: str
    command: tuple[str, ...] | None
    user: str
    working_dir: str
    hostname: str
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    mounts: tuple[Mount, ...]
    host_config: Mapping[str, Any]
    network: str  # a project network, "none", or "container:<notebook>" (a desktop)


# ------------------------------------------------------------------------------ the request


def check_request(enclave: EnclaveConfig, caller: str, action: str, body: Any) -> BrokerRequest:
    """Check one request against the policy; raise :class:`Refused` with a sentence."""
    if caller not in CALLER_ACTIONS:
        raise Refused(401, "Unknown caller: the broker knows only the hub and the runner.")
    if action not in ACTIONS:
        raise Refused(404, f"Unknown action {action!r}: the broker offers {', '.join(ACTIONS)}.")
    if action not in CALLER_ACTIONS[caller]:
        raise Refused(403, f"The {caller} may not ask for {action!r}.")
    if not isinstance(body, dict):
        raise Refused(400, "The request body must be a JSON object.")
    required, optional = ACTIONS[action]
    extra = sorted(str(k) for k in body if k not in required | optional)
    if extra:
        raise Refused(
            400,
            f"Field(s) {', '.join(extra)} are not accepted for {action!r}: the broker builds "
            "every container specification itself from the enclave config.",
        )
    missing = sorted(required - set(body))
    if missing:
        raise Refused(400, f"Field(s) {', '.join(missing)} are required for {action!r}.")
    for key in ("user", "project", "run_id"):
        if key in body and not isinstance(body[key], str):
            raise Refused(400, f"Field {key!r} must be a string.")
    project = body.get("project", "")
    if "project" in body:
        if not _SLUG.fullmatch(project) or project not in enclave.projects:
            raise Refused(404, f"There is no project {project!r} in this enclave.")
        if enclave.projects[project].image not in enclave.allowed_images:
            raise Refused(
                403,
                f"Project {project!r}'s image is not on the enclave's image allow-list.",
            )
    user = body.get("user", "")
    if "user" in body and not _USERNAME.fullmatch(user):
        raise Refused(400, f"{user!r} is not a valid user name.")
    run_id = body.get("run_id", "")
    if "run_id" in body and not _RUN_ID.fullmatch(run_id):
        raise Refused(400, "A re-execution run id is 16 lowercase hexadecimal digits.")
    groups = _check_groups(enclave, body.get("groups", []))
    env = _check_env(body.get("env", {}))
    if action == "server.start" and not enclave.is_member(user, project, groups):
        raise Refused(403, f"{user} is not a member of project {project!r}.")
    return BrokerRequest(caller, action, user, project, run_id, groups, env)


def _check_groups(enclave: EnclaveConfig, groups: Any) -> tuple[str, ...]:
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Refused(400, "Field 'groups' must be a list of hub group names.")
    if len(groups) > MAX_GROUPS:
        raise Refused(400, f"Field 'groups' may list at most {MAX_GROUPS} groups.")
    known = set(enclave.all_hub_groups())
    unknown = sorted(g for g in groups if g not in known)
    if unknown:
        raise Refused(400, f"Unknown hub group(s): {', '.join(unknown[:5])}.")
    return tuple(groups)


def _check_env(env: Any) -> dict[str, str]:
    if not isinstance(env, dict):
        raise Refused(400, "Field 'env' must be an object of JupyterHub variables.")
    if len(env) > MAX_ENV_ENTRIES:
        raise Refused(400, f"Field 'env' may hold at most {MAX_ENV_ENTRIES} variables.")
    for key, value in env.items():
        if not isinstance(key, str) or not _HUB_ENV_KEY.fullmatch(key):
            raise Refused(
                400,
                f"Environment variable {str(key)[:60]!r} is not accepted: the hub may pass "
                "only JupyterHub's own (JUPYTERHUB_*).",
            )
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE or "\0" in value:
            raise Refused(400, f"Environment variable {key} must be a short string.")
    return dict(env)


# ------------------------------------------------------------------------------ the specs


def pinned_jupyter_env(home: str) -> dict[str, str]:
    """The environment that makes a notebook server take its configuration from the image only.

    Jupyter reads config files (``jupyter_server_config.py`` is code run in the server), server
    extensions, kernelspecs, lab extensions and static paths from a user config folder
    (``~/.jupyter``), a user data folder (``~/.local/share/jupyter``), ``JUPYTER_PATH`` and
    ``JUPYTER_CONFIG_PATH``, all writable by the researcher. Here the user folders are empty,
    read-only folders of the image (``images/notebook/Dockerfile``), the extra paths are empty,
    the environment's folders (the image's venv) come first, Python's user site is off, and
    every route of the server requires a login unless its handler says otherwise. JupyterLab's
    own settings and workspaces (JSON read by the browser) stay in the home.
    """
    return {
        "JUPYTER_CONFIG_DIR": "/opt/havre/jupyter/config",
        "JUPYTER_DATA_DIR": "/opt/havre/jupyter/data",
        "JUPYTER_CONFIG_PATH": "",
        "JUPYTER_PATH": "",
        "JUPYTER_PREFER_ENV_PATH": "1",
        "JUPYTER_PLATFORM_DIRS": "0",
        "JUPYTER_RUNTIME_DIR": "/tmp/jupyter-runtime",
        "JUPYTERLAB_DIR": "/opt/havre/venv/share/jupyter/lab",
        "JUPYTERLAB_SETTINGS_DIR": f"{home}/.jupyter/lab/user-settings",
        "JUPYTERLAB_WORKSPACES_DIR": f"{home}/.jupyter/lab/workspaces",
        "JUPYTER_SERVER_ALLOW_UNAUTHENTICATED_ACCESS": "false",
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": "",
        "PYTHONSTARTUP": "",
    }


def server_spec(
    enclave: EnclaveConfig,
    request: BrokerRequest,
    *,
    dns: str = "",
    identity: tuple[int, int] = (NOTEBOOK_UID, NOTEBOOK_GID),
) -> ContainerSpec:
    """The notebook server container of ``request.user`` in ``request.project``.

    ``dns`` is the project network's gateway address (nothing answers there: see
    ``ProjectSpawner.dns_sink``); ``identity`` the server's own uid and the project's gid
    (from the identity table, :mod:`havre.enclave.identities`; never 0).
    """
    project = enclave.project(request.project)
    network = enclave.network_name(project.slug)
    uid, gid = identity
    if uid <= 0 or gid <= 0:
        raise Refused(500, "A notebook server never runs as root.")
    env = dict(request.env)
    env.update(
        {
            "HAVRE_PROJECT": project.slug,
            "HAVRE_PROJECT_TITLE": project.title,
            "HAVRE_OUTPUTS_DIR": OUTPUTS,
            "HAVRE_DATA_DIR": DATA,
            "HOME": HOME,
            "JUPYTER_IMAGE_SPEC": project.image,
        }
    )
    env.update(pinned_jupyter_env(HOME))
    if project.desktop:
        # pixels only: the server is for its desktop's Chromium, in the same network namespace
        env["JUPYTERHUB_SERVICE_URL"] = loopback_service_url(project, request)
    home = enclave.home_dir(project.slug, request.user)
    return ContainerSpec(
        name=enclave.container_name(project.slug, request.user),
        image=project.image,
        command=None,  # the image's own (havre-singleuser: images/notebook/Dockerfile)
        user=f"{uid}:{gid}",
        working_dir=HOME,
        hostname=project.slug,
        environment=env,
        labels={
            "havre.enclave": enclave.name,
            "havre.project": project.slug,
            "havre.user": request.user,
            "havre.uid": str(uid),
            ROLE_LABEL: "notebook",
            BROKER_LABEL: "1",
        },
        mounts=(
            Mount(str(home), HOME, False),
            Mount(str(enclave.outputs_dir(project.slug)), OUTPUTS, False),
            Mount(str(project.data_path), DATA, True),
        ),
        host_config=hardened_host_config(project, network=network, dns=dns),
        network=network,
    )


def server_prefix(project: Project, request: BrokerRequest) -> str:
    """The server's path, ``/user/<name>/<project>/``, as the hub gave it
    (``JUPYTERHUB_SERVICE_PREFIX``), checked against the request's user and project (a hub
    with a ``base_url`` puts its own path before it)."""
    prefix = request.env.get("JUPYTERHUB_SERVICE_PREFIX") or f"/user/{request.user}/{project.slug}/"
    own = f"/user/{quote(request.user, safe='@~')}/{project.slug}/"
    if not _PREFIX.fullmatch(prefix) or not prefix.endswith(own):
        raise Refused(
            400,
            f"JUPYTERHUB_SERVICE_PREFIX must be the server's own path, ending in {own}.",
        )
    return prefix


def loopback_service_url(project: Project, request: BrokerRequest) -> str:
    """Where a desktop project's server listens: ``http://127.0.0.1:8888<prefix>``.

    ``jupyterhub-singleuser`` binds to the host of ``JUPYTERHUB_SERVICE_URL``; on loopback,
    nothing on the project network (the hub's proxy, other members' servers) can connect to
    it, only its desktop, which shares its network namespace.
    """
    given = request.env.get("JUPYTERHUB_SERVICE_URL", "")
    path = urlsplit(given).path if given else ""
    return f"http://127.0.0.1:{SERVER_PORT}{path or server_prefix(project, request)}"


def desktop_spec(
    enclave: EnclaveConfig, request: BrokerRequest, *, notebook: str = ""
) -> ContainerSpec:
    """The remote desktop of ``request.user``'s server in an ``access: desktop`` project.

    It joins the network namespace of the notebook container ``notebook`` (default: the
    server's container name), so it has no interface of its own and exactly the notebook's
    exits; it mounts nothing; it runs as :data:`DESKTOP_UID` with the base hardening, Havre's
    desktop seccomp profile (``havre/enclave/seccomp/desktop.json``: the notebook profile plus
    what the desktop was measured to need, today nothing) and the project's
    ``desktop_limits`` (memory and swap, CPU, processes). Its only secret is the server's
    API token (``JUPYTERHUB_API_TOKEN`` from the hub), which its loopback proxy adds to
    Chromium's requests. See docs/architecture.md, "Access
    tiers".

    Inbound paste (``desktop_paste``, ``HAVRE_DESKTOP_PASTE``): ``none`` or ``inbound-text``;
    the desktop's RFB relay forwards a paste only under the latter, text only, and writes an
    audit line naming ``HAVRE_DESKTOP_USER`` and ``HAVRE_DESKTOP_PROJECT`` for each
    (images/desktop/rfb_relay.py). Nothing is ever copied out, whatever the setting.

    Idle culling (``culling.idle_seconds``, ``HAVRE_DESKTOP_IDLE_SECONDS``): the desktop's
    own Chromium keeps the server's API busy, so the server's activity never ages; the
    desktop counts only the researcher's keyboard and mouse (VNC input, Xvnc's
    ``MaxIdleTime``) and stops after that long without any, which stops the pair.
    """
    project = enclave.project(request.project)
    if not project.desktop:
        raise Refused(
            409,
            f"Project {project.slug!r} is a browser-tier project (access: browser): it has "
            "no remote desktop.",
        )
    token = request.env.get("JUPYTERHUB_API_TOKEN", "")
    if not _TOKEN.fullmatch(token):
        raise Refused(
            400,
            "A desktop needs the server's API token (JUPYTERHUB_API_TOKEN) from the hub.",
        )
    notebook = notebook or enclave.container_name(project.slug, request.user)
    limits = project.desktop_limits
    host = {
        **container_hardening(
            tmp_size=DESKTOP_TMP,
            pids=limits.pids,
            shared_tmp=True,
            havre_seccomp=True,
            seccomp_profile="desktop",
        ),
        "mem_limit": limits.memory_bytes,
        "memswap_limit": limits.memory_bytes,
        "cpu_period": 100_000,
        "cpu_quota": int(limits.cpu * 100_000),
        "ipc_mode": "private",
        "network_mode": f"container:{notebook}",
    }
    return ContainerSpec(
        name=enclave.desktop_container_name(project.slug, request.user),
        image=enclave.desktop_image,
        command=None,  # the image's own (havre-desktop)
        user=f"{DESKTOP_UID}:{DESKTOP_UID}",
        working_dir="/tmp",
        hostname="",  # a container joining another's network namespace has its hostname
        environment={
            "HAVRE_SERVER_PREFIX": server_prefix(project, request),
            "HAVRE_NOTEBOOK_TOKEN": token,
            "HAVRE_DESKTOP_IDLE_SECONDS": str(enclave.culling.idle_seconds),
            "HAVRE_DESKTOP_PASTE": project.desktop_paste,
            "HAVRE_DESKTOP_USER": request.user,
            "HAVRE_DESKTOP_PROJECT": project.slug,
        },
        labels={
            "havre.enclave": enclave.name,
            "havre.project": project.slug,
            "havre.user": request.user,
            ROLE_LABEL: "desktop",
            DESKTOP_OF_LABEL: notebook,
            BROKER_LABEL: "1",
        },
        mounts=(),
        host_config=host,
        network=f"container:{notebook}",
    )


def server_service_spec(
    enclave: EnclaveConfig,
    request: BrokerRequest,
    *,
    dns: str = "",
    identity: tuple[int, int] = (NOTEBOOK_UID, NOTEBOOK_GID),
) -> dict[str, Any]:
    """The notebook server of ``request`` as a Swarm service (cluster mode): the same
    container as :func:`server_spec` (image, user, environment, labels, mounts), hardened by
    :func:`havre.enclave.hardening.swarm_task_hardening`, one replica that is never restarted,
    on the project's overlay, placed by Swarm on a worker carrying the project's data label.

    Returns the keyword arguments of docker-py's ``APIClient.create_service``.
    """
    cluster = enclave.cluster
    if cluster is None:
        raise Refused(500, "This enclave runs on one host: no Swarm service to make.")
    spec = server_spec(enclave, request, dns=dns, identity=identity)
    project = enclave.project(request.project)
    task = swarm_task_hardening(project, dns=dns)
    container = task["ContainerSpec"]
    container.update(
        {
            "Image": spec.image,
            "User": spec.user,
            "Dir": spec.working_dir,
            "Hostname": spec.hostname,
            "Env": [f"{k}={v}" for k, v in spec.environment.items()],
            "Labels": dict(spec.labels),
            "StopGracePeriod": STOP_GRACE_NS,
        }
    )
    container["Mounts"] = [
        {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
        for m in spec.mounts
    ] + container["Mounts"]
    task.update(
        {
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": cluster.constraints(project.slug)},
            "Networks": [{"Target": spec.network}],
        }
    )
    return {
        "task_template": task,
        "name": spec.name,
        "labels": dict(spec.labels),
        "mode": {"Replicated": {"Replicas": 1}},
        # no virtual IP and no load balancer: the hub reaches the one task by its address
        "endpoint_spec": {"Mode": "dnsrr"},
    }


def papermill_command() -> tuple[str, ...]:
    """What a re-execution container runs (an argument list, no shell)."""
    return (
        "papermill",
        "input.ipynb",
        "executed.ipynb",
        "-f",
        "params.yaml",
        "--cwd",
        HOME,
        "--kernel",
        "python3",
        "--language",
        "python",
        "--no-progress-bar",
    )


def reexec_scratch(enclave: EnclaveConfig, run_id: str) -> Path:
    """The scratch folder of run ``run_id``: ``<state_dir>/reexec/work/reexec-<run_id>``."""
    if not _RUN_ID.fullmatch(run_id):
        raise Refused(400, "A re-execution run id is 16 lowercase hexadecimal digits.")
    return Path(enclave.state_dir) / REEXEC_JOBS / "work" / f"reexec-{run_id}"


def reexec_container_name(enclave: EnclaveConfig, slug: str, run_id: str) -> str:
    return f"{enclave.name}-reexec-{slug}-{run_id}"


def reexec_spec(
    enclave: EnclaveConfig, request: BrokerRequest, *, project_gid: int | None = None
) -> ContainerSpec:
    """The trusted re-execution container of run ``request.run_id`` (no network at all).

    The runner prepared the scratch folder (notebook, parameters, SDC parameters) under the
    jobs folder; everything else comes from the enclave config, as for a notebook server.
    ``project_gid``: the project's group (:mod:`havre.enclave.identities`), which the run joins to
    read ``/data`` as the project's servers do.
    """
    project = enclave.project(request.project)
    scratch = reexec_scratch(enclave, request.run_id)
    host = hardened_host_config(project, network="none")
    if project_gid and project_gid != NOTEBOOK_GID:
        host["group_add"] = [str(project_gid)]
    host["log_config"] = {"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}}
    return ContainerSpec(
        name=reexec_container_name(enclave, project.slug, request.run_id),
        image=project.image,
        command=papermill_command(),
        user=f"{NOTEBOOK_UID}:{NOTEBOOK_GID}",
        working_dir=HOME,
        hostname=project.slug,
        environment={
            "HOME": HOME,
            "HAVRE_PROJECT": project.slug,
            "HAVRE_PROJECT_TITLE": project.title,
            "HAVRE_OUTPUTS_DIR": OUTPUTS,
            "HAVRE_DATA_DIR": DATA,
            "HAVRE_TRUSTED_REEXECUTION": "1",
            "HAVRE_SDC_PARAMS": f"{HOME}/{REEXEC_SDC_PARAMS}",
        },
        labels={
            "havre.enclave": enclave.name,
            "havre.project": project.slug,
            ROLE_LABEL: "reexecution",
            RUN_LABEL: request.run_id,
            BROKER_LABEL: "1",
        },
        mounts=(
            Mount(str(project.data_path), DATA, True),
            Mount(str(scratch), HOME, False),
            # over the file in HOME: the notebook (which owns HOME) can't rewrite it
            Mount(str(scratch / REEXEC_SDC_PARAMS), f"{HOME}/{REEXEC_SDC_PARAMS}", True),
        ),
        host_config=host,
        network="none",
    )


# ------------------------------------------------------------------------------ checking


def container_problems(
    enclave: EnclaveConfig,
    attrs: Mapping[str, Any],
    image_ids: Mapping[str, str] | None = None,
    container_ids: Mapping[str, str] | None = None,
) -> list[str]:
    """What is outside the policy in a container's ``docker inspect`` (empty: nothing).

    ``image_ids`` maps image names to their ids (a re-execution runs the resolved id);
    ``container_ids`` maps container names to ids (the engine names a desktop's network mode
    ``container:<id>``). Used by the broker's tests to check every container the engine has
    after a fuzz.
    """
    problems: list[str] = []
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    labels = config.get("Labels") or {}
    name = str(attrs.get("Name", "")).lstrip("/")
    slug = labels.get("havre.project", "")
    if labels.get("havre.enclave") != enclave.name or slug not in enclave.projects:
        return [f"{name}: not labelled with this enclave and one of its projects"]
    project = enclave.projects[slug]
    role = labels.get(ROLE_LABEL)
    if role == "desktop":
        return _desktop_problems(enclave, attrs, container_ids or {})
    if role not in ("notebook", "reexecution"):
        problems.append(f"{name}: role {role!r}")
    if config.get("Image") not in {project.image, (image_ids or {}).get(project.image)}:
        problems.append(f"{name}: image {config.get('Image')!r} is not the project's")
    if str(config.get("User", "")).split(":")[0] in ("", "0", "root"):
        problems.append(f"{name}: runs as root")
    if host.get("Privileged") or host.get("CapAdd"):
        problems.append(f"{name}: privileged or added capabilities")
    if [c.upper() for c in host.get("CapDrop") or []] not in (["ALL"], ["CAP_ALL"]):
        problems.append(f"{name}: capabilities not all dropped")
    security = host.get("SecurityOpt") or []
    if "no-new-privileges:true" not in security or not any(
        s.startswith("seccomp=") and "unconfined" not in s for s in security
    ):
        problems.append(f"{name}: no-new-privileges or Havre's seccomp profile missing")
    if not host.get("ReadonlyRootfs"):
        problems.append(f"{name}: writable root filesystem")
    expected_net = enclave.network_name(slug) if role == "notebook" else "none"
    if host.get("NetworkMode") != expected_net:
        problems.append(f"{name}: network {host.get('NetworkMode')!r}, not {expected_net!r}")
    allowed_sources = {str(project.data_path)}
    if role == "notebook":
        user = labels.get("havre.user", "")
        allowed_sources |= {
            str(enclave.home_dir(slug, user)) if _USERNAME.fullmatch(user) else "",
            str(enclave.outputs_dir(slug)),
        }
    else:
        scratch = reexec_scratch(enclave, labels.get(RUN_LABEL, "0" * 16))
        allowed_sources |= {str(scratch), str(scratch / REEXEC_SDC_PARAMS)}
    for mount in attrs.get("Mounts") or []:
        if mount.get("Type") == "tmpfs":
            continue
        if str(mount.get("Source")) not in allowed_sources:
            problems.append(f"{name}: mounts {mount.get('Source')!r}")
        if str(mount.get("Source")) == str(project.data_path) and mount.get("RW"):
            problems.append(f"{name}: project data mounted writable")
    if "/var/run/docker.sock" in str(attrs.get("Mounts")):
        problems.append(f"{name}: has the Docker socket")
    return problems


def _desktop_problems(
    enclave: EnclaveConfig, attrs: Mapping[str, Any], container_ids: Mapping[str, str]
) -> list[str]:
    """:func:`container_problems` for a desktop: a desktop project's, in its own notebook's
    network namespace, the desktop image, no mounts, the base hardening."""
    problems: list[str] = []
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    labels = config.get("Labels") or {}
    name = str(attrs.get("Name", "")).lstrip("/")
    slug = labels["havre.project"]
    user = labels.get("havre.user", "")
    if not enclave.projects[slug].desktop:
        problems.append(f"{name}: a desktop in browser-tier project {slug!r}")
    if not _USERNAME.fullmatch(user):
        return [*problems, f"{name}: no valid havre.user label"]
    notebook = enclave.container_name(slug, user)
    if name != enclave.desktop_container_name(slug, user):
        problems.append(f"{name}: not the name of {user}'s desktop in {slug!r}")
    if config.get("Image") != enclave.desktop_image:
        problems.append(f"{name}: image {config.get('Image')!r} is not the desktop image")
    if str(config.get("User", "")).split(":")[0] in ("", "0", "root"):
        problems.append(f"{name}: runs as root")
    if host.get("Privileged") or host.get("CapAdd"):
        problems.append(f"{name}: privileged or added capabilities")
    if [c.upper() for c in host.get("CapDrop") or []] not in (["ALL"], ["CAP_ALL"]):
        problems.append(f"{name}: capabilities not all dropped")
    security = host.get("SecurityOpt") or []
    if "no-new-privileges:true" not in security or any("unconfined" in s for s in security):
        problems.append(f"{name}: no-new-privileges missing or a profile unconfined")
    if seccomp_security_opt("desktop") not in security:
        problems.append(f"{name}: Havre's desktop seccomp profile missing")
    if not host.get("ReadonlyRootfs"):
        problems.append(f"{name}: writable root filesystem")
    mode = str(host.get("NetworkMode", ""))
    if mode not in {f"container:{notebook}", f"container:{container_ids.get(notebook, '-')}"}:
        problems.append(f"{name}: network {mode!r}, not its notebook's ({notebook})")
    if labels.get(DESKTOP_OF_LABEL) != notebook:
        problems.append(f"{name}: label {DESKTOP_OF_LABEL} is not {notebook}")
    for mount in attrs.get("Mounts") or []:
        if mount.get("Type") != "tmpfs":
            problems.append(f"{name}: mounts {mount.get('Source')!r} (a desktop mounts nothing)")
    env = dict(str(item).partition("=")[::2] for item in config.get("Env") or [])
    paste = env.get("HAVRE_DESKTOP_PASTE", DESKTOP_PASTE_NONE)
    if paste != DESKTOP_PASTE_NONE and paste != enclave.projects[slug].desktop_paste:
        problems.append(f"{name}: inbound paste {paste!r}, the project allows none")
    return problems


__all__ = [
    "ACTIONS",
    "CALLERS",
    "CALLER_ACTIONS",
    "BrokerRequest",
    "ContainerSpec",
    "Mount",
    "Refused",
    "check_request",
    "container_problems",
    "desktop_spec",
    "hardened_host_config",
    "pinned_jupyter_env",
    "project_hub_group",
    "reexec_spec",
    "server_spec",
]
