"""The enclave config's ``cluster`` section (havre/enclave/config/cluster.py).

The security promise here: project overlays are encrypted, and no production config can turn
that off, not even silently through the test cluster's own setting. Each refusal has its
positive control: the same setting accepted where it is allowed.
"""

from __future__ import annotations

import pytest

from havre.enclave.config import EnclaveConfigError, dump_enclave_config, parse_enclave_yaml
from havre.enclave.config.cluster import INSECURE_TEST_FLAG

BASE = """\
enclave: {name: hv, state_dir: /srv/havre}
projects:
  cardio: {title: Cardio, members: [alice]}
  diabetes: {title: Diabetes, members: [bob]}
"""


def _load(cluster: str):
    return parse_enclave_yaml(BASE + cluster)


def _problems(cluster: str) -> list[str]:
    with pytest.raises(EnclaveConfigError) as caught:
        _load(cluster)
    return caught.value.problems


@pytest.fixture(autouse=True)
def _no_test_flag(monkeypatch):
    monkeypatch.delenv(INSECURE_TEST_FLAG, raising=False)


def test_no_cluster_section_is_one_host():
    assert _load("").cluster is None


def test_a_cluster_encrypts_and_places_by_default():
    cluster = _load("cluster: {engine: swarm}\n").cluster
    assert cluster is not None
    assert cluster.overlay_encrypted
    assert cluster.manager_socket == "/var/run/docker.sock"
    # a project without a placement still needs a worker labelled as holding its data
    assert cluster.constraints("cardio") == [
        "node.role==worker",
        "node.labels.havre.data.cardio==true",
    ]


def test_placement_names_the_label_of_the_nodes_holding_the_data():
    cluster = _load(
        "cluster:\n  manager: unix:///run/m1.sock\n  placement: {cardio: site=hospital-a}\n"
    ).cluster
    assert cluster.constraints("cardio")[1] == "node.labels.site==hospital-a"
    assert cluster.constraints("diabetes")[1] == "node.labels.havre.data.diabetes==true"
    assert cluster.manager_socket == "/run/m1.sock"


def test_a_production_config_cannot_turn_encryption_off():
    problems = _problems("cluster: {overlay_encrypted: false}\n")
    assert len(problems) == 1
    assert problems[0].startswith("cluster.overlay_encrypted: project overlays carry")
    # nor through the test cluster's own setting, without the test environment's flag
    problems = _problems("cluster: {insecure_test_unencrypted_overlay: true}\n")
    assert problems == [
        "cluster.insecure_test_unencrypted_overlay: unencrypted overlays are for the test "
        f"cluster only: refused unless the environment sets {INSECURE_TEST_FLAG}=1 (got True)"
        "; note: YAML reads unquoted yes/no/on/off/true/false as booleans, quote the value"
    ]
    # a flag set to anything but 1 is no flag
    with pytest.MonkeyPatch.context() as env:
        env.setenv(INSECURE_TEST_FLAG, "yes")
        assert _problems("cluster: {insecure_test_unencrypted_overlay: true}\n")


def test_the_test_cluster_goes_unencrypted_only_with_the_flag(monkeypatch):
    """The positive control of the refusal above: same config, the test environment's flag."""
    monkeypatch.setenv(INSECURE_TEST_FLAG, "1")
    cluster = _load("cluster: {insecure_test_unencrypted_overlay: true}\n").cluster
    assert cluster is not None and not cluster.overlay_encrypted
    # and its dump says so, reading back the same (with the flag)
    text = dump_enclave_config(_load("cluster: {insecure_test_unencrypted_overlay: true}\n"))
    assert "insecure_test_unencrypted_overlay: true" in text
    assert parse_enclave_yaml(text).cluster == cluster


def test_every_bad_value_is_a_problem_of_its_own():
    problems = _problems(
        "cluster:\n"
        "  engine: kubernetes\n"
        "  manager: tcp://10.0.0.1:2375\n"
        "  placement: {cardio: 'no label', oncology: site=a}\n"
        "  overlay_encrypted: yes-please\n"
        "  insecure_test_unencrypted_overlay: 'true'\n"
        "  placment: {}\n"
    )
    wanted = [
        "cluster.placment: unknown key 'placment', did you mean 'placement'?",
        "cluster.engine: must be one of swarm (got 'kubernetes')",
        "cluster.manager: must be the manager engine's local socket",
        "cluster.overlay_encrypted: project overlays carry",
        "cluster.insecure_test_unencrypted_overlay: must be true or false (got 'true')",
        "cluster.placement.cardio: must be a node label key=value",
        "cluster.placement.oncology: is not a project of this enclave",
    ]
    assert len(problems) == len(wanted), problems
    for prefix in wanted:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


def test_a_cluster_config_reads_back_the_same():
    config = _load("cluster:\n  manager: unix:///run/m1.sock\n  placement: {cardio: a=b}\n")
    assert parse_enclave_yaml(dump_enclave_config(config)) == config


def test_a_server_service_carries_the_hardening_services_allow_and_its_placement(monkeypatch):
    """The Swarm service the broker makes for a server (havre.broker.policy): every control
    API 1.41 offers, the project's limits, a worker holding the data, never restarted."""
    from havre.broker.policy import BrokerRequest, server_service_spec
    from havre.enclave.hardening import SWARM_GAPS

    config = _load("cluster: {placement: {cardio: site=a}}\n")
    request = BrokerRequest("hub", "server.start", "alice", "cardio")
    spec = server_service_spec(config, request, dns="10.0.0.1", identity=(2_000_001, 2_000_002))
    task = spec["task_template"]
    container = task["ContainerSpec"]
    assert container["CapabilityDrop"] == ["ALL"] and "CapabilityAdd" not in container
    assert container["ReadOnly"] is True and container["User"] == "2000001:2000002"
    assert container["Sysctls"]["net.ipv4.ping_group_range"] == "1 0"
    assert container["Sysctls"]["net.ipv6.conf.all.disable_ipv6"] == "1"
    assert container["DNSConfig"]["Nameservers"] == ["10.0.0.1"]
    mounts = {m["Target"]: m for m in container["Mounts"]}
    assert mounts["/data"]["ReadOnly"] is True and mounts["/tmp"]["Type"] == "tmpfs"
    limits = task["Resources"]["Limits"]
    project = config.project("cardio")
    assert limits["Pids"] == project.limits.pids
    assert limits["MemoryBytes"] == project.limits.memory_bytes
    assert task["Placement"]["Constraints"] == ["node.role==worker", "node.labels.site==a"]
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["Networks"] == [{"Target": config.network_name("cardio")}]
    assert spec["endpoint_spec"] == {"Mode": "dnsrr"}
    # what services can't have is written down, each with its stand-in
    assert set(SWARM_GAPS) == {"no-new-privileges", "Havre's seccomp profile", "memory+swap limit"}


def test_a_pixels_only_project_is_refused_on_a_cluster():
    """A Swarm service can't share a network namespace with a desktop container: on a cluster a
    desktop project's JupyterLab would be routed to the researcher's browser, the exit the tier
    closes. Control: the same project on one host, and the cluster without it."""
    desktop = BASE.replace(
        "{title: Cardio, members: [alice]}", "{title: Cardio, members: [alice], access: desktop}"
    )
    assert parse_enclave_yaml(desktop).project("cardio").desktop
    with pytest.raises(EnclaveConfigError) as caught:
        parse_enclave_yaml(desktop + "cluster: {manager: 'unix:///run/n1.sock'}\n")
    assert any(
        "projects.cardio.access" in problem and "one host only" in problem
        for problem in caught.value.problems
    )
    assert _load("cluster: {manager: 'unix:///run/n1.sock'}\n").cluster is not None


def _node(ident: str, labels: dict, availability="active", state="ready", role="worker") -> dict:
    """A node as the engine lists it (``GET /nodes``), reduced to what placement reads."""
    return {
        "ID": ident,
        "Spec": {"Role": role, "Labels": labels, "Availability": availability},
        "Status": {"State": state},
    }


def test_a_server_starts_only_where_a_ready_active_worker_holds_the_projects_data():
    cluster = _load("cluster: {engine: swarm, placement: {diabetes: hospital=b}}\n").cluster
    nodes = [
        _node("m", {"havre.data.cardio": "true"}, role="manager"),  # a manager never runs one
        _node("w1", {"havre.data.cardio": "true"}, availability="drain"),
        _node("w2", {"havre.data.cardio": "true"}, state="down"),
        _node("w3", {"havre.data.cardio": "false", "hospital": "b"}),
    ]
    assert cluster.workers_for("cardio", nodes) == []
    assert "drained, paused or down" in cluster.no_worker_sentence("cardio", nodes)
    assert cluster.workers_for("diabetes", nodes) == ["w3"]  # its placement label
    # no worker labelled at all: the sentence names the label to set
    sentence = cluster.no_worker_sentence("onco", nodes)
    assert "no worker carries the node label havre.data.onco=true" in sentence
    assert "'onco'" in sentence
    # control: the same project once a worker holds the label and is active
    nodes.append(_node("w4", {"havre.data.cardio": "true"}))
    assert cluster.workers_for("cardio", nodes) == ["w4"]
