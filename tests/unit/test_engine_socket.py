"""The socket the spawn broker mounts is the one of the engine ``havre up`` talks to."""

from __future__ import annotations

import pytest

from havre.host.layout import StackError
from havre.host.services import engine_socket


@pytest.mark.parametrize(
    ("environ", "socket"),
    [
        ({}, "/var/run/docker.sock"),
        ({"DOCKER_HOST": ""}, "/var/run/docker.sock"),
        ({"DOCKER_HOST": "unix:///run/node2.sock"}, "/run/node2.sock"),
        ({"DOCKER_HOST": "unix:///var/run/docker.sock"}, "/var/run/docker.sock"),
    ],
)
def test_the_broker_drives_the_engine_havre_up_talks_to(environ, socket):
    assert engine_socket(environ) == socket


@pytest.mark.parametrize(
    "host", ["tcp://10.0.0.2:2376", "ssh://root@node2", "unix://", "npipe:////./pipe/docker"]
)
def test_an_engine_without_a_local_socket_is_refused_with_a_sentence(host):
    with pytest.raises(StackError, match="is not a Unix socket: the spawn broker drives"):
        engine_socket({"DOCKER_HOST": host})
