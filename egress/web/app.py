"""The egress service's web layer: the tornado application and its routes.

The pages are in :mod:`egress.web.pages`, the JSON API in :mod:`egress.web.api`, what they
share (hub login, security headers, idempotent writes, refusals) in :mod:`egress.web.base`.

A thin shell around :class:`egress.operations.facade.EgressService`: every handler builds the
:class:`~egress.domain.policy.Actor` from the hub user (name and the hub groups Havre manages),
calls one core operation and shows its result. The core decides what is allowed and writes the audit
log; refusals come back as ``PermissionDenied`` / ``EgressError`` with an HTTP status and a
sentence, shown as they are.

Routes (under the service prefix, ``/services/egress/``):

    pages   /                            requests I can see; my projects; the checkers' queue
            /projects/<project>/new      start a request (form posts to /requests)
            /requests/<id>               a request: files, checks, votes, comments, actions
            /requests/<id>/files/<fid>   one file shown in place (sanitised), /raw its bytes:
                                         checkers once submitted; members get a preview
            /requests/<id>/files/<fid>/download   a released file
            /audit                       the audit log and its verification
            /break-glass                 break-glass sessions (checkers, administrators)
    api     /api/...                     JSON, described by /api/openapi.json
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyterhub.utils import url_path_join
from prometheus_client import CollectorRegistry
from tornado import web

from egress.monitoring.metrics import EgressCollector
from egress.monitoring.refusals import RefusalTally
from egress.monitoring.verify_record import FILE_NAME as VERIFY_RECORD
from egress.operations.facade import EgressService
from egress.web.api import (
    ApiNotFound,
    AuditVerifyApi,
    BreakGlassApi,
    BreakGlassEventsApi,
    BulkVotesApi,
    CommentsApi,
    FileApi,
    FilePreviewApi,
    FilesApi,
    GroupApi,
    OpenApiDocument,
    OutputsApi,
    RecordApi,
    ReexecuteApi,
    ReexecutionApi,
    ReexecutionsApi,
    RequestActionApi,
    RequestApi,
    RequestsApi,
    VoteApi,
    WhoAmIApi,
)
from egress.web.base import jinja_environment
from egress.web.hub_oauth import SharedStateHubOAuth, SharedStateOAuthCallback
from egress.web.metrics import METRICS_PATH, MetricsHandler
from egress.web.pages import (
    AuditPage,
    BreakGlassPage,
    DownloadArchive,
    DownloadFile,
    FilePage,
    IndexPage,
    NewRequestPage,
    NoticesPage,
    RawFile,
    ReexecutionPage,
    RequestForm,
    RequestPage,
    RequestsForm,
)

_ID = r"[A-Za-z0-9_-]{1,64}"
#: The pages' script and stylesheet (the page CSP allows the service's own files only).
STATIC = Path(__file__).parent / "static"


class HealthHandler(web.RequestHandler):
    """Liveness for the stack launcher and Ansible (no login, no data)."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": "ok"}))


def make_app(
    service: EgressService,
    prefix: str,
    cookie_secret: bytes,
    *,
    threads: int = 1,
    oauth_state_dir: Path | None = None,
    refusals: RefusalTally | None = None,
) -> web.Application:
    """The tornado application of the egress service, routes under ``prefix``.

    ``threads``: the pool that runs the core's operations (database work) off the IOLoop. One
    by default: the operations are mostly Python, and more threads in one process were measured
    slower (they contend for the GIL; ``benchmarks/egress-load-README.md``); more cores are
    used by more worker processes instead.
    ``oauth_state_dir``: where logins in progress are kept when several worker processes serve
    (see :mod:`egress.web.hub_oauth`); None keeps them in this process.
    ``refusals``: the tally the service's refusals are counted in (shared by the workers);
    None counts in this process. ``/metrics`` (outside the prefix) serves the metrics.
    """
    refusals = refusals or RefusalTally()
    if oauth_state_dir is not None:
        SharedStateHubOAuth.instance().oauth_state_dir = str(oauth_state_dir)

    def route(path: str) -> str:
        return url_path_join(prefix, path)

    r, f = rf"(?P<request_id>{_ID})", r"(?P<file_id>[0-9]{1,12})"
    x = r"(?P<reexecution_id>[0-9a-f]{32})"
    return web.Application(
        [
            (METRICS_PATH, MetricsHandler),
            (route("healthz"), HealthHandler),
            (route("oauth_callback"), SharedStateOAuthCallback),
            (route("api/openapi.json"), OpenApiDocument),
            (route("api/whoami"), WhoAmIApi),
            (route(r"api/projects/([a-z0-9-]{1,40})/outputs"), OutputsApi),
            (route("api/requests"), RequestsApi),
            (route(f"api/requests/{r}"), RequestApi),
            (route(f"api/requests/{r}/files"), FilesApi),
            (route(f"api/requests/{r}/files/{f}"), FileApi),
            (route(f"api/requests/{r}/files/{f}/vote"), VoteApi),
            (route(f"api/requests/{r}/files/{f}/preview"), FilePreviewApi),
            (route(f"api/requests/{r}/groups/(?P<group>[^/]{{1,64}})"), GroupApi),
            (route(f"api/requests/{r}/comments"), CommentsApi),
            (route(f"api/requests/{r}/votes"), BulkVotesApi),
            (route(f"api/requests/{r}/record"), RecordApi),
            (route(f"api/requests/{r}/files/{f}/reexecute"), ReexecuteApi),
            (route(f"api/requests/{r}/reexecutions"), ReexecutionsApi),
            (route(f"api/requests/{r}/reexecutions/{x}"), ReexecutionApi),
            (route(f"api/requests/{r}/(?P<action>[a-z]+)"), RequestActionApi),
            (route("api/audit/verify"), AuditVerifyApi),
            (route("api/break-glass"), BreakGlassApi),
            (route("api/break-glass/events"), BreakGlassEventsApi),
            (route("api/.*"), ApiNotFound),
            (route("projects/([a-z0-9-]{1,40})/new"), NewRequestPage),
            (route("requests"), RequestsForm),
            (route(f"requests/{r}"), RequestPage),
            (route(f"requests/{r}/do"), RequestForm),
            (route(f"requests/{r}/files/{f}"), FilePage),
            (route(f"requests/{r}/files/{f}/raw"), RawFile),
            (route(f"requests/{r}/files/{f}/download"), DownloadFile),
            (route(f"requests/{r}/release.zip"), DownloadArchive),
            (route(f"requests/{r}/reexecutions/{x}"), ReexecutionPage),
            (
                route("static/(pages\\.js|notices\\.js|havre\\.css)"),
                web.StaticFileHandler,
                {"path": str(STATIC)},
            ),
            (route("notices"), NoticesPage),
            (route("audit"), AuditPage),
            (route("break-glass"), BreakGlassPage),
            (prefix, IndexPage),
        ],
        cookie_secret=cookie_secret,
        # CSRF: HubOAuth checks JupyterHub's _xsrf token on every cookie-authenticated
        # request that changes something (forms carry it; API clients send X-XSRFToken).
        xsrf_cookies=True,
        egress_service=service,
        egress_executor=ThreadPoolExecutor(threads, thread_name_prefix="egress-core"),
        egress_prefix=prefix,
        jinja=jinja_environment(),
        # the hub's break-glass reports carry a key derived from it (egress.operations.break_glass)
        hub_api_token=os.environ.get("JUPYTERHUB_API_TOKEN", ""),
        egress_refusals=refusals,
        # (no service: the route table alone, as tests/web_coverage.py reads it)
        metrics_registry=metrics_registry(service, refusals) if service is not None else None,
    )


def metrics_registry(service: EgressService, refusals: RefusalTally) -> CollectorRegistry:
    """A registry of this process holding the service's collector (and nothing else)."""
    registry = CollectorRegistry(auto_describe=False)
    checkpoints = service.checkpoint_path
    registry.register(
        EgressCollector(
            service.engine,
            clock=service.now,
            verify_record=checkpoints.with_name(VERIFY_RECORD) if checkpoints else None,
            refusals=refusals,
        )
    )
    return registry


def make_metrics_app(app: web.Application) -> web.Application:
    """An application serving ``/metrics`` only, with ``app``'s service and collector: the
    port ``havre up`` may publish on the host for a Prometheus server outside the enclave's
    networks (nothing else of the service is reachable there)."""
    return web.Application(
        [(METRICS_PATH, MetricsHandler)],
        egress_service=app.settings["egress_service"],
        egress_executor=app.settings["egress_executor"],
        metrics_registry=app.settings["metrics_registry"],
    )
