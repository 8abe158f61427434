# syntax=docker/dockerfile:1
# One image per Lambda function, all from this file: `--build-arg HANDLER=<function>` (any of
# ARG FUNCTIONS below: the twelve chat functions, and authorize for sign-in). The binary is the
# image's entrypoint and speaks the Lambda Runtime API itself; the ADOT collector extension from
# the official layer is baked in under /opt/extensions (container-image functions cannot attach
# layers), configured by otel/collector.yaml.
#
# Built once, however many images: the compile stage does not depend on HANDLER (only the
# `handler` stage, which copies one file, does), so it is the same for every function. BuildKit
# serves it from its cache to every image after the first, and its cargo registry and target
# directory are cache mounts (locked: concurrent builds take turns), so a second build finds
# nothing to compile and a code change recompiles this crate only (and the dist profile's fat LTO
# optimizes each of the nine binaries again: 343 s against the release profile's 129 s on 2
# cores, docs/benchmarks.md). It runs on the build machine's own architecture and cross-compiles
# (FROM --platform=$BUILDPLATFORM; TARGETARCH picks the Rust target and Debian's cross gcc), so an
# arm64 image built on x86_64 runs nothing under emulation.
#
# The ADOT layer: the Pulumi program (pulumi/adot.ts) downloads the layer's zip once, checks it
# against the CodeSha256 Lambda gives, and keeps it at build/adot-layer/<sha256 hex>.zip;
# ADOT_LAYER_SHA256 names that file. Nothing in the build fetches it, so a build never meets an
# expired download URL, and an unchanged layer changes no build input.
#
#   docker buildx build --platform linux/arm64 --build-arg HANDLER=connect \
#     --build-arg ADOT_LAYER_SHA256=<hex> -t webchat-connect .
#
# BUILDER_IMAGE and RUNTIME_IMAGE exist so that where these public images cannot be pulled, local
# equivalents can stand in: tests/image/test.sh builds with ones assembled from Debian's packages.
ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
# glibc, libgcc, CA certificates and nsswitch for a binary linked on bookworm; no shell; ~20 MB.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# The toolchain for TARGETARCH, on the build machine's architecture.
FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS toolchain
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TARGETARCH
ARG BUILDARCH
# Bookworm's packages are fixed within the release: pinning them adds nothing but breakage.
# ${cross} is a list of packages, split on purpose.
# hadolint ignore=DL3008,SC2086
RUN case "${TARGETARCH}" in \
      arm64) target=aarch64-unknown-linux-gnu; cross="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      amd64) target=x86_64-unknown-linux-gnu; cross="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      *) echo "TARGETARCH ${TARGETARCH}: Lambda runs arm64 or amd64" >&2; exit 1 ;; \
    esac \
    && if [ "${TARGETARCH}" = "${BUILDARCH}" ]; then cross=""; fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends unzip ${cross} \
    && rm -rf /var/lib/apt/lists/* \
    && if [ -n "${cross}" ]; then rustup target add "${target}"; fi \
    && echo "${target}" > /rust-target
# Debian names each gcc <gnu triple>-gcc, natively and as a cross compiler alike.
ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    AR_x86_64_unknown_linux_gnu=x86_64-linux-gnu-ar

# The nine function binaries, compiled once: /out/<function>. The dist profile (Cargo.toml) is
# size-optimized with whole-program LTO, one link per binary, so only the functions are built
# (not webchat-local or the terminal client), with the `aws` feature alone: nothing of the local
# gateway (axum, the hyper server, clap, the websocket server) compiles here. FUNCTIONS must name
# every function (tests/lambda/contract.rs checks it against the crate's list). benches/ is
# copied only because Cargo reads every target the manifest declares; none of it compiles here.
FROM toolchain AS builder
ARG FUNCTIONS="connect disconnect default broadcast list chat join leave history post cleanup fanout authorize"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# ${bins} is a list of --bin options, split on purpose.
# hadolint ignore=SC2086
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    target="$(cat /rust-target)" \
    && test -n "${FUNCTIONS}" \
    && bins="" && for f in ${FUNCTIONS}; do bins="${bins} --bin ${f}"; done \
    && cargo build --locked --profile dist --no-default-features --features aws --target "${target}" ${bins} \
    && mkdir -p /out \
    && for f in ${FUNCTIONS}; do cp "target/${target}/dist/${f}" /out/ || exit 1; done

# The ADOT collector extension, from the layer's zip the program fetched and checked.
FROM toolchain AS adot
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG ADOT_LAYER_SHA256
COPY build/adot-layer/${ADOT_LAYER_SHA256}.zip /tmp/layer.zip
RUN echo "${ADOT_LAYER_SHA256}  /tmp/layer.zip" | sha256sum --check --quiet \
    && unzip -q /tmp/layer.zip 'extensions/*' -d /out \
    && test -x /out/extensions/collector

# The one binary this image runs, named by HANDLER.
FROM builder AS handler
ARG HANDLER
RUN if [ -z "${HANDLER}" ] || [ ! -x "/out/${HANDLER}" ]; then \
      echo "--build-arg HANDLER= must name one of: $(ls /out)" >&2; exit 1; \
    fi \
    && cp "/out/${HANDLER}" /bootstrap

FROM ${RUNTIME_IMAGE}
COPY --from=adot /out/extensions/ /opt/extensions/
COPY otel/collector.yaml /opt/collector-config/webchat.yaml
ENV OPENTELEMETRY_COLLECTOR_CONFIG_URI=/opt/collector-config/webchat.yaml
COPY --from=handler /bootstrap /bootstrap
ENTRYPOINT ["/bootstrap"]
