"""The egress service's Prometheus metrics, computed from the database at scrape time.

Every worker process can answer a scrape, so nothing is counted in memory as it happens:
gauges are read from the tables (a ``GROUP BY`` and a few indexed reads), and the counters and
histograms are read *incrementally*: each table read by id (reviews, releases, request files)
is read past the last id this process has seen, at most ``BATCH`` rows a table per scrape, so
one scrape costs a bounded amount whatever the database's size (a new process catches up over
several scrapes; ``havre_egress_metrics_catching_up`` is 1 meanwhile). Every process computes
the same values from the same rows, so it does not matter which answers.

The series (``SERIES`` lists them; the Grafana dashboard uses only these):

=================================================  ==========  ===========================
name                                               type        labels
=================================================  ==========  ===========================
havre_egress_requests                              gauge       state, project
havre_egress_time_to_first_review_seconds          histogram   (submission to first review)
havre_egress_time_to_release_seconds               histogram   (submission to release)
havre_egress_releases_total                        counter
havre_egress_refusals_total                        counter     reason
havre_egress_sdc_failures_total                    counter     rule (files failing it)
havre_egress_notifications_pending                 gauge
havre_egress_notifications_oldest_pending_seconds  gauge
havre_egress_audit_head_seq                        gauge
havre_egress_audit_head_age_seconds                gauge
havre_egress_audit_last_verify_ok                  gauge       (1 passed, 0 failed, -1 never)
havre_egress_audit_last_verify_timestamp_seconds   gauge
havre_egress_metrics_catching_up                   gauge
=================================================  ==========  ===========================
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased

from egress.monitoring.refusals import RefusalTally
from egress.monitoring.verify_record import read_verify
from egress.store.models import AuditEventRow, Notification, Release, Request, RequestFile, Review

PREFIX = "havre_egress_"
#: upper bounds (seconds) of the waiting-time histograms: 1 h to 30 days
BUCKETS = (
    3600,
    4 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    4 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)
#: rows read from each table per scrape, at most
BATCH = 5000

SERIES = {
    "requests": "gauge",
    "time_to_first_review_seconds": "histogram",
    "time_to_release_seconds": "histogram",
    "releases_total": "counter",
    "refusals_total": "counter",
    "sdc_failures_total": "counter",
    "notifications_pending": "gauge",
    "notifications_oldest_pending_seconds": "gauge",
    "audit_head_seq": "gauge",
    "audit_head_age_seconds": "gauge",
    "audit_last_verify_ok": "gauge",
    "audit_last_verify_timestamp_seconds": "gauge",
    "metrics_catching_up": "gauge",
}


def series_names() -> list[str]:
    """Every sample name the service exports (histograms with their ``_bucket``, ``_sum``,
    ``_count``): what a dashboard expression may use."""
    names = []
    for short, kind in SERIES.items():
        name = PREFIX + short
        if kind == "histogram":
            names += [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
        else:
            names.append(name)
    return names


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets = [(str(float(b)), c) for b, c in zip(BUCKETS, self.counts, strict=True)]
        buckets.append(("+Inf", self.total))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


def _audit_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class EgressCollector(Collector):
    """The collector of one worker process (register it on its own ``CollectorRegistry``).

    ``clock`` gives the time the ages are measured to; ``verify_record`` is the file the audit
    verifications write (:mod:`egress.monitoring.verify_record`); ``refusals`` the shared tally.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        verify_record: Path | None = None,
        refusals: RefusalTally | None = None,
        batch: int = BATCH,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.verify_record = verify_record
        self.refusals = refusals or RefusalTally()
        self.batch = batch
        self._lock = threading.Lock()
        self._seen = {"review": 0, "release": 0, "file": 0}
        self._first_review = _Histogram()
        self._release = _Histogram()
        self._sdc: Counter[str] = Counter()
        self._catching_up = False

    # -- incremental reads ------------------------------------------------------------------

    def _first_submission(self) -> Any:
        """The time of a request's first SUBMITTED audit event (a correlated subquery)."""
        return (
            select(func.min(AuditEventRow.time))
            .where(AuditEventRow.request_id == Request.id, AuditEventRow.event == "SUBMITTED")
            .scalar_subquery()
        )

    def _read_new(self, conn: Any) -> None:
        behind = False
        earlier = aliased(Review)
        first_only = (
            ~select(earlier.id)
            .where(earlier.request_id == Review.request_id, earlier.id < Review.id)
            .exists()
        )
        rows = conn.execute(
            select(Review.id, Review.submitted_at, self._first_submission())
            .join(Request, Request.id == Review.request_id)
            .where(Review.id > self._seen["review"])
            .order_by(Review.id)
            .limit(self.batch)
        ).all()
        behind |= len(rows) == self.batch
        first_ids: set[int] = set()
        if rows:
            first_ids = set(
                conn.execute(
                    select(Review.id).where(Review.id.in_([r[0] for r in rows]), first_only)
                ).scalars()
            )
        for review_id, reviewed_at, submitted in rows:
            start = _audit_time(submitted)
            if review_id in first_ids and start is not None:
                self._first_review.observe((reviewed_at - start).total_seconds())
            self._seen["review"] = review_id

        rows = conn.execute(
            select(Release.id, Release.released_at, self._first_submission())
            .join(Request, Request.id == Release.request_id)
            .where(Release.id > self._seen["release"])
            .order_by(Release.id)
            .limit(self.batch)
        ).all()
        behind |= len(rows) == self.batch
        for release_id, released_at, submitted in rows:
            start = _audit_time(submitted) or released_at
            self._release.observe((released_at - start).total_seconds())
            self._seen["release"] = release_id

        rows = conn.execute(
            select(RequestFile.id, RequestFile.check)
            .where(RequestFile.id > self._seen["file"])
            .order_by(RequestFile.id)
            .limit(self.batch)
        ).all()
        behind |= len(rows) == self.batch
        for file_id, check in rows:
            sdc = (check or {}).get("sdc") if isinstance(check, dict) else None
            rules = sdc.get("rule_counts") if isinstance(sdc, dict) else None
            if isinstance(rules, dict):
                self._sdc.update(str(rule) for rule, n in rules.items() if isinstance(n, int) and n)
            self._seen["file"] = file_id
        self._catching_up = behind

    # -- the scrape -------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        now = self.clock().astimezone(UTC)
        with self._lock, self.engine.connect() as conn:
            self._read_new(conn)
            by_state = conn.execute(
                select(Request.state, Request.project, func.count()).group_by(
                    Request.state, Request.project
                )
            ).all()
            pending, oldest = conn.execute(
                select(func.count(), func.min(Notification.created_at)).where(
                    Notification.sent_at.is_(None)
                )
            ).one()
            head = conn.execute(
                select(AuditEventRow.seq, AuditEventRow.time)
                .order_by(AuditEventRow.seq.desc())
                .limit(1)
            ).first()

            requests = GaugeMetricFamily(
                PREFIX + "requests",
                "Release requests by state and project.",
                labels=["state", "project"],
            )
            for state, project, count in sorted(by_state):
                requests.add_metric([state, project], count)
            yield requests
            yield self._first_review.family(
                PREFIX + "time_to_first_review_seconds",
                "From a request's first submission to its first submitted review.",
            )
            yield self._release.family(
                PREFIX + "time_to_release_seconds",
                "From a request's first submission to its release.",
            )
            yield CounterMetricFamily(
                PREFIX + "releases", "Requests released.", value=self._release.total
            )
            refusals = CounterMetricFamily(
                PREFIX + "refusals", "Refusals of the service, by their kind.", labels=["reason"]
            )
            for reason, count in sorted(self.refusals.totals().items()):
                refusals.add_metric([reason], count)
            yield refusals
            sdc = CounterMetricFamily(
                PREFIX + "sdc_failures",
                "Files added to requests whose SDC check failed this rule.",
                labels=["rule"],
            )
            for rule, count in sorted(self._sdc.items()):
                sdc.add_metric([rule], count)
            yield sdc
            yield GaugeMetricFamily(
                PREFIX + "notifications_pending",
                "E-mails in the outbox not sent yet.",
                value=pending,
            )
            yield GaugeMetricFamily(
                PREFIX + "notifications_oldest_pending_seconds",
                "Age of the oldest e-mail not sent yet (0: none waiting).",
                value=(now - oldest).total_seconds() if oldest else 0.0,
            )
            head_time = _audit_time(head[1]) if head else None
            yield GaugeMetricFamily(
                PREFIX + "audit_head_seq",
                "Sequence number of the audit chain's last event.",
                value=head[0] if head else 0,
            )
            yield GaugeMetricFamily(
                PREFIX + "audit_head_age_seconds",
                "Seconds since the audit chain's last event.",
                value=(now - head_time).total_seconds() if head_time else 0.0,
            )
        last = read_verify(self.verify_record) if self.verify_record else None
        yield GaugeMetricFamily(
            PREFIX + "audit_last_verify_ok",
            "The last audit verification: 1 passed, 0 failed, -1 none yet.",
            value=-1 if last is None else int(last.ok),
        )
        yield GaugeMetricFamily(
            PREFIX + "audit_last_verify_timestamp_seconds",
            "When the audit chain was last verified (Unix time; 0: never).",
            value=last.at.timestamp() if last else 0.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "metrics_catching_up",
            "1 while this process has not yet read every row the counters come from.",
            value=int(self._catching_up),
        )
