"""Plain text and Markdown: strict UTF-8 without hidden characters, no HTML; shown escaped or as
Markdown rendered without raw HTML.

The threats: text a browser would sniff as a web page, active HTML or script URLs in the text,
and "Trojan Source" characters (bidi overrides, controls) that make text read differently from
what it is. Such files are refused; what is shown is escaped (text) or rendered by markdown-it
with raw HTML off and then sanitised (:mod:`egress.files.sanitise`)."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

from egress.files.common import FileRefused, esc, plural
from egress.files.kinds import ALLOWED
from egress.files.sanitise import (
    DATA_IMAGE,
    invisible_note,
    sanitise_html,
    visible,
    visible_in_html,
)

_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_HTML_SNIFF = re.compile(
    r"(?:<!doctype\s+html|<html|<head|<script|<iframe|<h1|<div|<font|<table|<a|<style|<title"
    r"|<b|<body|<br|<p|<!--)[\s>]",
    re.IGNORECASE,
)
# --- the check ----------------------------------------------------------------------------

ACTIVE_TAG = re.compile(r"<\s*(script|iframe|object|embed)\b", re.IGNORECASE)
SCRIPT_URL = re.compile(r"(?:java|vb)script\s*:|data\s*:\s*text/html", re.IGNORECASE)
EVENT_ATTRIBUTE = re.compile(r"<[a-z][^<>]*[\s/\"']on[a-z]+\s*=", re.IGNORECASE)
_MIMESNIFF_SPACE = "\t\n\x0c\r "


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def decode_text(data: bytes) -> str:
    """Strict UTF-8 text without NUL, control or bidi-override characters (BOM removed)."""
    nul = data.find(b"\x00")
    if nul >= 0:
        raise FileRefused(
            f"content has a NUL byte at byte offset {nul}: it is binary (or UTF-16 text), and "
            f"not an allowed type ({ALLOWED})"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FileRefused(
            f"content is not valid UTF-8 text (first invalid byte at byte offset {error.start}) "
            f"and not an allowed binary type; save text as UTF-8 ({ALLOWED})"
        ) from None
    text = text.removeprefix("\ufeff")
    control = _CONTROL.search(text)
    if control:
        raise FileRefused(
            f"the text contains control character U+{ord(control.group()):04X} on line "
            f"{_line_of(text, control.start())}; only tab, line feed, carriage return and form "
            "feed are allowed"
        )
    bidi = _BIDI.search(text)
    if bidi:
        raise FileRefused(
            f"the text contains bidirectional control character U+{ord(bidi.group()):04X} on "
            f"line {_line_of(text, bidi.start())}: it makes text display differently from what "
            "it is, so checkers could not review it"
        )
    return text


def html_problem(text: str, *, markdown: bool) -> str | None:
    """Why this text counts as HTML or active content, or ``None``."""
    if _HTML_SNIFF.match(text.lstrip(_MIMESNIFF_SPACE) + " "):
        return "content is HTML (a browser would render it as a web page); HTML is refused"
    tag = ACTIVE_TAG.search(text)
    if tag:
        return (
            f"the text contains an HTML <{tag.group(1).lower()}> tag on line "
            f"{_line_of(text, tag.start())}; active HTML content is refused"
        )
    if markdown:
        url = SCRIPT_URL.search(text)
        if url:
            return (
                f"the Markdown contains a script URL ({url.group()!r}) on line "
                f"{_line_of(text, url.start())}; it is refused"
            )
        handler = EVENT_ATTRIBUTE.search(text)
        if handler:
            return (
                "the Markdown contains an HTML event-handler attribute (on...=) on line "
                f"{_line_of(text, handler.start())}; it is refused"
            )
    return None


def check_lines(data: bytes, limit: int) -> None:
    lines = data.split(b"\n")
    if max(map(len, lines)) <= limit:
        return
    number, line = next((n, line) for n, line in enumerate(lines, 1) if len(line) > limit)
    raise FileRefused(
        f"line {number} is {len(line)} bytes long, more than the limit of {limit} bytes"
    )


# --- the rendering ------------------------------------------------------------------------

MAX_TEXT_CHARS = 2_000_000
"""Most characters of a text or Markdown file shown on the page (the rest: raw file)."""


def _cut_text(text: str, notes: list[str]) -> tuple[str, bool]:
    if len(text) <= MAX_TEXT_CHARS:
        return text, False
    notes.append(
        f"Showing the first {MAX_TEXT_CHARS:,} of {len(text):,} characters (the raw file has "
        "the rest)."
    )
    return text[:MAX_TEXT_CHARS], True


def render_text(text: str, notes: list[str]) -> tuple[str, bool]:
    text, truncated = _cut_text(text, notes)
    invisible: Counter[str] = Counter()
    body = visible(text, invisible)
    invisible_note(invisible, notes)
    lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    notes.insert(0, f"{plural(lines, 'line')}.")
    return f'<pre class="havre-text">{body}</pre>', truncated


def _markdown_image(self: Any, tokens: list[Any], idx: int, options: Any, env: dict) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env)
    if DATA_IMAGE.fullmatch(src):
        return f'<img src="{esc(src)}" alt="{esc(alt)}">'
    env.setdefault("blocked_images", []).append(src)
    return f"<em>[image not shown: {esc(alt or src)}]</em>"


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _markdown_image)
    return md


def render_markdown(text: str, notes: list[str]) -> tuple[str, bool]:
    text, truncated = _cut_text(text, notes)
    env: dict[str, Any] = {}
    rendered = _markdown().render(text, env)
    blocked = env.get("blocked_images", [])
    if blocked:
        notes.append(
            f"{plural(len(blocked), 'image')} not shown: only images inline in the file "
            "(data:image/png or data:image/jpeg) are shown, never images from a path or another "
            "site."
        )
    clean = sanitise_html(rendered, notes)
    invisible: Counter[str] = Counter()
    clean = visible_in_html(clean, invisible)
    invisible_note(invisible, notes)
    notes.insert(0, "Markdown rendered without raw HTML (HTML in the file is shown as text).")
    return f'<div class="havre-markdown">{clean}</div>', truncated
