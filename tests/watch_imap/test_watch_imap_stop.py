"""watch-imap stopped at the worst moment, against a real Dovecot: the
reader leaving, or a signal, right after the ready line, while the watcher
is still starting IDLE (what `watch-imap | head -n 1` does, and what
mswatch does when it stops and restarts its watchers).  The moment is a
race, so each case is tried several times; every wait has a deadline, and
a watcher that hangs is killed and counted, not waited for."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

import pytest
from imap_helpers import account

pytestmark = pytest.mark.slow

TRIES = 10
# Logging out of a server on loopback takes milliseconds; an exit slower
# than this waited for something it should not have (a timeout).
PROMPT = 1.0  # s
# A watcher still running this long after it was told to stop hangs.
DEADLINE = 8.0  # s
START_TIMEOUT = 20.0  # s for the ready line


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def read_ready_line(proc: subprocess.Popen) -> None:
    """Read up to the end of the first line (the ready line), bounded."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    while b"\n" not in data:
        left = deadline - time.monotonic()
        readable, _, _ = select.select([fd], [], [], max(0.0, left))
        if not readable:
            raise TimeoutError(f"no ready line in {START_TIMEOUT} s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"EOF before the ready line; stderr: {finish(proc)[1]}")
        data += chunk
    assert data.startswith(b"\n"), data


def finish(proc: subprocess.Popen) -> tuple[int | None, str]:
    """(exit status, stderr) once it ended; status None if it had to be killed."""
    status = proc.poll()
    if status is None:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.stderr is not None
    err = proc.stderr.read().decode("utf-8", "replace")
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return status, err


def stop_after_ready(argv: list[str], env: dict[str, str], how) -> tuple:
    """Start, wait for the ready line, stop it with `how(proc)` at once:
    (exit status or None if it hung, seconds it took, stderr)."""
    proc = start(argv, env)
    try:
        read_ready_line(proc)
        began = time.monotonic()
        how(proc)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - began
    finally:
        status, err = finish(proc)
    return status, took, err


def reader_leaves(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    proc.stdout.close()


def assert_quiet_logouts(server, results: list) -> None:
    """Every session logged out (Dovecot ends each session's log with
    "Disconnected: Logged out" then, and with the reason otherwise, such as
    "Connection closed (IDLE finished 2.003 secs ago)"), and each watcher
    said no more than the line of its start."""
    ends = [line for line in server.log_text().splitlines()
            if f"imap({server.user})" in line and "Disconnected:" in line]
    assert ends and all("Disconnected: Logged out" in line for line in ends), \
        "\n".join(line for line in ends if "Logged out" not in line)
    for _, _, err in results:
        lines = err.splitlines()
        assert len(lines) == 1 and "watching" in lines[0], err


def summary(results: list) -> str:
    return ", ".join(f"{status} in {took:.2f} s" if status is not None else "HUNG"
                     for status, took, _ in results)


@pytest.fixture
def argv(installed, imap_home) -> callable:
    def make(server, **settings) -> list[str]:
        conf = imap_home / "watch-imap.conf"
        conf.write_text(account(server, **settings))
        return [installed.tool("watch-imap"), "-c", str(conf), "-a", "t"]
    return make


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "idle"])
def test_reader_gone_right_after_the_ready_line(dovecot_factory, argv, imap_env,
                                                notify) -> None:
    # `watch-imap -a NAME | head -n 1`: exit 0 at once, every time.
    server = dovecot_factory(notify=notify)
    server.create_folder("Lists.foo")
    command = argv(server, idle=["INBOX", "Lists/foo"])
    results = []
    for _ in range(TRIES):
        results.append(stop_after_ready(command, imap_env, reader_leaves))
        assert server.wait_for_sessions(0, timeout=DEADLINE)
    assert all(status == 0 for status, _, _ in results), summary(results)
    assert max(took for _, took, _ in results) < PROMPT, summary(results)
    assert_quiet_logouts(server, results)


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 0), (signal.SIGHUP, 0),
                                           (signal.SIGINT, 130)],
                         ids=["TERM", "HUP", "INT"])
def test_signal_right_after_the_ready_line(dovecot, argv, imap_env, signum, status) -> None:
    command = argv(dovecot)
    results = []
    logged_out = dovecot.log_text().count("Logged out")
    for _ in range(TRIES):
        results.append(stop_after_ready(command, imap_env,
                                        lambda proc: proc.send_signal(signum)))
        assert dovecot.wait_for_sessions(0, timeout=DEADLINE)
    assert all(s == status for s, _, _ in results), summary(results)
    assert max(took for _, took, _ in results) < PROMPT, summary(results)
    assert dovecot.log_text().count("Logged out") - logged_out == TRIES, dovecot.log_tail()
    assert_quiet_logouts(dovecot, results)


def test_signal_while_the_password_command_runs(dovecot, argv, imap_env, tmp_path) -> None:
    # Stopped before the first connection is made: the command goes too.
    pid_file = tmp_path / "pass_cmd.pid"
    command = argv(dovecot, **{"pass": None,
                               "pass_cmd": f"echo $$ > {pid_file}; exec sleep 60 2>/dev/null"})
    proc = start(command, imap_env)
    pid = 0
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "pass_cmd never ran"
            time.sleep(0.02)
        pid = int(pid_file.read_text())
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        took = time.monotonic() - began
        status, err = finish(proc)
        assert (status, took < PROMPT) == (0, True), (status, took, err)
        deadline = time.monotonic() + PROMPT
        while _alive(pid):
            assert time.monotonic() < deadline, "pass_cmd outlived watch-imap"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            finish(proc)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, dead but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_signal_on_a_silent_link(dovecot, argv, imap_env) -> None:
    # The server stopped answering: the goodbye is not waited for long,
    # and a second signal does not wait for it at all.
    command = argv(dovecot)
    for signals, limit in (([signal.SIGTERM], 2.0 + PROMPT),
                           ([signal.SIGTERM, signal.SIGTERM], PROMPT)):
        proc = start(command, imap_env)
        try:
            read_ready_line(proc)
            dovecot.freeze()
            try:
                began = time.monotonic()
                for signum in signals:
                    proc.send_signal(signum)
                    time.sleep(0.1)
                try:
                    proc.wait(timeout=DEADLINE)
                except subprocess.TimeoutExpired:
                    pass
                took = time.monotonic() - began
            finally:
                dovecot.thaw()
        finally:
            status, err = finish(proc)
        assert (status, took < limit) == (0, True), (signals, status, took, err)


def test_a_signal_after_the_reader_left_is_the_reason_given(dovecot, argv, imap_env) -> None:
    # What mswatch does when it stops a watcher: it closes the watcher's
    # pipe, then sends SIGTERM.  On a silent link the goodbye is cut short,
    # and the line says it was told to stop, not that it timed out.
    proc = start(argv(dovecot), imap_env)
    try:
        read_ready_line(proc)
        dovecot.freeze()
        try:
            reader_leaves(proc)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=DEADLINE)
        finally:
            dovecot.thaw()
    finally:
        status, err = finish(proc)
    assert status == 0, err
    assert "leaving without logging out (told to stop)" in err, err


def test_full_output_is_a_write_error(dovecot, argv, imap_env) -> None:
    # `watch-imap -a NAME >/dev/full`: the ready line cannot be written.
    # Unlike a reader that went away, that is a fault to report: one line,
    # EX_IOERR (74), and the session still logs out.
    command = argv(dovecot, idle=["INBOX"])
    with open("/dev/full", "wb") as full:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=full,
                                stderr=subprocess.PIPE, env=imap_env)
    try:
        status = proc.wait(timeout=START_TIMEOUT)
    finally:
        status, err = finish(proc)
    assert status == 74, (status, err)
    lines = [line for line in err.splitlines() if "watching" not in line]
    assert lines == ["watch-imap: write error: No space left on device"], err
    assert dovecot.wait_for_sessions(0, timeout=DEADLINE)
