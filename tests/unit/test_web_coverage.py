"""The report of egress handlers exercised through the live service reads the access log right."""

from __future__ import annotations

from collections import Counter

import pytest

from tests import web_coverage

LOG = (
    "2026-12-06 tornado.access 200 GET /services/egress/api/whoami (172.18.0.1) 2.10ms\n"
    "2026-12-06 tornado.access 403 POST /services/egress/api/requests/AbCdEf123456/approve?x=1"
    " (172.18.0.1) 2.00ms\n"
    "2026-12-06 tornado.access 404 GET /services/egress/api/nothing-here (172.18.0.1) 1.00ms\n"
    "2026-12-06 tornado.access 500 GET /services/egress/audit (172.18.0.1) 1.00ms\n"
)


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    # the real run's counts are module globals: keep this test's lines out of them
    monkeypatch.setattr(web_coverage, "HITS", Counter())
    monkeypatch.setattr(web_coverage, "COLLECTED", [])


def test_lines_are_counted_by_route_and_method():
    web_coverage.collect(LOG)
    hits = {(handler, method): n for (_p, handler, method), n in web_coverage.HITS.items()}
    assert hits == {
        ("WhoAmIApi", "GET"): 1,
        ("RequestActionApi", "POST"): 1,  # a refusal still ran the handler
        ("ApiNotFound", "ANY"): 1,
    }  # the 500 on the audit page is not counted as exercised
    never = web_coverage.unexercised()
    assert ("WhoAmIApi", "GET") not in never
    assert ("AuditPage", "GET") in never and ("RawFile", "GET") in never


def test_every_route_of_the_service_is_listed_with_its_methods():
    routes = {route.handler: route.methods for route in web_coverage.egress_routes()}
    assert routes["RequestsApi"] == ("GET", "POST")
    assert routes["ApiNotFound"] == ("ANY",)
    assert all(methods for methods in routes.values())
