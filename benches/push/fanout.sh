#!/usr/bin/env bash
# Push fan-out: one publish to a channel of 9,000 connections on one wsgate
# instance, then of 3 x 3,000 on three instances sharing one Redis. Prints
# one JSON line per setup (see docs/benchmarks.md, "Push fan-out").
#
# Usage: benches/push/fanout.sh [--connections N] [--size BYTES]
#
# Listens on 127.0.0.1, fixed ports checked free first:
#   18000         echo backend (wsgate echo)
#   18030..18032  wsgate instances (WebSocket)
#   18040..18042  their publish listeners
#   18079         redis-server (three-node run only)
# Needs redis-server (apt-get install redis-server) and a descriptor limit
# above twice the connections (the script raises it when it can).
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNECTIONS=9000
SIZE=64
while (($#)); do
    case "$1" in
        --connections) CONNECTIONS="${2:?}"; shift ;;
        --size) SIZE="${2:?}"; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fanout.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

for port in 18000 18030 18031 18032 18040 18041 18042 18079; do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "fanout.sh: port $port is in use" >&2
        exit 1
    fi
done
ulimit -n 65536 2>/dev/null || true

SCRATCH="${CARGO_TARGET_DIR:-target}/bench-push"
mkdir -p "$SCRATCH"
TOKEN=bench-token
printf '%s\n' "$TOKEN" >"$SCRATCH/token"
cargo build --release --quiet --bin wsgate
cargo bench --no-run --quiet --bench push_fanout
WSGATE=${CARGO_TARGET_DIR:-target}/release/wsgate

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$WSGATE" echo --bind 127.0.0.1:18000 2>"$SCRATCH/echo.log" &
PIDS+=($!)

# config NODE CLUSTER: a wsgate configuration for instance NODE (0..2).
config() {
    cat <<TOML
[defaults]
idle_timeout = "1h"

[[listener]]
name = "ws"
bind = "127.0.0.1:1803$1"

[[route]]
path_prefix = "/"
pool = "echo"
tags = { channels = "query:channels" }

[[pool]]
name = "echo"
backends = [{ addr = "127.0.0.1:18000" }]

[publish]
bind = "127.0.0.1:1804$1"
token = "file:token"
TOML
    if [ "$2" = 1 ]; then
        printf '\n[cluster]\nredis = "redis://127.0.0.1:18079"\nnode_id = "bench-%s"\nheartbeat = "1s"\n' "$1"
    fi
}

wait_port() {
    for _ in $(seq 1 200); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "fanout.sh: nothing listens on $1" >&2
    exit 1
}

fanout() {
    cargo bench --quiet --bench push_fanout -- "$@" --publish 127.0.0.1:18040 \
        --token "$TOKEN" -c "$CONNECTIONS" --size "$SIZE" --settle 3s
}

# One node.
config 0 0 >"$SCRATCH/node0.toml"
"$WSGATE" --config "$SCRATCH/node0.toml" 2>"$SCRATCH/node0.log" &
PIDS+=($!)
wait_port 18040
echo "one node, $CONNECTIONS connections:"
fanout --url ws://127.0.0.1:18030/
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true

# Three nodes on one Redis.
redis-server --port 18079 --bind 127.0.0.1 --save "" --appendonly no >"$SCRATCH/redis.log" 2>&1 &
PIDS+=($!)
wait_port 18079
for n in 0 1 2; do
    config "$n" 1 >"$SCRATCH/node$n.toml"
    "$WSGATE" --config "$SCRATCH/node$n.toml" 2>"$SCRATCH/node$n.log" &
    PIDS+=($!)
    wait_port "1804$n"
done
echo "three nodes, $CONNECTIONS connections in all:"
fanout --url ws://127.0.0.1:18030/ --url ws://127.0.0.1:18031/ --url ws://127.0.0.1:18032/
