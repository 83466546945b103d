"""A filesystem of its own for each project's homes and outputs (``enclave.project_filesystems:
loop``).

Free-inode and free-block counts (``statvfs``, ``df``) are the filesystem's, not the
container's: two servers whose folders sit on one host filesystem see each other's file
creations in those counts, a slow covert channel between projects (measured in
``tests/integration/test_side_channels.py``). With this option ``havre up`` gives each project
an ext4 image (``<state_dir>/filesystems/<slug>.ext4``, ``project_filesystem_size`` bytes,
allocated up front so that writing in it doesn't change the host's free-block count),
loop-mounted ``nosuid,nodev`` at ``<state_dir>/filesystems/<slug>``, whose ``homes`` and
``outputs`` folders are bind-mounted over ``projects/<slug>/homes`` and ``.../outputs``. A
project then sees only its own members' activity in those counts, and fills only its own
space (a full home no longer fills the host's disk, nor changes the host's free-space
count that every container reads with ``statvfs("/")``).

Needs root, ``losetup``, ``mkfs.ext4`` and free loop devices (:func:`loop_problem` says what is
missing). Mounts don't survive a reboot: ``havre up`` makes them again, and the Ansible task
``ansible/tasks/project-filesystems.yml`` writes them to ``/etc/fstab`` so that they exist
before Docker starts the enclave's containers. The project's data is not moved (it is
read-only to the servers: its counts don't change).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

#: folders of a project that live on its own filesystem
ON_PROJECT_FILESYSTEM = ("homes", "outputs")
MOUNT_OPTIONS = "loop,nosuid,nodev"


class FilesystemError(RuntimeError):
    """A project filesystem can't be made or mounted; the message says why and what to do."""


def loop_problem() -> str | None:
    """Why this host can't give projects loop filesystems (None: it can)."""
    if os.geteuid() != 0:
        return "loop filesystems need root (havre up runs as root)"
    for tool in ("losetup", "mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: util-linux, e2fsprogs)"
    found = subprocess.run(["losetup", "-f"], capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return f"no free loop device ({found.stderr.strip() or 'losetup -f failed'})"
    return None


def is_mountpoint(path: Path) -> bool:
    """Whether ``path`` is a mount point (read from /proc/self/mountinfo, no link followed)."""
    target = str(Path(path).resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == target:
                return True
    return False


def mount_id(path: Path) -> str:
    """The kernel's id of the mount at ``path`` ("" when it is none); a new mount, after a
    reboot for instance, has a new id."""
    target = str(Path(path).resolve())
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        found = ""
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == target:
                found = fields[0]  # the last one listed is the one on top
    return found


def mounts_digest(project_dirs: list[Path]) -> str:
    """The ids of the projects' bind mounts, for the digests of the containers that mount
    ``projects/`` (the broker, the egress service): a container started before the mounts
    were made (after a reboot, Docker restarts it before ``havre up`` mounts them) sees the
    folders underneath, so ``havre up`` must replace it. Docker's mount propagation would
    need the host's root to be a shared mount, which not every host has."""
    return ",".join(mount_id(d / name) for d in project_dirs for name in ON_PROJECT_FILESYSTEM)


def generation_path(state_dir: Path, slug: str) -> Path:
    """A token renewed each time ``havre up`` binds the project's folders: the kernel reuses
    freed mount ids, so a remount after a reboot may carry the ids of the old mounts."""
    return Path(state_dir) / "filesystems" / f"{slug}.generation"


def mounts_generation(state_dir: Path, slug: str) -> str:
    """The project's current bind generation ("" before the first bind)."""
    try:
        return generation_path(state_dir, slug).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def _new_generation(state_dir: Path, slug: str) -> None:
    path = generation_path(state_dir, slug)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(16) + "\n")
    os.replace(tmp, path)


def _run(*cmd: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FilesystemError(
            f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[:300]}"
        )


def image_path(state_dir: Path, slug: str) -> Path:
    return Path(state_dir) / "filesystems" / f"{slug}.ext4"


def mount_path(state_dir: Path, slug: str) -> Path:
    return Path(state_dir) / "filesystems" / slug


def ensure_project_filesystem(
    state_dir: Path, project_dir: Path, slug: str, size_bytes: int, changes: list[str]
) -> Path:
    """Make, mount and bind the project's filesystem (nothing when it already is); its root.

    Existing homes and outputs (from the shared filesystem) are copied into a new image
    before it is bound over them, keeping owners and modes; the old copies stay underneath,
    hidden by the bind mount (remove them once the move is checked; see
    docs/sysadmin/enclave-config.md).
    """
    problem = loop_problem()
    if problem:
        raise FilesystemError(
            f"project_filesystems is 'loop' but {problem}; set it to 'shared' or fix the host."
        )
    image, mnt = image_path(state_dir, slug), mount_path(state_dir, slug)
    image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(image.parent, 0o711)  # the daemon resolves binds as root; nobody lists it
    fresh = not image.exists()
    if fresh:
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # allocated now, not sparse: a project's writes must not show in the host's
            # free-block count (which every container reads with statvfs("/"))
            os.posix_fallocate(fd, 0, size_bytes)
        except OSError as err:
            os.close(fd)
            image.unlink()
            raise FilesystemError(
                f"can't allocate {size_bytes} bytes for {image}: {err.strerror}; free space "
                "or lower enclave.project_filesystem_size."
            ) from None
        else:
            os.close(fd)
        _run("mkfs.ext4", "-q", "-F", "-m", "0", "-L", f"havre-{slug}"[:16], str(image))
        changes.append(f"made the filesystem image {image} ({size_bytes} bytes)")
    mnt.mkdir(mode=0o700, exist_ok=True)
    if not is_mountpoint(mnt):
        _run("mount", "-o", MOUNT_OPTIONS, str(image), str(mnt))
        os.chmod(mnt, 0o711)
        changes.append(f"mounted {image} at {mnt}")
    for name in ON_PROJECT_FILESYSTEM:
        inside, target = mnt / name, project_dir / name
        target.mkdir(parents=True, exist_ok=True)
        if not inside.exists():
            inside.mkdir()
            if not is_mountpoint(target) and any(target.iterdir()):
                _run("cp", "-a", f"{target}/.", f"{inside}/")
                changes.append(f"copied {target} into the project's filesystem")
            st = target.stat()
            os.chown(inside, st.st_uid, st.st_gid)
            os.chmod(inside, st.st_mode & 0o7777)
        if not is_mountpoint(target):
            _run("mount", "--bind", str(inside), str(target))
            changes.append(f"bound {inside} over {target}")
            _new_generation(state_dir, slug)
    return mnt


def release_project_filesystem(state_dir: Path, project_dir: Path, slug: str) -> None:
    """Unmount the binds and the image (``havre down --purge``); the image file stays."""
    for name in ON_PROJECT_FILESYSTEM:
        target = project_dir / name
        if is_mountpoint(target):
            _run("umount", str(target))
    mnt = mount_path(state_dir, slug)
    if is_mountpoint(mnt):
        _run("umount", str(mnt))
