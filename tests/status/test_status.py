"""Black-box tests of the installed roammail-status over health records
that are not the tools' own: none at all, a corrupt one, bad thresholds.
(The records the tools write are tested beside each tool:
tests/extsmail/test_extsmaild_health.py, tests/syncmail/test_syncmail_health.py,
tests/mswatch/test_mswatch_health.py.)"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

DEADLINE = 30  # seconds for one run


def status(installed, state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([installed.tool("roammail-status"), *args], capture_output=True,
                          text=True, timeout=DEADLINE, stdin=subprocess.DEVNULL,
                          env=installed.env(XDG_STATE_HOME=str(state)))


def test_nothing_recorded_yet_is_unknown_to_a_monitor(installed, tmp_path):
    res = status(installed, tmp_path / "state")
    assert (res.returncode, res.stdout, res.stderr) == (0, "nothing recorded yet\n", "")
    res = status(installed, tmp_path / "state", "--nagios")
    assert (res.returncode, res.stdout, res.stderr) == (
        3, "ROAMMAIL UNKNOWN - nothing recorded yet\n", "")
    res = status(installed, tmp_path / "state", "--json")
    data = json.loads(res.stdout)
    assert (data["status"], data["line"], data["mail"], data["sync"]) == (
        "unknown", "nothing recorded yet", [], [])


def test_a_corrupt_record_is_one_warning_and_the_others_still_count(installed, tmp_path):
    health = tmp_path / "state" / "roammail" / "health"
    health.mkdir(parents=True)
    (health / "syncmail--broken.json").write_text('{"tool": "syncmail", "key": ')
    now = time.time()
    (health / "syncmail--laptop.json").write_text(json.dumps({
        "tool": "syncmail", "key": "laptop", "updated": now, "pid": 1, "source": "laptop",
        "last_run": now - 60, "last_success": now - 60, "moved": 3, "last_error": None,
        "offline": False}))
    res = status(installed, tmp_path / "state")
    assert res.returncode == 0
    assert res.stdout == "sync laptop 1m ago\n"
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith(
        f"roammail-status: warning: ignoring {health / 'syncmail--broken.json'}: ")
    assert "Traceback" not in res.stderr
    res = status(installed, tmp_path / "state", "--nagios")
    assert res.returncode == 0
    assert res.stdout.startswith("ROAMMAIL OK - sync laptop 1m ago | sync_age_laptop=6")


def test_bad_thresholds_are_a_usage_error(installed, tmp_path):
    res = status(installed, tmp_path, "--queue-age-warn=5")
    assert res.returncode == 64
    assert res.stderr.startswith("roammail-status: --queue-age-warn: bad time '5'")
    assert res.stderr.count("\n") == 1
    res = status(installed, tmp_path, "--sync-age-warn=3h", "--sync-age-crit=1h")
    assert (res.returncode, res.stderr) == (
        64, "roammail-status: a warning threshold is longer than its critical one\n")


def test_a_plugin_that_cannot_check_is_unknown(installed, tmp_path):
    # Monitoring plugins answer 3 (UNKNOWN) for what kept them from
    # checking; the reason stays one line on stderr.
    res = status(installed, tmp_path, "--nagios", "--sync-age-warn=3h", "--sync-age-crit=1h")
    assert res.returncode == 3
    assert res.stdout == "ROAMMAIL UNKNOWN - could not check; see the error above\n"
    assert res.stderr == "roammail-status: a warning threshold is longer than its critical one\n"
