"""The enclave config's ``cluster`` section: the enclave on a Docker Swarm cluster.

::

    cluster:
      engine: swarm                       # the only engine today
      manager: unix:///var/run/docker.sock  # the swarm manager's engine: hub, proxy, egress,
                                          # identity provider and broker run there
      overlay_encrypted: true             # the default; false is refused (see below)
      placement:                          # project -> node label a worker must carry
        cardio: havre.data.cardio=true    # (default: havre.data.<project>=true)

Notebook servers become Swarm services (one replica, restart never) that Swarm schedules on a
*worker* carrying the project's label (Ansible sets the labels on the nodes that hold the
project's data), on the project's internal, attachable overlay network.

Overlay traffic between hosts is researchers' traffic: it is encrypted (IPsec, ``--opt
encrypted``) and a config can't turn that off. The one exception is the test cluster of
``tests/cluster`` (engines on one machine whose kernel has no IPsec): there
``insecure_test_unencrypted_overlay: true`` is accepted only when the process that reads the
config has ``HAVRE_INSECURE_TEST_CLUSTER=1`` in its environment, and each reading says so.

Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from havre.enclave.config.problems import Problems

#: engines a cluster can run on
CLUSTER_ENGINES = ("swarm",)
#: the environment flag without which ``insecure_test_unencrypted_overlay`` is refused
INSECURE_TEST_FLAG = "HAVRE_INSECURE_TEST_CLUSTER"
CLUSTER_KEYS = (
    "engine",
    "manager",
    "overlay_encrypted",
    "placement",
    "insecure_test_unencrypted_overlay",
)
#: the label a worker carries when it holds a project's data, unless ``placement`` says another
DEFAULT_LABEL = "havre.data.{project}=true"
#: a node label ``key=value`` (Docker's label grammar, kept simple: no spaces, no quotes)
_LABEL_RE = re.compile(r"(?P<key>[a-z0-9][a-z0-9._-]{0,99})=(?P<value>[A-Za-z0-9._-]{1,100})")
#: the manager's engine: a local Unix socket (a remote engine would need TLS settings Havre
#: does not take yet)
_MANAGER_RE = re.compile(r"unix:///[A-Za-z0-9._/-]{1,200}\.sock")


@dataclass(frozen=True)
class ClusterConfig:
    """A validated ``cluster`` section."""

    engine: str = "swarm"
    manager: str = "unix:///var/run/docker.sock"
    #: project slug -> "key=value" node label (only the projects given; see :meth:`label_of`)
    placement: Mapping[str, str] = field(default_factory=dict)
    #: True only on the test cluster, with the environment flag set (see the module's doc)
    insecure_test_unencrypted_overlay: bool = False

    def __hash__(self) -> int:
        return hash((self.engine, self.manager, tuple(sorted(self.placement.items()))))

    @property
    def overlay_encrypted(self) -> bool:
        """Whether project overlays are encrypted: always, except on the test cluster."""
        return not self.insecure_test_unencrypted_overlay

    @property
    def manager_socket(self) -> str:
        """The manager engine's socket path on the manager host."""
        return self.manager.removeprefix("unix://")

    def label_of(self, slug: str) -> tuple[str, str]:
        """The node label (key, value) a worker needs to run ``slug``'s servers."""
        label = self.placement.get(slug) or DEFAULT_LABEL.format(project=slug)
        key, _, value = label.partition("=")
        return key, value

    def constraints(self, slug: str) -> list[str]:
        """Swarm placement constraints of ``slug``'s servers: a worker with the project's data."""
        key, value = self.label_of(slug)
        return ["node.role==worker", f"node.labels.{key}=={value}"]

    def workers_for(self, slug: str, nodes: Sequence[Mapping[str, Any]]) -> list[str]:
        """The ids of the swarm nodes (as the engine lists them: ``GET /nodes``) where a
        server of ``slug`` can start now: workers carrying the project's label, ready and
        active (not drained, not paused)."""
        key, value = self.label_of(slug)
        found = []
        for node in nodes:
            spec, status = node.get("Spec") or {}, node.get("Status") or {}
            if (
                spec.get("Role") == "worker"
                and (spec.get("Labels") or {}).get(key) == value
                and spec.get("Availability") == "active"
                and status.get("State") == "ready"
            ):
                found.append(str(node.get("ID", "")))
        return found

    def no_worker_sentence(self, slug: str, nodes: Sequence[Mapping[str, Any]]) -> str:
        """Why no server of ``slug`` can start (:meth:`workers_for` found none), in a sentence
        a researcher and an operator can act on."""
        key, value = self.label_of(slug)
        labelled = [
            n
            for n in nodes
            if (n.get("Spec") or {}).get("Role") == "worker"
            and ((n.get("Spec") or {}).get("Labels") or {}).get(key) == value
        ]
        why = (
            f"no worker carries the node label {key}={value}"
            if not labelled
            else f"every worker carrying the node label {key}={value} is drained, paused or down"
        )
        return (
            f"No worker holding project {slug!r}'s data is available ({why}), so its server "
            "was not started: a server never starts on a node without its project's data. "
            "Ask the operator to label a worker that holds the data (cluster.yml) or to bring "
            "one back."
        )


def parse_cluster(
    p: Problems,
    raw: object,
    projects: object,
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig | None:
    """Check the ``cluster`` section (``None``: single host); every problem goes to ``p``."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        p.add("cluster", "must be a mapping (engine, manager, placement, ...)", raw)
        return None
    environ = os.environ if environ is None else environ
    p.unknown_keys(raw, "cluster", CLUSTER_KEYS)
    engine = raw.get("engine", "swarm")
    if engine not in CLUSTER_ENGINES:
        p.add("cluster.engine", f"must be one of {', '.join(CLUSTER_ENGINES)}", engine)
    manager = raw.get("manager", ClusterConfig.manager)
    if not isinstance(manager, str) or not _MANAGER_RE.fullmatch(manager):
        p.add(
            "cluster.manager",
            "must be the manager engine's local socket, unix:///<path>.sock",
            manager,
        )
    encrypted = raw.get("overlay_encrypted", True)
    if encrypted is not True:
        p.add(
            "cluster.overlay_encrypted",
            "project overlays carry researchers' traffic between hosts and are always "
            "encrypted; only the test cluster may go without "
            "(insecure_test_unencrypted_overlay, with "
            f"{INSECURE_TEST_FLAG}=1)",
            encrypted,
        )
    insecure = raw.get("insecure_test_unencrypted_overlay", False)
    if not isinstance(insecure, bool):
        p.add("cluster.insecure_test_unencrypted_overlay", "must be true or false", insecure)
        insecure = False
    elif insecure and environ.get(INSECURE_TEST_FLAG) != "1":
        p.add(
            "cluster.insecure_test_unencrypted_overlay",
            "unencrypted overlays are for the test cluster only: refused unless the "
            f"environment sets {INSECURE_TEST_FLAG}=1",
            insecure,
        )
        insecure = False
    placement: dict[str, str] = {}
    raw_placement = raw.get("placement") or {}
    if not isinstance(raw_placement, Mapping):
        p.add("cluster.placement", "must map project slugs to node labels", raw_placement)
        raw_placement = {}
    known = set(projects) if isinstance(projects, Mapping) else set()
    for slug, label in raw_placement.items():
        where = f"cluster.placement.{slug}"
        if slug not in known:
            p.add(where, "is not a project of this enclave", slug)
        elif not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
            p.add(where, "must be a node label key=value (e.g. havre.data.cardio=true)", label)
        else:
            placement[str(slug)] = label
    if p.items:
        return None
    return ClusterConfig(
        engine=str(engine),
        manager=str(manager),
        placement=placement,
        insecure_test_unencrypted_overlay=bool(insecure),
    )


def cluster_doc(cluster: ClusterConfig) -> dict[str, Any]:
    """The ``cluster`` section that reads back to ``cluster``."""
    doc: dict[str, Any] = {"engine": cluster.engine, "manager": cluster.manager}
    if cluster.placement:
        doc["placement"] = dict(cluster.placement)
    if cluster.insecure_test_unencrypted_overlay:
        doc["insecure_test_unencrypted_overlay"] = True
    return doc
