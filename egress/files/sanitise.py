"""The one HTML sanitiser, its independent check, and text made visible: researcher content
turned into inert HTML for a checker's page.

The threat: a checker's page is logged in to the egress service, so a script from a researcher's
file that ran there could approve requests or read other projects' files. Every piece of
researcher HTML shown to a checker goes through :func:`sanitise_html` (an allow-list, nh3), every
rendering is checked again by :func:`find_active_content` (the standard library's parser), and
invisible or direction-changing characters are shown as ``[U+XXXX]`` markers so nothing in a file
can hide from the checker. No other module sanitises HTML.
"""

from __future__ import annotations

import codecs
import html
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from html.parser import HTMLParser

import nh3

from egress.files.common import esc, plural

USER_ID_PREFIX = "user-content-"
"""Prefix of every ``id`` from researcher HTML (and of the ``#fragment`` links to them), so no
researcher ``id`` can clobber a name the page's own script uses (DOM clobbering)."""


# Invisible, direction-changing and control characters: shown as [U+XXXX] markers.
INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)


def _marker(char: str) -> str:
    code = f"U+{ord(char):04X}"
    label = unicodedata.name(char, "control character")
    return f'<span class="havre-invisible" title="{esc(code + " " + label)}">[{code}]</span>'


def visible(text: str, counter: Counter[str] | None = None) -> str:
    """``text`` escaped for HTML, with invisible characters shown as markers."""
    escaped = esc(text)
    if not INVISIBLE.search(escaped):
        return escaped

    def sub(match: re.Match[str]) -> str:
        if counter is not None:
            counter[match.group()] += 1
        return _marker(match.group())

    return INVISIBLE.sub(sub, escaped)


def invisible_note(counter: Counter[str], notes: list[str]) -> None:
    if counter:
        codes = ", ".join(f"U+{ord(c):04X}" for c in sorted(counter))
        what = plural(sum(counter.values()), "invisible or direction-changing character")
        notes.append(f"The file contains {what} ({codes}); each is shown as a [U+XXXX] marker.")


def decode_for_display(data: bytes, notes: list[str]) -> str:
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
            f"invalid bytes are shown as \ufffd (about {plural(bad, 'place')}). The raw file "
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

DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg);base64,[A-Za-z0-9+/=\s]*", re.IGNORECASE)
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
            return stripped if tag == "img" and DATA_IMAGE.fullmatch(stripped) else None
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
        f"<em>[image not shown{': ' + esc(text) if text and text != _NBCONVERT_ALT else ''}]</em>"
    )


def sanitise_counting(fragment: str, findings: Counter[str]) -> str:
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


def removed_note(findings: Counter[str], notes: list[str]) -> None:
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
    clean = sanitise_counting(fragment, findings)
    if notes is not None:
        removed_note(findings, notes)
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
                    DATA_IMAGE.fullmatch(value.strip())
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


_TAG_SPLIT = re.compile(r'(<(?:[^>"]|"[^"]*")*>)')


def visible_in_html(fragment: str, counter: Counter[str]) -> str:
    """Markers for invisible characters in the text (not the tags) of sanitised HTML.

    nh3 writes every attribute value in double quotes with ``"`` escaped and ``<`` in text
    escaped, so a tag is exactly ``<`` ... ``>`` with any ``>`` only inside quotes.
    """
    if not INVISIBLE.search(fragment):
        return fragment

    def sub(match: re.Match[str]) -> str:
        counter[match.group()] += 1
        return _marker(match.group())

    parts = _TAG_SPLIT.split(fragment)
    parts[::2] = [INVISIBLE.sub(sub, text) for text in parts[::2]]
    return "".join(parts)
