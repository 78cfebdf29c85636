#!/usr/bin/env bash
# Compares wsgate with nginx and HAProxy as WebSocket proxies on this
# machine and writes the results into docs/benchmarks.md, which explains
# the scenarios, the figures and the targets.
#
# Usage: benches/compare/run.sh [options]
#   --quick            a few seconds per run, one repeat, small idle counts;
#                      prints the tables but leaves docs/benchmarks.md alone
#   --only LIST        scenarios to run, comma-separated, from:
#                      rate,tput64,tput16k,idle,handshake (default: all)
#   --targets LIST     from direct,nginx,haproxy,wsgate (default: all)
#   --repeat N         runs per scenario and target (default 3; quick 1)
#   --logs on|off      access logs: off (default) runs every proxy without
#                      one; on gives each proxy its access log, written to a
#                      file in the scratch folder (nginx buffered 64 KiB,
#                      HAProxy to stdout, wsgate at RUST_LOG=info to stderr)
#   --no-doc           print the tables only
#   --doc FILE         write the tables into FILE instead
#   -h, --help         this text
#
# Everything listens on 127.0.0.1 on fixed ports, checked free first:
#   18000        echo backend (wsgate echo, or the load bench's echo)
#   18010 18011  nginx, ws and wss
#   18020 18021  HAProxy, ws and wss
#   18030 18031  wsgate, ws and wss
# Proxies run on CPU 0; the echo backend and the load generator on CPU 1.
# Scratch files, logs and the raw JSON lines go to
# ${CARGO_TARGET_DIR:-target}/bench-compare/.
set -euo pipefail

PORTS=(18000 18010 18011 18020 18021 18030 18031)
ALL_SCENARIOS=(rate tput64 tput16k idle handshake)
ALL_TARGETS=(direct nginx haproxy wsgate)

usage() { sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QUICK=0
ONLY=$(IFS=,; echo "${ALL_SCENARIOS[*]}")
TARGETS_ARG=$(IFS=,; echo "${ALL_TARGETS[*]}")
REPEAT=""
DOC="docs/benchmarks.md"
WRITE_DOC=1
LOGS=off
ORIGINAL_ARGS="$*"
while (($#)); do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --targets) TARGETS_ARG="${2:?--targets needs a list}"; shift ;;
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        --logs) LOGS="${2:?--logs needs on or off}"; shift ;;
        --no-doc) WRITE_DOC=0 ;;
        --doc) DOC="${2:?--doc needs a file}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
export PATH="$PATH:/usr/sbin:/sbin"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/bench-compare"
RESULTS="$OUT/results.jsonl"

# shellcheck source=benches/compare/common.sh
source "$ROOT/benches/compare/common.sh"

contains() { # LIST(comma-separated) WORD
    [[ ",$1," == *",$2,"* ]]
}
for s in ${ONLY//,/ }; do
    [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "--only: unknown scenario $s"
done
for t in ${TARGETS_ARG//,/ }; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "--targets: unknown target $t"
done

if ((QUICK)); then
    DURATION=2 WARMUP=1 REPEAT=${REPEAT:-1} IDLE_COUNTS=(200 500 1000)
    WRITE_DOC=0
else
    DURATION=10 WARMUP=2 REPEAT=${REPEAT:-3} IDLE_COUNTS=(1000 5000 9000)
fi
[[ "$REPEAT" =~ ^[1-9][0-9]?$ ]] || die "--repeat must be 1 to 99"
case "$LOGS" in
    off)
        NGINX_ACCESS_LOG="access_log off;"
        HAPROXY_LOG="# no log target: --logs off"
        WSGATE_RUST_LOG=warn
        ;;
    on)
        NGINX_ACCESS_LOG="access_log @WORK@/nginx-access.log combined buffer=64k;"
        HAPROXY_LOG="log stdout format raw local0 info"
        WSGATE_RUST_LOG=info
        ;;
    *) die "--logs must be on or off" ;;
esac

# --- tools -----------------------------------------------------------------

install_missing() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v taskset >/dev/null || missing+=(util-linux)
    ((${#missing[@]})) || return 0
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install ${missing[*]}"
        sudo=sudo
    fi
    log "installing ${missing[*]} from Debian"
    $sudo apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >&2
}
install_missing
command -v cargo >/dev/null || die "cargo is needed to build wsgate and the load generator"

if (($(nproc) >= 2)); then
    CPU_PROXY=0 CPU_LOAD=1
else
    log "warning: one CPU only; proxies, backend and generator share it"
    CPU_PROXY=0 CPU_LOAD=0
fi
# Raise the soft descriptor limit to the hard one: 9,000 idle connections
# take 18,000 descriptors in a proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- processes ---------------------------------------------------------------

ECHO_PID=""     # the echo backend
TARGET_PID=""   # the proxy under test, when one runs

# Stops what this script started (and only that: the ids are cleared as
# soon as a process is stopped, so that a reused id is never hit).
cleanup() {
    [[ -n "$TARGET_PID" ]] && stop_pid "$TARGET_PID"
    [[ -n "$ECHO_PID" ]] && stop_pid "$ECHO_PID"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The children of PID (nginx's worker under its master), from /proc.
children_of() {
    local parent=$1 p stat fields
    for p in /proc/[0-9]*; do
        stat=$(cat "$p/stat" 2>/dev/null) || continue
        read -r -a fields <<<"${stat##*) }"
        [[ "${fields[1]}" == "$parent" ]] && echo "${p#/proc/}"
    done
}

for port in "${PORTS[@]}"; do
    port_busy "$port" && die "port $port is in use; the benchmark needs ${PORTS[*]}"
done

# --- build and set up ------------------------------------------------------------

mkdir -p "$OUT/nginx-tmp"
: >"$RESULTS"
: >"$OUT/load.log"

build_binaries "$OUT"

log "self-signed ECDSA P-256 certificate for localhost"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null
cat "$OUT/cert.pem" "$OUT/key.pem" >"$OUT/combined.pem"
for f in nginx.conf haproxy.cfg wsgate.toml; do
    sed -e "s|@NGINX_ACCESS_LOG@|$NGINX_ACCESS_LOG|" -e "s|@HAPROXY_LOG@|$HAPROXY_LOG|" \
        -e "s|@WORK@|$OUT|g" "$ROOT/benches/compare/$f" >"$OUT/$f"
done

# A short checked run: any error or no echo at all fails it.
probe() { # URL [load options]
    local url=$1
    shift
    taskset -c "$CPU_LOAD" "$LOAD" rtt --url "$url" --ca "$OUT/cert.pem" -c 2 --rate 200 \
        -d 300ms --warmup 0s --timeout 3s --check "$@" >/dev/null 2>>"$OUT/load.log"
}

# The echo backend: `wsgate echo` once it exists, else the load bench's.
ECHO_KIND="wsgate echo --workers 1"
RUST_LOG=warn taskset -c "$CPU_LOAD" "$WSGATE" echo --bind 127.0.0.1:18000 --workers 1 \
    >>"$OUT/echo.log" 2>&1 &
ECHO_PID=$!
if ! wait_listening 18000 "$ECHO_PID" || ! probe ws://127.0.0.1:18000/echo; then
    stop_pid "$ECHO_PID"
    ECHO_PID=""
    ECHO_KIND="load echo (benches/load), one thread"
    log "wsgate echo is not available yet; using the load bench's echo backend"
    taskset -c "$CPU_LOAD" "$LOAD" echo --bind 127.0.0.1:18000 >>"$OUT/echo.log" 2>&1 &
    ECHO_PID=$!
    wait_listening 18000 "$ECHO_PID" && probe ws://127.0.0.1:18000/echo ||
        die "the echo backend does not work; see $OUT/echo.log and $OUT/load.log"
fi

# --- targets -------------------------------------------------------------------------

WATCH=()        # --pid options for the generator
WS_PORT="" WSS_PORT=""
WSGATE_OK=1

# Starts TARGET fresh; false when it does not come up.
start_target() {
    local target=$1
    TARGET_PID="" WATCH=()
    case "$target" in
        direct)
            WS_PORT=18000 WSS_PORT=""
            return 0
            ;;
        nginx)
            WS_PORT=18010 WSS_PORT=18011
            taskset -c "$CPU_PROXY" nginx -p "$OUT" -c "$OUT/nginx.conf" -e "$OUT/nginx-error.log" \
                >>"$OUT/nginx.log" 2>&1 &
            ;;
        haproxy)
            WS_PORT=18020 WSS_PORT=18021
            taskset -c "$CPU_PROXY" haproxy -db -f "$OUT/haproxy.cfg" >>"$OUT/haproxy.log" 2>&1 &
            ;;
        wsgate)
            WS_PORT=18030 WSS_PORT=18031
            # --logs off: warnings only, as nginx (access_log off, error_log
            # warn) and HAProxy (no log target) run; on: the access log.
            RUST_LOG=$WSGATE_RUST_LOG taskset -c "$CPU_PROXY" "$WSGATE" --config "$OUT/wsgate.toml" --workers 1 \
                >>"$OUT/wsgate.log" 2>&1 &
            ;;
    esac
    TARGET_PID=$!
    wait_listening "$WS_PORT" "$TARGET_PID" && wait_listening "$WSS_PORT" "$TARGET_PID" ||
        return 1
    local pids=("$TARGET_PID")
    if [[ $target == nginx ]]; then
        local i workers=()
        for ((i = 0; i < 100; i++)); do
            mapfile -t workers < <(children_of "$TARGET_PID")
            ((${#workers[@]})) && break
            sleep 0.05
        done
        pids+=("${workers[@]}")
    fi
    local p
    for p in "${pids[@]}"; do WATCH+=(--pid "$p"); done
}

stop_target() {
    [[ -n "$TARGET_PID" ]] && stop_pid "$TARGET_PID"
    TARGET_PID=""
}


url_for() { # ws|wss
    if [[ $1 == ws ]]; then
        echo "ws://127.0.0.1:$WS_PORT/echo"
    else
        echo "wss://localhost:$WSS_PORT/echo"
    fi
}

# Runs the generator once and appends its JSON line to the results.
run_load() { # SCENARIO TLS TARGET REPEAT N -- MODE ARGS...
    local scenario=$1 tls=$2 target=$3 repeat=$4 n=$5
    shift 6
    local labels=(--label "scenario=$scenario" --label "target=$target" --label "tls=$tls"
        --label "repeat=$repeat")
    local what="$scenario $tls"
    if [[ $n != - ]]; then
        labels+=(--label "n=$n")
        what+=" N=$n"
    fi
    local limit=$((DURATION + WARMUP + 120))
    log "$what via $target (repeat $repeat)"
    if ! timeout "${limit}s" taskset -c "$CPU_LOAD" "$LOAD" "$@" --url "$(url_for "$tls")" \
        --ca "$OUT/cert.pem" "${WATCH[@]}" "${labels[@]}" \
        >>"$RESULTS" 2>"$OUT/last.log"; then
        log "  the generator failed; see $OUT/load.log"
    fi
    sed 's/^/    /' "$OUT/last.log" >&2
    cat "$OUT/last.log" >>"$OUT/load.log"
}

# The generator's arguments for SCENARIO (and N for idle).
mode_args() {
    local timing=(-d "${DURATION}s" --warmup "${WARMUP}s")
    case "$1" in
        rate) echo rtt -c 50 --size 64 --rate 5000 "${timing[@]}" ;;
        tput64) echo throughput -c 8 -w 16 --size 64 "${timing[@]}" ;;
        tput16k) echo throughput -c 4 -w 4 --size 16384 "${timing[@]}" ;;
        handshake) echo handshake -c 8 "${timing[@]}" ;;
        idle) echo idle -c "$2" -d 1s --settle 1s ;;
    esac
}

# --- scenarios -----------------------------------------------------------------------

for scenario in "${ALL_SCENARIOS[@]}"; do
    contains "$ONLY" "$scenario" || continue
    case "$scenario" in
        tput64 | tput16k) variants=(ws) ;;
        *) variants=(ws wss) ;;
    esac
    counts=(-)
    [[ $scenario == idle ]] && counts=("${IDLE_COUNTS[@]}")
    for tls in "${variants[@]}"; do
        for n in "${counts[@]}"; do
            for ((repeat = 1; repeat <= REPEAT; repeat++)); do
                for target in "${ALL_TARGETS[@]}"; do
                    contains "$TARGETS_ARG" "$target" || continue
                    # direct has no TLS and no proxy memory to measure.
                    [[ $target == direct && ($tls == wss || $scenario == idle) ]] && continue
                    [[ $target == wsgate ]] && ((!WSGATE_OK)) && continue
                    if ! start_target "$target"; then
                        stop_target
                        if [[ $target == wsgate ]]; then
                            log "wsgate does not serve --config FILE --workers 1 yet;" \
                                "its column stays pending (see $OUT/wsgate.log)"
                            WSGATE_OK=0
                            continue
                        fi
                        die "$target did not start; see $OUT/$target.log and $OUT/$target-error.log"
                    fi
                    read -r -a args <<<"$(mode_args "$scenario" "$n")"
                    run_load "$scenario" "$tls" "$target" "$repeat" "$n" -- "${args[@]}"
                    stop_target
                done
            done
        done
    done
done

# --- report --------------------------------------------------------------------------

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
nginx_version=$(nginx -v 2>&1 | sed 's|.*nginx/||')
haproxy_version=$(haproxy -v 2>/dev/null | head -n 1 | awk '{print $3}')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit with local changes"
report_args=(report --results "$RESULTS"
    --meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    --meta "machine=$(nproc) CPUs ($cpu_model), Linux $(uname -r), $(grep -m1 MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}') RAM"
    --meta "software=nginx $nginx_version, HAProxy $haproxy_version, $(openssl version | cut -d' ' -f1-2), wsgate $commit"
    --meta "placement=proxy on CPU 0; echo backend ($ECHO_KIND) and load generator on CPU 1"
    --meta "runs=${DURATION} s measured after ${WARMUP} s warm-up, $REPEAT repeat(s), idle at ${IDLE_COUNTS[*]} connections, access logs $LOGS"
    --meta "command=\`benches/compare/run.sh${ORIGINAL_ARGS:+ $ORIGINAL_ARGS}\`")
if ((WRITE_DOC)); then
    report_args+=(--doc "$DOC")
fi
"$LOAD" "${report_args[@]}"
((WRITE_DOC)) && log "results written into $DOC; raw lines in $RESULTS"
log "done"
