"""The one problems collector of Havre's config files.

Every config file Havre reads (the enclave config, the identity provider's ``idp.yaml`` and
users file, the egress service's mail relay settings, the SDC parameters) is checked in full
before anything runs: a checker
records *every* problem instead of stopping at the first, and each problem names the offending
field by its dotted path (``projects.cardio.members[1]``) with a bounded ``repr`` of the value::

    projects.cardio.title: must be a non-empty string (got '')
    identity.oidx: unknown key 'oidx', did you mean 'oidc'? (allowed keys: ...)

An unknown key is always a problem (typo protection: a misspelt security setting must not be
silently ignored), with the closest allowed key offered.  A boolean where another type was
expected gets a hint on YAML's unquoted ``yes``/``no``/``on``/``off``.

Standard library only.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = ["ConfigProblemsError", "Problems", "join_path", "show_value"]

BOOL_HINT = "; note: YAML reads unquoted yes/no/on/off/true/false as booleans, quote the value"

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = 6
_repr.maxtuple = 6
_repr.maxdict = 4
_repr.maxset = 6
_repr.maxlevel = 3


def show_value(value: object) -> str:
    """A bounded ``repr`` of a (possibly huge or deeply nested) value."""
    return _repr.repr(value)


def join_path(parent: str, key: object) -> str:
    """``parent.key``, or ``key`` at the top level."""
    return f"{parent}.{key}" if parent else str(key)


class Problems:
    """Every problem found in one config, in the order found."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def add(self, path: str, message: str, *value: object) -> None:
        """Record ``<path>: <message>``; a value, if passed, is shown as ``(got <repr>)``."""
        text = f"{path}: {message}"
        if value:
            text += f" (got {show_value(value[0])})"
            if isinstance(value[0], bool):
                text += BOOL_HINT
        self.items.append(text)

    def unknown_keys(self, mapping: Mapping[Any, Any], path: str, allowed: Iterable[str]) -> None:
        """Record each key of ``mapping`` that is not in ``allowed``, with a did-you-mean."""
        allowed = tuple(allowed)
        for key in mapping:
            if isinstance(key, str) and key in allowed:
                continue
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    hint = f", did you mean {close[0]!r}?"
            self.add(
                join_path(path, key),
                f"unknown key {key!r}{hint} (allowed keys: {', '.join(sorted(allowed))})",
            )

    def section(
        self, parent: Mapping[Any, Any], key: str, path: str, allowed: Iterable[str]
    ) -> Mapping[Any, Any]:
        """The optional sub-mapping ``parent[key]`` (absent or null: empty), keys checked."""
        raw = parent.get(key)
        where = join_path(path, key)
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.add(where, "must be a mapping", raw)
            return {}
        self.unknown_keys(raw, where, allowed)
        return raw

    def raise_if_any(self, error: type[ConfigProblemsError], source: str) -> None:
        """Raise ``error`` listing every problem, if there is one."""
        if self.items:
            raise error(self.items, source)


class ConfigProblemsError(ValueError):
    """A config file with problems; ``problems`` lists each, ``source`` names the file.

    ``str(err)`` is::

        invalid <what> <source>:
          - <problem 1>
          - <problem 2>
    """

    #: the kind of config, as the first line of the message names it
    what = "config"

    def __init__(self, problems: Iterable[str], source: str = "<string>") -> None:
        self.problems: list[str] = list(problems)
        self.source: str = source
        lines = [f"invalid {self.what} {source}:"]
        lines.extend(f"  - {problem}" for problem in self.problems)
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems, self.source))
