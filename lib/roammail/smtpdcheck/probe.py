"""probe.py: the network side of smtpdcheck: lookups and probes under one selector.

An `Engine` resolves host names (getaddrinfo, in a daemon thread each;
numeric addresses at once) and probes hosts (`Probe`: its addresses tried
happy-eyeballs style, RFC 8305, one `Attempt` per TCP connection, all
non-blocking sockets under one selector).  A host is up when a connection
gives a 220 greeting; nothing is sent before the greeting is complete,
and then only QUIT.

Contracts:
- Every lookup and probe ends by its own deadline (None: never): a
  resolver thread that overruns it is left behind, as a daemon
  (`resolvers_running` says whether one still is).
- `Engine.finish` closes every socket, after letting the connections with
  a verdict end politely until a given time at the latest.
- A system error (no socket, no thread) is CheckError, exit status 2.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections import deque

from ..core.errors import RoammailError

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable

# The original's exit status for a system error or a bad command line
# (cli.py has the other two).
EXIT_ERROR = 2

# Happy eyeballs (RFC 8305, "Connection Attempt Delay"): the next address
# of a host is tried this long after the previous attempt started, or at
# once when it failed.
CONNECTION_ATTEMPT_DELAY_S = 0.25
# After a greeting: how long to wait for the rest of a multi-line greeting
# and then for the reply to QUIT before closing anyway (also never past the
# deadline).  Nothing is sent before the greeting is complete: talking
# early is what pregreet tests (postscreen) punish.
QUIT_GRACE_S = 1.0
# A greeting longer than this is not read to its end: the connection is
# closed without QUIT.  (The verdict needs only the first four bytes.)
MAX_GREETING_BYTES = 64 * 1024
RECV_BYTES = 4096
# One wait of the selector is at most this long (a longer --timeout just
# loops): epoll cannot wait for more than about 24 days at once.
MAX_WAIT_S = 3600.0


class CheckError(RoammailError):
    """A system error or a bad command line: the original's exit status 2."""

    exit_code = EXIT_ERROR


def is_ipv6_literal(text: str) -> bool:
    """True for an IPv6 address, with or without a %zone."""
    try:
        socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
    except (OSError, ValueError):
        return False
    return ":" in text


def _address_key(family: int, sockaddr: tuple) -> bytes:
    """The address as bytes, an IPv4-mapped IPv6 address as its IPv4 form."""
    if family == socket.AF_INET:
        return socket.inet_pton(socket.AF_INET, sockaddr[0])
    packed = socket.inet_pton(socket.AF_INET6, sockaddr[0].split("%", 1)[0])
    if packed[:12] == b"\0" * 10 + b"\xff\xff":
        return packed[12:]
    return packed


def _connection_order(infos: list) -> list[tuple[int, tuple]]:
    """getaddrinfo's answers, each address once, families interleaved
    starting with the first one given (RFC 8305, section 4)."""
    by_family: dict[int, list] = {}
    seen = set()
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        key = (family, sockaddr[:2])
        if key in seen:
            continue
        seen.add(key)
        by_family.setdefault(family, []).append((family, sockaddr))
    queues = list(by_family.values())
    ordered = []
    while any(queues):
        for queue in queues:
            if queue:
                ordered.append(queue.pop(0))
    return ordered


def _getaddrinfo(host: str, port: int | None, numeric: bool = False) -> list:
    flags = socket.AI_NUMERICHOST if numeric else 0
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP, flags)


def _is_numeric(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)
        return True
    except (OSError, ValueError):
        return is_ipv6_literal(host)


def greeting_verdict(data: bytes) -> bool | None:
    """Is this the start of a 220 greeting?  None: not known yet.

    The first line decides: `220`, `220 text` or `220-text` (the first line
    of a multi-line greeting) is up; anything else is not.
    """
    end = data.find(b"\n")
    line = data if end < 0 else data[:end]
    if end < 0 and len(line) < 4:
        return None if b"220".startswith(line[:3]) else False
    return line[:3] == b"220" and line[3:4] in (b"", b" ", b"-", b"\r")


def greeting_complete(data: bytes) -> bool:
    """True when a whole reply (its last line, not `NNN-`) has arrived."""
    for line in data.split(b"\n")[:-1]:
        if line[3:4] != b"-":
            return True
    return False


class Lookup:
    """The addresses of one host, from getaddrinfo in a thread."""

    __slots__ = ("host", "deadline", "done", "addresses", "keys", "error")

    def __init__(self, host: str, deadline: float | None) -> None:
        self.host = host
        self.deadline = deadline
        self.done = False
        self.addresses: list[tuple[int, tuple]] = []
        self.keys: frozenset = frozenset()
        self.error: str | None = None

    def finish(self, result: object) -> None:
        if self.done:
            return  # too late: the deadline came first
        self.done = True
        if isinstance(result, BaseException):
            reason = getattr(result, "strerror", None) or str(result) or type(result).__name__
            self.error = " ".join(str(reason).split())
            return
        self.addresses = _connection_order(result)  # type: ignore[arg-type]
        self.keys = frozenset(_address_key(f, a) for f, a in self.addresses)
        if not self.addresses:
            self.error = "no address"


def _prepare_resolver() -> None:
    """One getaddrinfo call in the main thread before the resolver threads.

    getaddrinfo is thread-safe in glibc, but an interposed resolver need
    not be: nss_wrapper (which the tests use to give loopback addresses
    names, through LD_PRELOAD) initialises itself on its first call and
    loses lookups, now and then, when that first call comes from several
    threads at once.  A numeric lookup costs microseconds.
    """
    try:
        _getaddrinfo("127.0.0.1", None, numeric=True)
    except OSError:
        pass


def _resolve_in_thread(lookup: Lookup, port: int | None, arrived: deque,
                       wake: socket.socket) -> None:
    try:
        result: object = _getaddrinfo(lookup.host, port)
    except Exception as exc:  # gaierror, UnicodeError, ValueError (NUL)...
        result = exc
    arrived.append((lookup, result))
    try:
        wake.send(b"\0")
    except OSError:
        pass  # the main thread is gone or not listening: nothing to do


# Every resolver thread this process started (see main: exiting while one
# still runs).
_RESOLVERS: list[threading.Thread] = []


def resolvers_running() -> bool:
    return any(thread.is_alive() for thread in _RESOLVERS)


_CONNECTING, _GREETING, _CLOSING = range(3)


class Attempt:
    """One TCP connection to one address of a host."""

    __slots__ = ("probe", "sock", "state", "buffer", "quit_sent", "until")

    def __init__(self, probe: Probe, sock: socket.socket) -> None:
        self.probe = probe
        self.sock = sock
        self.state = _CONNECTING
        self.buffer = b""
        self.quit_sent = False
        self.until: float | None = None


class Probe:
    """Is one host up: its addresses tried happy-eyeballs style."""

    __slots__ = ("host", "addresses", "deadline", "next_index", "next_at",
                 "attempts", "up", "cancelled")

    def __init__(self, host: str, addresses: list, deadline: float | None) -> None:
        self.host = host
        self.addresses = addresses
        self.deadline = deadline
        self.next_index = 0
        self.next_at: float | None = None
        self.attempts: list[Attempt] = []
        self.up: bool | None = None
        self.cancelled = False


def _earliest(*times: float | None) -> float | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


class Engine:
    """Lookups and probes under one selector; `step` runs one round.

    All times are time.monotonic().  Lookups and probes end by their own
    deadline (None: never); attempts that have a verdict are finished
    politely (QUIT after a complete greeting) within QUIT_GRACE_S.
    """

    def __init__(self, port: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.port = port
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._arrived: deque = deque()
        self.lookups: dict[str, Lookup] = {}
        self.probes: dict[str, Probe] = {}
        self.closing: list[Attempt] = []
        self.finished = False
        self._resolver_ready = False

    # -------------------------------------------------------- lookups

    def lookup(self, key: str, host: str, port: int | None,
               deadline: float | None) -> Lookup:
        """Start resolving `host` (kept under `key`); numeric ones at once."""
        found = Lookup(host, deadline)
        self.lookups[key] = found
        if _is_numeric(host):
            try:
                found.finish(_getaddrinfo(host, port, numeric=True))
            except Exception as exc:
                found.finish(exc)
            return found
        if not self._resolver_ready:
            self._resolver_ready = True
            _prepare_resolver()
        thread = threading.Thread(target=_resolve_in_thread, name=f"resolve {host}",
                                  args=(found, port, self._arrived, self._wake_w),
                                  daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:
            raise CheckError(f"cannot start a thread to resolve {host}: {exc}") from None
        _RESOLVERS.append(thread)
        return found

    def _drain_wake(self) -> None:
        while True:
            try:
                if not self._wake_r.recv(RECV_BYTES):
                    break
            except (BlockingIOError, InterruptedError):
                break
        while self._arrived:
            lookup, result = self._arrived.popleft()
            lookup.finish(result)

    # --------------------------------------------------------- probes

    def probe(self, key: str, addresses: list, deadline: float | None) -> Probe:
        found = Probe(key, addresses, deadline)
        self.probes[key] = found
        self._start_attempt(found)
        return found

    def cancel(self, probe: Probe) -> None:
        probe.cancelled = True
        probe.next_at = None
        for attempt in list(probe.attempts):
            self._close(attempt)

    def _start_attempt(self, probe: Probe) -> None:
        """Connect to the next address; when none is left and no attempt
        is running, the host is down."""
        while probe.next_index < len(probe.addresses):
            family, sockaddr = probe.addresses[probe.next_index]
            probe.next_index += 1
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                    continue  # no IPv6 (or IPv4) here: the next address
                raise CheckError(f"cannot create a socket: {exc.strerror or exc}") from None
            sock.setblocking(False)
            try:
                status = sock.connect_ex(sockaddr)
            except OSError:
                status = -1  # a malformed address: as if refused
            if status not in (0, errno.EINPROGRESS, errno.EAGAIN):
                sock.close()
                continue
            attempt = Attempt(probe, sock)
            probe.attempts.append(attempt)
            if status == 0:
                attempt.state = _GREETING
                self.selector.register(sock, selectors.EVENT_READ, attempt)
            else:
                self.selector.register(sock, selectors.EVENT_WRITE, attempt)
            more = probe.next_index < len(probe.addresses)
            probe.next_at = self.clock() + CONNECTION_ATTEMPT_DELAY_S if more else None
            return
        probe.next_at = None
        if not probe.attempts and probe.up is None:
            probe.up = False

    def _close(self, attempt: Attempt) -> None:
        try:
            self.selector.unregister(attempt.sock)
        except (KeyError, ValueError):
            pass
        attempt.sock.close()
        if attempt in attempt.probe.attempts:
            attempt.probe.attempts.remove(attempt)
        if attempt in self.closing:
            self.closing.remove(attempt)

    def _failed(self, attempt: Attempt) -> None:
        """This address is not up; try the next one at once."""
        probe = attempt.probe
        if attempt in probe.attempts:
            probe.attempts.remove(attempt)
        if probe.up is None and not probe.cancelled:
            self._start_attempt(probe)

    def _verdict(self, attempt: Attempt, up: bool) -> None:
        probe = attempt.probe
        probe.attempts.remove(attempt)
        attempt.state = _CLOSING
        now = self.clock()
        attempt.until = _earliest(now + QUIT_GRACE_S, probe.deadline)
        self.closing.append(attempt)
        self._quit_when_greeted(attempt)
        if up:
            probe.up = True
            probe.next_at = None
            for other in list(probe.attempts):
                self._close(other)
        else:
            self._failed(attempt)

    def _quit_when_greeted(self, attempt: Attempt) -> None:
        if attempt.quit_sent or not greeting_complete(attempt.buffer):
            return
        attempt.quit_sent = True
        try:
            attempt.sock.send(b"QUIT\r\n")
            attempt.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(attempt)

    def _on_event(self, attempt: Attempt, mask: int) -> None:
        sock = attempt.sock
        if attempt.state == _CONNECTING:
            status = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if status:
                self._close(attempt)
                self._failed(attempt)
                return
            attempt.state = _GREETING
            self.selector.modify(sock, selectors.EVENT_READ, attempt)
            return
        try:
            data = sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if attempt.state == _CLOSING:
            if not data:
                self._close(attempt)
                return
            if not attempt.quit_sent:
                attempt.buffer += data
                if len(attempt.buffer) > MAX_GREETING_BYTES:
                    self._close(attempt)
                    return
                self._quit_when_greeted(attempt)
            return
        if not data:  # EOF or reset before a verdict: not up
            self._close(attempt)
            self._failed(attempt)
            return
        attempt.buffer += data
        verdict = greeting_verdict(attempt.buffer)
        if verdict is not None:
            self._verdict(attempt, verdict)

    # ----------------------------------------------------------- time

    def _expire(self, now: float) -> bool:
        """Act on the timers due at `now`; True if any was."""
        acted = False
        for lookup in self.lookups.values():
            if not lookup.done and lookup.deadline is not None and now >= lookup.deadline:
                lookup.finish(TimeoutError("timed out"))
                acted = True
        for probe in self.probes.values():
            if probe.up is not None or probe.cancelled:
                continue
            if probe.deadline is not None and now >= probe.deadline:
                probe.up = False
                probe.next_at = None
                for attempt in list(probe.attempts):
                    self._close(attempt)
                acted = True
            elif probe.next_at is not None and now >= probe.next_at:
                self._start_attempt(probe)
                acted = True
        for attempt in list(self.closing):
            if attempt.until is not None and now >= attempt.until:
                self._close(attempt)
                acted = True
        return acted

    def _next_wake(self) -> float | None:
        times: list[float | None] = []
        for lookup in self.lookups.values():
            if not lookup.done:
                times.append(lookup.deadline)
        for probe in self.probes.values():
            if probe.up is None and not probe.cancelled:
                times += [probe.deadline, probe.next_at]
        times += [attempt.until for attempt in self.closing]
        return _earliest(*times)

    def busy(self) -> bool:
        """True while a lookup or a probe is still running."""
        return (any(not lookup.done for lookup in self.lookups.values())
                or any(p.up is None and not p.cancelled for p in self.probes.values()))

    def step(self, until: float | None = None) -> None:
        """Wait for the next event or timer (not past `until`), handle it.
        A timer already due is handled at once, without waiting: a
        deadline that passed since the last step may have ended the last
        lookup or probe running, and nothing would then wake the wait."""
        now = self.clock()
        if self._expire(now):
            return
        wake = _earliest(self._next_wake(), until)
        timeout = None if wake is None else min(max(0.0, wake - now), MAX_WAIT_S)
        for key, mask in self.selector.select(timeout):
            if key.data is None:
                self._drain_wake()
            elif key.data.sock.fileno() >= 0:
                self._on_event(key.data, mask)
        self._drain_wake()
        self._expire(self.clock())

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.step()

    def finish(self, until: float | None) -> None:
        """Abandon the probes still running; let the connections with a
        verdict end politely until `until` at the latest; close all.
        Idempotent."""
        if self.finished:
            return
        self.finished = True
        for probe in self.probes.values():
            if probe.up is None:
                self.cancel(probe)
        while self.closing and (until is None or self.clock() < until):
            self.step(until)
        for attempt in list(self.closing):
            self._close(attempt)
        self.selector.close()
        # The writing end stays open: a resolver thread still running may
        # send on it (and then fails on the closed reading end), and a
        # closed descriptor number could meanwhile be reused by a file.
        self._wake_r.close()


def lookup_done(lookup: Lookup) -> Callable[[], bool]:
    """Engine.run_until's condition: `lookup` has its answer."""
    return lambda: lookup.done


def probe_answered(probe: Probe) -> Callable[[], bool]:
    """Engine.run_until's condition: `probe` knows whether its server is up."""
    return lambda: probe.up is not None

