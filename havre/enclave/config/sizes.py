"""Memory and disk sizes as the config file writes them (``512M``, ``1.5G``, binary units)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["GIB", "KIB", "MIB", "TIB", "format_size", "parse_size"]

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
_INT64_MAX = 2**63 - 1

_SIZE_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[kmgt]i?)?b?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}


def parse_size(text: str | int) -> int:
    """Parse a memory size into bytes.

    Accepted: a non-negative ``int`` (bytes), or a string holding an integer or decimal
    number with an optional ``K``/``M``/``G``/``T`` suffix in *binary* units
    (``1K == 1024``).  The suffix is case-insensitive and may be followed by ``i`` and/or
    ``B`` (``512M``, ``512m``, ``512Mi``, ``512MiB`` are the same).  A decimal with a suffix
    is rounded down to whole bytes (``1.5G`` -> 1610612736); a decimal without a suffix is
    refused.

    >>> parse_size("512M")
    536870912

    Raises ``ValueError`` with a message naming the bad value.
    """
    expected = (
        "expected a number of bytes or a number with a K, M, G or T suffix "
        "(binary units, e.g. 512M, 1.5G)"
    )
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"invalid size {text!r}: {expected}")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"invalid size {text!r}: {expected}")
        unit = (match.group("unit") or "").lower().rstrip("i")
        try:
            number = Decimal(match.group("num"))
        except InvalidOperation:  # pragma: no cover - the regex only lets digits through
            raise ValueError(f"invalid size {text!r}: {expected}") from None
        if not unit and number != number.to_integral_value():
            raise ValueError(f"invalid size {text!r}: a size without a unit must be whole bytes")
        value = int(number * _SIZE_UNITS[unit])
    if value < 0:
        raise ValueError(f"invalid size {text!r}: must not be negative")
    if value > _INT64_MAX:
        raise ValueError(f"invalid size {text!r}: too large")
    return value


def format_size(n_bytes: int) -> str | int:
    """Render a byte count the way the config file writes it.

    Uses the largest of ``T``/``G``/``M``/``K`` that divides ``n_bytes`` exactly (``"4G"``),
    otherwise returns the plain ``int``.  ``parse_size(format_size(n)) == n`` always holds.
    """
    for suffix, mult in (("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)):
        if n_bytes and n_bytes % mult == 0:
            return f"{n_bytes // mult}{suffix}"
    return n_bytes
