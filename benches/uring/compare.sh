#!/usr/bin/env bash
# The io_uring experiment (docs/benchmarks.md, "io_uring experiment"): the
# minimal relay of benches/uring on io_uring and on epoll, and wsgate
# itself, under the same load in the same run, interleaved.
#
# Usage: benches/uring/compare.sh [options]
#   --quick        about two seconds per run, one repeat, a short strace
#                  pass: proves the script works, the figures mean nothing
#   --repeat N     measured runs per scenario and engine (default 3; quick 1)
#   --no-strace    skip the system call pass
#   -h, --help     this text
#
# Scenarios (as in benches/compare/run.sh): rate = 64 B at 5,000 msg/s over
# 50 connections (rtt), tput64 = 8 connections with 16 messages of 64 B in
# flight (throughput). Engines: uring, epoll (the relay of benches/uring)
# and wsgate (--workers 1, RUST_LOG=warn). Each run starts the engine
# afresh; the load generator reports its CPU time (--pid) and checks every
# echo byte for byte.
#
# CPU and latency come from the measured runs. System calls come from a
# separate pass under `strace -c -f` (which slows the traced process, so
# its CPU figures are not used): each engine and scenario runs twice, for
# a short and a long time, and the difference of the counts over the
# difference of the crossings cancels start-up, upgrades and closes.
#
# Everything listens on 127.0.0.1 on fixed ports, checked free first:
#   18100 echo backend (wsgate echo --workers 1)
#   18110 uring   18120 epoll   18130 wsgate
# The relays run on CPU 0; the echo backend and the load generator on CPU 1.
# Scratch files and raw JSON lines go to ${CARGO_TARGET_DIR:-target}/bench-uring/.
set -euo pipefail

PORTS=(18100 18110 18120 18130)
ENGINES=(uring epoll wsgate)
SCENARIOS=(rate tput64)

usage() { sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QUICK=0 REPEAT="" STRACE=1
ORIGINAL_ARGS="$*"
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        --no-strace) STRACE=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/sbin:/sbin"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-uring"
RESULTS="$OUT/results.jsonl"
SYSCALLS="$OUT/syscalls.txt"

# shellcheck source=benches/compare/common.sh
source "$ROOT/benches/compare/common.sh"

if ((QUICK)); then
    DURATION=2s WARMUP=500ms REPEAT=${REPEAT:-1} STRACE_SHORT=1s STRACE_LONG=2s
else
    DURATION=10s WARMUP=2s REPEAT=${REPEAT:-3} STRACE_SHORT=2s STRACE_LONG=6s
fi
[[ "$REPEAT" =~ ^[1-9][0-9]?$ ]] || die "--repeat must be 1 to 99"

command -v taskset >/dev/null || die "taskset is needed (Debian: apt-get install util-linux)"
if ((STRACE)) && ! command -v strace >/dev/null; then
    die "strace is needed for the system call pass (Debian: apt-get install strace), or pass --no-strace"
fi
if (($(nproc) >= 2)); then
    CPU_PROXY=0 CPU_LOAD=1
else
    log "warning: one CPU only; relays, backend and generator share it"
    CPU_PROXY=0 CPU_LOAD=0
fi
[[ "$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0)" == 0 ]] ||
    die "io_uring is disabled (/proc/sys/kernel/io_uring_disabled)"

# --- processes ---------------------------------------------------------------

ECHO_PID="" TARGET_PID=""

# Stops what this script started, and only that.
cleanup() {
    [[ -n "$TARGET_PID" ]] && stop_pid "$TARGET_PID"
    [[ -n "$ECHO_PID" ]] && stop_pid "$ECHO_PID"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The first child of PID (the program strace runs), from /proc; waits up
# to 5 s for it to appear.
child_of() {
    local parent=$1 p stat fields i
    for ((i = 0; i < 100; i++)); do
        for p in /proc/[0-9]*; do
            stat=$(cat "$p/stat" 2>/dev/null) || continue
            read -r -a fields <<<"${stat##*) }"
            if [[ "${fields[1]}" == "$parent" ]]; then
                echo "${p#/proc/}"
                return 0
            fi
        done
        sleep 0.05
    done
    return 1
}

for port in "${PORTS[@]}"; do
    port_busy "$port" && die "port $port is in use; the experiment needs ${PORTS[*]}"
done

# --- build and set up --------------------------------------------------------------

mkdir -p "$OUT"
: >"$RESULTS"
: >"$SYSCALLS"
: >"$OUT/load.log"
for f in echo uring epoll wsgate; do : >"$OUT/$f.log"; done

build_binaries "$OUT"
log "building the relay of benches/uring (release)"
cargo bench --bench uring --no-run --message-format=json-render-diagnostics >"$OUT/build-uring.json"
RELAY=$(executable "$OUT/build-uring.json" uring)
[[ -x "$RELAY" ]] || die "could not find the built relay"

cat >"$OUT/wsgate.toml" <<'EOF'
# wsgate for benches/uring/compare.sh: ws only, one route to the echo backend.
[defaults]
idle_timeout = "1h"

[[listener]]
name = "ws"
bind = "127.0.0.1:18130"

[[route]]
path_prefix = "/"
pool = "echo"

[[pool]]
name = "echo"
backends = [{ addr = "127.0.0.1:18100" }]
EOF

RUST_LOG=warn taskset -c "$CPU_LOAD" "$WSGATE" echo --bind 127.0.0.1:18100 --workers 1 \
    >>"$OUT/echo.log" 2>&1 &
ECHO_PID=$!
wait_listening 18100 "$ECHO_PID" || die "the echo backend did not start; see $OUT/echo.log"

port_of() { # ENGINE
    case "$1" in
        uring) echo 18110 ;;
        epoll) echo 18120 ;;
        wsgate) echo 18130 ;;
    esac
}

# Starts ENGINE on CPU 0, under WRAP (a command prefix, or nothing); sets
# TARGET_PID to the process itself (not to strace).
start_engine() { # ENGINE [WRAP...]
    local engine=$1 port
    shift
    port=$(port_of "$engine")
    case "$engine" in
        uring | epoll)
            taskset -c "$CPU_PROXY" "$@" "$RELAY" --engine "$engine" \
                --listen "127.0.0.1:$port" --backend 127.0.0.1:18100 >>"$OUT/$engine.log" 2>&1 &
            ;;
        wsgate)
            RUST_LOG=warn taskset -c "$CPU_PROXY" "$@" "$WSGATE" --config "$OUT/wsgate.toml" \
                --workers 1 >>"$OUT/wsgate.log" 2>&1 &
            ;;
    esac
    TARGET_PID=$!
    local wrapper=$TARGET_PID
    if (($#)); then
        TARGET_PID=$(child_of "$wrapper") || die "$engine did not start under $1"
    fi
    wait_listening "$port" "$wrapper" || die "$engine did not start; see $OUT/$engine.log"
}

# Stops the engine; under strace, waits for strace to write its summary.
stop_engine() { # [WRAPPER_PID]
    [[ -n "$TARGET_PID" ]] && stop_pid "$TARGET_PID"
    TARGET_PID=""
    if [[ -n "${1:-}" ]]; then
        wait "$1" 2>/dev/null || true
    fi
}

mode_args() { # SCENARIO
    case "$1" in
        rate) echo rtt -c 50 --size 64 --rate 5000 ;;
        tput64) echo throughput -c 8 -w 16 --size 64 ;;
    esac
}

# Runs the generator against ENGINE; its JSON line goes to FILE.
load_run() { # ENGINE SCENARIO FILE DURATION WARMUP [MORE...]
    local engine=$1 scenario=$2 file=$3 duration=$4 warmup=$5 args status=0
    shift 5
    read -r -a args <<<"$(mode_args "$scenario")"
    timeout 300s taskset -c "$CPU_LOAD" "$LOAD" "${args[@]}" -d "$duration" --warmup "$warmup" \
        --url "ws://127.0.0.1:$(port_of "$engine")/echo" --check "$@" \
        >>"$file" 2>"$OUT/last.log" || status=$?
    sed 's/^/    /' "$OUT/last.log" >&2
    cat "$OUT/last.log" >>"$OUT/load.log"
    ((status == 0)) || log "  the generator reported a failure (exit $status); see $OUT/load.log"
    return 0
}

# --- measured runs -------------------------------------------------------------------

for scenario in "${SCENARIOS[@]}"; do
    for ((repeat = 1; repeat <= REPEAT; repeat++)); do
        for engine in "${ENGINES[@]}"; do
            log "$scenario via $engine (repeat $repeat)"
            start_engine "$engine"
            load_run "$engine" "$scenario" "$RESULTS" "$DURATION" "$WARMUP" --pid "$TARGET_PID" \
                --label "engine=$engine" --label "scenario=$scenario" --label "repeat=$repeat"
            stop_engine
        done
    done
done

# --- system call pass -------------------------------------------------------------

# The echoed messages in the last JSON line of FILE.
echoed() { { grep -o '"received":[0-9]*' "$1" || echo :0; } | tail -n 1 | cut -d: -f2; }

if ((STRACE)); then
    for scenario in "${SCENARIOS[@]}"; do
        for engine in "${ENGINES[@]}"; do
            files=() counts=()
            for length in "$STRACE_SHORT" "$STRACE_LONG"; do
                trace="$OUT/strace-$engine-$scenario-$length.txt"
                json="$OUT/strace-$engine-$scenario-$length.jsonl"
                : >"$json"
                log "$scenario via $engine under strace -c -f ($length, no warm-up)"
                start_engine "$engine" strace -f -c -o "$trace"
                wrapper=$!
                # No warm-up: the echoed count covers every message the
                # process relayed.
                load_run "$engine" "$scenario" "$json" "$length" 0s
                stop_engine "$wrapper"
                files+=("$trace")
                counts+=("$(echoed "$json")")
            done
            echo "$engine $scenario ${files[0]} ${files[1]} ${counts[0]:-0} ${counts[1]:-0}" >>"$SYSCALLS"
        done
    done
fi

# --- report ----------------------------------------------------------------------------

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit with local changes"
echo
echo "io_uring experiment, $(date -u '+%Y-%m-%d %H:%M UTC'), wsgate $commit"
echo "machine: $(nproc) CPUs ($cpu_model), Linux $(uname -r)"
echo "runs: $DURATION measured after $WARMUP warm-up, $REPEAT repeat(s), interleaved;" \
    "relays on CPU $CPU_PROXY, echo backend (wsgate echo --workers 1) and generator on CPU $CPU_LOAD"
((STRACE)) && echo "system calls: strace -c -f, ($STRACE_LONG run − $STRACE_SHORT run) / crossings"
echo "command: benches/uring/compare.sh${ORIGINAL_ARGS:+ $ORIGINAL_ARGS}"
echo
report=(--report "$RESULTS")
((STRACE)) && report+=(--syscalls "$SYSCALLS")
"$RELAY" "${report[@]}"
log "raw lines in $RESULTS; strace summaries in $OUT"
