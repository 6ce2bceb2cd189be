"""extsmaild's daemon and the network: SIGUSR1 and --wake end a backoff;
inside network namespaces, the queue waits while offline and goes out as
soon as the link is up.

The end-to-end tests join a "laptop" namespace, where the installed
extsmaild runs, and a "server" namespace, where a test sshd (peers.sshd)
listens, with a veth pair; the external is `ssh ... SERVER recorder`, a
real ssh login that appends the message to a file on the far side.  The
namespaces are made and removed by the tests; no other host is involved.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from extsmail.conftest import Daemon, simple_message
from peers.require import require_program
from peers.sshd import SshServer
from peers.waiting import running, wait_until

BACKOFF_FIRST = 5.0  # the daemon's first backoff step (extsmaild(1))
LAPTOP_ADDRESS = "10.77.1.2/24"
SERVER_ADDRESS = "10.77.1.1"
# Generous: a busy two-CPU machine.  What matters is that it is well short
# of what the backoff alone would take.
PROMPT = 4.0


@pytest.fixture
def daemons(daemons, ext_home, tmp_path: Path) -> Callable[..., Daemon]:
    """start(prefix=()) -> a ready `PREFIX... extsmaild -m daemon -f`, with
    no system D-Bus (the host's plays no part)."""
    env = ext_home.env(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus")
    return lambda prefix=(): daemons(prefix=tuple(prefix), env=env)


def queue(h, message: bytes) -> None:
    res = h.run("extsmail", "to@example.org", input=message)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------------- SIGUSR1 and --wake


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGUSR1", "--wake"])
def test_a_wake_ends_the_backoff_at_once(ext_home, daemons, how):
    # The daemon's own events play no part: only the signal.
    ext_home.write_conf('spool_dir = "~/.extsmail/spool"\nnetwork_events = no\n')
    ext = ext_home.recorder("ext")
    ext.fail_with(1)
    ext_home.write_externals(f'group {{ external ext {{ sendmail = "{ext.path}" }} }}')
    d = daemons()
    assert "network events off" in d.text()
    queue(ext_home, simple_message())
    # Two failures, 5 s apart: the next try is 10 s away.
    assert wait_until(lambda: len(ext.received()) == 2, 3 * BACKOFF_FIRST), d.text()
    failed_at = time.monotonic()
    ext.succeed()
    if how == "SIGUSR1":
        d.proc.send_signal(signal.SIGUSR1)
    else:
        res = ext_home.run("extsmaild", "--wake")
        assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    assert wait_until(lambda: ext_home.queued() == [], 2 * BACKOFF_FIRST), d.text()
    assert time.monotonic() - failed_at < BACKOFF_FIRST  # the backoff said 10 s
    assert len(ext.received()) == 3
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_wake_without_a_daemon_is_69(ext_home):
    res = ext_home.run("extsmaild", "--wake")
    assert res.returncode == 69
    assert res.stderr.decode() == (f"extsmaild: no extsmaild daemon is running on "
                                   f"{ext_home.spool}\n")


def test_wake_never_signals_a_stale_pid(ext_home):
    # The lock held by something that is not a daemon of ours (the C
    # extsmaild, say), the file still naming a process that does not have
    # it open: that process must not get SIGUSR1 (it would die of it).
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        fd = os.open(ext_home.spool / "extsmaild.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{bystander.pid}\n".encode())
            res = ext_home.run("extsmaild", "--wake")
        finally:
            os.close(fd)
        assert res.returncode == 69, res.stderr
        assert b"is not a daemon that takes --wake" in res.stderr
        time.sleep(0.2)
        assert running(bystander.pid)
    finally:
        bystander.kill()
        bystander.wait(10)


# ------------------------------------------------------ network namespaces


RECORDING_SENDMAIL = """#!/bin/sh
# The far side's sendmail: append the message to {out}, one at a time.
exec 9>>"{out}.lock"
flock 9
cat >> "{out}"
"""


class Link:
    """A laptop and a server namespace joined by veth v0 (laptop) - v1."""

    def __init__(self, tag: str) -> None:
        self.laptop = f"roammail-laptop-{tag}"
        self.server = f"roammail-server-{tag}"

    def ip(self, ns: str, *args: str) -> None:
        subprocess.run(["ip", "-n", ns, *args], check=True, timeout=10,
                       stdout=subprocess.DEVNULL)

    def exec_prefix(self, ns: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", ns)

    def up(self) -> None:
        """The laptop's link up, with an address and a default route."""
        self.ip(self.laptop, "address", "add", LAPTOP_ADDRESS, "dev", "v0")
        self.ip(self.laptop, "link", "set", "v0", "up")
        self.ip(self.laptop, "route", "add", "default", "via", SERVER_ADDRESS, "dev", "v0")

    def down(self) -> None:
        """The laptop's link down: its address and route go with it."""
        self.ip(self.laptop, "link", "set", "v0", "down")
        self.ip(self.laptop, "address", "flush", "dev", "v0")


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    require_program("ip")
    require_program("flock")
    lk = Link(str(os.getpid()))
    for ns in (lk.laptop, lk.server):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)
    try:
        for ns in (lk.laptop, lk.server):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
        lk.ip(lk.laptop, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
              "netns", lk.server)
        lk.ip(lk.server, "address", "add", f"{SERVER_ADDRESS}/24", "dev", "v1")
        lk.ip(lk.server, "link", "set", "v1", "up")
        lk.ip(lk.server, "link", "set", "lo", "up")
        yield lk
    finally:
        for ns in (lk.laptop, lk.server):
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)


@pytest.fixture
def far_sshd(link: Link, tmp_path: Path) -> Iterator[SshServer]:
    server = SshServer.start(tmp_path / "sshd", host=SERVER_ADDRESS,
                             launch_prefix=link.exec_prefix(link.server))
    try:
        yield server
    finally:
        server.stop()


def ssh_external(h, sshd: SshServer) -> Path:
    """An externals file whose one external is ssh to the far sshd running
    the recording sendmail; returns the file the messages land in."""
    out = h.tmp / "far" / "received"
    out.parent.mkdir()
    recorder = h.tmp / "far" / "sendmail"
    recorder.write_text(RECORDING_SENDMAIL.format(out=out))
    recorder.chmod(0o755)
    h.write_externals(f'group {{ external far {{ sendmail = "{sshd.ssh_path} -F '
                      f'{sshd.config_path} -o BatchMode=yes {sshd.host_alias} '
                      f'{recorder}" }} }}')
    return out


def message_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return re.findall(r"^Message-ID: (<[^>]+>)$", path.read_text(), re.MULTILINE)


def numbered(i: int) -> bytes:
    return (f"From: me@example.org\nTo: to@example.org\nSubject: m{i}\n"
            f"Message-ID: <m{i}@roammail.test>\n\nMessage {i}.\n").encode()


def noise(d: Daemon) -> list[str]:
    """The log lines that speak of failures."""
    return [line for line in d.lines() if "fail" in line or "error" in line.lower()]


@pytest.mark.slow
def test_offline_the_queue_waits_quietly_then_goes_out_when_the_link_is_up(
        ext_home, daemons, link, far_sshd):
    received = ssh_external(ext_home, far_sshd)
    for i in range(5):
        queue(ext_home, numbered(i))
    d = daemons(link.exec_prefix(link.laptop))
    assert d.wait_log("network offline: 5 messages wait"), d.text()
    # Longer than the first backoff step and than the events' look at the
    # clocks: a daemon that tried would have failed and said so by now.
    time.sleep(BACKOFF_FIRST + 1.5)
    assert noise(d) == [], d.text()
    assert len(ext_home.queued()) == 5
    assert message_ids(received) == []
    # roammail-status tells a queue that waits for the network from a stuck one.
    line = ext_home.run("roammail-status").stdout.decode()
    assert line.startswith("mail: 5 queued (oldest ") and ", offline)" in line, line

    link.up()
    up_at = time.monotonic()
    assert wait_until(lambda: len(message_ids(received)) >= 5, 30), d.text()
    took = time.monotonic() - up_at
    assert took < PROMPT, (took, d.text())
    assert wait_until(lambda: ext_home.queued() == [], 10), d.text()
    time.sleep(0.5)
    assert sorted(message_ids(received)) == [f"<m{i}@roammail.test>" for i in range(5)]
    assert far_sshd.count_accepted() >= 1
    assert d.text().count("network offline") == 1, d.text()
    assert d.text().count("network online") == 1, d.text()
    assert noise(d) == [], d.text()
    assert d.stop() == 0


@pytest.mark.slow
def test_going_offline_and_back_is_one_line_each(ext_home, daemons, link, far_sshd):
    received = ssh_external(ext_home, far_sshd)
    link.up()
    d = daemons(link.exec_prefix(link.laptop))
    queue(ext_home, numbered(0))
    assert wait_until(lambda: len(message_ids(received)) == 1, 15), d.text()

    link.down()
    assert d.wait_log("network offline: 0 messages wait"), d.text()
    queue(ext_home, numbered(1))
    queue(ext_home, numbered(2))
    time.sleep(BACKOFF_FIRST + 1.5)
    assert len(ext_home.queued()) == 2  # no pass while offline
    assert message_ids(received) == ["<m0@roammail.test>"]

    link.up()
    up_at = time.monotonic()
    assert wait_until(lambda: len(message_ids(received)) == 3, 30), d.text()
    assert time.monotonic() - up_at < PROMPT, d.text()
    assert wait_until(lambda: ext_home.queued() == [], 10), d.text()
    assert d.text().count("network offline") == 1, d.text()
    assert d.text().count("network online") == 1, d.text()
    assert noise(d) == [], d.text()
    assert d.stop() == 0


def test_network_events_no_tries_while_offline_as_before(ext_home, daemons, link, far_sshd):
    ssh_external(ext_home, far_sshd)
    ext_home.write_conf('spool_dir = "~/.extsmail/spool"\nnetwork_events = no\n')
    queue(ext_home, numbered(0))
    d = daemons(link.exec_prefix(link.laptop))
    assert d.wait_log("external far failed"), d.text()
    assert "network offline" not in d.text()
    assert d.stop() == 0
