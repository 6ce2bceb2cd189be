"""roaming.py: what the machine already knows about its network, as events.

`NetworkEvents` yields four events, each a word:

  online   there is now a usable default route: an IPv4 or IPv6 default
           route (main table, unicast) over a link that is up (IFF_UP and
           IFF_LOWER_UP) and carries a global address (not tentative, not
           failed duplicate address detection);
  offline  there is none any more;
  changed  still online, but the default routes, the global addresses of
           their links or /etc/resolv.conf differ from the last event, or
           went through a different state within the settle time (a link
           that went down and came back: connections over it may be gone),
           or NetworkManager says it reached full connectivity;
  resumed  the machine slept and woke up.

Sources, all local, none of them ever a probe of another host:
- rtnetlink: a netlink socket bound to the link, address and route groups
  wakes us; the state itself is then read with pyroute2's IPRoute dumps.
  (The notifications are drained from a plain socket, not with pyroute2's
  get(): since 0.9 that can leave messages in its own buffer, where poll()
  does not see them.  They are only a wake-up: the dump is the truth.)
- CLOCK_BOOTTIME running ahead of CLOCK_MONOTONIC: the first counts time
  asleep, the second does not; a growth of their gap by more than
  SLEEP_THRESHOLD seconds between two looks (at least every TICK seconds)
  is a sleep.
- on the system D-Bus, when there is one (jeepney): logind's
  PrepareForSleep(false) is a resume, NetworkManager's StateChanged makes
  us look again (and CONNECTED_GLOBAL counts as `changed`).  No bus, no
  jeepney, or a bus that goes away: that source is quietly left out.
- /etc/resolv.conf, compared by content at every look.

Events are debounced by `Settler`: the first change opens a window that
ends `settle` seconds after the last change (at most MAX_HOLD settle times
after the first), and then at most one network line (`online`, `offline`
or `changed`) and one `resumed` come out, so a flapping link gives one
line, not twenty.

Test hook (fault injection, as no test can suspend the machine): when the
environment variable ROAMMAIL_TEST_BOOTTIME_FILE names a file, the number
of seconds it holds is added to every CLOCK_BOOTTIME reading.

Must never: open a connection to another host, print, or exit; it raises
RoammailError subclasses for what a user can act on (no netlink).
"""

from __future__ import annotations

import errno
import hashlib
import select
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from . import paths
from .errors import UnavailableError

ONLINE = "online"
OFFLINE = "offline"
CHANGED = "changed"
RESUMED = "resumed"
EVENTS = (ONLINE, OFFLINE, CHANGED, RESUMED)

DEFAULT_SETTLE = 2.0  # seconds a burst of changes may take before one event
MAX_HOLD = 5          # a flapping link holds events back at most this many settles
TICK = 5.0            # seconds between two looks at the clocks and resolv.conf
SLEEP_THRESHOLD = 2.0  # seconds the boot clock must gain on the monotonic one
RESOLV_CONF = "/etc/resolv.conf"
BOOTTIME_SHIFT_ENV = "ROAMMAIL_TEST_BOOTTIME_FILE"

# rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4 and IPv6
# addresses and routes.
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
_GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE
           | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE)
_IFF_UP = 0x1
_IFF_LOWER_UP = 0x10000
_IFA_F_DADFAILED = 0x08
_IFA_F_TENTATIVE = 0x40
_RT_TABLE_MAIN = 254
_RTN_UNICAST = 1
_RT_SCOPE_UNIVERSE = 0

_LOGIN1 = ("org.freedesktop.login1", "/org/freedesktop/login1",
           "org.freedesktop.login1.Manager", "PrepareForSleep")
_NM = ("org.freedesktop.NetworkManager", "/org/freedesktop/NetworkManager",
       "org.freedesktop.NetworkManager", "StateChanged")
NM_STATE_CONNECTED_GLOBAL = 70


@dataclass(frozen=True)
class NetState:
    """The network as the kernel sees it: usable default routes as (family,
    gateway, link index), global addresses of their links as (family,
    address/prefix, link index), and a digest of resolv.conf."""

    routes: frozenset = field(default_factory=frozenset)
    addresses: frozenset = field(default_factory=frozenset)
    dns: str = ""

    @property
    def online(self) -> bool:
        return bool(self.routes)


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def state_from(links: list, addrs: list, routes: list, dns: str = "") -> NetState:
    """The NetState of pyroute2 dump messages (links, addresses, routes)."""
    up = {link["index"] for link in links
          if link["flags"] & _IFF_UP and link["flags"] & _IFF_LOWER_UP}
    global_addrs: dict[int, set] = {}
    for addr in addrs:
        flags = _attr(addr, "IFA_FLAGS")
        flags = addr["flags"] if flags is None else flags
        if addr["scope"] != _RT_SCOPE_UNIVERSE or flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            continue
        local = _attr(addr, "IFA_LOCAL") or _attr(addr, "IFA_ADDRESS")
        if local:
            global_addrs.setdefault(addr["index"], set()).add(
                (addr["family"], f"{local}/{addr['prefixlen']}", addr["index"]))
    usable = set()
    for route in routes:
        table = _attr(route, "RTA_TABLE") or route["table"]
        if route["dst_len"] != 0 or table != _RT_TABLE_MAIN or route["type"] != _RTN_UNICAST:
            continue
        hops = [(_attr(route, "RTA_OIF"), _attr(route, "RTA_GATEWAY"))]
        for hop in _attr(route, "RTA_MULTIPATH") or []:
            hops.append((hop["oif"], _attr(hop, "RTA_GATEWAY")))
        for oif, gateway in hops:
            if oif in up and global_addrs.get(oif):
                usable.add((route["family"], gateway or "", oif))
    links_used = {oif for _, _, oif in usable}
    addresses = frozenset(a for oif in links_used for a in global_addrs[oif])
    return NetState(frozenset(usable), addresses, dns)


class Settler:
    """The debouncing decision, a pure object driven with times (seconds on
    a monotonic clock) passed in, tested with a fake clock.

    `note()` each state seen, each resume and each connectivity hint;
    `deadline()` is when `settle(now, state)` should be called with the
    state then; it returns the lines to print, in order."""

    def __init__(self, settle: float, state: NetState) -> None:
        self.settle = settle
        self.reported = state
        self._first: float | None = None
        self._last = 0.0
        self._touched = False
        self._resumed = False
        self._connected = False

    def _open(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def note_state(self, now: float, state: NetState) -> None:
        if state != self.reported:
            self._touched = True
            self._open(now)
        elif self._first is not None:
            self._last = now  # back where it was, but still moving

    def note_resumed(self, now: float) -> None:
        self._resumed = True
        self._open(now)

    def note_connected(self, now: float) -> None:
        self._connected = True
        self._open(now)

    def deadline(self) -> float | None:
        if self._first is None:
            return None
        return min(self._last + self.settle, self._first + MAX_HOLD * self.settle)

    def settle_now(self, state: NetState) -> list[str]:
        lines = []
        if self._resumed:
            lines.append(RESUMED)
        if state.online != self.reported.online:
            lines.append(ONLINE if state.online else OFFLINE)
        elif state.online and (self._touched or self._connected or state != self.reported):
            lines.append(CHANGED)
        self.reported = state
        self._first = None
        self._touched = self._resumed = self._connected = False
        return lines


def boottime_gap() -> float:
    """CLOCK_BOOTTIME minus CLOCK_MONOTONIC: the time spent asleep since boot
    (plus the test shift of BOOTTIME_SHIFT_ENV)."""
    gap = time.clock_gettime(time.CLOCK_BOOTTIME) - time.clock_gettime(time.CLOCK_MONOTONIC)
    shift_file = paths.getenv(BOOTTIME_SHIFT_ENV)
    if shift_file:
        try:
            with open(shift_file) as f:
                gap += float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
    return gap


def resolv_digest(path: str = RESOLV_CONF) -> str:
    """A digest of the resolver configuration; "" when there is none."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


class _Bus:
    """The system D-Bus, subscribed to logind's and NetworkManager's signals."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    def open(cls) -> _Bus | None:
        """The bus, or None when there is none (no socket, no jeepney)."""
        try:
            from jeepney import MatchRule, message_bus
            from jeepney.io.blocking import open_dbus_connection
        except ImportError:
            return None
        try:
            conn = open_dbus_connection(bus="SYSTEM")
        except Exception:  # no socket, refused, failed authentication: no bus
            return None
        try:
            for sender, path, interface, member in (_LOGIN1, _NM):
                rule = MatchRule(type="signal", sender=sender, path=path,
                                 interface=interface, member=member)
                conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=2.0)
        except Exception:
            conn.close()
            return None
        return cls(conn)

    def fileno(self) -> int:
        return int(self.conn.sock.fileno())

    def signals(self) -> list[tuple[str, tuple]]:
        """The (member, body) of each signal waiting; raises OSError or
        EOFError-like errors when the bus went away."""
        from jeepney.low_level import HeaderFields, MessageType

        found: list[tuple[str, tuple]] = []
        while True:
            try:
                msg = self.conn.receive(timeout=0)
            except TimeoutError:
                return found
            if msg.header.message_type != MessageType.signal:
                continue
            fields = msg.header.fields
            key = (fields.get(HeaderFields.path), fields.get(HeaderFields.interface),
                   fields.get(HeaderFields.member))
            if key in (_LOGIN1[1:], _NM[1:]):
                found.append((key[2], tuple(msg.body)))

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass


def _open_notifications() -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                             0)  # NETLINK_ROUTE
        sock.bind((0, _GROUPS))
    except OSError as exc:
        raise UnavailableError(f"cannot listen to rtnetlink: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class NetworkEvents:
    """The event source.  open(), then either iterate `events()` or run your
    own poll over `fds()` with `timeout()` and call `process(now)` after each
    wake-up; close() at the end.  `state` is the current NetState and
    `online` says whether the machine is online now."""

    def __init__(self, settle: float = DEFAULT_SETTLE, *, dbus: bool = True,
                 resolv_conf: str = RESOLV_CONF,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolv_conf = resolv_conf
        self.clock = clock
        self._want_bus = dbus
        self._settle = settle
        self._ipr: Any = None
        self._notify: socket.socket | None = None
        self._bus: _Bus | None = None
        self._gap = 0.0
        self._resume_seen = False
        self._next_tick = 0.0
        self.state = NetState()
        self.settler = Settler(settle, self.state)

    def open(self) -> None:
        try:
            from pyroute2 import IPRoute
        except ImportError:
            raise UnavailableError("the pyroute2 module is missing "
                                   "(Debian: apt-get install python3-pyroute2)") from None
        self._notify = _open_notifications()  # first: no change slips in between
        try:
            self._ipr = IPRoute()
        except OSError as exc:
            self.close()
            raise UnavailableError(f"cannot open rtnetlink: {exc.strerror or exc}") from None
        if self._want_bus:
            self._bus = _Bus.open()
        self._gap = boottime_gap()
        self.state = self.read_state()
        self.settler = Settler(self._settle, self.state)
        self._next_tick = self.clock() + TICK

    @property
    def online(self) -> bool:
        return self.state.online

    def close(self) -> None:
        for thing in (self._bus, self._ipr, self._notify):
            if thing is not None:
                try:
                    thing.close()
                except Exception:
                    pass
        self._bus = self._ipr = self._notify = None

    def read_state(self) -> NetState:
        ipr = self._ipr
        routes = [*ipr.get_routes(family=socket.AF_INET), *ipr.get_routes(family=socket.AF_INET6)]
        return state_from(list(ipr.get_links()), list(ipr.get_addr()), routes,
                          resolv_digest(self.resolv_conf))

    def fds(self) -> list[int]:
        fds = [self._notify.fileno()] if self._notify is not None else []
        if self._bus is not None:
            fds.append(self._bus.fileno())
        return fds

    def timeout(self) -> float:
        """Seconds until process() should run even without a wake-up."""
        now = self.clock()
        due = self.settler.deadline()
        until = self._next_tick if due is None else min(due, self._next_tick)
        return max(0.0, until - now)

    def _drain_notifications(self) -> bool:
        woke = False
        while self._notify is not None:
            try:
                self._notify.recv(65536)
                woke = True
            except BlockingIOError:
                return woke
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # we missed some: the dump will tell
                    woke = True
                    continue
                raise
        return woke

    def _bus_signals(self, now: float) -> bool:
        """Act on D-Bus signals; True when the network should be looked at."""
        if self._bus is None:
            return False
        try:
            signals = self._bus.signals()
        except Exception:  # the bus went away: carry on without it
            self._bus.close()
            self._bus = None
            return False
        look = False
        for member, body in signals:
            if member == _LOGIN1[3] and body:
                if body[0]:  # about to sleep
                    self._resume_seen = False
                    continue
                if not self._resume_seen:
                    self.settler.note_resumed(now)
                self._resume_seen = True
                self._gap = boottime_gap()  # the clocks need not say it again
            elif member == _NM[3]:
                look = True
                if body and body[0] == NM_STATE_CONNECTED_GLOBAL:
                    self.settler.note_connected(now)
        return look

    def _check_clocks(self, now: float) -> bool:
        gap = boottime_gap()
        slept = gap - self._gap > SLEEP_THRESHOLD
        self._gap = gap
        if slept:
            self.settler.note_resumed(now)
            self._resume_seen = True
        return slept

    def process(self) -> list[str]:
        """Read whatever woke us up; return the events now due, in order."""
        now = self.clock()
        look = self._drain_notifications()
        look = self._bus_signals(now) or look
        ticked = now >= self._next_tick
        if ticked:
            self._next_tick = now + TICK
        if self._check_clocks(now):
            look = True
        if look:
            self.state = self.read_state()
            self.settler.note_state(now, self.state)
        elif ticked:  # only resolv.conf can have changed unseen
            self.state = replace(self.state, dns=resolv_digest(self.resolv_conf))
            self.settler.note_state(now, self.state)
        due = self.settler.deadline()
        if due is not None and now >= due:
            self.state = self.read_state()
            return self.settler.settle_now(self.state)
        return []

    def events(self) -> Iterator[str]:
        """Each event as it becomes due, forever (until closed)."""
        while self._notify is not None:
            poller = select.poll()  # anew each time: the bus may have gone
            for fd in self.fds():
                poller.register(fd, select.POLLIN)
            poller.poll(self.timeout() * 1000 + 1)
            yield from self.process()


def open_events(settle: float = DEFAULT_SETTLE) -> tuple[NetworkEvents | None, str]:
    """NetworkEvents, opened; or None and the reason when the machine has
    none to give (no netlink, no pyroute2): a daemon then goes on without,
    on its own schedule, after saying so once."""
    events = NetworkEvents(settle)
    try:
        events.open()
    except (UnavailableError, OSError) as exc:
        events.close()
        return None, str(exc)
    return events, ""
