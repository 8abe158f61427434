#!/usr/bin/env bash
# Builds function images from the Dockerfile with buildah, through all of its stages (the
# toolchain, the one compile of the nine function binaries, the layer, the handler), and serves one invocation
# from each image as Lambda would start it. Usage: tests/image/test.sh [handler...]
# (default: default post). The first image pays the compile; every later one must reuse it.
#
# This machine reaches no image registry and no AWS, so three build arguments substitute what
# cannot be fetched, and nothing else: BUILDER_IMAGE and RUNTIME_IMAGE name local stand-ins for
# rust:1.95-slim-bookworm and distroless cc-debian12 assembled from Debian's packages
# (tests/image/base-images.sh), and ADOT_LAYER_SHA256 names a stand-in layer zip, laid out as the
# real one (extensions/collector, collector-config/), at build/adot-layer/<sha256>.zip, where the
# Pulumi program keeps the real one. Not run here: an arm64 cross-compile (rustup cannot download
# the aarch64 standard library here), the real base images, the real layer, BuildKit itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
handlers=("$@")
[ ${#handlers[@]} -gt 0 ] || handlers=(default post)

source tests/image/buildah.sh
passed=0 failed=0
check() { # check NAME COMMAND...: counts a pass or a failure
  if "${@:2}"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1" >&2; fi
}

echo "--> base images (buildah storage: $BUILDAH_DRIVER)"
tests/image/base-images.sh

echo "--> a stand-in ADOT layer zip, named by its SHA-256 as the Pulumi program names the real one"
layer_sha=$(stand_in_layer build/adot-layer)

logs=$(mktemp -d)
cleanup() {
  [ -n "${container:-}" ] && "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
  [ -n "${harness:-}" ] && kill "$harness" 2>/dev/null || true
  [ -n "${function:-}" ] && kill "$function" 2>/dev/null || true
  rm -rf "$logs"
}
trap cleanup EXIT

first=
for handler in "${handlers[@]}"; do
  image="localhost/webchat-${handler}:test"
  echo "--> buildah bud HANDLER=$handler"
  started=$(date +%s.%N)
  build_image . "$handler" "$layer_sha" "$image" "$logs/$handler.log" || exit 1
  seconds=$(seconds_since "$started")
  compiled=no
  grep -q 'Compiling webchat ' "$logs/$handler.log" && compiled=yes
  echo "    built in $seconds s (compiled the crate in this build: $compiled)"
  if [ -z "$first" ]; then
    first=$handler
  else
    # the compile step's next line is buildah's cache hit, and cargo never ran
    check "the $handler image reuses the compile of the $first image" \
      grep -A1 -E 'STEP [0-9/]+: RUN --mount=type=cache' "$logs/$handler.log" | grep -q -- '--> Using cache'
    check "the $handler image compiled nothing" test "$compiled" = no
  fi

  entrypoint=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$image")
  check "$handler: the entrypoint is the binary" test "$entrypoint" = "[/bootstrap]"
  env=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.Env}}' "$image")
  check "$handler: the collector configuration is named" \
    grep -q "OPENTELEMETRY_COLLECTOR_CONFIG_URI=/opt/collector-config/webchat.yaml" <<<"$env"
  user=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  check "$handler: runs as the base image's nonroot user" test "$user" = "65532:65532"

  container=$("${buildah[@]}" from --quiet "$image")
  export_dir=$(mktemp -d)
  # as root (CI's user), buildah mounts the container's file system directly
  mounted=$("${buildah[@]}" mount "$container")
  cp -a "$mounted/." "$export_dir/"
  "${buildah[@]}" umount "$container" >/dev/null
  check "$handler: the extension is under /opt/extensions" test -x "$export_dir/opt/extensions/collector"
  check "$handler: only the layer's extensions/ is copied" test ! -e "$export_dir/opt/collector-config/config.yaml"
  check "$handler: the collector configuration is the repository's" \
    cmp -s otel/collector.yaml "$export_dir/opt/collector-config/webchat.yaml"
  size=$(du -sk "$export_dir" | cut -f1)
  echo "    image content: $((size / 1024)) MiB ($size KiB), /bootstrap $(( $(stat -c %s "$export_dir/bootstrap") / 1024 )) KiB"
  rm -rf "$export_dir"

  echo "--> one invocation of $handler through the Runtime API, from the image"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  result="$logs/$handler.json"
  python3 tests/image/runtime_api.py "$port" "$result" "$handler" &
  harness=$!
  sleep 0.5
  "${buildah[@]}" run --isolation chroot --network host \
    --env AWS_LAMBDA_RUNTIME_API="127.0.0.1:$port" \
    --env AWS_LAMBDA_FUNCTION_NAME="webchat-$handler" --env AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128 \
    --env AWS_LAMBDA_FUNCTION_VERSION='$LATEST' --env AWS_REGION=eu-west-1 \
    --env AWS_ACCESS_KEY_ID=testing --env AWS_SECRET_ACCESS_KEY=testing \
    --env CONNECTIONS_TABLE=t --env ROOMS_TABLE=r --env EVENT_BUS_NAME=b \
    `# no DynamoDB here: the frame limits, which take from it first, are off (tests/lambda/limits.rs` \
    `# runs the same binaries' limits against moto)` \
    --env FRAME_RATE=0 --env USER_FRAME_RATE=0 \
    --env WEBSOCKET_API_ENDPOINT="http://127.0.0.1:$port/test" \
    --env OTEL_SDK_DISABLED=true \
    "$container" -- /bootstrap >"$logs/$handler.run.log" 2>&1 &
  function=$!
  wait "$harness" || true
  harness=
  kill "$function" 2>/dev/null || true
  wait "$function" 2>/dev/null || true
  function=
  "${buildah[@]}" rm "$container" >/dev/null
  container=
  posted() { # posted TEXT: the function posted TEXT to the test connection
    python3 -c "import json,sys; r=json.load(open('$result')); sys.exit(not any(sys.argv[1] in p['body'] and p['path'].endswith('/test/@connections/L0SM9cOFvHcCIhw%3D') for p in r['posts']))" "$1"
  }
  check "$handler: the invocation succeeded" \
    python3 -c "import json,sys; r=json.load(open('$result')); sys.exit(bool(r['errors']) or not r['responded'])"
  if [ "$handler" = post ]; then
    check "post: the welcome reached the connection" posted "Welcome! - connected on L0SM9cOFvHcCIhw="
  else
    check "$handler: the invocation answered 200" \
      python3 -c "import json,sys; r=json.load(open('$result')); sys.exit(r['response'].get('statusCode') != 200)"
    check "$handler: the function posted invalid_json to the client" posted invalid_json
  fi
  cat "$result"; echo
done

echo "image test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
