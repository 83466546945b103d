"""The spawn broker's policy for ``access: desktop`` projects (issue #17), without Docker.

A desktop project's server is two containers the broker builds from the enclave config alone:
the notebook server, listening on loopback only, and its remote desktop, in the notebook's
network namespace, with no mounts and the server's token as its only secret. The table is
request -> the containers built (what ``Broker.start_server`` builds before any Docker call),
or refused with which status and sentence. docs/architecture.md, "Access tiers".
"""

from __future__ import annotations

import copy

import pytest
import yaml

from havre.broker.policy import (
    DESKTOP_OF_LABEL,
    DESKTOP_PORT,
    SERVER_PORT,
    ContainerSpec,
    Refused,
    check_request,
    container_problems,
    desktop_spec,
    server_spec,
)
from havre.enclave.config import EnclaveConfigError, dump_enclave_config, parse_enclave_config
from havre.enclave.seccomp import desktop_profile, notebook_profile, security_opt
from tests.unit.broker_enclave import inspect_of, unit_config

CONFIG = unit_config(
    images={"desktop": "havre/desktop:0.1.0"},
    projects={"renal": {"title": "Renal", "members": ["alice", "a@b.org"], "access": "desktop"}},
)
ENCLAVE = parse_enclave_config(CONFIG, source="unit")
TOKEN = "0123456789abcdef0123456789abcdef"
HUB_ENV = {
    "JUPYTERHUB_API_TOKEN": TOKEN,
    "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/renal/",
    "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/renal/",
}
DESK = {"user": "alice", "project": "renal", "env": HUB_ENV}


def build(body: dict) -> tuple[ContainerSpec, ContainerSpec | None]:
    """What the broker builds for a hub's ``server.start`` (or the refusal it raises)."""
    request = check_request(ENCLAVE, "hub", "server.start", body)
    notebook = server_spec(ENCLAVE, request, dns="10.9.0.1", identity=(2000001, 2000000))
    if not ENCLAVE.project(request.project).desktop:
        return notebook, None
    return notebook, desktop_spec(ENCLAVE, request, notebook=notebook.name)


#: (name, body, expected): expected is "desktop", "browser" (a server without a desktop), or
#: (status, words in the sentence)
TABLE = [
    ("desktop project: server and desktop", DESK, "desktop"),
    ("browser project: no desktop", {"user": "alice", "project": "cardio"}, "browser"),
    (
        "hub behind a base_url",
        {
            **DESK,
            "env": {
                **HUB_ENV,
                "JUPYTERHUB_SERVICE_PREFIX": "/havre/user/alice/renal/",
                "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/havre/user/alice/renal/",
            },
        },
        "desktop",
    ),
    (
        "escaped user name",
        {
            "user": "a@b.org",
            "project": "renal",
            "env": {**HUB_ENV, "JUPYTERHUB_SERVICE_PREFIX": "/user/a@b.org/renal/"},
        },
        "desktop",
    ),
    # the tier is the config's: nothing in the request chooses or shapes the desktop
    *[
        (f"smuggled {key}", {**DESK, key: value}, (400, f"{key} are not accepted"))
        for key, value in [
            ("access", "browser"),
            ("desktop", False),
            ("desktop_image", "evil:1"),
            ("network_mode", "host"),
            ("binds", ["/srv/unit/projects/renal/data:/data"]),
            ("mounts", [{"source": "/", "target": "/host"}]),
            ("cap_add", ["SYS_ADMIN"]),
            ("security_opt", ["seccomp=unconfined"]),
            ("port", 5900),
        ]
    ],
    *[
        (f"env {key}", {**DESK, "env": {**HUB_ENV, key: value}}, (400, "not accepted"))
        for key, value in [
            ("HAVRE_NOTEBOOK_TOKEN", "x" * 32),
            ("HAVRE_SERVER_PREFIX", "/"),
            ("DISPLAY", ":1"),
            ("HAVRE_DESKTOP_GEOMETRY", "9999x9999"),
            # paste and whose audit lines: the config's and the request's, never the hub's env
            ("HAVRE_DESKTOP_PASTE", "inbound-text"),
            ("HAVRE_DESKTOP_USER", "bob"),
        ]
    ],
    # a desktop is built only with its server's token and its own path
    (
        "no token",
        {**DESK, "env": {k: v for k, v in HUB_ENV.items() if k != "JUPYTERHUB_API_TOKEN"}},
        (400, "server's API token"),
    ),
    ("short token", {**DESK, "env": {**HUB_ENV, "JUPYTERHUB_API_TOKEN": "t"}}, (400, "token")),
    (
        "token with a quote (into nginx's config)",
        {**DESK, "env": {**HUB_ENV, "JUPYTERHUB_API_TOKEN": TOKEN + '";'}},
        (400, "token"),
    ),
    *[
        (
            f"prefix {prefix}",
            {**DESK, "env": {**HUB_ENV, "JUPYTERHUB_SERVICE_PREFIX": prefix}},
            (400, "ending in /user/alice/renal/"),
        )
        for prefix in [
            "/user/bob/renal/",
            "/user/alice/cardio/",
            "/",
            "/user/alice/renal",
            "/user/alice/renal/../../x/",
            "/user/alice/renal/|evil/user/alice/renal/",
            "/x y/user/alice/renal/",
        ]
    ],
    # membership is checked before anything is built, as for any server
    ("not a member", {**DESK, "user": "carol"}, (403, "not a member")),
]


@pytest.mark.parametrize(("body", "expected"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE])
def test_what_a_desktop_request_builds(body, expected):
    if isinstance(expected, tuple):
        status, words = expected
        with pytest.raises(Refused) as info:
            build(body)
        assert info.value.status == status, info.value.message
        assert words in info.value.message
        assert info.value.message.endswith(".")
        return
    notebook, desktop = build(body)
    assert (desktop is not None) == (expected == "desktop")
    assert container_problems(ENCLAVE, inspect_of(notebook)) == []
    if desktop is not None:
        assert container_problems(ENCLAVE, inspect_of(desktop)) == []


def test_the_desktop_is_built_from_the_config_only():
    notebook, desktop = build(DESK)
    assert desktop is not None
    assert desktop.name == "unit-desk-renal-alice" and notebook.name == "unit-nb-renal-alice"
    assert desktop.image == "havre/desktop:0.1.0"
    assert desktop.user == "1100:1100" and desktop.command is None
    assert desktop.mounts == ()  # no /data, no home, no outputs
    assert desktop.network == "container:unit-nb-renal-alice"
    host = desktop.host_config
    assert host["network_mode"] == "container:unit-nb-renal-alice"
    assert host["cap_drop"] == ["ALL"] and host["privileged"] is False
    # Havre's desktop profile (the notebook's allow-list: nothing more was needed)
    assert host["security_opt"] == ["no-new-privileges:true", security_opt("desktop")]
    assert host["read_only"] is True and host["ipc_mode"] == "private"
    # desktop_limits' defaults, not the notebook servers' limits (1.5 CPU, 1G, 300 pids)
    assert host["pids_limit"] == 512 and host["mem_limit"] == host["memswap_limit"] == 1024**3
    assert host["cpu_quota"] == 100_000 and host["cpu_period"] == 100_000
    # joining another container's network namespace: nothing of the network is its own
    assert not {"dns", "sysctls", "ports", "network", "extra_hosts"} & set(host)
    assert desktop.hostname == ""
    # its only environment: its server's path and token (nothing else of the hub's), the
    # config's culling and paste settings, and whose desktop it is (for its audit lines)
    assert dict(desktop.environment) == {
        "HAVRE_SERVER_PREFIX": "/user/alice/renal/",
        "HAVRE_NOTEBOOK_TOKEN": TOKEN,
        "HAVRE_DESKTOP_IDLE_SECONDS": "3600",  # culling.idle_seconds (default)
        "HAVRE_DESKTOP_PASTE": "none",  # desktop_paste (default)
        "HAVRE_DESKTOP_USER": "alice",
        "HAVRE_DESKTOP_PROJECT": "renal",
    }
    assert desktop.labels[DESKTOP_OF_LABEL] == notebook.name
    assert DESKTOP_PORT != SERVER_PORT


def test_a_desktop_is_culled_by_the_enclaves_idle_seconds():
    """The desktop stops after ``culling.idle_seconds`` without keyboard or mouse input (its
    own Chromium keeps the server's activity fresh); 0 (never) reaches it as 0."""
    for idle in (90, 0):
        enclave = parse_enclave_config({**CONFIG, "culling": {"idle_seconds": idle}}, source="u")
        request = check_request(enclave, "hub", "server.start", DESK)
        desktop = desktop_spec(enclave, request)
        assert desktop.environment["HAVRE_DESKTOP_IDLE_SECONDS"] == str(idle)


def test_desktop_limits_come_from_the_config_with_a_per_project_override():
    config = {
        **CONFIG,
        "desktop_limits": {"cpu": 0.5, "memory": "768M", "pids": 256},
        "projects": {
            **CONFIG["projects"],
            "hepato": {
                "title": "Hepato",
                "members": ["alice"],
                "access": "desktop",
                "desktop_limits": {"memory": "2G"},  # cpu and pids from desktop_limits
            },
        },
    }
    enclave = parse_enclave_config(config, source="u")
    for slug, (cpu, memory, pids) in {
        "renal": (50_000, 768 * 1024**2, 256),
        "hepato": (50_000, 2 * 1024**3, 256),
    }.items():
        env = {**HUB_ENV, "JUPYTERHUB_SERVICE_PREFIX": f"/user/alice/{slug}/"}
        body = {**DESK, "project": slug, "env": env}
        request = check_request(enclave, "hub", "server.start", body)
        host = desktop_spec(enclave, request).host_config
        assert (
            host["cpu_quota"],
            host["mem_limit"],
            host["memswap_limit"],
            host["pids_limit"],
        ) == (
            cpu,
            memory,
            memory,
            pids,
        ), slug
        # the notebook server keeps the project's own limits
        assert server_spec(enclave, request).host_config["mem_limit"] == 1024**3


def test_inbound_paste_is_the_projects_setting_and_a_more_permissive_desktop_is_a_problem():
    """``desktop_paste`` reaches the desktop's environment per project (renal: the default,
    none; hepato: inbound-text). A running desktop whose environment allows paste in a
    project that doesn't (the config changed, or a hand-made container) is a problem;
    control: the same container in the project that allows it is not."""
    config = {
        **CONFIG,
        "projects": {
            **CONFIG["projects"],
            "hepato": {
                "title": "Hepato",
                "members": ["alice"],
                "access": "desktop",
                "desktop_paste": "inbound-text",
            },
        },
    }
    enclave = parse_enclave_config(config, source="u")
    built = {}
    for slug, paste in {"renal": "none", "hepato": "inbound-text"}.items():
        env = {**HUB_ENV, "JUPYTERHUB_SERVICE_PREFIX": f"/user/alice/{slug}/"}
        request = check_request(
            enclave, "hub", "server.start", {**DESK, "project": slug, "env": env}
        )
        built[slug] = desktop_spec(enclave, request)
        assert built[slug].environment["HAVRE_DESKTOP_PASTE"] == paste, slug
        assert built[slug].environment["HAVRE_DESKTOP_PROJECT"] == slug
        assert container_problems(enclave, inspect_of(built[slug])) == []
    # renal's desktop with hepato's setting: flagged
    attrs = inspect_of(built["renal"])
    attrs["Config"]["Env"] = [
        "HAVRE_DESKTOP_PASTE=inbound-text" if e.startswith("HAVRE_DESKTOP_PASTE=") else e
        for e in attrs["Config"]["Env"]
    ]
    assert container_problems(enclave, attrs) == [
        "unit-desk-renal-alice: inbound paste 'inbound-text', the project allows none"
    ]
    # control: hepato's own desktop, with the same setting, is within its project's policy
    assert "HAVRE_DESKTOP_PASTE=inbound-text" in inspect_of(built["hepato"])["Config"]["Env"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            {"projects": {"renal": {"title": "R", "access": "desktop", "desktop_paste": "text"}}},
            "projects.renal.desktop_paste: must be 'none' (nothing pasted in, the default) or "
            "'inbound-text'",
        ),
        (
            {
                "projects": {
                    "renal": {"title": "R", "access": "desktop", "desktop_paste": "inbound"}
                }
            },
            "did you mean 'inbound-text'?",
        ),
        (
            {"projects": {"renal": {"title": "R", "access": "desktop", "desktop_paste": False}}},
            "(got False); note: YAML reads unquoted yes/no",
        ),
        (
            {"projects": {"renal": {"title": "R", "access": "desktop", "desktop_pastes": "none"}}},
            "unknown key 'desktop_pastes', did you mean 'desktop_paste'?",
        ),
        (
            {"projects": {"cardio": {"title": "C", "desktop_paste": "inbound-text"}}},
            "projects.cardio.desktop_paste: only an 'access: desktop' project has remote "
            "desktops to paste into",
        ),
        (
            {"projects": {"cardio": {"title": "C", "desktop_paste": "none"}}},
            "remove desktop_paste or set access: desktop",
        ),
    ],
)
def test_a_bad_desktop_paste_gets_a_clear_sentence(change, words):
    with pytest.raises(EnclaveConfigError) as info:
        parse_enclave_config({**CONFIG, **change}, source="u")
    assert words in str(info.value)


def test_desktop_paste_is_in_the_effective_config_and_reads_back():
    """The effective config (``dump_enclave_config``) shows each desktop project's setting,
    the default too, and reads back to the same projects."""
    config = {**CONFIG, "projects": {**CONFIG["projects"]}}
    config["projects"]["hepato"] = {
        "title": "H",
        "members": ["alice"],
        "access": "desktop",
        "desktop_paste": "inbound-text",
    }
    enclave = parse_enclave_config(config, source="u")
    dumped = yaml.safe_load(dump_enclave_config(enclave))
    assert dumped["projects"]["hepato"]["desktop_paste"] == "inbound-text"
    assert dumped["projects"]["renal"]["desktop_paste"] == "none"
    assert "desktop_paste" not in dumped["projects"]["cardio"]  # browser tier: no desktop
    again = parse_enclave_config(dumped, source="dump")
    assert again.projects == enclave.projects


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"desktop_limits": {"memory": "100M"}}, "desktop_limits.memory: must be at least 256M"),
        ({"desktop_limits": {"cpu": 0}}, "desktop_limits.cpu: must be > 0"),
        ({"desktop_limits": {"pids": 8}}, "desktop_limits.pids: must be between 32"),
        ({"desktop_limits": {"memroy": "1G"}}, "did you mean 'memory'"),
        ({"desktop_limits": "1G"}, "desktop_limits: must be a mapping"),
        (
            {"projects": {"cardio": {"title": "C", "desktop_limits": {"memory": "1G"}}}},
            "projects.cardio.desktop_limits: only an 'access: desktop' project",
        ),
        (
            {
                "projects": {
                    "renal": {"title": "R", "access": "desktop", "desktop_limits": {"pids": "x"}}
                }
            },
            "projects.renal.desktop_limits.pids: must be an integer",
        ),
    ],
)
def test_bad_desktop_limits_get_a_clear_sentence(change, words):
    with pytest.raises(EnclaveConfigError) as info:
        parse_enclave_config({**CONFIG, **change}, source="u")
    assert words in str(info.value)


def test_the_desktop_profile_is_the_notebook_profile_plus_its_measured_additions():
    desktop, notebook = desktop_profile(), notebook_profile()
    assert desktop["defaultAction"] == "SCMP_ACT_ERRNO" and desktop["defaultErrnoRet"] == 1
    added = desktop["syscalls"][: len(desktop["syscalls"]) - len(notebook["syscalls"])]
    assert desktop["syscalls"][len(added) :] == notebook["syscalls"]
    # measured (havre/enclave/seccomp/desktop.json): the desktop needs nothing more; an
    # addition must come with that file's comment saying which call and why
    assert added == []
    assert {k: v for k, v in desktop.items() if k != "syscalls"} == {
        k: v for k, v in notebook.items() if k != "syscalls"
    }


def test_a_desktop_projects_server_listens_on_loopback_only():
    """Control: the same hub environment for a browser-tier server keeps the hub's address."""
    notebook, _ = build(DESK)
    assert (
        notebook.environment["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:8888/user/alice/renal/"
    )
    # the rest of the server is the browser tier's: network, mounts, hardening
    assert notebook.network == "unit-project-renal"
    assert {m.target for m in notebook.mounts} == {
        "/home/researcher",
        "/home/researcher/outputs",
        "/data",
    }
    assert notebook.host_config["security_opt"][1].startswith("seccomp=")
    control, none = build(
        {
            "user": "alice",
            "project": "cardio",
            "env": {**HUB_ENV, "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/alice/cardio/"},
        }
    )
    assert none is None
    assert control.environment["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8888/user/alice/cardio/"
    # without a service URL from the hub, the path comes from the checked prefix
    env = {k: v for k, v in HUB_ENV.items() if k != "JUPYTERHUB_SERVICE_URL"}
    notebook, _ = build({**DESK, "env": env})
    assert (
        notebook.environment["JUPYTERHUB_SERVICE_URL"] == "http://127.0.0.1:8888/user/alice/renal/"
    )


def test_a_browser_tier_project_never_gets_a_desktop():
    request = check_request(ENCLAVE, "hub", "server.start", {**DESK, "project": "cardio"})
    with pytest.raises(Refused) as info:
        desktop_spec(ENCLAVE, request)
    assert info.value.status == 409 and "browser-tier project" in info.value.message
    # control: the same request for the desktop project
    assert desktop_spec(ENCLAVE, check_request(ENCLAVE, "hub", "server.start", DESK))


def test_the_containers_checker_finds_each_escape_of_a_desktop():
    """The oracle the live broker's tests use on every container: a desktop that differs from
    the policy in any one way is reported."""
    notebook, desktop = build(DESK)
    assert desktop is not None
    good = inspect_of(desktop)
    assert container_problems(ENCLAVE, good) == []
    # the engine reports the namespace's owner by id
    by_id = inspect_of(desktop, network_mode="container:" + "f" * 64)
    assert container_problems(ENCLAVE, by_id, container_ids={notebook.name: "f" * 64}) == []
    assert container_problems(ENCLAVE, by_id, container_ids={notebook.name: "e" * 64})
    mutations = {
        "notebook image": lambda a: a["Config"].update(Image="havre/notebook:0.1.0"),
        "root": lambda a: a["Config"].update(User="0:0"),
        "privileged": lambda a: a["HostConfig"].update(Privileged=True),
        "cap_add": lambda a: a["HostConfig"].update(CapAdd=["SYS_ADMIN"]),
        "cap_drop": lambda a: a["HostConfig"].update(CapDrop=[]),
        "no-new-privileges": lambda a: a["HostConfig"].update(SecurityOpt=[]),
        "unconfined": lambda a: a["HostConfig"]["SecurityOpt"].append("seccomp=unconfined"),
        "docker's default seccomp": lambda a: a["HostConfig"].update(
            SecurityOpt=["no-new-privileges:true"]
        ),
        "rw root": lambda a: a["HostConfig"].update(ReadonlyRootfs=False),
        "project network": lambda a: a["HostConfig"].update(NetworkMode="unit-project-renal"),
        "host network": lambda a: a["HostConfig"].update(NetworkMode="host"),
        "another's namespace": lambda a: a["HostConfig"].update(
            NetworkMode="container:unit-nb-renal-a-at-b.org"
        ),
        "data": lambda a: a["Mounts"].append(
            {"Type": "bind", "Source": "/srv/unit/projects/renal/data", "RW": False}
        ),
        "home": lambda a: a["Mounts"].append(
            {"Type": "bind", "Source": "/srv/unit/projects/renal/homes/alice", "RW": True}
        ),
        "a browser project": lambda a: (
            a["Config"]["Labels"].update({"havre.project": "cardio"}),
            a.update(Name="/unit-desk-cardio-alice"),
            a["Config"]["Labels"].update({DESKTOP_OF_LABEL: "unit-nb-cardio-alice"}),
            a["HostConfig"].update(NetworkMode="container:unit-nb-cardio-alice"),
        ),
        "name": lambda a: a.update(Name="/unit-desk-renal-bob"),
        "user label": lambda a: a["Config"]["Labels"].update({"havre.user": "../x"}),
        "desktop-of label": lambda a: a["Config"]["Labels"].update({DESKTOP_OF_LABEL: "x"}),
    }
    for what, mutate in mutations.items():
        attrs = copy.deepcopy(good)
        mutate(attrs)
        assert container_problems(ENCLAVE, attrs), what
