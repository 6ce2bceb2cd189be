#!/usr/bin/env python3
"""slowlink.py: an ssh ProxyCommand that behaves like a slow network link.

    ssh -o ProxyCommand='python3 slowlink.py --delay-ms 25 --mbit 20 HOST PORT' ...

Connects to HOST:PORT and relays bytes between it and its standard input
and output, each direction delayed by --delay-ms (so the round trip is
twice that) and limited to --mbit megabits per second, in order.  The
benchmarks use it instead of netem (tc), which not every kernel has, to
see how a tool copes with a roaming laptop's link: latency and a narrow
pipe.  Only a benchmark's own loopback connections go through it.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import sys
import threading
import time

CHUNK = 16 * 1024  # small enough that the rate limit is smooth


class Direction:
    """One direction of the link: a reader stamps each chunk with the time
    it may leave, a writer sends it then."""

    def __init__(self, read, write, delay: float, rate: float, done) -> None:
        self.read, self.write, self.delay, self.rate, self.done = read, write, delay, rate, done
        self.queue: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.free_at = 0.0  # when the link has sent everything before

    def reader(self) -> None:
        while True:
            try:
                chunk = self.read(CHUNK)
            except OSError:
                chunk = b""
            now = time.monotonic()
            if chunk:
                start = max(now, self.free_at)
                self.free_at = start + len(chunk) * 8 / self.rate if self.rate else start
                due = self.free_at + self.delay
            else:
                due = now + self.delay
            with self.ready:
                self.queue.append((due, chunk))
                self.ready.notify()
            if not chunk:
                return

    def writer(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                due, chunk = self.queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not chunk:
                self.done()
                return
            try:
                self.write(chunk)
            except OSError:
                self.done()
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=float, default=25.0, help="one way")
    parser.add_argument("--mbit", type=float, default=0.0, help="0: no limit")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    opts = parser.parse_args()
    sock = socket.create_connection((opts.host, opts.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rate = opts.mbit * 1_000_000
    delay = opts.delay_ms / 1000

    def read_in(size: int) -> bytes:
        return os.read(0, size)

    def write_out(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    def up_done() -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    finished = threading.Event()
    up = Direction(read_in, sock.sendall, delay, rate, up_done)
    down = Direction(sock.recv, write_out, delay, rate, finished.set)
    for target in (up.reader, up.writer, down.reader, down.writer):
        threading.Thread(target=target, daemon=True).start()
    finished.wait()
    os._exit(0)  # the other threads may still block in read(2)


if __name__ == "__main__":
    sys.exit(main())
