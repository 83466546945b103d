"""ProjectSpawner: one hardened notebook container per user and project.

A JupyterHub *named server* is a project: ``/user/<name>/<project-slug>/``. The spawner

* refuses, before anything is created, a server for a project the user is not a member of
  (fail closed: an unknown project, an empty server name, an unreadable config all refuse);
* puts the container on the project's own ``internal`` Docker network (made on demand, with no
  address for the host on it) and attaches the hub and the egress service to that network;
* hardens the container (no capabilities, no-new-privileges, read-only root filesystem, non-root
  user, pids/memory/CPU limits, no IPv6, no ICMP sockets, DNS that answers only local names);
* mounts the project's data read-only at ``/data``, a persistent home per user and project, and
  the project's ``outputs`` folder (the only path toward release).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub.spawner import SpawnException
from traitlets import Dict, Int, List, Unicode, default

from spawner.config_reload import live_config
from spawner.download_guard import ensure_guard
from spawner.enclave import EnclaveConfig, EnclaveConfigError, Project
from spawner.identities import (
    LEGACY_UID,
    Identity,
    apply_rule,
    home_plan,
    locked_table,
    migrate_tree,
    project_plan,
    table_path,
)
from spawner.networks import project_network_is_closed, project_network_options

_network_locks: dict[str, asyncio.Lock] = {}


class ProjectSpawner(DockerSpawner):
    """Spawn a hardened per-project notebook container (a DockerSpawner)."""

    enclave_config_path = Unicode(
        os.environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"),
        config=True,
        help="""Path of the enclave config file (projects, members, images, limits).

        Read when the hub starts (the hub refuses to start when it is invalid), and again
        whenever the file changes: project and member changes apply without a restart.
        """,
    )

    attach_containers = List(
        Unicode(),
        config=True,
        help="""Names of the containers to attach to every project network.

        The hub (with its proxy) and the egress service: a notebook container reaches them
        by name on its project network, and reaches nothing else.
        """,
    )

    dns_sink = Unicode(
        "",
        config=True,
        help="""Upstream DNS server given to notebook containers ("": the project network's
        gateway address, which nothing has, since the network is made with no host address).

        Docker's embedded resolver still answers the names of containers on the project
        network (the hub, the egress service), but forwards every other name to this
        address, from the container's own network namespace, where nothing answers. This
        closes the outside-name lookup channel, including CVE-2024-29018 (Docker Engine
        before 26.0.2 forwards lookups of internal-network containers from the host's
        namespace when the host resolver is on a loopback address).
        """,
    )

    notebook_uid = Int(
        LEGACY_UID,
        config=True,
        help="""The uid every notebook server ran as before per-server identities.

        Servers now run as a uid of their own (spawner/identities.py); a home still owned by
        this uid is given to the server's uid at its next start.
        """,
    )

    notebook_gid = Int(
        LEGACY_UID,
        config=True,
        help="The gid every notebook server ran as before per-server identities.",
    )

    identity_table_reader_gid = Int(
        1001,
        config=True,
        help="""Group that may read the identity table (uid -> user), besides root.

        The egress service's gid: it names the owner of each file in a release request.
        """,
    )

    home_mount_point = Unicode(
        "/home/researcher",
        config=True,
        help="Where the user's persistent per-project home is mounted in the container.",
    )

    data_mount_point = Unicode(
        "/data",
        config=True,
        help="Where the project's data is mounted, read-only, in the container.",
    )

    tmp_size = Unicode(
        "512m",
        config=True,
        help="Size of the tmpfs mounted at /tmp (the root filesystem is read-only).",
    )

    membership_check_interval = Int(
        60,
        config=True,
        help="""Seconds between checks that a running server's user is still in its project.

        At each check the user's groups are refreshed from the identity provider (with the
        refresh token kept in the hub's encrypted auth state); a user no longer in the
        project, or whose sign-in was revoked, has the server stopped. A user therefore
        loses access within this interval plus the hub's poll interval (30 s).
        0 turns the check off.
        """,
    )

    extra_sysctls = Dict(
        config=True,
        help="Extra namespaced sysctls for notebook containers, merged over Havre's.",
    )

    download_guard_address = Unicode(
        "127.0.0.1",
        config=True,
        help="""Address the download guard listens on, in the hub's own container.

        The guard (spawner/download_guard.py) sits between the proxy and every notebook
        server: it refuses the routes that hand raw files to a browser and forwards the
        rest. Keep it on loopback: the proxy shares the hub container, notebook containers
        and browsers must not reach it.
        """,
    )

    download_guard_port = Int(
        8082,
        config=True,
        help="Port of the download guard on download_guard_address.",
    )

    @default("remove")
    def _default_remove(self) -> bool:
        return True

    @default("pull_policy")
    def _default_pull_policy(self) -> str:
        return "never"

    @default("use_internal_ip")
    def _default_use_internal_ip(self) -> bool:
        return True

    @default("name_template")
    def _default_name_template(self) -> str:
        # Escaped username + project; "--" never occurs in an escaped name.
        return "{prefix}-nb-{username}--{servername}"

    # ------------------------------------------------------------------ config

    @property
    def enclave(self) -> EnclaveConfig:
        """The enclave config (re-read when its file changes: projects and members apply live)."""
        return _load_cached(self.enclave_config_path)

    def authorize_project(self) -> Project:
        """The project this server is for, if the user may start it; else refuse.

        Every refusal is a :class:`SpawnException` raised before any Docker object exists.
        """
        slug = self.name
        if not slug:
            raise SpawnException(
                "Choose a project: Havre servers are per project (/user/<name>/<project>/).",
                reason="no-project",
                status_code=400,
            )
        try:
            enclave = self.enclave
        except EnclaveConfigError as err:  # fail closed on an unreadable config
            self.log.error("Refusing spawn: %s", err)
            raise SpawnException(
                "The enclave configuration can't be read; ask the administrator.",
                reason="config",
                status_code=503,
            ) from None
        if slug not in enclave.projects or not self.user_is_member(slug):
            # Same answer for "no such project" and "not a member": don't reveal projects.
            self.forget_refused_server()
            raise SpawnException(
                f"{self.user.name} is not a member of project {slug!r}.",
                reason="not-member",
                status_code=403,
            )
        project = enclave.project(slug)
        if project.image not in enclave.allowed_images:
            raise SpawnException(
                f"Image {project.image!r} of project {slug!r} is not on the allow-list.",
                reason="image",
                status_code=403,
            )
        return project

    def hub_group_names(self) -> list[str]:
        """The user's hub groups (Havre's, mapped from the identity provider's groups)."""
        return [group.name for group in getattr(self.user, "groups", None) or []]

    def user_is_member(self, slug: str) -> bool:
        """Whether the user belongs to project ``slug``: listed, or through a group."""
        return self.enclave.is_member(self.user.name, slug, self.hub_group_names())

    async def refresh_groups(self) -> bool:
        """Refresh the user's groups from the identity provider; False if sign-in is gone."""
        authenticator = self.authenticator
        if authenticator is None or not getattr(authenticator, "enable_auth_state", False):
            return True
        result = await authenticator.refresh_user(self.user, None)
        if result is False:
            return False
        if isinstance(result, dict):
            if result.get("auth_state") is not None:
                await self.user.save_auth_state(result["auth_state"])
            if getattr(authenticator, "manage_groups", False) and "groups" in result:
                self.user.sync_groups(result["groups"])
        return True

    async def provider_reachable(self) -> bool:
        """Whether the identity provider answers (see :mod:`spawner.authenticator`)."""
        answers = getattr(self.authenticator, "provider_answers", None)
        return True if answers is None else await answers()

    async def poll(self) -> int | None:
        """Docker's answer, and a stop when the user has left the project (see help)."""
        status = await super().poll()
        if status is not None or not self.membership_check_interval or not self.name:
            return status
        now = time.monotonic()
        last = getattr(self, "_membership_checked_at", None) or 0.0
        if now - last < self.membership_check_interval:
            return None
        self._membership_checked_at = now
        signed_in: bool | None
        try:
            signed_in = await self.refresh_groups()
        except Exception as err:  # the provider's name doesn't resolve, a TLS error...
            self.log.warning("Group refresh for %s failed: %s", self.user.name, err)
            signed_in = None
        if signed_in and self.user_is_member(self.name):
            return None
        if not signed_in and not await self.provider_reachable():
            # Down or restarting: keep running servers (their users did nothing wrong); new
            # spawns are refused meanwhile, since the hub refreshes the sign-in before each.
            self.log.error(
                "Identity provider unreachable: keeping %s's server for %s running; "
                "new servers are refused until it answers",
                self.user.name,
                self.name,
            )
            return None
        if signed_in is None:  # the provider answers, the refresh broke: don't guess, keep
            self.log.error("Group refresh for %s failed; keeping the server", self.user.name)
            return None
        why = "is no longer in project" if signed_in else "has lost their sign-in for"
        self.log.warning("Stopping %s's server: %s %s", self.user.name, why, self.name)
        return 0

    def forget_refused_server(self) -> None:
        """Delete the hub's record of a refused named server once the refusal is handled.

        JupyterHub stores a named server before it is started; without this, every refused
        attempt would leave a record behind, cluttering the user's home page and counting
        towards the named-server limit.
        """
        user, name = self.user, self.name
        db = getattr(user, "db", None)
        if db is None or not name:
            return

        async def forget() -> None:
            for _ in range(100):  # bounded: 10 s
                await asyncio.sleep(0.1)
                spawner = user.spawners.get(name)
                if spawner is None or not (spawner.active or spawner.pending):
                    break
            orm_spawner = user.orm_user.orm_spawners.get(name)
            if orm_spawner is not None and not (self.active or self.pending):
                db.delete(orm_spawner)
                user.spawners.pop(name, None)
                db.commit()
                self.log.info("Forgot refused server %s/%s", user.name, name)

        asyncio.ensure_future(forget())

    # ------------------------------------------------------------------ docker

    async def ensure_project_network(self, project: Project) -> str:
        """Create the project's internal network if needed and attach the hub and egress."""
        name = self.enclave.network_name(project.slug)
        lock = _network_locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                attrs = await self.docker("inspect_network", name)
            except docker.errors.NotFound:
                self.log.info("Creating internal network %s", name)
                await self.docker(
                    "create_network",
                    name,
                    driver="bridge",
                    internal=True,
                    enable_ipv6=False,
                    check_duplicate=True,
                    options=project_network_options(name),
                    labels={
                        "havre.enclave": self.enclave.name,
                        "havre.project": project.slug,
                    },
                )
                attrs = await self.docker("inspect_network", name)
            if not project_network_is_closed(attrs):
                raise SpawnException(
                    f"Network {name} exists but is not an internal network with no host "
                    "address; refusing to start on it. Remove it and try again.",
                    reason="network",
                    status_code=500,
                )
            connected = {c.get("Name") for c in (attrs.get("Containers") or {}).values()}
            for container in self.attach_containers:
                if container not in connected:
                    try:
                        await self.docker("connect_container_to_network", container, name)
                    except docker.errors.APIError as err:
                        if "already exists" not in str(err):
                            raise
        return name

    def server_identity(self, project: Project) -> Identity:
        """The uid and project gid this (user, project) server runs as (spawner/identities.py).

        Allocated on the first start and kept in ``<state_dir>/identities/table.json``; the
        range was checked against the host's accounts by ``havre up`` (``prepare_state``).
        """
        enclave = self.enclave
        with locked_table(
            table_path(enclave.state_dir),
            base=enclave.uid_base,
            size=enclave.uid_count,
            reader_gid=self.identity_table_reader_gid,
        ) as table:
            return table.identity(self.user.name, project.slug)

    def prepare_folders(self, project: Project) -> tuple[Path, Path]:
        """Create the user's home and the project's outputs folder (kept across stops), owned
        as :func:`spawner.identities.project_plan` and :func:`~spawner.identities.home_plan`
        say; a home made by the legacy uid 1000 is given to the server's own uid."""
        ident = self.server_identity(project)
        self.identity = ident
        home = self.enclave.home_dir(project.slug, self.user.name)
        outputs = self.enclave.outputs_dir(project.slug)
        project_dir = self.enclave.project_dir(project.slug)
        for rule in project_plan(project_dir, project.data_path, ident.gid):
            if rule.files_mode is None:  # the data tree is set by havre up, not per spawn
                apply_rule(rule)
        if home.is_dir() and os.lstat(home).st_uid == self.notebook_uid != ident.uid:
            moved = migrate_tree(home, self.notebook_uid, ident)
            self.log.info("Gave %s entries of %s to uid %s", moved, home, ident.uid)
        for rule in home_plan(home, ident):
            apply_rule(rule)
        return home, outputs

    def hardened_host_config(self, project: Project, dns: str | None = None) -> dict[str, Any]:
        """The docker-py HostConfig arguments every notebook container gets."""
        from spawner.seccomp import security_opt as seccomp_security_opt

        sysctls = {
            "net.ipv6.conf.all.disable_ipv6": "1",
            "net.ipv6.conf.default.disable_ipv6": "1",
            # no unprivileged ICMP sockets (Docker 20.10 allows them to every gid)
            "net.ipv4.ping_group_range": "1 0",
        }
        sysctls.update(self.extra_sysctls)
        return {
            "cap_drop": ["ALL"],
            # Havre's own seccomp allow-list (spawner/seccomp/notebook.json), not Docker's
            "security_opt": ["no-new-privileges:true", seccomp_security_opt()],
            "read_only": True,
            "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={self.tmp_size},mode=1777"},
            "pids_limit": project.limits.pids,
            "memswap_limit": project.limits.memory_bytes,
            "dns": [dns or self.dns_sink or "127.0.0.1"],
            "dns_search": ["."],
            "sysctls": sysctls,
            "ipc_mode": "private",
            "privileged": False,
            "network_mode": self.enclave.network_name(project.slug),
        }

    async def check_image_present(self, image: str) -> None:
        """Refuse with a clear message when the project's image isn't on this host."""
        try:
            await self.docker("inspect_image", image)
        except docker.errors.ImageNotFound:
            raise SpawnException(
                f"Image {image} is not on this host (Havre never pulls at spawn time); "
                "ask the administrator to build or load it.",
                reason="image-missing",
                status_code=503,
            ) from None

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        project = self.enclave.project(self.name)
        env.update(
            {
                "HAVRE_PROJECT": project.slug,
                "HAVRE_PROJECT_TITLE": project.title,
                "HAVRE_OUTPUTS_DIR": f"{self.home_mount_point}/outputs",
                "HAVRE_DATA_DIR": self.data_mount_point,
                "HOME": self.home_mount_point,
            }
        )
        env.update(pinned_jupyter_env(self.home_mount_point))
        return env

    # ------------------------------------------------------------------ progress, guard

    def report(self, percent: int, message: str) -> None:
        """One progress message for the spawn page (see :meth:`progress`)."""
        self._progress_events = [*getattr(self, "_progress_events", []), (percent, message)]

    async def progress(self) -> Any:
        """The spawn's progress messages, as the hub's spawn page shows them."""
        seen = 0
        while True:
            events = getattr(self, "_progress_events", [])
            for percent, message in events[seen:]:
                yield {"progress": percent, "message": message}
            seen = len(events)
            await asyncio.sleep(0.1)

    def guard_prefix(self) -> str | None:
        server = self.server
        return server.base_url if server is not None else None

    def guard_server(self, target: str) -> str:
        """Register the server's real address with the download guard; return the guard's."""
        guard = ensure_guard(self.download_guard_address, self.download_guard_port)
        prefix = self.guard_prefix()
        if prefix is None:
            raise SpawnException("The hub has no record of this server.", status_code=500)
        guard.routes.register(prefix, target)
        self.guard_target = target
        return guard.url

    def unguard_server(self) -> None:
        prefix = self.guard_prefix()
        guard = ensure_guard(self.download_guard_address, self.download_guard_port)
        if prefix is not None:
            guard.routes.unregister(prefix)
        self.guard_target = ""

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if getattr(self, "guard_target", ""):
            state["guard_target"] = self.guard_target
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        target = state.get("guard_target") if state else None
        if target and self.guard_prefix() is not None:
            # the hub restarted with this server running: its route points at the guard
            self.guard_server(target)

    async def stop(self, now: bool = False) -> None:
        if getattr(self, "guard_target", ""):
            self.unguard_server()
        await super().stop(now=now)

    async def start(self) -> str:
        self._progress_events = []
        self.report(5, f"Checking that you are a member of project {self.name!r}")
        project = self.authorize_project()
        await self.check_image_present(project.image)
        self.image = project.image
        self.report(20, "Preparing the project's closed network")
        self.network_name = await self.ensure_project_network(project)
        network = await self.docker("inspect_network", self.network_name)
        gateway = (network.get("IPAM", {}).get("Config") or [{}])[0].get("Gateway", "")
        home, outputs = await asyncio.get_running_loop().run_in_executor(
            None, self.prepare_folders, project
        )
        self.volumes = {
            str(home): {"bind": self.home_mount_point, "mode": "rw"},
            str(outputs): {"bind": f"{self.home_mount_point}/outputs", "mode": "rw"},
            str(project.data_path): {"bind": self.data_mount_point, "mode": "ro"},
        }
        self.mem_limit = project.limits.memory_bytes
        self.cpu_limit = project.limits.cpu
        self.extra_host_config = self.hardened_host_config(project, dns=gateway)
        self.extra_create_kwargs = {
            "user": f"{self.identity.uid}:{self.identity.gid}",
            "working_dir": self.home_mount_point,
            "hostname": project.slug,
            "labels": {
                "havre.enclave": self.enclave.name,
                "havre.project": project.slug,
                "havre.user": self.user.name,
                "havre.uid": str(self.identity.uid),
            },
        }
        self.log.info(
            "Starting %s for project %s on %s (membership checked every %s s, polled every %s s)",
            self.user.name,
            project.slug,
            self.network_name,
            self.membership_check_interval,
            self.poll_interval,
        )
        self._membership_checked_at = time.monotonic()
        self.report(40, "Starting your hardened container (no network out, data read-only)")
        ip, port = await super().start()
        self.report(70, "Waiting for JupyterLab, which opens behind Havre's download guard")
        await self.wait_listening(ip, port)
        return self.guard_server(f"http://{ip}:{port}")

    async def wait_listening(self, ip: str, port: int) -> None:
        """Return as soon as the server accepts connections (checked every 25 ms).

        The hub then checks the server over HTTP with a randomised back-off (a first wait of
        up to 0.2 s, doubling), so a server that comes up between two of its checks waits for
        the next one (a third of a second, typically, measured in benchmarks/). Waiting here,
        finely, saves that time; the hub's own check still decides when the server is ready.
        """
        deadline = time.monotonic() + self.http_timeout
        while time.monotonic() < deadline:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(ip, port), timeout=1
                )
            except (OSError, TimeoutError):
                await asyncio.sleep(0.025)
                continue
            writer.close()
            return


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


def _load_cached(path: str) -> EnclaveConfig:
    """The config as its file says now: re-read when the file changed (a project or member
    change applies without restarting the hub; see spawner/config_reload.py)."""
    return live_config(path).current()
