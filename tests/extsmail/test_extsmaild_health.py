"""The installed extsmaild's health record, as roammail-status shows it:
batch runs through a real external (conftest's recording sendmail) that
fails, then succeeds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from extsmail.conftest import simple_message

DEADLINE = 30  # seconds for one roammail-status run


def status(ext_home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ext_home.installed.tool("roammail-status"), *args],
                          capture_output=True, text=True, timeout=DEADLINE,
                          stdin=subprocess.DEVNULL, env=ext_home.env())


def test_a_stuck_queue_then_a_sent_message(ext_home, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(ext_home.tmp / "state"))
    home = ext_home.recorder("home")
    home.fail_with(1)
    ext_home.write_externals(f'group {{\n    external home {{ sendmail = "{home.path}" }}\n}}\n')
    assert ext_home.run("extsmail", "rcpt@example.org", input=simple_message()).returncode == 0
    res = ext_home.run("extsmaild", "-m", "batch")
    assert len(ext_home.queued()) == 1, res.stderr
    health = ext_home.tmp / "state" / "roammail" / "health"
    assert oct(health.stat().st_mode & 0o777) == "0o700"
    (record,) = list(health.iterdir())
    assert oct(record.stat().st_mode & 0o777) == "0o600"

    res = status(ext_home)
    assert (res.returncode, res.stderr) == (0, "")
    assert re.fullmatch(r"mail: 1 queued \(oldest \d+s\); home failed \d+s ago\n", res.stdout)
    data = json.loads(status(ext_home, "--json").stdout)
    (mail,) = data["mail"]
    assert (mail["spool_dir"], mail["queued"], mail["failed"]) == (str(ext_home.spool), 1, 0)
    assert data["status"] == "ok"
    entry = mail["externals"]["home"]
    assert entry["last_success"] is None
    assert entry["last_error"] == "exit status 1"
    assert abs(entry["last_failure"] - time.time()) < 60

    # The message has waited two hours: its queue time (the spool file's
    # mtime) is set back, as a queue nobody delivers would age.
    (queued,) = ext_home.queued()
    old = time.time() - 2 * 3600
    os.utime(queued, (old, old))
    res = status(ext_home)
    assert res.stdout.startswith("mail: 1 queued (oldest 2h, stale); ")
    res = status(ext_home, "--nagios")
    assert res.returncode == 1
    assert res.stdout.startswith(f"ROAMMAIL WARNING - 1 queued in {ext_home.spool}, "
                                 "the oldest for 2h | queued=1;;;0; queue_age=7")
    res = status(ext_home, "--nagios", "--queue-age-warn=30m", "--queue-age-crit=1h")
    assert res.returncode == 2 and res.stdout.startswith("ROAMMAIL CRITICAL - ")

    home.succeed()
    res = ext_home.run("extsmaild", "-m", "batch")
    assert ext_home.queued() == [], res.stderr
    res = status(ext_home)
    # The second batch run merged the first one's failure into its record.
    assert re.fullmatch(r"mail: queue empty; sent via home \d+s ago\n", res.stdout)
    res = status(ext_home, "--nagios")
    assert res.returncode == 0
    assert res.stdout.startswith("ROAMMAIL OK - mail: queue empty; sent via home ")
    assert res.stdout.endswith(" | queued=0;;;0; queue_age=0s;3600;21600;0; failed=0;;;0;\n")
