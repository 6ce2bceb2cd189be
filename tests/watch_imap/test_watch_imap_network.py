"""watch-imap told that the network changed (SIGUSR1), against a real
Dovecot: every connection proves at once that it is alive, and one that
went silent (its imap process stopped with SIGSTOP, as a link that died
without a word) is replaced at once, not after the keepalive."""

from __future__ import annotations

import os
import signal
import time

import pytest
from imap_helpers import account
from test_watch_imap import FOLDERS, mail, make_folders

from peers import proctable
from peers.waiting import wait_until

pytestmark = pytest.mark.slow

EVERY_FOLDER = ["INBOX", "Lists/foo", "With Space", "Caf&AOk-"]
# Long, so that only the trigger can explain a check: nothing in these
# tests waits for it.
KEEPALIVE = "10m"
# The check's deadline (watch.CHECK_TIMEOUT), the reconnect, a busy machine.
REPLACED_WITHIN = 15.0


def sessions(dovecot) -> set[int]:
    """Pids of the imap processes: one per logged-in session."""
    return {pid for pid in dovecot.processes() if proctable.comm(pid) == "imap"}


def read_bytes(pid: int) -> int:
    """What process `pid` has read so far (its rchar): an imap process in
    IDLE reads only what its client sends."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_sigusr1_checks_and_keeps_a_live_connection(dovecot, watch_imap) -> None:
    make_folders(dovecot, FOLDERS)
    w = watch_imap(account(dovecot, keepalive=KEEPALIVE))
    w.ready()
    assert dovecot.wait_for_sessions(1)
    (session,) = sessions(dovecot)
    time.sleep(0.5)  # IDLE begun
    read = read_bytes(session)
    assert w.lines_for(1.0) == [] and read_bytes(session) == read  # quiet without a trigger
    w.signal(signal.SIGUSR1)
    # The server hears from it now (DONE, then IDLE again)...
    assert wait_until(lambda: read_bytes(session) > read, 5)
    # ...and the connection answered: no reconnect, no report.
    assert w.lines_for(2.0) == []
    assert sessions(dovecot) == {session}
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert "network change announced (SIGUSR1): checking the connections now" in w.stderr()


def test_sigusr1_replaces_a_silent_connection_at_once(dovecot, watch_imap) -> None:
    make_folders(dovecot, FOLDERS)
    w = watch_imap(account(dovecot, keepalive=KEEPALIVE, timeout="20s"))
    w.ready()
    assert dovecot.wait_for_sessions(1)
    (stale,) = sessions(dovecot)
    os.kill(stale, signal.SIGSTOP)
    try:
        assert w.lines_for(1.0) == []  # silent: nothing noticed without the trigger
        started = time.monotonic()
        w.signal(signal.SIGUSR1)
        # The reconnect reports every folder, as changes may have been missed.
        w.expect(EVERY_FOLDER, timeout=REPLACED_WITHIN)
        assert time.monotonic() - started < REPLACED_WITHIN
        assert wait_until(lambda: sessions(dovecot) - {stale}, 5)
    finally:
        os.kill(stale, signal.SIGCONT)
    dovecot.deliver("INBOX", mail())
    w.expect(["INBOX"])
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert "no answer to DONE within 5 s" in w.stderr()
