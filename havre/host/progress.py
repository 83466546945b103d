"""Progress lines for the host's long commands (``havre up``), on a terminal only.

A person waiting at a terminal sees each step as it starts, the time since the command began,
and what is being waited on (``havre up [  4.1s] identity provider: waiting on havre-idp``);
every ``every`` seconds of one wait, a "still waiting" line. When standard error is not a
terminal (Ansible, CI, a log file, a pipe) nothing is printed: the command's own output stays
what scripts parse. ``HAVRE_PROGRESS=1`` forces the lines on, ``HAVRE_PROGRESS=0`` off.

The shell side is ``scripts/lib/progress.sh`` (``images/build.sh``): the same format.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def wanted(stream: TextIO) -> bool:
    """Whether progress goes to ``stream``: a terminal, unless HAVRE_PROGRESS says otherwise."""
    forced = os.environ.get("HAVRE_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Steps, elapsed time and what is waited on, for one command."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        every: float = 5.0,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = wanted(self.stream) if enabled is None else enabled
        self.every = every
        self.started = time.monotonic()
        self._step = ""
        self._last_wait = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _line(self, text: str) -> None:
        if self.enabled:
            print(f"{self.label} [{self.elapsed():6.1f}s] {text}", file=self.stream, flush=True)

    def step(self, what: str, waiting_on: str = "") -> None:
        """A new step starts (and, if given, what it waits on)."""
        self._step = what
        self._last_wait = time.monotonic()
        self._line(f"{what}: waiting on {waiting_on}" if waiting_on else what)

    def still_waiting(self, on: str) -> None:
        """Called from a wait loop: prints at most one line every ``every`` seconds."""
        now = time.monotonic()
        if now - self._last_wait >= self.every:
            self._last_wait = now
            self._line(f"{self._step}: still waiting on {on}")

    def done(self, what: str = "done") -> None:
        self._line(what)


#: a Progress that prints nothing (library calls, tests)
def quiet() -> Progress:
    return Progress("", enabled=False)
