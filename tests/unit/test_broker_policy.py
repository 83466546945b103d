"""The spawn broker's policy, without Docker: who may ask for what, and what it builds.

The table is caller x action x request shape -> allowed, or refused with which status and
sentence. The live broker is attacked in tests/integration/test_broker.py.
"""

from __future__ import annotations

import json

import pytest

from havre.broker.policy import (
    ACTIONS,
    CALLER_ACTIONS,
    Refused,
    check_request,
    container_problems,
    reexec_spec,
    server_spec,
)
from havre.enclave.config import parse_enclave_config, project_hub_group
from tests.unit.broker_enclave import NOTEBOOK_IMAGE, inspect_of, unit_config

CONFIG = unit_config(
    images={"default": NOTEBOOK_IMAGE},
    projects={"diabetes": {"title": "Diabetes", "members": ["bob"], "groups": ["diab-team"]}},
    output_checkers=["olivia"],
)
ENCLAVE = parse_enclave_config(CONFIG, source="unit")
RUN = "0123456789abcdef"
OK_START = {"user": "alice", "project": "cardio"}

#: (caller, action, body, expected): expected is None (allowed) or (status, words in the sentence)
TABLE = [
    # -- the hub: servers
    ("hub", "server.start", OK_START, None),
    ("hub", "server.start", {**OK_START, "groups": [], "env": {}}, None),
    ("hub", "server.start", {"user": "carol", "project": "cardio"}, None),
    ("hub", "server.start", {"user": "bob", "project": "diabetes"}, None),
    (
        "hub",
        "server.start",
        {"user": "dave", "project": "diabetes", "groups": [project_hub_group("diabetes")]},
        None,
    ),
    ("hub", "server.start", {"user": "alice", "project": "diabetes"}, (403, "not a member")),
    ("hub", "server.start", {"user": "olivia", "project": "cardio"}, (403, "not a member")),
    ("hub", "server.start", {"user": "mallory", "project": "cardio"}, (403, "not a member")),
    (
        "hub",
        "server.start",
        {"user": "dave", "project": "diabetes", "groups": [project_hub_group("cardio")]},
        (403, "not a member"),
    ),
    ("hub", "server.start", {"user": "alice", "project": "nope"}, (404, "no project")),
    ("hub", "server.start", {"user": "alice", "project": "../cardio"}, (404, "no project")),
    ("hub", "server.start", {"user": "alice", "project": "cardio/../x"}, (404, "no project")),
    ("hub", "server.start", {"user": "alice", "project": ""}, (404, "no project")),
    ("hub", "server.start", {"user": "../../etc", "project": "cardio"}, (400, "valid user")),
    ("hub", "server.start", {"user": "Alice", "project": "cardio"}, (400, "valid user")),
    ("hub", "server.start", {"user": "a/b", "project": "cardio"}, (400, "valid user")),
    ("hub", "server.start", {"user": "", "project": "cardio"}, (400, "valid user")),
    ("hub", "server.start", {"user": 7, "project": "cardio"}, (400, "must be a string")),
    ("hub", "server.start", {"project": "cardio"}, (400, "user are required")),
    ("hub", "server.start", {"user": "alice"}, (400, "project are required")),
    ("hub", "server.start", [], (400, "JSON object")),
    ("hub", "server.start", None, (400, "JSON object")),
    ("hub", "server.start", "alice", (400, "JSON object")),
    # a container specification smuggled in: every key refused by name
    *[
        ("hub", "server.start", {**OK_START, key: value}, (400, f"{key} are not accepted"))
        for key, value in [
            ("image", "alpine"),
            ("binds", ["/:/host"]),
            ("mounts", [{"source": "/", "target": "/host"}]),
            ("volumes", {"/": {"bind": "/host"}}),
            ("privileged", True),
            ("cap_add", ["SYS_ADMIN"]),
            ("network_mode", "host"),
            ("network", "bridge"),
            ("user_id", 0),
            ("command", ["sh"]),
            ("security_opt", ["seccomp=unconfined"]),
            ("host_config", {"Privileged": True}),
            ("name", "x"),
            ("labels", {}),
            ("pid_mode", "host"),
            ("devices", ["/dev/sda"]),
        ]
    ],
    # groups: only hub groups the enclave knows
    ("hub", "server.start", {**OK_START, "groups": "cardio"}, (400, "list of hub group")),
    ("hub", "server.start", {**OK_START, "groups": [1]}, (400, "list of hub group")),
    ("hub", "server.start", {**OK_START, "groups": ["docker"]}, (400, "Unknown hub group")),
    # env: JupyterHub's own variables only
    ("hub", "server.start", {**OK_START, "env": {"JUPYTERHUB_API_TOKEN": "t"}}, None),
    ("hub", "server.start", {**OK_START, "env": {"LD_PRELOAD": "/x.so"}}, (400, "not accepted")),
    ("hub", "server.start", {**OK_START, "env": {"HAVRE_DATA_DIR": "/"}}, (400, "not accepted")),
    ("hub", "server.start", {**OK_START, "env": {"PYTHONPATH": "/h"}}, (400, "not accepted")),
    ("hub", "server.start", {**OK_START, "env": {"JUPYTERHUB_X": 1}}, (400, "short string")),
    ("hub", "server.start", {**OK_START, "env": {"JUPYTERHUB_X": "a\0b"}}, (400, "short string")),
    ("hub", "server.start", {**OK_START, "env": ["JUPYTERHUB_X=1"]}, (400, "object of")),
    ("hub", "server.stop", {"user": "alice", "project": "cardio"}, None),
    ("hub", "server.stop", {"user": "alice", "project": "cardio", "now": True}, (400, "now")),
    ("hub", "server.inspect", {"user": "bob", "project": "cardio"}, None),  # stop/inspect: any
    ("hub", "server.inspect", {"user": "bob", "project": "x"}, (404, "no project")),
    # -- the hub may not run re-executions, the runner may not touch servers
    ("hub", "reexec.start", {"project": "cardio", "run_id": RUN}, (403, "hub may not")),
    ("hub", "reexec.list", {}, (403, "hub may not")),
    ("runner", "server.start", OK_START, (403, "runner may not")),
    ("runner", "server.stop", OK_START, (403, "runner may not")),
    ("runner", "server.inspect", OK_START, (403, "runner may not")),
    # -- the runner: re-executions
    ("runner", "reexec.start", {"project": "cardio", "run_id": RUN}, None),
    ("runner", "reexec.inspect", {"project": "diabetes", "run_id": RUN}, None),
    ("runner", "reexec.logs", {"project": "cardio", "run_id": RUN}, None),
    ("runner", "reexec.stop", {"project": "cardio", "run_id": RUN}, None),
    ("runner", "reexec.list", {}, None),
    ("runner", "reexec.remove", {"project": "cardio", "run_id": RUN}, None),
    ("runner", "reexec.image", {"project": "cardio"}, None),
    ("runner", "reexec.image", {"project": "cardio", "image": "x"}, (400, "image are not")),
    ("hub", "reexec.image", {"project": "cardio"}, (403, "hub may not")),
    ("runner", "reexec.start", {"project": "cardio", "run_id": "../../etc"}, (400, "16 lower")),
    ("runner", "reexec.start", {"project": "cardio", "run_id": RUN.upper()}, (400, "16 lower")),
    ("runner", "reexec.start", {"project": "cardio"}, (400, "run_id are required")),
    ("runner", "reexec.start", {"project": "nope", "run_id": RUN}, (404, "no project")),
    (
        "runner",
        "reexec.start",
        {"project": "cardio", "run_id": RUN, "image": "alpine"},
        (400, "image are not accepted"),
    ),
    (
        "runner",
        "reexec.start",
        {"project": "cardio", "run_id": RUN, "scratch": "/"},
        (400, "scratch are not accepted"),
    ),
    (
        "runner",
        "reexec.start",
        {"project": "cardio", "run_id": RUN, "timeout": 10**9},
        (400, "timeout are not accepted"),
    ),
    ("runner", "reexec.list", {"all": True}, (400, "all are not accepted")),
    # every action of the other caller, refused before its body is read
    *[
        ("hub", action, {"project": "cardio", "run_id": RUN}, (403, "hub may not"))
        for action in ("reexec.inspect", "reexec.logs", "reexec.stop", "reexec.remove")
    ],
    # -- unknown callers and actions
    ("egress", "server.start", OK_START, (401, "Unknown caller")),
    ("", "reexec.list", {}, (401, "Unknown caller")),
    ("hub", "container.create", {}, (404, "Unknown action")),
    ("hub", "server.exec", OK_START, (404, "Unknown action")),
    ("hub", "../server.start", OK_START, (404, "Unknown action")),
]


@pytest.mark.parametrize(("caller", "action", "body", "expected"), TABLE)
def test_who_may_ask_for_what(caller, action, body, expected):
    if expected is None:
        request = check_request(ENCLAVE, caller, action, body)
        assert (request.caller, request.action) == (caller, action)
        return
    status, words = expected
    with pytest.raises(Refused) as info:
        check_request(ENCLAVE, caller, action, body)
    assert info.value.status == status, info.value.message
    assert words in info.value.message
    assert info.value.message.endswith(".")  # a sentence


def test_the_table_covers_every_caller_and_action():
    seen = {(c, a) for c, a, _, _ in TABLE}
    for caller in CALLER_ACTIONS:
        for action in ACTIONS:
            assert (caller, action) in seen, (caller, action)


def test_an_image_off_the_allow_list_is_refused():
    config = {
        **CONFIG,
        "projects": {"cardio": {"title": "C", "members": ["alice"], "image": "evil:1"}},
    }
    config["images"] = {"allowed": ["havre/notebook:0.1.0", "evil:1"]}
    enclave = parse_enclave_config(config, source="unit")
    object.__setattr__(enclave, "allowed_images", frozenset({"havre/notebook:0.1.0"}))
    with pytest.raises(Refused) as info:
        check_request(enclave, "hub", "server.start", OK_START)
    assert info.value.status == 403 and "allow-list" in info.value.message


def test_the_server_spec_comes_from_the_config_only():
    env = {"JUPYTERHUB_API_TOKEN": "secret", "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/"}
    request = check_request(ENCLAVE, "hub", "server.start", {**OK_START, "env": env})
    spec = server_spec(ENCLAVE, request, dns="10.9.0.1")
    assert spec.image == "havre/notebook:0.1.0"
    assert spec.user == "1000:1000"
    assert spec.network == "unit-project-cardio"
    host = spec.host_config
    assert host["cap_drop"] == ["ALL"] and host["privileged"] is False
    assert host["security_opt"][0] == "no-new-privileges:true"
    assert host["security_opt"][1].startswith('seccomp={"archMap"')
    assert host["read_only"] is True
    assert host["pids_limit"] == 300 and host["mem_limit"] == 1024**3
    assert host["memswap_limit"] == 1024**3 and host["cpu_quota"] == 150_000
    assert host["network_mode"] == "unit-project-cardio" and host["dns"] == ["10.9.0.1"]
    mounts = {m.target: (m.source, m.read_only) for m in spec.mounts}
    assert mounts == {
        "/home/researcher": ("/srv/unit/projects/cardio/homes/alice", False),
        "/home/researcher/outputs": ("/srv/unit/projects/cardio/outputs", False),
        "/data": ("/srv/unit/projects/cardio/data", True),
    }
    assert spec.environment["JUPYTERHUB_API_TOKEN"] == "secret"
    assert spec.environment["HAVRE_DATA_DIR"] == "/data"
    assert spec.environment["PYTHONNOUSERSITE"] == "1"
    assert spec.labels["havre.user"] == "alice" and spec.labels["havre.project"] == "cardio"
    assert "secret" not in str(request.audit_fields())


def test_the_reexecution_spec_has_no_network_and_the_runs_scratch_folder():
    request = check_request(ENCLAVE, "runner", "reexec.start", {"project": "cardio", "run_id": RUN})
    spec = reexec_spec(ENCLAVE, request)
    assert spec.network == "none" and spec.host_config["network_mode"] == "none"
    assert spec.command[0] == "papermill"
    mounts = {m.target: (m.source, m.read_only) for m in spec.mounts}
    scratch = f"/srv/unit/reexec/work/reexec-{RUN}"
    assert mounts["/home/researcher"] == (scratch, False)
    assert mounts["/home/researcher/.havre-sdc-params.json"][1] is True
    assert mounts["/data"] == ("/srv/unit/projects/cardio/data", True)
    assert spec.environment["HAVRE_TRUSTED_REEXECUTION"] == "1"


def test_the_containers_checker_accepts_the_policys_containers_and_nothing_else():
    """The fuzz test's oracle: it must find each kind of escape (else it proves nothing)."""
    request = check_request(ENCLAVE, "hub", "server.start", OK_START)
    good = inspect_of(server_spec(ENCLAVE, request))
    assert container_problems(ENCLAVE, good) == []
    run = check_request(ENCLAVE, "runner", "reexec.start", {"project": "cardio", "run_id": RUN})
    assert container_problems(ENCLAVE, inspect_of(reexec_spec(ENCLAVE, run))) == []
    mutations = {
        "image": lambda a: a["Config"].update(Image="alpine"),
        "root": lambda a: a["Config"].update(User="0"),
        "privileged": lambda a: a["HostConfig"].update(Privileged=True),
        "cap_add": lambda a: a["HostConfig"].update(CapAdd=["SYS_ADMIN"]),
        "cap_drop": lambda a: a["HostConfig"].update(CapDrop=[]),
        "seccomp": lambda a: a["HostConfig"].update(SecurityOpt=["no-new-privileges:true"]),
        "rw root": lambda a: a["HostConfig"].update(ReadonlyRootfs=False),
        "network": lambda a: a["HostConfig"].update(NetworkMode="unit-project-diabetes"),
        "mount": lambda a: a["Mounts"].append({"Type": "bind", "Source": "/", "RW": True}),
        "data rw": lambda a: a["Mounts"][2].update(RW=True),
        "labels": lambda a: a["Config"]["Labels"].update({"havre.project": "other"}),
    }
    import copy

    for what, mutate in mutations.items():
        attrs = copy.deepcopy(good)
        mutate(attrs)
        assert container_problems(ENCLAVE, attrs), what


def test_the_broker_logs_each_refusal_it_audits(tmp_path, json_log):
    """The broker's own handling (before any Docker call): each refusal is written to its
    audit file and logged as ``broker.refused``, one line each, naming caller and user."""
    from havre.broker.service import AuditLog, Broker

    audit = tmp_path / "audit.jsonl"
    broker = Broker(
        ENCLAVE, {"hub": "hub-secret", "runner": "runner-secret"}, AuditLog(audit), None
    )
    assert broker.handle(None, "server.start", OK_START)[0] == 401
    status, _ = broker.handle("Bearer runner-secret", "server.start", OK_START)
    assert status == 403
    audited = [json.loads(line) for line in audit.read_text().splitlines()]
    logged = json_log.events("broker.refused")
    assert [(a["caller"], a["status"]) for a in audited] == [
        (line["caller"], line["status"]) for line in logged
    ]
    assert [line["caller"] for line in logged] == ["unauthenticated", "runner"]
    assert logged[1]["user"] == OK_START["user"] and logged[1]["action"] == "server.start"
