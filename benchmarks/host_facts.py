"""Facts about the machine a benchmark ran on, for its recorded results (shared by the scripts
in this folder, which run as ``python benchmarks/<script>.py`` and so import it directly)."""

from __future__ import annotations

from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
