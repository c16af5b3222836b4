#!/usr/bin/env bash
# Make the two base images the Dockerfiles start from, locally, for sites that reach a package
# index but no image registry: a Debian bookworm with Python 3.11 (mmdebstrap, from Debian's
# packages), standing in for python:3.11-slim-bookworm, and an image holding only /uv (from uv's
# wheel on PyPI), standing in for ghcr.io/astral-sh/uv. docker/build.sh calls this when the
# public bases cannot be pulled; the names it prints go to --build-arg PYTHON_IMAGE / UV_IMAGE.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: docker/local-base.sh [--force]

Build localhost/audioflow-python:3.11-bookworm (mmdebstrap --variant=minbase, ca-certificates
and python3; about 30 s) and localhost/audioflow-uv:VERSION (the uv binary of the version the
Dockerfiles pin, from PyPI) into the local image store, unless they are there already.

  --force     build them again
  -h, --help  show this help

Needs mmdebstrap (Debian: apt-get install mmdebstrap) and pip or uv; ENGINE picks docker or podman.
USAGE
}

force=0
case "${1:-}" in
    "") ;;
    --force) force=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=docker/engine.sh
source "$root/docker/engine.sh"
pick_engine

PYTHON_BASE="localhost/audioflow-python:3.11-bookworm"
uv_version="$(sed -n 's/^ARG UV_IMAGE=.*uv:\([0-9.]*\)$/\1/p' "$root/docker/Dockerfile")"
[[ -n "$uv_version" ]] || { echo "error: no 'ARG UV_IMAGE=...uv:X.Y.Z' in docker/Dockerfile" >&2; exit 1; }
UV_BASE="localhost/audioflow-uv:$uv_version"

have() { "$engine" image inspect "$1" >/dev/null 2>&1; }

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

if ((force)) || ! have "$PYTHON_BASE"; then
    command -v mmdebstrap >/dev/null || { echo "error: mmdebstrap not found (apt-get install mmdebstrap)" >&2; exit 1; }
    echo "== $PYTHON_BASE: Debian bookworm minbase + python3 (mmdebstrap)" >&2
    # Documentation, manual pages and translations are left out, as the slim images do.
    mmdebstrap --quiet --variant=minbase --include=ca-certificates,python3 \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        bookworm "$scratch/python.tar"
    "$engine" import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
        "$scratch/python.tar" "$PYTHON_BASE" >/dev/null
fi

if ((force)) || ! have "$UV_BASE"; then
    echo "== $UV_BASE: uv $uv_version from its wheel" >&2
    mkdir "$scratch/uv"
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$scratch/wheel" "uv==$uv_version"
        python3 -m zipfile -e "$scratch"/wheel/uv-*.whl "$scratch/wheel/x"
        install -m 0755 "$scratch"/wheel/x/uv-*.data/scripts/uv "$scratch/uv/uv"
    else  # the python3 of a uv-made environment (`uv run`) has no pip, but uv is there
        uv_cmd=(uv)
        command -v uv >/dev/null || uv_cmd=(python3 -m uv)
        "${uv_cmd[@]}" pip install --quiet --no-deps --only-binary=:all: --target "$scratch/wheel/x" "uv==$uv_version"
        install -m 0755 "$scratch/wheel/x/bin/uv" "$scratch/uv/uv"
    fi
    tar -C "$scratch/uv" -cf "$scratch/uv.tar" uv
    "$engine" import "$scratch/uv.tar" "$UV_BASE" >/dev/null
fi

echo "PYTHON_IMAGE=$PYTHON_BASE"
echo "UV_IMAGE=$UV_BASE"
