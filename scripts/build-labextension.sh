#!/usr/bin/env bash
# Build Havre's JupyterLab extension (labextension/, "havre-lab") into labextension/prebuilt/.
#
#   bash scripts/build-labextension.sh
#
# Run at development time, after editing labextension/src/ or labextension/package.json; commit
# labextension/prebuilt/ with the change. The notebook image copies prebuilt/ as it is (no
# Node.js in the image, no npm registry when images are built or tests run).
# tests/unit/test_labextension.py fails when the sources and the build disagree: the build
# records the sha256 of both in prebuilt/havre-build.sha256.
#
# Needs: Node.js (Debian's nodejs; installed with apt-get when missing and we are root), the
# Python package index (a throw-away venv with the notebook image's jupyterlab, for jlpm and
# JupyterLab's core package list) and the npm registry (@jupyterlab/builder, per yarn.lock).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXT="$REPO/labextension"
CACHE="${HAVRE_LABEXT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/havre/labextension}"
LOCK="$REPO/images/requirements/notebook.lock"

say() { printf 'build-labextension: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if ! command -v node >/dev/null; then
    [[ $(id -u) == 0 ]] || die "Node.js is missing: apt-get install nodejs (as root), then run this again"
    say "installing Debian's nodejs"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs >/dev/null
fi

# JupyterLab: the version the notebook image ships (its lock), so the extension is built
# against the same core packages (shared modules) the image's JupyterLab provides.
LAB_VERSION="$(sed -n 's/^jupyterlab==\([0-9.]*\).*/\1/p' "$LOCK")"
[[ -n "$LAB_VERSION" ]] || die "no jupyterlab== line in $LOCK"
VENV="$CACHE/venv-$LAB_VERSION"
if [[ ! -x "$VENV/bin/jlpm" ]]; then
    say "a venv with jupyterlab $LAB_VERSION (for jlpm and the core package list) in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "jupyterlab==$LAB_VERSION"
fi
CORE="$("$VENV/bin/python" -c 'import jupyterlab, os; print(os.path.join(os.path.dirname(jupyterlab.__file__), "staging"))')"

cd "$EXT"
say "jlpm install (yarn.lock)"
"$VENV/bin/jlpm" install --immutable >/dev/null || "$VENV/bin/jlpm" install
rm -rf prebuilt
say "building against JupyterLab $LAB_VERSION's core packages"
# @jupyterlab/builder's own entry point: `jupyter labextension build` in JupyterLab 4.6 hands
# over to the jupyter-builder tool, which wants to download a core-meta package instead.
node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path "$CORE" . >/dev/null

"$VENV/bin/python" - "$EXT" "$LAB_VERSION" <<'PY'
import hashlib, sys
from pathlib import Path

ext, lab = Path(sys.argv[1]), sys.argv[2]

def digest(root, paths):
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()

sources = [ext / "package.json", ext / "yarn.lock", *sorted((ext / "src").rglob("*.js"))]
built = [p for p in (ext / "prebuilt").rglob("*") if p.is_file()]
record = ext / "prebuilt" / "havre-build.sha256"
record.write_text(
    f"sources {digest(ext, sources)}\nprebuilt {digest(ext / 'prebuilt', built)}\n"
    f"jupyterlab {lab}\n"
)
PY
say "built: $(du -sb prebuilt | cut -f1) bytes in labextension/prebuilt ($(ls prebuilt/static | wc -l) files)"
