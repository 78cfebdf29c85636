#!/usr/bin/env bash
# Compares wsgate with nginx and HAProxy as plain HTTP reverse proxies:
# small GETs over keep-alive, requests per second and the proxy's CPU time
# per request. docs/benchmarks.md ("HTTP requests") explains the figures.
#
# Usage: benches/compare/http.sh [options]
#   --quick            2 s per run, one repeat
#   --targets LIST     from nginx,haproxy,wsgate (default: all)
#   --repeat N         runs per target (default 3; quick 1)
#   --duration S       seconds measured per run (default 10; quick 2)
#   --connections N    wrk's keep-alive connections (default 32)
#   -h, --help         this text
#
# Everything listens on 127.0.0.1 on fixed ports, checked free first:
#   18001  the origin (nginx answering a 22-byte body)
#   18012  nginx   18022  HAProxy   18032  wsgate
# Proxies run on CPU 0; the origin and wrk (one thread) on CPU 1. Each run
# starts the proxy fresh, warms it up for 2 s, then reads the proxy's CPU
# time (utime + stime of every process of it, from /proc/PID/stat) before
# and after the measured wrk run and divides it by the requests wrk
# completed. The table gives the median of the repeats for each proxy and
# the ratio to the better of nginx and HAProxy. Scratch files and wrk's
# output go to ${CARGO_TARGET_DIR:-target}/bench-http/.
set -euo pipefail

PORTS=(18001 18012 18022 18032)
ALL_TARGETS=(nginx haproxy wsgate)

usage() { sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QUICK=0
TARGETS_ARG=$(IFS=,; echo "${ALL_TARGETS[*]}")
REPEAT="" DURATION="" CONNS=32
ORIGINAL_ARGS="$*"
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        --targets) TARGETS_ARG="${2:?--targets needs a list}"; shift ;;
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        --connections) CONNS="${2:?--connections needs a number}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "http.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/sbin:/sbin"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-http"

# shellcheck source=benches/compare/common.sh
source "$ROOT/benches/compare/common.sh"

if ((QUICK)); then
    REPEAT=${REPEAT:-1} DURATION=${DURATION:-2}
else
    REPEAT=${REPEAT:-3} DURATION=${DURATION:-10}
fi
WARMUP=2
[[ "$REPEAT" =~ ^[1-9][0-9]?$ ]] || die "--repeat must be 1 to 99"
[[ "$DURATION" =~ ^[1-9][0-9]{0,2}$ ]] || die "--duration must be 1 to 999 seconds"
[[ "$CONNS" =~ ^[1-9][0-9]{0,2}$ ]] || die "--connections must be 1 to 999"
for t in ${TARGETS_ARG//,/ }; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "--targets: unknown target $t"
done

# --- tools -----------------------------------------------------------------

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${missing[*]}"
        sudo=sudo
    fi
    log "installing ${missing[*]} from Debian"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2
fi
command -v cargo >/dev/null || die "cargo is needed to build wsgate"

if (($(nproc) >= 2)); then
    CPU_PROXY=0 CPU_LOAD=1
else
    log "warning: one CPU only; proxies, origin and wrk share it"
    CPU_PROXY=0 CPU_LOAD=0
fi
TICKS=$(getconf CLK_TCK)

# --- processes ---------------------------------------------------------------

ORIGIN_PID="" TARGET_PID=""

# Stops what this script started, and only that.
cleanup() {
    [[ -n "$TARGET_PID" ]] && stop_pid "$TARGET_PID"
    [[ -n "$ORIGIN_PID" ]] && stop_pid "$ORIGIN_PID"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PID and its children (nginx's worker under its master), from /proc.
family_of() {
    local parent=$1 p stat fields
    echo "$parent"
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        read -r -a fields <<<"${stat##*) }"
        [[ "${fields[1]}" == "$parent" ]] && echo "${p#/proc/}"
    done
}

# User plus system CPU ticks of the processes PIDS (all their threads).
cpu_ticks() {
    local total=0 p stat fields
    for p in "$@"; do
        stat=$(cat "/proc/$p/stat") || die "process $p is gone"
        read -r -a fields <<<"${stat##*) }"
        # utime and stime: fields 14 and 15 of stat, 12 and 13 after ')'.
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

for port in "${PORTS[@]}"; do
    port_busy "$port" && die "port $port is in use; the benchmark needs ${PORTS[*]}"
done

# --- build and set up ----------------------------------------------------------

mkdir -p "$OUT/nginx-tmp"
log "building wsgate (release)"
cargo build --release --bin wsgate --message-format=json-render-diagnostics >"$OUT/build-wsgate.json"
WSGATE=$(executable "$OUT/build-wsgate.json" wsgate)
[[ -x "$WSGATE" ]] || die "could not find the built wsgate"
for f in http-origin.conf http-nginx.conf http-haproxy.cfg http-wsgate.toml; do
    sed "s|@WORK@|$OUT|g" "$ROOT/benches/compare/$f" >"$OUT/$f"
done
: >"$OUT/wrk.log"

taskset -c "$CPU_LOAD" nginx -p "$OUT" -c "$OUT/http-origin.conf" -e "$OUT/http-origin-error.log" \
    >>"$OUT/origin.log" 2>&1 &
ORIGIN_PID=$!
wait_listening 18001 "$ORIGIN_PID" || die "the origin did not start; see $OUT/http-origin-error.log"

start_target() { # TARGET; sets TARGET_PID and PORT
    case "$1" in
        nginx)
            PORT=18012
            taskset -c "$CPU_PROXY" nginx -p "$OUT" -c "$OUT/http-nginx.conf" \
                -e "$OUT/http-nginx-error.log" >>"$OUT/nginx.log" 2>&1 &
            ;;
        haproxy)
            PORT=18022
            taskset -c "$CPU_PROXY" haproxy -db -f "$OUT/http-haproxy.cfg" >>"$OUT/haproxy.log" 2>&1 &
            ;;
        wsgate)
            PORT=18032
            # Warnings only, as nginx (access_log off, error_log warn) and
            # HAProxy (no log directive) run: no access log line per request.
            RUST_LOG=warn taskset -c "$CPU_PROXY" "$WSGATE" --config "$OUT/http-wsgate.toml" \
                --workers 1 >>"$OUT/wsgate.log" 2>&1 &
            ;;
    esac
    TARGET_PID=$!
    wait_listening "$PORT" "$TARGET_PID"
}

# Runs wrk for SECONDS against PORT; its output goes to FILE. False on
# socket errors or any answer but 2xx/3xx.
run_wrk() { # PORT SECONDS FILE
    timeout $(($2 + 30))s taskset -c "$CPU_LOAD" wrk -t 1 -c "$CONNS" -d "${2}s" \
        "http://127.0.0.1:$1/" >"$3" 2>&1 || return 1
    cat "$3" >>"$OUT/wrk.log"
    ! grep -qE 'Socket errors|Non-2xx' "$3"
}

# --- runs ------------------------------------------------------------------------

ROWS=()  # "target rps us_per_request"
for ((repeat = 1; repeat <= REPEAT; repeat++)); do
    for target in "${ALL_TARGETS[@]}"; do
        [[ ",$TARGETS_ARG," == *",$target,"* ]] || continue
        start_target "$target" || die "$target did not start; see $OUT/$target.log"
        mapfile -t pids < <(family_of "$TARGET_PID")
        if [[ $target == nginx ]]; then
            for ((i = 0; i < 100 && ${#pids[@]} < 2; i++)); do
                sleep 0.05
                mapfile -t pids < <(family_of "$TARGET_PID")
            done
        fi
        run_wrk "$PORT" "$WARMUP" "$OUT/warmup.txt" ||
            die "$target: the warm-up failed; see $OUT/warmup.txt"
        before=$(cpu_ticks "${pids[@]}")
        run_wrk "$PORT" "$DURATION" "$OUT/run.txt" ||
            die "$target: the run failed; see $OUT/run.txt"
        after=$(cpu_ticks "${pids[@]}")
        requests=$(awk '/requests in/ {print $1}' "$OUT/run.txt")
        rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$OUT/run.txt")
        us=$(awk -v t=$((after - before)) -v hz="$TICKS" -v n="$requests" \
            'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
        log "$target (repeat $repeat): $rps requests/s, $us µs CPU per request"
        ROWS+=("$target $rps $us")
        stop_pid "$TARGET_PID"
        TARGET_PID=""
    done
done

# --- report ------------------------------------------------------------------------

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
declare -A RPS US
for target in "${ALL_TARGETS[@]}"; do
    [[ ",$TARGETS_ARG," == *",$target,"* ]] || continue
    RPS[$target]=$(printf '%s\n' "${ROWS[@]}" | awk -v t="$target" '$1 == t {print $2}' | median)
    US[$target]=$(printf '%s\n' "${ROWS[@]}" | awk -v t="$target" '$1 == t {print $3}' | median)
done
best_rps="" best_us=""
for target in nginx haproxy; do
    [[ -n "${RPS[$target]:-}" ]] || continue
    if [[ -z $best_rps ]] || awk -v a="${RPS[$target]}" -v b="$best_rps" 'BEGIN {exit !(a > b)}'; then
        best_rps=${RPS[$target]}
    fi
    if [[ -z $best_us ]] || awk -v a="${US[$target]}" -v b="$best_us" 'BEGIN {exit !(a < b)}'; then
        best_us=${US[$target]}
    fi
done
ratio() { # VALUE BEST
    [[ -n $2 ]] || { echo "-"; return; }
    awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f×", a / b}'
}

echo
echo "Small GETs over keep-alive: wrk, 1 thread, $CONNS connections, ${DURATION} s measured after ${WARMUP} s warm-up; median of $REPEAT run(s)."
echo "Command: \`benches/compare/http.sh${ORIGINAL_ARGS:+ $ORIGINAL_ARGS}\`; load average before the report: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| proxy | requests/s | vs better | CPU µs per request | vs better |"
echo "| --- | ---: | ---: | ---: | ---: |"
for target in "${ALL_TARGETS[@]}"; do
    [[ -n "${RPS[$target]:-}" ]] || continue
    echo "| $target | ${RPS[$target]} | $(ratio "${RPS[$target]}" "$best_rps") |" \
        "${US[$target]} | $(ratio "${US[$target]}" "$best_us") |"
done
echo
echo "Every run (target, requests/s, CPU µs per request):"
printf '  %s\n' "${ROWS[@]}"
