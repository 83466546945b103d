"""``/metrics`` of the live egress container (issue #19): refused unless configured, served
only to the configured address.

Attack: from the host (the front network's gateway address, not in ``scrape_from``) and
through the hub's proxy (which forwards only ``/services/egress/``). Control: from inside
the egress container over its loopback, once the enclave config (re-read live) names
127.0.0.1; the same host probe stays refused. The config is put back afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests

from havre.enclave.live import publish_config
from havre.enclave.ports import EGRESS_PORT
from havre.host import layout

PROBE = (
    "import urllib.request, urllib.error\n"
    "try:\n"
    "    r = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=10)\n"
    "    print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code); print(e.read().decode())\n"
)


def _from_inside(container) -> tuple[int, str]:
    code = PROBE.format(port=EGRESS_PORT)
    result = container.exec_run(["/opt/havre/venv/bin/python", "-c", code])
    status, _, body = result.output.decode().partition("\n")
    return int(status), body


def _egress_address(enclave) -> str:
    container = enclave.egress_container()
    container.reload()
    networks = container.attrs["NetworkSettings"]["Networks"]
    return networks[layout.front_network_name(enclave.config)]["IPAddress"]


def test_live_metrics_answer_only_the_configured_address(enclave):
    egress = enclave.egress_container()
    from_host = f"http://{_egress_address(enclave)}:{EGRESS_PORT}/metrics"

    # attack (nothing configured): refused from the host and from inside alike
    off = requests.get(from_host, timeout=30)
    assert off.status_code == 403 and "set monitoring.scrape_from" in off.text
    assert _from_inside(egress)[0] == 403
    # through the hub's proxy: not there (the proxy forwards the service prefix only)
    proxied = requests.get(enclave.url.rstrip("/") + "/services/egress/metrics", timeout=30)
    assert proxied.status_code == 404 and "havre_egress" not in proxied.text

    source = Path(enclave.config.source)
    original = source.read_text()
    try:
        source.write_text(original + "monitoring:\n  scrape_from: [127.0.0.1/32]\n")
        publish_config(enclave.config)
        deadline = time.monotonic() + 60
        while _from_inside(egress)[0] != 200 and time.monotonic() < deadline:
            time.sleep(1)
        status, body = _from_inside(egress)  # control: the configured address
        assert status == 200 and "havre_egress_requests" in body
        assert "havre_egress_audit_head_seq" in body
        refused = requests.get(from_host, timeout=30)  # attack: any other address
        assert refused.status_code == 403 and "is not one of them" in refused.text
        assert "havre_egress" not in refused.text
    finally:
        source.write_text(original)
        publish_config(enclave.config)


def test_the_hub_s_metrics_need_the_read_metrics_scope(enclave):
    """``/hub/metrics`` (JupyterHub's own, docs/sysadmin/operations.md): refused without a
    sign-in and to a researcher (no ``read:metrics``); control: a hub administrator."""
    url = enclave.url.rstrip("/") + "/hub/metrics"
    anonymous = requests.get(url, timeout=30, allow_redirects=False)
    assert anonymous.status_code in (302, 403) and "jupyterhub_" not in anonymous.text

    alice = enclave.user("alice")
    researcher = alice.session.get(alice.url("hub/metrics"), timeout=30, allow_redirects=False)
    assert researcher.status_code == 403 and "jupyterhub_" not in researcher.text

    adam = enclave.user("adam")
    admin = adam.session.get(adam.url("hub/metrics"), timeout=30)
    assert admin.status_code == 200, admin.text[:300]
    assert "jupyterhub_running_servers" in admin.text and "jupyterhub_total_users" in admin.text
