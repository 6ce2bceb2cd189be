"""mswatch's health record, as roammail-status shows it: a running mswatch
with local watchers and conftest's recording sync program, then stopped."""

from __future__ import annotations

import json
import subprocess

import pytest
from mswatch_helpers import START_TIMEOUT, rc_text, wait_starts

from peers.waiting import wait_until

pytestmark = pytest.mark.slow  # real watchers (inotify) and processes
DEADLINE = 30  # seconds for one roammail-status run


def status(installed, state, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([installed.tool("roammail-status"), *args], capture_output=True,
                          text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
                          env=installed.env(XDG_STATE_HOME=str(state)))


def test_running_ok_then_stopped(tmp_path, mswatch_run, recorder, installed, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    script, log = recorder()
    run = mswatch_run(rc_text(tmp_path, script))
    wait_starts(log, 1, timeout=START_TIMEOUT)
    run.wait_log("synced all mailboxes")
    assert wait_until(lambda: status(installed, state).stdout == "mswatch ok\n", timeout=10), \
        status(installed, state)
    (entry,) = json.loads(status(installed, state, "--json").stdout)["mswatch"]
    assert entry["running"] is True
    assert set(entry["watchers"].values()) == {"running"}
    assert entry["last_success"] is not None and entry["last_error"] is None
    assert status(installed, state, "--nagios").returncode == 0

    assert run.stop() == 0
    assert status(installed, state).stdout == "mswatch stopped\n"
    res = status(installed, state, "--nagios")
    assert (res.returncode, res.stdout) == (2, "ROAMMAIL CRITICAL - mswatch stopped\n")
