#!/usr/bin/env python3
"""A reconnect storm through wsgate's admit queue.

Starts a WebSocket backend (in this script) that records when each upgrade
reaches it, starts wsgate in front of it with
`admit = { handshakes_per_second = RATE, queue = QUEUE }`, then opens
CLIENTS upgrades spread evenly over SPREAD seconds, as a fleet reconnecting
after a restart does. Prints one JSON line: how many clients got 101, 503 or
nothing, the time until the last one was connected, and the most upgrades
the backend saw in any one-second window (it should not pass RATE).

Usage: storm.py WSGATE_BINARY [CLIENTS] [RATE] [SPREAD_S] [QUEUE]
Defaults: 5000 clients, 1000/s, 1 s, "5s". Loopback only; needs a
descriptor limit above 3 x CLIENTS (`ulimit -n 20000`). Ports are chosen by
the system; nothing fixed is bound.
"""
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def backend(arrivals):
    async def serve(reader, writer):
        # Stamped on accept: the moment wsgate let the upgrade through.
        arrivals.append(time.monotonic())
        head = await reader.readuntil(b"\r\n\r\n")
        key = b""
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        await writer.drain()
        try:
            await reader.read()  # hold the connection until the proxy closes it
        except (asyncio.CancelledError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)


def backend_process(conn):
    """Runs the backend in its own process, so that the clients' work does
    not delay the arrival stamps: sends its port, then, when asked, the
    arrival times (CLOCK_MONOTONIC is shared by all processes)."""

    async def run():
        arrivals = []
        server = await backend(arrivals)
        conn.send(server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "clear":
                arrivals.clear()
                conn.send(None)
            else:
                conn.send(list(arrivals))
                return

    asyncio.run(run())


async def client(port, delay, results):
    await asyncio.sleep(delay)
    start = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET /storm HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        status = int(head.split(b" ", 2)[1])
        results.append((status, time.monotonic() - start, time.monotonic()))
        return writer
    except Exception:
        results.append((0, time.monotonic() - start, time.monotonic()))
        return None


def most_in_one_second(times):
    times.sort()
    most, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > 1.0:
            lo += 1
        most = max(most, hi - lo + 1)
    return most


def mean_rate(times):
    """Upgrades per second between the backend's first and last arrival."""
    if len(times) < 2:
        return 0
    times.sort()
    return round((len(times) - 1) / max(times[-1] - times[0], 1e-9))


async def main():
    binary = sys.argv[1]
    clients = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    spread = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    queue = sys.argv[5] if len(sys.argv) > 5 else "5s"
    ours, theirs = multiprocessing.Pipe()
    backend_proc = multiprocessing.Process(target=backend_process, args=(theirs,), daemon=True)
    backend_proc.start()
    backend_port = ours.recv()
    port = free_port()
    config = f"""
[[listener]]
name = "storm"
bind = "127.0.0.1:{port}"
admit = {{ handshakes_per_second = {rate}, queue = "{queue}" }}

[[route]]
pool = "p"

[[pool]]
name = "p"
backends = [{{ addr = "127.0.0.1:{backend_port}" }}]
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(config)
    proxy = subprocess.Popen([binary, "--config", f.name], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        ours.send("clear")
        ours.recv()
        results = []
        started = time.monotonic()
        tasks = [client(port, spread * i / clients, results) for i in range(clients)]
        writers = await asyncio.gather(*tasks)
        connected = [r for r in results if r[0] == 101]
        ours.send("report")
        arrivals = ours.recv()
        report = {
            "clients": clients,
            "rate": rate,
            "spread_s": spread,
            "queue": queue,
            "connected": len(connected),
            "status_503": sum(1 for r in results if r[0] == 503),
            "failed": sum(1 for r in results if r[0] not in (101, 503)),
            "all_connected_after_s": round(max((r[2] for r in connected), default=started) - started, 2),
            "longest_wait_s": round(max((r[1] for r in connected), default=0.0), 2),
            "backend_most_per_second": most_in_one_second(arrivals),
            "backend_mean_per_second": mean_rate(arrivals),
        }
        print(json.dumps(report))
        for w in writers:
            if w is not None:
                w.close()
    finally:
        proxy.terminate()
        proxy.wait()
        os.unlink(f.name)
        backend_proc.kill()


if __name__ == "__main__":
    asyncio.run(main())
