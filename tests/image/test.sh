#!/usr/bin/env bash
# Builds one function's image from the Dockerfile with buildah and serves one invocation from it,
# as Lambda would start it. Usage: tests/image/test.sh [handler] (default: default).
#
# This machine reaches no image registry and no AWS, so exactly three build arguments substitute
# what cannot be fetched: BINARY_FROM=prebuilt (the handler built here as a static binary, instead
# of compiling in the rust builder image), RUNTIME_IMAGE=scratch (instead of distroless), and
# ADOT_FROM=adot-context (a stand-in file at /opt/extensions/collector, instead of the layer).
# Everything else (stages, paths, entrypoint, collector configuration) is the shipped Dockerfile.
set -euo pipefail
handler=${1:-default}
cd "$(dirname "$0")/../.."
target_dir=${CARGO_TARGET_DIR:-target}
buildah=(buildah --storage-driver vfs)
image="localhost/webchat-${handler}:test"
passed=0 failed=0
check() { # check NAME COMMAND...: counts a pass or a failure
  if "${@:2}"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1" >&2; fi
}

echo "--> the static binary (cargo build --profile dist, +crt-static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --profile dist \
  --target x86_64-unknown-linux-gnu --bin "$handler"
mkdir -p target/dist-static build/adot/extensions
cp "$target_dir/x86_64-unknown-linux-gnu/dist/$handler" "target/dist-static/$handler"
printf '#!/bin/sh\n# stand-in for the ADOT collector extension (the real one comes from the layer)\n' \
  > build/adot/extensions/collector
chmod +x build/adot/extensions/collector

echo "--> buildah bud"
"${buildah[@]}" bud --isolation chroot \
  --build-arg HANDLER="$handler" --build-arg BINARY_FROM=prebuilt \
  --build-arg RUNTIME_IMAGE=scratch --build-arg ADOT_FROM=adot-context \
  -t "$image" . >/dev/null 2>&1

entrypoint=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$image")
check "the entrypoint is the binary" test "$entrypoint" = "[/bootstrap]"
env=$("${buildah[@]}" inspect --type image --format '{{.OCIv1.Config.Env}}' "$image")
check "the collector configuration is named" grep -q "OPENTELEMETRY_COLLECTOR_CONFIG_URI=/opt/collector-config/webchat.yaml" <<<"$env"

container=$("${buildah[@]}" from --quiet "$image")
cleanup() {
  "${buildah[@]}" rm "$container" >/dev/null 2>&1 || true
  [ -n "${harness:-}" ] && kill "$harness" 2>/dev/null || true
  [ -n "${function:-}" ] && kill "$function" 2>/dev/null || true
}
trap cleanup EXIT
export_dir=$(mktemp -d)
# as root (CI's user), buildah mounts the container's file system directly
mounted=$("${buildah[@]}" mount "$container")
cp -a "$mounted/." "$export_dir/"
"${buildah[@]}" umount "$container" >/dev/null
check "the extension is under /opt/extensions" test -x "$export_dir/opt/extensions/collector"
check "the collector configuration is the repository's" cmp -s otel/collector.yaml "$export_dir/opt/collector-config/webchat.yaml"
size=$(du -sk "$export_dir" | cut -f1)
echo "image content: $(ls "$export_dir" | tr '\n' ' ')— $((size / 1024)) MiB ($size KiB)"
rm -rf "$export_dir"

echo "--> one invocation through the Runtime API, from the image"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
result=$(mktemp)
python3 tests/image/runtime_api.py "$port" "$result" &
harness=$!
sleep 0.5
"${buildah[@]}" run --isolation chroot --network host \
  --env AWS_LAMBDA_RUNTIME_API="127.0.0.1:$port" \
  --env AWS_LAMBDA_FUNCTION_NAME="webchat-$handler" --env AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128 \
  --env AWS_LAMBDA_FUNCTION_VERSION='$LATEST' --env AWS_REGION=eu-west-1 \
  --env AWS_ACCESS_KEY_ID=testing --env AWS_SECRET_ACCESS_KEY=testing \
  --env CONNECTIONS_TABLE=t --env EVENT_BUS_NAME=b \
  --env WEBSOCKET_API_ENDPOINT="http://127.0.0.1:$port/test" \
  --env OTEL_SDK_DISABLED=true \
  "$container" -- /bootstrap >/dev/null 2>&1 &
function=$!
wait "$harness" || true
harness=
check "the invocation answered 200" python3 -c "import json,sys; r=json.load(open('$result')); sys.exit(r['response'] is None or r['response'].get('statusCode') != 200)"
check "the function posted invalid_json to the client" python3 -c "import json,sys; r=json.load(open('$result')); sys.exit(not any('invalid_json' in p['body'] and p['path'].endswith('/test/@connections/L0SM9cOFvHcCIhw%3D') for p in r['posts']))"
cat "$result"; echo
rm -f "$result"

echo "image test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
