# syntax=docker/dockerfile:1
# One image per Lambda function: `--build-arg HANDLER=<function>` (connect, disconnect, default,
# broadcast, list, chat, post, cleanup). The binary is the image's entrypoint and talks to the
# Lambda Runtime API itself; the ADOT collector extension from the official layer is baked in
# under /opt/extensions (container-image functions cannot attach layers), configured by
# otel/collector.yaml.
#
# The Pulumi program builds it with HANDLER and ADOT_LAYER_URL (the layer's download location,
# which it resolves). The other arguments exist so that what cannot be fetched somewhere (base
# images, the layer) can be substituted there; tests/image/test.sh builds with
#   BINARY_FROM=prebuilt RUNTIME_IMAGE=scratch ADOT_FROM=adot-context
# because this machine reaches no image registry.

ARG BUILDER_IMAGE=docker.io/library/rust:1.95-slim-bookworm
# glibc, CA certificates and nsswitch (DNS) for a binary built on bookworm; ~20 MB; no shell.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARY_FROM=compiled
ARG ADOT_FROM=adot-layer

# The function's binary, compiled from this repository.
FROM ${BUILDER_IMAGE} AS compiled
ARG HANDLER
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY web ./web
COPY benches ./benches
RUN test -n "${HANDLER}" \
    && cargo build --locked --profile dist --bin "${HANDLER}" \
    && install -D -m 0755 "target/dist/${HANDLER}" /out/bootstrap

# Or a binary built beforehand (static, for a scratch base): target/dist-static/<handler>.
FROM scratch AS prebuilt
ARG HANDLER
COPY target/dist-static/${HANDLER} /out/bootstrap

# The ADOT collector extension, from the official Lambda layer.
FROM ${BUILDER_IMAGE} AS adot-layer
ARG ADOT_LAYER_URL
# ADD, not COPY: it downloads the layer from the presigned URL the program resolved.
# hadolint ignore=DL3020
ADD ${ADOT_LAYER_URL} /tmp/layer.zip
RUN apt-get update \
    && apt-get install -y --no-install-recommends unzip=6.* \
    && rm -rf /var/lib/apt/lists/* \
    && unzip -q /tmp/layer.zip -d /out \
    && test -x /out/extensions/collector

# Or the extension from the build context: build/adot/extensions/...
FROM scratch AS adot-context
COPY build/adot/ /out/

FROM ${BINARY_FROM} AS binary
FROM ${ADOT_FROM} AS adot

FROM ${RUNTIME_IMAGE}
COPY --from=adot /out/extensions/ /opt/extensions/
COPY otel/collector.yaml /opt/collector-config/webchat.yaml
ENV OPENTELEMETRY_COLLECTOR_CONFIG_URI=/opt/collector-config/webchat.yaml
COPY --from=binary /out/bootstrap /bootstrap
ENTRYPOINT ["/bootstrap"]
