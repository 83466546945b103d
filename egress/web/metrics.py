"""``GET /metrics``: the egress service's Prometheus metrics, to configured addresses only.

The route is outside the service prefix (``/metrics``, not ``/services/egress/metrics``), so
the hub's proxy, which forwards only the prefix, never reaches it; it answers only a client
whose own address (the connection's, never a header's) is in the enclave config's
``monitoring.scrape_from``, and refuses a request that says it was forwarded by a proxy
(``X-Forwarded-For``, ``Forwarded``), since a proxy's address would stand for everyone behind
it. Everyone else gets 403 with a sentence; with no ``scrape_from``, everyone does.

The series are computed by :class:`egress.monitoring.metrics.EgressCollector` on the worker's
thread pool (they read the database).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from tornado import ioloop, web

METRICS_PATH = "/metrics"
FORWARDED_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-Ip")


def scrape_allowed(remote_ip: str, networks: tuple[str, ...] | list[str]) -> bool:
    """Whether ``remote_ip`` is in one of ``networks`` (CIDR texts; IPv4-mapped IPv6 too)."""
    try:
        address = ipaddress.ip_address(remote_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    for text in networks:
        network = ipaddress.ip_network(text, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


class MetricsHandler(web.RequestHandler):
    """The Prometheus text exposition of the settings' ``metrics_registry``."""

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def refuse(self, sentence: str) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(sentence + "\n")

    async def get(self) -> None:
        networks = self.settings["egress_service"].enclave.monitoring.scrape_from
        if not networks:
            return self.refuse(
                "Metrics are not enabled: set monitoring.scrape_from in the enclave config to "
                "the address of the Prometheus server."
            )
        if any(self.request.headers.get(h) for h in FORWARDED_HEADERS):
            return self.refuse(
                "Metrics are not served through a proxy: scrape the service directly."
            )
        if not scrape_allowed(self.request.remote_ip or "", networks):
            return self.refuse(
                f"Metrics are read only from the addresses in monitoring.scrape_from; "
                f"{self.request.remote_ip} is not one of them."
            )
        registry: CollectorRegistry = self.settings["metrics_registry"]
        pool = self.settings["egress_executor"]
        body: Any = await ioloop.IOLoop.current().run_in_executor(pool, generate_latest, registry)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)
