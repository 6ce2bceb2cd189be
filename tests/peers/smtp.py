"""SMTP peers on loopback: a real one (aiosmtpd) and scripted misbehaving ones.

Every server listens on a port the kernel picks (no free-port race), on
127.0.0.1 by default or any other 127.0.0.x address, counts the TCP
connections it accepted (`connections`, `reset_connections()`), and is
stopped by `stop()` (idempotent, bounded; also a context manager).

* `start_smtp_server()` -> `SmtpServer`: aiosmtpd, greets 220, records every
  message (`messages`, `clear()`, `wait_for_messages()`); set `data_response`
  (e.g. "451 4.3.0 try later") to make it refuse DATA, `rcpt_response`
  (e.g. "550 5.1.1 no such user") to make it refuse every recipient.
* `start_greets_554()`: sends "554 no service" and closes.
* `start_silent()`: accepts and never speaks; connections stay open until
  `stop()`.
* `start_multiline_220()`: greets with a three-line 220, answers EHLO/HELO/
  NOOP/RSET with 250, QUIT with 221 (then closes), anything else with 502.
* `find_closed_port()`: a port with nothing listening (connecting is refused).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

DEFAULT_HOST = "127.0.0.1"
# Teardown joins threads for at most this long in total.
STOP_TIMEOUT_S = 5.0
# Accept/read loops wake this often to notice stop(); short enough for a fast teardown.
POLL_INTERVAL_S = 0.05
START_TIMEOUT_S = 5.0
# How long the 554 peer waits for the client's EOF after its greeting.
DRAIN_TIMEOUT_S = 1.0
# A scripted peer never reads more than this from one client line.
MAX_LINE_BYTES = 4096

GREETING_554 = b"554 no service\r\n"
GREETING_MULTILINE_220 = b"220-first\r\n220-second\r\n220 ready\r\n"


@dataclass(frozen=True)
class Received:
    """One message accepted by SmtpServer."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


class Counter:
    """A thread-safe counter (connections, commands seen)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def increment(self) -> None:
        with self._lock:
            self._value += 1

    def reset(self) -> None:
        with self._lock:
            self._value = 0

    @property
    def value(self) -> int:
        with self._lock:
            return self._value


# ------------------------------------------------------------------ aiosmtpd


class _RecordingHandler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self._server._record(envelope)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        response = self._server.rcpt_response
        if response.startswith("250"):
            envelope.rcpt_tos.append(address)
        return response


class _CountingSMTP(SMTP):
    def __init__(self, *args: Any, on_connect: Callable[[asyncio.BaseTransport], None],
                 on_lost: Callable[[asyncio.BaseTransport], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._on_connect(transport)
        super().connection_made(transport)

    def connection_lost(self, error: Optional[Exception]) -> None:
        if self.transport is not None:
            self._on_lost(self.transport)
        super().connection_lost(error)


class _Controller(Controller):
    """aiosmtpd Controller on port 0 that counts and tracks its connections."""

    def __init__(self, owner: SmtpServer, host: str) -> None:
        super().__init__(_RecordingHandler(owner), hostname=host, port=0,
                         ready_timeout=START_TIMEOUT_S, server_hostname="smtp.test")
        self._owner = owner

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, on_connect=self._owner._connected,
                             on_lost=self._owner._lost, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Port 0 asked the kernel for a port; learn it before aiosmtpd connects to it.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """A real SMTP server (aiosmtpd) recording what it receives.

    Attributes: host, port, address ((host, port)), connections (accepted so
    far; the start-up probe is not counted), messages (list of Received),
    data_response (reply to DATA, "250 OK" by default), rcpt_response
    (reply to each RCPT, "250 OK" by default).
    """

    def __init__(self, host: str = DEFAULT_HOST) -> None:
        self.host = host
        self.port = 0
        self.data_response = "250 OK"
        self.rcpt_response = "250 OK"
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._connections = Counter()
        self._transports: set[asyncio.BaseTransport] = set()
        self._controller = _Controller(self, host)
        self._running = False

    def start(self) -> SmtpServer:
        self._controller.start()
        self._running = True
        self.port = self._controller.port
        self.reset_connections()  # forget the controller's start-up probe
        return self

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def connections(self) -> int:
        return self._connections.value

    def reset_connections(self) -> None:
        self._connections.reset()

    @property
    def messages(self) -> list[Received]:
        """A copy of the messages received so far, oldest first."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        """Forget received messages and connections; restore data_response
        and rcpt_response."""
        with self._lock:
            self._messages.clear()
            self.data_response = "250 OK"
            self.rcpt_response = "250 OK"
        self.reset_connections()

    def wait_for_messages(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """Wait until at least `count` messages arrived (bounded); return them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        return self.messages

    def _record(self, envelope: Envelope) -> str:
        with self._lock:
            response = self.data_response
            if response.startswith("250"):
                content = envelope.original_content or b""
                if isinstance(content, str):
                    content = content.encode("utf-8", "surrogateescape")
                self._messages.append(Received(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=content))
            return response

    def _connected(self, transport: asyncio.BaseTransport) -> None:
        self._connections.increment()
        self._transports.add(transport)  # only touched from the event loop thread

    def _lost(self, transport: asyncio.BaseTransport) -> None:
        self._transports.discard(transport)

    def stop(self) -> None:
        """Close client connections, stop the loop, join its thread (bounded)."""
        if not self._running:
            return
        self._running = False
        controller = self._controller
        loop = controller.loop

        def close_all() -> None:
            for transport in list(self._transports):
                transport.close()
            controller.cancel_tasks()

        if not loop.is_closed():
            loop.call_soon_threadsafe(close_all)
        thread = controller._thread
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                raise RuntimeError(f"aiosmtpd thread on {self.address} did not stop")
        controller._thread = None
        controller._cleanup()

    def __enter__(self) -> SmtpServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_smtp_server(host: str = DEFAULT_HOST) -> SmtpServer:
    """Start an aiosmtpd server on `host` (any 127.0.0.x) and a kernel-chosen port."""
    return SmtpServer(host).start()


# ---------------------------------------------------------- scripted peers


class ScriptedServer:
    """A TCP server running `behaviour(conn, server)` in a thread per connection.

    Attributes: name, host, port, address, connections.  The behaviour must
    return when `server.stopping` is set; blocking socket calls are woken by
    stop() closing the socket.
    """

    def __init__(self, name: str, behaviour: Callable[[socket.socket, ScriptedServer], None],
                 host: str = DEFAULT_HOST) -> None:
        self.name = name
        self.host = host
        self._behaviour = behaviour
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self._listener.settimeout(POLL_INTERVAL_S)
        self.port: int = self._listener.getsockname()[1]
        self.stopping = threading.Event()
        self._connections = Counter()
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop,
                                          name=f"{name}-accept-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def connections(self) -> int:
        return self._connections.value

    def reset_connections(self) -> None:
        self._connections.reset()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # listener closed by stop()
            self._connections.increment()
            conn.settimeout(None)
            thread = threading.Thread(target=self._serve, args=(conn,),
                                      name=f"{self.name}-conn-{self.port}", daemon=True)
            with self._lock:
                if self.stopping.is_set():
                    conn.close()
                    return
                self._clients.add(conn)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._behaviour(conn, self)
        except OSError:
            pass  # the client went away, or stop() closed the socket
        finally:
            with self._lock:
                self._clients.discard(conn)
            conn.close()

    def stop(self) -> None:
        """Stop accepting, close every connection, join threads (bounded).  Idempotent."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        self._acceptor.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        with self._lock:
            clients = list(self._clients)
            threads = list(self._threads)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in [self._acceptor, *threads] if t.is_alive()]
        if alive:
            raise RuntimeError(f"{self.name} on {self.address}: threads did not stop: {alive}")

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _greet_554(conn: socket.socket, server: ScriptedServer) -> None:
    conn.sendall(GREETING_554)
    # Close gracefully: a close() with unread client data would send RST, and
    # the client could lose the greeting.  Drain until EOF (bounded).
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(POLL_INTERVAL_S)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while not server.stopping.is_set() and time.monotonic() < deadline:
        try:
            if not conn.recv(MAX_LINE_BYTES):
                return
        except socket.timeout:
            continue


def _silent(conn: socket.socket, server: ScriptedServer) -> None:
    # Never write; drain what the client sends so it never blocks, until stop().
    conn.settimeout(POLL_INTERVAL_S)
    while not server.stopping.is_set():
        try:
            if not conn.recv(MAX_LINE_BYTES):
                return
        except socket.timeout:
            continue


def _read_line(conn: socket.socket, server: ScriptedServer, buffer: bytearray) -> Optional[bytes]:
    """One CRLF/LF-terminated line (without it), or None on EOF, stop or overlong line."""
    while b"\n" not in buffer:
        if server.stopping.is_set() or len(buffer) > MAX_LINE_BYTES:
            return None
        try:
            chunk = conn.recv(MAX_LINE_BYTES)
        except socket.timeout:
            continue
        if not chunk:
            return None
        buffer.extend(chunk)
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line.rstrip(b"\r")


def _multiline_220(conn: socket.socket, server: ScriptedServer) -> None:
    conn.settimeout(POLL_INTERVAL_S)
    conn.sendall(GREETING_MULTILINE_220)
    buffer = bytearray()
    while True:
        line = _read_line(conn, server, buffer)
        if line is None:
            return
        verb = line.split(b" ", 1)[0].upper()
        if verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            return
        if verb in (b"EHLO", b"HELO", b"NOOP", b"RSET"):
            conn.sendall(b"250 ok\r\n")
        else:
            conn.sendall(b"502 not implemented\r\n")


def start_greets_554(host: str = DEFAULT_HOST) -> ScriptedServer:
    """A server that sends "554 no service" and closes."""
    return ScriptedServer("smtp-554", _greet_554, host)


def start_silent(host: str = DEFAULT_HOST) -> ScriptedServer:
    """A server that accepts and never speaks; connections stay open until stop()."""
    return ScriptedServer("smtp-silent", _silent, host)


def start_multiline_220(host: str = DEFAULT_HOST) -> ScriptedServer:
    """A server greeting "220-first / 220-second / 220 ready"; QUIT gets 221."""
    return ScriptedServer("smtp-multiline-220", _multiline_220, host)


def find_closed_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port on `host` with nothing listening (bound, then closed, never listened)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


__all__ = [
    "GREETING_554", "GREETING_MULTILINE_220", "Received", "ScriptedServer", "SmtpServer",
    "find_closed_port", "start_greets_554", "start_multiline_220", "start_silent",
    "start_smtp_server",
]
