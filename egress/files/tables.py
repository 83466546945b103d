"""CSV and TSV: parsed with one field count per row, formula cells neutralised, shown as a table.

The threat: CSV injection, a cell a spreadsheet tool would run as a formula when a checker or
the recipient opens the released file (:func:`is_formula`). Such cells get a leading quote in
the release bytes (or the file is refused, by policy); the checker's table shows every cell
escaped, formula cells marked, and the per-cell SDC verdicts."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from egress.files.common import CheckPolicy, FileRefused, FlaggedCell, RenderError, esc, plural
from egress.files.sanitise import invisible_note, visible

# --- the check ----------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
"""First characters that make a spreadsheet tool read a cell as a formula (with fullwidth ones)."""


_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?%?"
    r"|[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?"
)


@dataclass
class Table:
    """Parsed delimited text: ``rows[i]`` is row ``i + 1``; it spans ``lines[ends[i-1]:ends[i]]``.

    ``lines`` is the text split after each "\\n", so ``"".join(lines)`` is the text again.
    """

    delimiter: str
    lines: list[str]
    rows: list[list[str]]
    ends: list[int]


def parse_table(text: str, delimiter: str, label: str, policy: CheckPolicy) -> Table:
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
    return Table(delimiter, lines, rows, ends)


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


def formula_cells(table: Table) -> list[FlaggedCell]:
    first = _FORMULA_FIRST
    return [
        FlaggedCell(number, column, cell[:20])
        for number, row in enumerate(table.rows, 1)
        for column, cell in enumerate(row, 1)
        if cell and cell[0] in first and is_formula(cell)
    ]


def neutralise(table: Table, rows_to_change: set[int], bom: bool) -> str:
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


def list_numbers(numbers: list[int], limit: int = 50) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


# --- the rendering ------------------------------------------------------------------------

VERDICTS = ("pass", "review", "fail", "suppressed")
"""Per-cell marks a table can show: ``havre.sdc`` verdict names, and a blank cell of a table of
counts taken as suppressed."""

#: The words shown in a marked cell (so a mark is never colour alone) and in the legend.
MARK_WORDS = {"fail": "fails", "review": "to review", "suppressed": "suppressed"}


def _legend(marks: Counter[str]) -> str:
    """The legend of the marks the table shows: a sample cell and its word, with counts."""
    items = "".join(
        f'<li><span class="havre-key havre-key-{mark}">'
        f'<span class="havre-mark">{MARK_WORDS[mark]}</span></span> '
        f"{plural(marks[mark], 'cell')}</li>"
        for mark in ("fail", "review", "suppressed")
        if marks[mark]
    )
    return (
        '<div class="havre-legend" id="cell-legend"><p>Cells marked by the disclosure rules '
        "(the word in the cell says why; hover over it for the reason):</p>"
        f"<ul>{items}</ul></div>"
        if items
        else ""
    )


def _delimiter(kind: str, text: str) -> str:
    if kind == "tsv":
        return "\t"
    # The same rule as the check (checks._identify): ';' when the first line has more ';' than ','.
    first = text.split("\n", 1)[0]
    return ";" if first.count(";") > first.count(",") else ","


def render_table(
    kind: str,
    text: str,
    *,
    max_rows: int,
    cell_verdicts: Mapping[tuple[int, int], str] | None,
    cell_reasons: Mapping[tuple[int, int], str | Sequence[str]] | None,
    notes: list[str],
) -> tuple[str, bool] | None:
    """The table HTML and whether rows were left out; ``None`` when the text doesn't parse."""
    verdicts = dict(cell_verdicts or {})
    for key, verdict in verdicts.items():
        if verdict not in VERDICTS:
            raise RenderError(f"cell verdict {verdict!r} at {key}: expected one of {VERDICTS}")
    reasons = dict(cell_reasons or {})
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=_delimiter(kind, text), strict=True
    )
    invisible: Counter[str] = Counter()
    marked: Counter[str] = Counter()
    out: list[str] = []
    header: list[str] | None = None
    shown = total = formulas = 0
    widths: set[int] = set()
    try:
        for number, row in enumerate(reader, 1):
            if not row:
                continue  # a blank line; numbering still counts it, as the check does
            widths.add(len(row))
            if header is None:
                header = row
                out.append('<thead><tr><th class="havre-rownum" scope="col">1</th>')
                out.extend(f'<th scope="col">{visible(cell, invisible)}</th>' for cell in row)
                out.append("</tr></thead><tbody>")
                continue
            index = total
            total += 1
            if shown >= max_rows:
                continue
            shown += 1
            out.append(f'<tr><th class="havre-rownum" scope="row">{number}</th>')
            for column, cell in enumerate(row):
                classes = ["havre-cell"]
                titles: list[str] = []
                verdict = verdicts.get((index, column))
                mark = ""
                if verdict:
                    classes.append(f"havre-cell-{verdict}")
                    reason = reasons.get((index, column))
                    if isinstance(reason, str):
                        reason = [reason]
                    titles.append(verdict + (": " + "; ".join(reason) if reason else ""))
                    if verdict in MARK_WORDS:
                        marked[verdict] += 1
                        mark = f' <span class="havre-mark">{MARK_WORDS[verdict]}</span>'
                if cell and is_formula(cell):
                    formulas += 1
                    classes.append("havre-cell-formula")
                    titles.append("starts like a spreadsheet formula; shown as text")
                title = f' title="{esc(" | ".join(titles))}"' if titles else ""
                out.append(
                    f'<td class="{" ".join(classes)}"{title}>{visible(cell, invisible)}{mark}</td>'
                )
            out.append("</tr>")
    except csv.Error as error:
        notes.append(
            f"The {kind.upper()} file could not be read as a table ({error}, line "
            f"{reader.line_num}); it is shown as text."
        )
        return None
    if header is None:
        notes.append(f"The {kind.upper()} file has no rows.")
        return '<p class="havre-empty">(empty)</p>', False
    out.append("</tbody>")
    truncated = shown < total
    notes.insert(0, f"{plural(total, 'data row')} and {plural(len(header), 'column')}.")
    if truncated:
        notes.append(
            f"Showing the first {shown:,} of {total:,} data rows; {total - shown:,} rows are "
            "not shown here (the raw file has them all)."
        )
    if len(widths) > 1:
        notes.append("Rows have different numbers of fields.")
    if formulas:
        notes.append(
            f"{plural(formulas, 'cell')} {'starts' if formulas == 1 else 'start'} like a "
            "spreadsheet formula (=, +, -, @); shown as text and marked."
        )
    hidden = Counter(v for (r, _), v in verdicts.items() if r >= shown and r < total)
    if hidden["fail"] or hidden["review"]:
        notes.append(
            f"Beyond the rows shown: {hidden['fail']:,} failing and {hidden['review']:,} "
            "to-review cells; open the raw file or the disclosure-check results to see them."
        )
    width = max(widths)
    outside = sum(1 for r, c in verdicts if not (0 <= r < total and 0 <= c < width))
    if outside:
        notes.append(
            f"{plural(outside, 'cell verdict')} {'refers' if outside == 1 else 'refer'} to "
            "cells outside this table; the "
            "disclosure-check results may be for another version of the file."
        )
    invisible_note(invisible, notes)
    table = (
        f"{_legend(marked)}"
        f'<div class="havre-table-wrap"><table class="havre-table">{"".join(out)}</table></div>'
    )
    return table, truncated
