# Shared by the benchmark scripts in this folder (sourced, not run).

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# True when something accepts connections on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits (at most 5 s) until PORT accepts connections while PID lives.
wait_listening() {
    local port=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do
        port_busy "$port" && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# Stops PID: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# The executable cargo reports for NAME in its JSON messages in FILE.
executable() {
    grep -o '"executable":"[^"]*"' "$1" | sed 's/^"executable":"//; s/"$//' |
        grep -E "/(deps/)?$2(-[0-9a-f]+)?\$" | tail -n 1
}

# Builds wsgate and the load generator in release mode (cargo's messages go
# to files in OUT) and sets WSGATE and LOAD to their paths.
build_binaries() {
    local out=$1
    log "building wsgate and the load generator (release)"
    cargo build --release --bin wsgate --message-format=json-render-diagnostics >"$out/build-wsgate.json"
    cargo bench --bench load --no-run --message-format=json-render-diagnostics >"$out/build-load.json"
    WSGATE=$(executable "$out/build-wsgate.json" wsgate)
    LOAD=$(executable "$out/build-load.json" load)
    [[ -x "$WSGATE" && -x "$LOAD" ]] || die "could not find the built binaries"
}
