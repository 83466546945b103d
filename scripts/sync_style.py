"""Copy Havre's one stylesheet (``style/havre.css``) to every service that serves it.

Each service serves its own copy, so no page depends on another service being up: the egress
service (``egress/web/static/``), the hub (``spawner/static/``, inlined in its pages) and the
identity provider's sign-in pages (``havre/idp/static/``, inlined). ``images/build.sh`` copies
the source into the wheel's tree it builds; ``tests/unit/test_one_look.py`` fails when a
committed copy differs. ``--check``: say which copies differ, change nothing (exit 1 if any).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "style" / "havre.css"
#: the copies, relative to the repository (the packages ship them as package data)
COPIES = ("egress/web/static/havre.css", "spawner/static/havre.css", "havre/idp/static/havre.css")


def stale(root: Path = REPO) -> list[str]:
    """The copies under ``root`` whose bytes differ from ``root/style/havre.css``."""
    source = (root / "style" / "havre.css").read_bytes()
    return [c for c in COPIES if not (root / c).is_file() or (root / c).read_bytes() != source]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        differ = stale()
        for copy in differ:
            print(f"{copy} differs from style/havre.css: python scripts/sync_style.py")
        return 1 if differ else 0
    for copy in COPIES:
        shutil.copyfile(SOURCE, REPO / copy)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
