"""Which requests may reach a notebook server through the guard, and which answers may leave.

Pure policy, no web code: the download guard (:mod:`spawner.download_guard`) asks
:func:`check_request` about every request before it reaches a notebook server, and
:func:`response_refusal` about every answer before it reaches the browser.

The guard is an **allow-list**: :data:`ALLOWED_ROUTES` names each route and method JupyterLab 4
on Jupyter Server 2 uses (its pages and assets, ``lab/api/*`` settings and workspaces,
``api/contents``, kernels and their websockets, sessions, kernelspecs and their logos,
terminals, ``api/me``, the hub's OAuth callback...). Everything else is refused with a sentence:
above all the routes that hand raw files to a browser,

* ``files/<path>``: the raw bytes of any file (JupyterLab's *Download*, *Copy Download Link*
  and *Open in New Browser Tab*, with ``?download=1`` for an attachment);
* ``nbconvert/<format>/<path>``: a notebook exported as HTML, PDF, a script...;
* ``view/<path>``: a page that shows a raw file in a frame;

and also ``metrics``, ``api/shutdown``, ``api/spec.yaml``, ``api/config`` writes, extension
manager installs, and any route a new server extension adds (the enclave test enumerates the
server's routes at test time and fails on one nobody reviewed).

Every request is refused, too, when it

* is spelt oddly: percent-encoding, doubled slashes and upper case are undone before matching,
  and ``.``/``..`` segments, NULs and backslashes are refused (JupyterLab never sends them);
* asks for an attachment (a ``download`` query parameter, on any route);
* carries a token (an ``Authorization`` header, or a ``token`` query parameter): browsers use
  their hub session (a cookie); a token (the server's own ``JUPYTERHUB_API_TOKEN``, or one read
  from a page) replayed by a script from outside the enclave is refused here, at the edge.
  Inside the enclave nothing needs the guard for tokens: the hub and the server talk to each
  other directly, on the project network.

Each allowed route says who checks the login (:class:`Login`): the server itself (its handler
requires a login), the guard (routes Jupyter Server serves without one: static assets, lab
extensions and themes; and lab licenses, which hang without one; the guard asks the server's
``api/me`` with the request's cookies first), or nobody, for routes whose answer the guard
checks instead: the steps of signing in (the server's root, the OAuth callback and logout may
only redirect) and ``api``, the server's version, which the hub reads after a spawn
(``{"version": ...}`` and nothing else).

An answer that asks the browser to save it (a ``Content-Disposition`` header) is refused too,
whichever route made it. What a page can still read through ``api/contents`` (the content of a
file, shown in JupyterLab) is the browser tier's accepted residual (docs/architecture.md).
"""

from __future__ import annotations

import enum
import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote

#: first path segment (inside a server's URL) -> what the route does, in words
REFUSED_ROUTES = {
    "files": "the raw bytes of a file, for saving or opening in a browser tab",
    "nbconvert": "a notebook exported to another format (HTML, PDF, a script...)",
    "view": "a raw file shown in the browser",
}
#: a query parameter that asks for an attachment
DOWNLOAD_PARAMETER = "download"
#: a query parameter that carries an API token (Jupyter Server and JupyterHub read it)
TOKEN_PARAMETER = "token"
#: at most this many rounds of percent-decoding (more is refused as an evasion attempt)
MAX_DECODE_ROUNDS = 3

RELEASE_HINT = (
    "To take a result out of the enclave, save it in your outputs folder and ask for its "
    "release (Output checking); two output checkers review it first."
)


class Login(enum.Enum):
    """Who makes sure a request to an allowed route comes from a signed-in user."""

    SERVER = "server"  # the server's handler requires a login (redirect or 403 otherwise)
    GUARD = "guard"  # the server serves it without a login: the guard checks first
    SIGN_IN = "sign-in"  # a step of signing in (no login yet by definition); no content
    VERSION = "version"  # the server's version, which the hub reads after a spawn; nothing else


@dataclass(frozen=True)
class Refusal:
    """Why a request or an answer is refused: a short code, what it was, and a sentence."""

    code: str
    what: str
    sentence: str = ""
    #: the refusal page's heading, after "Not available in Havre: "
    title: str = "no downloads from a project server"

    def __post_init__(self) -> None:
        if not self.sentence:
            object.__setattr__(
                self,
                "sentence",
                f"Havre does not hand files to your browser: this address gives {self.what}. "
                + RELEASE_HINT,
            )


@dataclass(frozen=True)
class AllowedRoute:
    """One route of a notebook server that the guard lets through, for some methods."""

    name: str
    #: matched in full against the normalised path inside the server, without its first "/"
    pattern: str
    methods: frozenset[str]
    login: Login = Login.SERVER
    websocket: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _route(
    name: str,
    pattern: str,
    methods: str,
    login: Login = Login.SERVER,
    websocket: bool = False,
) -> AllowedRoute:
    return AllowedRoute(name, pattern, frozenset(methods.split()), login, websocket)


_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # kernel, session ids
_ANY = r"(/.*)?"  # a path inside the route (a file's path, a plugin id...)

#: What JupyterLab 4.6 on Jupyter Server 2.21 (with the terminals and JupyterHub extensions)
#: calls, read from the handlers those packages register and from JupyterLab's requests in the
#: browser tests. Patterns see the normalised path in lower case. GET allows HEAD too.
ALLOWED_ROUTES: tuple[AllowedRoute, ...] = (
    # signing in and out (JupyterHub's single-user extension)
    _route("server root (a redirect to lab)", r"", "GET", Login.SIGN_IN),
    _route("OAuth callback", r"oauth_callback", "GET", Login.SIGN_IN),
    _route("logout", r"logout", "GET", Login.SIGN_IN),
    # JupyterLab's pages and assets
    _route("JupyterLab page", r"(lab|doc)(/workspaces/[^/]+)?(/tree(/.*)?)?/?", "GET"),
    _route("static assets", r"static/.+", "GET", Login.GUARD),
    _route("lab extensions (assets)", r"lab/extensions/.+", "GET", Login.GUARD),
    _route("lab themes", r"lab/api/themes/.+", "GET", Login.GUARD),
    _route("lab settings", r"lab/api/settings" + _ANY, "GET PUT"),
    _route("lab workspaces", r"lab/api/workspaces" + _ANY, "GET PUT DELETE"),
    _route("lab translations", r"lab/api/translations" + _ANY, "GET"),
    _route("lab listings", r"lab/api/listings" + _ANY, "GET"),
    # the server never answers this one without a login (it hangs): the guard checks first
    _route("lab licenses (of its own packages)", r"lab/api/licenses" + _ANY, "GET", Login.GUARD),
    _route("lab extension list (read-only)", r"lab/api/extensions/?", "GET"),
    _route("lab plugin list", r"lab/api/plugins/?", "GET"),
    _route("lab build status", r"lab/api/build/?", "GET"),
    _route("lab news and update check (off)", r"lab/api/(news|update)/?", "GET"),
    # Jupyter Server's REST API
    _route("API version (the hub reads it)", r"api/?", "GET", Login.VERSION),
    _route("server status", r"api/status", "GET"),
    _route("who am I", r"api/me", "GET"),
    _route("path resolution", r"api/resolvepath", "GET"),
    _route("frontend config (read)", r"api/config/\w+", "GET"),
    _route("contents", r"api/contents" + _ANY, "GET PUT PATCH POST DELETE"),
    _route("export formats (names only)", r"api/nbconvert/?", "GET"),
    _route("kernels", r"api/kernels/?", "GET POST"),
    _route("a kernel", rf"api/kernels/{_ID}", "GET DELETE"),
    _route("kernel restart, interrupt", rf"api/kernels/{_ID}/(restart|interrupt)", "POST"),
    _route("kernel channels", rf"api/kernels/{_ID}/channels", "GET", websocket=True),
    _route("sessions", r"api/sessions/?", "GET POST"),
    _route("a session", rf"api/sessions/{_ID}", "GET PATCH DELETE"),
    _route("kernelspecs", r"api/kernelspecs(/[^/]+)?/?", "GET"),
    _route(
        "kernelspec logos",
        r"kernelspecs/[\w.%-]+/logo-(32x32\.png|64x64\.png|svg\.svg)",
        "GET",
    ),
    _route("terminals", r"api/terminals/?", "GET POST"),
    _route("a terminal", r"api/terminals/\w+", "GET DELETE"),
    _route("terminal websocket", r"terminals/websocket/\w+", "GET", websocket=True),
    _route("server events", r"api/events/subscribe", "GET", websocket=True),
    _route("CSP violation reports", r"api/security/csp-report", "POST"),
)


def normalised_path(path: str) -> str | None:
    """``path`` with percent-encoding, repeated slashes and dot segments undone, lower case.

    None when it still changes after :data:`MAX_DECODE_ROUNDS` rounds of decoding, or holds
    a NUL or a backslash (no legitimate JupyterLab request does).
    """
    decoded = _decoded(path)
    if decoded is None:
        return None
    normal = posixpath.normpath("/" + decoded)
    normal = "/" + normal.lstrip("/")  # normpath keeps a leading "//"
    if decoded.endswith("/") and normal != "/":
        normal += "/"
    return normal.lower()


def _decoded(path: str) -> str | None:
    decoded = path
    for _ in range(MAX_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        if unquote(decoded) != decoded:
            return None
    if "\x00" in decoded or "\\" in decoded:
        return None
    return decoded


def _has_dot_segments(path: str) -> bool:
    decoded = _decoded(path) or ""
    return any(segment in (".", "..") for segment in decoded.split("/"))


def allowed_route(method: str, path_in_server: str) -> AllowedRoute | None:
    """The allowed route a request matches, with its method; None when there is none."""
    normal = normalised_path(path_in_server)
    if normal is None:
        return None
    inside = normal.lstrip("/")
    method = "GET" if method.upper() == "HEAD" else method.upper()
    for route in ALLOWED_ROUTES:
        if method in route.methods and route.matches(inside):
            return route
    return None


def _not_allowed(method: str, normal: str) -> Refusal:
    shown = normal if len(normal) <= 80 else normal[:77] + "..."
    return Refusal(
        "not-allowed",
        f"{method} {shown}",
        f"Havre's project servers answer only the requests JupyterLab needs, and {method} "
        f"{shown} is not one of them. " + RELEASE_HINT,
        "not a request JupyterLab makes",
    )


TOKEN_REFUSAL = Refusal(
    "token",
    "a request with an API token",
    "Havre's project servers don't accept API tokens from a browser or a script: sign in "
    "to the hub in your browser and use JupyterLab there. " + RELEASE_HINT,
    "no API tokens, sign in with your browser",
)

LOGIN_REFUSAL = Refusal(
    "login",
    "a request without a sign-in",
    "Sign in first: every address of a project server needs your hub sign-in "
    "(open /hub/login, then your project from the hub's home page).",
    "sign in first",
)


ODD_PATH_REFUSAL = Refusal(
    "odd-path",
    "an address spelt in a way JupyterLab never uses",
    "Havre refuses addresses spelt in a way JupyterLab never uses (dot segments, "
    "backslashes, NULs, or percent-encoding in many layers). " + RELEASE_HINT,
    "an address JupyterLab never uses",
)

SIGN_IN_REFUSAL = Refusal(
    "sign-in",
    "a sign-in step that did not redirect",
    "Signing in to this project server did not finish: start again from the hub's home page "
    "(/hub/home).",
    "signing in did not finish",
)


def check_request(
    method: str,
    path_in_server: str,
    query: str,
    headers: Iterable[tuple[str, str]] = (),
    websocket: bool = False,
) -> tuple[Refusal | None, AllowedRoute | None]:
    """Whether a request to a notebook server is refused, and the allowed route it matches.

    ``path_in_server`` is the path after the server's prefix (``/user/<name>/<project>/``),
    as sent (still percent-encoded); ``query`` the raw query string; ``headers`` the request's
    headers; ``websocket`` whether it asks for a websocket upgrade. Returns (refusal, None) or
    (None, route); the caller still checks the login when ``route.login`` is ``Login.GUARD``.
    """
    normal = normalised_path(path_in_server)
    if normal is None:
        return ODD_PATH_REFUSAL, None
    first = normal.strip("/").split("/", 1)[0]
    if first in REFUSED_ROUTES:
        return Refusal(f"route-{first}", REFUSED_ROUTES[first]), None
    if _has_dot_segments(path_in_server):
        return ODD_PATH_REFUSAL, None
    for name, _value in parse_qsl(query, keep_blank_values=True):
        key = name.strip().lower()
        if key == DOWNLOAD_PARAMETER:
            return Refusal("download-parameter", "a file as an attachment to save"), None
        if key == TOKEN_PARAMETER:
            return TOKEN_REFUSAL, None
    for name, _value in headers:
        if name.lower() == "authorization":
            return TOKEN_REFUSAL, None
    route = allowed_route(method, path_in_server)
    if route is None or route.websocket != websocket:
        return _not_allowed(method.upper(), normal), None
    return None, route


#: The only routes of an ``access: desktop`` project's server the guard lets through: what
#: its remote desktop's front serves (images/desktop/nginx.conf.template). Pixels only: no
#: route of JupyterLab or Jupyter Server is routable from the researcher's browser. The sign-in
#: steps may only redirect (the desktop's front hands them to the notebook server, which does
#: the hub's OAuth as for a browser-tier server); the noVNC files and its websocket are served
#: by the desktop's front only after the notebook server's ``api/me`` accepted the cookie.
DESKTOP_ROUTES: tuple[AllowedRoute, ...] = (
    _route("desktop-start", r"", "GET", Login.SIGN_IN),
    _route("desktop-login", r"login", "GET", Login.SIGN_IN),
    _route("desktop-oauth-callback", r"oauth_callback", "GET", Login.SIGN_IN),
    _route("desktop-novnc", r"desktop/[a-z0-9._-]+(/[a-z0-9._-]+){0,6}", "GET"),
    _route("desktop-websocket", r"websockify", "GET", websocket=True),
)

#: what a desktop project's server answers for anything else
DESKTOP_PIXELS_ONLY = "pixels only: this project is reached through its remote desktop"


def _desktop_refusal(method: str, normal: str) -> Refusal:
    shown = normal if len(normal) <= 80 else normal[:77] + "..."
    return Refusal(
        "desktop-only",
        f"{method} {shown}",
        f"This project is pixels only (access: desktop): your browser reaches its remote "
        f"desktop and nothing else, and {method} {shown} is not part of it. Open the project "
        "from the hub's home page; results leave through the egress service.",
        DESKTOP_PIXELS_ONLY,
    )


def check_desktop_request(
    method: str,
    path_in_server: str,
    query: str,
    headers: Iterable[tuple[str, str]] = (),
    websocket: bool = False,
) -> tuple[Refusal | None, AllowedRoute | None]:
    """:func:`check_request` for an ``access: desktop`` project's server: the same refusals
    of odd spellings and tokens, then :data:`DESKTOP_ROUTES` as the only allow-list."""
    normal = normalised_path(path_in_server)
    if normal is None or _has_dot_segments(path_in_server):
        return ODD_PATH_REFUSAL, None
    for name, _value in parse_qsl(query, keep_blank_values=True):
        if name.strip().lower() == TOKEN_PARAMETER:
            return TOKEN_REFUSAL, None
    for name, _value in headers:
        if name.lower() == "authorization":
            return TOKEN_REFUSAL, None
    inside = normal.lstrip("/")
    verb = "GET" if method.upper() == "HEAD" else method.upper()
    for route in DESKTOP_ROUTES:
        if verb in route.methods and route.matches(inside) and route.websocket == websocket:
            return None, route
    return _desktop_refusal(method.upper(), normal), None


VERSION_REFUSAL = Refusal(
    "version",
    "an answer that is not the server's version",
    "This address gives the project server's version only, and the server answered something else.",
    "not the server's version",
)


def response_refusal(
    headers: Iterable[tuple[str, str]],
    route: AllowedRoute | None = None,
    status: int = 200,
    body: bytes = b"",
) -> Refusal | None:
    """Whether a notebook server's answer is refused: it asks the browser to save a file, it
    answers a sign-in step (``route``) with anything but a redirect, or the version route
    with anything but ``{"version": ...}``."""
    if route is not None and route.login is Login.SIGN_IN and not 300 <= status < 400:
        return SIGN_IN_REFUSAL
    if route is not None and route.login is Login.VERSION and not _is_version(body):
        return VERSION_REFUSAL
    for name, _value in headers:
        if name.lower() == "content-disposition":
            return Refusal("attachment", "a file as an attachment to save")
    return None


def _is_version(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(answer, dict)
        and set(answer) == {"version"}
        and isinstance(answer["version"], str)
        and len(answer["version"]) <= 40
    )


#: The Content-Security-Policy of every page and answer of a notebook server, before the guard
#: narrows it to that server (:func:`content_security_policy`). Scripts (also those in notebook
#: outputs, which run in JupyterLab's page) may talk to this origin only: no fetch, XHR,
#: websocket, image, font, frame or form toward another origin. ``frame-ancestors 'none'``:
#: nothing needs to frame JupyterLab, and a page of another project server (same origin) must
#: not frame this one and script it.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        # JupyterLab needs inline scripts and eval (its bundles and renderers use them)
        "script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "frame-src 'self' blob: data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

#: Every notebook, hub and egress page: a page of the same origin that opens it with
#: ``window.open`` gets no handle on it (no script access to its document), while the page
#: itself may still open popups it keeps a handle on (JupyterLab's Release menu opens one).
CROSS_ORIGIN_OPENER_POLICY = "noopener-allow-popups"

#: a ``Host`` header the guard puts in a policy: a DNS name or IPv4 address, or an IPv6
#: address in brackets, with an optional port (nothing that could end a CSP directive)
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def server_sources(scheme: str, host: str, prefix: str) -> str:
    """CSP sources for one notebook server's own addresses, and nothing else of the origin.

    ``scheme`` is the browser's (``http`` or ``https``), ``host`` the request's ``Host``,
    ``prefix`` the server's path (``/user/<name>/<project>/``). A source path that ends in
    ``/`` matches every address under it (CSP3), so a page of carol's cardio server may fetch
    and open websockets under ``/user/carol/cardio/`` only: not her diabetes server, the hub's
    API or the egress service, although they share the origin. Returns ``'none'`` for a host or
    scheme that can't be written in a policy (no browser sends one).
    """
    scheme = scheme.lower()
    if scheme not in ("http", "https") or not _HOST.fullmatch(host or ""):
        return "'none'"
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError(f"a server prefix starts and ends with '/': {prefix!r}")
    # one canonical percent-encoding (browsers compare the decoded paths); no ";" or ","
    path = quote(unquote(prefix), safe="/")
    socket = "wss" if scheme == "https" else "ws"
    return f"{scheme}://{host}{path} {socket}://{host}{path}"


def content_security_policy(report_uri: str = "", sources: str = "") -> str:
    """The policy, with Jupyter Server's violation report address when given.

    ``sources`` (from :func:`server_sources`) replaces ``'self'`` in ``connect-src`` and
    ``frame-src``: scripts then reach their own server's addresses only.
    """
    policy = CONTENT_SECURITY_POLICY
    if sources:
        policy = policy.replace("connect-src 'self'", f"connect-src {sources}")
        frames = "blob: data:" if sources == "'none'" else f"{sources} blob: data:"
        policy = policy.replace("frame-src 'self' blob: data:", f"frame-src {frames}")
    if report_uri:
        return f"{policy}; report-uri {report_uri}"
    return policy
