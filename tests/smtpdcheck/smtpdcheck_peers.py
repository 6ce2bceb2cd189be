"""SMTP listeners that share ONE port on several loopback addresses.

smtpdcheck has one --port for all its servers (a server argument has no
port, so that it stays unambiguous with IPv6 addresses), while each peer of
tests/peers/smtp.py binds its own kernel-chosen port.  A test with several
servers therefore starts them here: `Cluster.start({address: behaviour})`
finds a port free on every address and puts one listener per address on it.

Behaviours (what a connection gets):
  "up"         220 greeting; EHLO/HELO/NOOP -> 250, QUIT -> 221 and close
  "multiline"  three-line 220- greeting, then as "up"
  "slow-multiline"  "220-" at once, the last "220 " line after SLOW_LINE_S
  "554"        554 greeting, then waits for the client's EOF
  "421"        421 greeting, then waits for the client's EOF
  "silent"     never speaks, waits for the client's EOF (or stop)
  "late"       220 greeting after LATE_S, then as "up"
  "closed"     nothing listens (the port is bound, not listened on, so
               connecting is refused and nobody else can take it)

Every listener counts connections, QUIT commands, and "early talkers":
clients that sent something before the greeting was complete.  IPv6
addresses (::1) are supported.  Stop with Cluster.stop() (bounded).
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Optional

from peers.smtp import Counter

POLL_S = 0.05
STOP_TIMEOUT_S = 5.0
LATE_S = 1.0
SLOW_LINE_S = 0.5
PORT_TRIES = 50
MAX_LINE = 4096

GREETINGS = {
    "up": [b"220 test.invalid ESMTP ready\r\n"],
    "late": [b"220 late.invalid ESMTP ready\r\n"],
    "multiline": [b"220-first\r\n220-second\r\n220 ready\r\n"],
    "slow-multiline": [b"220-first line now\r\n", b"220 the rest later\r\n"],
    "554": [b"554 no service here\r\n"],
    "421": [b"421 too busy, try later\r\n"],
}
BEHAVIOURS = (*GREETINGS, "silent", "closed")


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class Listener:
    """One address: a listening socket and a thread per connection."""

    def __init__(self, sock: socket.socket, address: str, behaviour: str) -> None:
        self.sock = sock
        self.address = address
        self.behaviour = behaviour
        self.port = sock.getsockname()[1]
        self.stopping = threading.Event()
        self._connections = Counter()
        self._quits = Counter()
        self._early = Counter()
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor: Optional[threading.Thread] = None
        if behaviour != "closed":
            sock.listen(128)
            sock.settimeout(POLL_S)
            self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                              name=f"{behaviour}@{address}")
            self._acceptor.start()

    @property
    def connections(self) -> int:
        return self._connections.value

    @property
    def quits(self) -> int:
        return self._quits.value

    @property
    def early_talkers(self) -> int:
        return self._early.value

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._connections.increment()
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._clients.append(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(POLL_S)
        try:
            self._converse(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _wait(self, conn: socket.socket, seconds: float) -> bytes:
        """Sleep `seconds` (or until stop), noting anything the client sends."""
        heard = b""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopping.is_set():
            try:
                chunk = conn.recv(MAX_LINE)
            except socket.timeout:
                continue
            if not chunk:
                break
            heard += chunk
        return heard

    def _drain(self, conn: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                if not conn.recv(MAX_LINE):
                    return
            except socket.timeout:
                continue

    def _converse(self, conn: socket.socket) -> None:
        behaviour = self.behaviour
        if behaviour == "silent":
            self._drain(conn)
            return
        if behaviour == "late" and self._wait(conn, LATE_S):
            self._early.increment()
        parts = GREETINGS[behaviour]
        for n, part in enumerate(parts):
            if n and self._wait(conn, SLOW_LINE_S):
                self._early.increment()
            conn.sendall(part)
        if behaviour in ("554", "421"):
            self._drain(conn)
            return
        buffer = b""
        while not self.stopping.is_set():
            try:
                chunk = conn.recv(MAX_LINE)
            except socket.timeout:
                continue
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                verb = line.strip().split(b" ", 1)[0].upper()
                if verb == b"QUIT":
                    self._quits.increment()
                    conn.sendall(b"221 bye\r\n")
                    return
                conn.sendall(b"250 ok\r\n" if verb in (b"EHLO", b"HELO", b"NOOP")
                             else b"502 not here\r\n")

    def stop(self) -> list[str]:
        """Stop; return the names of threads that did not end (none, normally)."""
        self.stopping.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        if self._acceptor is not None:
            self._acceptor.join(STOP_TIMEOUT_S)
        self.sock.close()
        with self._lock:
            clients, threads = list(self._clients), list(self._threads)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        every = ([self._acceptor] if self._acceptor else []) + threads
        return [t.name for t in every if t.is_alive()]


def _bind(address: str, port: int) -> socket.socket:
    sock = socket.socket(family_of(address), socket.SOCK_STREAM)
    if family_of(address) == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock


class Cluster:
    """Listeners on one port, one per address."""

    def __init__(self, listeners: dict[str, Listener], port: int) -> None:
        self.listeners = listeners
        self.port = port

    @classmethod
    def start(cls, behaviours: dict[str, str]) -> Cluster:
        """Bind every address on one port (retrying on a clash), then serve."""
        for behaviour in behaviours.values():
            if behaviour not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {behaviour!r}")
        addresses = list(behaviours)
        for _ in range(PORT_TRIES):
            first = _bind(addresses[0], 0)
            port = first.getsockname()[1]
            bound = {addresses[0]: first}
            try:
                for address in addresses[1:]:
                    bound[address] = _bind(address, port)
            except OSError as exc:
                for sock in bound.values():
                    sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            listeners = {a: Listener(bound[a], a, behaviours[a]) for a in addresses}
            return cls(listeners, port)
        raise RuntimeError(f"no port free on all of {addresses} after {PORT_TRIES} tries")

    def __getitem__(self, address: str) -> Listener:
        return self.listeners[address]

    def stop(self) -> None:
        stuck = []
        for listener in self.listeners.values():
            stuck += listener.stop()
        if stuck:
            raise RuntimeError(f"listener threads did not stop: {stuck}")

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def ipv6_loopback_works() -> bool:
    """Can this host listen on and connect to ::1?  (A property of the host.)"""
    try:
        with _bind("::1", 0) as server:
            server.listen(1)
            with socket.create_connection(("::1", server.getsockname()[1]), timeout=2):
                return True
    except OSError:
        return False
