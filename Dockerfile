# Build stage: the full Rust toolchain, only to compile.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config.example.toml ./
RUN cargo build --release --locked --bin wsgate

# Runtime stage: a small Debian image, no toolchain, no shell tools needed.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wsgate \
    && mkdir -p /etc/wsgate
COPY --from=build /src/target/release/wsgate /usr/local/bin/wsgate
COPY config.example.toml /etc/wsgate/wsgate.toml
USER wsgate
# ws:// listener, wss:// listener, admin endpoints (as in config.example.toml).
EXPOSE 8080 8443 9900
ENTRYPOINT ["/usr/local/bin/wsgate"]
CMD ["--config", "/etc/wsgate/wsgate.toml"]
