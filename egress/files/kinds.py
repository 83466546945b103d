"""The kinds of file that can be released: the one table every reader takes its names,
extensions, media types and the list of script MIME types from (the checks in
:mod:`egress.files.checks`, the renderer in :mod:`egress.files.render`, the operations).

The threat: two tables drift apart, and a kind (or a script MIME type) one side refuses slips
through the other. Nothing else in the code base lists kinds, extensions or script types."""

from __future__ import annotations

from enum import StrEnum


class FileKind(StrEnum):
    """The kinds of file that can be released (the allow-list)."""

    CSV = "csv"
    TSV = "tsv"
    PNG = "png"
    JPEG = "jpeg"
    SVG = "svg"
    PDF = "pdf"
    TEXT = "text"
    MARKDOWN = "markdown"
    NOTEBOOK = "notebook"


LABELS: dict[FileKind, str] = {
    FileKind.CSV: "CSV",
    FileKind.TSV: "TSV",
    FileKind.PNG: "PNG",
    FileKind.JPEG: "JPEG",
    FileKind.SVG: "SVG",
    FileKind.PDF: "PDF",
    FileKind.TEXT: "plain text",
    FileKind.MARKDOWN: "Markdown",
    FileKind.NOTEBOOK: "a Jupyter notebook",
}

EXTENSIONS: dict[str, FileKind] = {
    ".csv": FileKind.CSV,
    ".tsv": FileKind.TSV,
    ".png": FileKind.PNG,
    ".jpg": FileKind.JPEG,
    ".jpeg": FileKind.JPEG,
    ".svg": FileKind.SVG,
    ".pdf": FileKind.PDF,
    ".txt": FileKind.TEXT,
    ".md": FileKind.MARKDOWN,
    ".markdown": FileKind.MARKDOWN,
    ".ipynb": FileKind.NOTEBOOK,
}
"""Allowed extensions (compared in lower case) and the kind each one promises."""

ALLOWED = (
    "CSV (.csv), TSV (.tsv), PNG (.png), JPEG (.jpg, .jpeg), SVG (.svg), PDF (.pdf), "
    "plain text (.txt), Markdown (.md, .markdown) and Jupyter notebooks (.ipynb)"
)

MEDIA_TYPES: dict[FileKind, str] = {
    FileKind.CSV: "text/csv; charset=utf-8",
    FileKind.TSV: "text/tab-separated-values; charset=utf-8",
    FileKind.PNG: "image/png",
    FileKind.JPEG: "image/jpeg",
    FileKind.SVG: "image/svg+xml",
    FileKind.PDF: "application/pdf",
    FileKind.TEXT: "text/plain; charset=utf-8",
    FileKind.MARKDOWN: "text/markdown; charset=utf-8",
    FileKind.NOTEBOOK: "application/x-ipynb+json",
}
"""The media type each kind is stored and served with by the API (``view_file``)."""

CONTENT_TYPES: dict[FileKind, str] = {
    **MEDIA_TYPES,
    # Markdown is served as plain text: the browser shows the source, never renders it.
    FileKind.MARKDOWN: "text/plain; charset=utf-8",
}
"""``Content-Type`` of the raw file response for each kind."""


def extensions_of(kind: str) -> tuple[str, ...]:
    """The extensions (without the dot, the usual one first) that promise ``kind``."""
    return tuple(ext[1:] for ext, k in EXTENSIONS.items() if k == kind)


SCRIPT_MIMES = frozenset(
    {
        "application/javascript",
        "text/javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-javascript",
    }
)
"""MIME types of code that runs in the browser: a notebook output of one of them is refused
by the checks and removed (with a marker saying why) by the renderer."""
