"""The local Docker engine, for the tests that create containers themselves with the broker's
own code rather than through a running enclave (tests/integration/test_desktop_hardening.py,
tests/e2e/test_desktop_pixels.py).

A test that can't have what it needs skips, naming the machine capability that is missing (a
strict run fails on such a skip: tests/skip_policy.py).
"""

from __future__ import annotations

import docker
import pytest


def engine_with_images(*images: str) -> docker.APIClient:
    """A client of the local engine's API (120 s timeout) once it answers and holds every one
    of ``images``; otherwise the calling test or fixture skips, saying what to start or
    build."""
    try:
        client = docker.APIClient(version="auto", timeout=120)
        client.ping()
    except Exception as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"needs a running Docker engine (scripts/run-tests.sh starts one): {err}")
    for image in images:
        try:
            client.inspect_image(image)
        except docker.errors.ImageNotFound:
            pytest.skip(f"needs image {image}: build it with `bash images/build.sh`")
    return client
