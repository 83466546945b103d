"""How a verdict shows in the notebook: a small HTML badge, and tables that carry theirs.

:func:`verdict_badge_html` renders an :class:`~havre.safe.outputs.Output` as a coloured badge
(PASS / REVIEW / FAIL, always spelled out, not only a colour), the output's id, its summary and
its reasons (folded when there are many). Everything taken from the data (labels, reasons) is
HTML-escaped; there is no script and no outside resource (the enclave's Content-Security-Policy
allows neither), only inline styles.

:class:`SafeTable` is the :class:`pandas.DataFrame` the library returns for tables: an ordinary
DataFrame (every pandas operation works, and gives back a plain DataFrame: a derived table has
not been checked) whose notebook display starts with its verdict badge.
"""

from __future__ import annotations

import hashlib
import html
from typing import Any, Protocol

import pandas as pd

__all__ = [
    "MAX_REASONS_SHOWN",
    "Recorded",
    "SafeTable",
    "edited_badge_html",
    "table_fingerprint",
    "verdict_badge_html",
]

#: Reasons listed in a badge before "and N more".
MAX_REASONS_SHOWN = 12


class Recorded(Protocol):
    """What a badge shows of a recorded output (an :class:`~havre.safe.outputs.Output`)."""

    uid: str
    status: str
    output_type: str
    properties: dict[str, Any]
    summary: str
    exception: str

    @property
    def reasons(self) -> list[str]: ...

    @property
    def file_names(self) -> list[str]: ...


_COLOURS = {
    "pass": ("#1a7f37", "#ffffff"),
    "review": ("#9a6700", "#ffffff"),
    "fail": ("#cf222e", "#ffffff"),
}

_MEANING = {
    "pass": "no rule is broken; checkers still review it before release",
    "review": "a checker must look at it (see the reasons)",
    "fail": "a rule is broken: suppress, change the output, or ask for an exception",
}


#: The block a badge and its text sit in.
_BLOCK = (
    '<div class="havre-sdc-verdict" style="font-family:sans-serif;font-size:12px;'
    'margin:2px 0 6px 0;line-height:1.5">'
)


def escape(text: object) -> str:
    """HTML-escaped text (labels and reasons come from the data)."""
    return html.escape(str(text), quote=True)


def _badge(word: str, title: str, background: str, foreground: str = "#ffffff") -> str:
    return (
        f'<span style="background:{background};color:{foreground};border-radius:3px;'
        f'padding:1px 6px;font-weight:bold;letter-spacing:0.04em" '
        f'title="{escape(title)}">{escape(word)}</span>'
    )


def verdict_badge_html(output: Recorded) -> str:
    """The verdict of ``output`` as a small HTML block for the notebook."""
    background, foreground = _COLOURS.get(output.status, ("#57606a", "#ffffff"))
    badge = _badge(output.status.upper(), _MEANING.get(output.status, ""), background, foreground)
    method = output.properties.get("method", output.output_type)
    head = f"{badge} <code>{escape(output.uid)}</code> {escape(method)}: {escape(output.summary)}"
    parts = [_BLOCK + head]
    reasons = output.reasons
    if reasons:
        shown = reasons[:MAX_REASONS_SHOWN]
        items = "".join(f"<li>{escape(r)}</li>" for r in shown)
        if len(reasons) > len(shown):
            items += f"<li>... and {len(reasons) - len(shown)} more (see results.json)</li>"
        noun = "reason" if len(reasons) == 1 else "reasons"
        opened = " open" if output.status != "pass" and len(reasons) <= 3 else ""
        parts.append(
            f'<details{opened} style="margin-left:1em"><summary>{len(reasons)} {noun}'
            f'</summary><ul style="margin:0">{items}</ul></details>'
        )
    if output.exception:
        parts.append(
            f'<div style="margin-left:1em">exception requested: {escape(output.exception)}</div>'
        )
    parts.append("</div>")
    return "".join(parts)


def edited_badge_html(output: Recorded) -> str:
    """The badge of a table changed in place after its check: never the recorded verdict's
    colour or word, and it says what the recorded verdict is of."""
    badge = _badge("EDITED: NOT CHECKED", "the values shown were not checked", "#57606a")
    names = ", ".join(output.file_names) or output.uid
    text = (
        f"this table was changed after the library checked it: the recorded verdict "
        f"({output.status}) is of the values written to {names}, not of what is shown here; "
        "make the table again with the library to check the new values"
    )
    return f"{_BLOCK}{badge} <code>{escape(output.uid)}</code> {escape(text)}</div>"


def table_fingerprint(table: pd.DataFrame) -> str:
    """A digest of a table's values, labels and types: it changes when the table is edited
    in place (a cell set, a column added or renamed, rows dropped)."""
    digest = hashlib.sha256()
    digest.update(repr((table.shape, [str(t) for t in table.dtypes])).encode())
    try:
        digest.update(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes())
        digest.update(pd.util.hash_pandas_object(table.columns, index=False).to_numpy().tobytes())
    except (TypeError, ValueError):  # labels or values pandas can't hash: hash the text
        digest.update(table.to_csv().encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class SafeTable(pd.DataFrame):
    """A table returned by the safe-analysis library: a DataFrame that shows its verdict.

    ``table.safe_output`` is the recorded :class:`~havre.safe.outputs.Output` (status,
    reasons, files). Any operation on the table returns a plain DataFrame without a verdict.
    A table changed in place (``t.loc[...] = ...``) keeps its record but loses its badge:
    :attr:`edited` is True and the notebook shows "EDITED: NOT CHECKED" instead of the
    verdict, which is of the values as checked and written.
    """

    _metadata = ["_safe_output", "_safe_fingerprint"]

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    @classmethod
    def wrap(cls, table: pd.DataFrame, output: Recorded) -> SafeTable:
        """``table`` (not copied) as a SafeTable carrying ``output``."""
        out = cls(table, copy=False)
        out._safe_output = output
        out._safe_fingerprint = table_fingerprint(out)
        return out

    @property
    def safe_output(self) -> Recorded | None:
        """The recorded output behind this table."""
        return getattr(self, "_safe_output", None)

    @property
    def edited(self) -> bool:
        """Whether the table was changed since the library checked it."""
        expected = getattr(self, "_safe_fingerprint", None)
        return expected is not None and table_fingerprint(self) != expected

    def _repr_html_(self) -> Any:
        table_html = super()._repr_html_()
        output = self.safe_output
        if output is None:
            return table_html
        if self.edited:
            return edited_badge_html(output) + (table_html or "")
        return verdict_badge_html(output) + (table_html or "")
