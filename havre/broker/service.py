"""``havre-broker``: the spawn broker's server (HTTP over a Unix socket).

The only process of an enclave that holds the Docker socket. ``havre up`` starts it as
``<enclave>-broker`` (the hub image, no network at all, read-only root, no capabilities but
those needed to give a new home folder to its owner), before the hub and the runner.

Protocol: ``POST /v1/<action>`` with a JSON object body and ``Authorization: Bearer <secret>``,
where the secret is the caller's own (``<state_dir>/secrets/broker-hub``,
``<state_dir>/secrets/broker-runner``: each mounted into its caller only). The answer is a JSON
object: the result, or ``{"error": "<a sentence>"}`` with a 4xx/5xx status. What each caller may
ask for is :mod:`havre.broker.policy`; every call, refused or not, is one line of the audit log
``<state_dir>/broker/audit.jsonl`` (append-only, never the environment's token).
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import socketserver
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from havre.broker.policy import (
    DESKTOP_PORT,
    RUN_LABEL,
    SERVER_PORT,
    BrokerRequest,
    ContainerSpec,
    Refused,
    check_request,
    desktop_spec,
    reexec_scratch,
    reexec_spec,
    server_service_spec,
    server_spec,
)
from havre.enclave.config import EnclaveConfig, EnclaveConfigError
from havre.enclave.logs import configure as configure_logs
from havre.enclave.logs import security_event
from havre.enclave.networks import (
    project_network_is_closed,
    project_network_spec,
    project_overlay_spec,
)

log = logging.getLogger("havre.broker")

MAX_BODY = 256 * 1024
#: How long a stop waits for the server to exit before killing it.
STOP_SECONDS = 10
#: how long Swarm may take to place and start a server before the broker gives up
PLACEMENT_SECONDS = 60
#: a Swarm task's state, as :meth:`Broker.inspect` names a container's (``docker inspect``)
_TASK_STATES = {
    **dict.fromkeys(
        ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting"), "created"
    ),
    "running": "running",
    **dict.fromkeys(("complete", "shutdown", "failed", "rejected", "orphaned", "remove"), "exited"),
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _PhaseClock:
    """Milliseconds spent in each named phase of one call, in order (``lap`` ends a phase)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = round((now - self._last) * 1000, 1)
        self._last = now


class AuditLog:
    """Append-only JSON lines (one ``write`` per line, ``O_APPEND``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)

    def write(self, event: Mapping[str, Any]) -> None:
        line = json.dumps({"time": _now(), **event}, sort_keys=True) + "\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


class Broker:
    """The broker's decisions and Docker calls (the HTTP layer is :class:`_Handler`)."""

    def __init__(
        self,
        config: Any,
        secrets: Mapping[str, str],
        audit: AuditLog,
        client: Any,
        *,
        attach_containers: Sequence[str] = (),
        identity_reader_gid: int = 1001,
    ) -> None:
        #: the live enclave config (``havre.enclave.live.LiveConfig``) or a fixed one
        self._config = config
        self.secrets = {caller: s for caller, s in secrets.items() if s}
        self.audit = audit
        self.client = client  # docker.APIClient
        self.attach_containers = list(attach_containers)
        #: the group that may read the identity table besides root (the egress service's)
        self.identity_reader_gid = identity_reader_gid
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @property
    def enclave(self) -> EnclaveConfig:
        current = getattr(self._config, "current", None)
        return current() if current is not None else self._config

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def authenticate(self, header: str | None) -> str | None:
        """The caller whose secret ``header`` carries (compared in constant time), or None."""
        if not header or not header.startswith("Bearer "):
            return None
        given = header[len("Bearer ") :].strip().encode()
        found = None
        for caller, secret in self.secrets.items():
            if hmac.compare_digest(given, secret.encode()):
                found = caller
        return found

    def handle(self, header: str | None, action: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Authenticate, check, act, audit; ``(status, answer)``."""
        caller = self.authenticate(header)
        event: dict[str, Any] = {"caller": caller or "unauthenticated", "action": action[:80]}
        try:
            if caller is None:
                raise Refused(401, "The broker needs a caller's secret (Authorization: Bearer).")
            try:
                enclave = self.enclave
            except EnclaveConfigError as err:
                log.error("refusing %s: %s", action, err)
                raise Refused(503, "The enclave configuration can't be read.") from None
            request = check_request(enclave, caller, action, body)
            event.update(request.audit_fields())
            answer = self.act(enclave, request)
        except Refused as refusal:
            if isinstance(body, dict):
                for key in ("user", "project", "run_id"):
                    if isinstance(body.get(key), str):
                        event.setdefault(key, body[key][:80])
            event.update(result="refused", status=refusal.status, message=refusal.message)
            self.audit.write(event)
            security_event(
                log,
                "broker.refused",
                "refused %s by %s: %s",
                event["action"],
                event["caller"],
                refusal.message,
                user=event.get("user"),
                project=event.get("project"),
                caller=event["caller"],
                action=event["action"],
                status=refusal.status,
            )
            return refusal.status, {"error": refusal.message}
        except Exception as err:  # the engine failed: say so, keep serving
            log.exception("%s failed", action)
            message = f"The Docker engine failed: {type(err).__name__}: {str(err)[:300]}"
            event.update(result="error", status=502, message=message)
            self.audit.write(event)
            return 502, {"error": message}
        event.update(result="ok", status=200)
        for key in ("state", "id", "timings_ms"):
            if key in answer:
                event[key] = answer[key]
        self.audit.write(event)
        return 200, answer

    # ------------------------------------------------------------------------- actions

    def act(self, enclave: EnclaveConfig, request: BrokerRequest) -> dict[str, Any]:
        if request.action == "server.start":
            with self._lock(f"server/{request.user}/{request.project}"):
                if enclave.cluster is not None:
                    return self.start_service(enclave, request)
                return self.start_server(enclave, request)
        if request.action == "server.stop":
            with self._lock(f"server/{request.user}/{request.project}"):
                # the desktop first (it lives in the notebook's network namespace); both are
                # removed whatever the project's tier is now (the config may have changed)
                name = enclave.container_name(request.project, request.user)
                if enclave.cluster is not None:
                    return self.remove_service(name)
                self.remove(enclave.desktop_container_name(request.project, request.user))
                return self.remove(name)
        if request.action == "server.inspect":
            if enclave.cluster is not None:
                name = enclave.container_name(request.project, request.user)
                return self.inspect_service(name, enclave.network_name(request.project))
            return self.inspect_server(enclave, request)
        if request.action == "reexec.image":
            image = enclave.project(request.project).image
            return {"image": image, "image_id": self._image_id(image)}
        if request.action == "reexec.start":
            return self.start_reexec(enclave, request)
        if request.action == "reexec.list":
            return self.list_runs(enclave)
        spec = reexec_spec(enclave, request)
        if request.action == "reexec.inspect":
            return self.inspect(spec.name, "none")
        if request.action == "reexec.logs":
            return self.logs(spec.name)
        if request.action == "reexec.stop":
            return self.kill(spec.name)
        return self.remove(spec.name)

    def _attrs(self, name: str) -> dict[str, Any] | None:
        import docker.errors

        try:
            return self.client.inspect_container(name)
        except docker.errors.NotFound:
            return None

    def inspect(self, name: str, network: str) -> dict[str, Any]:
        attrs = self._attrs(name)
        if attrs is None:
            return {"state": "absent"}
        state = attrs.get("State") or {}
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        return {
            "state": state.get("Status", "unknown"),
            "id": attrs.get("Id", ""),
            "exit_code": state.get("ExitCode"),
            "oom_killed": bool(state.get("OOMKilled")),
            "ip": (networks.get(network) or {}).get("IPAddress", ""),
            "port": 8888,
        }

    def inspect_server(self, enclave: EnclaveConfig, request: BrokerRequest) -> dict[str, Any]:
        """A server's state; for a desktop project, the pair's: running only while both run,
        and the desktop's port (the hub's proxy reaches the desktop, never the server)."""
        name = enclave.container_name(request.project, request.user)
        answer = self.inspect(name, enclave.network_name(request.project))
        if not enclave.project(request.project).desktop or answer["state"] == "absent":
            return answer
        desktop = self.inspect(
            enclave.desktop_container_name(request.project, request.user), "none"
        )
        answer["port"] = DESKTOP_PORT
        answer["desktop_id"] = desktop.get("id", "")
        if answer["state"] == "running" and desktop["state"] != "running":
            answer["state"] = "exited" if desktop["state"] == "absent" else desktop["state"]
            answer["exit_code"] = desktop.get("exit_code")
        return answer

    def logs(self, name: str) -> dict[str, Any]:
        if self._attrs(name) is None:
            raise Refused(404, "There is no such re-execution run.")
        raw = self.client.logs(name, stdout=True, stderr=True, tail=2000)
        return {"log": raw[-64 * 1024 :].decode(errors="replace")}

    def kill(self, name: str) -> dict[str, Any]:
        """Kill a run (kept, for its log and exit code, until ``reexec.remove``)."""
        import docker.errors

        if self._attrs(name) is None:
            return {"state": "absent"}
        try:
            self.client.kill(name)
        except docker.errors.APIError:
            pass  # exited meanwhile
        return {"state": "killed"}

    def remove(self, name: str) -> dict[str, Any]:
        import docker.errors

        attrs = self._attrs(name)
        if attrs is None:
            return {"state": "absent"}
        try:
            if (attrs.get("State") or {}).get("Running"):
                self.client.stop(name, timeout=STOP_SECONDS)
        except docker.errors.APIError:
            pass  # exited (or removed) meanwhile
        try:
            self.client.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            if "already in progress" not in str(err):
                raise
        return {"state": "removed", "id": attrs.get("Id", "")}

    def _image_id(self, image: str) -> str:
        import docker.errors

        try:
            return self.client.inspect_image(image)["Id"]
        except docker.errors.ImageNotFound:
            raise Refused(
                503,
                f"Image {image} is not on this host (Havre never pulls at spawn time); "
                "ask the administrator to build or load it.",
            ) from None

    def ensure_project_network(self, enclave: EnclaveConfig, slug: str) -> dict[str, Any]:
        """The project's internal network (made if needed), with the hub and egress on it."""
        import docker.errors

        name = enclave.network_name(slug)
        with self._lock(f"network/{name}"):
            cluster = enclave.cluster
            try:
                attrs = self.client.inspect_network(name)
            except docker.errors.NotFound:
                log.info("creating internal network %s", name)
                if cluster is None:
                    spec = project_network_spec(name, enclave.name, slug)
                else:
                    spec = project_overlay_spec(
                        name, enclave.name, slug, encrypted=cluster.overlay_encrypted
                    )
                self.client.create_network(name, **spec)
                attrs = self.client.inspect_network(name)
            encrypted = cluster is not None and cluster.overlay_encrypted
            if cluster is not None:
                # the manager's view of a new overlay can lag its creation: read it again
                for _ in range(20):
                    if project_network_is_closed(attrs, overlay_encrypted=encrypted):
                        break
                    time.sleep(0.25)
                    attrs = self.client.inspect_network(name, scope="swarm")
            if not project_network_is_closed(attrs, overlay_encrypted=encrypted):
                raise Refused(
                    500,
                    f"Network {name} exists but is not an internal network with no host "
                    "address; refusing to start on it. Remove it and try again.",
                )
            connected = {c.get("Name") for c in (attrs.get("Containers") or {}).values()}
            for container in self.attach_containers:
                if container not in connected:
                    try:
                        self.client.connect_container_to_network(container, name)
                    except docker.errors.NotFound:
                        log.warning("%s is not running: not attached to %s", container, name)
                    except docker.errors.APIError as err:
                        if "already exists" not in str(err):
                            raise
        return attrs

    def server_identity(self, enclave: EnclaveConfig, request: BrokerRequest) -> Any:
        """The uid and project gid of this (user, project) server (:mod:`havre.enclave.identities`):
        given at its first start, kept in ``<state_dir>/identities/table.json``."""
        from havre.enclave.identities import locked_table, table_path

        with locked_table(
            table_path(enclave.state_dir),
            base=enclave.uid_base,
            size=enclave.uid_count,
            reader_gid=self.identity_reader_gid,
        ) as table:
            return table.identity(request.user, request.project)

    def prepare_folders(self, enclave: EnclaveConfig, request: BrokerRequest, ident: Any) -> None:
        """The project's folders and the user's home, owned as :func:`havre.enclave.identities.
        project_plan` and :func:`~havre.enclave.identities.home_plan` say; a home made by the legacy
        uid 1000 is given to the server's own uid. A link where a folder should be (planted by
        a notebook) is refused, never followed."""
        from havre.enclave.identities import (
            LEGACY_UID,
            apply_rule,
            home_plan,
            migrate_tree,
            project_plan,
        )

        project = enclave.project(request.project)
        home = enclave.home_dir(project.slug, request.user)
        for folder in (home, home / "outputs"):
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise Refused(409, f"{folder} is not a folder; ask the administrator.")
        for rule in project_plan(enclave.project_dir(project.slug), project.data_path, ident.gid):
            if rule.files_mode is None:  # the data tree is set by havre up, not per spawn
                apply_rule(rule)
        if home.is_dir() and os.lstat(home).st_uid == LEGACY_UID != ident.uid:
            moved = migrate_tree(home, LEGACY_UID, ident)
            log.info("gave %s entries of %s to uid %s", moved, home, ident.uid)
        for rule in home_plan(home, ident):
            apply_rule(rule)

    def start_server(self, enclave: EnclaveConfig, request: BrokerRequest) -> dict[str, Any]:
        """Start a server; the answer has its state, id and address, and ``timings_ms``: where
        the broker's time went (also in the audit line; benchmarks/spawn_benchmark.py reads it)."""
        clock = _PhaseClock()
        spec = server_spec(enclave, request)
        # a desktop project's server comes with its desktop: a request a desktop can't be built
        # from is refused before anything is made
        desktop = None
        if enclave.project(request.project).desktop:
            desktop = desktop_spec(enclave, request, notebook=spec.name)
        existing = self._attrs(spec.name)
        if existing is not None:
            if (existing.get("State") or {}).get("Running"):
                raise Refused(
                    409,
                    f"{request.user} already has a running server in project "
                    f"{request.project!r}; stop it first.",
                )
            self.remove(spec.name)
        image_id = self._image_id(spec.image)
        clock.lap("checks")
        network = self.ensure_project_network(enclave, request.project)
        gateway = ((network.get("IPAM") or {}).get("Config") or [{}])[0].get("Gateway", "")
        clock.lap("network")
        ident = self.server_identity(enclave, request)
        self.prepare_folders(enclave, request, ident)
        clock.lap("folders")
        spec = server_spec(enclave, request, dns=gateway, identity=(ident.uid, ident.gid))
        if desktop is not None:
            self.remove(desktop.name)  # left by a server that stopped on its own
            desktop_image = self._image_id(desktop.image)
        container_id = self._create_and_start(spec, image_id, clock)
        if desktop is not None:
            try:
                self._create_and_start(desktop, desktop_image)
            except Exception:
                self.remove(spec.name)
                raise
            clock.lap("desktop")
            answer = self.inspect_server(enclave, request) | {"id": container_id}
            answer["timings_ms"] = clock.laps
            return answer
        answer = self.inspect(spec.name, spec.network)
        clock.lap("inspect")
        answer["id"] = container_id
        answer["timings_ms"] = clock.laps
        return answer

    # ------------------------------------------------------------- cluster mode (Swarm)

    def _service(self, name: str) -> dict[str, Any] | None:
        import docker.errors

        try:
            return self.client.inspect_service(name)
        except docker.errors.NotFound:
            return None

    def start_service(self, enclave: EnclaveConfig, request: BrokerRequest) -> dict[str, Any]:
        """A notebook server as a Swarm service, which Swarm places on a worker holding the
        project's data (:func:`havre.broker.policy.server_service_spec`)."""
        if enclave.project(request.project).desktop:
            raise Refused(
                409,
                f"Project {request.project!r} is pixels-only (access: desktop), which runs on "
                "one host only: its server is not started as a Swarm service.",
            )
        name = enclave.container_name(request.project, request.user)
        if self._service(name) is not None:
            current = self.inspect_service(name, enclave.network_name(request.project))
            if current["state"] in ("running", "created"):
                raise Refused(
                    409,
                    f"{request.user} already has a running server in project "
                    f"{request.project!r}; stop it first.",
                )
            self.remove_service(name)
        # refused before anything is made: a service no worker can take would wait in
        # Pending (a server never starts on a node without its project's data)
        cluster = enclave.cluster
        nodes = self.client.nodes()
        if cluster is not None and not cluster.workers_for(request.project, nodes):
            raise Refused(503, cluster.no_worker_sentence(request.project, nodes))
        network = self.ensure_project_network(enclave, request.project)
        gateway = ((network.get("IPAM") or {}).get("Config") or [{}])[0].get("Gateway", "")
        ident = self.server_identity(enclave, request)
        self.prepare_folders(enclave, request, ident)
        spec = server_service_spec(enclave, request, dns=gateway, identity=(ident.uid, ident.gid))
        created = self.client.create_service(**spec)
        network = enclave.network_name(request.project)
        deadline = time.monotonic() + PLACEMENT_SECONDS
        retried = False
        while True:
            answer = self.inspect_service(name, network)
            if answer["state"] == "running" and answer["ip"]:
                break
            if answer["state"] == "exited" and not retried:
                # a task that failed before running (e.g. the overlay not yet on the worker):
                # once more, as Swarm would with a restart policy a server must not have
                log.warning("%s failed to start (%s); trying once more", name, answer["message"])
                retried = True
                self.remove_service(name)
                created = self.client.create_service(**spec)
                continue
            if answer["state"] == "exited" or time.monotonic() > deadline:
                self.remove_service(name)
                key, value = enclave.cluster.label_of(request.project)  # type: ignore[union-attr]
                raise Refused(
                    503,
                    f"Swarm could not start the server on a worker holding project "
                    f"{request.project!r}'s data (node label {key}={value}): "
                    f"{answer.get('message') or 'no such worker is available'}.",
                )
            time.sleep(0.25)
        answer["id"] = created.get("ID", "")
        return answer

    def _current_task(self, name: str) -> dict[str, Any] | None:
        tasks = self.client.tasks(filters={"service": name})
        if not tasks:
            return None
        return max(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0))

    def inspect_service(self, name: str, network: str) -> dict[str, Any]:
        """The server's state as :meth:`inspect` gives a container's: its one task's state,
        its address on the project's overlay, and the node it runs on."""
        if self._service(name) is None:
            return {"state": "absent"}
        task = self._current_task(name)
        if task is None:
            return {"state": "created", "ip": "", "port": SERVER_PORT, "node": ""}
        status = task.get("Status") or {}
        state = _TASK_STATES.get(status.get("State", ""), "exited")
        ip = ""
        for attachment in task.get("NetworksAttachments") or []:
            if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
                ip = (attachment.get("Addresses") or [""])[0].split("/")[0]
        container = status.get("ContainerStatus") or {}
        return {
            "state": state,
            "id": container.get("ContainerID", ""),
            "exit_code": container.get("ExitCode"),
            "oom_killed": False,
            "ip": ip,
            "port": SERVER_PORT,
            "node": task.get("NodeID", ""),
            "message": (status.get("Err") or status.get("Message") or "")[:300],
        }

    def remove_service(self, name: str) -> dict[str, Any]:
        """Remove the server's service: Swarm stops its task (SIGTERM, then SIGKILL after the
        grace period) wherever it runs; returns once no task of it is left running."""
        import docker.errors

        service = self._service(name)
        if service is None:
            return {"state": "absent"}
        try:
            self.client.remove_service(service["ID"])
        except docker.errors.NotFound:
            pass
        deadline = time.monotonic() + STOP_SECONDS + 20
        while time.monotonic() < deadline:
            try:
                tasks = self.client.tasks(filters={"service": service["ID"]})
            except docker.errors.APIError:
                break
            if not any((t.get("Status") or {}).get("State") == "running" for t in tasks):
                break
            time.sleep(0.2)
        return {"state": "removed", "id": service["ID"]}

    def _check_scratch(self, enclave: EnclaveConfig, request: BrokerRequest) -> None:
        scratch = reexec_scratch(enclave, request.run_id)
        from havre.broker.policy import REEXEC_SDC_PARAMS

        for path, kind in ((scratch, stat.S_ISDIR), (scratch / REEXEC_SDC_PARAMS, stat.S_ISREG)):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                raise Refused(
                    404, f"Run {request.run_id}'s scratch folder isn't prepared."
                ) from None
            if not kind(st.st_mode):
                raise Refused(409, f"{path.name} of run {request.run_id} is not what it should be.")

    def project_gid(self, enclave: EnclaveConfig, slug: str) -> int | None:
        """The project's gid from the identity table (None before ``havre up`` gave one)."""
        from havre.enclave.identities import load_table_any, table_path

        try:
            return load_table_any(table_path(enclave.state_dir)).projects.get(slug)
        except FileNotFoundError:
            return None

    def start_reexec(self, enclave: EnclaveConfig, request: BrokerRequest) -> dict[str, Any]:
        gid = self.project_gid(enclave, request.project)
        spec = reexec_spec(enclave, request, project_gid=gid)
        if self._attrs(spec.name) is not None:
            raise Refused(409, f"Re-execution run {request.run_id} exists already.")
        self._check_scratch(enclave, request)
        image_id = self._image_id(spec.image)
        container_id = self._create_and_start(spec, image_id)
        return {"state": "running", "id": container_id, "image_id": image_id}

    def list_runs(self, enclave: EnclaveConfig) -> dict[str, Any]:
        found = self.client.containers(
            all=True, filters={"label": [RUN_LABEL, f"havre.enclave={enclave.name}"]}
        )
        runs = []
        for c in found:
            labels = c.get("Labels") or {}
            runs.append(
                {
                    "run_id": labels.get(RUN_LABEL, ""),
                    "project": labels.get("havre.project", ""),
                    "state": c.get("State", ""),
                }
            )
        return {"runs": runs}

    def _create_and_start(
        self, spec: ContainerSpec, image_id: str, clock: _PhaseClock | None = None
    ) -> str:
        from docker.types import LogConfig

        host = dict(spec.host_config)
        if "log_config" in host:
            host["log_config"] = LogConfig(**host["log_config"])
        # binds ("source:target:mode"), in the order given: the SDC parameters' file over HOME
        host_config = self.client.create_host_config(
            binds=[f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in spec.mounts],
            auto_remove=False,
            **host,
        )
        created = self.client.create_container(
            # a re-execution runs the id resolved from the project's image (the tag can't move
            # under a trusted run); a server is named by its tag, as DockerSpawner did
            image_id if spec.labels.get(RUN_LABEL) else spec.image,
            command=list(spec.command) if spec.command else None,
            name=spec.name,
            user=spec.user,
            working_dir=spec.working_dir,
            hostname=spec.hostname or None,
            environment=dict(spec.environment),
            labels=dict(spec.labels),
            host_config=host_config,
            network_disabled=spec.network == "none",
        )
        if clock is not None:
            clock.lap("create")
        try:
            self.client.start(created["Id"])
        except Exception:
            self.client.remove_container(created["Id"], force=True)
            raise
        if clock is not None:
            clock.lap("start")
        return created["Id"]


# ----------------------------------------------------------------------------- HTTP


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # socketserver's default accept queue is 5: ten spawns at once overflowed it (the hub's
    # connects failed with EAGAIN); the client also waits for room (client._UnixConnection)
    request_queue_size = 128
    broker: Broker


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        log.debug(format, *args)

    def address_string(self) -> str:
        return "unix"

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (the base's name)
        if self.path == "/v1/health":
            self._answer(200, {"ok": True})
        else:
            self._answer(405, {"error": "The broker answers POST /v1/<action> only."})

    def do_POST(self) -> None:  # noqa: N802
        broker = self.server.broker
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._answer(413, {"error": f"The request body must be 0 to {MAX_BODY} bytes."})
            return
        raw = self.rfile.read(length)
        if not self.path.startswith("/v1/"):
            self._answer(404, {"error": "The broker answers POST /v1/<action> only."})
            return
        action = self.path[len("/v1/") :]
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = None  # refused by the policy: "must be a JSON object"
        status, answer = broker.handle(self.headers.get("Authorization"), action, body)
        self._answer(status, answer)


def serve(broker: Broker, socket_path: Path) -> _Server:
    """Listen on ``socket_path`` (replaced if left by an earlier broker); return the server."""
    try:
        if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            socket_path.unlink()
    except FileNotFoundError:
        pass
    server = _Server(str(socket_path), _Handler)
    # callers run as other uids: the socket is open to them, each request needs a secret
    os.chmod(socket_path, 0o666)
    server.broker = broker
    return server


def read_secret_file(path: Path) -> str:
    """A caller's secret; refuses a file others may read."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SystemExit(f"havre-broker: {path} must be readable by its owner only ({mode:o})")
    return path.read_text().strip()


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``havre-broker``."""
    parser = argparse.ArgumentParser(
        prog="havre-broker",
        description="The spawn broker: the only holder of the Docker socket (started by "
        "`havre up` in a container with no network).",
    )
    parser.add_argument("--config", required=True, help="the enclave config file (read live)")
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--audit", required=True, help="the audit log (JSON lines, appended)")
    parser.add_argument("--hub-secret", required=True, help="file with the hub's secret")
    parser.add_argument("--runner-secret", required=True, help="file with the runner's secret")
    parser.add_argument(
        "--attach",
        action="append",
        default=[],
        help="a container to attach to every project network (the hub, the egress service)",
    )
    args = parser.parse_args(argv)
    try:
        configure_logs("broker")
    except ValueError as err:
        parser.error(str(err))
    import docker

    from havre.enclave.live import live_config

    config = live_config(args.config)
    config.current()  # refuse to start on an invalid config
    client = docker.APIClient(version="auto", timeout=120)
    broker = Broker(
        config,
        {
            "hub": read_secret_file(Path(args.hub_secret)),
            "runner": read_secret_file(Path(args.runner_secret)),
        },
        AuditLog(Path(args.audit)),
        client,
        attach_containers=args.attach,
    )
    server = serve(broker, Path(args.socket))
    log.info("havre-broker: listening on %s", args.socket)
    broker.audit.write({"caller": "broker", "action": "broker.start", "result": "ok"})
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        time.sleep(0)


if __name__ == "__main__":  # pragma: no cover
    main()
