#!/usr/bin/env bash
# Lock every image's Python dependencies: one command, its output checked in.
#
#   bash scripts/lock-dependencies.sh [build|hub|egress|notebook]...
#
# For each image (default: all four), resolves images/requirements/NAME.txt (the pinned
# top-level packages a person edits) for the image's platform -- Debian 12's CPython 3.11.2 on
# manylinux x86_64, binary wheels only; the build backend for this host -- with `pip download`,
# and writes images/requirements/NAME.lock: every package of the closure pinned to one version
# with the sha256 of the one wheel the image installs, plus the sha256 of NAME.txt it was made
# from. images/build.sh refuses a stale lock, downloads with `pip download --require-hashes`,
# checks every wheel in images/.wheels/NAME against the lock before a build, and the images
# install with `pip install --require-hashes`. Needs the package index (run it on a connected
# host, review the diff, commit it).
#
# Environment: PYTHON  the Python whose pip downloads (default: .venv/bin/python, else python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
# shellcheck source=images/lib/wheels.sh
. "$REPO/images/lib/wheels.sh"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

die() { printf 'lock-dependencies.sh: error: %s\n' "$*" >&2; exit 1; }

names=("$@")
((${#names[@]})) || names=(build hub egress notebook)
for name in "${names[@]}"; do
    [[ -f "$REPO/images/requirements/$name.txt" ]] \
        || die "no images/requirements/$name.txt (choose from build, hub, egress, notebook)"
done

tmp="$(mktemp -d /tmp/havre-lock.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
for name in "${names[@]}"; do
    req="$REPO/images/requirements/$name.txt"
    if [[ "$name" == build ]]; then flags=(--only-binary=:all:); else flags=("${HAVRE_PIP_TARGET_FLAGS[@]}"); fi
    printf '==> locking %s: pip download -r images/requirements/%s.txt\n' "$name" "$name" >&2
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --dest "$tmp/$name" \
        "${flags[@]}" -r "$req" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) \
        || die "pip download for $name failed (the package index is needed to make a lock)"
    havre_write_lock "$req" "$tmp/$name" >"$tmp/$name.lock"
    mv "$tmp/$name.lock" "$REPO/images/requirements/$name.lock"
    printf '==> images/requirements/%s.lock: %s packages\n' "$name" \
        "$(grep -c '^[A-Za-z0-9]' "$REPO/images/requirements/$name.lock")" >&2
done
