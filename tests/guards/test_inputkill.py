"""Black-box tests of the installed inputkill, locally and over a real sshd.

The commands are small python3 scripts that say "ready" (and their pid)
once they run; the test keeps inputkill's stdin open (a pipe) until it
means to close it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time

import pytest
from guard_helpers import PY, pids_with, read_line, running, wait_gone, wait_until

# Prints "ready PID" and sleeps; extra argv words (a marker) are ignored.
SLEEPER = "import os,time; print('ready', os.getpid(), flush=True); time.sleep(1000)"
# The same, but ignores SIGTERM: only SIGKILL ends it.
STUBBORN = ("import os,signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', os.getpid(), flush=True); time.sleep(1000)")
# Reports the first signal of argv[1]'s name it gets, then exits 7.
CATCHER = ("import os,signal,sys,time\n"
           "sig = getattr(signal, sys.argv[1])\n"
           "def got(n, f):\n"
           "    print('got', signal.Signals(n).name, flush=True); sys.exit(7)\n"
           "signal.signal(sig, got)\n"
           "print('ready', os.getpid(), flush=True)\n"
           "time.sleep(1000)\n")


def start(installed, cleanup, *command: str, grace: float | None = None,
          **kwargs) -> subprocess.Popen:
    argv = [installed.tool("inputkill")]
    if grace is not None:
        argv.append(f"--grace={grace}")
    kwargs.setdefault("stdin", subprocess.PIPE)
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return cleanup.popen([*argv, *command], **kwargs)


def ready_pid(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    words = read_line(proc, timeout).split()
    assert words[0] == b"ready", words
    return int(words[1])


def finish(proc: subprocess.Popen, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """Wait for inputkill WITHOUT closing its stdin; then its (small) output."""
    status = proc.wait(timeout=timeout)
    return status, proc.stdout.read(), proc.stderr.read()


# -- the command line ---------------------------------------------------------


def test_help_and_version(installed):
    r = subprocess.run([installed.tool("inputkill"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "inputkill [--grace=SECONDS] [--] COMMAND [ARGS...]" in r.stdout
    r = subprocess.run([installed.tool("inputkill"), "-V"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("inputkill ")


@pytest.mark.parametrize("args", [[], ["--grace=soon", "true"], ["--nope", "true"]])
def test_usage_errors_exit_64_in_one_line(installed, args):
    r = subprocess.run([installed.tool("inputkill"), *args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 64
    assert r.stderr.startswith("inputkill: ") and r.stderr.count("\n") == 1


def test_options_after_the_command_belong_to_it(installed):
    # Its input stays open until it ends: an end of file would race echo.
    input_r, input_w = os.pipe()
    try:
        r = subprocess.run([installed.tool("inputkill"), "echo", "--grace=1", "-h", "--"],
                           capture_output=True, text=True, stdin=input_r, timeout=10)
    finally:
        os.close(input_r)
        os.close(input_w)
    assert (r.returncode, r.stdout) == (0, "--grace=1 -h --\n")


def test_missing_command_exits_127_in_one_line(installed, tmp_path):
    r = subprocess.run([installed.tool("inputkill"), str(tmp_path / "nonesuch")],
                       capture_output=True, text=True, stdin=subprocess.PIPE, timeout=10)
    assert r.returncode == 127
    assert r.stderr == f"inputkill: cannot run {tmp_path / 'nonesuch'}: No such file or directory\n"
    r = subprocess.run([installed.tool("inputkill"), "roammail-no-such-command"],
                       capture_output=True, text=True, stdin=subprocess.PIPE, timeout=10)
    assert r.returncode == 127 and r.stderr.count("\n") == 1


def test_command_not_executable_exits_126(installed, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho no\n")
    script.chmod(0o644)
    r = subprocess.run([installed.tool("inputkill"), str(script)], capture_output=True,
                       text=True, stdin=subprocess.PIPE, timeout=10)
    assert r.returncode == 126
    assert r.stderr == f"inputkill: cannot run {script}: Permission denied\n"


# -- what the command gets ---------------------------------------------------------


def test_command_gets_dev_null_and_our_other_descriptors(installed, cleanup):
    extra_r, extra_w = os.pipe()
    script = ("import os,sys; print(os.readlink('/proc/self/fd/0')); print(repr(sys.stdin.read()));"
              f" os.write({extra_w}, b'fd passed'); print('to stderr', file=sys.stderr)")
    try:
        proc = start(installed, cleanup, PY, "-c", script, pass_fds=[extra_w])
        os.close(extra_w)
        proc.stdin.write(b"this is for inputkill, not for the command\n")
        proc.stdin.flush()
        status, out, err = finish(proc)
        extra = os.read(extra_r, 100)
    finally:
        os.close(extra_r)
    assert status == 0
    assert out == b"/dev/null\n''\n"
    assert err == b"to stderr\n"
    assert extra == b"fd passed"


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_status_passes_through(installed, cleanup, code):
    proc = start(installed, cleanup, "sh", "-c", f"exit {code}")
    assert finish(proc)[0] == code


def test_signal_death_is_128_plus_signal(installed, cleanup):
    proc = start(installed, cleanup, "sh", "-c", "kill -USR1 $$")
    assert finish(proc)[0] == 128 + signal.SIGUSR1


# -- EOF on our stdin ----------------------------------------------------------------


def test_eof_terms_the_whole_group(installed, cleanup):
    word = cleanup.marker()
    # sh starts a sleeper in the background (same group) and waits.
    proc = start(installed, cleanup, "sh", "-c",
                 f'{PY} -c "{SLEEPER}" {word} & wait', word)
    grandchild = ready_pid(proc)
    sh_pids = [p for p in pids_with(word) if p != grandchild and p != proc.pid]
    assert grandchild in pids_with(word) and sh_pids
    started = time.monotonic()
    proc.stdin.close()
    status, _, err = finish(proc)
    assert status == 128 + signal.SIGTERM
    assert time.monotonic() - started < 2.0
    assert wait_gone([grandchild, *sh_pids], 2.0)
    assert err == b""


def test_a_closed_stdin_is_end_of_file(installed, cleanup):
    proc = start(installed, cleanup, "sleep", "30", stdin=None,
                 preexec_fn=lambda: os.close(0))
    assert finish(proc, timeout=5)[0] == 128 + signal.SIGTERM


@pytest.mark.slow
def test_eof_kills_a_command_that_ignores_term_after_grace(installed, cleanup):
    proc = start(installed, cleanup, PY, "-c", STUBBORN, grace=1)
    pid = ready_pid(proc)
    started = time.monotonic()
    proc.stdin.close()
    status, _, _ = finish(proc)
    elapsed = time.monotonic() - started
    assert status == 128 + signal.SIGKILL
    assert 0.9 <= elapsed < 3.0
    assert not running(pid)


def test_data_on_stdin_is_dropped_and_does_not_kill(installed, cleanup):
    proc = start(installed, cleanup, PY, "-c", SLEEPER)
    pid = ready_pid(proc)
    proc.stdin.write(b"x" * 200_000)  # more than a pipe holds: inputkill must read it
    proc.stdin.flush()
    time.sleep(0.3)
    assert running(pid) and proc.poll() is None
    proc.stdin.close()
    assert finish(proc)[0] == 128 + signal.SIGTERM


# -- signals to inputkill ------------------------------------------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signals_are_passed_on(installed, cleanup, signame):
    proc = start(installed, cleanup, PY, "-c", CATCHER, signame)
    pid = ready_pid(proc)
    proc.send_signal(getattr(signal, signame))
    status, out, _ = finish(proc)
    assert out == f"got {signame}\n".encode()
    assert status == 7
    assert not running(pid)


def test_sigkill_of_inputkill_kills_the_command(installed, cleanup):
    word = cleanup.marker()
    proc = start(installed, cleanup, PY, "-c", SLEEPER, word)
    pid = ready_pid(proc)
    proc.kill()
    proc.wait(timeout=5)
    assert wait_gone([pid], 2.0), "PR_SET_PDEATHSIG did not kill the command"
    assert pids_with(word) == []


# -- over a real ssh link -------------------------------------------------------------


def _remote(installed, sshd, cleanup, word: str) -> tuple[subprocess.Popen, int]:
    """`ssh testhost inputkill python3 -c SLEEPER WORD`: the client and the remote pid."""
    command = shlex.join(["inputkill", PY, "-c", SLEEPER, word])
    argv = [*sshd.ssh_command(remote_path=[installed.bindir]), sshd.host_alias, command]
    proc = cleanup.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    return proc, ready_pid(proc, timeout=20)


def _session_process(pid: int, sshd) -> int:
    """The sshd process above `pid` that holds the session's pipes."""
    while pid > 1:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        with open(f"/proc/{ppid}/comm") as f:
            comm = f.read().strip()
        if comm.startswith("sshd") and ppid != sshd.pid:
            return ppid
        pid = ppid
    raise AssertionError("no sshd session process above the remote command")


@pytest.mark.slow
def test_over_ssh_killing_the_client_ends_the_remote_command(installed, sshd, cleanup):
    word = cleanup.marker()
    client, pid = _remote(installed, sshd, cleanup, word)
    assert running(pid)
    client.kill()
    client.wait(timeout=5)
    assert wait_gone([pid], 1.0), "the remote command outlived its ssh client by 1 s"
    assert wait_until(lambda: pids_with(word) == [], 2.0)  # inputkill too


@pytest.mark.slow
def test_over_ssh_killing_the_session_ends_the_remote_command(installed, sshd, cleanup):
    word = cleanup.marker()
    client, pid = _remote(installed, sshd, cleanup, word)
    session = _session_process(pid, sshd)
    os.kill(session, signal.SIGKILL)
    assert wait_gone([pid], 1.0), "the remote command outlived its sshd session by 1 s"
    client.wait(timeout=10)
    assert wait_until(lambda: pids_with(word) == [], 2.0)


@pytest.mark.slow
def test_over_ssh_the_exit_status_and_output_come_back(installed, sshd, cleanup):
    argv = [*sshd.ssh_command(remote_path=[installed.bindir]), sshd.host_alias,
            "inputkill sh -c 'echo out; echo err >&2; exit 3'"]
    client = cleanup.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert client.wait(timeout=30) == 3  # stdin still open: the command ended by itself
    assert client.stdout.read() == b"out\n"
    assert client.stderr.read() == b"err\n"


@pytest.mark.slow
def test_over_ssh_watch_maildirs_ends_with_its_connection(installed, sshd, cleanup,
                                                          maildir_factory):
    """The documented use: `ssh host inputkill watch-maildirs`."""
    maildir = maildir_factory("Maildir", folders=["lists"])
    cleanup.markers.append(str(maildir))
    command = shlex.join(["inputkill", "watch-maildirs", "-m", str(maildir)])
    argv = [*sshd.ssh_command(remote_path=[installed.bindir]), sshd.host_alias, command]
    client = cleanup.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert read_line(client, 20) == b"\n"  # the watcher's "ready" line
    (maildir / "new" / "1.msg").write_text("x")
    assert read_line(client, 10) == b"INBOX\n"
    watchers = [p for p in pids_with(str(maildir)) if not _runs_inputkill(p)]
    assert watchers, "no remote watch-maildirs process found"
    client.kill()
    client.wait(timeout=5)
    assert wait_gone(watchers, 1.0), "watch-maildirs outlived its ssh client by 1 s"
    assert wait_until(lambda: pids_with(str(maildir)) == [], 2.0)


def _runs_inputkill(pid: int) -> bool:
    """True if `pid` is inputkill (its launcher, run by the venv's python)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        words = f.read().split(b"\0")
    return any(os.path.basename(w) == b"inputkill" for w in words)
