"""mswatch and the network: --network-changed, and the kernel's own events
in a network namespace of the test's own (links and routes changed with
ip(8), mswatch run inside it with `ip netns exec`).  Local watchers and a
recording sync program: no other host is involved."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mswatch_helpers import START_TIMEOUT, rc_text, starts, wait_starts, watcher_pids

from peers.waiting import wait_until

pytestmark = pytest.mark.slow  # real watchers (inotify) and processes

FULL = ["-x", "work"]  # the recorder's arguments of a full sync
# The longest a network event may take to act: the two-second settle time,
# the watchers' restart, and a busy machine.
EVENT_TIMEOUT = 12.0
QUIET = 3.0  # s in which nothing more may happen


def no_bus(tmp_path: Path) -> dict:
    """The system D-Bus made a path that does not exist: the host's plays no part."""
    return {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}


def restarted(run, before: list[int]) -> bool:
    now = watcher_pids(run.proc.pid)
    return len(now) == 2 and not set(now) & set(before)


def test_network_changed_restarts_the_watchers_then_one_full_sync(
        tmp_path, mswatch_run, recorder, installed, home) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script), env_extra=no_bus(tmp_path))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    run.wait_log("synced all mailboxes")
    before = watcher_pids(run.proc.pid)
    assert len(before) == 2
    pid_file = run.argv[run.argv.index("--pid-file") + 1]
    res = subprocess.run([installed.tool("mswatch"), "--network-changed", "--pid-file",
                          pid_file], env=installed.env(HOME=str(home)), capture_output=True,
                         text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"mswatch: told pid {run.proc.pid} that the network changed\n"
    assert wait_until(lambda: restarted(run, before), EVENT_TIMEOUT), run.text()
    found = wait_starts(log, 2, timeout=EVENT_TIMEOUT)
    assert found[1][1] == FULL
    time.sleep(QUIET)
    assert len(starts(log)) == 2  # one full sync, not one per watcher
    assert "network change announced (SIGRTMIN)" in run.text()
    assert run.stop() == 0


def synced_inside(tmp_path, mswatch_run, recorder, netns):
    """mswatch with a recording sync, started inside the online namespace
    and past its first sync: (the running mswatch, the sync's log)."""
    netns.go_online()
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script), env_extra=no_bus(tmp_path),
                      netns=netns.name)
    wait_starts(log, 1, timeout=START_TIMEOUT)
    run.wait_log("synced all mailboxes")
    return run, log


def test_link_down_and_up_with_a_new_route(tmp_path, mswatch_run, recorder,
                                           netns) -> None:
    run, log = synced_inside(tmp_path, mswatch_run, recorder, netns)
    before = watcher_pids(run.proc.pid)
    assert len(before) == 2
    t0 = time.monotonic()
    # Down (the default route goes with it), up, and a route by another gateway.
    netns.sh(f"ip link set v0 down; ip link set v0 up;"
             f" ip route add default via {netns.OTHER_GATEWAY} dev v0")
    assert wait_until(lambda: restarted(run, before), EVENT_TIMEOUT), run.text()
    found = wait_starts(log, 2, timeout=EVENT_TIMEOUT)
    assert found[1][1] == FULL
    assert time.monotonic() - t0 < EVENT_TIMEOUT
    time.sleep(QUIET)
    assert len(starts(log)) == 2
    assert "network changed: restarting the watchers" in run.text()
    assert run.stop() == 0


def test_offline_then_back_is_one_line_each_and_a_full_sync(tmp_path, mswatch_run, recorder,
                                                            netns) -> None:
    run, log = synced_inside(tmp_path, mswatch_run, recorder, netns)
    netns.ip("route", "del", "default")
    run.wait_log("network offline", timeout=EVENT_TIMEOUT)
    netns.ip("route", "add", "default", "via", netns.GATEWAY, "dev", "v0")
    run.wait_log("network back", timeout=EVENT_TIMEOUT)
    found = wait_starts(log, 2, timeout=EVENT_TIMEOUT)
    assert found[1][1] == FULL
    time.sleep(QUIET)
    assert len(starts(log)) == 2
    text = run.text()
    assert text.count("network offline") == 1 and text.count("network back") == 1
    assert run.stop() == 0


def test_network_events_no_ignores_the_network(tmp_path, mswatch_run, recorder,
                                               netns) -> None:
    netns.go_online()
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script, extra="network_events no"),
                      env_extra=no_bus(tmp_path), netns=netns.name)
    wait_starts(log, 1, timeout=START_TIMEOUT)
    run.wait_log("synced all mailboxes")
    before = watcher_pids(run.proc.pid)
    netns.sh(f"ip link set v0 down; ip link set v0 up;"
             f" ip route add default via {netns.OTHER_GATEWAY} dev v0")
    time.sleep(5.0)  # more than the settle time and the restart together
    assert sorted(watcher_pids(run.proc.pid)) == sorted(before)
    assert len(starts(log)) == 1
    assert "network changed" not in run.text()
    assert run.stop() == 0
