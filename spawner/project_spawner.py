"""ProjectSpawner: one hardened notebook container per user and project, through the broker.

A JupyterHub *named server* is a project: ``/user/<name>/<project-slug>/``. The spawner

* refuses, before anything is asked of the broker, a server for a project the user is not a
  member of (fail closed: an unknown project, an empty server name, an unreadable config all
  refuse);
* asks the **spawn broker** (:mod:`havre.broker`, the only holder of the Docker socket) to
  start, stop and inspect the server; the broker re-checks membership and builds the whole
  container itself from the enclave config: the project's own ``internal`` network (made on
  demand, with no address for the host on it, the hub and the egress service attached), the
  hardening (no capabilities, no-new-privileges, Havre's seccomp profile, read-only root
  filesystem, the server's own uid, pids/memory/CPU limits, no IPv6, no ICMP sockets, DNS that
  answers only local names) and the mounts (the project's data read-only at ``/data``, a
  persistent home per user and project, the project's ``outputs`` folder). The hub sends only
  who and which project, the user's hub groups and JupyterHub's own environment variables;
* puts Havre's download guard (in this process) in front of the server.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jupyterhub.spawner import Spawner, SpawnException
from traitlets import Int, Unicode, default

from havre.broker.client import BrokerClient, BrokerError
from havre.broker.policy import SERVER_PORT, hardened_host_config
from havre.broker.policy import pinned_jupyter_env as pinned_jupyter_env
from havre.enclave.config import EnclaveConfig, EnclaveConfigError, Project
from havre.enclave.live import live_config
from havre.enclave.logs import security_event
from spawner.download_guard import ensure_guard

#: The threads the hub's broker calls run on (the client blocks: one call, one thread). Not
#: asyncio's default executor, which has ``cpu_count() + 4`` threads (6 on a 2-core hub) shared
#: with everything else the hub runs in threads: ten users pressing Start at once would queue
#: there, four of them behind six others' whole create-and-start. The broker's HTTP server
#: takes every call on a thread of its own; a call mostly waits on the Docker engine.
BROKER_THREADS = 64
_broker_pool = ThreadPoolExecutor(BROKER_THREADS, thread_name_prefix="havre-broker-call")


async def _in_broker_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a blocking broker call on :data:`_broker_pool`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_broker_pool, functools.partial(function, *args, **kwargs))


class ProjectSpawner(Spawner):
    """Spawn a hardened per-project notebook container through the spawn broker."""

    enclave_config_path = Unicode(
        os.environ.get("HAVRE_CONFIG", "/etc/havre/enclave.yaml"),
        config=True,
        help="""Path of the enclave config file (projects, members, images, limits).

        Read when the hub starts (the hub refuses to start when it is invalid), and again
        whenever the file changes: project and member changes apply without a restart.
        """,
    )

    broker_socket = Unicode(
        "/run/havre-broker/broker.sock",
        config=True,
        help="""Unix socket of the spawn broker (havre/broker/), the only holder of the
        Docker socket: the hub asks it to start, stop and inspect servers, and it builds every
        container from the enclave config (the hub passes no container specification).
        """,
    )

    broker_secret_file = Unicode(
        "/run/havre-broker-secret/hub",
        config=True,
        help="""File holding the hub's own broker secret (made by `havre up`, mode 0600).

        The broker lets this secret start, stop and inspect notebook servers only.
        """,
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

    @default("ip")
    def _default_ip(self) -> str:
        return "0.0.0.0"  # inside the container; the hub reaches it on the project network

    @default("port")
    def _default_port(self) -> int:
        return SERVER_PORT

    @default("env_keep")
    def _default_env_keep(self) -> list[str]:
        return []  # nothing of the hub's own environment

    # ------------------------------------------------------------------ config

    @property
    def enclave(self) -> EnclaveConfig:
        """The enclave config (re-read when its file changes: projects and members apply live)."""
        return _load_cached(self.enclave_config_path)

    def authorize_project(self) -> Project:
        """The project this server is for, if the user may start it; else refuse.

        Every refusal is a :class:`SpawnException` raised before any Docker object exists,
        and logged as the security event ``spawn.refused``.
        """
        try:
            return self._authorize_project()
        except SpawnException as refusal:
            self.log_spawn_refused(refusal)
            raise

    def log_spawn_refused(self, refusal: SpawnException) -> None:
        """The security event of a refused start, with its reason and sentence."""
        security_event(
            self.log,
            "spawn.refused",
            "Refused %s's server for %r: %s",
            self.user.name,
            self.name,
            refusal.message,
            user=self.user.name,
            project=self.name or None,
            reason=refusal.reason,
            status=refusal.status_code,
        )

    def _authorize_project(self) -> Project:
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

    async def container_status(self) -> int | None:
        """None while the server's container runs; else its exit code (0 when absent).

        A broker that doesn't answer (restarting) leaves the server running: its users did
        nothing wrong, and the next poll asks again.
        """
        if not self.name:
            return 0
        try:
            answer = await _in_broker_thread(
                self.broker().call, "server.inspect", user=self.user.name, project=self.name
            )
        except BrokerError as err:
            if err.status >= 500:
                self.log.warning("Broker unavailable for %s's poll: %s", self.user.name, err)
                return None
            raise
        if answer.get("state") == "running":
            return None
        code = answer.get("exit_code")
        return int(code) if isinstance(code, int) else 0

    async def poll(self) -> int | None:
        """Docker's answer, and a stop when the user has left the project (see help)."""
        status = await self.container_status()
        if status is not None and self.name:
            await self._remove_what_is_left_of_a_desktop_pair()
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
        try:
            member = self.user_is_member(self.name)
        except Exception as err:  # the published config can't be read: don't guess, keep
            self.log.error(
                "The enclave config can't be read (%s): keeping %s's server for %s running; "
                "new servers are refused until it is fixed",
                err,
                self.user.name,
                self.name,
            )
            return None
        if signed_in and member:
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
        security_event(
            self.log,
            "membership.lost",
            "Stopping %s's server: %s %s",
            self.user.name,
            why,
            self.name,
            user=self.user.name,
            project=self.name,
        )
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

    # ------------------------------------------------------------------ broker

    def broker(self) -> BrokerClient:
        """The hub's client of the spawn broker."""
        return BrokerClient(
            self.broker_socket, secret_file=self.broker_secret_file, timeout=self.start_timeout
        )

    async def broker_call(self, action: str, **fields: Any) -> dict[str, Any]:
        """One broker call from a worker thread; a refusal becomes a SpawnException with
        the broker's sentence."""
        try:
            return await _in_broker_thread(self.broker().call, action, **fields)
        except BrokerError as err:
            raise SpawnException(err.message, reason="broker", status_code=err.status) from None

    def hardened_host_config(self, project: Project, dns: str | None = None) -> dict[str, Any]:
        """The HostConfig arguments the broker gives this project's notebook containers
        (:func:`havre.broker.policy.hardened_host_config`; for inspection and tests)."""
        network = self.enclave.network_name(project.slug)
        return hardened_host_config(project, network=network, dns=dns or "")

    def get_env(self) -> dict[str, str]:
        """JupyterHub's variables for the server (its API token, URLs, OAuth client); the
        broker adds Havre's and the pinned Jupyter paths (:mod:`havre.broker.policy`)."""
        env = super().get_env()
        return {
            k: v
            for k, v in env.items()
            if isinstance(v, str) and (k.startswith("JUPYTERHUB_") or k == "JPY_API_TOKEN")
        }

    # ------------------------------------------------------------------ progress, guard

    def report(self, percent: int, message: str) -> None:
        """One progress message for the spawn page (see :meth:`progress`)."""
        self._progress_events = [*getattr(self, "_progress_events", []), (percent, message)]

    def begin_progress(self) -> None:
        """A new spawn's messages start here (a new generation: see :meth:`progress`)."""
        self._progress_generation = getattr(self, "_progress_generation", 0) + 1
        self._progress_events = []

    async def progress(self) -> Any:
        """The spawn's progress messages, as the hub's spawn page shows them.

        A spawn page opened just after Start may ask before :meth:`start` has begun, while the
        previous spawn's messages are still here; when the new spawn begins, the stream goes on
        from its first message (it used to count from the old list's length, and so showed
        nothing new until the new spawn had sent more messages than the old one: the bar
        stayed at the old 70 %).
        """
        seen, generation = 0, getattr(self, "_progress_generation", 0)
        while True:
            if getattr(self, "_progress_generation", 0) != generation:
                seen, generation = 0, self._progress_generation
            events = getattr(self, "_progress_events", [])
            for percent, message in events[seen:]:
                yield {"progress": percent, "message": message}
            seen = len(events)
            await asyncio.sleep(0.1)

    def guard_prefix(self) -> str | None:
        server = self.server
        return server.base_url if server is not None else None

    def guard_server(self, target: str, *, desktop: bool = False) -> str:
        """Register the server's real address with the download guard; return the guard's.

        ``desktop``: the target is an ``access: desktop`` server's remote desktop, and the
        guard lets only its routes through (pixels only; docs/architecture.md, "Access
        tiers")."""
        guard = ensure_guard(self.download_guard_address, self.download_guard_port)
        prefix = self.guard_prefix()
        if prefix is None:
            raise SpawnException("The hub has no record of this server.", status_code=500)
        guard.routes.register(prefix, target, desktop=desktop)
        self.guard_target = target
        self.guard_desktop = desktop
        return guard.url

    def unguard_server(self) -> None:
        prefix = self.guard_prefix()
        guard = ensure_guard(self.download_guard_address, self.download_guard_port)
        if prefix is not None:
            guard.routes.unregister(prefix)
        self.guard_target = ""
        self.guard_desktop = False

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if getattr(self, "container_id", ""):
            state["container_id"] = self.container_id
        if getattr(self, "guard_target", ""):
            state["guard_target"] = self.guard_target
            if getattr(self, "guard_desktop", False):
                state["guard_desktop"] = True
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.container_id = (state or {}).get("container_id", "")
        target = state.get("guard_target") if state else None
        if target and self.guard_prefix() is not None:
            # the hub restarted with this server running: its route points at the guard
            self.guard_server(target, desktop=bool(state.get("guard_desktop")))

    def clear_state(self) -> None:
        super().clear_state()
        self.container_id = ""

    async def _remove_what_is_left_of_a_desktop_pair(self) -> None:
        """A desktop project's server stops when its desktop does (idle culling: the desktop
        exits after ``culling.idle_seconds`` without keyboard or mouse input), while its
        notebook server still runs. JupyterHub calls :meth:`stop` only for a server its poll
        finds running, so the rest of the pair is removed here (the broker's ``server.stop``
        removes both; a broker that doesn't answer leaves it to the next start)."""
        try:
            desktop = self.enclave.project(self.name).desktop
        except Exception:  # a project gone from the config: nothing of a pair to find
            return
        if not desktop:
            return
        try:
            await self.broker_call("server.stop", user=self.user.name, project=self.name)
        except Exception as err:
            self.log.warning("Removing %s's stopped desktop pair failed: %s", self.user.name, err)

    async def stop(self, now: bool = False) -> None:
        if getattr(self, "guard_target", ""):
            self.unguard_server()
        await self.broker_call("server.stop", user=self.user.name, project=self.name)
        self.clear_state()

    async def start(self) -> str:
        self.begin_progress()
        self.report(5, f"Checking that you are a member of project {self.name!r}")
        project = self.authorize_project()
        self.report(20, "Preparing the project's closed network")
        request = {
            "user": self.user.name,
            "project": project.slug,
            "groups": [g for g in self.hub_group_names() if g in self.enclave.all_hub_groups()],
            "env": self.get_env(),
        }
        self.log.info(
            "Starting %s for project %s through the broker (membership checked every %s s, "
            "polled every %s s)",
            self.user.name,
            project.slug,
            self.membership_check_interval,
            self.poll_interval,
        )
        self._membership_checked_at = time.monotonic()
        self.report(40, "Starting your hardened container (no network out, data read-only)")
        try:
            answer = await _in_broker_thread(self.broker().call, "server.start", **request)
        except BrokerError as err:
            if err.status != 409 or "already has a running server" not in err.message:
                refusal = SpawnException(err.message, reason="broker", status_code=err.status)
                if 400 <= err.status < 500:
                    self.log_spawn_refused(refusal)
                raise refusal from None
            # the hub lost track of a server it started (its database was restored): the
            # user's own, stopped and started again, as DockerSpawner did
            self.log.warning("Replacing %s's untracked server in %s", self.user.name, self.name)
            await self.broker_call("server.stop", user=self.user.name, project=project.slug)
            answer = await self.broker_call("server.start", **request)
        self.container_id = answer.get("id", "")
        ip, port = answer["ip"], int(answer["port"])
        if project.desktop:
            # the broker answered the desktop's port: the proxy reaches the desktop only
            self.report(70, "Waiting for your remote desktop (pixels only: no file reaches you)")
            await self.wait_listening(ip, port)
            return self.guard_server(f"http://{ip}:{port}", desktop=True)
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


def _load_cached(path: str) -> EnclaveConfig:
    """The config as its file says now: re-read when the file changed (a project or member
    change applies without restarting the hub; see havre/enclave/live.py)."""
    return live_config(path).current()
