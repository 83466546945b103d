"""The host's command line installs as ``havre[cli]``, without the hub's packages: its modules
must import without JupyterHub, OAuthenticator or DockerSpawner."""

from __future__ import annotations

import subprocess
import sys

BLOCK_HUB_PACKAGES = """
import builtins, sys
real = builtins.__import__
def guarded(name, *args, **kwargs):
    if name.split(".")[0] in {"jupyterhub", "oauthenticator", "dockerspawner"}:
        raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
    return real(name, *args, **kwargs)
builtins.__import__ = guarded
import importlib
importlib.import_module(sys.argv[1])
"""


def imports_without_hub_packages(module: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_HUB_PACKAGES, module], capture_output=True, text=True
    )


def test_the_command_line_imports_without_the_hub_packages():
    for module in (
        "havre.host.cli",
        "havre.host.stack",
        "havre.host.layout",
        "havre.host.containers",
        "havre.host.services",
        "havre.host.demo",
        "havre.enclave.ports",
    ):
        result = imports_without_hub_packages(module)
        assert result.returncode == 0, (module, result.stderr[-2000:])


def test_the_guard_works_positive_control():
    result = imports_without_hub_packages("spawner.hub_config")  # the hub's wiring needs them
    assert result.returncode != 0 and "blocked by the test" in result.stderr
