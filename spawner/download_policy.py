"""Which requests to a notebook server hand raw files to a browser, and are refused.

Pure policy, no web code: the download guard (:mod:`spawner.download_guard`) asks
:func:`request_refusal` about every request before it reaches a notebook server, and
:func:`response_refusal` about every answer before it reaches the browser.

A notebook server hands files to a browser for saving through a few routes of Jupyter Server:

* ``files/<path>``: the raw bytes of any file (JupyterLab's *Download*, *Copy Download Link*
  and *Open in New Browser Tab*, with ``?download=1`` for an attachment);
* ``nbconvert/<format>/<path>``: a notebook exported as HTML, PDF, a script... (JupyterLab's
  *Save and Export Notebook As*);
* ``view/<path>``: a page that shows a raw file in a frame.

They are refused, whatever the spelling: percent-encoding, doubled slashes, ``.`` and ``..``
segments and upper case are undone first, and any ``download`` query parameter is refused on
any route. What JupyterLab needs to work (``api/contents``, ``api/kernels`` and their
websockets, ``lab`` and ``static`` assets, settings, terminals) passes. An answer that asks the
browser to save it (a ``Content-Disposition`` header) is refused too, whichever route made it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

#: first path segment (inside a server's URL) -> what the route does, in words
REFUSED_ROUTES = {
    "files": "the raw bytes of a file, for saving or opening in a browser tab",
    "nbconvert": "a notebook exported to another format (HTML, PDF, a script...)",
    "view": "a raw file shown in the browser",
}
#: a query parameter that asks for an attachment
DOWNLOAD_PARAMETER = "download"
#: at most this many rounds of percent-decoding (more is refused as an evasion attempt)
MAX_DECODE_ROUNDS = 3


@dataclass(frozen=True)
class Refusal:
    """Why a request or an answer is refused: a short code and a sentence for the user."""

    code: str
    what: str

    @property
    def sentence(self) -> str:
        return (
            f"Havre does not hand files to your browser: this address gives {self.what}. "
            "To take a result out of the enclave, save it in your outputs folder and ask "
            "for its release (Output checking); two output checkers review it first."
        )


def normalised_path(path: str) -> str | None:
    """``path`` with percent-encoding, repeated slashes and dot segments undone, lower case.

    None when it still changes after :data:`MAX_DECODE_ROUNDS` rounds of decoding, or holds
    a NUL or a backslash (no legitimate JupyterLab request does).
    """
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
    normal = posixpath.normpath("/" + decoded)
    normal = "/" + normal.lstrip("/")  # normpath keeps a leading "//"
    if decoded.endswith("/") and normal != "/":
        normal += "/"
    return normal.lower()


def request_refusal(path_in_server: str, query: str) -> Refusal | None:
    """Whether a request to a notebook server is refused.

    ``path_in_server`` is the path after the server's prefix (``/user/<name>/<project>/``),
    as sent (still percent-encoded); ``query`` the raw query string.
    """
    normal = normalised_path(path_in_server)
    if normal is None:
        return Refusal("odd-path", "an address spelt in a way JupyterLab never uses")
    first = normal.strip("/").split("/", 1)[0]
    if first in REFUSED_ROUTES:
        return Refusal(f"route-{first}", REFUSED_ROUTES[first])
    for name, _value in parse_qsl(query, keep_blank_values=True):
        if name.strip().lower() == DOWNLOAD_PARAMETER:
            return Refusal("download-parameter", "a file as an attachment to save")
    return None


def response_refusal(headers: Iterable[tuple[str, str]]) -> Refusal | None:
    """Whether a notebook server's answer is refused: it asks the browser to save a file."""
    for name, _value in headers:
        if name.lower() == "content-disposition":
            return Refusal("attachment", "a file as an attachment to save")
    return None


#: The Content-Security-Policy of every page and answer of a notebook server. Scripts (also
#: those in notebook outputs, which run in JupyterLab's page) may talk to this origin only:
#: no fetch, XHR, websocket, image, font, frame or form toward another origin.
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
        "frame-ancestors 'self'",
    ]
)


def content_security_policy(report_uri: str = "") -> str:
    """The policy, with Jupyter Server's violation report address when given."""
    if report_uri:
        return f"{CONTENT_SECURITY_POLICY}; report-uri {report_uri}"
    return CONTENT_SECURITY_POLICY
