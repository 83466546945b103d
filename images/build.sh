#!/usr/bin/env bash
# Build Havre's container images.
#
#   bash images/build.sh [--only base|notebook|hub|egress|desktop]... [--check-wheels]
#
# --check-wheels: fetch (or keep) the wheels and check them against the lock files, build nothing.
# Tags: havre/base:bookworm, havre/notebook:VERSION, havre/hub:VERSION, havre/egress:VERSION,
# havre/desktop:VERSION (the remote desktop of `access: desktop` projects: Debian packages only)
# (VERSION from pyproject.toml). Idempotent: an existing base image is kept, wheels are
# downloaded only when a lock file changed, and Docker's layer cache makes a run with
# nothing changed quick and leaves every tag where it was. Needs no Python package index once
# images/.wheels is filled, but always a Debian mirror (apt-get runs in the builds); a host with
# neither gets built images from scripts/offline-bundle.sh. See images/README.md.
#
# Environment:
#   HAVRE_BASE_IMAGE       use this image as the base (tagged havre/base:bookworm) instead of
#                          debootstrap; pulled only if it is not present locally.
#   HAVRE_DEBIAN_MIRROR    Debian mirror for debootstrap (default: from /etc/apt sources).
#   HAVRE_DEBIAN_SECURITY_MIRROR   mirror for bookworm-security (default: from /etc/apt sources).
#   HAVRE_HUB_CONFIG       jupyterhub_config.py to put in the hub image
#                          (default: jupyterhub_config.py at the repository root).
#   HAVRE_BUILD_NETWORK    docker build --network for the RUN steps (e.g. host, for an engine
#                          started with --bridge none); default: the engine's bridge.
#   DOCKER_HOST            the Docker engine to build in (the docker client's own variable).
#   PYTHON                 host Python whose pip downloads wheels (default: python3).
set -euo pipefail

IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$IMAGES_DIR/.." && pwd)"
readonly IMAGES_DIR REPO
cd "$REPO"

readonly BASE_TAG="havre/base:bookworm"
readonly SUITE="bookworm"
readonly WHEELS="$IMAGES_DIR/.wheels"
readonly CONTEXTS="$IMAGES_DIR/.context"
readonly SBOMS="$IMAGES_DIR/sbom"
PYTHON="${PYTHON:-python3}"

# The image platform's pip flags, lock files and the wheel check (shared with
# scripts/lock-dependencies.sh).
# shellcheck source=images/lib/wheels.sh
. "$IMAGES_DIR/lib/wheels.sh"
readonly PIP_TARGET_FLAGS=("${HAVRE_PIP_TARGET_FLAGS[@]}")
# Progress lines (step, elapsed, what is waited on) on a terminal only.
# shellcheck source=scripts/lib/progress.sh
. "$REPO/scripts/lib/progress.sh"
havre_progress_start "images/build.sh"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'images/build.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,27s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------------------------------------
# Arguments
selected=()
check_only=false
while (($#)); do
    case "$1" in
        --only)
            (($# >= 2)) || die "--only needs an image name (base, notebook, hub, egress, desktop)"
            selected+=("$2"); shift 2 ;;
        --only=*)
            selected+=("${1#--only=}"); shift ;;
        --check-wheels)
            check_only=true; shift ;;
        -h|--help)
            usage; exit 0 ;;
        *)
            die "unknown argument: $1 (usage: bash images/build.sh [--only base|notebook|hub|egress|desktop]...)" ;;
    esac
done
for name in "${selected[@]+"${selected[@]}"}"; do
    case "$name" in
        base|notebook|hub|egress|desktop) ;;
        *) die "unknown image '$name' (choose from base, notebook, hub, egress, desktop)" ;;
    esac
done
((${#selected[@]})) || selected=(base notebook hub egress desktop)
wanted() {
    local name
    for name in "${selected[@]}"; do [[ "$name" == "$1" ]] && return 0; done
    return 1
}

# ---------------------------------------------------------------------------------------------
# Facts from the repository
VERSION="$(awk -F'"' '
    /^\[/ { in_project = ($0 == "[project]") }
    in_project && /^version[ \t]*=/ { print $2; exit }' pyproject.toml)"
[[ -n "$VERSION" ]] || die "cannot read the version from $REPO/pyproject.toml"
readonly VERSION

HUB_CONFIG="${HAVRE_HUB_CONFIG:-$REPO/jupyterhub_config.py}"
if wanted hub && ! $check_only && [[ ! -f "$HUB_CONFIG" ]]; then
    die "the hub image needs $HUB_CONFIG (copied to /srv/havre/jupyterhub_config.py), and it does not exist.
Write jupyterhub_config.py at the repository root (or point HAVRE_HUB_CONFIG at one), or build
the other images with: bash images/build.sh --only base --only notebook --only egress"
fi

if ! $check_only; then
    command -v docker >/dev/null || die "the docker client is not installed"
    docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine${DOCKER_HOST:+ at $DOCKER_HOST} (is dockerd running?)"
fi
# Without buildx, a recent docker client refuses DOCKER_BUILDKIT=1 and warns otherwise; the
# Dockerfiles work with both builders.
if [[ -z "${DOCKER_BUILDKIT:-}" ]] && ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
DOCKER_BUILD_FLAGS=()
if [[ "${DOCKER_BUILDKIT:-}" == 0 ]]; then
    # The legacy builder leaves the container of a failed step behind unless told otherwise.
    DOCKER_BUILD_FLAGS+=(--force-rm)
fi
if [[ -n "${HAVRE_BUILD_NETWORK:-}" ]]; then
    # an engine started with --bridge none (a second engine on the host) builds with --network host
    DOCKER_BUILD_FLAGS+=(--network "$HAVRE_BUILD_NETWORK")
fi

mkdir -p "$WHEELS" "$CONTEXTS"
# One build at a time on this checkout.
if command -v flock >/dev/null; then
    exec 9>"$CONTEXTS/.lock"
    if ! flock -n 9; then
        say "another images/build.sh holds $CONTEXTS/.lock; waiting for it"
        flock 9
    fi
fi

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# 1. Base image
first_uri() {   # first URI of a deb822 stanza (or one-line entry) whose suites match $2
    local file="$1" want="$2"
    [[ -f "$file" ]] || return 0
    case "$file" in
        *.sources)
            awk -v want="$want" '
                function flush() { if (uri != "" && suites ~ want && !done) { print uri; done = 1 }
                                   uri = ""; suites = "" }
                /^[ \t]*$/ { flush(); next }
                tolower($1) == "uris:"   { uri = $2 }
                tolower($1) == "suites:" { suites = $0 }
                END { flush() }' "$file" ;;
        *)
            awk -v want="$want" '$1 == "deb" && $0 ~ want {
                for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$file" ;;
    esac
}

debian_mirrors() {
    local file main="" security=""
    for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -n "$main" ]] || main="$(first_uri "$file" "[ \t]${SUITE}([ \t]|\$)" | head -n1)"
        [[ -n "$security" ]] || security="$(first_uri "$file" "${SUITE}-security" | head -n1)"
    done
    MIRROR="${HAVRE_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian}}"
    MIRROR="${MIRROR%/}"
    if [[ -z "${HAVRE_DEBIAN_SECURITY_MIRROR:-}" && -z "$security" && "$MIRROR" == */debian ]]; then
        security="${MIRROR}-security"
    fi
    SECURITY_MIRROR="${HAVRE_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security}}"
    SECURITY_MIRROR="${SECURITY_MIRROR%/}"
}

debootstrap_base() {
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
    fi
    debian_mirrors
    local rootfs
    rootfs="$(mktemp -d /tmp/havre-rootfs.XXXXXX)"
    # shellcheck disable=SC2064
    trap "rm -rf '$rootfs'" EXIT
    say "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
        || { tail -n 30 "$rootfs.log" >&2; die "debootstrap failed (full log: $rootfs.log)"; }
    rm -f "$rootfs.log"

    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # Container conventions, as in Debian's own images: no package caches or indexes kept
    # in layers, no documentation, manuals or translations installed.
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-no-languages" <<'EOF'
Acquire::Languages "none";
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests" <<'EOF'
Apt::AutoRemove::SuggestsImportant "false";
EOF
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
           "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/*
    find "$rootfs/usr/share/doc" -mindepth 2 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    # Docker supplies these at run time; do not carry the build host's.
    : >"$rootfs/etc/resolv.conf"
    echo localhost >"$rootfs/etc/hostname"

    say "importing the root filesystem as $BASE_TAG"
    tar -C "$rootfs" --numeric-owner -c . \
        | docker import -c 'CMD ["/bin/bash"]' -m "debootstrap --variant=minbase $SUITE $MIRROR" - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
}

ensure_base() {
    if [[ -n "${HAVRE_BASE_IMAGE:-}" ]]; then
        if ! image_exists "$HAVRE_BASE_IMAGE"; then
            say "HAVRE_BASE_IMAGE=$HAVRE_BASE_IMAGE is not present locally; pulling it"
            docker pull "$HAVRE_BASE_IMAGE"
        fi
        docker tag "$HAVRE_BASE_IMAGE" "$BASE_TAG"
        say "$BASE_TAG <- $HAVRE_BASE_IMAGE"
        return
    fi
    # Someone else may be making it right now (another debootstrap on this host): wait for
    # it instead of racing it, for at most 15 minutes.
    local waited=0
    while ! image_exists "$BASE_TAG" && pgrep -x debootstrap >/dev/null && ((waited < 900)); do
        ((waited == 0)) && say "a debootstrap is running on this host; waiting for $BASE_TAG"
        sleep 5; waited=$((waited + 5))
    done
    if image_exists "$BASE_TAG"; then
        say "$BASE_TAG exists; kept"
        return
    fi
    debootstrap_base
}

# ---------------------------------------------------------------------------------------------
# 2. Wheels
pip_quiet() {   # pip, minus the noise of this host's extra file:// indexes
    "$PYTHON" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# download_wheels NAME [pip flags...]: fill $WHEELS/NAME from images/requirements/NAME.lock
# (pip download --require-hashes: a file whose sha256 is not locked is refused), unless its
# stamp says it was filled from the same lock with the same flags; then check every wheel in
# the folder against the lock, so a wheel swapped in the folder afterwards is refused too.
download_wheels() {
    local name="$1"; shift
    local req="$IMAGES_DIR/requirements/$name.txt" lock="$IMAGES_DIR/requirements/$name.lock"
    local dest="$WHEELS/$name" stamp want
    havre_step "wheels for $name" "images/requirements/$name.lock"
    [[ -f "$lock" ]] || die "images/requirements/$name.lock is missing: run bash scripts/lock-dependencies.sh $name (on a host with the package index) and commit it."
    if [[ "$(havre_lock_source "$lock")" != "$(sha256sum <"$req" | cut -d' ' -f1)" ]]; then
        die "images/requirements/$name.txt changed since images/requirements/$name.lock was made: run bash scripts/lock-dependencies.sh $name, review the diff and commit both."
    fi
    want="$( { sha256sum <"$lock"; printf '%s\n' "$@"; } | sha256sum | cut -d' ' -f1)"
    stamp="$dest/.requirements.sha256"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "wheels for $name: ${lock#"$REPO"/} unchanged; kept images/.wheels/$name"
    else
        say "downloading wheels for $name from ${lock#"$REPO"/} (hashes required)"
        rm -rf "$dest.partial"
        if ! havre_wait_on "pip download of images/requirements/$name.lock" pip_quiet download --quiet --disable-pip-version-check --require-hashes \
                --dest "$dest.partial" "$@" -r "$lock"; then
            rm -rf "$dest.partial"
            die "pip download for $name failed (above: a file whose hash is not in ${lock#"$REPO"/} is refused). Offline? Copy images/.wheels from a host that built
the same lock files (see images/README.md)."
        fi
        rm -rf "$dest"
        mv "$dest.partial" "$dest"
        echo "$want" >"$stamp"
    fi
    local problem
    if ! problem="$(havre_check_wheels "$lock" "$dest")"; then
        die "$problem"
    fi
    say "wheels for $name: every file matches ${lock#"$REPO"/}"
}

# copy_checkout DEST: the tracked and untracked-but-not-ignored files of the checkout, minus
# images/, so stale build/ or *.egg-info directories in the checkout never leak into a wheel.
copy_checkout() {
    local dest="$1"
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$REPO" ls-files -z --cached --others --exclude-standard \
            | grep -zv '^images/' \
            | tar -C "$REPO" --null --ignore-failed-read -T - -cf - \
            | tar -C "$dest" -xf -
    else
        tar -C "$REPO" --exclude=./images --exclude=./.git --exclude=./build --exclude='*.egg-info' \
            --exclude=__pycache__ -cf - . | tar -C "$dest" -xf -
    fi
}

# build_wheel DIST SRC: build the wheel of distribution DIST (its file name's prefix, e.g.
# havre or havre_researcher) from the source tree SRC into $WHEELS/DIST/, keeping the file
# there if the new one is the same bytes. Removes SRC.
build_wheel() {
    local dist="$1" src="$2" out wheel
    out="$(mktemp -d /tmp/havre-wheel.XXXXXX)"
    # A fixed SOURCE_DATE_EPOCH makes the wheel byte-for-byte reproducible, so unchanged
    # sources keep Docker's cache (and the image ids) as they were.
    if ! SOURCE_DATE_EPOCH=315532800 pip_quiet wheel --quiet --no-deps --no-index \
            --find-links "$WHEELS/build" -w "$out" "$src"; then
        rm -rf "$src" "$out"
        die "building the $dist wheel failed"
    fi
    wheel="$(find "$out" -name "$dist-*.whl" | head -n1)"
    [[ -n "$wheel" ]] || die "pip wheel produced no $dist wheel"
    mkdir -p "$WHEELS/$dist"
    if [[ -f "$WHEELS/$dist/${wheel##*/}" ]] && cmp -s "$wheel" "$WHEELS/$dist/${wheel##*/}"; then
        say "$dist wheel: unchanged (${wheel##*/})"
    else
        rm -f "$WHEELS/$dist/$dist"-*.whl
        cp "$wheel" "$WHEELS/$dist/"
        say "$dist wheel: built ${wheel##*/}"
    fi
    rm -rf "$src" "$out"
}

# Havre's whole wheel (pyproject.toml): the hub and egress images.
build_havre_wheel() {
    local src
    src="$(mktemp -d /tmp/havre-src.XXXXXX)"
    copy_checkout "$src"
    # the one stylesheet: each service's copy made from style/havre.css at build time
    "$PYTHON" "$src/scripts/sync_style.py" || die "copying style/havre.css to the services failed"
    build_wheel havre "$src"
}

# The researcher distribution (images/researcher/pyproject.toml): the notebook image. Only
# the folders it packages are copied, so nothing else of the checkout can reach it.
build_researcher_wheel() {
    local src all part
    all="$(mktemp -d /tmp/havre-src.XXXXXX)"
    src="$(mktemp -d /tmp/havre-researcher-src.XXXXXX)"
    copy_checkout "$all"
    for part in havre/__init__.py havre/enclave havre/sdc havre/safe havre/notebook egress/safe/__init__.py; do
        [[ -e "$all/$part" ]] || die "the researcher distribution needs $part, which is not in the checkout"
        mkdir -p "$src/$(dirname "$part")"
        cp -a "$all/$part" "$src/$part"
    done
    rm -rf "$all"
    find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
    cp "$IMAGES_DIR/researcher/pyproject.toml" "$src/pyproject.toml"
    build_wheel havre_researcher "$src"
}

# ---------------------------------------------------------------------------------------------
# 3. Images
make_context() {   # make_context NAME: assemble $CONTEXTS/NAME (the image's folder, its wheels)
    local name="$1" ctx="$CONTEXTS/$1"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp -a "$IMAGES_DIR/$name/." "$ctx/"
    if [[ "$name" == desktop ]]; then
        return 0   # Debian packages and the files of images/desktop: no wheels, no Havre code
    fi
    # the lock, not the top-level list: the image installs with --require-hashes
    cp "$IMAGES_DIR/requirements/$name.lock" "$ctx/requirements.txt"
    # Hard links: instant, and no second copy of a few hundred MB of wheels.
    cp -al "$WHEELS/$name" "$ctx/wheels" 2>/dev/null || cp -a "$WHEELS/$name" "$ctx/wheels"
    rm -f "$ctx/wheels/.requirements.sha256"
    mkdir -p "$ctx/havre"
    if [[ "$name" == notebook ]]; then
        # researchers' containers get the researcher distribution only
        cp "$WHEELS"/havre_researcher/havre_researcher-*.whl "$ctx/havre/"
        # Havre's JupyterLab extension, built and committed at development time
        # (scripts/build-labextension.sh): static files only, no Node.js here
        cp -a "$REPO/labextension/prebuilt" "$ctx/labextension"
    else
        cp "$WHEELS"/havre/havre-*.whl "$ctx/havre/"
    fi
    if [[ "$name" == hub ]]; then
        cp "$HUB_CONFIG" "$ctx/jupyterhub_config.py"
    fi
}

build_image() {   # build_image NAME
    local name="$1" tag="havre/$1:$VERSION"
    make_context "$name"
    say "building $tag"
    havre_step "building $tag" "docker build${DOCKER_HOST:+ at $DOCKER_HOST}"
    havre_wait_on "docker build of $tag" docker build "${DOCKER_BUILD_FLAGS[@]+"${DOCKER_BUILD_FLAGS[@]}"}" \
        --build-arg BASE_IMAGE="$BASE_TAG" \
        --build-arg HAVRE_VERSION="$VERSION" \
        -t "$tag" \
        -f "$CONTEXTS/$name/Dockerfile" \
        "$CONTEXTS/$name"
    built+=("$tag")
    if [[ "$name" != desktop ]]; then   # the desktop has no Python environment to list
        write_sbom "$name" "$tag"
    fi
}

# write_sbom NAME TAG: images/sbom/NAME.cdx.json, the CycloneDX SBOM of what pip lists inside
# the built image, with the locked hashes and the image id it describes (havre/host/sbom.py).
write_sbom() {
    local name="$1" tag="$2" id packages
    havre_step "SBOM of $tag" "pip list in the image, cyclonedx-py"
    id="$(docker image inspect -f '{{.Id}}' "$tag")"
    packages="$(mktemp /tmp/havre-sbom-packages.XXXXXX)"
    if ! docker run --rm --network none --user 0 --entrypoint /opt/havre/venv/bin/python "$tag" \
            -m pip list --format=freeze --disable-pip-version-check >"$packages"; then
        rm -f "$packages"
        die "could not list the Python packages of $tag for its SBOM"
    fi
    local wheels=()
    for whl in "$CONTEXTS/$name"/havre/*.whl; do wheels+=(--wheel "$whl"); done
    mkdir -p "$SBOMS"
    if ! PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m havre.host.sbom write \
            --name "$name" --tag "$tag" --image-id "$id" --packages "$packages" \
            --lock "$IMAGES_DIR/requirements/$name.lock" "${wheels[@]}" \
            --output "$SBOMS/$name.cdx.json" >/dev/null; then
        rm -f "$packages"
        die "writing the SBOM of $tag failed (is cyclonedx-bom installed in $PYTHON? pip install 'havre[cli]')"
    fi
    rm -f "$packages"
    say "SBOM: images/sbom/$name.cdx.json ($tag, image ${id:7:12})"
}

# ---------------------------------------------------------------------------------------------
started=$SECONDS
built=()

if ! $check_only; then
    havre_step "base image" "$BASE_TAG"
    ensure_base
    built+=("$BASE_TAG")
fi

app_images=()
for name in notebook hub egress; do
    if wanted "$name"; then app_images+=("$name"); fi
done

if ((${#app_images[@]})); then
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (set PYTHON=...)"
    download_wheels build --only-binary=:all:
    for name in "${app_images[@]}"; do
        download_wheels "$name" "${PIP_TARGET_FLAGS[@]}"
    done
    if $check_only; then
        say "wheels checked against the lock files; nothing built (--check-wheels)"
        havre_progress_done "wheels checked"
        exit 0
    fi
    if wanted hub || wanted egress; then havre_step "Havre's wheel"; build_havre_wheel; fi
    if wanted notebook; then build_researcher_wheel; fi
    for name in "${app_images[@]}"; do
        build_image "$name"
    done
fi

# The desktop: Debian packages and the files of images/desktop, no wheels, no Havre code.
if wanted desktop; then
    build_image desktop
fi

echo
printf '%-24s %-12s %s\n' IMAGE ID SIZE
for tag in "${built[@]}"; do
    read -r id size < <(docker image inspect -f '{{.Id}} {{.Size}}' "$tag")
    id="${id#sha256:}"
    printf '%-24s %-12s %s MB\n' "$tag" "${id:0:12}" "$((size / 1000000))"
done
havre_progress_done "done: ${#built[@]} image(s)"
say "done in $((SECONDS - started)) s"
