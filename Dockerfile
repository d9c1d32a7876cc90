# syntax=docker/dockerfile:1
# Palisade: one `palisade` binary for the gateway and the control plane.
#
#   docker build -t palisade .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY -v "$PWD/keys.yaml:/etc/palisade/keys.yaml:ro" palisade
#                                  # gateway on the sample pack; callers from keys.yaml (see configs/keys/example.yaml)
#   docker run --rm -p 8070:8070 palisade control-plane --listen 0.0.0.0:8070
#
# Stage 1 builds the dependencies from the manifests alone, so editing a source file does not
# rebuild the dependency layer. Stage 2 is distroless: CA certificates, a non-root user, no shell.

FROM rust:1-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY policy-engine/Cargo.toml policy-engine/
COPY gateway/Cargo.toml gateway/
COPY control-plane/Cargo.toml control-plane/
COPY cli/Cargo.toml cli/
# Stub every target the manifests declare (libraries, the binary, benches) and build the deps.
RUN set -eu; \
    for crate in policy-engine gateway control-plane; do mkdir -p "$crate/src" && : > "$crate/src/lib.rs"; done; \
    mkdir -p cli/src && echo 'fn main() {}' > cli/src/main.rs; \
    for manifest in */Cargo.toml; do \
      dir="${manifest%/Cargo.toml}"; \
      awk '/^\[\[bench\]\]/{b=1} b && /^name/{gsub(/[" ]/,""); split($0,a,"="); print a[2]; b=0}' "$manifest" \
        | while read -r bench; do mkdir -p "$dir/benches" && echo 'fn main() {}' > "$dir/benches/$bench.rs"; done; \
    done; \
    cargo build --release --locked -p palisade
COPY . .
# Make sure cargo sees the real sources as newer than the stubs.
RUN touch policy-engine/src/lib.rs gateway/src/lib.rs control-plane/src/lib.rs cli/src/main.rs \
 && cargo build --release --locked -p palisade \
 && cp target/release/palisade /palisade

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /palisade /usr/local/bin/palisade
COPY configs/ /etc/palisade/
USER 65532:65532
WORKDIR /var/lib/palisade
# 8080: gateway (OpenAI API, /metrics, /healthz, /readyz, /status). 8070: control plane.
EXPOSE 8080 8070
# No HEALTHCHECK: the image has no shell or curl on purpose. Orchestrators probe over HTTP:
# liveness GET /healthz, readiness GET /readyz (ready once a pack is active).
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["gateway", "--pack", "/etc/palisade/support.yaml", "--environment", "dev", "--listen", "0.0.0.0:8080", "--keys", "/etc/palisade/keys.yaml"]
