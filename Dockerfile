# sluice serve, built from this repository.
#   docker compose up --build     (see docker-compose.yml)

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# rust-toolchain.toml pins the compiler and adds the wasm targets (wasm32-wasip2 for the plugins, wasm32-unknown-unknown for the embedded stock plugin).
COPY rust-toolchain.toml ./
RUN rustup toolchain install
COPY . .
RUN cargo build --release --locked --bin sluice \
    && cp target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
USER sluice
ENV SLUICE_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --retries=12 CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["sluice"]
CMD ["serve"]
