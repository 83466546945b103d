"""``/metrics`` of the live egress container (issue #19): refused unless configured, served
only to the configured address.

Attack: from the host (the front network's gateway address, not in ``scrape_from``) and
through the hub's proxy (which forwards only ``/services/egress/``). Control: from inside
the egress container over its loopback, once the enclave config (re-read live) names
127.0.0.1; the same host probe stays refused. The config is put back afterwards.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from havre.enclave.config import load_enclave_config
from havre.enclave.live import publish_config
from havre.enclave.ports import EGRESS_METRICS_PORT, EGRESS_PORT
from havre.host import layout, stack
from tests import web_coverage
from tests.enclave_fixtures import free_port

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

    # what Prometheus holds (docs/sysadmin/operations.md): the hub service "prometheus"'s
    # token (secrets/hub-metrics-token, made by havre up), read:metrics only. It reads the
    # metrics with no session, and nothing else; another service's token (the egress
    # service's, without read:metrics) is refused the metrics
    secrets_dir = enclave.config.state_dir / "secrets"

    def with_token(name: str, path: str) -> requests.Response:
        token = (secrets_dir / name).read_text().strip()
        headers = {"Authorization": f"token {token}"}
        return requests.get(enclave.url.rstrip("/") + path, headers=headers, timeout=30)

    scraped = with_token("hub-metrics-token", "/hub/metrics")
    assert scraped.status_code == 200 and "jupyterhub_running_servers" in scraped.text
    assert with_token("hub-metrics-token", "/hub/api/users").status_code == 403
    other = with_token("egress-api-token", "/hub/metrics")
    assert other.status_code == 403 and "jupyterhub_" not in other.text


FIREWALL_ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "havre_firewall"
NS_PROBE = (
    "import sys, urllib.request, urllib.error\n"
    "try:\n"
    "    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
    "    print(r.status); print(r.read().decode())\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code); print(e.read().decode())\n"
    "except OSError as e:\n"
    "    print(0); print(repr(e))\n"
)


def _run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _scrape_from(netns: str, url: str) -> tuple[int, str]:
    """GET ``url`` from inside network namespace ``netns`` (0: no connection at all)."""
    out = _run("nsenter", f"--net=/var/run/netns/{netns}", sys.executable, "-c", NS_PROBE, url)
    status, _, body = out.partition("\n")
    return int(status), body


def _free_subnet() -> str:
    """A 10.213.x.0/29 no interface or route of this machine uses (the test's own)."""
    used = _run("ip", "-4", "route", "show") + _run("ip", "-4", "addr", "show")
    for _ in range(50):
        prefix = f"10.213.{secrets.randbelow(250) + 1}."
        if prefix not in used:
            return prefix
    raise AssertionError("no free 10.213.x.0/29 on this machine")


def _firewall_rule(publish: str, scrape_from: str) -> list[str]:
    """The metrics rule of the havre_firewall role's rules.v4, rendered as Ansible renders it
    (the role's defaults, the enclave's variables), as iptables arguments."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    defaults = yaml.safe_load((FIREWALL_ROLE / "defaults" / "main.yml").read_text())
    variables = {
        **defaults,
        "ansible_managed": "test",
        "havre_metrics_publish": publish,
        "havre_metrics_scrape_from": scrape_from,
    }
    rules = Templar(loader=DataLoader(), variables=variables).template(
        (FIREWALL_ROLE / "templates" / "rules.v4.j2").read_text()
    )
    (line,) = [r for r in rules.splitlines() if "metrics from the scraper only" in r]
    return shlex.split(line)[2:]  # without "-A HAVRE-FORWARD"


def test_the_published_metrics_port_answers_only_the_named_scraper(enclave):
    """``monitoring.publish``: ``havre up`` publishes the metrics-only port on one host
    address. Two network namespaces of the test's own reach that address through the host,
    as two machines of a site would: the named scraper (``scrape_from``) reads the metrics
    (control); the other is refused by the service (its own address, not a header's, is
    checked: Docker kept the source), and with the havre_firewall role's rule (rendered from
    the role) its connection is dropped before Docker forwards it, while the scraper still
    reads them. Everything is put back (the egress container is replaced twice)."""
    net = _free_subnet()
    tag = secrets.token_hex(3)
    scraper, other = f"hvms{tag}", f"hvmo{tag}"
    host_addr, scraper_addr, other_host, other_addr = (net + str(i) for i in (1, 2, 5, 6))
    port = free_port()
    chain = f"HVM-{tag}"
    source = Path(enclave.config.source)
    original = source.read_text()
    made: list[tuple[str, ...]] = []
    try:
        for ns, host_side, ns_addr, host_ip in (
            (scraper, f"hvs{tag}", scraper_addr, host_addr),
            (other, f"hvo{tag}", other_addr, other_host),
        ):
            _run("ip", "netns", "add", ns)
            made.append(("ip", "netns", "del", ns))
            _run(
                "ip", "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", ns
            )
            made.append(("ip", "link", "del", host_side))
            _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_side)
            _run("ip", "link", "set", host_side, "up")
            _run("ip", "-n", ns, "addr", "add", f"{ns_addr}/30", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
        # the other machine reaches the published address through the host (one route, no
        # default route)
        _run("ip", "-n", other, "route", "add", f"{host_addr}/32", "via", other_host)

        web_coverage.collect(enclave.egress_container().logs().decode(errors="replace"))
        source.write_text(
            original
            + f"monitoring:\n  scrape_from: {scraper_addr}\n  publish: {host_addr}:{port}\n"
        )
        config = load_enclave_config(source)
        stack.up(config, enclave.options)
        egress = enclave.egress_container()
        bindings = egress.attrs["HostConfig"]["PortBindings"]
        assert bindings == {
            f"{EGRESS_METRICS_PORT}/tcp": [{"HostIp": host_addr, "HostPort": str(port)}]
        }
        url = f"http://{host_addr}:{port}/metrics"

        deadline = time.monotonic() + 60  # the new egress container starting
        while _scrape_from(scraper, url)[0] != 200 and time.monotonic() < deadline:
            time.sleep(1)
        status, body = _scrape_from(scraper, url)  # control: the named scraper
        assert status == 200 and "havre_egress_requests" in body, body[:300]
        status, body = _scrape_from(other, url)  # attack: any other machine
        assert status == 403 and f"{other_addr} is not one of them" in body, body[:300]
        assert "havre_egress" not in body
        status, body = _scrape_from(
            scraper, f"http://{host_addr}:{port}/services/egress/api/whoami"
        )
        assert status == 404  # the metrics-only port serves nothing else

        # the firewall's rule, as the role writes it, in a chain of the test's own
        rule = _firewall_rule(f"{host_addr}:{port}", scraper_addr)
        _run("iptables", "-N", chain)
        made.append(("iptables", "-X", chain))
        made.append(("iptables", "-F", chain))
        _run("iptables", "-A", chain, *rule)
        _run("iptables", "-I", "DOCKER-USER", "1", "-j", chain)
        made.append(("iptables", "-D", "DOCKER-USER", "-j", chain))
        status, body = _scrape_from(other, url)
        assert status == 0, body[:300]  # dropped: no answer at all, not even the 403
        status, body = _scrape_from(scraper, url)  # the control, through the same rule
        assert status == 200 and "havre_egress_requests" in body
    finally:
        for command in reversed(made):
            subprocess.run(command, capture_output=True)
        try:
            web_coverage.collect(enclave.egress_container().logs().decode(errors="replace"))
        finally:
            source.write_text(original)
            stack.up(load_enclave_config(source), enclave.options)
    assert not enclave.egress_container().attrs["HostConfig"]["PortBindings"]
