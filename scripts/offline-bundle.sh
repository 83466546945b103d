#!/usr/bin/env bash
# Install Havre on a Debian 12 host that has no package index: an offline bundle.
#
#   bash scripts/offline-bundle.sh export DIR     # connected Debian 12 host, as root, images built
#   bash DIR/offline-bundle.sh verify DIR         # anywhere: check the MANIFEST, change nothing
#   bash DIR/offline-bundle.sh install DIR [--no-images]   # the offline host, as root
#
# export writes DIR with:
#   images/havre-images-VERSION.tar.gz  docker save of havre/base:bookworm and the notebook, hub
#                                       and egress images of pyproject.toml's version, gzipped
#   wheels/                             the wheels of the host's virtualenv (havre[cli], Ansible,
#                                       pip, the build backend) for Debian 12's CPython 3.11
#   debs/                               the Debian packages the install needs (Docker Engine,
#                                       iptables, Python's venv, ...) with their whole Depends,
#                                       Pre-Depends and Recommends closure for a fresh Debian 12,
#                                       and a Packages index: a local apt repository
#   source/havre-src-VERSION.tar.gz     the repository at the current commit (git archive)
#   offline-bundle.sh                   this script
#   MANIFEST                            versions (# lines) and the sha256 of every other file
# install verifies the MANIFEST first (a changed, missing or extra file: refused, nothing
# touched), then installs the packages with apt from the bundle only, makes the virtualenv with
# pip --no-index, unpacks the source, loads the images and prints the next step.
#
# Environment (export):
#   HAVRE_BUNDLE_IMAGES     images to save, from: base notebook hub egress (default: all four;
#                           "none" for none). The tests save only "base".
#   HAVRE_DEBIAN_MIRROR, HAVRE_DEBIAN_SECURITY_MIRROR   Debian mirrors (default: the host's apt
#                           sources for bookworm, else deb.debian.org).
#   PYTHON                  the Python whose pip downloads the wheels (default: .venv/bin/python,
#                           else python3).
# Environment (install):
#   HAVRE_VENV_DIR (/opt/havre/venv), HAVRE_SOURCE_DIR (/opt/havre/src),
#   HAVRE_WHEELS_DIR (/opt/havre/wheels: kept for later pip runs in the venv, e.g. upgrade.yml)
#   HAVRE_BUNDLE_SHA256     refuse unless the MANIFEST's own sha256 is this (printed by export).
set -euo pipefail

readonly SUITE=bookworm
readonly ARCH=amd64
# What the install needs from Debian (the scripts in scripts/lib and the Ansible roles):
# Docker Engine and iptables (docker-engine.sh, havre_docker_host), Python with venv
# (python-env.sh; the roles' virtualenv and havre_archive.py), python3-apt (Ansible's apt and
# package_facts modules), openssl (havre_enclave's self-signed certificate), iproute2,
# ca-certificates, and age (havre_backup's encrypted archives). Installed with their
# Recommends, as apt-get does on the connected path.
readonly DEB_PACKAGES=(docker.io iptables python3 python3-venv python3-apt iproute2 openssl ca-certificates age)
# Debian 12's python3 is 3.11.2 on glibc 2.36 (the same targets as images/build.sh; a copy on
# purpose: this script travels alone in the bundle, as /bundle/offline-bundle.sh).
PIP_TARGET_FLAGS=(--python-version 3.11.2 --implementation cp --only-binary=:all:)
for glibc_minor in $(seq 36 -1 17); do
    PIP_TARGET_FLAGS+=(--platform "manylinux_2_${glibc_minor}_x86_64")
done
PIP_TARGET_FLAGS+=(--platform manylinux2014_x86_64)
readonly PIP_TARGET_FLAGS

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'offline-bundle.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,31s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

need_root() {
    [[ "$(id -u)" == 0 ]] || die "run $1 as root (it $2)."
}

check_debian12() {   # the bundle is for Debian 12 amd64, made on and installed on one
    local id="" codename="" arch
    if [[ -r /etc/os-release ]]; then
        id="$(. /etc/os-release && echo "${ID:-}")"
        codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    fi
    arch="$(dpkg --print-architecture 2>/dev/null || echo unknown)"
    if [[ "$id" != debian || "$codename" != "$SUITE" || "$arch" != "$ARCH" ]]; then
        die "this host is ${id:-unknown} ${codename:-unknown} ($arch); the offline bundle is for Debian 12 (bookworm) on amd64, and $1 only there."
    fi
}

# ---------------------------------------------------------------------------------------------
# verify DIR: every file listed once with its sha256, nothing unlisted, no symlinks.
verify_bundle() {
    local dir="$1" bad listed actual line sum path expected
    [[ -d "$dir" ]] || die "$dir is not a directory: give the folder that offline-bundle.sh export wrote."
    [[ -f "$dir/MANIFEST" ]] || die "$dir has no MANIFEST: it is not a complete offline bundle (made by offline-bundle.sh export). Nothing was installed."
    if [[ -n "${HAVRE_BUNDLE_SHA256:-}" ]]; then
        sum="$(sha256sum "$dir/MANIFEST" | cut -d' ' -f1)"
        [[ "$sum" == "$HAVRE_BUNDLE_SHA256" ]] \
            || die "the bundle's MANIFEST has sha256 $sum, not the $HAVRE_BUNDLE_SHA256 you expect (HAVRE_BUNDLE_SHA256): refused. Nothing was installed."
    fi
    listed="$(mktemp)"; actual="$(mktemp)"
    # shellcheck disable=SC2064
    trap "rm -f '$listed' '$actual'; trap - RETURN" RETURN
    while IFS= read -r line || [[ -n "$line" ]]; do
        [[ -z "$line" || "$line" == "#"* ]] && continue
        if [[ ! "$line" =~ ^([0-9a-f]{64})\ \ ([A-Za-z0-9._+~=:@%,/-]+)$ ]]; then
            die "the bundle's MANIFEST has a line that is not 'sha256  path' (${line:0:80}): refused. Nothing was installed."
        fi
        path="${BASH_REMATCH[2]}"
        if [[ "$path" == /* || "/$path/" == */../* || "$path" == MANIFEST ]]; then
            die "the bundle's MANIFEST names $path, outside the bundle: refused. Nothing was installed."
        fi
        printf '%s\n' "$path" >>"$listed"
    done <"$dir/MANIFEST"
    [[ -s "$listed" ]] || die "the bundle's MANIFEST lists no file: refused. Nothing was installed."
    bad="$(find "$dir" -mindepth 1 ! -type d ! -type f -printf '%P ' | head -c 200)"
    [[ -z "$bad" ]] \
        || die "the bundle holds something that is not a plain file (${bad% }): refused. Nothing was installed."
    (cd "$dir" && find . -type f ! -path ./MANIFEST -printf '%P\n') | LC_ALL=C sort >"$actual"
    LC_ALL=C sort -o "$listed" "$listed"
    if [[ -n "$(uniq -d "$listed")" ]]; then
        die "the bundle's MANIFEST lists $(uniq -d "$listed" | head -n1) twice: refused. Nothing was installed."
    fi
    local extra missing
    extra="$(LC_ALL=C comm -13 "$listed" "$actual" | head -n 3 | paste -sd ' ' -)"
    missing="$(LC_ALL=C comm -23 "$listed" "$actual" | head -n 3 | paste -sd ' ' -)"
    [[ -z "$missing" ]] \
        || die "the bundle is incomplete: $missing listed in its MANIFEST but missing. Refused; nothing was installed. Copy the whole folder again."
    [[ -z "$extra" ]] \
        || die "the bundle holds $extra, which its MANIFEST does not list (a file added after the export). Refused; nothing was installed."
    local report rc=0
    report="$(cd "$dir" && grep -Ev '^(#|$)' MANIFEST | sha256sum --check --strict --quiet 2>&1)" || rc=$?
    bad="$(printf '%s\n' "$report" | sed -n 's/: FAILED.*$//p' | head -n 3 | paste -sd ' ' -)"
    if ((rc != 0)); then
        die "the bundle does not verify: ${bad:-a file} differs from its MANIFEST (sha256). Refused; nothing was installed. Copy the bundle again from the export host (and compare the MANIFEST's sha256 with the one export printed)."
    fi
    say "bundle verified: $(wc -l <"$listed") files match the MANIFEST (sha256 $(sha256sum "$dir/MANIFEST" | cut -d' ' -f1))"
}

# ---------------------------------------------------------------------------------------------
# export
debian_mirrors() {   # MIRROR and SECURITY_MIRROR from the host's apt sources (or the env)
    local main="" security="" f
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        if [[ "$f" == *.sources ]]; then
            [[ -n "$main" ]] || main="$(awk '/^[ \t]*$/{u="";s=""} tolower($1)=="uris:"{u=$2} tolower($1)=="suites:"{s=$0}
                u!="" && s ~ /[ \t]bookworm([ \t]|$)/ {print u; exit}' "$f")"
            [[ -n "$security" ]] || security="$(awk '/^[ \t]*$/{u="";s=""} tolower($1)=="uris:"{u=$2} tolower($1)=="suites:"{s=$0}
                u!="" && s ~ /bookworm-security/ {print u; exit}' "$f")"
        else
            [[ -n "$main" ]] || main="$(awk '$1=="deb" && $0 ~ /[ \t]bookworm[ \t]/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")"
            [[ -n "$security" ]] || security="$(awk '$1=="deb" && /bookworm-security/ {for(i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")"
        fi
    done
    MIRROR="${HAVRE_DEBIAN_MIRROR:-${main:-http://deb.debian.org/debian}}"
    SECURITY_MIRROR="${HAVRE_DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security}}"
    MIRROR="${MIRROR%/}"; SECURITY_MIRROR="${SECURITY_MIRROR%/}"
}

export_debs() {   # export_debs OUT: the closure, downloaded against an empty dpkg status
    local out="$1" work
    work="$(mktemp -d /tmp/havre-bundle-apt.XXXXXX)"
    mkdir -p "$work/lists/partial" "$work/archives/partial" "$work/parts" "$work/prefs" "$work/cache"
    : >"$work/status"
    debian_mirrors
    local key=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -f "$key" ]] || die "$key is missing (package debian-archive-keyring): the Debian packages could not be checked."
    cat >"$work/sources.list" <<EOF
deb [signed-by=$key] $MIRROR $SUITE main
deb [signed-by=$key] $MIRROR $SUITE-updates main
deb [signed-by=$key] $SECURITY_MIRROR $SUITE-security main
EOF
    # A private apt: only Debian's sources (not the host's other repositories), its own lists,
    # and an empty dpkg status, so the closure is what a fresh Debian 12 needs, whatever this
    # host has installed.
    local apt_opts=(
        -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/parts"
        -o "Dir::Etc::Preferences=$work/prefs/none" -o "Dir::Etc::PreferencesParts=$work/prefs"
        -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=$work/status"
        -o "Dir::Cache=$work/cache" -o "Dir::Cache::archives=$work/archives"
        -o "APT::Architectures=$ARCH" -o "APT::Architecture=$ARCH" -o Acquire::Languages=none
        -o APT::Install-Recommends=true -o APT::Install-Suggests=false)
    say "Debian packages: ${DEB_PACKAGES[*]} and their dependencies, from $MIRROR and $SECURITY_MIRROR"
    apt-get "${apt_opts[@]}" update -qq >"$work/log" 2>&1 \
        || { cat "$work/log" >&2; die "apt-get update against $MIRROR failed (see above); the export needs the Debian mirror."; }
    apt-get "${apt_opts[@]}" install -y -qq --download-only "${DEB_PACKAGES[@]}" >"$work/log" 2>&1 \
        || { cat "$work/log" >&2; die "downloading the Debian packages failed (see above)."; }
    mkdir -p "$out"
    mv "$work"/archives/*.deb "$out/"
    rm -rf "$work"
    # A flat repository index for apt on the offline host.
    local deb
    for deb in "$out"/*.deb; do
        dpkg-deb -f "$deb" | sed '/^$/d'
        printf 'Filename: ./%s\nSize: %s\nSHA256: %s\n\n' "${deb##*/}" "$(stat -c %s "$deb")" \
            "$(sha256sum "$deb" | cut -d' ' -f1)"
    done >"$out/Packages"
    printf '%s\n' "${DEB_PACKAGES[@]}" >"$out/INSTALL"
}

pip_quiet() {   # pip, minus the noise of a host's file:// extra indexes (as images/build.sh)
    "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

export_wheels() {   # export_wheels OUT SRC_DIR
    local out="$1" src="$2" py ansible_spec build_reqs tmp
    py="${PYTHON:-}"
    if [[ -z "$py" ]]; then
        if [[ -x "$REPO/.venv/bin/python" ]]; then py="$REPO/.venv/bin/python"; else py=python3; fi
    fi
    "$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip: set PYTHON to a Python 3.11 with pip (e.g. the .venv that scripts/start-local.sh makes)."
    ansible_spec="$(grep -o '"ansible-core[^"]*"' "$REPO/pyproject.toml" | head -n1 | tr -d '"')"
    [[ -n "$ansible_spec" ]] || ansible_spec='ansible-core>=2.18,<2.19'
    mapfile -t build_reqs < <(grep -Ev '^[[:space:]]*(#|$)' "$REPO/images/requirements/build.txt")
    mkdir -p "$out"
    tmp="$(mktemp -d /tmp/havre-bundle-wheel.XXXXXX)"
    say "wheels: pip and the build backend (${build_reqs[*]})"
    pip_quiet "$py" -m pip download --quiet --disable-pip-version-check --dest "$out" "${PIP_TARGET_FLAGS[@]}" \
        pip "${build_reqs[@]}" || die "pip download failed (the export needs the package index)."
    say "wheels: havre $VERSION, built from the source archive with no index"
    SOURCE_DATE_EPOCH=315532800 pip_quiet "$py" -m pip wheel --quiet --disable-pip-version-check --no-deps \
        --no-index --find-links "$out" -w "$tmp" "$src" >/dev/null || die "building the havre wheel failed."
    say "wheels: havre[cli] and $ansible_spec with their dependencies, for CPython 3.11 (Debian 12)"
    pip_quiet "$py" -m pip download --quiet --disable-pip-version-check --dest "$out" --find-links "$tmp" \
        "${PIP_TARGET_FLAGS[@]}" "havre[cli]==$VERSION" "$ansible_spec" \
        || die "pip download failed (the export needs the package index)."
    rm -rf "$tmp"
    printf '%s\n' "havre[cli]==$VERSION" "$ansible_spec" >"$out/requirements.txt"
}

export_images() {   # export_images OUT
    local out="$1" roles tags=() role tag
    roles="${HAVRE_BUNDLE_IMAGES:-base notebook hub egress}"
    [[ "$roles" == none ]] && return 0
    for role in $roles; do
        case "$role" in
            base) tag=havre/base:bookworm ;;
            notebook|hub|egress) tag="havre/$role:$VERSION" ;;
            *) die "HAVRE_BUNDLE_IMAGES has '$role'; choose from base, notebook, hub, egress (or none)." ;;
        esac
        docker image inspect "$tag" >/dev/null 2>&1 \
            || die "$tag is not on this host: build the images first (bash images/build.sh), then export."
        tags+=("$tag")
    done
    mkdir -p "$out"
    say "images: docker save ${tags[*]} | gzip"
    docker save "${tags[@]}" | gzip -6 >"$out/havre-images-$VERSION.tar.gz"
    IMAGE_LINES=()
    for tag in "${tags[@]}"; do
        IMAGE_LINES+=("# image $tag $(docker image inspect -f '{{.Id}}' "$tag")")
    done
}

do_export() {
    local dest="$1" stage commit dirty src
    need_root export "reads the Docker engine's images and runs apt-get"
    check_debian12 "is exported"
    command -v docker >/dev/null && docker info >/dev/null 2>&1 \
        || [[ "${HAVRE_BUNDLE_IMAGES:-}" == none ]] \
        || die "cannot talk to the Docker engine (is dockerd running?); the export saves the images."
    [[ ! -e "$dest" ]] || [[ -d "$dest" && -z "$(ls -A "$dest")" ]] \
        || die "$dest exists and is not empty: give a new folder for the bundle."
    REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    VERSION="$(awk -F'"' '/^\[/ { p = ($0 == "[project]") } p && /^version[ \t]*=/ { print $2; exit }' "$REPO/pyproject.toml")"
    [[ -n "$VERSION" ]] || die "cannot read the version from $REPO/pyproject.toml"
    git -C "$REPO" rev-parse --verify HEAD >/dev/null 2>&1 \
        || die "$REPO is not a git checkout with a commit: the bundle's source is 'git archive HEAD'."
    commit="$(git -C "$REPO" rev-parse HEAD)"
    dirty=""
    [[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]] \
        || dirty=" (the working tree has uncommitted changes: they are NOT in the bundle)"
    [[ -z "$dirty" ]] || say "warning: uncommitted changes in $REPO are not in the bundle (it holds commit ${commit:0:12})"

    local started=$SECONDS
    stage="$(dirname "$dest")/.$(basename "$dest").partial.$$"
    rm -rf "$stage"
    mkdir -p "$stage/source"
    # shellcheck disable=SC2064
    trap "rm -rf '$stage'" EXIT
    say "source: git archive $commit"
    git -C "$REPO" archive --format=tar.gz -o "$stage/source/havre-src-$VERSION.tar.gz" "$commit"
    src="$(mktemp -d /tmp/havre-bundle-src.XXXXXX)"
    tar -C "$src" -xzf "$stage/source/havre-src-$VERSION.tar.gz"
    export_wheels "$stage/wheels" "$src"
    rm -rf "$src"
    export_debs "$stage/debs"
    IMAGE_LINES=()
    export_images "$stage/images"
    cp "${BASH_SOURCE[0]}" "$stage/offline-bundle.sh"

    {
        echo "# Havre offline bundle. Check it: bash offline-bundle.sh verify DIR; install it (as root,"
        echo "# Debian 12 amd64): bash offline-bundle.sh install DIR. Each other line: sha256  path."
        echo "# havre $VERSION"
        echo "# source $commit$dirty"
        echo "# made $(date -u +%Y-%m-%dT%H:%M:%SZ) for Debian 12 ($SUITE) $ARCH, CPython 3.11"
        echo "# debian-mirrors $MIRROR $SECURITY_MIRROR"
        echo "# debian-install ${DEB_PACKAGES[*]}"
        local deb
        for deb in "$stage"/debs/*.deb; do
            echo "# deb $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
        done
        local whl
        for whl in "$stage"/wheels/*.whl; do echo "# wheel ${whl##*/}"; done
        printf '%s\n' "${IMAGE_LINES[@]+"${IMAGE_LINES[@]}"}"
        (cd "$stage" && find . -type f ! -path ./MANIFEST -printf '%P\n' | LC_ALL=C sort \
            | while IFS= read -r f; do sha256sum -- "$f"; done)
    } >"$stage/MANIFEST"
    rm -rf "$dest" 2>/dev/null || true
    mv "$stage" "$dest"
    trap - EXIT
    echo
    printf '%-10s %8s  %s\n' PART SIZE FILES
    local part
    for part in images wheels debs source; do
        [[ -d "$dest/$part" ]] || continue
        printf '%-10s %7sM  %s\n' "$part" "$(du -sm "$dest/$part" | cut -f1)" "$(find "$dest/$part" -type f | wc -l)"
    done
    printf '%-10s %7sM\n' total "$(du -sm "$dest" | cut -f1)"
    say "bundle written to $dest in $((SECONDS - started)) s"
    say "MANIFEST sha256: $(sha256sum "$dest/MANIFEST" | cut -d' ' -f1) (note it; on the offline host: HAVRE_BUNDLE_SHA256=<it> bash $dest/offline-bundle.sh install $dest)"
}

# ---------------------------------------------------------------------------------------------
# install
install_debs() {
    local dir="$1" work
    work="$(mktemp -d /tmp/havre-bundle-apt.XXXXXX)"
    mkdir -p "$work/lists/partial" "$work/parts"
    # The bundle is a local repository; apt sees it and nothing else (the host's own sources and
    # lists are left as they are). Its integrity is the MANIFEST's, checked above.
    echo "deb [trusted=yes] file:$dir/debs ./" >"$work/sources.list"
    local apt_opts=(
        -o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/parts"
        -o "Dir::State::Lists=$work/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
        -o Acquire::Languages=none -o APT::Sandbox::User=root)
    # Only what is missing, as scripts/lib/docker-engine.sh and the havre_docker_host role do: an
    # installed docker.io is not upgraded here (that would restart the engine and every
    # container of a running enclave).
    local pkg pkgs=()
    while IFS= read -r pkg; do
        [[ -n "$pkg" ]] || continue
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]]; then
            pkgs+=("$pkg")
        fi
    done <"$dir/debs/INSTALL"
    if ((${#pkgs[@]} == 0)); then
        say "Debian packages: all of $(paste -sd ' ' "$dir/debs/INSTALL") already installed; left as they are"
        rm -rf "$work"
        return 0
    fi
    say "Debian packages from the bundle: ${pkgs[*]} (with what they need)"
    apt-get "${apt_opts[@]}" update -qq >"$work/log" 2>&1 \
        || { cat "$work/log" >&2; die "apt-get could not read the bundle's packages (see above)."; }
    if ! DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q "${pkgs[@]}" >"$work/log" 2>&1; then
        tail -n 40 "$work/log" >&2
        die "apt-get install from the bundle failed (see above; full log: $work/log)."
    fi
    grep -E '^[0-9]+ upgraded' "$work/log" >&2 || true
    rm -rf "$work"
}

install_source() {   # unpack the source at HAVRE_SOURCE_DIR (a previous bundle's is replaced)
    local dir="$1" target="$2" archive
    archive="$(find "$dir/source" -name 'havre-src-*.tar.gz' | head -n1)"
    [[ -n "$archive" ]] || die "the bundle has no source archive (source/havre-src-*.tar.gz)."
    if [[ -e "$target" && -n "$(ls -A "$target" 2>/dev/null)" && ! -f "$target/.havre-offline-bundle" ]]; then
        die "$target exists and was not unpacked from a bundle: set HAVRE_SOURCE_DIR to another folder, or move it away."
    fi
    local tmp="$target.new.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    tar -C "$tmp" -xzf "$archive"
    grep '^# source ' "$dir/MANIFEST" | cut -d' ' -f3 >"$tmp/.havre-offline-bundle"
    rm -rf "$target"
    mv "$tmp" "$target"
    say "source unpacked at $target"
}

install_venv() {   # the virtualenv, from the bundle's wheels only
    local dir="$1" venv="$2" wheels="$3"
    rm -rf "$wheels.new"
    mkdir -p "$(dirname "$wheels")"
    cp -r "$dir/wheels" "$wheels.new"
    rm -rf "$wheels"
    mv "$wheels.new" "$wheels"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    # Every later pip in this venv (the roles' reinstall on upgrade.yml) uses the same wheels and
    # never an index.
    printf '[global]\nno-index = true\nfind-links = %s\n' "$wheels" >"$venv/pip.conf"
    say "virtualenv $venv: pip install --no-index --find-links $wheels -r requirements.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
        --find-links "$wheels" --upgrade pip || die "pip could not upgrade itself from the bundle's wheels."
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
        --find-links "$wheels" --upgrade -r "$wheels/requirements.txt" \
        || die "pip install from the bundle's wheels failed (see above)."
}

install_images() {
    local dir="$1" repo="$2" archive
    archive="$(find "$dir/images" -name 'havre-images-*.tar.gz' 2>/dev/null | head -n1)"
    if [[ -z "$archive" ]]; then
        say "the bundle has no images (exported with HAVRE_BUNDLE_IMAGES=none); load or build them yourself"
        return 0
    fi
    # shellcheck source=lib/docker-engine.sh
    source "$repo/scripts/lib/docker-engine.sh"
    havre_ensure_docker
    say "docker load < ${archive##*/}"
    gunzip -c "$archive" | docker load
}

do_install() {
    local dir="$1" with_images="$2"
    dir="$(cd "$dir" 2>/dev/null && pwd)" || die "$1 is not a directory: give the folder that offline-bundle.sh export wrote."
    need_root install "installs Debian packages and writes under /opt"
    verify_bundle "$dir"
    check_debian12 "installs"
    local venv="${HAVRE_VENV_DIR:-/opt/havre/venv}" src="${HAVRE_SOURCE_DIR:-/opt/havre/src}"
    local wheels="${HAVRE_WHEELS_DIR:-/opt/havre/wheels}" started=$SECONDS
    install_debs "$dir"
    install_source "$dir" "$src"
    install_venv "$dir" "$venv" "$wheels"
    if [[ "$with_images" == yes ]]; then
        install_images "$dir" "$src"
    else
        say "images not loaded (--no-images)"
    fi
    local version
    version="$(grep '^# havre ' "$dir/MANIFEST" | cut -d' ' -f3)"
    say "installed in $((SECONDS - started)) s"
    cat <<EOF

Havre $version is installed from the bundle: Debian packages, $venv (havre, ansible-playbook),
source at $src. Next, one of:

  A demo enclave on this host (what scripts/start-local.sh does, without building images):
    $venv/bin/havre demo-init --state-dir /var/lib/havre
    $venv/bin/havre up --config /var/lib/havre/enclave.yaml --bind 127.0.0.1 --port 8000 --idp-port 8001

  An enclave from your inventory (docs/sysadmin/install.md), with the images already loaded:
    cd $src/ansible
    $venv/bin/ansible-playbook -i inventories/<site>/hosts.yml site.yml --ask-vault-pass \\
      -e havre_images_mode=present -e havre_source_dir=$src -e havre_venv_dir=$venv
EOF
}

# ---------------------------------------------------------------------------------------------
(($# >= 1)) || { usage >&2; exit 2; }
cmd="$1"; shift
case "$cmd" in
    export)
        (($# == 1)) || die "usage: bash scripts/offline-bundle.sh export DIR"
        do_export "$1" ;;
    verify)
        (($# == 1)) || die "usage: bash offline-bundle.sh verify DIR"
        verify_bundle "$1" ;;
    install)
        images=yes; target=""
        while (($#)); do
            case "$1" in
                --no-images) images=no ;;
                -*) die "unknown option $1 (usage: bash offline-bundle.sh install DIR [--no-images])" ;;
                *) [[ -z "$target" ]] || die "usage: bash offline-bundle.sh install DIR [--no-images]"
                   target="$1" ;;
            esac
            shift
        done
        [[ -n "$target" ]] || die "usage: bash offline-bundle.sh install DIR [--no-images]"
        do_install "$target" "$images" ;;
    -h|--help|help) usage ;;
    *) die "unknown command '$cmd': use export DIR, verify DIR or install DIR [--no-images]" ;;
esac
