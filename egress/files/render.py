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
layer's own CSS must therefore use ``havre-`` names only. :func:`checker_css` is a stylesheet
for the rendered HTML, to be served from the service itself (``style-src 'self'``).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import html
import io
import json
import re
import threading
import unicodedata
import urllib.parse
import warnings
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from typing import Any

import nh3
from markdown_it import MarkdownIt

from egress.files.checks import is_formula
from egress.files.kinds import CONTENT_TYPES, SCRIPT_MIMES, extensions_of

__all__ = [
    "CHECKER_PAGE_CSP",
    "CONTENT_TYPES",
    "KINDS",
    "RAW_FILE_CSP",
    "NotebookError",
    "RenderError",
    "Rendered",
    "checker_css",
    "find_active_content",
    "raw_response_headers",
    "render_for_checker",
    "sanitise_html",
]

KINDS = ("csv", "tsv", "png", "jpeg", "svg", "pdf", "text", "markdown", "notebook")
"""The kinds :func:`render_for_checker` accepts (the values of ``egress.files.checks.FileKind``)."""

VERDICTS = ("pass", "review", "fail")
"""Per-cell verdicts a table can show (``havre.sdc`` verdict names)."""

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

MAX_TEXT_CHARS = 2_000_000
"""Most characters of a text or Markdown file shown on the page (the rest: raw file)."""

PDF_INFLATE_BUDGET = 16 * 1024 * 1024
"""Most bytes inflated from PDF object streams while looking for the page count."""

USER_ID_PREFIX = "user-content-"
"""Prefix of every ``id`` from researcher HTML (and of the ``#fragment`` links to them), so no
researcher ``id`` can clobber a name the page's own script uses (DOM clobbering)."""


class RenderError(ValueError):
    """A programming error in the call: unknown kind, bad ``raw_url``, bad verdict."""


class NotebookError(ValueError):
    """Not an nbformat 4 notebook."""


@dataclass(frozen=True)
class Rendered:
    """What the checker's page shows for one file.

    ``html`` is an inert HTML fragment to put inside the page; ``content_type_for_raw`` the
    ``Content-Type`` of the raw file response (the same as ``raw_response_headers(kind)``);
    ``notes`` sentences for the checker (what was removed, truncated or could not be read);
    ``truncated`` whether part of the file is not shown in ``html``.
    """

    html: str
    content_type_for_raw: str
    notes: list[str] = field(default_factory=list)
    truncated: bool = False


# --- small helpers -----------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _check_kind(kind: str) -> str:
    value = str(kind).lower()
    if value not in KINDS:
        raise RenderError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return value


def _plural(number: int, noun: str, plural: str | None = None) -> str:
    return f"{number:,} {noun if number == 1 else (plural or noun + 's')}"


def _size(number: int) -> str:
    if number < 1024:
        return _plural(number, "byte")
    value = float(number)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"


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


# Invisible, direction-changing and control characters: shown as [U+XXXX] markers.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)


def _marker(char: str) -> str:
    code = f"U+{ord(char):04X}"
    label = unicodedata.name(char, "control character")
    return f'<span class="havre-invisible" title="{_esc(code + " " + label)}">[{code}]</span>'


def _visible(text: str, counter: Counter[str] | None = None) -> str:
    """``text`` escaped for HTML, with invisible characters shown as markers."""
    escaped = _esc(text)
    if not _INVISIBLE.search(escaped):
        return escaped

    def sub(match: re.Match[str]) -> str:
        if counter is not None:
            counter[match.group()] += 1
        return _marker(match.group())

    return _INVISIBLE.sub(sub, escaped)


def _invisible_note(counter: Counter[str], notes: list[str]) -> None:
    if counter:
        codes = ", ".join(f"U+{ord(c):04X}" for c in sorted(counter))
        what = _plural(sum(counter.values()), "invisible or direction-changing character")
        notes.append(f"The file contains {what} ({codes}); each is shown as a [U+XXXX] marker.")


def _decode(data: bytes, notes: list[str]) -> str:
    """UTF-8 text of ``data``; a note (not an error) when it isn't valid UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        notes.append("The file starts with a UTF-8 byte order mark (not shown).")
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        notes.append("The file looks like UTF-16 text, not UTF-8; it is shown as UTF-8.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = sum(1 for c in data.decode("utf-8", errors="replace") if c == "\ufffd")
        notes.append(
            f"The file is not valid UTF-8 (the first invalid byte is at offset {error.start:,}); "
            f"invalid bytes are shown as \ufffd (about {_plural(bad, 'place')}). The raw file "
            "holds the exact bytes."
        )
        return data.decode("utf-8", errors="replace")


# --- HTML sanitising and the independent check ----------------------------------------------

_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup",
        "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure", "h1",
        "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p",
        "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "summary", "sup",
        "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul", "var",
        "wbr",
    }
)  # fmt: skip
"""Tags kept in researcher HTML. Not kept: anything active or embedding (script, iframe, object,
embed, form controls, link, meta, base, style, svg, math), and ``bdo`` (it reverses how text
displays, which could make a value look like another)."""

_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"class", "id", "title", "lang"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start", "type"},
    "col": {"span"},
    "colgroup": {"span"},
    "time": {"datetime"},
}
"""Attributes kept: no ``style``, no event handlers, no ``dir``, no ``hidden``."""

_CLEAN_CONTENT_TAGS = frozenset(
    {
        "script", "style", "template", "noscript", "iframe", "object", "embed", "applet",
        "frame", "frameset", "noframes", "noembed", "textarea", "select", "title", "svg",
        "math", "xmp", "plaintext",
    }
)  # fmt: skip
"""Tags removed together with everything inside them."""

_NOTEBOOK_CLASSES = frozenset(
    {
        # nbconvert's classic/basic template
        "cell", "border-box-sizing", "text_cell", "code_cell", "rendered", "prompt",
        "input_prompt", "output_prompt", "inner_cell", "text_cell_render", "rendered_html",
        "anchor-link", "input", "input_area", "highlight", "output_wrapper", "output",
        "output_area", "output_subarea", "output_stream", "output_stdout", "output_stderr",
        "output_text", "output_error", "output_html", "output_execute_result", "output_png",
        "output_jpeg", "output_latex", "output_markdown", "unconfined",
        # pandas' DataFrame.to_html
        "dataframe",
    }
)  # fmt: skip
_CLASS_PATTERN = re.compile(r"(?:hl|ansi|language)-[a-z0-9_+-]{1,40}")

_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=\s]*", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})


@lru_cache(maxsize=1)
def _pygments_classes() -> frozenset[str]:
    from pygments.token import STANDARD_TYPES

    return frozenset(name for name in STANDARD_TYPES.values() if name)


def _class_ok(name: str) -> bool:
    return (
        name in _NOTEBOOK_CLASSES
        or name in _pygments_classes()
        or bool(_CLASS_PATTERN.fullmatch(name))
    )


def _scheme(url: str) -> str | None:
    compact = "".join(c for c in html.unescape(url) if not (c.isspace() or ord(c) < 32))
    match = _SCHEME.match(compact)
    return match.group(1).lower() if match else None


class _Filter:
    """nh3 attribute callback; counts the links it removes, for the checker's notes."""

    def __init__(self, findings: Counter[str]) -> None:
        self.findings = findings

    def __call__(self, tag: str, attribute: str, value: str) -> str | None:
        if attribute == "class":
            kept = [name for name in value.split() if _class_ok(name)]
            return " ".join(kept) or None
        if attribute == "src":
            # find_active_content has already counted these for the notes.
            stripped = value.strip()
            return stripped if tag == "img" and _DATA_IMAGE.fullmatch(stripped) else None
        if attribute == "href":
            stripped = value.strip()
            if stripped.startswith("#"):
                fragment = stripped[1:]
                if not fragment.startswith(USER_ID_PREFIX):
                    fragment = USER_ID_PREFIX + fragment
                return "#" + fragment
            scheme = _scheme(stripped)
            if scheme in _LINK_SCHEMES:
                return stripped
            if scheme not in _BAD_SCHEMES:  # those are counted by find_active_content
                what = f"{scheme}: link" if scheme else "relative link (to a path on the service)"
                self.findings[what] += 1
            return None
        return value


_IMG_WITHOUT_SRC = re.compile(r'<img(?!(?:[^>"]|"[^"]*")*\ssrc=")(?:[^>"]|"[^"]*")*>')
_ALT = re.compile(r'\salt="([^"]*)"')
_NBCONVERT_ALT = "No description has been provided for this image"


def _image_not_shown(match: re.Match[str]) -> str:
    alt = _ALT.search(match.group())
    text = html.unescape(alt.group(1)) if alt else ""
    return (
        f"<em>[image not shown{': ' + _esc(text) if text and text != _NBCONVERT_ALT else ''}]</em>"
    )


def _sanitise(fragment: str, findings: Counter[str]) -> str:
    for problem in find_active_content(fragment):
        findings[_problem_kind(problem)] += 1
    clean = nh3.clean(
        fragment,
        tags=set(_TAGS),
        clean_content_tags=set(_CLEAN_CONTENT_TAGS),
        attributes={tag: set(names) for tag, names in _ATTRIBUTES.items()},
        attribute_filter=_Filter(findings),
        strip_comments=True,
        link_rel="noopener noreferrer",
        url_schemes={"http", "https", "mailto", "data"},
        set_tag_attribute_values={"details": {"open": ""}},
        id_prefix=USER_ID_PREFIX,
    )
    # An <img> whose source was removed would show as a broken image: say so in words.
    return _IMG_WITHOUT_SRC.sub(_image_not_shown, clean)


def _removed_note(findings: Counter[str], notes: list[str]) -> None:
    if findings:
        listed = "; ".join(f"{what} ({count})" for what, count in sorted(findings.items()))
        notes.append(f"Removed from the file's HTML before showing it: {listed}.")


def sanitise_html(fragment: str, notes: list[str] | None = None) -> str:
    """Researcher HTML reduced to an allow-list of inert tags and attributes (nh3).

    Removes scripts, event handlers, ``style``, frames, embeds, forms, SVG and MathML; keeps
    ``<img>`` only with a ``data:image/png`` or ``data:image/jpeg`` source, links only to
    ``http``, ``https``, ``mailto`` or a ``#fragment`` (with ``rel="noopener noreferrer"``),
    class names only from nbconvert, Pygments and markdown-it, and prefixes every ``id`` with
    :data:`USER_ID_PREFIX`. ``<details>`` are forced open so nothing is folded away. When
    ``notes`` is given, a sentence listing what was removed is appended to it.
    """
    findings: Counter[str] = Counter()
    clean = _sanitise(fragment, findings)
    if notes is not None:
        _removed_note(findings, notes)
    return clean


_ACTIVE_TAGS = frozenset(
    {
        "script", "iframe", "frame", "frameset", "object", "embed", "applet", "base", "link",
        "meta", "form", "input", "button", "textarea", "select", "option", "style", "svg",
        "math", "template", "noscript", "portal", "fencedframe", "audio", "video", "source",
        "track", "picture", "image", "isindex", "xmp", "plaintext", "bdo",
    }
)  # fmt: skip
_URL_ATTRIBUTES = frozenset(
    {
        "action", "formaction", "background", "poster", "srcset", "data", "codebase",
        "xlink:href", "ping", "cite", "longdesc", "dynsrc", "lowsrc", "usemap", "manifest",
    }
)  # fmt: skip
_BAD_SCHEMES = frozenset({"javascript", "vbscript", "livescript", "data", "file", "blob"})


class _ActiveScan(HTMLParser):
    def __init__(self, allowed_urls: frozenset[str], frames: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.allowed_urls = allowed_urls
        self.frames = frames
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in _ACTIVE_TAGS:
            if not (tag == "iframe" and self._our_frame(values)):
                self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self.problems.append(f"{name} event-handler attribute on <{tag}>")
            elif name == "style":
                self.problems.append(f"style attribute on <{tag}>")
            elif name in _URL_ATTRIBUTES:
                self.problems.append(f"{name} attribute on <{tag}>")
            elif name == "href":
                scheme = _scheme(value)
                if scheme in _BAD_SCHEMES:
                    self.problems.append(f"{scheme}: URL in href of <{tag}>")
            elif name == "src":
                if not (
                    _DATA_IMAGE.fullmatch(value.strip())
                    or value in self.allowed_urls
                    or (tag == "iframe" and value in self.frames)
                ):
                    scheme = _scheme(value)
                    what = f"{scheme}: URL" if scheme else "relative URL"
                    self.problems.append(f"{what} in src of <{tag}> ({value[:80]!r})")

    handle_startendtag = handle_starttag

    def _our_frame(self, values: dict[str, str]) -> bool:
        return values.get("src") in self.frames and values.get("sandbox") == ""


def find_active_content(
    fragment: str, *, allowed_urls: Sequence[str] = (), sandboxed_frames: Sequence[str] = ()
) -> list[str]:
    """Everything in ``fragment`` that could run, load or submit something; ``[]`` when inert.

    An independent check with the standard library's parser, run on every rendering: script,
    frame, embed, form, style, SVG and MathML elements; ``on*`` and ``style`` attributes;
    ``javascript:``, ``vbscript:``, ``data:``, ``file:`` or ``blob:`` links; any ``src`` other
    than an inline PNG/JPEG ``data:`` URL or one of ``allowed_urls`` (the raw file URL the
    caller gave); an ``<iframe>`` only when its ``src`` is in ``sandboxed_frames`` and it has an
    empty ``sandbox`` attribute.
    """
    scan = _ActiveScan(frozenset(allowed_urls), frozenset(sandboxed_frames))
    scan.feed(fragment)
    scan.close()
    return scan.problems


def _problem_kind(problem: str) -> str:
    """A ``find_active_content`` problem without the value it quotes (for grouping)."""
    return re.sub(r" \(.*\)$", "", problem)


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


# --- tables --------------------------------------------------------------------------------


def _delimiter(kind: str, text: str) -> str:
    if kind == "tsv":
        return "\t"
    # The same rule as egress.files.checks: ';' when the first line has more ';' than ','.
    first = text.split("\n", 1)[0]
    return ";" if first.count(";") > first.count(",") else ","


def _render_table(
    kind: str,
    text: str,
    *,
    max_rows: int,
    cell_verdicts: Mapping[tuple[int, int], str] | None,
    cell_reasons: Mapping[tuple[int, int], str | Sequence[str]] | None,
    notes: list[str],
) -> tuple[str, bool] | None:
    """The table HTML and whether rows were left out; ``None`` when the text doesn't parse."""
    verdicts = dict(cell_verdicts or {})
    for key, verdict in verdicts.items():
        if verdict not in VERDICTS:
            raise RenderError(f"cell verdict {verdict!r} at {key}: expected one of {VERDICTS}")
    reasons = dict(cell_reasons or {})
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=_delimiter(kind, text), strict=True
    )
    invisible: Counter[str] = Counter()
    out: list[str] = []
    header: list[str] | None = None
    shown = total = formulas = 0
    widths: set[int] = set()
    try:
        for number, row in enumerate(reader, 1):
            if not row:
                continue  # a blank line; numbering still counts it, as file_checks does
            widths.add(len(row))
            if header is None:
                header = row
                out.append('<thead><tr><th class="havre-rownum" scope="col">1</th>')
                out.extend(f'<th scope="col">{_visible(cell, invisible)}</th>' for cell in row)
                out.append("</tr></thead><tbody>")
                continue
            index = total
            total += 1
            if shown >= max_rows:
                continue
            shown += 1
            out.append(f'<tr><th class="havre-rownum" scope="row">{number}</th>')
            for column, cell in enumerate(row):
                classes = ["havre-cell"]
                titles: list[str] = []
                verdict = verdicts.get((index, column))
                if verdict:
                    classes.append(f"havre-cell-{verdict}")
                    reason = reasons.get((index, column))
                    if isinstance(reason, str):
                        reason = [reason]
                    titles.append(verdict + (": " + "; ".join(reason) if reason else ""))
                if cell and is_formula(cell):
                    formulas += 1
                    classes.append("havre-cell-formula")
                    titles.append("starts like a spreadsheet formula; shown as text")
                title = f' title="{_esc(" | ".join(titles))}"' if titles else ""
                out.append(
                    f'<td class="{" ".join(classes)}"{title}>{_visible(cell, invisible)}</td>'
                )
            out.append("</tr>")
    except csv.Error as error:
        notes.append(
            f"The {kind.upper()} file could not be read as a table ({error}, line "
            f"{reader.line_num}); it is shown as text."
        )
        return None
    if header is None:
        notes.append(f"The {kind.upper()} file has no rows.")
        return '<p class="havre-empty">(empty)</p>', False
    out.append("</tbody>")
    truncated = shown < total
    notes.insert(0, f"{_plural(total, 'data row')} and {_plural(len(header), 'column')}.")
    if truncated:
        notes.append(
            f"Showing the first {shown:,} of {total:,} data rows; {total - shown:,} rows are "
            "not shown here (the raw file has them all)."
        )
    if len(widths) > 1:
        notes.append("Rows have different numbers of fields.")
    if formulas:
        notes.append(
            f"{_plural(formulas, 'cell')} {'starts' if formulas == 1 else 'start'} like a "
            "spreadsheet formula (=, +, -, @); shown as text and marked."
        )
    hidden = Counter(v for (r, _), v in verdicts.items() if r >= shown and r < total)
    if hidden["fail"] or hidden["review"]:
        notes.append(
            f"Beyond the rows shown: {hidden['fail']:,} failing and {hidden['review']:,} "
            "to-review cells; open the raw file or the disclosure-check results to see them."
        )
    width = max(widths)
    outside = sum(1 for r, c in verdicts if not (0 <= r < total and 0 <= c < width))
    if outside:
        notes.append(
            f"{_plural(outside, 'cell verdict')} {'refers' if outside == 1 else 'refer'} to "
            "cells outside this table; the "
            "disclosure-check results may be for another version of the file."
        )
    _invisible_note(invisible, notes)
    table = f'<div class="havre-table-wrap"><table class="havre-table">{"".join(out)}</table></div>'
    return table, truncated


# --- text and Markdown ---------------------------------------------------------------------


def _cut_text(text: str, notes: list[str]) -> tuple[str, bool]:
    if len(text) <= MAX_TEXT_CHARS:
        return text, False
    notes.append(
        f"Showing the first {MAX_TEXT_CHARS:,} of {len(text):,} characters (the raw file has "
        "the rest)."
    )
    return text[:MAX_TEXT_CHARS], True


def _render_text(text: str, notes: list[str]) -> tuple[str, bool]:
    text, truncated = _cut_text(text, notes)
    invisible: Counter[str] = Counter()
    body = _visible(text, invisible)
    _invisible_note(invisible, notes)
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    notes.insert(0, f"{_plural(lines, 'line')}.")
    return f'<pre class="havre-text">{body}</pre>', truncated


def _markdown_image(self: Any, tokens: list[Any], idx: int, options: Any, env: dict) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env)
    if _DATA_IMAGE.fullmatch(src):
        return f'<img src="{_esc(src)}" alt="{_esc(alt)}">'
    env.setdefault("blocked_images", []).append(src)
    return f"<em>[image not shown: {_esc(alt or src)}]</em>"


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _markdown_image)
    return md


def _render_markdown(text: str, notes: list[str]) -> tuple[str, bool]:
    text, truncated = _cut_text(text, notes)
    env: dict[str, Any] = {}
    rendered = _markdown().render(text, env)
    blocked = env.get("blocked_images", [])
    if blocked:
        notes.append(
            f"{_plural(len(blocked), 'image')} not shown: only images inline in the file "
            "(data:image/png or data:image/jpeg) are shown, never images from a path or another "
            "site."
        )
    clean = sanitise_html(rendered, notes)
    invisible: Counter[str] = Counter()
    clean = _visible_in_html(clean, invisible)
    _invisible_note(invisible, notes)
    notes.insert(0, "Markdown rendered without raw HTML (HTML in the file is shown as text).")
    return f'<div class="havre-markdown">{clean}</div>', truncated


_TAG_SPLIT = re.compile(r'(<(?:[^>"]|"[^"]*")*>)')


def _visible_in_html(fragment: str, counter: Counter[str]) -> str:
    """Markers for invisible characters in the text (not the tags) of sanitised HTML.

    nh3 writes every attribute value in double quotes with ``"`` escaped and ``<`` in text
    escaped, so a tag is exactly ``<`` ... ``>`` with any ``>`` only inside quotes.
    """
    if not _INVISIBLE.search(fragment):
        return fragment

    def sub(match: re.Match[str]) -> str:
        counter[match.group()] += 1
        return _marker(match.group())

    parts = _TAG_SPLIT.split(fragment)
    parts[::2] = [_INVISIBLE.sub(sub, text) for text in parts[::2]]
    return "".join(parts)


# --- images and PDF ------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xDA)):
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF and i + 9 <= len(data):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                data[i + 5 : i + 7], "big"
            )
        if length < 2:
            return None
        i += 2 + length
    return None


def _render_image(kind: str, data: bytes, name: str, raw_url: str, notes: list[str]) -> str:
    size = {"png": _png_size, "jpeg": _jpeg_size}.get(kind, lambda _: None)(data)
    label = {"png": "PNG", "jpeg": "JPEG", "svg": "SVG"}[kind]
    dims = f", {size[0]:,} × {size[1]:,} pixels" if size else ""
    notes.append(f"{label} image{dims}, {_size(len(data))}.")
    if kind == "svg":
        notes.append(
            "SVG is shown as an image: scripts in it never run and it loads nothing from "
            "elsewhere. Text hidden in the SVG (outside the visible area, transparent, tiny) is "
            "only visible in the raw file."
        )
    return (
        f'<figure class="havre-image havre-image-{kind}"><img src="{_esc(raw_url)}" '
        f'alt="{_esc(name)}" referrerpolicy="no-referrer"></figure>'
    )


_PDF_VERSION = re.compile(rb"%PDF-(\d+\.\d+)")
_PAGES = re.compile(rb"/Type\s*/Pages(?![A-Za-z0-9#])")
_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z0-9#])")
_COUNT = re.compile(rb"/Count\s+(\d+)")
_OBJSTM = re.compile(rb"/Type\s*/ObjStm(?![A-Za-z0-9])")
_STREAM = re.compile(rb"stream\r?\n")


def _pdf_streams(data: bytes) -> list[bytes]:
    """Inflated object streams (where PDF 1.5+ often keeps the page tree), under a budget."""
    budget = PDF_INFLATE_BUDGET
    out: list[bytes] = []
    for match in _OBJSTM.finditer(data):
        start = _STREAM.search(data, match.end(), match.end() + 4096)
        if not start or budget <= 0:
            continue
        try:
            inflated = zlib.decompressobj().decompress(data[start.end() :], budget)
        except zlib.error:
            continue
        budget -= len(inflated)
        out.append(inflated)
    return out


def _page_tree_counts(texts: list[bytes]) -> list[int]:
    counts = []
    for text in texts:
        for match in _PAGES.finditer(text):
            start = text.rfind(b"<<", 0, match.start())
            end = text.find(b">>", match.end())
            window = text[max(start, 0) : end if end >= 0 else len(text)]
            found = _COUNT.search(window)
            if found:
                counts.append(int(found.group(1)))
    return counts


def _pdf_pages(data: bytes) -> int | None:
    """The page count from the page tree's ``/Count`` (the largest one), else ``/Type /Page``."""
    texts = [data]
    counts = _page_tree_counts(texts)
    if not counts:
        streams = _pdf_streams(data)
        counts = _page_tree_counts(streams)
        texts.extend(streams)
    if counts:
        return max(counts)
    return sum(len(_PAGE.findall(text)) for text in texts) or None


def _render_pdf(
    data: bytes, name: str, raw_url: str, preview_url: str | None, notes: list[str]
) -> str:
    version = _PDF_VERSION.match(data)
    pages = _pdf_pages(data)
    rows = [
        ("File", _esc(name)),
        ("Size", _esc(_size(len(data)))),
        ("PDF version", _esc(version.group(1).decode()) if version else "unknown"),
        ("Pages", f"{pages:,}" if pages else "unknown (not found in the file's page tree)"),
    ]
    notes.append(
        "PDF files are not shown inside this page, because PDF viewers can run scripts. "
        "Open the file in a sandboxed viewer: download it and open it in your PDF viewer"
        + (", or use the sandboxed preview below" if preview_url else "")
        + "."
    )
    parts = ['<div class="havre-pdf"><dl class="havre-meta">']
    parts.extend(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    parts.append(
        f'</dl><p><a class="havre-download" href="{_esc(raw_url)}" download="" '
        'rel="noopener noreferrer">Download the PDF</a></p>'
    )
    if preview_url:
        parts.append(
            '<p class="havre-hint">If the preview below stays empty or shows a blocked-page '
            "icon, your browser does not show PDFs in a sandbox (Chromium-based browsers "
            "don't); download the file instead.</p>"
            f'<iframe class="havre-pdf-preview" src="{_esc(preview_url)}" sandbox="" '
            f'title="{_esc("Sandboxed preview of " + name)}" referrerpolicy="no-referrer">'
            "</iframe>"
        )
    parts.append("</div>")
    return "".join(parts)


# --- notebooks -----------------------------------------------------------------------------

_OUTPUT_MIMES = frozenset(
    {"text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg"}
)
"""Output data shown from a notebook; everything else (JavaScript, widgets, SVG, PDF, JSON,
vendor types) is removed with a visible marker in place."""

_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _image_ok(mime: str, value: Any) -> bool:
    """Whether a notebook's base64 image really is a PNG/JPEG (and safe to put in ``data:``)."""
    text = re.sub(r"\s+", "", _joined(value))
    if not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        return False
    try:
        head = base64.b64decode(text[:64] + "=" * (-len(text[:64]) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return head.startswith(_MAGIC[mime])


def _why_removed(mime: str) -> str:
    if mime in SCRIPT_MIMES:
        return f"{mime} (code that would run in the browser)"
    if mime.startswith("application/vnd.jupyter.widget"):
        return f"{mime} (an interactive widget; it needs JavaScript)"
    if mime == "image/svg+xml":
        return f"{mime} (only PNG and JPEG images are shown inside notebooks)"
    return f"{mime} (not a type shown to checkers)"


def _removed_marker(what: list[str]) -> dict[str, Any]:
    """A visible stand-in (a stderr stream) where output parts were removed."""
    text = "[Havre removed this output: " + "; ".join(what) + ". It is not shown.]\n"
    return {"output_type": "stream", "name": "stderr", "text": text}


def _raw_as_markdown(cell: Mapping[str, Any]) -> str:
    """A raw cell's text as a fenced code block (nbconvert would drop it or paste it as HTML)."""
    source = _joined(cell.get("source", ""))
    longest = max((len(run) for run in re.findall(r"`+", source)), default=0)
    fence = "`" * max(3, longest + 1)
    metadata = cell.get("metadata") if isinstance(cell.get("metadata"), Mapping) else {}
    fmt = str(metadata.get("format") or metadata.get("raw_mimetype") or "none")
    fmt = re.sub(r"[^A-Za-z0-9/+.-]", "", fmt)[:60] or "none"
    return f"*Raw cell (format: {fmt})*\n\n{fence}\n{source}\n{fence}\n"


def _attachments(cell: Mapping[str, Any], number: int, removed: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    attachments = cell.get("attachments")
    for key, bundle in attachments.items() if isinstance(attachments, Mapping) else []:
        good = {}
        for mime, value in bundle.items() if isinstance(bundle, Mapping) else []:
            if mime in _MAGIC and _image_ok(mime, value):
                good[mime] = re.sub(r"\s+", "", _joined(value))
            else:
                removed.append(f"cell {number}: attachment {str(key)[:40]!r} of type {mime}")
        if good:
            kept[str(key)] = good
    return kept


def _inert_output(
    output: Any, number: int, removed: list[str], findings: Counter[str]
) -> list[dict[str, Any]]:
    """An output rebuilt from the parts that can be shown inertly, plus a removal marker."""
    from nbformat.v4 import new_output

    if not isinstance(output, Mapping):
        removed.append(f"cell {number}: an output that is not a JSON object")
        return [_removed_marker(["an output that is not a JSON object"])]
    kind = output.get("output_type")
    if kind == "stream":
        name = output.get("name") if output.get("name") in ("stdout", "stderr") else "stdout"
        return [new_output("stream", name=name, text=_joined(output.get("text", "")))]
    if kind == "error":
        traceback = output.get("traceback")
        return [
            new_output(
                "error",
                ename=str(output.get("ename", "")),
                evalue=str(output.get("evalue", "")),
                traceback=[str(line) for line in traceback] if isinstance(traceback, list) else [],
            )
        ]
    if kind not in ("display_data", "execute_result"):
        removed.append(f"cell {number}: an output of type {str(kind)[:40]!r}")
        return [_removed_marker([f"an output of type {str(kind)[:40]!r}"])]
    bundle = output.get("data") if isinstance(output.get("data"), Mapping) else {}
    metadata = output.get("metadata") if isinstance(output.get("metadata"), Mapping) else {}
    data: dict[str, Any] = {}
    sizes: dict[str, Any] = {}
    gone = []
    for mime, value in bundle.items():
        if mime not in _OUTPUT_MIMES:
            gone.append(_why_removed(str(mime)[:80]))
        elif mime in _MAGIC:
            if not _image_ok(mime, value):
                gone.append(f"{mime} (not a valid {mime.split('/')[1].upper()} image)")
                continue
            data[mime] = re.sub(r"\s+", "", _joined(value))
            # Only the image size is kept: no 'isolated', 'unconfined' or other template hints.
            meta = metadata.get(mime)
            if isinstance(meta, Mapping):
                size = {
                    k: v
                    for k, v in meta.items()
                    if k in ("width", "height") and isinstance(v, int) and not isinstance(v, bool)
                }
                if size:
                    sizes[mime] = size
        elif mime == "text/html":
            data[mime] = _sanitise(_joined(value), findings)
        else:
            data[mime] = _joined(value)
    rebuilt = []
    if data:
        if kind == "execute_result":
            count = output.get("execution_count")
            count = count if isinstance(count, int) and not isinstance(count, bool) else None
            rebuilt.append(new_output(kind, data=data, metadata=sizes, execution_count=count))
        else:
            rebuilt.append(new_output(kind, data=data, metadata=sizes))
    if gone:
        removed.extend(f"cell {number}: {what}" for what in gone)
        rebuilt.append(_removed_marker(gone))
    return rebuilt


_CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ATTACHMENT_REF = re.compile(r"attachment:([^\s)\"'>]*)")


def _inert_notebook(notebook: Mapping[str, Any], notes: list[str], findings: Counter[str]) -> Any:
    """A new, valid notebook holding only what can be shown inertly; notes say what went."""
    from nbformat import from_dict
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    metadata = notebook.get("metadata") if isinstance(notebook.get("metadata"), Mapping) else {}
    if "widgets" in metadata:
        notes.append("The notebook's saved widget state was removed (widgets need JavaScript).")
    language = (
        (metadata.get("language_info") or {}).get("name")
        if isinstance(metadata.get("language_info"), Mapping)
        else None
    )
    nb = new_notebook()
    if isinstance(language, str) and re.fullmatch(r"[A-Za-z0-9_+-]{1,40}", language):
        nb.metadata["language_info"] = {"name": language}
    removed: list[str] = []
    for number, cell in enumerate(notebook.get("cells") or [], 1):
        if not isinstance(cell, Mapping):
            removed.append(f"cell {number}: not a JSON object")
            continue
        kind = cell.get("cell_type")
        if kind == "code":
            count = cell.get("execution_count")
            outputs = [
                part
                for output in (cell.get("outputs") or [])
                for part in _inert_output(output, number, removed, findings)
            ]
            nb.cells.append(
                new_code_cell(
                    source=_joined(cell.get("source", "")),
                    execution_count=count
                    if isinstance(count, int) and not isinstance(count, bool)
                    else None,
                    outputs=[from_dict(output) for output in outputs],
                )
            )
        else:
            source = _raw_as_markdown(cell) if kind == "raw" else _joined(cell.get("source", ""))
            attachments = _attachments(cell, number, removed)
            # nbconvert fails on a reference to a missing attachment: point those nowhere.
            source = _ATTACHMENT_REF.sub(
                lambda m, kept=attachments: (
                    m.group() if m.group(1) in kept else "removed-attachment:"
                ),
                source,
            )
            markdown = new_markdown_cell(source=source)
            if attachments:
                markdown["attachments"] = from_dict(attachments)
            nb.cells.append(markdown)
        cell_id = cell.get("id")
        if isinstance(cell_id, str) and _CELL_ID.fullmatch(cell_id):
            nb.cells[-1]["id"] = cell_id
    if removed:
        shown = "; ".join(removed[:20]) + ("; ..." if len(removed) > 20 else "")
        notes.append(f"{_plural(len(removed), 'part')} removed (a marker shows where): {shown}.")
    return nb


_EXPORTER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _exporter() -> Any:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="basic")
    exporter.sanitize_html = False  # nh3 below, with Havre's own allow-list
    return exporter


def _render_notebook(data: bytes, notes: list[str]) -> tuple[str, bool]:
    text = _decode(data, notes)
    try:
        notebook = _load_notebook(text.encode())
    except NotebookError as error:
        notes.append(f"The file could not be read as a notebook ({error}); it is shown as text.")
        return _render_text(text, notes)
    findings: Counter[str] = Counter()
    nb = _inert_notebook(notebook, notes, findings)
    try:
        with _EXPORTER_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "IPython3 lexer unavailable"
            body, _resources = _exporter().from_notebook_node(nb)
    except Exception as error:  # noqa: BLE001 - nbconvert failed: show the JSON instead
        notes.append(f"nbconvert could not render the notebook ({error}); it is shown as text.")
        return _render_text(text, notes)
    clean = _sanitise(body, findings)
    _removed_note(findings, notes)
    invisible: Counter[str] = Counter()
    clean = _visible_in_html(clean, invisible)
    _invisible_note(invisible, notes)
    summary = _summary(notebook)
    counts = ", ".join(f"{n} {t}" for t, n in summary["cells"].items() if n)
    notes.insert(0, f"{_plural(summary['cells_total'], 'cell')} ({counts or 'none'}).")
    return f'<div class="havre-nb">{clean}</div>', False


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
            body = _render_pdf(data, name, url, preview, notes)
        else:
            body = _render_image(kind, data, name, url, notes)
    elif kind in ("csv", "tsv"):
        text = _decode(data, notes)
        table = _render_table(
            kind,
            text,
            max_rows=max_rows,
            cell_verdicts=cell_verdicts,
            cell_reasons=cell_reasons,
            notes=notes,
        )
        body, truncated = table if table is not None else _render_text(text, notes)
    elif kind == "text":
        body, truncated = _render_text(_decode(data, notes), notes)
    elif kind == "markdown":
        body, truncated = _render_markdown(_decode(data, notes), notes)
    else:
        body, truncated = _render_notebook(data, notes)
    return _inert_or_refused(Rendered(body, content_type, notes, truncated), **allowed)


# --- raw file responses --------------------------------------------------------------------

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def _filenames(kind: str, name: str) -> tuple[str, str | None]:
    """An ASCII ``filename`` and, when the name isn't plain ASCII, an RFC 5987 ``filename*``.

    Only the last path component is used; control and invisible characters are dropped; the
    name always ends with an extension of ``kind``.
    """
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(c for c in base if not (_INVISIBLE.match(c) or unicodedata.category(c) == "Cc"))
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


# --- notebooks released as code ------------------------------------------------------------


def _load_notebook(data: bytes) -> dict[str, Any]:
    try:
        notebook = json.loads(data)
    except (ValueError, RecursionError):
        raise NotebookError("not a valid notebook: it is not JSON (UTF-8)") from None
    if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
        raise NotebookError("not a valid notebook: expected a JSON object with a 'cells' list")
    if notebook.get("nbformat") != 4:
        raise NotebookError(
            f"not a supported notebook: nbformat {notebook.get('nbformat')!r}, expected 4"
        )
    for number, cell in enumerate(notebook["cells"], 1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise NotebookError(f"not a valid notebook: cell {number} has no valid cell_type")
    return notebook


def _summary(notebook: Mapping[str, Any]) -> dict[str, Any]:
    cells: Counter[str] = Counter({"code": 0, "markdown": 0, "raw": 0})
    by_type: Counter[str] = Counter()
    by_mime: Counter[str] = Counter()
    executed = attachments = 0
    for cell in notebook["cells"]:
        cells[cell.get("cell_type", "unknown")] += 1
        attachments += len(cell.get("attachments") or {})
        if cell.get("execution_count") is not None:
            executed += 1
        for output in cell.get("outputs") or []:
            kind = output.get("output_type", "unknown")
            by_type[kind] += 1
            if kind == "stream":
                by_mime[f"application/vnd.jupyter.{output.get('name', 'stdout')}"] += 1
            elif kind == "error":
                by_mime["application/vnd.jupyter.error"] += 1
            else:
                for mime in output.get("data") or {}:
                    by_mime[mime] += 1
    metadata = notebook.get("metadata") or {}
    return {
        "nbformat": f"{notebook.get('nbformat')}.{notebook.get('nbformat_minor', 0)}",
        "cells": dict(cells),
        "cells_total": sum(cells.values()),
        "executed_cells": executed,
        "outputs": sum(by_type.values()),
        "outputs_by_type": dict(sorted(by_type.items())),
        "outputs_by_mime": dict(sorted(by_mime.items())),
        "attachments": attachments,
        "widget_state": "widgets" in metadata,
        "kernel": (metadata.get("kernelspec") or {}).get("name"),
        "language": (metadata.get("language_info") or {}).get("name"),
    }


# --- stylesheet ----------------------------------------------------------------------------

_CSS = """
.havre-table-wrap { overflow: auto; max-height: 80vh; }
.havre-table { border-collapse: collapse; font-size: 0.9em; }
.havre-table th, .havre-table td { border: 1px solid #ccc; padding: 2px 6px;
  white-space: pre-wrap; vertical-align: top; text-align: left; }
.havre-table thead th { position: sticky; top: 0; background: #f3f3f3; }
.havre-rownum { color: #666; background: #fafafa; font-weight: normal; text-align: right; }
.havre-cell-pass { background: #eef8ee; }
.havre-cell-review { background: #fff4d6; outline: 2px solid #e0a800; outline-offset: -2px; }
.havre-cell-fail { background: #fde2e2; outline: 2px solid #c62828; outline-offset: -2px; }
.havre-cell-formula { font-style: italic; }
.havre-invisible { color: #b00; background: #ffe; border: 1px dotted #b00; font-size: 0.8em; }
.havre-text { white-space: pre-wrap; overflow-wrap: anywhere; }
.havre-markdown table { border-collapse: collapse; }
.havre-markdown th, .havre-markdown td { border: 1px solid #ccc; padding: 2px 6px; }
.havre-image img { max-width: 100%; border: 1px solid #ddd;
  background: repeating-conic-gradient(#eee 0% 25%, #fff 0% 50%) 50% / 16px 16px; }
.havre-pdf-preview { width: 100%; height: 80vh; border: 1px solid #ccc; }
.havre-meta dt { font-weight: bold; } .havre-meta dd { margin: 0 0 0.4em 1em; }
.havre-render-refused { color: #b00; font-weight: bold; }
.havre-nb .cell { margin: 0.5em 0; display: flex; flex-direction: column; }
.havre-nb .input, .havre-nb .output_area { display: flex; }
.havre-nb .prompt { min-width: 7em; color: #303f9f; font-family: monospace; text-align: right;
  padding-right: 0.5em; }
.havre-nb .output_prompt { color: #d84315; }
.havre-nb .inner_cell, .havre-nb .output_subarea { flex: 1; min-width: 0; overflow-x: auto; }
.havre-nb .input_area { background: #f7f7f7; border: 1px solid #cfcfcf; border-radius: 2px; }
.havre-nb pre { margin: 0; padding: 0.3em; white-space: pre-wrap; }
.havre-nb .output_stderr { background: #fdd; }
.havre-nb .dataframe { border-collapse: collapse; }
.havre-nb .dataframe td, .havre-nb .dataframe th { border: 1px solid #ccc; padding: 2px 6px; }
.havre-nb img { max-width: 100%; }
"""

_ANSI = {
    "black": "#3e424d", "red": "#e75c58", "green": "#00a250", "yellow": "#ddb62b",
    "blue": "#208ffb", "magenta": "#d160c4", "cyan": "#60c6c8", "white": "#c5c1b4",
}  # fmt: skip


@lru_cache(maxsize=1)
def checker_css() -> str:
    """A stylesheet for rendered files (tables, markers, notebooks with Pygments colours).

    Serve it from the egress service (``style-src 'self'``); it is the same for every file.
    """
    from pygments.formatters import HtmlFormatter

    pygments = HtmlFormatter(style="default").get_style_defs(".havre-nb .highlight")
    ansi = "\n".join(
        f".havre-nb .ansi-{name}-fg {{ color: {colour}; }}\n"
        f".havre-nb .ansi-{name}-bg {{ background-color: {colour}; }}"
        for name, colour in _ANSI.items()
    )
    return _CSS.lstrip() + ansi + "\n.havre-nb .ansi-bold { font-weight: bold; }\n" + pygments
