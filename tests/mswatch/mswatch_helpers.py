"""Helpers of the mswatch tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from peers.maildirs import make_maildir

START_TIMEOUT = 20.0  # s: both watchers ready and the first full sync done
WAIT_TIMEOUT = 15.0  # s: the longest any single expectation may take


class Running:
    def __init__(self, argv: list[str], env: dict[str, str], log: Path, stderr: Path) -> None:
        self.argv = argv
        self.log = log
        self.stderr_path = stderr
        self.err = open(stderr, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.err, stderr=self.err, start_new_session=True)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = WAIT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if text.count(needle) >= count:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {needle!r} in the log after {timeout} s "
                             f"(exit {self.proc.poll()}):\n{self.text()}\n{self.stderr()}")

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def stop(self, timeout: float = WAIT_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.err.close()


RECORDER = """#!/bin/sh
# A sync program for the mswatch tests: records each start and end.
log={log}
count=$(cat "$log" 2>/dev/null | grep -c '^START')
echo "START $(date +%s.%N) $*" >> "$log"
status=0
{sleep}
if [ "$count" -lt {fail_first} ]; then status=1; {run}fi
echo "END $(date +%s.%N) $status" >> "$log"
exit $status
"""


def starts(log: Path) -> list[tuple[float, list[str]]]:
    """(time, args) of each START the recorder wrote."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        parts = line.split(" ")
        if parts[0] == "START":
            found.append((float(parts[1]), parts[2:]))
    return found


def wait_starts(log: Path, count: int, timeout: float = WAIT_TIMEOUT) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = starts(log)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(starts(log))} sync starts, wanted {count}:\n"
                         f"{log.read_text() if log.exists() else '(no log)'}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def rc_text(tmp_path: Path, script: Path, extra: str = "") -> str:
    a = make_maildir(tmp_path / "A", folders=["lists"])
    b = make_maildir(tmp_path / "B")
    return f"""\
base_delay 0.2
inter_delay 0.2
poll_period 0
sync {script} -x
mailbox_prefix work :
{extra}
store local {{ watch watch-maildirs -m {a} }}
store work  {{ watch watch-maildirs -m {b} }}
"""


def child_pids(mswatch_pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(mswatch_pid)],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def is_spare(pid: int) -> bool:
    """Is `pid` the process mswatch keeps ready for its next sync?"""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(word) == b"spare_exec.py" for word in argv)


def spare_pids(mswatch_pid: int) -> list[int]:
    return [p for p in child_pids(mswatch_pid) if is_spare(p)]


def watcher_pids(mswatch_pid: int) -> list[int]:
    """mswatch's children but the spare (no sync runs when this is asked)."""
    return [p for p in child_pids(mswatch_pid) if not is_spare(p)]
