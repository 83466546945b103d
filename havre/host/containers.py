"""Docker plumbing of the stack launcher: the config digests that decide whether a running
container is replaced, images, the front and project networks, replacing a container and
attaching it to networks. Every change made is appended to the caller's ``changes`` list.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import docker
import docker.errors

from havre.enclave.config import EnclaveConfig
from havre.enclave.live import restart_digest
from havre.enclave.networks import project_network_spec
from havre.host.layout import TLS_IN_CONTAINER, StackError, StackOptions, front_network_name


def config_digest(enclave: EnclaveConfig, *images: str, projects: str = "none") -> str:
    """A digest of what a running container depends on: the config as it reads it at start
    (projects and members are read live: see havre/enclave/live.py), image ids, addresses."""
    digest = hashlib.sha256(restart_digest(enclave, projects=projects).encode())
    digest.update(b"live-config")
    for image in images:
        digest.update(image.encode())
    return digest.hexdigest()[:16]


def tls_digest(opts: StackOptions) -> str:
    """What the proxy's HTTPS depends on: the certificate and key files' contents."""
    if not opts.tls_cert:
        return ""
    digest = hashlib.sha256()
    for path in (opts.tls_cert, opts.tls_key):
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def tls_volume_mounts(opts: StackOptions) -> dict[str, dict[str, str]]:
    """The proxy's certificate and key, read-only at TLS_IN_CONTAINER (hub and provider)."""
    return {
        str(Path(opts.tls_cert).resolve()): {"bind": f"{TLS_IN_CONTAINER}/cert.pem", "mode": "ro"},
        str(Path(opts.tls_key).resolve()): {"bind": f"{TLS_IN_CONTAINER}/key.pem", "mode": "ro"},
    }


def image_id(client: docker.DockerClient, image: str) -> str:
    try:
        return client.images.get(image).id
    except docker.errors.ImageNotFound:
        raise StackError(
            f"image {image} is not on this host: build it with `bash images/build.sh` "
            "(or load it with `docker load`)"
        ) from None


def ensure_front_network(
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


def ensure_project_networks(
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
        client.networks.create(name, **project_network_spec(name, enclave.name, slug))
        changes.append(f"created the network {name}")


def project_networks(client: docker.DockerClient, enclave: EnclaveConfig) -> list[str]:
    nets = client.networks.list(filters={"label": f"havre.enclave={enclave.name}"})
    return [n.name for n in nets if (n.attrs.get("Labels") or {}).get("havre.project")]


def replace_container(
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


def attach_to_networks(
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
