"""Unit tests of roammail.core.traffic: the netlink dump against real sockets on
127.0.0.1, and the activity rule.  (/proc parsing: test_proc.py.)"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import pytest

from core.conftest import inode
from roammail.core import traffic as netwatch
from roammail.core.traffic import TcpDiag, TcpSocket, activity

TCP_ESTABLISHED, TCP_SYN_SENT, TCP_LISTEN = 1, 2, 10


@pytest.fixture
def diag():
    with TcpDiag() as d:
        yield d






def settle(diag: TcpDiag, sock: socket.socket, check, timeout: float = 2.0) -> TcpSocket:
    """The socket's dump entry once `check(entry)` holds (an ACK may lag)."""
    deadline = time.monotonic() + timeout
    while True:
        entry = diag.dump()[inode(sock)]
        if check(entry) or time.monotonic() >= deadline:
            return entry
        time.sleep(0.01)


# -- the netlink dump -------------------------------------------------------------------


def test_counters_move_with_real_traffic(diag, connection):
    client, served = connection
    start_c = settle(diag, client, lambda e: True)
    start_s = settle(diag, served, lambda e: True)
    assert start_c.state == start_s.state == TCP_ESTABLISHED
    assert start_s.bytes_received == 0

    client.sendall(b"x" * 10_000)
    got = 0
    while got < 10_000:
        got += len(served.recv(65536))
    after_s = settle(diag, served, lambda e: e.bytes_received == 10_000)
    after_c = settle(diag, client, lambda e: e.bytes_acked >= start_c.bytes_acked + 10_000)
    assert after_s.bytes_received == 10_000
    assert after_c.bytes_acked - start_c.bytes_acked == 10_000
    assert after_c.bytes_received == 0

    served.sendall(b"y" * 777)
    client.recv(1000)
    back = settle(diag, client, lambda e: e.bytes_received == 777)
    assert back.bytes_received == 777
    assert activity({after_c.inode: after_c}, {back.inode: back})


def test_dump_sees_ipv6_and_listeners(diag):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    with listener:
        entry = diag.dump()[inode(listener)]
        assert entry.state == TCP_LISTEN
        with socket.create_connection(listener.getsockname()[:2]) as client:
            served, _ = listener.accept()
            with served:
                client.sendall(b"abc")
                assert served.recv(10) == b"abc"
                assert settle(diag, served, lambda e: e.bytes_received == 3).bytes_received == 3


def test_trafficwatch_on_a_real_child_process(diag):
    """A child that receives one line a second apart: look() says so, then not."""
    listener = socket.create_server(("127.0.0.1", 0))
    script = ("import socket,sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
              " f = s.makefile('rb'); [sys.stdout.write('got\\n') or sys.stdout.flush()"
              " for _ in iter(f.readline, b'')]")
    child = subprocess.Popen([sys.executable, "-c", script, str(listener.getsockname()[1])],
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        served, _ = listener.accept()
        watch = netwatch.TrafficWatch(parent=child.pid, session=child.pid, diag=diag)
        # The child's tree only: not this process, whose sockets are not watched.
        assert set(watch.members()) == {child.pid}
        assert watch.look()          # first look: a connected socket is new
        assert not watch.look()      # nothing moved since
        served.sendall(b"line\n")
        assert child.stdout.readline() == b"got\n"
        assert watch.look()          # bytes received
        assert not watch.look()
        served.close()
    finally:
        listener.close()
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()


# -- parsing, without the kernel -----------------------------------------------------------


def _diag_msg(inode: int, state: int, info: bytes | None) -> bytes:
    body = netwatch.INET_DIAG_MSG.pack(2, state, 0, 0, 0, 5, 6, 0, inode)
    if info is not None:
        attr = struct.pack("=HH", 4 + len(info), netwatch.INET_DIAG_INFO) + info
        body += attr + b"\0" * (-len(attr) % 4)
    return body


def _nlmsg(kind: int, seq: int, payload: bytes) -> bytes:
    msg = netwatch.NLMSGHDR.pack(16 + len(payload), kind, 2, seq, 0) + payload
    return msg + b"\0" * (-len(msg) % 4)


def test_parse_netlink_reads_counters_skips_others_and_stops_at_done():
    info = bytearray(232)
    struct.pack_into("=QQ", info, 120, 1234, 5678)
    data = (_nlmsg(netwatch.SOCK_DIAG_BY_FAMILY, 7, _diag_msg(99, 1, bytes(info)))
            + _nlmsg(netwatch.SOCK_DIAG_BY_FAMILY, 6, _diag_msg(98, 1, bytes(info)))  # old seq
            + _nlmsg(netwatch.SOCK_DIAG_BY_FAMILY, 7, _diag_msg(97, 2, b"short")))
    sockets, done = netwatch.parse_netlink(data, 7)
    assert not done
    assert sockets == [TcpSocket(99, 1, 1234, 5678, 5, 6), TcpSocket(97, 2, None, None, 5, 6)]
    assert sockets[1].traffic() == ("queues", 5, 6)
    assert netwatch.parse_netlink(_nlmsg(netwatch.NLMSG_DONE, 7, b"\0" * 4), 7) == ([], True)


def test_parse_netlink_raises_on_an_error_answer():
    with pytest.raises(OSError) as info:
        netwatch.parse_netlink(_nlmsg(netwatch.NLMSG_ERROR, 3, struct.pack("=i", -13)), 3)
    assert info.value.errno == 13
    with pytest.raises(OSError):
        netwatch.parse_netlink(netwatch.NLMSGHDR.pack(100, 20, 0, 3, 0), 3)  # truncated


# -- the activity rule ------------------------------------------------------------------------


def sock(inode: int, state: int = TCP_ESTABLISHED, acked: int = 0, received: int = 0):
    return TcpSocket(inode, state, acked, received, 0, 0)


@pytest.mark.parametrize("before, after, expected", [
    ({}, {}, False),
    ({}, {1: sock(1)}, True),                                   # a new connection
    ({}, {1: sock(1, TCP_SYN_SENT)}, False),                    # an unanswered connect
    ({1: sock(1, TCP_SYN_SENT)}, {1: sock(1, TCP_SYN_SENT)}, False),
    ({1: sock(1, TCP_SYN_SENT)}, {1: sock(1)}, True),           # handshake done
    ({1: sock(1, acked=5)}, {1: sock(1, acked=5)}, False),
    ({1: sock(1, acked=5)}, {1: sock(1, acked=6)}, True),       # sent and acknowledged
    ({1: sock(1, received=5)}, {1: sock(1, received=9)}, True),  # received
    ({1: sock(1), 2: sock(2)}, {1: sock(1)}, False),            # one closed
    ({}, {3: sock(3, TCP_LISTEN)}, True),                       # a new listener
])
def test_activity_rule(before, after, expected):
    assert activity(before, after) is expected
