"""What the check and the rendering of every kind share: the refusal, the check's policy and
result, the renderer's result and error, and the small wording helpers of their sentences.

Pure (standard library only). The threat it answers: each kind's module saying the same thing
in its own words, so that researchers and checkers read two versions of one rule."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Literal

from egress.files.kinds import FileKind

MiB = 1024 * 1024


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


def count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


class RenderError(ValueError):
    """A programming error in the call: unknown kind, bad ``raw_url``, bad verdict."""


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


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def plural(number: int, noun: str, plural: str | None = None) -> str:
    return f"{number:,} {noun if number == 1 else (plural or noun + 's')}"


def human_size(number: int) -> str:
    if number < 1024:
        return plural(number, "byte")
    value = float(number)
    for unit in ("KiB", "MiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GiB"
