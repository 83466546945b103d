"""The download guard: a filtering reverse proxy between the proxy and notebook servers.

Settings inside a notebook container can be undone by its user (JupyterLab's page config is
read from the home folder too, and a terminal runs any command), so the routes that hand raw
files to a browser are refused outside the container, here. The guard runs in the hub
process, listening on the hub container's loopback address only: the proxy
(configurable-http-proxy, in the same container) reaches it, notebook containers and browsers
don't. :class:`~spawner.project_spawner.ProjectSpawner` returns the guard's address to the hub
as the server's address, so the proxy's route for ``/user/<name>/<project>/`` points here, and
registers where the container really listens; the guard

* lets through only what :func:`spawner.download_policy.check_request` allows: the routes and
  methods JupyterLab needs (an allow-list), without a token (``Authorization`` header or
  ``?token=``); everything else gets a 403 page or JSON that says why in a sentence, and so do
  answers that carry a ``Content-Disposition``;
* checks the sign-in itself on the allowed routes Jupyter Server serves without one (static
  assets, lab extensions and themes, licenses): it asks the server's ``api/me`` with the
  request's cookies, and refuses unless the server knows the user. A JupyterLab page asks for
  some 60 such assets at once: requests with the same cookies share one ``api/me`` in flight,
  and a yes is reused for :data:`SIGN_IN_REUSE_SECONDS` (as long as the server itself reuses
  the hub's answer), so a page load costs the server a few checks, not one per asset
  (:class:`SignInChecks`);
* forwards the rest (HTTP, and websockets as a byte tunnel after the upgrade request
  is checked) to the container, and puts the notebook Content-Security-Policy on the answers;
* answers 503 for a server it doesn't know (stopped, or not started since the hub restarted).

The registry of servers lives in the hub process and is rebuilt from the spawners' saved state
when the hub restarts (see ``ProjectSpawner.load_state``).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import time
from urllib.parse import urlsplit

from tornado import httpclient, httpserver, web
from tornado.httputil import HTTPHeaders
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from havre.enclave.logs import security_event
from spawner.download_policy import (
    CROSS_ORIGIN_OPENER_POLICY,
    LOGIN_REFUSAL,
    AllowedRoute,
    Login,
    Refusal,
    check_desktop_request,
    check_request,
    content_security_policy,
    response_refusal,
    server_sources,
)

log = logging.getLogger("havre.download_guard")

#: headers of one connection only (RFC 9110 7.6.1), never forwarded
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
#: the largest request body forwarded (JupyterLab uploads big files in 1 MiB chunks)
MAX_BODY_BYTES = 512 * 1024 * 1024
#: seconds an answer from a notebook server may take (a long save, a big folder listing)
REQUEST_TIMEOUT = 300.0
#: concurrent forwarded HTTP requests (websockets don't count)
MAX_CLIENTS = 256
#: seconds a server's yes to a sign-in check (``api/me``) is reused for the same cookies: the
#: single-user server itself reuses the hub's answer about a token for as long
#: (``HubOAuth.cache_max_age``, 1 s in the notebook image), so a sign-out or a revoked token
#: takes effect here no later than there
SIGN_IN_REUSE_SECONDS = 1.0
#: a sign-in check the server failed to answer (5xx) within this many seconds is asked again,
#: once
SIGN_IN_RETRY_WITHIN = 5.0
#: sign-in answers kept at most (expired ones are dropped first)
SIGN_IN_KEPT = 4096
#: the clock of the sign-in reuse (a test turns it)
_clock = time.monotonic


class ServerRoutes:
    """Where each running server really listens: ``/user/<name>/<project>/`` -> URL."""

    def __init__(self, checks: SignInChecks | None = None) -> None:
        self._checks = checks
        self._targets: dict[str, str] = {}
        #: prefixes of ``access: desktop`` servers: their target is the remote desktop, and
        #: only the desktop's routes pass (:func:`check_desktop_request`)
        self._desktops: set[str] = set()

    def register(self, prefix: str, target: str, *, desktop: bool = False) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"a server prefix starts and ends with '/': {prefix!r}")
        self._targets[prefix] = target.rstrip("/")
        if self._checks is not None:
            self._checks.forget(prefix)
        if desktop:
            self._desktops.add(prefix)
        else:
            self._desktops.discard(prefix)
        log.info("Download guard: %s -> %s%s", prefix, target, " (desktop)" if desktop else "")

    def unregister(self, prefix: str) -> None:
        self._desktops.discard(prefix)
        if self._checks is not None:
            self._checks.forget(prefix)
        if self._targets.pop(prefix, None) is not None:
            log.info("Download guard: %s removed", prefix)

    def is_desktop(self, prefix: str) -> bool:
        """Whether ``prefix`` is an ``access: desktop`` server (pixels only)."""
        return prefix in self._desktops

    def lookup(self, path: str) -> tuple[str, str] | None:
        """(prefix, target) of the server a request path belongs to, if any."""
        best = None
        for prefix, target in self._targets.items():
            if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, target)
        return best

    def __len__(self) -> int:
        return len(self._targets)


class SignInChecks:
    """The guard's sign-in checks (``api/me`` with a request's cookies), shared.

    Requests for the same server, with the same ``Cookie`` and ``Host``, wait on one check in
    flight instead of each asking the server, and a yes is reused for ``reuse_seconds``. A no
    or a failed check is never reused (the next request asks again). Keys hold a hash of the
    cookies, not the cookies.
    """

    def __init__(
        self, client: httpclient.AsyncHTTPClient, reuse_seconds: float = SIGN_IN_REUSE_SECONDS
    ) -> None:
        self.client = client
        self.reuse_seconds = reuse_seconds
        self._in_flight: dict[tuple[str, str, str, str], asyncio.Future[bool]] = {}
        self._yes_until: dict[tuple[str, str, str, str], float] = {}
        #: ``api/me`` requests made (for tests and the benchmark's notes)
        self.asked = 0

    async def signed_in(self, prefix: str, target: str, cookie: str, host: str | None) -> bool:
        """Whether the server at ``target`` knows the user of ``cookie``."""
        if not cookie:
            return False
        digest = hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()
        key = (prefix, target, host or "", digest)
        if self._yes_until.get(key, 0.0) > _clock():
            return True
        pending = self._in_flight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(key, prefix, target, cookie, host))
            self._in_flight[key] = pending
            pending.add_done_callback(lambda _f: self._in_flight.pop(key, None))
        return await asyncio.shield(pending)

    async def _ask(
        self,
        key: tuple[str, str, str, str],
        prefix: str,
        target: str,
        cookie: str,
        host: str | None,
    ) -> bool:
        headers = {"Cookie": cookie, "Sec-Fetch-Mode": "navigate", "Accept": "application/json"}
        if host:
            headers["Host"] = host
        for attempt in (1, 2):
            self.asked += 1
            started = _clock()
            try:
                response = await self.client.fetch(
                    httpclient.HTTPRequest(
                        f"{target}{prefix}api/me",
                        headers=headers,
                        follow_redirects=False,
                        request_timeout=30,
                    ),
                    raise_error=False,
                )
            except (OSError, StreamClosedError, httpclient.HTTPClientError) as err:
                log.warning("Download guard: sign-in check at %s failed: %s", target, err)
                return False
            if response.code == 200:
                break
            # The server could not tell (a 5xx: its own check with the hub failed, e.g. a
            # busy hub; 599: no answer). Refusing would fail a stylesheet or a script of the
            # page for a signed-in user ("Error Loading Theme"): ask once more if that was
            # quick; a no (403, a redirect to sign in) is final at once.
            quick = _clock() - started < SIGN_IN_RETRY_WITHIN
            if response.code < 500 or attempt == 2 or not quick:
                if response.code >= 500:
                    log.warning(
                        "Download guard: sign-in check at %s answered %d: %s",
                        target,
                        response.code,
                        response.error,
                    )
                return False
        if len(self._yes_until) >= SIGN_IN_KEPT:
            now = _clock()
            self._yes_until = {k: t for k, t in self._yes_until.items() if t > now}
            if len(self._yes_until) >= SIGN_IN_KEPT:
                self._yes_until.clear()
        self._yes_until[key] = _clock() + self.reuse_seconds
        return True

    def forget(self, prefix: str) -> None:
        """Drop what is known about a server's sign-ins (it stopped, or moved)."""
        self._yes_until = {k: t for k, t in self._yes_until.items() if k[0] != prefix}


REFUSAL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not available in Havre</title>
<style>body{{font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;
line-height:1.5;padding:0 1rem}}h1{{font-size:1.4rem}}</style></head>
<body><h1 id="havre-refusal">Not available in Havre: {title}</h1>
<p>{sentence}</p>
<p><a href="/services/egress/">Output checking</a> · <a href="{server}lab">Back to JupyterLab</a>
· <a href="/hub/home">Your projects</a></p>
<p><small>Refused: {code}</small></p></body></html>
"""

UNKNOWN_SERVER_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
UNKNOWN_SERVER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Server not running</title></head>
<body><h1>This project server is not running</h1>
<p>It has stopped, or the hub has restarted since it started. Start it again from
<a href="/hub/home">your projects</a>.</p></body></html>
"""


class GuardHandler(web.RequestHandler):
    """Check one request, forward it (or tunnel a websocket), check the answer."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(
        self, routes: ServerRoutes, client: httpclient.AsyncHTTPClient, checks: SignInChecks
    ) -> None:
        self.routes = routes
        self.client = client
        self.checks = checks

    def compute_etag(self) -> None:
        return None  # the notebook server's own ETag, if any, is forwarded as is

    def check_xsrf_cookie(self) -> None:
        return None  # the notebook server checks its own XSRF token

    async def _handle(self) -> None:
        request = self.request
        found = self.routes.lookup(request.path)
        if found is None:
            self.unknown_server()
            return
        prefix, target = found
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        check = check_desktop_request if self.routes.is_desktop(prefix) else check_request
        refusal, route = check(
            request.method or "",
            request.path[len(prefix) :],
            request.query,
            request.headers.get_all(),
            websocket=websocket,
        )
        if refusal is not None or route is None:
            self.refuse(prefix, refusal or LOGIN_REFUSAL)
            return
        if route.login is Login.GUARD and not await self.signed_in(prefix, target):
            self.refuse(prefix, LOGIN_REFUSAL)
            return
        if websocket:
            await self.tunnel(target)
            return
        await self.forward(prefix, target, route)

    async def signed_in(self, prefix: str, target: str) -> bool:
        """Whether the server knows the user of this request's cookies (asks its ``api/me``,
        through the shared :class:`SignInChecks`).

        For routes Jupyter Server serves without a sign-in (static assets and the like): the
        guard requires one everywhere. Only the cookies go along (no token reaches here).
        """
        return await self.checks.signed_in(
            prefix, target, self.request.headers.get("Cookie", ""), self.request.headers.get("Host")
        )

    get = head = post = put = patch = delete = options = _handle

    def unknown_server(self) -> None:
        """503 and a page that says the server is not running: nothing runs in it, nothing may
        frame it, and a page of the origin that opens it gets no handle on it (else a notebook
        page would script it, free of its own policy)."""
        self.set_status(503)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", UNKNOWN_SERVER_CSP)
        self.set_header("Cross-Origin-Opener-Policy", CROSS_ORIGIN_OPENER_POLICY)
        self.finish(UNKNOWN_SERVER_PAGE)

    def refuse(self, prefix: str, refusal: Refusal) -> None:
        # the server's owner and project (who asked is not known here: the server checks that)
        owner, _, rest = prefix.removeprefix("/user/").partition("/")
        security_event(
            log,
            "download.refused",
            "Download guard refused %s %s (%s)",
            self.request.method,
            self.request.uri,
            refusal.code,
            owner=owner or None,
            project=rest.strip("/") or None,
            reason=refusal.code,
            method=self.request.method,
            path=self.request.path,
        )
        self.clear()
        self.set_status(403)
        self.set_page_policy(prefix)
        self.set_header("X-Havre-Refused", refusal.code)
        self.set_header("Cache-Control", "no-store")
        if "/api/" in self.request.path or "json" in self.request.headers.get("Accept", ""):
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": refusal.sentence, "reason": refusal.code}))
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            REFUSAL_PAGE.format(
                title=html.escape(refusal.title),
                sentence=html.escape(refusal.sentence),
                server=html.escape(prefix),
                code=html.escape(refusal.code),
            )
        )

    def set_page_policy(self, prefix: str, report_uri: str = "") -> None:
        """The notebook CSP, narrowed to this server's own addresses, and the opener policy.

        The browser's scheme is the first ``X-Forwarded-Proto`` value (the proxy adds it, after
        a TLS front end's), else ``http``; the host is the request's ``Host`` (the proxy keeps
        it). Every project server shares the hub's origin: these make one server's pages unable
        to fetch from, frame, or script (through ``window.open``) another's.
        """
        forwarded = self.request.headers.get("X-Forwarded-Proto", "http")
        scheme = forwarded.split(",", 1)[0].strip() or "http"
        host = self.request.headers.get("Host", "")
        sources = server_sources(scheme, host, prefix)
        self.set_header("Content-Security-Policy", content_security_policy(report_uri, sources))
        self.set_header("Cross-Origin-Opener-Policy", CROSS_ORIGIN_OPENER_POLICY)

    def forwarded_headers(self) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in self.request.headers.get_all():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                headers.add(name, value)
        return headers

    async def forward(self, prefix: str, target: str, route: AllowedRoute) -> None:
        request = self.request
        body = request.body if request.method in ("POST", "PUT", "PATCH", "DELETE") else None
        if request.method in ("POST", "PUT", "PATCH") and body is None:
            body = b""
        try:
            response = await self.client.fetch(
                httpclient.HTTPRequest(
                    target + request.uri,
                    method=request.method,
                    headers=self.forwarded_headers(),
                    body=body,
                    follow_redirects=False,
                    decompress_response=False,
                    allow_nonstandard_methods=True,
                    request_timeout=REQUEST_TIMEOUT,
                ),
                raise_error=False,
            )
        except (OSError, StreamClosedError, httpclient.HTTPClientError) as err:
            log.warning("Download guard: %s unreachable: %s", target, err)
            self.unknown_server()
            return
        if response.code == 599:  # no answer (connection refused, timeout)
            log.warning("Download guard: %s gave no answer: %s", target, response.error)
            self.unknown_server()
            return
        refusal = response_refusal(
            response.headers.get_all(), route, response.code, response.body or b""
        )
        if refusal is not None:
            self.refuse(prefix, refusal)
            return
        self.clear()
        self.clear_header("Content-Type")
        self.set_status(response.code, response.reason)
        for name, value in response.headers.get_all():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in (
                "content-length",
                "content-security-policy",
                "cross-origin-opener-policy",
            ):
                continue
            if lower in ("server", "date", "content-type"):  # one each, the server's
                self.set_header(name, value)
            else:
                self.add_header(name, value)
        self.set_page_policy(prefix, f"{prefix}api/security/csp-report")
        if response.code in (204, 304) or request.method == "HEAD":
            self.finish()
        else:
            self.finish(response.body or b"")

    async def tunnel(self, target: str) -> None:
        """Pass a checked websocket upgrade to the server, then copy bytes both ways."""
        parts = urlsplit(target)
        try:
            upstream = await TCPClient().connect(parts.hostname, parts.port or 80)
        except OSError as err:
            log.warning("Download guard: %s unreachable for a websocket: %s", target, err)
            self.unknown_server()
            return
        request = self.request
        lines = [f"GET {request.uri} HTTP/1.1"]
        for name, value in request.headers.get_all():
            if name.lower() in ("connection", "upgrade", "content-length"):
                continue
            lines.append(f"{name}: {value}")
        lines += ["Connection: Upgrade", "Upgrade: websocket", "", ""]
        downstream = self.detach()
        try:
            await upstream.write("\r\n".join(lines).encode("latin-1"))
        except StreamClosedError:
            downstream.close()
            return
        await asyncio.gather(_pump(downstream, upstream), _pump(upstream, downstream))


async def _pump(source: IOStream, sink: IOStream) -> None:
    try:
        while True:
            data = await source.read_bytes(65536, partial=True)
            await sink.write(data)
    except StreamClosedError:
        pass
    finally:
        sink.close()
        source.close()


def log_request(handler: web.RequestHandler) -> None:
    """Failures at warning level; ordinary traffic (every JupyterLab request) at debug level."""
    status = handler.get_status()
    level = logging.WARNING if status >= 500 else logging.DEBUG
    log.log(
        level,
        "%d %s %s %.1f ms",
        status,
        handler.request.method,
        handler.request.path,
        1000 * handler.request.request_time(),
    )


class DownloadGuard:
    """The guard's HTTP server and its registry of servers (one per hub process)."""

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.port = port
        self.client = httpclient.AsyncHTTPClient(force_instance=True, max_clients=MAX_CLIENTS)
        self.checks = SignInChecks(self.client)
        self.routes = ServerRoutes(self.checks)
        app = web.Application(
            [
                (
                    r".*",
                    GuardHandler,
                    {"routes": self.routes, "client": self.client, "checks": self.checks},
                )
            ],
            xsrf_cookies=False,
            log_function=log_request,
        )
        self.server = httpserver.HTTPServer(
            app, max_body_size=MAX_BODY_BYTES, xheaders=False, decompress_request=False
        )
        self.server.listen(port, address)
        log.info("Download guard listening on %s", self.url)

    @property
    def url(self) -> str:
        """The address the hub stores for every guarded server (the proxy's route target)."""
        return f"http://{self.address}:{self.port}"

    def stop(self) -> None:
        self.server.stop()
        self.client.close()


_guards: dict[tuple[str, int], DownloadGuard] = {}


def ensure_guard(address: str, port: int) -> DownloadGuard:
    """The guard listening on ``address:port`` in this process, started on first use."""
    guard = _guards.get((address, port))
    if guard is None:
        guard = _guards[(address, port)] = DownloadGuard(address, port)
    return guard
