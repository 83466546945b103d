"""SVG: parsed without DTD tricks, sanitised (or refused, by policy) before release.

The threats: entity expansion (billion laughs) and external entities when the XML is parsed,
and script, event handlers, external loads and HTML inside the image when it is opened. A
``<!ENTITY`` or any DOCTYPE but the standard SVG 1.0/1.1 one is refused before parsing; active
and external content is removed and the SVG re-serialised, or the file refused."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from egress.files.common import FileRefused

MAX_XML_DEPTH = 256
"""Deepest element nesting accepted in an SVG."""


SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
XHTML_NS = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

_SVG_DOCTYPE = re.compile(
    r'<!DOCTYPE\s+svg\s+PUBLIC\s+(?:"-//W3C//DTD SVG 1\.1//EN"\s+'
    r'"http://www\.w3\.org/Graphics/SVG/1\.1/DTD/svg11\.dtd"'
    r'|"-//W3C//DTD SVG 1\.0//EN"\s+'
    r'"http://www\.w3\.org/TR/2001/REC-SVG-20010904/DTD/svg10\.dtd")\s*>'
)

_DOCTYPE = re.compile(r"<!DOCTYPE", re.IGNORECASE)
_ENTITY = re.compile(r"<!ENTITY", re.IGNORECASE)
_HTML_START = re.compile(r"<!doctype\s+html|<html[\s>]", re.IGNORECASE)
_XML_ENCODING = re.compile(r"<\?xml\s[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_PROCESSING = re.compile(r"<\?(?!xml[\s?])[^>]*>", re.IGNORECASE)
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.IGNORECASE)
_SAFE_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg)[;,]", re.IGNORECASE)

_SVG_BANNED = {
    "script": "it runs code",
    "foreignobject": "it embeds HTML",
    "iframe": "it embeds other content",
    "object": "it embeds other content",
    "embed": "it embeds other content",
    "handler": "it runs code",
    "listener": "it attaches event handlers",
    "audio": "it loads external media",
    "video": "it loads external media",
    "base": "it changes where links point",
    "link": "it loads external content",
    "meta": "it can redirect",
}
_SVG_ANIMATIONS = {"set", "animate", "animatemotion", "animatetransform", "animatecolor"}
_URL_ATTRIBUTES = {"src", "action", "formaction"}


def split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, local = tag[1:].partition("}")
        return namespace, local
    return "", tag


def _compact(value: str) -> str:
    return re.sub(r"[\x00-\x20]", "", value).lower()


def _external_url(value: str) -> bool:
    return any(not m.group(1).startswith("#") for m in _CSS_URL.finditer(value))


def _css_problem(css: str) -> str | None:
    compact = _compact(css)
    if "@import" in compact:
        return "it imports another style sheet"
    if _external_url(css):
        return "it loads an external resource with url()"
    if "expression(" in compact or "behavior:" in compact or "-moz-binding" in compact:
        return "it can run code"
    if "javascript:" in compact or "vbscript:" in compact:
        return "it has a script URL"
    if "\\" in css:
        return "it uses CSS escapes, which can hide url() or script"
    return None


def _safe_href(value: str) -> bool:
    compact = re.sub(r"[\x00-\x20]", "", value)
    return compact.startswith("#") or bool(_SAFE_DATA_IMAGE.match(compact))


def _href(element: ET.Element) -> str | None:
    for key, value in element.attrib.items():
        if split_tag(key)[1] == "href":
            return value
    return None


def _element_problem(element: ET.Element) -> str | None:
    namespace, local = split_tag(element.tag)
    lowered = local.lower()
    if namespace == XHTML_NS:
        return "an HTML element inside the SVG"
    if not namespace:
        return "an element outside any namespace (it is not SVG)"
    if lowered in _SVG_BANNED:
        return _SVG_BANNED[lowered]
    if lowered == "use":
        href = _href(element)
        if href is not None and not _safe_href(href):
            return "it uses an external file"
    if lowered in _SVG_ANIMATIONS:
        target = element.get("attributeName", "").split(":")[-1].strip().lower()
        if target == "href" or target.startswith("on"):
            return f"it animates the {target} attribute"
    if lowered == "style":
        problem = _css_problem("".join(element.itertext()))
        if problem:
            return problem
    return None


def _attribute_problem(key: str, value: str) -> str | None:
    namespace, local = split_tag(key)
    lowered = local.lower()
    compact = _compact(value)
    if lowered.startswith("on"):
        return "an event handler (it runs code)"
    if lowered == "href":
        return None if _safe_href(value) else "a link that is not a local #fragment"
    if lowered in _URL_ATTRIBUTES or (namespace == XML_NS and lowered == "base"):
        return "it loads external content"
    if "javascript:" in compact or "vbscript:" in compact or "data:text/html" in compact:
        return "a script URL"
    if _external_url(value):
        return "url() pointing outside the image"
    if lowered == "style":
        return _css_problem(value)
    if "\\" in value:
        return "a backslash (CSS escapes can hide url() or script)"
    return None


def _show_attribute(key: str) -> str:
    namespace, local = split_tag(key)
    prefix = {XLINK_NS: "xlink:", XML_NS: "xml:"}.get(namespace, "")
    return prefix + local


def _clean_attributes(element: ET.Element, findings: list[str]) -> None:
    local = split_tag(element.tag)[1]
    for key, value in list(element.attrib.items()):
        problem = _attribute_problem(key, value)
        if problem:
            del element.attrib[key]
            findings.append(f"{_show_attribute(key)}={value[:40]!r} on <{local}>: {problem}")


def _remove_child(parent: ET.Element, child: ET.Element) -> None:
    """Remove ``child`` from ``parent``, keeping the text that followed it."""
    if child.tail:
        index = list(parent).index(child)
        if index:
            previous = parent[index - 1]
            previous.tail = (previous.tail or "") + child.tail
        else:
            parent.text = (parent.text or "") + child.tail
    parent.remove(child)


def sanitise_svg(root: ET.Element, text: str) -> list[str]:
    """Remove active and external content from ``root`` in place; say what was removed."""
    findings: list[str] = []
    processing = _PROCESSING.search(text)
    if processing:
        findings.append(
            f"processing instruction {processing.group()[:40]!r}: it can load external style sheets"
        )
    _clean_attributes(root, findings)
    stack = [(root, 1)]
    while stack:
        parent, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise FileRefused(f"the SVG is nested more than {MAX_XML_DEPTH} elements deep")
        for child in list(parent):
            if not isinstance(child.tag, str):
                continue
            problem = _element_problem(child)
            if problem:
                findings.append(f"<{split_tag(child.tag)[1]}> element: {problem}")
                _remove_child(parent, child)
                continue
            _clean_attributes(child, findings)
            stack.append((child, depth + 1))
    return findings


def serialise_svg(root: ET.Element) -> bytes:
    """Write the (sanitised) tree with SVG as the default namespace and the usual xlink prefix.

    ElementTree can't write a default namespace next to unprefixed attributes, so SVG elements
    are renamed to plain names and the namespace declarations are added as attributes of the
    root; nothing global (``ET.register_namespace``) is changed.
    """
    uses_xlink = False
    for element in root.iter():
        namespace, local = split_tag(element.tag)
        if namespace == SVG_NS:
            element.tag = local
        for key in [k for k in element.attrib if k.startswith("{" + XLINK_NS + "}")]:
            element.attrib["xlink:" + split_tag(key)[1]] = element.attrib.pop(key)
            uses_xlink = True
    root.set("xmlns", SVG_NS)
    if uses_xlink:
        root.set("xmlns:xlink", XLINK_NS)
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def parse_xml(data: bytes, text: str, ext: str) -> ET.Element | None:
    """The root of an XML document, refusing DTD tricks first; ``None`` if it is not XML."""
    if _HTML_START.match(text):
        raise FileRefused("content is HTML (a browser would render it as a web page); refused")
    if _ENTITY.search(text):
        raise FileRefused(
            "the XML declares entities (<!ENTITY>): refused, as entity expansion (billion "
            "laughs) and external entities are attacks on whoever opens it"
        )
    for doctype in _DOCTYPE.finditer(text):
        if not _SVG_DOCTYPE.match(text, doctype.start()):
            raise FileRefused(
                "the XML has a DOCTYPE declaration other than the standard SVG 1.0/1.1 one; "
                "DOCTYPEs can declare entities (billion laughs, external entities) and are "
                "refused"
            )
    declared = _XML_ENCODING.match(text)
    if declared and declared.group(1).lower() not in ("utf-8", "utf8"):
        raise FileRefused(
            f"the XML declares the encoding {declared.group(1)!r}; only UTF-8 is accepted"
        )
    try:
        return ET.fromstring(data)
    except (ET.ParseError, LookupError, ValueError) as error:
        if ext == ".svg":
            raise FileRefused(
                f"not a valid SVG image: the XML is not well-formed ({error})"
            ) from None
        return None
