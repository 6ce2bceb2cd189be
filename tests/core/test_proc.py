"""Unit tests of roammail.core.proc: /proc parsing, the process tree, the
sockets a process holds, and whether a process group still runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from core.conftest import inode
from roammail.core import proc as procfs
from roammail.core.proc import Proc

# -- /proc -------------------------------------------------------------------------


def test_parse_stat_survives_odd_command_names():
    proc = procfs.parse_stat(b"42 (a) b (c)) S 7 42 40 0 -1 4194560 ...")
    assert proc == Proc(pid=42, ppid=7, pgid=42, sid=40, state="S")
    assert proc.running
    assert not procfs.parse_stat(b"43 (x) Z 7 42 40 0").running


def test_process_table_knows_us():
    me = procfs.process_table()[os.getpid()]
    assert (me.ppid, me.pgid, me.sid) == (os.getppid(), os.getpgrp(), os.getsid(0))


def test_tree_follows_parents_and_sessions_and_drops_zombies():
    table = {p.pid: p for p in [
        Proc(10, 1, 10, 10, "S"),   # the root
        Proc(11, 10, 11, 11, "S"),  # child, own session
        Proc(12, 11, 11, 11, "R"),  # grandchild
        Proc(13, 11, 11, 11, "Z"),  # a zombie grandchild
        Proc(20, 1, 20, 11, "S"),   # re-parented away, still in session 11
        Proc(30, 1, 30, 30, "S"),   # a stranger
    ]}
    assert set(procfs.tree(table, roots=[10])) == {11, 12}
    assert set(procfs.tree(table, roots=[10], sessions=[11])) == {11, 12, 20}
    assert procfs.tree(table, roots=[99]) == {}


def test_socket_inodes_sees_our_sockets_and_dups(connection):
    client, served = connection
    extra = os.dup(client.fileno())
    try:
        found = procfs.socket_inodes([os.getpid()])
    finally:
        os.close(extra)
    assert {inode(client), inode(served)} <= found
    assert procfs.socket_inodes([2 ** 22 + 12345]) == set()  # no such pid


def test_socket_inodes_of_a_child_process(connection, tmp_path):
    client, _ = connection
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, pass_fds=[client.fileno()])
    try:
        assert inode(client) in procfs.socket_inodes([child.pid])
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_a_short_stat_line_is_a_value_error():
    with pytest.raises(ValueError):
        procfs.parse_stat(b"44 (x) S 7")


def test_without_proc_the_table_is_empty(tmp_path):
    assert procfs.process_table(str(tmp_path / "missing")) == {}
    assert procfs.read_stat(os.getpid(), str(tmp_path / "missing")) is None


def test_group_members_and_running_leave_zombies_out():
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        assert procfs.group_members(child.pid) == {child.pid: child.pid}
        assert procfs.group_running(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while procfs.group_running(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        # A zombie now (not reaped yet): a member for kill(2), not running.
        found = procfs.read_stat(child.pid)
        assert found is not None and not found.running
        assert not procfs.group_running(child.pid)
        assert procfs.group_members(child.pid) == {}
    finally:
        child.kill()
        child.wait()
    assert not procfs.group_running(child.pid)  # reaped: no such group at all
