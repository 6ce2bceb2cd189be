"""syncmail's health record, as roammail-status shows it: real runs
through the test sshd, a good one and then one whose server maildir is
gone."""

from __future__ import annotations

import json
import re
import subprocess

DEADLINE = 30  # seconds for one roammail-status run


def status(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([world.installed.tool("roammail-status"), *args],
                          capture_output=True, text=True, timeout=DEADLINE,
                          stdin=subprocess.DEVNULL, env=world.env())


def test_a_good_run_then_a_failing_one(world):
    world.basic_config()
    world.deliver_remote("1.a", b"Subject: a\n\na\n")
    world.deliver_remote("2.b", b"Subject: b\n\nb\n")
    res = world.run("-q")
    assert res.returncode == 0, res.stderr
    res = status(world)
    assert (res.returncode, res.stderr) == (0, "")
    assert re.fullmatch(r"sync laptop \d+s ago\n", res.stdout)
    (sync,) = json.loads(status(world, "--json").stdout)["sync"]
    assert (sync["source"], sync["moved"], sync["last_error"], sync["offline"]) == (
        "laptop", 2, None, False)

    world.server.rename(world.server.with_name("Gone"))
    res = world.run("-q")
    assert res.returncode != 0
    res = status(world)
    assert re.fullmatch(r"sync laptop failed \(ok \d+s ago\)\n", res.stdout)
    (sync,) = json.loads(status(world, "--json").stdout)["sync"]
    assert sync["moved"] == 0 and str(world.server) in sync["last_error"]

    # The last good run three hours ago: its recorded time is set back.
    record = world.home / ".local" / "state" / "roammail" / "health" / "syncmail--laptop.json"
    data = json.loads(record.read_text())
    data["last_success"] -= 3 * 3600
    record.write_text(json.dumps(data))
    res = status(world)
    assert res.stdout == "sync laptop failed (ok 3h ago, stale)\n"
    res = status(world, "--nagios")
    assert res.returncode == 2
    assert res.stdout.startswith("ROAMMAIL CRITICAL - sync laptop: last good 3h ago: ")
    assert " | sync_age_laptop=10" in res.stdout
    res = status(world, "--nagios", "--sync-age-crit=4h")
    assert res.returncode == 1 and res.stdout.startswith("ROAMMAIL WARNING - ")
