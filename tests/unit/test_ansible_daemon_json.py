"""The Docker host role's daemon.json: the operator's file merged with Havre's settings,
rendered as Ansible renders the template, with the role's own defaults.

The merge never drops a key of the operator's; the two security settings always apply; the
operational defaults (live-restore, log rotation) fill in only what the operator left unset;
another log driver (the site's syslog or journald) keeps its options untouched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "havre_docker_host"
templating = pytest.importorskip("ansible.template", reason="ansible-core is a dev dependency")
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def merged(current: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    from ansible.parsing.dataloader import DataLoader

    variables = {**DEFAULTS, "havre_docker_host_daemon_current": current, **overrides}
    templar = templating.Templar(loader=DataLoader(), variables=variables)
    text = templar.template((ROLE / "templates" / "daemon.json.j2").read_text())
    return json.loads(text)


def flat(d: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in d.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= flat(value, prefix + key + ".")
    return keys


def test_a_host_without_a_daemon_json_gets_havres_settings():
    assert merged({}) == {
        "icc": False,
        "no-new-privileges": True,
        "live-restore": True,
        "log-opts": {"max-size": "50m", "max-file": "5"},
    }


OPERATOR = {
    "data-root": "/srv/docker",
    "registry-mirrors": ["https://mirror.hospital.example"],
    "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}],
    "log-opts": {"max-size": "200m", "labels": "team"},
    "live-restore": False,
    "icc": True,
}


def test_no_key_of_the_operators_is_dropped_and_security_always_applies():
    result = merged(OPERATOR)
    assert flat(OPERATOR) <= flat(result)  # every key, nested ones too
    # the operator's own choices are kept where Havre only has a default
    assert result["data-root"] == "/srv/docker"
    assert result["registry-mirrors"] == OPERATOR["registry-mirrors"]
    assert result["default-address-pools"] == OPERATOR["default-address-pools"]
    assert result["live-restore"] is False
    assert result["log-opts"] == {"max-size": "200m", "labels": "team", "max-file": "5"}
    # ...but not for the two security settings
    assert result["icc"] is False and result["no-new-privileges"] is True


def test_another_log_driver_keeps_its_options():
    syslog = {"log-driver": "syslog", "log-opts": {"syslog-address": "udp://siem:514"}}
    assert merged(syslog)["log-opts"] == {"syslog-address": "udp://siem:514"}
    journald = {"log-driver": "journald"}
    assert "log-opts" not in merged(journald)
    # control: the json-file driver named explicitly gets the rotation
    assert merged({"log-driver": "json-file"})["log-opts"]["max-file"] == "5"
    assert merged({"log-driver": "local"})["log-opts"]["max-size"] == "50m"


def test_merging_twice_changes_nothing():
    once = merged(OPERATOR)
    assert merged(once) == once  # so a second playbook run reports no change


def test_the_inventory_can_choose_other_values():
    result = merged({}, havre_docker_host_log_opts={"max-size": "10m", "max-file": "3"})
    assert result["log-opts"] == {"max-size": "10m", "max-file": "3"}


@pytest.mark.parametrize("current", [{}, {"live-restore": True}])
def test_a_swarm_host_gets_live_restore_off_whatever_the_file_said(current):
    """Swarm mode refuses an engine with live-restore ("incompatible with swarm mode"), so a
    cluster host (cluster.yml sets havre_docker_host_swarm) gets it off, even where the
    operator's file or an earlier single-host run turned it on. Control: a single host keeps
    the file's value, or Havre's default."""
    swarm = merged(current, havre_docker_host_swarm=True)
    assert swarm["live-restore"] is False
    assert swarm["icc"] is False and swarm["no-new-privileges"] is True
    assert merged(current)["live-restore"] is True
