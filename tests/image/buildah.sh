# Sourced by tests/image/test.sh, tests/image/base-images.sh and scripts/bench-image-build: one
# buildah set-up, the stand-ins they share, and one way to build a function's image from the
# Dockerfile. Defines: buildah (the command, as an array), BUILDER_IMAGE, RUNTIME_IMAGE,
# stand_in_layer, build_image, seconds_since.

# A storage root of the tests' own, so that no other buildah user's driver choice gets in the
# way; overlay where the kernel allows it (much faster for a 1 GB builder), vfs otherwise.
BUILDAH_ROOT=/var/lib/containers/webchat-tests
BUILDAH_DRIVER=overlay
buildah --root "$BUILDAH_ROOT" --storage-driver overlay info >/dev/null 2>&1 || BUILDAH_DRIVER=vfs
buildah=(buildah --root "$BUILDAH_ROOT" --storage-driver "$BUILDAH_DRIVER")

# Local stand-ins for rust:1.95-slim-bookworm and distroless cc-debian12 (base-images.sh).
BUILDER_IMAGE=localhost/webchat-builder:1.95-bookworm
RUNTIME_IMAGE=localhost/webchat-runtime:bookworm

# stand_in_layer DIR: writes a zip laid out as the ADOT layer's (extensions/collector,
# collector-config/config.yaml) to DIR/<sha256>.zip, as the Pulumi program names the real one,
# and prints the SHA-256. The same bytes every time, so the same name.
stand_in_layer() {
  python3 - "$1" <<'PY'
import hashlib, io, os, sys, zipfile
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w") as layer:
    for name, mode, text in [
        ("extensions/collector", 0o755, "#!/bin/sh\n# stand-in for the ADOT collector extension\n"),
        ("collector-config/config.yaml", 0o644, "# stand-in for the layer's default configuration\n"),
    ]:
        entry = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
        entry.external_attr = (0o100000 | mode) << 16
        layer.writestr(entry, text)
data = buffer.getvalue()
digest = hashlib.sha256(data).hexdigest()
os.makedirs(sys.argv[1], exist_ok=True)
with open(os.path.join(sys.argv[1], f"{digest}.zip"), "wb") as out:
    out.write(data)
print(digest)
PY
}

# build_image CONTEXT HANDLER LAYER_SHA256 TAG LOG [buildah bud options...]: builds HANDLER's
# image from CONTEXT's Dockerfile with the stand-ins, logging to LOG; on failure, shows the log's
# end and fails.
build_image() {
  local context=$1 handler=$2 layer_sha=$3 tag=$4 log=$5
  shift 5
  "${buildah[@]}" bud --format docker --layers --isolation chroot --network host "$@" \
    --build-arg BUILDER_IMAGE="$BUILDER_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
    --build-arg ADOT_LAYER_SHA256="$layer_sha" --build-arg HANDLER="$handler" \
    -t "$tag" "$context" >"$log" 2>&1 && return 0
  tail -40 "$log" >&2
  echo "the image of $handler did not build (log above)" >&2
  return 1
}

# seconds_since STARTED: seconds, to a tenth, since STARTED (a `date +%s.%N` reading).
seconds_since() {
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"
}
