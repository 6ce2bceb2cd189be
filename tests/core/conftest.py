"""Fixtures of the core tests: a real TCP connection on 127.0.0.1, for the
tests of /proc's socket view (test_proc.py) and of sock_diag (test_traffic.py)."""

from __future__ import annotations

import os
import socket

import pytest


@pytest.fixture
def connection():
    """(client, server-side) sockets of one TCP connection on 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    listener.close()
    yield client, served
    client.close()
    served.close()


def inode(sock: socket.socket) -> int:
    """The inode of a socket: how /proc and sock_diag name it."""
    return os.fstat(sock.fileno()).st_ino
