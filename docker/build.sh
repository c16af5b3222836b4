#!/usr/bin/env bash
# Build both images (`make images` calls this) and, unless --no-smoke, smoke-test them. Works
# with Docker (BuildKit) or podman; where the public bases cannot be pulled (no registry), it
# makes local ones first (docker/local-base.sh) and builds from those. tests/test_containers.py
# builds through this script and runs the images for real.
set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: docker/build.sh [--tag IMAGE] [--serve-tag IMAGE] [--torch cuda|cpu] [--local-base]
                       [--only steps|serve] [--gpus] [--no-smoke]

Build the audioflow steps image (docker/Dockerfile) and serve image (docker/Dockerfile.serve),
context: the repository root, then smoke-test them: `IMAGE --help`, a one-epoch `audioflow run`
on 60 demo recordings mounted read-only, `audioflow predict` with the model it wrote, then that
model served by the serve image until its health check passes and one recording POSTed to it.

  --tag IMAGE        the steps image (default: localhost/audioflow-steps:dev)
  --serve-tag IMAGE  the serve image (default: localhost/audioflow-serve:dev)
  --torch cuda|cpu   torch in the steps image: PyPI's CUDA wheels (default) or the CPU-only
                     wheels of the same version (TORCH_CPU_INDEX, default PyTorch's CPU index)
  --local-base       build from local bases (docker/local-base.sh) without trying to pull
  --only steps|serve build one image
  --gpus             run the smoke test with `--gpus all` (needs the NVIDIA container toolkit)
  --no-smoke         build only
  -h, --help         show this help

ENGINE=docker|podman picks the engine (default: a Docker daemon that answers, else podman).
Under podman the build reads the host's uv cache through an overlay (nothing is written to
it), trusts the host's CA bundle, and uses docker/containers.conf.
USAGE
}

image="localhost/audioflow-steps:dev"
serve_image="localhost/audioflow-serve:dev"
torch=cuda
local_base=0
only=""
gpus=()
smoke=1
need() { [[ $# -ge 2 && -n "$2" ]] || { echo "$1 needs a value" >&2; exit 2; }; }
while (($#)); do
    case "$1" in
        --tag) need "$@"; image="$2"; shift 2 ;;
        --serve-tag) need "$@"; serve_image="$2"; shift 2 ;;
        --torch) need "$@"; torch="$2"; shift 2 ;;
        --only) need "$@"; only="$2"; shift 2 ;;
        --local-base) local_base=1; shift ;;
        --gpus) gpus=(--gpus all); shift ;;
        --no-smoke) smoke=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$torch" == cuda || "$torch" == cpu ]] || { echo "--torch must be cuda or cpu" >&2; exit 2; }
[[ -z "$only" || "$only" == steps || "$only" == serve ]] || { echo "--only must be steps or serve" >&2; exit 2; }

# The smoke test's audioflow arguments. RUN_ARGS keeps the run to about a minute on a CPU.
DEMO_ARGS=(demo-data data --n-recordings 60 --quiet)
RUN_ARGS=(run --quiet --set train.epochs=1 --set features.window_s=1.5 --set 'model.cnn.channels=[8,16]' --set validate.min_per_class=3)
PREDICT_ARGS=(predict outputs/model.onnx data/recordings)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=docker/engine.sh
source "$root/docker/engine.sh"
pick_engine

scratch="$(mktemp -d)"
cleanup() {
    [[ -z "${container:-}" ]] || "$engine" rm --force "$container" >/dev/null 2>&1 || true
    [[ -z "${volume:-}" ]] || "$engine" volume rm --force "$volume" >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap cleanup EXIT

# The bases: the Dockerfiles' defaults if they are here or can be pulled, else local ones.
default_arg() { sed -n "s/^ARG $1=//p" "$root/docker/Dockerfile"; }
python_image="$(default_arg PYTHON_IMAGE)"
uv_image="$(default_arg UV_IMAGE)"
pullable() { "$engine" image inspect "$1" >/dev/null 2>&1 || timeout 300 "$engine" pull --quiet "$1" >/dev/null 2>&1; }
if ((local_base)) || ! { pullable "$python_image" && pullable "$uv_image"; }; then
    ((local_base)) || echo "== $python_image or $uv_image cannot be pulled: building local bases" >&2
    bases="$("$root/docker/local-base.sh")"
    python_image="$(sed -n 's/^PYTHON_IMAGE=//p' <<<"$bases")"
    uv_image="$(sed -n 's/^UV_IMAGE=//p' <<<"$bases")"
fi

build_args=(--build-arg "PYTHON_IMAGE=$python_image" --build-arg "UV_IMAGE=$uv_image")
if [[ "$engine_kind" == podman ]]; then
    # docker format: OCI images drop HEALTHCHECK. The host network reaches the package index.
    build_args+=(--format docker --network host)
    # $UV is the uv that `uv run` runs under (make test, the tests); else uv on PATH, else uv as pip installed it.
    uv_cache="$("${UV:-uv}" cache dir 2>/dev/null || python3 -m uv cache dir 2>/dev/null || true)"
    if [[ -n "$uv_cache" && -d "$uv_cache" ]]; then
        # An overlay: the build reads the host's wheels, its writes are thrown away.
        build_args+=(--volume "$uv_cache:/uv-host-cache:O" --build-arg UV_CACHE_DIR=/uv-host-cache)
    fi
    ca="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
    if [[ -f "$ca" ]]; then
        # The host's trust (a site's TLS proxy, say) for uv inside the build: uv reads
        # /etc/uv/uv.toml, and native-tls makes it use the system bundle, mounted from the host.
        printf 'native-tls = true\n' >"$scratch/uv.toml"
        build_args+=(--volume "$scratch/uv.toml:/etc/uv/uv.toml:ro" --volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
else
    export DOCKER_BUILDKIT=1  # cache mounts
fi

# build TAG DOCKERFILE ARGS...: the image, then the one it replaced removed if no other tag
# names it (a rebuild after each code change would otherwise leave a dangling image; one that
# another tag still names, say localhost/audioflow-steps:dev under a benchmark's tag, stays).
build() {
    local tag="$1" file="$2" before after
    shift 2
    before="$("$engine" image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
    "$engine" build "${build_args[@]}" "$@" --file "$root/docker/$file" --tag "$tag" "$root"
    after="$("$engine" image inspect --format '{{.Id}}' "$tag")"
    if [[ -n "$before" && "$before" != "$after" ]] &&
       [[ "$("$engine" image inspect --format '{{len .RepoTags}}' "$before" 2>/dev/null)" == 0 ]]; then
        "$engine" image rm "$before" >/dev/null 2>&1 || true  # refused while a container uses it
    fi
    echo "== $tag: $("$engine" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

if [[ "$only" != serve ]]; then
    echo "== building $image from docker/Dockerfile (torch: $torch, base: $python_image)"
    build "$image" Dockerfile --build-arg "TORCH=$torch" ${TORCH_CPU_INDEX:+--build-arg "TORCH_CPU_INDEX=$TORCH_CPU_INDEX"}
fi
if [[ "$only" != steps ]]; then
    echo "== building $serve_image from docker/Dockerfile.serve (base: $python_image)"
    build "$serve_image" Dockerfile.serve
fi
((smoke)) && [[ -z "$only" ]] || exit 0

echo "== $image --help"
"$engine" run --rm "$image" --help >/dev/null

echo "== demo recordings into $scratch/data"
# As the calling user, so that the recordings are this user's files and cleanup can remove them.
"$engine" run --rm --user "$(id -u):$(id -g)" --volume "$scratch:/scratch" --workdir /scratch \
    "$image" "${DEMO_ARGS[@]}"

volume="audioflow-smoke-$$"
echo "== a tiny training run as the image's own user: data read-only, outputs in volume $volume"
"$engine" volume create "$volume" >/dev/null
mounts=(--volume "$root/params.yaml:/app/params.yaml:ro" --volume "$scratch/data:/app/data:ro")
"$engine" run --rm ${gpus[@]+"${gpus[@]}"} "${mounts[@]}" --volume "$volume:/app/outputs" "$image" "${RUN_ARGS[@]}"

echo "== predict with the exported model"
predictions="$("$engine" run --rm "${mounts[@]}" --volume "$volume:/app/outputs:ro" "$image" "${PREDICT_ARGS[@]}")"
n="$(grep -c '"label"' <<<"$predictions" || true)"
[[ "$n" -gt 0 ]] || { echo "error: no predictions:" >&2; echo "$predictions" >&2; exit 1; }
echo "$n recordings classified"
echo "== $image works"

echo "== $serve_image serves that model"
no_timers=()  # podman runs health checks from systemd timers, which a host without systemd lacks
[[ "$engine_kind" == podman ]] && no_timers=(--health-interval disable)
container="$("$engine" run --detach --read-only --tmpfs /tmp --publish 127.0.0.1::8000 ${no_timers[@]+"${no_timers[@]}"} \
    --volume "$volume:/models:ro" "$serve_image" 2>"$scratch/run.err")" || { cat "$scratch/run.err" >&2; exit 1; }
for _ in $(seq 60); do
    "$engine" healthcheck run "$container" >/dev/null 2>&1 && health=healthy && break  # podman
    health="$("$engine" inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null || true)"
    [[ "$health" == healthy ]] && break
    [[ "$("$engine" inspect --format '{{.State.Running}}' "$container")" == true ]] || break
    sleep 1
done
[[ "${health:-}" == healthy ]] || { echo "error: $serve_image did not become healthy:" >&2
                                    "$engine" logs "$container" >&2; exit 1; }
port="$("$engine" port "$container" 8000/tcp | head -n 1 | sed 's/.*://')"
recording="$(find "$scratch/data/recordings" -name '*.wav' | head -n 1)"
answer="$(curl --silent --show-error --fail -F "file=@$recording" "http://127.0.0.1:$port/predict")"
echo "$answer"
grep -q '"label"' <<<"$answer" || { echo "error: no label in the answer" >&2; exit 1; }
echo "== $serve_image works"
