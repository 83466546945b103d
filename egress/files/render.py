"""Show a file submitted for release to an output checker, in their browser, safely.

The rule this module keeps: **nothing from a researcher's file ever runs in a checker's
browser**. The checker's page is logged in to the egress service, so a script that ran there
could approve requests, read other projects' files or send them elsewhere. Every kind of file
is therefore turned into inert HTML (or shown through ``<img>``, which never runs scripts), the
result is checked once more with an independent parser (:func:`find_active_content`), and the
web layer adds a strict page policy (:data:`CHECKER_PAGE_CSP`) and strict headers on raw file
responses (:func:`raw_response_headers`).

How each kind is shown (see ``docs/checker-viewing-files.md``)
    ========= ==================================================================================
    kind      shown as
    ========= ==================================================================================
    csv, tsv  an HTML table: header row, row numbers, every cell escaped, per-cell verdict
              classes and reasons (``cell_verdicts``, ``cell_reasons``), first ``max_rows`` rows
    png, jpeg ``<img src=raw_url>``; never inline base64
    svg       ``<img src=raw_url>``: a browser runs no script and loads nothing external in an SVG
              loaded as an image; the raw route adds ``Content-Security-Policy: ... sandbox``
    pdf       not inline (PDF viewers run JavaScript): size, version and page count, a download
              link, and, when the caller gives ``pdf_preview_url``, a sandboxed ``<iframe>``
    text      ``<pre>``, escaped
    markdown  markdown-it-py with raw HTML off, then the allow-list sanitiser (nh3)
    notebook  nbconvert's ``basic`` template (no JavaScript, no widgets) after dropping
              JavaScript, widget and unknown outputs, then the same allow-list sanitiser
    ========= ==================================================================================

Invisible and direction-changing characters (bidi overrides, zero-width characters, Unicode
"tag" characters, control characters) are made visible as ``[U+202E]`` markers wherever text
is shown, so nothing in a file can hide from the checker.

Class names: everything this module adds starts with ``havre-``; researcher HTML keeps only the
class names nbconvert, Pygments and markdown-it produce (:func:`sanitise_html`), so a researcher
can't borrow the page's own CSS classes (for example to lay a fake button over the page). The web
layer's own CSS must therefore use ``havre-`` names only.

This module is the entry point: it checks the call, hands the file to its kind's module
(:mod:`~egress.files.tables`, :mod:`~egress.files.images`, :mod:`~egress.files.pdf`,
:mod:`~egress.files.text`, :mod:`~egress.files.notebooks`), and refuses the result if the
independent check (:mod:`egress.files.sanitise`) still finds anything active in it.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Mapping, Sequence

from egress.files.common import Rendered, RenderError
from egress.files.images import render_image
from egress.files.kinds import CONTENT_TYPES, extensions_of
from egress.files.notebooks import NotebookError, render_notebook
from egress.files.pdf import render_pdf
from egress.files.sanitise import (
    INVISIBLE,
    decode_for_display,
    find_active_content,
    sanitise_html,
)
from egress.files.tables import render_table
from egress.files.text import render_markdown, render_text

__all__ = [
    "CHECKER_PAGE_CSP",
    "CONTENT_TYPES",
    "KINDS",
    "RAW_FILE_CSP",
    "NotebookError",
    "RenderError",
    "Rendered",
    "find_active_content",
    "raw_response_headers",
    "render_for_checker",
    "sanitise_html",
]

KINDS = ("csv", "tsv", "png", "jpeg", "svg", "pdf", "text", "markdown", "notebook")
"""The kinds :func:`render_for_checker` accepts (the values of ``egress.files.kinds.FileKind``)."""

CHECKER_PAGE_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""``Content-Security-Policy`` for every checker page that shows a rendered file.

* ``default-src 'none'``: nothing loads unless listed below (no fonts, media, objects, workers).
* ``script-src 'self'``: only the service's own script files; no inline script, no ``eval``. A
  script that slipped through the sanitiser would still not run.
* ``img-src 'self' data:``: raw images from the service and the ``data:image/png|jpeg`` images
  inside notebooks; no request to any other host, so an image can't carry data out.
* ``style-src 'self' 'unsafe-inline'``: the service's stylesheet; ``'unsafe-inline'`` is kept so
  the page's own templates may use ``style=`` attributes (the sanitiser removes every ``style``
  attribute and element from researcher content). Drop it if the page needs none.
* ``connect-src 'self'``: added to the brief's policy so the page's own script can call the
  service's JSON API (``default-src 'none'`` would block ``fetch``).
* ``frame-src 'self'``: the sandboxed PDF preview frame (:func:`raw_response_headers` ``pdf``).
* ``form-action 'self'``, ``base-uri 'none'``, ``frame-ancestors 'none'``: forms only post to
  the service, no ``<base>`` can redirect relative URLs, no other site can frame the page
  (clickjacking).
"""

RAW_FILE_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
"""``Content-Security-Policy`` of every raw file response (before ``frame-ancestors``).

``sandbox`` without any ``allow-*`` token gives the document a unique opaque origin with no
script, forms, popups or plugins, so even a file opened directly (an SVG in its own tab, a text
file the browser sniffs differently) can't act as the service.
"""


def _check_kind(kind: str) -> str:
    value = str(kind).lower()
    if value not in KINDS:
        raise RenderError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return value


def _check_raw_url(url: str | None, kind: str) -> str:
    """The caller's URL of the raw file: a same-origin relative URL, nothing else."""
    if not url:
        raise RenderError(f"raw_url is needed to show a {kind} file")
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise RenderError(f"raw_url must be a string without spaces or control characters: {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("//", "\\", "/\\")):
        raise RenderError(f"raw_url must be a relative URL on the egress service: {url!r}")
    return url


def _inert_or_refused(rendered: Rendered, **allowed: Sequence[str]) -> Rendered:
    """``rendered``, or a refusal if the independent check finds anything active in it."""
    problems = find_active_content(rendered.html, **allowed)
    if not problems:
        return rendered
    listed = "; ".join(sorted(set(problems))[:10])
    return Rendered(
        html=(
            '<p class="havre-render-refused">This file can\'t be shown safely on this page. '
            "Use the raw file, or ask the researcher for a simpler export.</p>"
        ),
        content_type_for_raw=rendered.content_type_for_raw,
        notes=[*rendered.notes, f"Not shown: the rendering still had active content ({listed})."],
        truncated=True,
    )


# --- the entry point -----------------------------------------------------------------------


def render_for_checker(
    kind: str,
    data: bytes,
    *,
    name: str,
    max_rows: int = 1000,
    raw_url: str | None = None,
    cell_verdicts: Mapping[tuple[int, int], str] | None = None,
    cell_reasons: Mapping[tuple[int, int], str | Sequence[str]] | None = None,
    pdf_preview_url: str | None = None,
) -> Rendered:
    """The inert HTML a checker sees for a file of ``kind`` (one of :data:`KINDS`).

    ``raw_url`` is the service's (relative) URL of the raw file, served with
    :func:`raw_response_headers`; it is needed for ``png``, ``jpeg``, ``svg`` and ``pdf``.
    ``pdf_preview_url`` (optional) is the URL of the same PDF served with
    ``raw_response_headers("pdf", name, inline=True)``, shown in a sandboxed frame.

    Tables: ``cell_verdicts`` maps ``(row, column)`` to ``"pass"``, ``"review"`` or
    ``"fail"``, where ``row`` is the 0-based index of a *data* row (the header and blank lines
    don't count, as in ``pandas.read_csv(...).iloc[row, column]``) and ``column`` the 0-based
    column in the file; ``cell_reasons`` maps the same keys to a reason or a list of reasons,
    shown as the cell's tooltip. Cells get the classes ``havre-cell-pass``/``-review``/``-fail``.
    The row numbers shown are the file's record numbers, header = 1, as in
    ``egress.files.checks`` messages. Only the first ``max_rows`` data rows are shown.
    """
    kind = _check_kind(kind)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 0:
        raise RenderError(f"max_rows must be a whole number of rows, not {max_rows!r}")
    data = bytes(data)
    notes: list[str] = []
    content_type = CONTENT_TYPES[kind]
    allowed: dict[str, Sequence[str]] = {}
    truncated = False
    if kind in ("png", "jpeg", "svg", "pdf"):
        url = _check_raw_url(raw_url, kind)
        allowed["allowed_urls"] = [url]
        if kind == "pdf":
            preview = _check_raw_url(pdf_preview_url, kind) if pdf_preview_url else None
            allowed["sandboxed_frames"] = [preview] if preview else []
            body = render_pdf(data, name, url, preview, notes)
        else:
            body = render_image(kind, data, name, url, notes)
    elif kind in ("csv", "tsv"):
        text = decode_for_display(data, notes)
        table = render_table(
            kind,
            text,
            max_rows=max_rows,
            cell_verdicts=cell_verdicts,
            cell_reasons=cell_reasons,
            notes=notes,
        )
        body, truncated = table if table is not None else render_text(text, notes)
    elif kind == "text":
        body, truncated = render_text(decode_for_display(data, notes), notes)
    elif kind == "markdown":
        body, truncated = render_markdown(decode_for_display(data, notes), notes)
    else:
        body, truncated = render_notebook(data, notes)
    return _inert_or_refused(Rendered(body, content_type, notes, truncated), **allowed)


# --- raw file responses --------------------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _filenames(kind: str, name: str) -> tuple[str, str | None]:
    """An ASCII ``filename`` and, when the name isn't plain ASCII, an RFC 5987 ``filename*``.

    Only the last path component is used; control and invisible characters are dropped; the
    name always ends with an extension of ``kind``.
    """
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(c for c in base if not (INVISIBLE.match(c) or unicodedata.category(c) == "Cc"))
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    ascii_name = _UNSAFE_FILENAME.sub("_", ascii_name).strip("._") or "file"
    stem, dot, ext = ascii_name.rpartition(".")
    if not dot or ext.lower() not in extensions_of(kind):
        stem, ext = ascii_name, extensions_of(kind)[0]
    ascii_name = f"{stem[:100]}.{ext}"
    utf8 = None
    if base and base != ascii_name:
        utf8 = "UTF-8''" + urllib.parse.quote(unicodedata.normalize("NFC", base)[:200], safe="")
    return ascii_name, utf8


def raw_response_headers(
    kind: str, name: str = "", *, inline: bool | None = None
) -> dict[str, str]:
    """Headers for every response that sends a file's raw bytes to a checker's browser.

    Always: the kind's ``Content-Type`` (:data:`CONTENT_TYPES`), ``X-Content-Type-Options:
    nosniff`` (the browser must not guess another type), ``Content-Security-Policy``
    (:data:`RAW_FILE_CSP`: nothing loads, nothing runs, a unique origin), ``Content-Disposition``
    with a safe ASCII ``filename`` (plus ``filename*`` for other names), ``Cache-Control:
    no-store`` (unreleased outputs stay out of caches), ``Referrer-Policy: no-referrer`` and
    ``Cross-Origin-Resource-Policy: same-origin``.

    ``inline`` defaults to true except for ``pdf`` and ``notebook``, which are downloads
    (``attachment``); ``raw_response_headers("pdf", name, inline=True)`` is the sandboxed PDF
    preview, the only response another page of the service may frame.
    """
    kind = _check_kind(kind)
    if inline is None:
        inline = kind not in ("pdf", "notebook")
    framed = kind == "pdf" and inline
    ascii_name, utf8 = _filenames(kind, name)
    disposition = f'{"inline" if inline else "attachment"}; filename="{ascii_name}"'
    if utf8:
        disposition += f"; filename*={utf8}"
    return {
        "Content-Type": CONTENT_TYPES[kind],
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": RAW_FILE_CSP
        + ("; frame-ancestors 'self'" if framed else "; frame-ancestors 'none'"),
        "Content-Disposition": disposition,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Resource-Policy": "same-origin",
        "X-Frame-Options": "SAMEORIGIN" if framed else "DENY",
    }
