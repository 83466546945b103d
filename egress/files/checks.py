"""Automatic checks of a file submitted for release, before two output checkers review it.

Pure module (standard library only): bytes and a name in, a :class:`FileCheckResult` out. It
never reads or writes the outputs folder (``havre.enclave.outputs_folder`` reads it) and never
decompresses anything researcher-supplied except PDF object streams, under a byte budget.

What is accepted (the allow-list), decided by **content**, never by the extension alone
    ======== =================== =========================================================
    kind     extensions          content
    ======== =================== =========================================================
    PNG      .png                ``\\x89PNG\\r\\n\\x1a\\n``, chunks with good CRCs, IEND last
    JPEG     .jpg .jpeg          ``\\xff\\xd8\\xff``, a segment walk to EOI, nothing after it
    PDF      .pdf                ``%PDF-`` at offset 0, no active content, not encrypted
    SVG      .svg                well-formed XML, root ``{http://www.w3.org/2000/svg}svg``
    NOTEBOOK .ipynb              JSON object with ``nbformat`` 4 and a ``cells`` list
    CSV      .csv                UTF-8 text that parses with a consistent number of fields
    TSV      .tsv                the same, tab-separated
    MARKDOWN .md .markdown       UTF-8 text
    TEXT     .txt                UTF-8 text
    ======== =================== =========================================================

The extension must agree with the content: a PNG named ``.csv`` is refused ("content is PNG but
the name says .csv"), and so is CSV text named ``.png``. Names are also checked with
``havre.enclave.outputs_folder.validate_relative_path`` (no traversal, no invisible,
bidi-override or look-alike characters).

Refused outright, with a reason
    * empty files, files over ``max_file_bytes``;
    * archives and compressed files (zip, and so xlsx/docx/odt; gzip, bzip2, xz, 7z, RAR, tar,
      zstd, lz4, compress, cab), executables (ELF, PE/``MZ``, Mach-O, WebAssembly, ``#!``
      scripts), other binary formats (OLE2 Office, SQLite, HDF5, anything with NUL bytes);
    * polyglots: a zip local-header or end-of-central-directory signature, or a RAR or 7z
      signature, anywhere in a PNG, JPEG or PDF; any byte after a PNG's IEND chunk or a JPEG's
      EOI marker; a PDF with ``/JavaScript``, ``/JS``, ``/Launch``, ``/EmbeddedFile(s)``,
      ``/RichMedia``, ``/XFA``, ``/SubmitForm``, ``/ImportData``, ``/GoToE`` or ``/Encrypt``
      (names are decoded from ``#xx`` escapes and also looked for inside compressed object
      streams; an object stream that can't be read is refused; a stream ends at its ``/Length``
      or its first ``endstream``, whichever comes first, so no object a lenient reader would
      parse is skipped);
    * text that is not UTF-8 (the message gives the byte offset), contains NUL or control
      characters other than tab, LF, CR and form feed, or bidirectional embedding, override or
      isolate characters (U+202A-U+202E, U+2066-U+2069: "Trojan Source" text that displays
      differently from what it is), or a line longer than ``max_line_bytes`` (CSV, TSV, text,
      Markdown);
    * HTML: text a browser would sniff as HTML (the WHATWG MIME-sniffing patterns ``<!DOCTYPE
      HTML``, ``<html``, ``<head``, ``<script``, ``<iframe``, ``<body``, ``<table``, ``<div``,
      ``<p``, ``<a``, ``<!--``... at the start), XHTML, and any ``<script``, ``<iframe``,
      ``<object`` or ``<embed`` tag in CSV, TSV, text or Markdown; in Markdown also
      ``javascript:`` / ``vbscript:`` / ``data:text/html`` URLs and ``on...=`` event-handler
      attributes;
    * CSV/TSV with a different number of fields in some row, invalid quoting, a field over the
      csv module's 131,072-character limit, or more than ``max_csv_cells`` cells;
    * SVG with a ``<!ENTITY`` declaration or any ``<!DOCTYPE`` other than the standard SVG 1.0/1.1
      public DOCTYPE without an internal subset (matplotlib writes that one; it declares no
      entities and is never fetched), before the XML is parsed (billion laughs, external
      entities);
    * notebooks that are not nbformat 4, or whose outputs (or markdown cells, or attachments)
      contain ``application/javascript`` / ``text/javascript``, or HTML, SVG or Markdown with
      ``<script``, ``<iframe``, ``<object``, ``<embed``, ``javascript:`` URLs or event-handler
      attributes. Decision: refused rather than left to the renderer, because checkers open
      notebooks in a browser logged in to the egress service and one missed sanitiser bug would
      run researcher code there; interactive plots (plotly, bokeh) must be exported as PNG/SVG.

Changed, when the policy says so (and the result says exactly what changed)
    * CSV injection (``csv_injection="neutralise"``, the default): a cell whose first character
      (after leading spaces) is ``=``, ``+``, ``-``, ``@``, tab or carriage return (or the
      fullwidth ``＝ ＋ － ＠``) would be read as a formula by spreadsheet tools. Such cells get a
      single quote ``'`` in front; only the rows that contain one are re-written (csv module,
      ``QUOTE_MINIMAL``, the file's own delimiter and that row's own line ending), every other
      byte is kept. A cell that is **a plain number** is data, not a formula, and is left alone:
      ``-3.5``, ``+2``, ``-1e5``, ``-12%``, ``-1,234.5``, and a lone ``-`` (a common "no value"
      mark); ``-2+3`` or ``-A1`` are formulas. With ``csv_injection="refuse"`` the file is refused
      and the cells are listed (row, column, first 20 characters). Rows are numbered from 1 as a
      spreadsheet shows them (the header is row 1; a quoted multi-line cell is one row).
    * SVG (``svg="sanitise"``, the default): ``script``, ``foreignObject``, ``iframe``,
      ``object``, ``embed``, ``handler``, ``audio``, ``video``, ``base``, ``link``, ``meta``, any
      XHTML element, external ``use``, ``style`` elements with ``url(`` not pointing to ``#``,
      ``@import``, ``expression(``, script URLs or CSS escapes, and animations of ``href`` or
      ``on*`` are removed; every ``on*`` attribute, ``href``/``xlink:href`` that is not a local
      ``#fragment`` or ``data:image/png``/``data:image/jpeg``, ``src``/``action``/
      ``formaction``/``xml:base``, any attribute containing a ``javascript:``/``vbscript:`` URL,
      ``url(`` not pointing to ``#``, or a backslash (a CSS escape can hide ``url(``); then the
      SVG is re-serialised (comments, processing instructions and the DOCTYPE are dropped). An
      SVG with nothing to remove is released byte for byte. With ``svg="refuse"`` the file is
      refused with the same list.

Warnings (not refusals) tell checkers where to look: notebooks with outputs, widget outputs,
PNG text/EXIF chunks, JPEG EXIF/XMP/comment segments, PDF links, forms and open actions.

The release bytes are the input bytes unless a neutralisation or sanitisation changed them; the
result carries the sha256 of both.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

from egress.files.kinds import ALLOWED, EXTENSIONS, LABELS, SCRIPT_MIMES, FileKind
from havre.enclave.outputs_folder import OutputPathError, validate_relative_path

MiB = 1024 * 1024

PDF_OBJECT_STREAM_BUDGET = 64 * MiB
"""Most bytes the PDF check inflates from object streams before refusing the file."""

MAX_XML_DEPTH = 256
"""Deepest element nesting accepted in an SVG."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""First characters that make a spreadsheet tool read a cell as a formula (with fullwidth ones)."""


class FileRefused(ValueError):
    """The file can't be released; ``reason`` is a sentence for the researcher and checkers.

    ``kind`` is what the content was found to be, when the refusal came after that was known.
    """

    def __init__(self, reason: str, kind: FileKind | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class CheckPolicy:
    """Limits and choices of the automatic checks (from the egress service's configuration)."""

    max_file_bytes: int = 20 * MiB
    max_csv_cells: int = 2_000_000
    max_line_bytes: int = 1 * MiB
    csv_injection: Literal["neutralise", "refuse"] = "neutralise"
    svg: Literal["sanitise", "refuse"] = "sanitise"

    def __post_init__(self) -> None:
        for limit in ("max_file_bytes", "max_csv_cells", "max_line_bytes"):
            value = getattr(self, limit)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{limit} must be a positive integer, not {value!r}")
        if self.csv_injection not in ("neutralise", "refuse"):
            raise ValueError(
                f"csv_injection must be 'neutralise' or 'refuse', not {self.csv_injection!r}"
            )
        if self.svg not in ("sanitise", "refuse"):
            raise ValueError(f"svg must be 'sanitise' or 'refuse', not {self.svg!r}")


DEFAULT_POLICY = CheckPolicy()


@dataclass(frozen=True)
class FlaggedCell:
    """A CSV/TSV cell that starts like a formula: 1-based row and column, first 20 characters."""

    row: int
    column: int
    preview: str


@dataclass(frozen=True)
class FileCheckResult:
    """The outcome of :func:`check_file`.

    ``release_bytes`` is ``None`` when the file is refused (``ok`` false); otherwise it is the
    input, or the neutralised/sanitised version described line by line in ``changes``.
    """

    name: str
    kind: FileKind | None  # what the content is; None when refused before that was known
    ok: bool
    problems: list[str]
    warnings: list[str]
    changes: list[str]
    release_bytes: bytes | None
    sha256: str
    release_sha256: str | None
    size: int
    flagged_cells: list[FlaggedCell] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the release bytes differ from the input."""
        return self.release_bytes is not None and self.release_sha256 != self.sha256

    @property
    def outcome(self) -> str:
        """``refused``, ``neutralised`` (CSV/TSV), ``sanitised`` (SVG) or ``accepted``."""
        if not self.ok:
            return "refused"
        if self.changed:
            return "sanitised" if self.kind is FileKind.SVG else "neutralised"
        return "accepted"


# --- signatures ----------------------------------------------------------------------------

_ARCHIVE = "archives and compressed files are refused; release the files inside one by one"
_EXECUTABLE = "executables and scripts are refused"
_OTHER = f"it is not on the allow-list ({ALLOWED})"

_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (
        b"PK\x03\x04",
        "a zip archive (xlsx, docx, odt and jar files are zip archives too; export to CSV or PDF)",
        _ARCHIVE,
    ),
    (b"PK\x05\x06", "an empty zip archive", _ARCHIVE),
    (b"PK\x07\x08", "a zip archive", _ARCHIVE),
    (b"\x1f\x8b", "a gzip-compressed file", _ARCHIVE),
    (b"\x1f\x9d", "a compress (.Z) file", _ARCHIVE),
    (b"\xfd7zXZ\x00", "an xz-compressed file", _ARCHIVE),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", _ARCHIVE),
    (b"Rar!\x1a\x07", "a RAR archive", _ARCHIVE),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", _ARCHIVE),
    (b"\x04\x22\x4d\x18", "an LZ4-compressed file", _ARCHIVE),
    (b"MSCF\x00\x00\x00\x00", "a Microsoft cabinet archive", _ARCHIVE),
    (b"\x7fELF", "an ELF executable", _EXECUTABLE),
    (b"\xca\xfe\xba\xbe", "a Mach-O executable or Java class file", _EXECUTABLE),
    (b"\xfe\xed\xfa\xce", "a Mach-O executable", _EXECUTABLE),
    (b"\xfe\xed\xfa\xcf", "a Mach-O executable", _EXECUTABLE),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable", _EXECUTABLE),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable", _EXECUTABLE),
    (b"\x00asm", "a WebAssembly module", _EXECUTABLE),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a Microsoft Office (OLE2) document", _OTHER),
    (b"SQLite format 3\x00", "an SQLite database", _OTHER),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file", _OTHER),
)
_BZIP2 = re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_PDF_MAGIC = b"%PDF-"

_EMBEDDED_ARCHIVES = (
    (b"PK\x03\x04", "zip local file header"),
    (b"PK\x05\x06", "zip end-of-central-directory"),
    (b"Rar!\x1a\x07", "RAR"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
)


def _refused_signature(data: bytes) -> str | None:
    """Why the leading bytes alone refuse the file (archive, executable...), or ``None``."""
    for magic, what, why in _SIGNATURES:
        if data.startswith(magic):
            return f"content is {what}: {why}"
    if _BZIP2.match(data):
        return f"content is a bzip2-compressed file: {_ARCHIVE}"
    if data[257:262] == b"ustar" and data[262:263] in (b"\x00", b" "):
        return f"content is a tar archive: {_ARCHIVE}"
    if data.startswith(b"MZ") and b"\x00" in data[:64]:
        return f"content is a Windows/DOS executable (MZ): {_EXECUTABLE}"
    if data.removeprefix(b"\xef\xbb\xbf").startswith(b"#!"):
        return f"content starts with '#!' (a script for an interpreter): {_EXECUTABLE}"
    return None


def _embedded_archive(data: bytes, label: str) -> None:
    for magic, what in _EMBEDDED_ARCHIVES:
        at = data.find(magic)
        if at >= 0:
            raise FileRefused(
                f"a {what} signature is hidden at byte offset {at} of this {label} file: it "
                "looks like an archive inside (or appended to) an image or document (a polyglot "
                "file), which is refused"
            )


# --- names ---------------------------------------------------------------------------------


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def _expected_extensions(kind: FileKind) -> str:
    return " or ".join(ext for ext, k in EXTENSIONS.items() if k is kind)


def _require_extension(kind: FileKind, name: str, ext: str) -> None:
    if EXTENSIONS.get(ext) is kind:
        return
    says = f"the name says {ext}" if ext else "the name has no extension"
    raise FileRefused(f"content is {LABELS[kind]} but {says}; name it {_expected_extensions(kind)}")


# --- PNG, JPEG, PDF ------------------------------------------------------------------------

_PNG_METADATA = {b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"}
_PNG_KNOWN = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"cICP", b"mDCv", b"cLLi", b"bKGD", b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT",
    *_PNG_METADATA,
}  # fmt: skip


def _check_png(data: bytes) -> list[str]:
    """Walk the PNG chunks (CRC-checked) to IEND; refuse trailing data; return warnings."""
    pos = len(_PNG_MAGIC)
    metadata: list[str] = []
    unknown: list[str] = []
    first = True
    while True:
        if pos + 12 > len(data):
            raise FileRefused("the PNG is truncated (it ends before its IEND chunk)")
        length = int.from_bytes(data[pos : pos + 4], "big")
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise FileRefused(f"the PNG is truncated or corrupt (chunk at byte offset {pos})")
        if not (ctype.isascii() and ctype.isalpha()):
            raise FileRefused(f"the PNG is corrupt (bad chunk type at byte offset {pos})")
        crc = int.from_bytes(data[end - 4 : end], "big")
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise FileRefused(
                f"the PNG is corrupt: chunk {ctype.decode()} at byte offset {pos} has a bad "
                "checksum"
            )
        if first and ctype != b"IHDR":
            raise FileRefused("the PNG is corrupt: it does not start with an IHDR chunk")
        first = False
        if ctype in _PNG_METADATA:
            metadata.append(ctype.decode())
        elif ctype not in _PNG_KNOWN:
            if ctype[:1].isupper():
                raise FileRefused(f"the PNG has an unknown critical chunk {ctype.decode()}")
            unknown.append(ctype.decode())
        if ctype == b"IEND":
            break
        pos = end
    if end != len(data):
        raise FileRefused(
            f"the PNG has {len(data) - end} bytes of data after its end (the IEND chunk); "
            "data hidden after an image is refused"
        )
    warnings = []
    if metadata:
        warnings.append(
            f"PNG has metadata chunks ({', '.join(sorted(set(metadata)))}): check them for "
            "disclosive text"
        )
    if unknown:
        warnings.append(f"PNG has non-standard chunks ({', '.join(sorted(set(unknown)))})")
    return warnings


def _check_jpeg(data: bytes) -> list[str]:
    """Walk the JPEG segments and entropy-coded data to EOI; refuse trailing data."""
    size = len(data)
    pos = 2
    notes: set[str] = set()
    while True:
        if pos >= size or data[pos] != 0xFF:
            raise FileRefused(f"the JPEG is truncated or corrupt (no marker at byte offset {pos})")
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            raise FileRefused("the JPEG is truncated (it ends before its EOI marker)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0x00, 0xD8):
            raise FileRefused(f"the JPEG is corrupt (unexpected marker at byte offset {pos - 2})")
        if pos + 2 > size:
            raise FileRefused("the JPEG is truncated")
        length = int.from_bytes(data[pos : pos + 2], "big")
        segment_end = pos + length
        if length < 2 or segment_end > size:
            raise FileRefused(f"the JPEG is truncated or corrupt (segment at byte offset {pos})")
        if marker == 0xE1:
            body = data[pos + 2 : pos + 40]
            notes.add("XMP" if body.startswith(b"http://ns.adobe.com/xap") else "EXIF")
        elif marker == 0xED:
            notes.add("IPTC/Photoshop")
        elif marker == 0xFE:
            notes.add("comment")
        pos = segment_end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                at = data.find(b"\xff", pos)
                if at < 0 or at + 1 >= size:
                    raise FileRefused("the JPEG is truncated (it ends inside image data)")
                following = data[at + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                    pos = at + 1
                    continue
                pos = at
                break
    if pos != size:
        raise FileRefused(
            f"the JPEG has {size - pos} bytes of data after its end (the EOI marker FFD9); "
            "data hidden after an image is refused"
        )
    if notes:
        return [f"JPEG has metadata ({', '.join(sorted(notes))}): check it for disclosive text"]
    return []


_PDF_REFUSED = {
    "JavaScript": "JavaScript (code that runs when the file is opened)",
    "JS": "JavaScript (code that runs when the file is opened)",
    "Launch": "a /Launch action (it can start programs)",
    "EmbeddedFile": "an embedded file (a file hidden inside the PDF)",
    "EmbeddedFiles": "embedded files (files hidden inside the PDF)",
    "RichMedia": "rich media (Flash or video players)",
    "XFA": "an XFA form (it can carry scripts)",
    "SubmitForm": "a form action that sends data",
    "ImportData": "a form action that loads data",
    "GoToE": "a link into an embedded file",
    "Encrypt": "encryption (checkers can't review encrypted content)",
}
_PDF_WARNED = {
    "URI": "PDF has web links (/URI): check where they point",
    "GoToR": "PDF has links to other files (/GoToR)",
    "OpenAction": "PDF has an action run when it is opened (/OpenAction; no JavaScript found)",
    "AA": "PDF has actions run on events (/AA; no JavaScript found)",
    "AcroForm": "PDF has a form (/AcroForm)",
}
_PDF_FILTERS = {
    "FlateDecode", "Fl", "ASCIIHexDecode", "AHx", "ASCII85Decode", "A85", "LZWDecode", "LZW",
    "RunLengthDecode", "RL", "CCITTFaxDecode", "CCF", "JBIG2Decode", "DCTDecode", "DCT",
    "JPXDecode", "Crypt",
}  # fmt: skip
_PDF_TOKEN = re.compile(rb"%|\(|/|>>|(?<![A-Za-z])obj(?![A-Za-z])|stream")
_PDF_NAME = re.compile(rb"[^\x00\t\n\x0c\r ()<>\[\]{}/%]*")
_PDF_STRING = re.compile(rb"[()\\]")
_PDF_EOL = re.compile(rb"[\r\n]")
_PDF_LENGTH = re.compile(rb"/Length\s+([0-9]+)(?:\s+([0-9]+)\s+R)?(?![0-9])")
_PDF_INTEGER_OBJECT = re.compile(rb"(?<![0-9])([0-9]+)\s+([0-9]+)\s+obj\s*([0-9]+)\s*endobj")


def _pdf_name(raw: bytes) -> str:
    if b"#" in raw:
        raw = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("latin-1")


def _skip_pdf_string(data: bytes, pos: int) -> int:
    """Position after the literal string whose '(' is just before ``pos``."""
    depth = 1
    while depth:
        match = _PDF_STRING.search(data, pos)
        if match is None:
            return len(data)
        pos = match.end()
        char = match.group()
        if char == b"\\":
            pos += 1
        else:
            depth += 1 if char == b"(" else -1
    return pos


def _pdf_lengths(data: bytes) -> dict[tuple[int, int], int]:
    """Objects that are just an integer (``N G obj 123 endobj``): indirect stream lengths."""
    return {
        (int(m.group(1)), int(m.group(2))): int(m.group(3))
        for m in _PDF_INTEGER_OBJECT.finditer(data)
    }


def _pdf_scan(
    data: bytes, lengths: dict[tuple[int, int], int] | None = None
) -> tuple[set[str], list[tuple[list[str], int, int]]]:
    """Names used outside streams and strings, and the streams: (dictionary names, start, end).

    A stream body ends at its ``/Length`` (direct, or an integer object) or at the first
    ``endstream``, whichever comes first: where they disagree, more is searched for names, never
    less than a lenient PDF reader would parse as objects.
    """
    names: set[str] = set()
    streams: list[tuple[list[str], int, int]] = []
    object_names: list[str] = []
    object_start = 0
    dict_end = -1
    pos = 0
    size = len(data)
    while True:
        match = _PDF_TOKEN.search(data, pos)
        if match is None:
            break
        token = match.group()
        start = match.start()
        pos = match.end()
        if token == b"%":
            eol = _PDF_EOL.search(data, pos)
            pos = size if eol is None else eol.end()
        elif token == b"(":
            pos = _skip_pdf_string(data, pos)
        elif token == b"/":
            raw = _PDF_NAME.match(data, pos)
            assert raw is not None  # the pattern matches the empty string
            pos = raw.end()
            name = _pdf_name(raw.group())
            names.add(name)
            object_names.append(name)
        elif token == b">>":
            dict_end = pos
        elif token == b"obj":
            object_names = []
            object_start = pos
        elif data[start - 3 : start] != b"end" and dict_end >= 0:  # "stream"
            # A stream follows its dictionary's ">>" after whitespace only. A long gap is not
            # skipped as a stream: the check then reads more, never less, than a PDF reader.
            gap, dict_end = data[dict_end:start], -1
            if len(gap) > 1024 or gap.strip(b" \t\r\n\x0c\x00"):
                continue
            if data[pos : pos + 2] == b"\r\n":
                pos += 2
            elif data[pos : pos + 1] in (b"\n", b"\r"):
                pos += 1
            length = None
            declared = _PDF_LENGTH.search(data, max(object_start, start - 4096), start)
            if declared and declared.group(2) is None:
                length = int(declared.group(1))
            elif declared and lengths is not None:
                length = lengths.get((int(declared.group(1)), int(declared.group(2))))
            endstream = data.find(b"endstream", pos)
            if length is None and endstream < 0:
                raise FileRefused("the PDF is malformed: a stream has no /Length and no endstream")
            ends = [size]
            if endstream >= 0:
                ends.append(endstream)
            if length is not None:
                ends.append(pos + length)
            end = min(ends)
            streams.append((object_names, pos, end))
            object_names = []
            pos = end
    return names, streams


def _check_pdf(data: bytes) -> list[str]:
    """Refuse active content in a PDF (also inside object streams); return warnings."""
    names, streams = _pdf_scan(data, _pdf_lengths(data))
    budget = PDF_OBJECT_STREAM_BUDGET
    for dict_names, start, end in streams:
        if "ObjStm" not in dict_names:
            continue
        filters: list[str] = []
        if "Filter" in dict_names:
            after = dict_names[dict_names.index("Filter") + 1 :]
            for name in after:
                if name not in _PDF_FILTERS:
                    break
                filters.append(name)
            if not filters:
                raise FileRefused("the PDF has an object stream whose filter can't be read")
        if filters not in ([], ["FlateDecode"], ["Fl"]) or "DecodeParms" in dict_names:
            raise FileRefused(
                f"the PDF has an object stream with filters {filters or 'none'} and parameters "
                "the check can't read; re-export the PDF"
            )
        body = data[start:end]
        if filters:
            inflater = zlib.decompressobj()
            try:
                body = inflater.decompress(body, max(budget, 0) + 1)
            except zlib.error:
                raise FileRefused(
                    "the PDF has an object stream that can't be decompressed; re-export the PDF"
                ) from None
            if inflater.unconsumed_tail or len(body) > budget:
                raise FileRefused(
                    f"the PDF's object streams decompress to more than {PDF_OBJECT_STREAM_BUDGET} "
                    "bytes; refused as a possible decompression bomb"
                )
            budget -= len(body)
        inner, _ = _pdf_scan(body)
        names |= inner
    found = sorted({_PDF_REFUSED[n] for n in names if n in _PDF_REFUSED})
    if found:
        raise FileRefused(f"the PDF contains {'; '.join(found)}; it is refused")
    return [message for name, message in _PDF_WARNED.items() if name in names]


# --- text ----------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_HTML_SNIFF = re.compile(
    r"(?:<!doctype\s+html|<html|<head|<script|<iframe|<h1|<div|<font|<table|<a|<style|<title"
    r"|<b|<body|<br|<p|<!--)[\s>]",
    re.IGNORECASE,
)
_ACTIVE_TAG = re.compile(r"<\s*(script|iframe|object|embed)\b", re.IGNORECASE)
_SCRIPT_URL = re.compile(r"(?:java|vb)script\s*:|data\s*:\s*text/html", re.IGNORECASE)
_EVENT_ATTRIBUTE = re.compile(r"<[a-z][^<>]*[\s/\"']on[a-z]+\s*=", re.IGNORECASE)
_MIMESNIFF_SPACE = "\t\n\x0c\r "


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _decode_text(data: bytes) -> str:
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


def _html_problem(text: str, *, markdown: bool) -> str | None:
    """Why this text counts as HTML or active content, or ``None``."""
    if _HTML_SNIFF.match(text.lstrip(_MIMESNIFF_SPACE) + " "):
        return "content is HTML (a browser would render it as a web page); HTML is refused"
    tag = _ACTIVE_TAG.search(text)
    if tag:
        return (
            f"the text contains an HTML <{tag.group(1).lower()}> tag on line "
            f"{_line_of(text, tag.start())}; active HTML content is refused"
        )
    if markdown:
        url = _SCRIPT_URL.search(text)
        if url:
            return (
                f"the Markdown contains a script URL ({url.group()!r}) on line "
                f"{_line_of(text, url.start())}; it is refused"
            )
        handler = _EVENT_ATTRIBUTE.search(text)
        if handler:
            return (
                "the Markdown contains an HTML event-handler attribute (on...=) on line "
                f"{_line_of(text, handler.start())}; it is refused"
            )
    return None


def _check_lines(data: bytes, limit: int) -> None:
    lines = data.split(b"\n")
    if max(map(len, lines)) <= limit:
        return
    number, line = next((n, line) for n, line in enumerate(lines, 1) if len(line) > limit)
    raise FileRefused(
        f"line {number} is {len(line)} bytes long, more than the limit of {limit} bytes"
    )


# --- CSV / TSV -----------------------------------------------------------------------------

_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?%?"
    r"|[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?"
)


@dataclass
class _Table:
    """Parsed delimited text: ``rows[i]`` is row ``i + 1``; it spans ``lines[ends[i-1]:ends[i]]``.

    ``lines`` is the text split after each "\\n", so ``"".join(lines)`` is the text again.
    """

    delimiter: str
    lines: list[str]
    rows: list[list[str]]
    ends: list[int]


def _parse_table(text: str, delimiter: str, label: str, policy: CheckPolicy) -> _Table:
    """Parse delimited text; every non-blank row must have as many fields as the first one."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    ends: list[int] = []
    width = 0
    cells = 0
    limit = policy.max_csv_cells
    try:
        for row in reader:
            rows.append(row)
            ends.append(reader.line_num)
            count = len(row)
            if count != width:
                if not count:
                    continue  # a blank line
                if width:
                    raise FileRefused(
                        f"not a valid {label} file: row {len(rows)} has {count} fields but the "
                        f"first row has {width}; every row must have the same number of fields"
                    )
                width = count
            cells += count
            if cells > limit:
                raise FileRefused(f"the {label} file has more than {limit} cells (the limit)")
    except csv.Error as error:
        raise FileRefused(f"not a valid {label} file: {error} (line {reader.line_num})") from None
    if not width:
        raise FileRefused(f"the {label} file has no rows")
    return _Table(delimiter, lines, rows, ends)


_FORMULA_FIRST = frozenset(FORMULA_STARTS) | {" "}


def is_formula(cell: str) -> bool:
    """Whether a spreadsheet tool would treat ``cell`` as a formula (CSV injection).

    A cell is a formula when its first character after leading spaces is one of
    :data:`FORMULA_STARTS`, unless the cell is a plain number (``-3.5``, ``+2``, ``-1e5``,
    ``-12%``, ``-1,234.5``) or a lone ``-``.
    """
    if not cell or cell[0] not in _FORMULA_FIRST:
        return False
    stripped = cell.lstrip(" ")
    if not stripped or not stripped.startswith(FORMULA_STARTS):
        return False
    return not (stripped == "-" or _NUMBER.fullmatch(stripped))


def _formula_cells(table: _Table) -> list[FlaggedCell]:
    first = _FORMULA_FIRST
    return [
        FlaggedCell(number, column, cell[:20])
        for number, row in enumerate(table.rows, 1)
        for column, cell in enumerate(row, 1)
        if cell and cell[0] in first and is_formula(cell)
    ]


def _neutralise(table: _Table, rows_to_change: set[int], bom: bool) -> str:
    """The text with a quote before every formula cell, re-writing only ``rows_to_change``."""
    buffer = io.StringIO()
    writer = csv.writer(
        buffer, delimiter=table.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n"
    )
    out = ["\ufeff"] if bom else []
    start = 0
    for number, (row, end) in enumerate(zip(table.rows, table.ends, strict=True), 1):
        if number not in rows_to_change:
            out.extend(table.lines[start:end])
            start = end
            continue
        raw = "".join(table.lines[start:end])
        start = end
        ending = next((e for e in ("\r\n", "\n", "\r") if raw.endswith(e)), "")
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(["'" + cell if is_formula(cell) else cell for cell in row])
        out.append(buffer.getvalue().removesuffix("\r\n") + ending)
    out.extend(table.lines[start:])
    return "".join(out)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _list_numbers(numbers: list[int], limit: int = 50) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


# --- SVG -----------------------------------------------------------------------------------

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


def _split(tag: str) -> tuple[str, str]:
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
        if _split(key)[1] == "href":
            return value
    return None


def _element_problem(element: ET.Element) -> str | None:
    namespace, local = _split(element.tag)
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
    namespace, local = _split(key)
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
    namespace, local = _split(key)
    prefix = {XLINK_NS: "xlink:", XML_NS: "xml:"}.get(namespace, "")
    return prefix + local


def _clean_attributes(element: ET.Element, findings: list[str]) -> None:
    local = _split(element.tag)[1]
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


def _sanitise_svg(root: ET.Element, text: str) -> list[str]:
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
                findings.append(f"<{_split(child.tag)[1]}> element: {problem}")
                _remove_child(parent, child)
                continue
            _clean_attributes(child, findings)
            stack.append((child, depth + 1))
    return findings


def _serialise_svg(root: ET.Element) -> bytes:
    """Write the (sanitised) tree with SVG as the default namespace and the usual xlink prefix.

    ElementTree can't write a default namespace next to unprefixed attributes, so SVG elements
    are renamed to plain names and the namespace declarations are added as attributes of the
    root; nothing global (``ET.register_namespace``) is changed.
    """
    uses_xlink = False
    for element in root.iter():
        namespace, local = _split(element.tag)
        if namespace == SVG_NS:
            element.tag = local
        for key in [k for k in element.attrib if k.startswith("{" + XLINK_NS + "}")]:
            element.attrib["xlink:" + _split(key)[1]] = element.attrib.pop(key)
            uses_xlink = True
    root.set("xmlns", SVG_NS)
    if uses_xlink:
        root.set("xmlns:xlink", XLINK_NS)
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def _parse_xml(data: bytes, text: str, ext: str) -> ET.Element | None:
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


# --- notebooks -----------------------------------------------------------------------------

_MARKUP_MIMES = {"text/html", "image/svg+xml", "text/markdown", "application/xhtml+xml"}
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _joined(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "".join(value)
    return json.dumps(value)


def _markup_problem(markup: str) -> str | None:
    tag = _ACTIVE_TAG.search(markup)
    if tag:
        return f"an HTML <{tag.group(1).lower()}> tag"
    url = _SCRIPT_URL.search(markup)
    if url:
        return f"a script URL ({url.group()!r})"
    if _EVENT_ATTRIBUTE.search(markup):
        return "an HTML event-handler attribute (on...=)"
    return None


def _bundle_problem(bundle: Any, where: str, warnings: set[str]) -> None:
    if not isinstance(bundle, dict):
        raise FileRefused(f"not a valid notebook: {where} has malformed data")
    for mime, value in bundle.items():
        kind = str(mime).split(";")[0].strip().lower()
        if kind in SCRIPT_MIMES:
            raise FileRefused(
                f"the notebook's {where} has {kind} content (code that runs in the browser "
                "of whoever opens it); clear that output or export the figure as PNG/SVG"
            )
        if kind in _MARKUP_MIMES:
            problem = _markup_problem(_joined(value))
            if problem:
                raise FileRefused(
                    f"the notebook's {where} has {kind} content with {problem}; clear that "
                    "output or export the figure as PNG/SVG"
                )
        if kind == _WIDGET_MIME:
            warnings.add("notebook has widget outputs; they are shown without their JavaScript")


def _check_notebook(notebook: dict[str, Any]) -> list[str]:
    """Validate nbformat 4 structure, refuse script outputs; return warnings."""
    major = notebook.get("nbformat")
    if type(major) is not int or major != 4:
        raise FileRefused(
            f"the notebook is nbformat {major!r}; only nbformat 4 notebooks are accepted"
        )
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise FileRefused("not a valid notebook: 'cells' is not a list")
    outputs = 0
    warnings: set[str] = set()
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise FileRefused(f"not a valid notebook: cell {number} is malformed")
        source = cell.get("source", "")
        if not (
            isinstance(source, str)
            or (isinstance(source, list) and all(isinstance(s, str) for s in source))
        ):
            raise FileRefused(f"not a valid notebook: cell {number} has a malformed source")
        if cell["cell_type"] == "markdown":
            problem = _markup_problem(_joined(source))
            if problem:
                raise FileRefused(f"the notebook's markdown cell {number} has {problem}")
        attachments = cell.get("attachments") or {}
        if not isinstance(attachments, dict):
            raise FileRefused(f"not a valid notebook: cell {number} has malformed attachments")
        for attachment, bundle in attachments.items():
            _bundle_problem(bundle, f"cell {number} attachment {attachment!r}", warnings)
        if cell["cell_type"] != "code":
            continue
        cell_outputs = cell.get("outputs", [])
        if not isinstance(cell_outputs, list):
            raise FileRefused(f"not a valid notebook: cell {number} has malformed outputs")
        for index, output in enumerate(cell_outputs, 1):
            if not isinstance(output, dict):
                raise FileRefused(f"not a valid notebook: cell {number} output {index}")
            outputs += 1
            if "data" in output:
                _bundle_problem(output["data"], f"cell {number} output {index}", warnings)
    result = sorted(warnings)
    if outputs:
        result.insert(
            0,
            f"notebook has {_count(outputs, 'output')}; a checker must approve it with outputs, or "
            "it is "
            "released as code with outputs stripped",
        )
    return result


# --- detection -----------------------------------------------------------------------------


@dataclass
class _Detected:
    kind: FileKind
    warnings: list[str] = field(default_factory=list)
    text: str | None = None
    table: _Table | None = None
    svg: ET.Element | None = None


def _looks_like_notebook(text: str, ext: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        if ext == ".ipynb":
            raise FileRefused("not a valid notebook: it is not a JSON object")
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        if ext == ".ipynb":
            raise FileRefused(f"not a valid notebook: it is not valid JSON ({error})") from None
        return None
    if isinstance(value, dict) and "nbformat" in value and "cells" in value:
        return value
    if ext == ".ipynb":
        raise FileRefused("not a valid notebook: it has no 'nbformat' and 'cells'")
    return None


def _detect(data: bytes, name: str, policy: CheckPolicy) -> _Detected:
    """Identify the kind by content, check the extension agrees and run the kind's checks."""
    found: list[FileKind] = []
    try:
        return _identify(data, name, policy, found)
    except FileRefused as error:
        if error.kind is None and found:
            error.kind = found[-1]
        raise


def _identify(data: bytes, name: str, policy: CheckPolicy, found: list[FileKind]) -> _Detected:
    """The body of :func:`_detect`; appends each kind to ``found`` as soon as it is known."""
    if not data:
        raise FileRefused("empty file: there is nothing to release")
    ext = _extension(name)
    refused = _refused_signature(data)
    if refused:
        raise FileRefused(refused)
    for magic, kind in (
        (_PNG_MAGIC, FileKind.PNG),
        (_JPEG_MAGIC, FileKind.JPEG),
        (_PDF_MAGIC, FileKind.PDF),
    ):
        if data.startswith(magic):
            found.append(kind)
            _require_extension(kind, name, ext)
            _embedded_archive(data, LABELS[kind])
            check = {FileKind.PNG: _check_png, FileKind.JPEG: _check_jpeg}.get(kind, _check_pdf)
            return _Detected(kind, warnings=check(data))

    text = _decode_text(data)
    notebook = _looks_like_notebook(text, ext)
    if notebook is not None:
        found.append(FileKind.NOTEBOOK)
        _require_extension(FileKind.NOTEBOOK, name, ext)
        return _Detected(FileKind.NOTEBOOK, warnings=_check_notebook(notebook), text=text)
    stripped = text.lstrip()
    if stripped.startswith("<") or ext == ".svg":
        root = _parse_xml(data, stripped, ext)
        if root is not None:
            namespace, local = _split(root.tag)
            if local.lower() == "html":
                raise FileRefused("content is XHTML (a web page); HTML is refused")
            if (namespace, local) == (SVG_NS, "svg"):
                found.append(FileKind.SVG)
                _require_extension(FileKind.SVG, name, ext)
                return _Detected(FileKind.SVG, text=text, svg=root)
            if ext == ".svg":
                raise FileRefused(
                    f"not a valid SVG image: the root element is <{local}> "
                    f"{'in namespace ' + namespace if namespace else 'without the SVG namespace'}"
                    f", not <svg> in {SVG_NS}"
                )

    kind = EXTENSIONS.get(ext)
    if kind not in (FileKind.CSV, FileKind.TSV, FileKind.TEXT, FileKind.MARKDOWN):
        if kind is None:
            what = f"the extension {ext}" if ext else "a name without an extension"
            raise FileRefused(f"content is text, but {what} is not on the allow-list ({ALLOWED})")
        raise FileRefused(f"content is text, not {LABELS[kind]}, but the name says {ext}")
    _check_lines(data, policy.max_line_bytes)
    problem = _html_problem(text, markdown=kind is FileKind.MARKDOWN)
    if problem:
        raise FileRefused(problem)
    found.append(kind)
    detected = _Detected(kind, text=text)
    if kind is FileKind.TSV:
        detected.table = _parse_table(text, "\t", "TSV", policy)
    elif kind is FileKind.CSV:
        # Comma; or semicolon (common in Europe) when the first line suggests it and every
        # row then has the same number of fields (else it is a comma file with ';' in cells).
        first = text.split("\n", 1)[0]
        if first.count(";") > first.count(","):
            try:
                detected.table = _parse_table(text, ";", "CSV", policy)
                return detected
            except FileRefused:
                pass
        detected.table = _parse_table(text, ",", "CSV", policy)
    return detected


# --- the whole check -----------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_file(name: str, data: bytes, policy: CheckPolicy = DEFAULT_POLICY) -> FileCheckResult:
    """Run every automatic check on one file; see the module documentation for the rules.

    Never raises for bad input: every reason to refuse is a sentence in ``problems``.
    """
    problems: list[str] = []
    warnings: list[str] = []
    changes: list[str] = []
    flagged: list[FlaggedCell] = []
    digest = _sha256(data)
    kind: FileKind | None = None
    release: bytes | None = None

    def result() -> FileCheckResult:
        ok = not problems and release is not None
        return FileCheckResult(
            name=name,
            kind=kind,
            ok=ok,
            problems=problems,
            warnings=warnings,
            changes=changes if ok else [],
            release_bytes=release if ok else None,
            sha256=digest,
            release_sha256=(_sha256(release) if release is not data else digest) if ok else None,
            size=len(data),
            flagged_cells=flagged,
        )

    try:
        validate_relative_path(name)
    except OutputPathError as error:
        problems.append(f"the name {error.reason}")
    if not data:
        problems.append("empty file: there is nothing to release")
        return result()
    if len(data) > policy.max_file_bytes:
        problems.append(
            f"the file is {len(data)} bytes, larger than the limit of {policy.max_file_bytes} bytes"
        )
        return result()
    try:
        detected = _detect(data, name, policy)
    except FileRefused as error:
        problems.append(error.reason)
        kind = error.kind
        return result()
    except RecursionError:
        problems.append("the file is nested too deeply to be checked")
        return result()
    kind = detected.kind
    warnings.extend(detected.warnings)
    release = data

    if detected.table is not None:
        flagged.extend(_formula_cells(detected.table))
        if flagged:
            label = LABELS[kind]
            starts = "'=', '+', '-', '@', tab or carriage return"
            if policy.csv_injection == "refuse":
                problems.append(
                    f"{_count(len(flagged), label + ' cell')} start with {starts} and would run "
                    "as formulas "
                    "in spreadsheet tools (CSV injection); refused by policy: "
                    + "; ".join(
                        f"row {c.row}, column {c.column}: {c.preview!r}" for c in flagged[:50]
                    )
                    + (f"; and {len(flagged) - 50} more" if len(flagged) > 50 else "")
                )
            else:
                assert detected.text is not None
                bom = data.startswith(b"\xef\xbb\xbf")
                rows = sorted({c.row for c in flagged})
                release = _neutralise(detected.table, set(rows), bom).encode("utf-8")
                changes.append(
                    f"neutralised {_count(len(flagged), 'cell')} starting with {starts} by "
                    f"prefixing a single quote: {'row' if len(rows) == 1 else 'rows'} "
                    f"{_list_numbers(rows)}"
                )
                changes.extend(
                    f"row {c.row}, column {c.column}: {c.preview!r} now starts with a quote"
                    for c in flagged[:100]
                )

    if detected.svg is not None:
        assert detected.text is not None
        try:
            findings = _sanitise_svg(detected.svg, detected.text)
        except FileRefused as error:
            problems.append(error.reason)
            return result()
        if findings and policy.svg == "refuse":
            problems.append(
                "the SVG has active or external content, refused by policy: " + "; ".join(findings)
            )
        elif findings:
            try:
                release = _serialise_svg(detected.svg)
            except RecursionError:
                problems.append("the SVG is nested too deeply to be re-written")
                return result()
            changes.append(
                f"sanitised the SVG: removed {_count(len(findings), 'item')} and re-wrote it "
                "(comments, "
                "processing instructions and the DOCTYPE are dropped)"
            )
            changes.extend(f"removed {finding}" for finding in findings)
    return result()
