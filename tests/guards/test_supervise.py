"""Tests of roammail.core.supervise (and socketwatch's timing), the library side.

A Supervisor installs signal handlers and may make its process a child
subreaper, so the tests that start one run it in a fresh interpreter
(`in_child`), never in pytest's own process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from guard_helpers import running, wait_gone

from roammail.core.errors import UsageError
from roammail.core.supervise import (
    SPARE_SCRIPT,
    SpareChild,
    SpareUnusable,
    Supervisor,
    parse_command_line,
)
from roammail.guards.socketwatch import poll_interval

LIB = str(Path(__file__).resolve().parents[2] / "lib")

USAGE = """Usage:
  tool [--grace=SECONDS] [--] COMMAND [ARGS...]

Options:
  --grace=SECONDS  Grace [default: 5].
"""


def in_child(body: str, timeout: float = 20) -> dict:
    """Run `body` (which sets `result`, a dict) in a fresh python; return result."""
    script = ("import json, os, signal, sys, time\n"
              "from roammail.core.supervise import Supervisor, CannotRun\n"
              "result = {}\n" + textwrap.dedent(body)
              + "\nprint(json.dumps(result))\n")
    env = dict(os.environ, PYTHONPATH=LIB)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_parse_command_line_leaves_the_command_its_options():
    args = parse_command_line(USAGE, ["--grace=2", "ls", "-l", "--grace=3"])
    assert (args["--grace"], args["COMMAND"], args["ARGS"]) == ("2", "ls", ["-l", "--grace=3"])
    args = parse_command_line(USAGE, ["--", "--weird", "x"])
    assert (args["--grace"], args["COMMAND"], args["ARGS"]) == ("5", "--weird", ["x"])
    with pytest.raises(UsageError):
        parse_command_line(USAGE, [])
    with pytest.raises(UsageError):
        parse_command_line(USAGE, ["--nope", "ls"])


@pytest.mark.parametrize("raw, expected", [
    (0, 0), (3 << 8, 3), (255 << 8, 255), (signal.SIGTERM, 143), (signal.SIGKILL, 137),
])
def test_exit_status_as_a_shell_reports_it(raw, expected):
    sup = Supervisor(["true"])
    sup.status = raw
    assert sup.exit_status() == expected


def test_poll_interval_is_a_tenth_between_bounds():
    assert poll_interval(120) == 1.0
    assert poll_interval(5) == 0.5
    assert poll_interval(0.2) == 0.1


def test_cannot_run_codes():
    result = in_child("""
        for argv in (["/nonexistent/x"], ["roammail-no-such-cmd"], ["/"], ["/etc/hostname"]):
            try:
                with Supervisor(argv) as s:
                    s.start()
                result[argv[0]] = "started"
            except CannotRun as exc:
                result[argv[0]] = [exc.exit_code, str(exc)]
        try:
            os.waitpid(-1, os.WNOHANG)
            result["unreaped"] = True
        except ChildProcessError:
            result["unreaped"] = False
    """)
    assert result["/nonexistent/x"] == [127, "cannot run /nonexistent/x: No such file or directory"]
    assert result["roammail-no-such-cmd"][0] == 127
    assert result["/"] == [126, "cannot run /: Permission denied"]
    assert result["/etc/hostname"][0] == 126
    assert result["unreaped"] is False


def test_signal_handlers_are_restored_and_the_child_had_defaults():
    result = in_child("""
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        before = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGCHLD)}
        with Supervisor(["sh", "-c", "exit 0"]) as s:
            s.start()
            while not s.exited:
                s.wait(1)
            result["status"] = s.exit_status()
        after = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGCHLD)}
        result["restored"] = before == after
    """)
    assert result == {"status": 0, "restored": True}


def test_the_child_sees_our_ignored_signals_and_no_blocked_ones(tmp_path):
    out = tmp_path / "status"
    in_child(f"""
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        script = "exec grep -E '^Sig(Ign|Blk)' /proc/self/status > {out}"
        with Supervisor(["sh", "-c", script]) as s:
            s.start()
            while not s.exited:
                s.wait(1)
    """)
    fields = dict(line.split(":\t") for line in out.read_text().splitlines())
    ignored = int(fields["SigIgn"], 16)
    assert int(fields["SigBlk"], 16) == 0
    assert ignored & (1 << (signal.SIGUSR2 - 1))          # ignored by us: stays ignored
    assert not ignored & (1 << (signal.SIGPIPE - 1))      # python's own SIG_IGN is undone
    assert not ignored & (1 << (signal.SIGTERM - 1))


@pytest.mark.slow
def test_stop_kills_a_tree_with_an_escaped_grandchild():
    """stop(members=...) reaches a grandchild that left the group (setsid),
    TERM first, then KILL after the grace for one that ignores TERM."""
    result = in_child("""
        from roammail.core.proc import process_table, tree
        script = "trap '' TERM; setsid sleep 300 & sleep 300 & wait"
        with Supervisor(["sh", "-c", script], subreaper=True) as s:
            s.start()
            me = os.getpid()
            def members():
                return {p: i.pgid for p, i in tree(process_table(), [me], [s.pid]).items()}
            deadline = time.monotonic() + 5
            while (len(members()) < 3 or len(set(members().values())) < 2) \
                    and time.monotonic() < deadline:  # until setsid ran
                s.wait(0.05)
            found = members()
            result["pids"] = sorted(found)
            result["groups"] = len(set(found.values()))
            started = time.monotonic()
            s.stop(1.0, members=members)
            result["took"] = time.monotonic() - started
            result["status"] = s.exit_status()
            result["left"] = sorted(members())
    """)
    assert len(result["pids"]) == 3 and result["groups"] == 2
    assert result["left"] == []
    assert result["status"] == 128 + signal.SIGKILL  # sh ignored TERM
    assert 0.9 <= result["took"] < 3
    assert wait_gone(result["pids"], 2)
    assert not any(running(p) for p in result["pids"])


# ------------------------------------------------------------ SpareChild


def spare_to(out) -> SpareChild:
    return SpareChild(stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def test_a_spare_becomes_the_command_found_on_path(tmp_path):
    out = tmp_path / "out"
    with open(out, "wb") as f:
        spare = spare_to(f)
    pid = spare.proc.pid
    script = ('printf "%s|%s|" "$$" "$1"; ps -o sid= -p $$ | tr -d " \\n"; '
              'sed -n "s/^SigIgn:[[:space:]]*/|/p" /proc/$$/status')
    proc = spare.run(["sh", "-c", script, "sh", "a b\nc"])
    assert proc is spare.proc and proc.wait(timeout=10) == 0
    shell, arg, sid, ignored = out.read_text().rstrip("\n").split("|")
    assert (int(shell), arg, int(sid)) == (pid, "a b\nc", pid)  # its own session
    assert not int(ignored, 16) & (1 << (signal.SIGPIPE - 1))  # python's SIG_IGN undone


def test_a_spare_reports_a_command_that_cannot_run(tmp_path):
    spare = spare_to(subprocess.DEVNULL)
    with pytest.raises(FileNotFoundError):
        spare.run([str(tmp_path / "missing")])
    assert spare.proc.returncode == 127  # reaped
    spare = spare_to(subprocess.DEVNULL)
    with pytest.raises(PermissionError):
        spare.run([str(tmp_path)])


def test_a_spare_that_is_gone_runs_nothing_and_says_so(tmp_path):
    mark = tmp_path / "ran"
    spare = spare_to(subprocess.DEVNULL)
    spare.proc.kill()
    spare.proc.wait()
    with pytest.raises(SpareUnusable):
        spare.run(["touch", str(mark)])
    assert not mark.exists()


def test_a_discarded_spare_is_gone_and_reaped():
    spare = spare_to(subprocess.DEVNULL)
    pid = spare.proc.pid
    spare.discard()
    assert spare.proc.returncode is not None and not running(pid)


def test_a_spare_whose_parent_is_gone_exits_at_once(tmp_path):
    cmd_r, cmd_w = os.pipe()
    status_r, status_w = os.pipe()
    not_parent = os.getppid()
    proc = subprocess.Popen([sys.executable, "-I", "-S", SPARE_SCRIPT, str(cmd_r), str(status_w),
                             str(not_parent)], pass_fds=(cmd_r, status_w))
    os.close(status_w)
    try:
        assert proc.wait(timeout=10) == 127
        assert os.read(status_r, 10) == b""  # it never took a command
    finally:
        for fd in (cmd_r, cmd_w, status_r):
            os.close(fd)
