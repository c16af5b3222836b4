# Sourced by docker/*.sh and read by tests/containers.py: which container engine to use.
#   ENGINE=docker|podman   force one; otherwise a Docker daemon that answers, else podman.
# With podman, CONTAINERS_CONF points at docker/containers.conf unless it is set already.
# Sets: engine (the client's name) and engine_kind (docker or podman).

_engine_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

pick_engine() {
    local want="${ENGINE:-${DOCKER:-}}"
    if [[ -z "$want" ]]; then
        if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
            want=docker
        elif command -v podman >/dev/null; then
            want=podman
        else
            echo "error: no container engine: install Docker or podman (Debian: apt-get install podman buildah runc)," \
                 "or set ENGINE" >&2
            return 1
        fi
    fi
    command -v "$want" >/dev/null || { echo "error: '$want' not found; install it (or set ENGINE)" >&2; return 1; }
    engine="$want"
    if "$engine" --version 2>/dev/null | grep -qi podman; then
        engine_kind=podman
        export CONTAINERS_CONF="${CONTAINERS_CONF:-$_engine_root/docker/containers.conf}"
    else
        engine_kind=docker
    fi
}
