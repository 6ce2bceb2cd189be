"""mswatch's signals, --sync-now, its pid file, and its hooks (local watchers,
a recording sync program: no network, no mbsync)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mswatch_helpers import (
    START_TIMEOUT,
    group_alive,
    rc_text,
    starts,
    wait_starts,
    watcher_pids,
)

from peers.maildirs import add_message

pytestmark = pytest.mark.slow  # real watchers (inotify) and processes


def test_start_full_sync_then_changed_mailboxes_only(tmp_path, mswatch_run, recorder) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script))
    found = wait_starts(log, 1, timeout=START_TIMEOUT)
    assert found[0][1] == ["-x", "work"]  # everything: the prefix alone
    add_message(tmp_path / "A", "lists")
    add_message(tmp_path / "B")
    found = wait_starts(log, 2)
    time.sleep(0.5)
    boxes = sorted(b for _, args in starts(log)[1:] for b in args[1:])
    assert set(boxes) == {"work:INBOX", "work:lists"}
    assert run.stop() == 0


def test_sigusr2_and_sync_now_force_a_full_sync(tmp_path, mswatch_run, recorder,
                                                installed, home) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    run.wait_log("synced all mailboxes")
    run.signal(signal.SIGUSR2)
    found = wait_starts(log, 2)
    assert found[1][1] == ["-x", "work"]
    pid_file = run.argv[run.argv.index("--pid-file") + 1]
    assert Path(pid_file).read_text().strip() == str(run.proc.pid)
    res = subprocess.run([installed.tool("mswatch"), "--sync-now", "--pid-file", pid_file],
                         env=installed.env(HOME=str(home)), capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 0, res.stderr
    found = wait_starts(log, 3)
    assert found[2][1] == ["-x", "work"]
    assert run.stop() == 0
    assert not Path(pid_file).exists()
    res = subprocess.run([installed.tool("mswatch"), "--sync-now", "--pid-file", pid_file],
                         env=installed.env(HOME=str(home)), capture_output=True, text=True,
                         timeout=20)
    assert res.returncode == 69 and "no running mswatch" in res.stderr


def test_second_instance_is_refused(tmp_path, mswatch_run, recorder, installed, home) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    pid_file = run.argv[run.argv.index("--pid-file") + 1]
    res = subprocess.run([installed.tool("mswatch"), "-f", "-c", str(home / ".mswatchrc"),
                          "--pid-file", pid_file], env=installed.env(HOME=str(home)),
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 75 and "another mswatch is running" in res.stderr
    assert run.stop() == 0


def test_sigterm_stops_watcher_groups_and_exits_0(tmp_path, mswatch_run, recorder) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    pids = watcher_pids(run.proc.pid)
    assert len(pids) == 2
    for pid in pids:
        assert os.getpgid(pid) == pid  # each watcher leads its own group
    assert run.stop() == 0
    deadline = time.monotonic() + 5
    while any(group_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(group_alive(p) for p in pids)
    assert "stopped" in run.text()


def test_sigint_exits_0_and_a_hung_sync_does_not_block(tmp_path, mswatch_run,
                                                       recorder) -> None:
    script, log = recorder(sleep=60)
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    # The sync hangs; mswatch still answers SIGUSR1 at once.
    run.signal(signal.SIGUSR1)
    run.wait_log("running for", timeout=3)
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=20) == 0
    assert time.monotonic() - t0 < 12


def test_sighup_rereads_the_config(tmp_path, mswatch_run, recorder, home) -> None:
    script, log = recorder()
    other, other_log = recorder(name="other-sync")
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    rc = home / ".mswatchrc"
    rc.write_text(rc.read_text().replace(str(script), str(other)))
    run.signal(signal.SIGHUP)
    run.wait_log("configuration reloaded")
    add_message(tmp_path / "A")
    found = wait_starts(other_log, 1)
    assert found[0][1] == ["-x", "work:INBOX"]
    rc.write_text("bogus\n")
    run.signal(signal.SIGHUP)
    run.wait_log("reload failed")
    assert "unknown keyword 'bogus'" in run.text()
    assert run.proc.poll() is None
    assert run.stop() == 0


def test_ignored_mailbox_waits_for_a_full_sync(tmp_path, mswatch_run, recorder) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script, extra="ignore lists"))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    add_message(tmp_path / "A", "lists")
    time.sleep(1.0)
    assert len(starts(log)) == 1
    add_message(tmp_path / "A")
    found = wait_starts(log, 2)
    assert found[1][1] == ["-x", "work:INBOX"]
    assert run.stop() == 0


def test_hooks_run_with_store_pair_and_status(tmp_path, mswatch_run, recorder, home) -> None:
    script, log = recorder(fail_first=1)
    record = tmp_path / "hooks.log"
    for when in ("pre", "post"):
        d = home / "hooks" / f"{when}-sync.d"
        d.mkdir(parents=True)
        hook = d / "10-record"
        hook.write_text(f'#!/bin/sh\necho "$* log=$ROAMMAIL_HOOK_LOG" >> {record}\n')
        hook.chmod(0o755)
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 2, timeout=START_TIMEOUT)
    run.wait_log("synced all mailboxes in")
    assert run.stop() == 0
    lines = record.read_text().splitlines()
    assert lines[:4] == [f"pre sync local-work 0 log={run.log}",
                         f"post sync local-work 1 log={run.log}",
                         f"pre sync local-work 0 log={run.log}",
                         f"post sync local-work 0 log={run.log}"]


def test_dry_prints_the_command(tmp_path, mswatch_run, recorder) -> None:
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script), "--dry")
    deadline = time.monotonic() + START_TIMEOUT
    while f"{script} -x work" not in run.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.stop() == 0
    assert f"{script} -x work\n" in run.stderr()  # stdout and stderr share a file here
    assert starts(log) == []
