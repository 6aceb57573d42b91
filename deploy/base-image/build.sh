#!/usr/bin/env bash
# Build the ClinAI base image (Debian bookworm + Python 3.11) without any container
# registry: debootstrap from a Debian mirror, then `docker import`.
#
# Usage: deploy/base-image/build.sh [TAG]
#
# Environment (all optional):
#   CLINAI_BASE_IMAGE   tag to produce            (default: clinai/python:3.11-slim; $1 wins)
#   DEBIAN_MIRROR       Debian mirror URL          (default: the host's apt sources)
#   DEBIAN_SUITE        suite                      (default: bookworm)
#   CLINAI_BASE_CACHE   cache directory            (default: /var/cache/clinai/base-image)
#   CLINAI_BASE_REBUILD set to 1 to ignore the cached root filesystem
#
# Caching: .debs go to $CLINAI_BASE_CACHE/debs (debootstrap --cache-dir) and the
# finished root filesystem to $CLINAI_BASE_CACHE/rootfs-<key>.tar, so a second run only
# re-imports the tarball (a few seconds).
set -euo pipefail

TAG="${1:-${CLINAI_BASE_IMAGE:-clinai/python:3.11-slim}}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE="${CLINAI_BASE_CACHE:-/var/cache/clinai/base-image}"
INCLUDE="python3,python3-venv,python3-pip,python-is-python3,ca-certificates"

log() { printf '[base-image] %s\n' "$*" >&2; }
die() { printf '[base-image] error: %s\n' "$*" >&2; exit 1; }

host_mirror() {
    # First non-security Debian URI from deb822 sources, then one-line sources.
    local files=() f uri
    for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] && files+=("$f")
    done
    ((${#files[@]})) || return 1
    uri="$(grep -h -E '^[[:space:]]*URIs:' "${files[@]}" 2>/dev/null \
        | awk '{for (i = 2; i <= NF; i++) print $i}' | grep -v -E 'security' | grep -E '/debian/?$' | head -n1 || true)"
    if [[ -z "$uri" ]]; then
        uri="$(grep -h -E '^[[:space:]]*deb[[:space:]]' "${files[@]}" 2>/dev/null \
            | sed -E 's/\[[^]]*\]//' | awk '{print $2}' | grep -v -E 'security' \
            | grep -E '/debian/?$' | head -n1 || true)"
    fi
    [[ -n "$uri" ]] || return 1
    printf '%s\n' "${uri%/}"
}

MIRROR="${DEBIAN_MIRROR:-$(host_mirror || true)}"
[[ -n "$MIRROR" ]] || die "no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker engine answers (run .ci/docker-setup)"
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || die "debootstrap is missing and could not be installed"
fi
[[ "$(id -u)" == 0 ]] || die "debootstrap needs root"

start=$(date +%s)
mkdir -p "$CACHE/debs"
key="$(printf '%s|%s|%s|%s' "$SUITE" "$MIRROR" "$INCLUDE" "$(uname -m)" | sha256sum | cut -c1-16)"
rootfs_tar="$CACHE/rootfs-$key.tar"

if [[ "${CLINAI_BASE_REBUILD:-0}" == 1 || ! -s "$rootfs_tar" ]]; then
    work="$(mktemp -d /var/tmp/clinai-rootfs.XXXXXX)"
    trap 'rm -rf "$work"' EXIT
    log "debootstrap $SUITE from $MIRROR into $work (packages: $INCLUDE)"
    debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE/debs" \
        "$SUITE" "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # Slim down: package lists, .deb cache, docs, man pages, logs.
    rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/* \
        "$work/rootfs"/usr/share/doc/* "$work/rootfs"/usr/share/man/* \
        "$work/rootfs"/usr/share/info/* "$work/rootfs"/var/log/*.log \
        "$work/rootfs"/var/cache/debconf/*-old
    # The same apt source as the host, so `apt-get` works inside derived images.
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$work/rootfs/etc/apt/sources.list"
    "$work/rootfs/usr/bin/python3" --version >/dev/null 2>&1 || true
    tar -C "$work/rootfs" --numeric-owner -cf "$rootfs_tar.part" .
    mv "$rootfs_tar.part" "$rootfs_tar"
    log "root filesystem cached at $rootfs_tar ($(du -h "$rootfs_tar" | cut -f1))"
else
    log "reusing cached root filesystem $rootfs_tar"
fi

log "importing as $TAG"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'CMD ["python3"]' \
    --message "clinai base image: debootstrap $SUITE ($INCLUDE)" \
    "$rootfs_tar" "$TAG" >/dev/null
docker run --rm --network none "$TAG" python3 -c 'import sys, venv, ensurepip; print(sys.version)' >&2 \
    || die "the imported image $TAG does not run python3"
log "built $TAG in $(($(date +%s) - start))s"
