"""mswatch's next sync, started ahead of time: between syncs mswatch keeps a
process ready (core.supervise.SpareChild) which the next sync execs in, so
that a sync starts without a fork of mswatch's interpreter.  The sync must
still get everything a freshly started one gets: its own session and process
group, /dev/null as input, the log file as output, no signal of the
interpreter's left ignored, and death with mswatch even by SIGKILL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from mswatch_helpers import START_TIMEOUT, WAIT_TIMEOUT, rc_text, spare_pids

from peers.maildirs import add_message
from peers.waiting import running, wait_until

pytestmark = pytest.mark.slow  # real watchers (inotify) and processes

# A sync program that says who it is: pid, session, process group, what its
# input is, which signals it ignores (hex mask); with `linger`, a sync of
# named mailboxes (not a full one) then lingers a minute.
SELF_REPORT = """#!/bin/sh
set -- "$@"
pid=$$
sid=$(ps -o sid= -p $pid | tr -d ' ')
pgid=$(ps -o pgid= -p $pid | tr -d ' ')
stdin=$(readlink /proc/$pid/fd/0)
ign=$(sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$pid/status)
echo "SYNC $pid $sid $pgid $stdin $ign $*" >> {log}
echo "output of sync $pid"
{linger}
"""
LINGER = 'case "$*" in *:*) exec sleep 60;; esac'
SIGPIPE_BIT = 1 << (signal.SIGPIPE - 1)
SIGXFSZ_BIT = 1 << (signal.SIGXFSZ - 1)


def self_report(tmp_path: Path, linger: bool = False) -> tuple[Path, Path]:
    script, log = tmp_path / "self-report", tmp_path / "self-report.log"
    script.write_text(SELF_REPORT.format(log=log, linger=LINGER if linger else ""))
    script.chmod(0o755)
    return script, log


def reports(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split(" ")[1:] for line in log.read_text().splitlines()
            if line.startswith("SYNC ")]


def wait_reports(log: Path, count: int) -> list[list[str]]:
    assert wait_until(lambda: len(reports(log)) >= count, WAIT_TIMEOUT), \
        f"{len(reports(log))} syncs, wanted {count}"
    return reports(log)


def one_spare(run) -> int:
    assert wait_until(lambda: len(spare_pids(run.proc.pid)) == 1, WAIT_TIMEOUT), \
        f"no process ready for the next sync: {spare_pids(run.proc.pid)}"
    (pid,) = spare_pids(run.proc.pid)
    return pid


def test_a_sync_runs_in_the_process_made_ready_for_it(tmp_path, mswatch_run) -> None:
    script, log = self_report(tmp_path)
    run = mswatch_run(rc_text(tmp_path, script))
    wait_reports(log, 1)  # the first full sync
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    spare = one_spare(run)
    add_message(tmp_path / "B")
    pid, sid, pgid, stdin, ignored, *args = wait_reports(log, 2)[1]
    assert int(pid) == spare
    assert args == ["-x", "work:INBOX"]
    assert sid == pgid == pid  # a session and process group of its own
    assert stdin == "/dev/null"
    assert int(ignored, 16) & (SIGPIPE_BIT | SIGXFSZ_BIT) == 0
    run.wait_log("synced INBOX")
    assert f"output of sync {pid}" in run.text()  # its output: the log file
    # The next one is ready again once the sync is over.
    assert wait_until(lambda: spare_pids(run.proc.pid) not in ([], [spare]), WAIT_TIMEOUT)
    last = spare_pids(run.proc.pid)[0]
    assert run.stop() == 0
    assert wait_until(lambda: not running(last), 5), "the unused spare outlived mswatch"


def test_a_spare_that_died_is_replaced_by_a_fresh_start(tmp_path, mswatch_run) -> None:
    script, log = self_report(tmp_path)
    run = mswatch_run(rc_text(tmp_path, script))
    wait_reports(log, 1)
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    spare = one_spare(run)
    os.kill(spare, signal.SIGKILL)
    add_message(tmp_path / "B")
    pid, *_, args = wait_reports(log, 2)[1]
    assert int(pid) != spare and args == "work:INBOX"  # started afresh
    run.wait_log("synced INBOX")
    assert not running(spare)  # reaped, not left a zombie
    assert run.stop() == 0


def test_a_sync_in_the_spare_dies_with_a_killed_mswatch(tmp_path, mswatch_run) -> None:
    script, log = self_report(tmp_path, linger=True)
    run = mswatch_run(rc_text(tmp_path, script))
    wait_reports(log, 1)
    run.wait_log("synced all mailboxes", timeout=START_TIMEOUT)
    spare = one_spare(run)
    add_message(tmp_path / "B")
    pid = int(wait_reports(log, 2)[1][0])
    assert pid == spare
    assert running(pid)
    os.kill(run.proc.pid, signal.SIGKILL)  # mswatch alone, not its children's groups
    assert wait_until(lambda: not running(pid), 5), "the sync outlived a killed mswatch"
