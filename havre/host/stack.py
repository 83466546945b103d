"""Start and stop an enclave's long-running containers on one Docker host.

``havre up`` (the local start command, and the test suite's fixture) calls :func:`up`:
it prepares the state folder and secrets, checks the images are present, creates the front
network, and (re)starts the egress service and hub containers. Running it again with nothing
changed leaves the running containers alone.

The pieces: :mod:`havre.host.layout` (names, accounts, options, the state folder),
:mod:`havre.host.containers` (digests, images, networks), :mod:`havre.host.services` (one
starter per service container).
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.error
import urllib.request

import docker
import docker.errors

from havre.enclave.config import EnclaveConfig
from havre.enclave.live import publish_config
from havre.host.containers import (
    attach_to_networks,
    ensure_front_network,
    ensure_project_networks,
    image_id,
    project_networks,
)
from havre.host.layout import (
    StackError,
    StackOptions,
    egress_container_name,
    hub_container_name,
    idp_container_name,
    prepare_state,
)
from havre.host.services import start_broker, start_egress, start_hub, start_idp, start_runner


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
            image_id(client, image)
        check_ports(client, enclave, opts)
        prepare_state(enclave, changes)
        publish_config(enclave, changes)
        ensure_front_network(client, enclave, changes)
        if opts.create_project_networks:
            ensure_project_networks(client, enclave, changes)
        start_idp(client, enclave, opts, changes)
        start_egress(client, enclave, opts, changes)
        start_broker(client, enclave, opts, changes)
        start_runner(client, enclave, opts, changes)
        start_hub(client, enclave, opts, changes)
        project_nets = project_networks(client, enclave)
        attach_to_networks(client, egress_container_name(enclave), project_nets, changes)
        attach_to_networks(client, hub_container_name(enclave), project_nets, changes)
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
