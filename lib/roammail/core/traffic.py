"""traffic.py: observe a process tree and its TCP traffic from outside (Linux).

Owns the reading of the kernel's per-socket TCP counters (sock_diag
netlink, INET_DIAG_INFO -> struct tcp_info); the process tree and the
sockets its processes hold come from core.proc.  Nothing is injected into
the watched programs: it works the same for static binaries, programs that
fork or use threads, and sockets that were inherited, dup'ed or passed
around inside the tree.

What counts as network activity (`activity()`, a pure function; the man
page of socketwatch says the same):
- a TCP socket (IPv4 or IPv6) of the tree whose count of bytes received
  (tcpi_bytes_received) or of bytes sent and acknowledged by the peer
  (tcpi_bytes_acked) changed since the last look;
- a TCP socket seen for the first time that is past SYN_SENT (a
  connection established or accepted, a socket listening), or one that
  left SYN_SENT (a handshake completed).
Bytes sent but never acknowledged (retransmissions to a dead peer, data
stuck in the send buffer), connection attempts that get no answer, UDP,
unix sockets and file I/O do not count.

Must never: signal or change a process (it only reads); raise for a
process that vanished while it looked (a race, not an error).  It does
raise OSError when the netlink dump itself fails.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import Mapping

from .proc import Proc, process_table, socket_inodes, tree

# -- TCP counters through sock_diag -------------------------------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
INET_DIAG_INFO = 2  # attribute carrying struct tcp_info
ALL_STATES = 0xFFFFFFFF
TCP_SYN_SENT = 2

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed
# inet_diag_sockid (sport, dport, src[4], dst[4], if, cookie[2]: 48 bytes).
INET_DIAG_REQ_V2 = struct.Struct("=BBBBI48x")
# inet_diag_msg: family, state, timer, retrans, sockid (48), expires,
# rqueue, wqueue, uid, inode: 72 bytes.
INET_DIAG_MSG = struct.Struct("=BBBB48xIIIII")
RTATTR = struct.Struct("=HH")
# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received,
# both __u64, at offsets 120 and 128 (Linux 4.1 and later).
TCP_INFO_BYTES = struct.Struct("=QQ")
TCP_INFO_BYTES_OFFSET = 120

RECV_BUFFER = 1 << 17  # bytes: more than one netlink dump message batch


@dataclass(frozen=True)
class TcpSocket:
    """One TCP socket in the kernel's dump.

    bytes_acked / bytes_received are None on a kernel whose tcp_info is too
    short (before 4.1); rqueue/wqueue (bytes queued) stand in for them then.
    """

    inode: int
    state: int
    bytes_acked: int | None
    bytes_received: int | None
    rqueue: int
    wqueue: int

    def traffic(self) -> tuple:
        """What changes when bytes move on this socket."""
        if self.bytes_acked is None or self.bytes_received is None:
            return ("queues", self.rqueue, self.wqueue)
        return (self.bytes_acked, self.bytes_received)


def _align4(n: int) -> int:
    return (n + 3) & ~3


def diag_request(family: int, seq: int) -> bytes:
    """A netlink message asking for every TCP socket of `family`, with tcp_info."""
    body = INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0,
                                 ALL_STATES)
    header = NLMSGHDR.pack(NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                           NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def parse_diag_message(payload: bytes) -> TcpSocket:
    """Parse one SOCK_DIAG_BY_FAMILY answer: inet_diag_msg, then attributes."""
    (_family, state, _timer, _retrans, _expires, rqueue, wqueue, _uid,
     inode) = INET_DIAG_MSG.unpack_from(payload)
    acked = received = None
    offset = INET_DIAG_MSG.size
    while offset + RTATTR.size <= len(payload):
        length, kind = RTATTR.unpack_from(payload, offset)
        if length < RTATTR.size:
            break
        if kind == INET_DIAG_INFO:
            info = payload[offset + RTATTR.size: offset + length]
            if len(info) >= TCP_INFO_BYTES_OFFSET + TCP_INFO_BYTES.size:
                acked, received = TCP_INFO_BYTES.unpack_from(info, TCP_INFO_BYTES_OFFSET)
        offset += _align4(length)
    return TcpSocket(inode, state, acked, received, rqueue, wqueue)


def parse_netlink(data: bytes, seq: int) -> tuple[list[TcpSocket], bool]:
    """Parse one datagram of a dump answer; return its sockets and whether it
    was the last (NLMSG_DONE).  An NLMSG_ERROR raises OSError."""
    sockets: list[TcpSocket] = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, _flags, msg_seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise OSError(errno.EPROTO, "truncated netlink message")
        payload = data[offset + NLMSGHDR.size: offset + length]
        offset += _align4(length)
        if msg_seq != seq:
            continue  # an answer to an earlier request: not ours
        if kind == NLMSG_DONE:
            return sockets, True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", payload)
            if code == 0:
                continue  # an acknowledgement
            raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
        if kind == SOCK_DIAG_BY_FAMILY:
            sockets.append(parse_diag_message(payload))
    return sockets, False


class TcpDiag:
    """A netlink sock_diag socket; `dump()` reads every TCP socket's counters."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> TcpDiag:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def dump(self) -> dict[int, TcpSocket]:
        """inode -> TcpSocket for the TCP sockets (IPv4 and IPv6) of this
        network namespace that have an inode (TIME_WAIT ones do not)."""
        found: dict[int, TcpSocket] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            self._seq += 1
            self._sock.send(diag_request(family, self._seq))
            done = False
            while not done:
                data = self._sock.recv(RECV_BUFFER)
                sockets, done = parse_netlink(data, self._seq)
                for sock in sockets:
                    if sock.inode:
                        found[sock.inode] = sock
        return found


# -- the activity rule ----------------------------------------------------------


def activity(before: Mapping[int, TcpSocket], after: Mapping[int, TcpSocket]) -> bool:
    """True when the tree's TCP sockets show network traffic between two looks.

    `before` and `after` map inode -> TcpSocket for the tree's TCP sockets.
    See the module docstring for the rule.  A socket that went away is not
    activity by itself.
    """
    for inode, now in after.items():
        old = before.get(inode)
        if old is None:
            if now.state != TCP_SYN_SENT:
                return True
        elif now.traffic() != old.traffic():
            return True
        elif old.state == TCP_SYN_SENT and now.state != TCP_SYN_SENT:
            return True
    return False


class TrafficWatch:
    """Watch the TCP traffic of the processes descended from `parent` (we
    are a subreaper there, so orphans come back to us) and of the members of
    session `session` (the command's).  Call `look()` every poll interval."""

    def __init__(self, parent: int, session: int, diag: TcpDiag | None = None) -> None:
        self.parent = parent
        self.session = session
        self._diag = diag if diag is not None else TcpDiag()
        self._last: dict[int, TcpSocket] = {}

    def close(self) -> None:
        self._diag.close()

    def members(self) -> dict[int, Proc]:
        """The processes of the tree now (running ones only)."""
        return tree(process_table(), roots=[self.parent], sessions=[self.session])

    def sockets(self) -> dict[int, TcpSocket]:
        """inode -> TcpSocket for the TCP sockets the tree holds now."""
        inodes = socket_inodes(self.members())
        if not inodes:
            return {}
        return {inode: sock for inode, sock in self._diag.dump().items() if inode in inodes}

    def look(self) -> bool:
        """Take a new look; True when there was activity since the last one.

        The first look compares with nothing: any connected socket counts.
        Raises OSError when the netlink dump fails.
        """
        now = self.sockets()
        active = activity(self._last, now)
        self._last = now
        return active
