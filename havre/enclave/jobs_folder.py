"""The re-execution jobs folder's layout: the host launcher makes it, the egress service and
the re-execution runner share it (the protocol on top: :mod:`egress.reexecution.jobs`)."""

from __future__ import annotations

import os
from pathlib import Path

#: the folders under the jobs folder (what each holds: :mod:`egress.reexecution.jobs`)
JOBS_SUBFOLDERS = ("inbox", "running", "results", "work")


def prepare_jobs_folder(
    root: str | os.PathLike[str], *, uid: int | None = None, gid: int | None = None
) -> None:
    """Create the folders (mode 2770; owned by ``uid:gid`` when given and allowed)."""
    root = Path(root)
    for folder in (root, *(root / s for s in JOBS_SUBFOLDERS)):
        folder.mkdir(mode=0o770, parents=True, exist_ok=True)
        if uid is not None and gid is not None and os.geteuid() == 0:
            os.chown(folder, uid, gid)
        os.chmod(folder, 0o2770)
