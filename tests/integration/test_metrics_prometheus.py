"""A real Prometheus server scrapes the egress service's ``/metrics`` (issue #19).

Debian's ``prometheus`` (installed by ``scripts/run-tests.sh``) is started by the test on
loopback with a generated configuration whose one job scrapes the egress app, which the test
runs in-process on 127.0.0.1 (the real tornado app over a real database; no Docker needed).
The test waits for a successful scrape and asks Prometheus's HTTP API for every series the
service exports (``egress.monitoring.metrics.series_names``), and for some values.

Attack and control with the same server: once ``monitoring.scrape_from`` no longer holds
127.0.0.1, Prometheus's scrapes are refused (``up`` drops to 0, the target's last error names
the 403); set back, they succeed again.
"""

from __future__ import annotations

import copy
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from egress.monitoring.metrics import series_names
from egress.store.db import make_engine
from havre.enclave.config import MonitoringSettings, parse_enclave_config
from tests.unit.egress.conftest import (  # the egress unit tests' fixtures
    ACTORS,
    ENCLAVE,
    clock,
    make_service,
    new_sqlite_database,
    outputs,
    service,
    signing_key,
    sqlite_template,
)
from tests.unit.egress.test_core import new_request, review, web_service
from tests.unit.egress.test_grafana_dashboard import DASHBOARD, expressions

__all__ = ["clock", "make_service", "outputs", "service", "signing_key", "sqlite_template"]
__all__ += ["web_service"]

olivia, oscar = ACTORS["olivia"], ACTORS["oscar"]
DEADLINE = 90  # seconds to wait for a scrape (the interval is one second)


@pytest.fixture
def enclave():
    data = {**copy.deepcopy(ENCLAVE), "monitoring": {"scrape_from": ["127.0.0.1/32"]}}
    return parse_enclave_config(data, source="integration")


@pytest.fixture
def engine(sqlite_template, tmp_path):
    engine = make_engine(new_sqlite_database(sqlite_template, tmp_path))
    yield engine
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(web_service: str, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server on loopback scraping the egress app every second; its API URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed: `apt-get install -y prometheus`")
    target = web_service.split("/")[2]  # 127.0.0.1:<port>
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: havre-egress\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: requests.get(f"{api}/-/ready", timeout=5).status_code == 200, "ready")
        yield api
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"Prometheus: not {what} after {DEADLINE} s")


def query(api: str, expression: str) -> list[dict]:
    answer = requests.get(f"{api}/api/v1/query", params={"query": expression}, timeout=10)
    assert answer.status_code == 200, f"{expression}: {answer.text}"  # a PromQL error is a 400
    return answer.json()["data"]["result"]


def up(api: str) -> float | None:
    result = query(api, 'up{job="havre-egress"}')
    return float(result[0]["value"][1]) if result else None


def target_error(api: str) -> str:
    targets = requests.get(f"{api}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
    return targets[0].get("lastError", "") if targets else ""


def test_a_real_prometheus_scrapes_every_series(service, enclave, web_service, prometheus):
    rid, files = new_request(service, {"tables/regions.csv": "t", "notes.txt": "n"})
    ids = [f["id"] for f in files.values()]
    for checker in (olivia, oscar):
        review(service, rid, checker, {i: "approve" for i in ids})
    service.approve(olivia, rid)
    service.release(oscar, rid)
    new_request(service, {"notes.txt": "n"})  # submitted, waiting for review
    assert service.verify_audit().ok
    # a refusal through the web layer: bob asks for a request that does not exist
    asked = requests.get(
        web_service + "api/requests/nosuch", headers={"X-Test-User": "bob"}, timeout=30
    )
    assert asked.status_code == 404

    _wait(
        lambda: up(prometheus) == 1 and query(prometheus, "havre_egress_releases_total"), "scraped"
    )
    missing = [name for name in series_names() if not query(prometheus, name)]
    assert not missing, f"series Prometheus does not have: {missing}"
    assert float(query(prometheus, "havre_egress_releases_total")[0]["value"][1]) == 1
    released = query(prometheus, 'havre_egress_requests{project="cardio",state="released"}')
    assert float(released[0]["value"][1]) == 1
    failing = query(prometheus, 'havre_egress_sdc_failures_total{rule="threshold"}')
    assert float(failing[0]["value"][1]) == 1
    refused = query(prometheus, 'havre_egress_refusals_total{reason="not_found"}')
    assert float(refused[0]["value"][1]) == 1
    assert float(query(prometheus, "havre_egress_audit_last_verify_ok")[0]["value"][1]) == 1
    quantile = query(
        prometheus, "histogram_quantile(0.5, havre_egress_time_to_release_seconds_bucket)"
    )
    assert quantile and float(quantile[0]["value"][1]) > 0

    # every expression of the Grafana dashboard evaluates on the real server, with data
    dashboard = json.loads(DASHBOARD.read_text())
    for title, expression in expressions(dashboard):
        if expression.startswith("label_values("):  # a Grafana function, not PromQL
            continue
        promql = expression.replace("$__rate_interval", "1m").replace("$project", ".*")
        assert query(prometheus, promql) is not None, f"{title}: {promql}"
    empty = [
        e
        for _, e in expressions(dashboard)
        if "rate(" not in e
        and "increase(" not in e
        and not e.startswith("label_values(")
        and not query(prometheus, e.replace("$project", ".*"))
    ]
    assert not empty, f"dashboard expressions without data: {empty}"

    # attack: Prometheus's address is no longer allowed -> its scrapes are refused
    service.enclave = replace(enclave, monitoring=MonitoringSettings(("127.0.0.2/32",)))
    _wait(lambda: up(prometheus) == 0, "refused")
    assert "403" in target_error(prometheus)
    # control: allowed again -> scraped again
    service.enclave = enclave
    _wait(lambda: up(prometheus) == 1, "scraped again")
