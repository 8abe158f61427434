#!/usr/bin/env bash
# Assembles, from Debian's packages, local stand-ins for the two public base images the
# Dockerfile names, because this machine reaches no image registry:
#
#   localhost/webchat-builder:1.95-bookworm  ~ docker.io/library/rust:1.95-slim-bookworm
#       Debian bookworm (debootstrap, minbase) with gcc, libc6-dev and ca-certificates, and this
#       machine's Rust toolchain laid out as the official image lays it out (RUSTUP_HOME
#       /usr/local/rustup, CARGO_HOME /usr/local/cargo, cargo and rustc on PATH), trusting this
#       machine's CA bundle.
#   localhost/webchat-runtime:bookworm      ~ gcr.io/distroless/cc-debian12:nonroot
#       no shell, no package manager: glibc, libgcc_s, time zones and CA certificates from the
#       same Debian packages, /etc/passwd with nonroot (65532), and that user as the default.
#
# Each is built once per buildah storage (tests/image/buildah.sh) and reused.
# Usage: tests/image/base-images.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/image/buildah.sh
builder=$BUILDER_IMAGE
runtime=$RUNTIME_IMAGE
mirror=http://deb.debian.org/debian

have() { "${buildah[@]}" inspect --type image "$1" >/dev/null 2>&1; }
if have "$builder" && have "$runtime"; then
  echo "base images: $builder and $runtime already built"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--> debootstrap bookworm (gcc, libc6-dev, ca-certificates)"
started=$SECONDS
debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates bookworm "$work/builder" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
echo "    $((SECONDS - started)) s"

if ! have "$builder"; then
  echo "--> $builder: the rootfs and this machine's Rust toolchain"
  toolchain=$(rustc --print sysroot)
  version=$(rustc --version | cut -d' ' -f2)
  host=$(rustc -vV | sed -n 's/^host: //p')
  name="$version-$host"
  mkdir -p "$work/builder/usr/local/rustup/toolchains/$name" "$work/builder/usr/local/cargo/bin"
  # the compiler, cargo and the standard library; not the documentation (share/)
  cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$toolchain/etc" \
    "$work/builder/usr/local/rustup/toolchains/$name/"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" \
    >"$work/builder/usr/local/rustup/settings.toml"
  cp "$(command -v rustup)" "$work/builder/usr/local/cargo/bin/rustup"
  for proxy in cargo rustc rustdoc; do ln -s rustup "$work/builder/usr/local/cargo/bin/$proxy"; done
  # this machine's CA bundle: its way out to crates.io passes a TLS proxy with a CA of its own
  cp /etc/ssl/certs/ca-certificates.crt "$work/builder/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$work/builder/var/cache/apt/archives/"*.deb "$work/builder/var/lib/apt/lists/"*
  container=$("${buildah[@]}" from scratch)
  "${buildah[@]}" copy --quiet "$container" "$work/builder/" / >/dev/null
  "${buildah[@]}" config \
    --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$version" --cmd /bin/bash "$container"
  "${buildah[@]}" commit --quiet "$container" "$builder" >/dev/null
  "${buildah[@]}" rm "$container" >/dev/null
fi

if ! have "$runtime"; then
  echo "--> $runtime: glibc, libgcc_s, tzdata, CA certificates, nonroot"
  root="$work/runtime"
  mkdir -p "$root"
  for package in base-files libc6 libgcc-s1 tzdata netbase; do
    deb=$(ls "$work/builder/var/cache/apt/archives/${package}_"*.deb 2>/dev/null | head -1 || true)
    if [ -z "$deb" ]; then
      (cd "$work" && apt-get download "$package" >/dev/null 2>&1)
      deb=$(ls "$work/${package}_"*.deb | head -1)
    fi
    dpkg-deb -x "$deb" "$root"
  done
  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
  chown 65532:65532 "$root/home/nonroot"
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/lintian"
  container=$("${buildah[@]}" from scratch)
  "${buildah[@]}" copy --quiet "$container" "$root/" / >/dev/null
  "${buildah[@]}" config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$container"
  "${buildah[@]}" commit --quiet "$container" "$runtime" >/dev/null
  "${buildah[@]}" rm "$container" >/dev/null
fi
echo "base images: $builder and $runtime"
