"""The egress service's Prometheus metrics (``/metrics``, issue #19).

* Every series follows the requests' life: states by project, the waiting-time histograms,
  releases, refusals by kind, SDC failures by rule, the outbox, the audit head and the last
  verification; values checked against the database and the fake clock (SQLite, PostgreSQL).
* Access: only a client whose own address is in ``monitoring.scrape_from`` reads them. Attack:
  a scrape from another loopback address (127.0.0.2), a scrape carrying ``X-Forwarded-For``,
  the same path under the service prefix (what the hub's proxy forwards), and a scrape with
  no ``scrape_from``; control: the same scrape from 127.0.0.1.
* A scrape's cost is bounded: counters are read past the last row seen, ``batch`` rows a table.
* The refusals tally is shared by the worker processes through files.

A real Prometheus server scrapes the same app in tests/integration/test_metrics_prometheus.py.
"""

from __future__ import annotations

import copy
import http.client
import multiprocessing
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from egress.monitoring.metrics import BUCKETS, EgressCollector, series_names
from egress.monitoring.refusals import RefusalTally, reason_of
from havre.enclave.config import EnclaveConfigError, MonitoringSettings, parse_enclave_config
from tests.unit.egress.conftest import ACTORS, ENCLAVE
from tests.unit.egress.refusal_workers import add_refusals
from tests.unit.egress.test_core import new_request, review
from tests.unit.egress.test_core import web_service as web_service  # the fixture

alice, bob, olivia, oscar = (ACTORS[n] for n in ("alice", "bob", "olivia", "oscar"))
MONITORED = {**ENCLAVE, "monitoring": {"scrape_from": ["127.0.0.1/32"]}}


@pytest.fixture
def enclave():
    return parse_enclave_config(copy.deepcopy(MONITORED), source="unit")


def get(url: str, path: str, *, source: str = "127.0.0.1", headers: dict | None = None):
    """GET ``path`` from ``url``'s server, the connection made from address ``source``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname, parts.port, timeout=30, source_address=(source, 0)
    )
    try:
        conn.request("GET", path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def samples(exposition: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_every_series_follows_the_requests_life(web_service, service, engine, clock):
    # released: submitted, first review 3 hours later, released a day after submission
    rid, files = new_request(service, {"tables/regions.csv": "t", "notes.txt": "n"})
    clock.advance(hours=3)
    ids = [f["id"] for f in files.values()]
    review(service, rid, olivia, {i: "approve" for i in ids})
    review(service, rid, oscar, {i: "approve" for i in ids})
    service.approve(olivia, rid)
    clock.advance(hours=21)
    service.release(oscar, rid)
    new_request(service, {"notes.txt": "n"})  # submitted, not reviewed
    service.create_request(bob, "diabetes", "Draft")  # a draft of another project
    # two refusals through the web layer: bob asks for a cardio request, and for none
    assert get(web_service, f"/services/egress/api/requests/{rid}", headers={"X-Test-User": "bob"})[
        0
    ] in (403, 404)
    assert (
        get(web_service, "/services/egress/api/requests/nosuch", headers={"X-Test-User": "bob"})[0]
        == 404
    )
    before_verify = samples(get(web_service, "/metrics")[1])
    assert before_verify[("havre_egress_audit_last_verify_ok", ())] == -1
    assert service.verify_audit().ok

    status, body = get(web_service, "/metrics")
    assert status == 200, body
    m = samples(body)
    assert m[("havre_egress_requests", (("project", "cardio"), ("state", "released")))] == 1
    assert m[("havre_egress_requests", (("project", "cardio"), ("state", "submitted")))] == 1
    assert m[("havre_egress_requests", (("project", "diabetes"), ("state", "draft")))] == 1
    assert m[("havre_egress_releases_total", ())] == 1
    first = "havre_egress_time_to_first_review_seconds"
    assert m[(f"{first}_count", ())] == 1
    assert 3 * 3600 < m[(f"{first}_sum", ())] < 3 * 3600 + 60  # the fake clock's seconds
    assert m[(f"{first}_bucket", (("le", "3600.0"),))] == 0
    assert m[(f"{first}_bucket", (("le", "14400.0"),))] == 1
    release = "havre_egress_time_to_release_seconds"
    assert 24 * 3600 < m[(f"{release}_sum", ())] < 24 * 3600 + 60
    assert m[(f"{release}_bucket", (("le", "86400.0"),))] == 0
    assert m[(f"{release}_bucket", (("le", "172800.0"),))] == 1
    assert m[(f"{release}_bucket", (("le", "+Inf"),))] == 1
    # regions.csv has a cell of 3: the threshold rule; notes.txt and the second request none
    assert m[("havre_egress_sdc_failures_total", (("rule", "threshold"),))] == 1
    assert not [
        k
        for k in m
        if k[0] == "havre_egress_sdc_failures_total"
        and k != ("havre_egress_sdc_failures_total", (("rule", "threshold"),))
    ]
    refusals = {
        dict(k[1])["reason"]: v for k, v in m.items() if k[0] == "havre_egress_refusals_total"
    }
    assert sum(refusals.values()) == 2 and refusals.get("not_found", 0) >= 1, refusals
    with engine.connect() as conn:
        pending = conn.execute(
            text("SELECT count(*) FROM notifications_outbox WHERE sent_at IS NULL")
        ).scalar()
        head_seq, head_time = conn.execute(
            text("SELECT seq, time FROM audit_events ORDER BY seq DESC LIMIT 1")
        ).one()
    assert m[("havre_egress_notifications_pending", ())] == pending
    assert m[("havre_egress_audit_head_seq", ())] == head_seq
    head = datetime.fromisoformat(head_time.replace("Z", "+00:00"))
    age = m[("havre_egress_audit_head_age_seconds", ())]
    assert 0 < age <= (clock.now - head).total_seconds() + 1
    assert m[("havre_egress_audit_last_verify_ok", ())] == 1
    assert (
        m[("havre_egress_audit_last_verify_timestamp_seconds", ())]
        > datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    )
    assert m[("havre_egress_metrics_catching_up", ())] == 0
    exported = {name for name, _ in m}
    assert exported == set(series_names()), exported ^ set(series_names())


def test_metrics_answer_only_the_configured_addresses(web_service, service, enclave):
    control = get(web_service, "/metrics")
    assert control[0] == 200 and "havre_egress_requests" in control[1]

    status, body = get(web_service, "/metrics", source="127.0.0.2")
    assert status == 403 and "127.0.0.2 is not one of them" in body
    assert "havre_egress" not in body

    forwarded = get(web_service, "/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert forwarded[0] == 403 and "not served through a proxy" in forwarded[1]

    # the hub's proxy forwards only the service prefix: the metrics are not there
    via_prefix = get(web_service, "/services/egress/metrics")
    assert via_prefix[0] == 404 and "havre_egress" not in via_prefix[1]

    service.enclave = replace(enclave, monitoring=MonitoringSettings())
    off = get(web_service, "/metrics")
    assert off[0] == 403 and "set monitoring.scrape_from" in off[1]

    service.enclave = replace(enclave, monitoring=MonitoringSettings(("127.0.0.0/24",)))
    assert get(web_service, "/metrics", source="127.0.0.2")[0] == 200  # a wider network


def test_a_scrape_reads_at_most_a_batch_of_rows_a_table(service, engine, clock):
    for _ in range(3):
        new_request(service, {"tables/regions.csv": "t"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EgressCollector(engine, clock=clock, batch=2))
    seen = []
    for _ in range(3):
        m = samples(generate_latest(registry).decode())
        seen.append(
            (
                m.get(("havre_egress_sdc_failures_total", (("rule", "threshold"),)), 0),
                m[("havre_egress_metrics_catching_up", ())],
            )
        )
    assert seen == [(2, 1), (3, 0), (3, 0)]  # two files, then the third, then nothing new


def test_refusals_are_summed_over_the_worker_processes(tmp_path):
    tally = RefusalTally(tmp_path / "metrics")
    tally.reset_directory()
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=add_refusals, args=(str(tmp_path / "metrics"), reason, n))
        for reason, n in (("file_refused", 3), ("file_refused", 2), ("permission_denied", 1))
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert tally.totals() == {"file_refused": 5, "permission_denied": 1}
    tally.reset_directory()  # a restart of the service: counters start again
    assert tally.totals() == {}


def test_refusal_reasons_are_the_kind_never_the_sentence():
    from egress.domain.errors import FileRefused, NotFound
    from egress.domain.policy import PermissionDenied

    assert reason_of(FileRefused("x.zip", ["a sentence"])) == "file_refused"
    assert reason_of(NotFound("no such request")) == "not_found"
    assert reason_of(PermissionDenied("you may not")) == "permission_denied"


@pytest.mark.parametrize(
    ("monitoring", "problem"),
    [
        ({"scrape_from": ["prometheus.example"]}, "monitoring.scrape_from: must hold IP addresses"),
        ({"scrape_from": {"a": 1}}, "monitoring.scrape_from: must be an address or network"),
        (
            {"scrape_from": "10.0.0.5", "publish": "9190"},
            "monitoring.publish: must be a host address and port",
        ),
        ({"publish": "127.0.0.1:9190"}, "publishes metrics nobody may read"),
        ({"scrape_frm": "10.0.0.5"}, "monitoring"),
    ],
)
def test_bad_monitoring_settings_are_refused_with_a_sentence(monitoring, problem):
    with pytest.raises(EnclaveConfigError, match=problem):
        parse_enclave_config({**copy.deepcopy(ENCLAVE), "monitoring": monitoring}, source="unit")
    good = parse_enclave_config(
        {
            **copy.deepcopy(ENCLAVE),
            "monitoring": {"scrape_from": "10.0.0.5", "publish": "127.0.0.1:9190"},
        },
        source="unit",
    )
    assert good.monitoring == MonitoringSettings(("10.0.0.5/32",), "127.0.0.1:9190")


def test_the_buckets_are_increasing():
    assert list(BUCKETS) == sorted(set(BUCKETS))


def test_havre_up_publishes_the_metrics_port_only_when_asked(enclave):
    from havre.host.services import egress_metrics_ports

    assert egress_metrics_ports(enclave) == {}  # scrape_from alone publishes nothing
    published = replace(enclave, monitoring=MonitoringSettings(("10.0.0.5/32",), "10.0.0.1:9190"))
    assert egress_metrics_ports(published) == {"9190/tcp": ("10.0.0.1", 9190)}


def test_the_admin_cli_s_verification_is_kept_for_the_metrics(service, db_url, tmp_path, capsys):
    from egress import cli
    from egress.monitoring.verify_record import FILE_NAME, read_verify

    new_request(service, {"notes.txt": "n"})
    state = tmp_path / "state"
    base = ["--db", db_url, "--state", str(state)]
    record = state / "egress" / FILE_NAME
    assert cli.main([*base, "keygen"]) == 0
    assert cli.main([*base, "verify"]) == 0
    assert read_verify(record).ok is True
    with service.engine.begin() as conn:  # an edited event: the chain no longer verifies
        conn.execute(text("UPDATE audit_events SET line = replace(line, 'alice', 'mallory')"))
    assert cli.main([*base, "verify"]) == 1
    assert read_verify(record).ok is False
    capsys.readouterr()


def test_monitoring_settings_restart_no_container_by_the_shared_digest(tmp_path):
    """``scrape_from`` is read live; ``publish`` restarts the egress container alone (its
    digest names it: tests/integration/test_metrics_live.py), not the broker or the hub."""
    from havre.enclave.config import load_enclave_config
    from havre.enclave.live import restart_digest

    def digest(monitoring: dict) -> str:
        path = tmp_path / "enclave.yaml"
        path.write_text(yaml.safe_dump({**copy.deepcopy(ENCLAVE), "monitoring": monitoring}))
        return restart_digest(load_enclave_config(path), projects="none")

    one = digest({"scrape_from": ["10.0.0.5/32"], "publish": "127.0.0.1:9190"})
    assert digest({"scrape_from": ["10.0.0.6/32"], "publish": "127.0.0.1:9190"}) == one
    assert digest({"scrape_from": ["10.0.0.5/32"], "publish": "127.0.0.1:9191"}) == one
    assert digest({}) == one


def test_the_metrics_only_port_serves_nothing_else(service):
    """The application ``havre up`` publishes on the host (``monitoring.publish``)."""
    import asyncio
    import threading

    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from egress.web.app import make_app, make_metrics_app

    started, box = threading.Event(), {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = HTTPServer(make_metrics_app(make_app(service, "/services/egress/", b"s" * 32)))
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        box.update(loop=loop, server=server, port=sockets[0].getsockname()[1])
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    base = f"http://127.0.0.1:{box['port']}/"
    try:
        status, body = get(base, "/metrics")  # control
        assert status == 200 and "havre_egress_requests" in body
        assert get(base, "/metrics", source="127.0.0.2")[0] == 403
        for path in (
            "/services/egress/",
            "/services/egress/api/requests",
            "/services/egress/healthz",
        ):
            assert get(base, path, headers={"X-Test-User": "alice"})[0] == 404, path
    finally:
        box["loop"].call_soon_threadsafe(box["server"].stop)
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(10)
