"""Timing: all servers probed at once, one timeout in total, an answer as
soon as every earlier candidate is known to be down; --sequential walks
one server after the other with a timeout each, as the original does.

The bounds are generous (twice the ideal) so that a loaded machine does not
fail them; bench/smtpdcheck_bench.py measures the real figures.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from smtpdcheck_peers import LATE_S

from roammail.smtpdcheck import cli as smtpdcheck
from roammail.smtpdcheck import probe

pytestmark = pytest.mark.slow  # real peers and timeouts of seconds

FIVE = ["127.0.0.51", "127.0.0.52", "127.0.0.53", "127.0.0.54", "127.0.0.55"]


def test_four_silent_then_one_up_takes_one_timeout(check, cluster):
    timeout = 2.0
    peers = cluster({**{a: "silent" for a in FIVE[:4]}, FIVE[4]: "up"})
    run = check("--timeout", str(timeout), "--port", str(peers.port), *FIVE)
    assert (run.status, run.out) == (1, FIVE[4] + "\n")
    # the earlier servers must be given their whole timeout...
    assert run.seconds >= timeout * 0.95
    # ...but all at once: one timeout, not four
    assert run.seconds < 2 * timeout
    assert all(peers[a].connections == 1 for a in FIVE)


def test_earlier_servers_known_down_at_once_give_the_answer_at_once(check, cluster):
    peers = cluster({FIVE[0]: "closed", FIVE[1]: "554", FIVE[2]: "421", FIVE[3]: "closed",
                     FIVE[4]: "up"})
    run = check("--timeout", "10", "--port", str(peers.port), *FIVE)
    assert (run.status, run.out) == (1, FIVE[4] + "\n")
    assert run.seconds < 2.0


def test_the_first_server_up_is_reported_without_waiting_for_later_ones(check, cluster):
    peers = cluster({FIVE[0]: "up", **{a: "silent" for a in FIVE[1:]}})
    run = check("--timeout", "10", "--port", str(peers.port), *FIVE)
    assert (run.status, run.out) == (1, FIVE[0] + "\n")
    assert run.seconds < 2.0


def test_a_later_server_up_waits_for_an_earlier_late_one(check, cluster):
    """The order of the arguments is the order of preference: a faster
    later server does not win over an earlier one that greets in time."""
    peers = cluster({FIVE[0]: "late", FIVE[1]: "up"})
    run = check("--timeout", "5", "--port", str(peers.port), FIVE[0], FIVE[1])
    assert (run.status, run.out) == (1, FIVE[0] + "\n")
    assert LATE_S * 0.9 <= run.seconds < 4.0


def test_many_silent_servers_still_take_one_timeout(check, cluster):
    addresses = [f"127.0.0.{60 + i}" for i in range(12)]
    peers = cluster({a: "silent" for a in addresses})
    run = check("--timeout", "1", "--port", str(peers.port), *addresses)
    assert (run.status, run.out) == (0, "")
    assert 0.95 <= run.seconds < 2.0


def test_sequential_gives_each_server_its_own_timeout(check, cluster):
    timeout = 1.0
    peers = cluster({FIVE[0]: "silent", FIVE[1]: "silent", FIVE[2]: "up", FIVE[3]: "up"})
    run = check("--sequential", "--timeout", str(timeout), "--port", str(peers.port),
                *FIVE[:4])
    assert (run.status, run.out) == (1, FIVE[2] + "\n")
    assert run.seconds >= 2 * timeout * 0.95
    assert peers[FIVE[3]].connections == 0  # the original stops at the answer


def test_timeout_0_waits_for_a_late_greeting(check, cluster):
    peers = cluster({FIVE[0]: "late"})
    run = check("--timeout", "0", "--port", str(peers.port), FIVE[0])
    assert (run.status, run.out) == (1, FIVE[0] + "\n")


def test_timeout_0_waits_forever_for_silence(installed, check_env, cluster):
    peers = cluster({FIVE[0]: "silent"})
    proc = subprocess.Popen([installed.tool("smtpdcheck"), "--no-cache", "--timeout", "0",
                             "--port", str(peers.port), FIVE[0]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=check_env)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2.5)
    finally:
        proc.kill()
        proc.communicate(timeout=30)


# ---------------------------------------- DNS is bounded by the deadline


@pytest.fixture
def slow_dns(monkeypatch):
    """getaddrinfo never answers for *.slow.test (until the test ends)."""
    real = probe.socket.getaddrinfo
    release = threading.Event()

    def fake(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".slow.test"):
            release.wait(60)
            raise probe.socket.gaierror(-2, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(probe.socket, "getaddrinfo", fake)
    yield
    release.set()


def test_a_lookup_that_never_ends_is_down_at_the_deadline(slow_dns, smtp_server, capsys):
    started = time.monotonic()
    status = smtpdcheck.main(["--no-cache", "--timeout", "1", "--port", str(smtp_server.port),
                              "mx.slow.test", "127.0.0.1"])
    seconds = time.monotonic() - started
    assert (status, capsys.readouterr().out) == (1, "127.0.0.1\n")
    assert 0.95 <= seconds < 2.0


def test_a_stop_lookup_that_never_ends_is_an_error_at_the_deadline(slow_dns, smtp_server,
                                                                   capsys):
    started = time.monotonic()
    status = smtpdcheck.main(["--no-cache", "--timeout", "1", "--port", str(smtp_server.port),
                              "--stop", "me.slow.test", "127.0.0.1"])
    seconds = time.monotonic() - started
    out, err = capsys.readouterr()
    assert (status, out) == (2, "")
    assert err == "smtpdcheck: cannot resolve --stop me.slow.test: timed out\n"
    assert seconds < 2.0


# ------------------------- leaving with a lookup still inside getaddrinfo

LAUNCHER = """
import atexit, socket, sys, threading
sys.path[:0] = [sys.argv.pop(1)]
from roammail.smtpdcheck import cli as smtpdcheck
real = socket.getaddrinfo
def fake(host, *args, **kwargs):
    if isinstance(host, str) and host.endswith(".slow.test"):
        threading.Event().wait(60)
    return real(host, *args, **kwargs)
socket.getaddrinfo = fake
atexit.register(lambda: sys.stderr.write("exit handlers ran\\n"))
sys.exit(smtpdcheck.main())
"""


@pytest.mark.parametrize("servers, status, out, handlers", [
    # the answer is known while mx.slow.test is still being resolved: the
    # process ends with _exit, without exit handlers and destructors
    (["127.0.0.1", "mx.slow.test"], 1, "127.0.0.1\n", False),
    # nothing left running: an ordinary exit
    (["127.0.0.1"], 1, "127.0.0.1\n", True),
])
def test_the_process_ends_at_once_when_a_lookup_is_still_running(
        smtp_server, servers, status, out, handlers):
    lib = str(Path(smtpdcheck.__file__).resolve().parents[2])
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-I", "-c", LAUNCHER, lib, "--no-cache",
                           "--timeout", "5", "--port", str(smtp_server.port), *servers],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (status, out)
    assert ("exit handlers ran" in proc.stderr) is handlers
    assert time.monotonic() - started < 4.0
