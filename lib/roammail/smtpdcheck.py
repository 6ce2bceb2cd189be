"""smtpdcheck: tell whether a more preferred SMTP server is up.

Usage:
  smtpdcheck [--stop HOST] [--timeout SECONDS] [--port N] [--sequential]
             [--cache FILE | --no-cache] [--cache-ttl SECONDS] SERVER...
  smtpdcheck -V | --version
  smtpdcheck -h | --help

Arguments:
  SERVER               [prio:]host: a host name or address, optionally after
                       its MX priority and a colon, as `avenger dns mx`
                       prints them (10:mx1.example.org).

Options:
  --stop HOST          Report no server from the first one that is HOST (by
                       name or by any address) on, nor one with its
                       priority or a worse one.
  --timeout SECONDS    Give up on the servers not up after this long, DNS
                       included; 0 waits forever [default: 10].
  --port N             The TCP port of every server [default: 25].
  --sequential         Probe one server after the other, each with its own
                       timeout, as Mail Avenger's smtpdcheck does.
  --cache FILE         The cache of servers found down (by default
                       $XDG_CACHE_HOME/roammail/smtpdcheck, else
                       /var/cache/roammail/smtpdcheck for root, else
                       ~/.cache/roammail/smtpdcheck).
  --no-cache           Neither read nor write the cache.
  --cache-ttl SECONDS  How long a server found down is not probed again
                       [default: 60].
  -V, --version        Print the version.
  -h, --help           Show this help.

A server is up when a TCP connection to it gives a 220 greeting.  Exit
status: 1, and the name of the first server up on stdout; 0 and nothing
when none is up; 2 on a system error or a bad command line.
"""

# What this module owns: the command line above, the decision of which
# server to report (a pure function of what is known, `decide`), the
# probes (non-blocking sockets under one selector, getaddrinfo in threads,
# all bounded by the deadline) and the cache file of servers found down.
# It must never block past the deadline (the resolver threads are left
# behind, as daemons, when they overrun it) and never fail because of the
# cache: a cache that cannot be read, parsed, locked or written is ignored.
#
# Start-up cost matters (it runs once per SMTP transaction from rule
# files): no asyncio (~30 ms to import), no docopt (~10 ms), no typing,
# dataclasses or re.  The command line is parsed by hand, and
# tests/smtpdcheck/test_smtpdcheck_args.py checks the parse against
# docopt's reading of the usage text above.

from __future__ import annotations

import errno
import os
import selectors
import socket
import sys
import threading
import time
from collections import deque

from .cli import guarded
from .errors import RoammailError

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable, Sequence

TOOL = "smtpdcheck"

# The original's exit statuses: the contract rule files rely on.
EXIT_NONE_UP = 0
EXIT_UP = 1
EXIT_ERROR = 2

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_PORT = 25
DEFAULT_CACHE_TTL_S = 60.0
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
# The cache: a bigger file is not ours (ignored); a writer waits this long
# for the lock, then gives up writing (the cache is an optimisation).
MAX_CACHE_BYTES = 1 << 20
CACHE_LOCK_WAIT_S = 2.0
CACHE_LOCK_POLL_S = 0.01
CACHE_HEADER = "roammail-smtpdcheck-cache 1"
CACHE_DIR_MODE = 0o700
CACHE_FILE_MODE = 0o600

_DIGITS = frozenset("0123456789")


class CheckError(RoammailError):
    """A system error or a bad command line: the original's exit status 2."""

    exit_code = EXIT_ERROR


# ------------------------------------------------------------- command line

_VALUE_OPTIONS = ("--stop", "--timeout", "--port", "--cache", "--cache-ttl")
_FLAG_OPTIONS = ("--sequential", "--no-cache", "--help", "--version")
_LONG_OPTIONS = _VALUE_OPTIONS + _FLAG_OPTIONS
_DEFAULTS = {"--timeout": f"{DEFAULT_TIMEOUT_S:g}", "--port": str(DEFAULT_PORT),
             "--cache-ttl": f"{DEFAULT_CACHE_TTL_S:g}"}


def _long_option(word: str) -> str | None:
    """The long option `word` names: itself, or the one option it is a
    unique prefix of (as docopt and getopt_long accept); None if unknown."""
    if word in _LONG_OPTIONS:
        return word
    found = [name for name in _LONG_OPTIONS if name.startswith(word)]
    return found[0] if len(found) == 1 else None


def parse_command_line(argv: Sequence[str]) -> dict:
    """The command line as docopt reads the usage text: a dict with every
    option ("--stop": None or its value, "--sequential": bool, ...) and
    "SERVER" (the list of server arguments), values as given.

    Options may come after servers; `--` ends them.  Raises CheckError
    (exit 2) for a bad command line.  With -h or --help (-V, --version),
    the dict has "--help" ("--version") True and may be incomplete.
    """
    parsed: dict = {name: None for name in _VALUE_OPTIONS}
    parsed.update({name: False for name in _FLAG_OPTIONS})
    servers: list[str] = []
    seen: list[str] = []
    unknown: list[str] = []
    args = list(argv)
    i = 0
    only_servers = False
    while i < len(args):
        arg = args[i]
        i += 1
        if only_servers or arg == "-" or not arg.startswith("-"):
            servers.append(arg)
            continue
        if arg == "--":
            only_servers = True
            continue
        value: str | None = None
        if arg == "-h":
            name: str | None = "--help"
        elif arg == "-V":
            name = "--version"
        elif arg.startswith("--"):
            word, equals, rest = arg.partition("=")
            value = rest if equals else None
            name = _long_option(word)
        else:
            name = None
        if name is None:
            unknown.append(arg.partition("=")[0])
            continue
        if name in _VALUE_OPTIONS:
            if value is None:
                if i >= len(args) or args[i] == "--":
                    raise CheckError(f"{name} needs a value; see --help")
                value = args[i]
                i += 1
            parsed[name] = value
        else:
            if value is not None:
                raise CheckError(f"{name} takes no value; see --help")
            parsed[name] = True
        seen.append(name)
    if parsed["--help"] or parsed["--version"]:
        return parsed
    if unknown:
        raise CheckError(f"unknown option {unknown[0]}; see --help")
    for name in seen:
        if seen.count(name) > 1:
            raise CheckError(f"{name} given twice; see --help")
    if parsed["--cache"] is not None and parsed["--no-cache"]:
        raise CheckError("--cache and --no-cache exclude each other; see --help")
    if not servers:
        raise CheckError("no server given; see --help")
    for name, default in _DEFAULTS.items():
        if parsed[name] is None:
            parsed[name] = default
    parsed["SERVER"] = servers
    return parsed


def parse_seconds(option: str, text: str) -> float:
    """A number of seconds (digits, at most one decimal point), >= 0."""
    digits = text.replace(".", "", 1)
    if not digits or not set(digits) <= _DIGITS:
        raise CheckError(f"bad {option} {text!r}: not a number of seconds")
    return float(text)


def parse_port(text: str) -> int:
    if not text or not set(text) <= _DIGITS or not 0 < int(text) < 65536:
        raise CheckError(f"bad --port {text!r}: not a port number (1-65535)")
    return int(text)


def is_ipv6_literal(text: str) -> bool:
    """True for an IPv6 address, with or without a %zone."""
    try:
        socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
    except (OSError, ValueError):
        return False
    return ":" in text


class Server:
    """One server argument: its priority (None without one) and host."""

    __slots__ = ("prio", "host")

    def __init__(self, prio: int | None, host: str) -> None:
        self.prio = prio
        self.host = host

    def __repr__(self) -> str:
        return f"Server({self.prio!r}, {self.host!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Server)
                and (self.prio, self.host) == (other.prio, other.host))


def parse_server(arg: str) -> Server:
    """`[prio:]host`; CheckError if bad.

    A whole argument that is an IPv6 address is a host, never a priority
    and the rest (`5:2001:db8::25` is one address).  An IPv6 address may
    be written in brackets, which is how to give it a priority without
    ambiguity: `5:[2001:db8::25]`.
    """
    if not arg:
        raise CheckError("empty server name")
    if is_ipv6_literal(arg):
        return Server(None, arg)
    prio: int | None = None
    host = arg
    if ":" in arg and not arg.startswith("["):
        prio_text, _, host = arg.partition(":")
        if not prio_text or not set(prio_text) <= _DIGITS:
            raise CheckError(f"bad priority {prio_text!r} in {arg!r}: not a number")
        prio = int(prio_text)
    if host.startswith("[") and host.endswith("]") and is_ipv6_literal(host[1:-1]):
        host = host[1:-1]
    if not host:
        raise CheckError(f"empty server name in {arg!r}")
    if ":" in host and not is_ipv6_literal(host):
        raise CheckError(f"bad server name {host!r} in {arg!r}")
    return Server(prio, host)


def host_key(host: str) -> str:
    """The name compared with --stop and kept in the cache: DNS names are
    case-insensitive, and a final dot does not make another host."""
    key = host.lower()
    return key[:-1] if key.endswith(".") and len(key) > 1 else key


# ----------------------------------------------------------------- decision
#
# Servers are indexed in argument order.  What is known of server i:
#   match[i]  does it match --stop? True, False, or None (not known yet);
#   up[i]     is it up? True, False, or None (not known yet).
# The answer with everything known (Mail Avenger's rule): let k be the first
# server that matches --stop (none: k = n).  Candidates are the servers
# before k, except, when both have a priority, those whose priority is not
# strictly better (smaller) than k's.  The answer is the first candidate
# that is up, or None.  `decide` gives that answer as soon as no outcome of
# the unknowns can change it, and says "undecided" until then.


def _excludes(prio: int | None, stop_prio: int | None) -> bool:
    """A server with `prio` is not a candidate when k has `stop_prio`."""
    return prio is not None and stop_prio is not None and prio >= stop_prio


def candidacy(prios: Sequence[int | None],
              match: Sequence[bool | None]) -> list[tuple[bool, bool, bool]]:
    """(relevant, possible, certain) for each server.

    relevant: no earlier server surely matches --stop and this one does not
    surely match it (its addresses may still matter);
    possible: in some outcome of the unknown matches it is a candidate;
    certain: in every outcome it is.
    """
    n = len(prios)
    table = []
    earlier_true = False       # some j < i surely matches
    earlier_all_false = True   # every j < i surely does not match
    for i in range(n):
        if earlier_true or match[i] is True:
            table.append((False, False, False))
            earlier_true = True
            continue
        certain = earlier_all_false and match[i] is False
        prio = prios[i]
        possible = True
        if prio is not None:
            # Which server can be k?  Any later one not known not to match,
            # up to the first that surely matches; or none at all (k = n).
            possible = False
            for j in range(i + 1, n):
                if match[j] is False:
                    continue
                if _excludes(prio, prios[j]):
                    certain = False
                else:
                    possible = True
                if match[j] is True or (possible and not certain):
                    break
            else:
                possible = True  # no server after i matches: k = n
        table.append((True, possible, certain))
        if match[i] is not False:
            earlier_all_false = False
    return table


def decide(prios: Sequence[int | None], match: Sequence[bool | None],
           up: Sequence[bool | None]) -> tuple[bool, int | None]:
    """(decided, answer): answer is the index of the server to report, or
    None for none; when not decided, answer is None and means nothing.

    Decided means no outcome of the unknowns can change the answer: every
    server that may be a candidate before the answer is known to be down,
    and the answer is up and a candidate whatever the unknowns turn out to
    be.  With everything known, it is always decided.
    """
    for i, ((_relevant, possible, certain), state) in enumerate(
            zip(candidacy(prios, match), up)):
        if not possible or state is False:
            continue
        if state is True and certain:
            return True, i
        return False, None
    return True, None


# ------------------------------------------------------------------ network


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


# -------------------------------------------------------------------- check


class Check:
    """One run: the servers, what is known of them, and the two drivers."""

    def __init__(self, servers: list[Server], stop: str | None, port: int,
                 timeout: float, cached_down: set[str], engine: Engine) -> None:
        self.servers = servers
        self.prios = [server.prio for server in servers]
        self.keys = [host_key(server.host) for server in servers]
        self.stop = stop
        self.stop_key = host_key(stop) if stop is not None else None
        self.port = port
        self.timeout = timeout
        self.cached_down = cached_down
        self.engine = engine
        self.stop_lookup: Lookup | None = None
        self.spelling: dict[str, str] = {}
        for server, key in zip(servers, self.keys):
            self.spelling.setdefault(key, server.host)

    def _deadline(self) -> float | None:
        return self.engine.clock() + self.timeout if self.timeout > 0 else None

    # ------------------------------------------------------ knowledge

    def _match(self, i: int) -> bool | None:
        if self.stop is None:
            return False
        if self.keys[i] == self.stop_key:
            return True
        stop = self.stop_lookup
        lookup = self.engine.lookups.get(self.keys[i])
        if stop is None or not stop.done or lookup is None or not lookup.done:
            return None
        return bool(stop.keys & lookup.keys)

    def _up(self, key: str) -> bool | None:
        if key in self.cached_down:
            return False
        lookup = self.engine.lookups.get(key)
        if lookup is not None and lookup.done and lookup.error is not None:
            return False
        probe = self.engine.probes.get(key)
        return None if probe is None else probe.up

    def knowledge(self) -> tuple[list, list]:
        match = [self._match(i) for i in range(len(self.keys))]
        up = [self._up(key) for key in self.keys]
        return match, up

    def _stop_failed(self) -> None:
        stop = self.stop_lookup
        if stop is not None and stop.done and stop.error is not None:
            raise CheckError(f"cannot resolve --stop {self.stop}: {stop.error}")

    def _start_stop_lookup(self, deadline: float | None) -> None:
        if self.stop is not None:
            self.stop_lookup = self.engine.lookup("\0stop", self.stop, None, deadline)
            self._stop_failed()

    def _stop_known(self) -> bool:
        return self.stop_lookup is None or self.stop_lookup.done

    def _wants(self, match: list, up: list) -> tuple[set, set]:
        """(hosts whose addresses matter, hosts worth probing now)."""
        table = candidacy(self.prios, match)
        resolve, probe = set(), set()
        for (relevant, possible, _certain), key, state in zip(table, self.keys, up):
            if relevant:
                resolve.add(key)
            if possible and state is None:
                probe.add(key)
        return resolve, probe

    def _probe_if_ready(self, key: str, deadline: float | None) -> bool:
        lookup = self.engine.lookups.get(key)
        if (key in self.engine.probes or key in self.cached_down or lookup is None
                or not lookup.done or lookup.error is not None):
            return False
        self.engine.probe(key, lookup.addresses, deadline)
        return True

    # -------------------------------------------------------- drivers

    def run_parallel(self) -> int | None:
        """Everything at once, one deadline for all."""
        deadline = self._deadline()
        self._start_stop_lookup(deadline)
        while True:
            self._stop_failed()
            match, up = self.knowledge()
            decided, answer = decide(self.prios, match, up)
            if decided and self._stop_known():
                return answer
            resolve, probe = self._wants(match, up)
            for key in resolve:
                if key not in self.engine.lookups:
                    self.engine.lookup(key, self.spelling[key], self.port, deadline)
            for key, running in list(self.engine.probes.items()):
                if key not in probe and running.up is None and not running.cancelled:
                    self.engine.cancel(running)
            started = False
            for key in probe:
                started |= self._probe_if_ready(key, deadline)
            if started:
                continue  # a probe may have ended at once (all refused)
            if not self.engine.busy():
                return self._settle()
            self.engine.step()

    def run_sequential(self) -> int | None:
        """One server after the other, each with its own timeout, as the
        original: its lookup, then (if it may be the answer) its probe."""
        self._start_stop_lookup(self._deadline())
        self.engine.run_until(self._stop_known)
        self._stop_failed()
        for i, key in enumerate(self.keys):
            match, up = self.knowledge()
            decided, answer = decide(self.prios, match, up)
            if decided:
                return answer
            relevant, possible, _certain = candidacy(self.prios, match)[i]
            if not relevant:
                continue
            deadline = self._deadline()
            if key not in self.engine.lookups:
                lookup = self.engine.lookup(key, self.spelling[key], self.port, deadline)
                self.engine.run_until(lambda lookup=lookup: lookup.done)
            _relevant, possible, _certain = candidacy(self.prios, self.knowledge()[0])[i]
            if possible and self._probe_if_ready(key, deadline):
                probe = self.engine.probes[key]
                self.engine.run_until(lambda probe=probe: probe.up is not None)
        decided, answer = decide(self.prios, *self.knowledge())
        return answer if decided else self._settle()

    def _settle(self) -> int | None:
        """Nothing is running and yet undecided (cannot happen): what is
        not known is treated as no."""
        match, up = self.knowledge()
        return decide(self.prios, [m is True for m in match], [u is True for u in up])[1]

    def found_down(self) -> set[str]:
        """The hosts this run found down (not those it took from the cache)."""
        down = set()
        for key, lookup in self.engine.lookups.items():
            if key in self.spelling and lookup.done and lookup.error is not None:
                down.add(key)
        for key, probe in self.engine.probes.items():
            if probe.up is False and not probe.cancelled:
                down.add(key)
        return down - self.cached_down

    def found_up(self) -> set[str]:
        return {key for key, probe in self.engine.probes.items() if probe.up is True}


# -------------------------------------------------------------------- cache


def default_cache_path(environ: dict | None = None, euid: int | None = None) -> str:
    """$XDG_CACHE_HOME/roammail/smtpdcheck when set, else
    /var/cache/roammail/smtpdcheck for root, else ~/.cache/roammail/..."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg.startswith("/"):
        return os.path.join(xdg, "roammail", "smtpdcheck")
    if (os.geteuid() if euid is None else euid) == 0:
        return "/var/cache/roammail/smtpdcheck"
    from .locations import home

    return os.path.join(home(), ".cache", "roammail", "smtpdcheck")


def parse_cache(text: str) -> dict[tuple[str, int], float] | None:
    """{(host key, port): time found down}; None if the text is not a cache."""
    lines = text.split("\n")
    if lines[0] != CACHE_HEADER or lines[-1] != "":
        return None
    entries: dict[tuple[str, int], float] = {}
    for line in lines[1:-1]:
        fields = line.split(" ")
        if len(fields) != 3:
            return None
        when, port, host = fields
        try:
            stamp = float(when)
            number = int(port)
        except ValueError:
            return None
        if not host or not host.isprintable() or stamp != stamp:
            return None
        key = (host, number)
        entries[key] = max(stamp, entries.get(key, stamp))
    return entries


def format_cache(entries: dict[tuple[str, int], float]) -> str:
    lines = [CACHE_HEADER]
    for (host, port), stamp in sorted(entries.items()):
        lines.append(f"{stamp:.3f} {port} {host}")
    return "\n".join(lines) + "\n"


def _cacheable(host: str) -> bool:
    return bool(host) and host.isprintable() and " " not in host


def read_cache(path: str) -> dict[tuple[str, int], float]:
    """The entries of the cache file; {} when it is missing or not valid."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return {}
    try:
        data = os.read(fd, MAX_CACHE_BYTES + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if len(data) > MAX_CACHE_BYTES:
        return {}
    try:
        entries = parse_cache(data.decode("utf-8"))
    except UnicodeDecodeError:
        return {}
    return entries or {}


def _fresh(stamp: float, ttl: float, now: float) -> bool:
    """Found down less than `ttl` seconds from `now`.  Later than `now` too:
    runs at once stamp their entries with their own clock readings (a run
    that started first may write last); a clock set back by more than the
    TTL only makes entries stale."""
    return abs(now - stamp) < ttl


def fresh_down(entries: dict, port: int, ttl: float, now: float) -> set[str]:
    """The hosts found down on `port` less than `ttl` seconds from `now`."""
    return {host for (host, number), stamp in entries.items()
            if number == port and _fresh(stamp, ttl, now)}


def update_cache(path: str, port: int, ttl: float, now: float,
                 down: set[str], up: set[str]) -> bool:
    """Add `down` (found down at `now`) and forget `up`, under the lock,
    merging with what other runs wrote meanwhile; expired entries go.
    Returns False when the cache could not be written (never raises)."""
    import fcntl

    from .durable import write_file_atomically

    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=CACHE_DIR_MODE, exist_ok=True)
        lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                       | getattr(os, "O_CLOEXEC", 0), CACHE_FILE_MODE)
    except OSError:
        return False
    try:
        give_up = time.monotonic() + CACHE_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= give_up:
                    return False
                time.sleep(CACHE_LOCK_POLL_S)
            except OSError:
                return False
        entries = read_cache(path)
        kept = {key: stamp for key, stamp in entries.items()
                if _fresh(stamp, ttl, now) and not (key[1] == port and key[0] in up)}
        for host in down:
            if _cacheable(host):
                kept[(host, port)] = now
        try:
            write_file_atomically(path, format_cache(kept).encode("utf-8"),
                                  mode=CACHE_FILE_MODE)
        except (RoammailError, OSError):
            return False
        return True
    finally:
        os.close(lock)  # releases the lock


# --------------------------------------------------------------------- main


def run(argv: list[str] | None) -> int:
    parsed = parse_command_line(sys.argv[1:] if argv is None else argv)
    if parsed["--help"]:
        sys.stdout.write(__doc__.strip() + "\n")
        return 0
    if parsed["--version"]:
        from . import __version__

        sys.stdout.write(f"smtpdcheck (roammail) {__version__}\n")
        return 0
    timeout = parse_seconds("--timeout", parsed["--timeout"])
    ttl = parse_seconds("--cache-ttl", parsed["--cache-ttl"])
    port = parse_port(parsed["--port"])
    stop = parsed["--stop"]
    if stop is not None and not stop:
        raise CheckError("empty --stop name")
    if parsed["--cache"] is not None and not parsed["--cache"]:
        raise CheckError("empty --cache file name")
    servers = [parse_server(arg) for arg in parsed["SERVER"]]

    cache_path = None
    if not parsed["--no-cache"] and ttl > 0:
        cache_path = parsed["--cache"] or default_cache_path()
    started_at = time.time()
    cached_down = (fresh_down(read_cache(cache_path), port, ttl, started_at)
                   if cache_path else set())

    try:
        engine = Engine(port)
    except OSError as exc:
        raise CheckError(f"system error: {exc.strerror or exc}") from None
    check = Check(servers, stop, port, timeout, cached_down, engine)
    start = engine.clock()
    try:
        answer = check.run_sequential() if parsed["--sequential"] else check.run_parallel()
        # What was found, before the lookups and probes that no longer
        # matter are abandoned (an abandoned one is not a server found down).
        found_down, found_up = check.found_down(), check.found_up()
        if answer is not None:
            sys.stdout.write(servers[answer].host + "\n")
            sys.stdout.flush()
        now = engine.clock()
        until = now + QUIT_GRACE_S
        if timeout > 0 and not parsed["--sequential"]:
            until = min(until, max(now, start + timeout))
        engine.finish(until)
    except BaseException as exc:
        engine.finish(engine.clock())
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise CheckError(f"system error: {exc.strerror or exc}") from None
        raise
    if cache_path and found_down:
        update_cache(cache_path, port, ttl, time.time(), found_down, found_up)
    return EXIT_NONE_UP if answer is None else EXIT_UP


def exit_now(status: int) -> None:
    """Flush stdout and stderr and end the process at once: no exit
    handlers, no library destructors, no interpreter finalisation."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    """The tool; with argv None (the launcher: the process is ours) it may
    not return but end the process, see below."""
    status = guarded(TOOL, lambda: run(argv))
    # The original's contract: 0 none up, 1 one up, 2 anything else (a bad
    # command line, a system error, an interruption, a bug).
    status = status if status in (EXIT_NONE_UP, EXIT_UP) else EXIT_ERROR
    if argv is None and resolvers_running():
        # A lookup abandoned at the deadline, or no longer needed, is still
        # inside getaddrinfo.  exit(3) would run the shared libraries'
        # destructors under it: an NSS module (or nss_wrapper, which the
        # tests preload) that frees its tables there makes the thread crash
        # the process (SIGSEGV) after the answer was given.  _exit(2) ends
        # everything at once; the answer and the cache are written already.
        exit_now(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
