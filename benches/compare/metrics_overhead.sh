#!/usr/bin/env bash
# What counting costs: the relay's throughput and CPU per message with
# metrics kept (an [admin] table) and without, in one run, interleaved.
# wsgate keeps no metrics when the configuration has no [admin] table.
#
# Usage: benches/compare/metrics_overhead.sh [REPEATS] [SECONDS]
# Loopback only: echo backend on 127.0.0.1:18000, wsgate on 18030, admin on
# 18039 (checked free first). wsgate runs on CPU 0; echo and load on CPU 1.
set -euo pipefail

REPEATS=${1:-5}
SECONDS_PER_RUN=${2:-5}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-metrics"
mkdir -p "$OUT"
# shellcheck source=benches/compare/common.sh
source "$ROOT/benches/compare/common.sh"

for port in 18000 18030 18039; do
    port_busy "$port" && die "port $port is in use"
done
build_binaries "$OUT"

base='[defaults]
idle_timeout = "1h"

[[listener]]
name = "ws"
bind = "127.0.0.1:18030"

[[route]]
pool = "echo"

[[pool]]
name = "echo"
backends = [{ addr = "127.0.0.1:18000" }]
'
printf '%s' "$base" >"$OUT/off.toml"
printf '[admin]\nbind = "127.0.0.1:18039"\n\n%s' "$base" >"$OUT/on.toml"

RUST_LOG=warn taskset -c 1 "$WSGATE" echo --bind 127.0.0.1:18000 --workers 1 >"$OUT/echo.log" 2>&1 &
ECHO=$!
trap 'kill $ECHO 2>/dev/null || true; [[ -n ${PROXY:-} ]] && kill $PROXY 2>/dev/null || true' EXIT
sleep 0.5

: >"$OUT/results.jsonl"
for repeat in $(seq "$REPEATS"); do
    for variant in off on; do
        for size in 64 16384; do
            RUST_LOG=warn taskset -c 0 "$WSGATE" --config "$OUT/$variant.toml" --workers 1 >>"$OUT/wsgate.log" 2>&1 &
            PROXY=$!
            for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/18030) 2>/dev/null && break; sleep 0.05; done
            if [[ $size == 64 ]]; then args=(-c 8 -w 16); else args=(-c 4 -w 4); fi
            log "repeat $repeat, metrics $variant, ${size} B"
            taskset -c 1 "$LOAD" throughput --url ws://127.0.0.1:18030/ "${args[@]}" --size "$size" \
                -d "${SECONDS_PER_RUN}s" --pid "$PROXY" --label "metrics=$variant" --label "size=$size" \
                >>"$OUT/results.jsonl" 2>/dev/null
            kill "$PROXY"; wait "$PROXY" 2>/dev/null || true; PROXY=
        done
    done
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def pick(variant, size, key):
    out = []
    for r in rows:
        if r["labels"].get("metrics") == variant and r["labels"].get("size") == str(size):
            crossings = 2 * r["counts"]["received"]
            if key == "cpu":
                out.append(r["watched"]["cpu_us"] / crossings)
            else:
                out.append(r["rates"]["received_mb_per_s"])
    return out
print("| figure | metrics off | metrics on | on ÷ off |")
print("| --- | ---: | ---: | ---: |")
for size, key, label in [(64, "cpu", "CPU per message crossing, 64 B (µs)"),
                         (64, "mb", "64 B throughput (MB/s each way)"),
                         (16384, "cpu", "CPU per message crossing, 16 KiB (µs)"),
                         (16384, "mb", "16 KiB throughput (MB/s each way)")]:
    off, on = pick("off", size, key), pick("on", size, key)
    mo, mn = statistics.median(off), statistics.median(on)
    print(f"| {label} | {mo:.3f} ({min(off):.3f}–{max(off):.3f}) | {mn:.3f} ({min(on):.3f}–{max(on):.3f}) | {mn / mo:.3f}× |")
PY
