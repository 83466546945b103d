"""One definition of a project network for the spawner, ``havre up`` and the host firewall."""

from __future__ import annotations

import re

import pytest

from havre.enclave.networks import (
    project_bridge_name,
    project_network_is_closed,
    project_network_options,
)


@pytest.mark.parametrize("network", ["havre-cardio", "havretest-project-x" * 4, "a"])
def test_bridge_names_fit_linux_and_the_firewall_match(network):
    name = project_bridge_name(network)
    assert re.fullmatch(r"hvp[0-9a-f]{12}", name)  # 15 characters: Linux's limit
    assert project_network_options(network)["com.docker.network.bridge.name"] == name


def test_names_of_different_networks_differ():
    names = {project_bridge_name(f"enclave-project-{n}") for n in range(2000)}
    assert len(names) == 2000


def test_a_network_made_with_these_options_is_accepted_by_the_spawner():
    attrs = {"Internal": True, "EnableIPv6": False, "Options": project_network_options("n")}
    assert project_network_is_closed(attrs)
    assert not project_network_is_closed({**attrs, "Internal": False})
