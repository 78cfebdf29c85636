# syntax=docker/dockerfile:1
# wsgate's container image: see docs/operations.md, "Docker".
# Build:  docker build -t wsgate .
# Demo:   docker run --rm -p 8080:8080 wsgate   (ws://localhost:8080/echo)
# Real:   docker run --rm --stop-timeout 40 -p 8080:8080 \
#           -v "$PWD/wsgate:/etc/wsgate:ro" wsgate --config /etc/wsgate/wsgate.toml

# Build stage: the full Rust toolchain, only to compile.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: built against stub sources from
# the manifest and lock alone, so that a change under src/ reuses it.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches/load \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/frame.rs \
    && echo 'fn main() {}' > benches/load/main.rs \
    && cargo build --release --locked --bin wsgate \
    && rm -rf src benches

# The real sources. `touch` makes them newer than the stubs' build, whatever
# times the build context carried.
COPY src ./src
COPY benches ./benches
COPY config.example.toml ./
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin wsgate

# Runtime stage: a small Debian image with the stripped binary, no toolchain.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --shell /usr/sbin/nologin wsgate \
    && mkdir -p /etc/wsgate /usr/share/wsgate
COPY --from=build /src/target/release/wsgate /usr/local/bin/wsgate
COPY deploy/container/demo.toml /usr/share/wsgate/demo.toml
USER 10001:10001
# ws:// listener and admin endpoints, as in deploy/container/demo.toml and
# as a mounted configuration is expected to use them.
EXPOSE 8080
# Readiness from the admin listener (a mounted configuration keeps it on
# port 9900, on 0.0.0.0 or 127.0.0.1): 0 once listeners are bound and a
# configuration is loaded, 1 while starting or shutting down.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/wsgate", "health", "--admin", "127.0.0.1:9900", "--timeout", "4s"]
# SIGTERM drains for up to drain_timeout (30 s by default), then 5 s of
# close grace: give `docker stop` --stop-timeout 40.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wsgate"]
CMD ["demo", "--config", "/usr/share/wsgate/demo.toml"]
