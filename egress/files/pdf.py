"""PDF: refused when it carries active content, never shown inside the checker's page.

The threats: JavaScript, launch actions, embedded files, forms that send data and encryption
(content a checker can't review), also hidden in compressed object streams, and decompression
bombs. Object streams are inflated under :data:`PDF_OBJECT_STREAM_BUDGET`; a stream that can't be
read is refused. A checker sees the size, version and page count, a download link and, at most, a
sandboxed preview frame, because PDF viewers run scripts."""

from __future__ import annotations

import re
import zlib

from egress.files.common import FileRefused, MiB, esc, human_size

# --- the check ----------------------------------------------------------------------------

PDF_OBJECT_STREAM_BUDGET = 64 * MiB
"""Most bytes the PDF check inflates from object streams before refusing the file."""

PDF_MAGIC = b"%PDF-"


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


def check_pdf(data: bytes) -> list[str]:
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


# --- the rendering ------------------------------------------------------------------------

PDF_INFLATE_BUDGET = 16 * 1024 * 1024
"""Most bytes inflated from PDF object streams while looking for the page count."""


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


def render_pdf(
    data: bytes, name: str, raw_url: str, preview_url: str | None, notes: list[str]
) -> str:
    version = _PDF_VERSION.match(data)
    pages = _pdf_pages(data)
    rows = [
        ("File", esc(name)),
        ("Size", esc(human_size(len(data)))),
        ("PDF version", esc(version.group(1).decode()) if version else "unknown"),
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
        f'</dl><p><a class="havre-download" href="{esc(raw_url)}" download="" '
        'rel="noopener noreferrer">Download the PDF</a></p>'
    )
    if preview_url:
        parts.append(
            '<p class="havre-hint">If the preview below stays empty or shows a blocked-page '
            "icon, your browser does not show PDFs in a sandbox (Chromium-based browsers "
            "don't); download the file instead.</p>"
            f'<iframe class="havre-pdf-preview" src="{esc(preview_url)}" sandbox="" '
            f'title="{esc("Sandboxed preview of " + name)}" referrerpolicy="no-referrer">'
            "</iframe>"
        )
    parts.append("</div>")
    return "".join(parts)
