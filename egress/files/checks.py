"""Automatic checks of a file submitted for release, before two output checkers review it.

Bytes and a name in, a :class:`FileCheckResult` out: this module identifies the kind by
content, checks that the name agrees, and runs that kind's check (one module a kind:
:mod:`~egress.files.images`, :mod:`~egress.files.pdf`, :mod:`~egress.files.svg`,
:mod:`~egress.files.tables`, :mod:`~egress.files.text`, :mod:`~egress.files.notebooks`). The
checks parse with the standard library only, never read or write the outputs folder
(``havre.enclave.outputs_folder`` reads it) and never decompress anything researcher-supplied
except PDF object streams, under a byte budget.

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

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from egress.files.common import (
    DEFAULT_POLICY,
    CheckPolicy,
    FileCheckResult,
    FileRefused,
    FlaggedCell,
    count,
)
from egress.files.images import JPEG_MAGIC, PNG_MAGIC, check_jpeg, check_png
from egress.files.kinds import ALLOWED, EXTENSIONS, LABELS, SCRIPT_MIMES, FileKind
from egress.files.notebooks import check_notebook, looks_like_notebook
from egress.files.pdf import PDF_MAGIC, check_pdf
from egress.files.svg import SVG_NS, parse_xml, sanitise_svg, serialise_svg, split_tag
from egress.files.tables import (
    Table,
    formula_cells,
    is_formula,
    list_numbers,
    neutralise,
    parse_table,
)
from egress.files.text import check_lines, decode_text, html_problem
from havre.enclave.outputs_folder import OutputPathError, validate_relative_path

__all__ = [
    "DEFAULT_POLICY",
    "EXTENSIONS",
    "SCRIPT_MIMES",
    "CheckPolicy",
    "FileCheckResult",
    "FileKind",
    "FileRefused",
    "FlaggedCell",
    "check_file",
    "is_formula",
]

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


# --- detection -----------------------------------------------------------------------------


@dataclass
class _Detected:
    kind: FileKind
    warnings: list[str] = field(default_factory=list)
    text: str | None = None
    table: Table | None = None
    svg: ET.Element | None = None


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
        (PNG_MAGIC, FileKind.PNG),
        (JPEG_MAGIC, FileKind.JPEG),
        (PDF_MAGIC, FileKind.PDF),
    ):
        if data.startswith(magic):
            found.append(kind)
            _require_extension(kind, name, ext)
            _embedded_archive(data, LABELS[kind])
            check = {FileKind.PNG: check_png, FileKind.JPEG: check_jpeg}.get(kind, check_pdf)
            return _Detected(kind, warnings=check(data))

    text = decode_text(data)
    notebook = looks_like_notebook(text, ext)
    if notebook is not None:
        found.append(FileKind.NOTEBOOK)
        _require_extension(FileKind.NOTEBOOK, name, ext)
        return _Detected(FileKind.NOTEBOOK, warnings=check_notebook(notebook), text=text)
    stripped = text.lstrip()
    if stripped.startswith("<") or ext == ".svg":
        root = parse_xml(data, stripped, ext)
        if root is not None:
            namespace, local = split_tag(root.tag)
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
    check_lines(data, policy.max_line_bytes)
    problem = html_problem(text, markdown=kind is FileKind.MARKDOWN)
    if problem:
        raise FileRefused(problem)
    found.append(kind)
    detected = _Detected(kind, text=text)
    if kind is FileKind.TSV:
        detected.table = parse_table(text, "\t", "TSV", policy)
    elif kind is FileKind.CSV:
        # Comma; or semicolon (common in Europe) when the first line suggests it and every
        # row then has the same number of fields (else it is a comma file with ';' in cells).
        first = text.split("\n", 1)[0]
        if first.count(";") > first.count(","):
            try:
                detected.table = parse_table(text, ";", "CSV", policy)
                return detected
            except FileRefused:
                pass
        detected.table = parse_table(text, ",", "CSV", policy)
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
        flagged.extend(formula_cells(detected.table))
        if flagged:
            label = LABELS[kind]
            starts = "'=', '+', '-', '@', tab or carriage return"
            if policy.csv_injection == "refuse":
                problems.append(
                    f"{count(len(flagged), label + ' cell')} start with {starts} and would run "
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
                release = neutralise(detected.table, set(rows), bom).encode("utf-8")
                changes.append(
                    f"neutralised {count(len(flagged), 'cell')} starting with {starts} by "
                    f"prefixing a single quote: {'row' if len(rows) == 1 else 'rows'} "
                    f"{list_numbers(rows)}"
                )
                changes.extend(
                    f"row {c.row}, column {c.column}: {c.preview!r} now starts with a quote"
                    for c in flagged[:100]
                )

    if detected.svg is not None:
        assert detected.text is not None
        try:
            findings = sanitise_svg(detected.svg, detected.text)
        except FileRefused as error:
            problems.append(error.reason)
            return result()
        if findings and policy.svg == "refuse":
            problems.append(
                "the SVG has active or external content, refused by policy: " + "; ".join(findings)
            )
        elif findings:
            try:
                release = serialise_svg(detected.svg)
            except RecursionError:
                problems.append("the SVG is nested too deeply to be re-written")
                return result()
            changes.append(
                f"sanitised the SVG: removed {count(len(findings), 'item')} and re-wrote it "
                "(comments, "
                "processing instructions and the DOCTYPE are dropped)"
            )
            changes.extend(f"removed {finding}" for finding in findings)
    return result()
