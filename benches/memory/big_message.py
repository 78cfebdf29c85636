#!/usr/bin/env python3
"""Sends one 100 MiB binary message in 1 MiB frames through a WebSocket proxy
to an echo backend, reads the echo back, and samples the proxy's RSS from
/proc while it passes: the relay must not hold the message, so the RSS
during the transfer should stay near the idle figure.

Usage: big_message.py HOST:PORT PROXY_PID [MESSAGE_MIB] [FRAME_KIB]
Loopback only. Frames are masked with an all-zero key, which RFC 6455
allows, so no CPU is spent masking in this script.
"""
import socket
import sys
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    pid = int(sys.argv[2])
    message_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    frame_kib = int(sys.argv[4]) if len(sys.argv) > 4 else 1024
    assert host.startswith("127.") or host in ("localhost", "::1"), "loopback only"
    s = socket.create_connection((host, int(port)))
    s.sendall(
        b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    leftover = head.split(b"\r\n\r\n", 1)[1]

    frames = message_mib * 1024 // frame_kib
    frame_len = frame_kib * 1024
    payload = bytes(range(256)) * (frame_len // 256)
    total = frames * frame_len
    before = rss_kib(pid)
    peak = [before]
    received = [len(leftover)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.01)

    def reader():
        # Echoed frames carry 10-byte headers (64-bit length); count bytes.
        expected = total + frames * 10
        while received[0] < expected:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            received[0] += len(chunk)
        done.set()

    threading.Thread(target=sample, daemon=True).start()
    r = threading.Thread(target=reader)
    r.start()
    started = time.time()
    for i in range(frames):
        opcode = 0x2 if i == 0 else 0x0
        fin = 0x80 if i == frames - 1 else 0
        header = bytes([fin | opcode, 0x80 | 127]) + frame_len.to_bytes(8, "big") + b"\0\0\0\0"
        s.sendall(header + payload)
    r.join(timeout=120)
    elapsed = time.time() - started
    after = rss_kib(pid)
    ok = received[0] >= total + frames * 10
    print(
        f'{{"message_mib": {message_mib}, "frame_kib": {frame_kib}, "echoed_ok": {str(ok).lower()}, '
        f'"seconds": {elapsed:.2f}, "rss_before_kib": {before}, "rss_peak_kib": {peak[0]}, '
        f'"rss_after_kib": {after}}}'
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
