"""Tests of roammail.core.child with real processes: each test a small misbehaving child."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import time

import pytest

from peers.waiting import running as _running
from roammail.core.child import (
    ChildResult,
    kill_group,
    kill_group_async,
    run_child,
    terminate,
)

MB = 1 << 20
PY = sys.executable


def _zombie_children() -> list[int]:
    """Pids of our own children that are zombies."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[0] == b"Z" and int(fields[1]) == me:
            found.append(int(name))
    return found




def _wait_gone(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.02)
    return not _running(pid)


@pytest.fixture(autouse=True)
def no_zombies():
    yield
    assert _zombie_children() == []


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# -- exit statuses ----------------------------------------------------------


def test_exit_zero_is_ok():
    r = run_child(sh("cat >/dev/null"), b"hello\n")
    assert r.ok
    assert (r.returncode, r.signal, r.stdin_complete, r.error) == (0, None, True, None)
    assert r.describe() == "exit status 0"
    assert r.exit_status_for_shell() == 0


def test_exit_status_passed_through():
    r = run_child(sh("echo oops >&2; exit 3"))
    assert not r.ok
    assert r.returncode == 3 and r.signal is None
    assert r.stderr == b"oops\n" and r.stderr_total == 5
    assert r.describe() == "exit status 3"
    assert r.exit_status_for_shell() == 3


def test_signal_death_reported():
    r = run_child(sh("kill -9 $$"))
    assert r.returncode is None and r.signal == signal.SIGKILL
    assert r.describe() == "killed by signal 9 (SIGKILL)"
    assert r.exit_status_for_shell() == 128 + 9
    assert not r.ok


def test_no_stdin_means_dev_null():
    r = run_child(["cat"], None, capture_stdout=True, stall_timeout=5)
    assert r.ok and r.stdout == b""


def test_stdout_discarded_unless_captured():
    assert run_child(sh("echo out"), b"").stdout is None
    assert run_child(sh("echo out"), b"", capture_stdout=True).stdout == b"out\n"


def test_env_and_cwd(tmp_path):
    r = run_child(sh('printf "%s %s" "$X" "$PWD"'), env={"X": "42", "PATH": os.defpath},
                  cwd=tmp_path, capture_stdout=True)
    assert r.stdout == f"42 {tmp_path}".encode()


# -- could not run ----------------------------------------------------------


def test_missing_command_is_reported_not_raised():
    r = run_child(["/nonexistent/roammail-no-such-cmd", "-t"], b"x")
    assert r.returncode is None and r.signal is None
    assert r.error == "could not run /nonexistent/roammail-no-such-cmd: No such file or directory"
    assert r.describe() == r.error
    assert not r.ok
    assert r.exit_status_for_shell() == 127


def test_not_executable_is_reported_not_raised(tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    r = run_child([str(script)], b"x")
    assert r.error == f"could not run {script}: Permission denied"
    assert r.exit_status_for_shell() == 126


# -- big inputs and floods --------------------------------------------------


def test_ten_megabytes_through_stdin():
    r = run_child(sh("cat >/dev/null"), b"x" * (10 * MB), stall_timeout=10)
    assert r.ok, r.describe()


def test_large_stdin_from_file_object_positioned_after_a_header(tmp_path):
    body = os.urandom(MB) * 12
    path = tmp_path / "spoolfile"
    path.write_bytes(b"v1\n0\n" + body)
    counter = ("import hashlib, sys; d = sys.stdin.buffer.read(); "
               "print(len(d), hashlib.sha256(d).hexdigest())")
    with open(path, "rb") as f:
        assert f.readline() == b"v1\n" and f.readline() == b"0\n"  # buffered read-ahead
        r = run_child([PY, "-c", counter], f, capture_stdout=True, stall_timeout=10)
    assert r.ok, r.describe()
    assert r.stdout.split() == [str(len(body)).encode(), hashlib.sha256(body).hexdigest().encode()]


def test_write_seal_refused_still_hands_over_the_whole_file(tmp_path, monkeypatch):
    # The kernel refuses F_SEAL_WRITE with EBUSY while it still holds a
    # page just copied in; seen under load, not reproducible at will, so
    # this test injects that refusal (a fake fcntl for that one call).
    import errno
    import fcntl

    real = fcntl.fcntl

    def refusing(fd, cmd, arg=0):
        if cmd == fcntl.F_ADD_SEALS and arg & fcntl.F_SEAL_WRITE:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    body = os.urandom(MB) * 3
    path = tmp_path / "spoolfile"
    path.write_bytes(b"header\n" + body)
    counter = ("import hashlib, sys; d = sys.stdin.buffer.read(); "
               "print(len(d), hashlib.sha256(d).hexdigest())")
    with open(path, "rb") as f:
        f.readline()
        r = run_child([PY, "-c", counter], f, capture_stdout=True, stall_timeout=10)
    assert r.ok, r.describe()
    assert r.stdout.split() == [str(len(body)).encode(), hashlib.sha256(body).hexdigest().encode()]


def test_file_input_is_read_in_chunks_not_at_once():
    class Recording(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.sizes: list[int | None] = []

        def read(self, size: int | None = -1) -> bytes:
            self.sizes.append(size)
            return super().read(size)

    src = Recording(b"y" * (3 * MB))
    r = run_child(sh("cat >/dev/null"), src)
    assert r.ok
    assert src.sizes and all(s is not None and 0 < s <= MB for s in src.sizes)


def test_stderr_flood_while_not_reading_stdin_does_not_deadlock():
    flood = ("import sys; sys.stderr.buffer.write(b'e' * (10 << 20)); "
             "sys.stderr.flush()")
    start = time.monotonic()
    r = run_child([PY, "-c", flood], b"m" * (10 * MB), stall_timeout=10)
    assert time.monotonic() - start < 10
    assert r.returncode == 0
    assert r.stderr_total == 10 * MB
    assert len(r.stderr) == 1 * MB and r.stderr == b"e" * MB  # the first part, capped
    assert not r.stdin_complete and not r.ok
    assert r.describe() == "exited before reading all its input (exit status 0)"


def test_stderr_limit_keeps_the_first_bytes():
    r = run_child(sh("(echo first; yes second | head -c 3000000) >&2"), stderr_limit=1000)
    assert r.stderr.startswith(b"first\nsecond\n") and len(r.stderr) == 1000
    assert r.stderr_total == 6 + 3000000


def test_child_that_exits_without_reading_its_input():
    r = run_child(["true"], b"z" * MB)
    assert r.returncode == 0 and not r.stdin_complete and not r.ok
    assert r.describe() == "exited before reading all its input (exit status 0)"


def test_child_that_closes_stdin_early_and_fails():
    r = run_child(sh("exec 0<&-; sleep 0.1; exit 2"), b"z" * MB)
    assert r.describe() == "exit status 2, before reading all its input"


# -- stalls, kills, aborts --------------------------------------------------


def test_stalled_child_and_grandchild_killed():
    script = "sleep 1000 & echo $! >&2; sleep 1000"
    start = time.monotonic()
    r = run_child(sh(script), b"", stall_timeout=1, grace=2)
    elapsed = time.monotonic() - start
    assert 1 <= elapsed < 2.5
    assert r.stalled and not r.ok
    assert r.signal == signal.SIGTERM
    assert r.describe() == "stalled for 1 second without I/O, killed"
    grandchild = int(r.stderr.split()[0])
    assert _wait_gone(grandchild), "the background grandchild survived"


def test_child_ignoring_sigterm_gets_sigkill_after_grace():
    script = "trap '' TERM; echo ready >&2; while :; do sleep 0.05; done"
    start = time.monotonic()
    r = run_child(sh(script), b"", stall_timeout=0.5, grace=0.7)
    elapsed = time.monotonic() - start
    assert r.stalled and r.signal == signal.SIGKILL
    assert 1.2 <= elapsed < 3
    assert r.exit_status_for_shell() == 137


def test_should_abort_kills_the_group():
    start = time.monotonic()
    r = run_child(sh("sleep 1000 & echo $! >&2; sleep 1000"), b"",
                  should_abort=lambda: time.monotonic() - start > 0.3)
    assert r.aborted and not r.stalled and not r.ok
    assert r.signal == signal.SIGTERM
    assert time.monotonic() - start < 1.5
    assert r.describe() == "stopped on request, killed by signal 15 (SIGTERM)"
    assert _wait_gone(int(r.stderr.split()[0]))


def test_progress_resets_the_stall_timer():
    script = "for i in 1 2 3 4 5 6; do echo tick >&2; sleep 0.2; done"
    r = run_child(sh(script), stall_timeout=0.6)
    assert r.ok and r.stderr_total == 6 * 5


def test_child_being_killed_never_sees_eof_on_stdin():
    class FailingFile(io.RawIOBase):
        calls = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 3:
                raise OSError(5, "Input/output error")
            return b"a" * 1000

    script = "cat >/dev/null; echo EOF-SEEN >&2; sleep 5"
    r = run_child(sh(script), FailingFile(), grace=2)
    assert r.error == "could not read the input: Input/output error"
    assert b"EOF-SEEN" not in r.stderr
    assert r.signal == signal.SIGTERM and not r.ok
    assert r.describe() == ("could not read the input: Input/output error"
                            " (child killed by signal 15 (SIGTERM))")


def test_grandchild_holding_the_pipes_does_not_keep_us_waiting():
    start = time.monotonic()
    r = run_child(sh("sleep 30 & echo $! >&2; exit 0"), b"")
    try:
        assert time.monotonic() - start < 2.5
        assert r.ok
    finally:
        os.kill(int(r.stderr.split()[0]), signal.SIGKILL)


def test_kill_group():
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        assert kill_group(proc.pid, 2) == signal.SIGTERM
        assert proc.wait(timeout=2) == -signal.SIGTERM
        assert kill_group(proc.pid, 2) is None  # a reaped group is gone
    finally:
        proc.kill()
        proc.wait()


def test_kill_group_refuses_our_own_group_and_init():
    for pgid in (0, 1, os.getpgrp()):
        with pytest.raises(ValueError):
            kill_group(pgid, 0.1)


def _group_of_sh(script: str) -> subprocess.Popen:
    """sh -c script in a group of its own, once it has said "ready"."""
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


# The leader ignores TERM; so does its child, which remains after the
# leader is gone in the second script.
DEAF_LEADER = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
DEAF_STRAGGLER = ("trap '' TERM; (while :; do sleep 0.05; done) & trap - TERM; echo ready; "
                  "wait")


def test_kill_group_sends_kill_after_the_grace_to_a_deaf_group():
    proc = _group_of_sh(DEAF_LEADER)
    try:
        started = time.monotonic()
        assert kill_group(proc.pid, 0.5) == signal.SIGKILL
        took = time.monotonic() - started
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert 0.5 <= took < 1.5
    finally:
        proc.kill()
        proc.wait()


def test_kill_group_waits_for_the_whole_group_not_the_leader():
    proc = _group_of_sh(DEAF_STRAGGLER)
    try:
        assert kill_group(proc.pid, 0.5) == signal.SIGKILL  # the straggler ignored TERM
        assert proc.wait(timeout=5) == -signal.SIGTERM  # the leader ended on TERM
        deadline = time.monotonic() + 5
        while kill_group(proc.pid, 0) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert kill_group(proc.pid, 0) is None  # nothing of the group runs
    finally:
        proc.kill()
        proc.wait()


def test_terminate_kills_at_once_when_its_wait_is_interrupted():
    sent = []

    def pause(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        terminate(sent.append, lambda: True, 10.0, pause=pause)
    assert sent == [signal.SIGTERM, signal.SIGKILL]


def test_terminate_sends_nothing_when_nothing_runs_and_settles_after_kill():
    sent: list[int] = []
    assert terminate(sent.append, lambda: False, 10.0) is None
    assert sent == []
    looks = iter([True, True, True, True, False])  # gone 2 looks after KILL
    assert terminate(sent.append, lambda: next(looks), 0.0, settle=5.0) == signal.SIGKILL
    assert sent == [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGKILL]


def test_kill_group_async_lets_the_loop_run_during_the_grace():
    proc = _group_of_sh(DEAF_LEADER)

    async def main() -> tuple:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        started = time.monotonic()
        last = await kill_group_async(proc.pid, 0.5)
        took = time.monotonic() - started
        task.cancel()
        return last, took, ticks

    try:
        last, took, ticks = asyncio.run(main())
        assert last == signal.SIGKILL
        assert 0.5 <= took < 1.5
        assert ticks >= 10  # the loop ran on meanwhile
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_kill_group_async_cancelled_kills_at_once():
    proc = _group_of_sh(DEAF_LEADER)

    async def main() -> float:
        task = asyncio.ensure_future(kill_group_async(proc.pid, 30))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    try:
        assert asyncio.run(main()) < 1
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_kill_group_async_refuses_our_own_group():
    with pytest.raises(ValueError):
        asyncio.run(kill_group_async(os.getpgrp(), 0.1))


def test_describe_texts_of_hand_made_results():
    base = dict(argv=["x"], stderr=b"", stderr_total=0, stdout=None, stdin_complete=True)
    r = ChildResult(returncode=None, signal=9, stalled=True, stall_timeout=60, **base)
    assert r.describe() == "stalled for 60 seconds without I/O, killed"
    r = ChildResult(returncode=0, signal=None, **base)
    assert r.ok and r.describe() == "exit status 0"
    r = ChildResult(returncode=0, signal=None, aborted=True, **base)
    assert not r.ok  # a child we killed is never a success
