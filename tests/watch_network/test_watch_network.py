"""watch-network against the kernel: a network namespace of the test's own
with a veth pair, routes and addresses changed with ip(8), the installed
tool run inside it.  No other host is involved.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from peers.require import require_program
from peers.waiting import wait_until

SETTLE = "0.5"  # seconds: short, so the tests are quick
# The longest an event may take: the settle time, the five-second look at
# the clocks and resolv.conf, and a busy machine.
EVENT_TIMEOUT = 10.0


def test_start_offline_online_changed_offline(netns, watcher) -> None:
    w = watcher("--settle", SETTLE)
    assert w.expect(["offline"]) == ["offline"]
    netns.go_online()
    assert w.expect(["online"], EVENT_TIMEOUT) == ["online"]
    netns.ip("route", "replace", "default", "via", netns.OTHER_GATEWAY, "dev", "v0")
    assert w.expect(["changed"], EVENT_TIMEOUT) == ["changed"]
    netns.ip("route", "del", "default")
    assert w.expect(["offline"], EVENT_TIMEOUT) == ["offline"]
    assert w.lines_for(1.5) == []
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert w.stderr() == ""


def test_starts_online(netns, watcher) -> None:
    netns.go_online()
    w = watcher()
    assert w.expect(["online"]) == ["online"]


def test_a_flapping_link_is_one_line(netns, watcher) -> None:
    netns.go_online()
    w = watcher("--settle", "1")
    assert w.expect(["online"]) == ["online"]
    # Ten times down and up (each down drops the default route), then the
    # route back: the same state as before, after twenty-one changes.
    netns.sh("for i in 1 2 3 4 5 6 7 8 9 10; do"
             " ip link set v0 down; ip link set v0 up; done;"
             " ip route add default via 10.77.0.1 dev v0")
    assert w.expect(["changed"], EVENT_TIMEOUT) == ["changed"]
    assert w.lines_for(2.5) == []


def test_a_link_that_goes_down_is_offline(netns, watcher) -> None:
    netns.go_online()
    w = watcher("--settle", SETTLE)
    assert w.expect(["online"]) == ["online"]
    netns.ip("link", "set", "v1", "down")  # the far end: v0 loses its carrier
    assert w.expect(["offline"], EVENT_TIMEOUT) == ["offline"]


def test_a_new_resolver_is_changed(netns, watcher) -> None:
    netns.go_online()
    w = watcher("--settle", SETTLE)
    assert w.expect(["online"]) == ["online"]
    # Rewritten in place: `ip netns exec` bind-mounts this very file.
    netns.resolv_conf.write_text("nameserver 10.77.0.54\n")
    assert w.expect(["changed"], EVENT_TIMEOUT) == ["changed"]


def test_exec_runs_the_command_with_the_event(netns, watcher, tmp_path: Path) -> None:
    log = tmp_path / "events"
    w = watcher("-q", "--settle", SETTLE, "--exec",
                f'printf "%s %s\\n" "$1" "$ROAMMAIL_EVENT" >> {log}')
    assert wait_until(lambda: log.exists() and log.read_text() == "offline offline\n", 10)
    netns.go_online()
    assert wait_until(lambda: log.read_text().endswith("online online\n"), EVENT_TIMEOUT), \
        log.read_text()
    assert w.lines_for(0.5) == []  # -q: nothing on stdout
    w.signal(signal.SIGTERM)
    assert w.wait() == 0


def test_a_failing_exec_command_is_one_line_and_no_stop(netns, watcher,
                                                        tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    w = watcher("--settle", SETTLE, "--exec", f'echo "$1" >> {ran}; exit 3')
    assert w.expect(["offline"]) == ["offline"]
    netns.go_online()
    assert w.expect(["online"], EVENT_TIMEOUT) == ["online"]
    assert wait_until(lambda: ran.read_text() == "offline\nonline\n", EVENT_TIMEOUT)
    w.lines_for(0.5)  # the command's status is reported after it ends
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
    assert w.stderr().splitlines() == [
        "watch-network: --exec command for offline: exit status 3",
        "watch-network: --exec command for online: exit status 3"]


def test_once_says_the_state_in_its_exit_status(installed, netns, tool_env) -> None:
    def once() -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", netns.name,
                               installed.tool("watch-network"), "--once"],
                              capture_output=True, text=True, env=tool_env, timeout=20)

    offline = once()
    assert (offline.returncode, offline.stdout, offline.stderr) == (1, "offline\n", "")
    netns.go_online()
    online = once()
    assert (online.returncode, online.stdout, online.stderr) == (0, "online\n", "")


def test_sleep_seen_by_the_boot_clock(netns, watcher, tool_env, tmp_path: Path) -> None:
    # Fault injection: no test can suspend the machine, so the tool's test
    # hook adds the seconds in this file to CLOCK_BOOTTIME, as a sleep would.
    shift = tmp_path / "boottime-shift"
    shift.write_text("0\n")
    env = dict(tool_env, ROAMMAIL_TEST_BOOTTIME_FILE=str(shift))
    w = watcher("--settle", SETTLE, env=env)
    assert w.expect(["offline"]) == ["offline"]
    shift.write_text("60\n")
    assert w.expect(["resumed"], EVENT_TIMEOUT) == ["resumed"]
    assert w.lines_for(6) == []  # once per sleep


def test_a_reader_that_goes_away_ends_it_quietly(netns, watcher) -> None:
    w = watcher()
    assert w.expect(["offline"]) == ["offline"]
    w.close_stdout()
    assert w.wait(10) == 0
    assert w.stderr() == ""


def test_logind_and_networkmanager_on_the_system_bus(netns, watcher, tool_env,
                                                     tmp_path: Path) -> None:
    # Stand-ins: a private dbus-daemon plays the system bus, and this test
    # owns logind's and NetworkManager's names on it and sends their signals.
    dbus_daemon = require_program("dbus-daemon")
    jeepney = pytest.importorskip("jeepney")
    from jeepney.io.blocking import open_dbus_connection

    address = f"unix:path={tmp_path}/system_bus_socket"
    bus = subprocess.Popen([dbus_daemon, "--session", "--nofork", "--nopidfile",
                            f"--address={address}"], stdout=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (tmp_path / "system_bus_socket").exists(), 10)
        w = watcher("--settle", SETTLE, env=dict(tool_env, DBUS_SYSTEM_BUS_ADDRESS=address))
        assert w.expect(["offline"]) == ["offline"]
        with open_dbus_connection(bus=address) as conn:
            for name in ("org.freedesktop.login1", "org.freedesktop.NetworkManager"):
                conn.send_and_get_reply(jeepney.message_bus.RequestName(name), timeout=5)
            login1 = jeepney.DBusAddress("/org/freedesktop/login1",
                                         interface="org.freedesktop.login1.Manager")
            conn.send(jeepney.new_signal(login1, "PrepareForSleep", "b", (True,)))
            conn.send(jeepney.new_signal(login1, "PrepareForSleep", "b", (False,)))
            assert w.expect(["resumed"], EVENT_TIMEOUT) == ["resumed"]
            netns.go_online()
            assert w.expect(["online"], EVENT_TIMEOUT) == ["online"]
            nm = jeepney.DBusAddress("/org/freedesktop/NetworkManager",
                                     interface="org.freedesktop.NetworkManager")
            conn.send(jeepney.new_signal(nm, "StateChanged", "u", (70,)))  # CONNECTED_GLOBAL
            assert w.expect(["changed"], EVENT_TIMEOUT) == ["changed"]
            assert w.lines_for(1.5) == []
    finally:
        bus.terminate()
        bus.wait(timeout=10)
