#!/usr/bin/env bash
# Build both images and smoke-test them. The steps image (docker/Dockerfile): `--help`, a tiny
# training run on demo recordings mounted read-only, with the outputs in a Docker volume, then
# one prediction with the model it wrote. The serve image (docker/Dockerfile.serve): that model
# served on a port of 127.0.0.1 until Docker reports it healthy, then one POST /predict.
# tests/test_docker.py runs the same audioflow arguments (DEMO_ARGS, RUN_ARGS, PREDICT_ARGS below)
# and the serve image's install outside a container, on every `make test`.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: docker/build.sh [--tag IMAGE] [--serve-tag IMAGE] [--gpus] [--no-smoke]

Build the audioflow steps image (docker/Dockerfile) and serve image (docker/Dockerfile.serve),
context: the repository root, and smoke-test them: `IMAGE --help`, a one-epoch `audioflow run`
on 60 demo recordings mounted read-only with an outputs volume, `audioflow predict` with the
model it wrote, then that model served by the serve image and one recording POSTed to it.

  --tag IMAGE   name for the steps image (default: audioflow-steps:dev)
  --serve-tag IMAGE
                name for the serve image (default: audioflow-serve:dev)
  --gpus        run the smoke test with `--gpus all` (needs the NVIDIA container toolkit)
  --no-smoke    build only
  -h, --help    show this help

DOCKER=podman docker/build.sh uses another Docker-compatible client.
EOF
}

image="audioflow-steps:dev"
serve_image="audioflow-serve:dev"
gpus=()
smoke=1
while (($#)); do
    case "$1" in
        --tag) [[ $# -ge 2 ]] || { echo "--tag needs an image name" >&2; exit 2; }
               image="$2"; shift 2 ;;
        --tag=*) image="${1#--tag=}"; shift ;;
        --serve-tag) [[ $# -ge 2 ]] || { echo "--serve-tag needs an image name" >&2; exit 2; }
                     serve_image="$2"; shift 2 ;;
        --serve-tag=*) serve_image="${1#--serve-tag=}"; shift ;;
        --gpus) gpus=(--gpus all); shift ;;
        --no-smoke) smoke=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# The smoke test's audioflow arguments. RUN_ARGS keeps the run to about a minute on a CPU.
DEMO_ARGS=(demo-data data --n-recordings 60 --quiet)
RUN_ARGS=(run --quiet --set train.epochs=1 --set features.window_s=1.5 --set 'model.cnn.channels=[8,16]' --set validate.min_per_class=3)
PREDICT_ARGS=(predict outputs/model.onnx data/recordings)

docker="${DOCKER:-docker}"
command -v "$docker" >/dev/null || { echo "error: '$docker' not found; install Docker (or set DOCKER)" >&2; exit 1; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

echo "== building $image from docker/Dockerfile"
"$docker" build --file "$root/docker/Dockerfile" --tag "$image" "$root"
echo "== building $serve_image from docker/Dockerfile.serve"
"$docker" build --file "$root/docker/Dockerfile.serve" --tag "$serve_image" "$root"
((smoke)) || exit 0

echo "== $image --help"
"$docker" run --rm "$image" --help >/dev/null

scratch="$(mktemp -d)"
volume="audioflow-smoke-$$"
cleanup() {
    [[ -z "${container:-}" ]] || "$docker" rm --force "$container" >/dev/null 2>&1 || true
    rm -rf "$scratch"
    "$docker" volume rm --force "$volume" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== demo recordings into $scratch/data"
# As the calling user, so that the recordings are this user's files and cleanup can remove them.
"$docker" run --rm --user "$(id -u):$(id -g)" --volume "$scratch:/scratch" --workdir /scratch \
    "$image" "${DEMO_ARGS[@]}"

echo "== a tiny training run as the image's own user: data read-only, outputs in volume $volume"
"$docker" volume create "$volume" >/dev/null
mounts=(--volume "$root/params.yaml:/app/params.yaml:ro" --volume "$scratch/data:/app/data:ro")
"$docker" run --rm ${gpus[@]+"${gpus[@]}"} "${mounts[@]}" --volume "$volume:/app/outputs" "$image" "${RUN_ARGS[@]}"

echo "== predict with the exported model"
predictions="$("$docker" run --rm "${mounts[@]}" --volume "$volume:/app/outputs:ro" "$image" "${PREDICT_ARGS[@]}")"
n="$(grep -c '"label"' <<<"$predictions" || true)"
[[ "$n" -gt 0 ]] || { echo "error: no predictions:" >&2; echo "$predictions" >&2; exit 1; }
echo "$n recordings classified"
echo "== $image works"

echo "== $serve_image serves that model"
container="$("$docker" run --detach --publish 127.0.0.1::8000 --volume "$volume:/models:ro" "$serve_image")"
for _ in $(seq 60); do
    health="$("$docker" inspect --format '{{.State.Health.Status}}' "$container")"
    [[ "$health" == healthy ]] && break
    [[ "$("$docker" inspect --format '{{.State.Running}}' "$container")" == true ]] || break
    sleep 2
done
[[ "${health:-}" == healthy ]] || { echo "error: $serve_image did not become healthy:" >&2
                                    "$docker" logs "$container" >&2; exit 1; }
port="$("$docker" port "$container" 8000/tcp | head -n 1 | sed 's/.*://')"
recording="$(find "$scratch/data/recordings" -name '*.wav' | head -n 1)"
answer="$(curl --silent --show-error --fail -F "file=@$recording" "http://127.0.0.1:$port/predict")"
echo "$answer"
grep -q '"label"' <<<"$answer" || { echo "error: no label in the answer" >&2; exit 1; }
echo "== $serve_image works"
