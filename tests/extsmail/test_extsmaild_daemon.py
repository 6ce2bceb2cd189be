"""Black-box tests of the installed extsmaild in daemon mode (-m daemon -f).

Each daemon runs as a subprocess in its own session, its log (stderr, -f)
in a file; the `daemons` fixture kills every daemon's process group at
teardown, and the `pids` fixture every process group an external script
recorded, so nothing outlives a test whatever it asserted.  Externals are
real programs: the recording sendmail of conftest.py, or small shell
scripts written here.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extsmail.conftest import simple_message
from peers.waiting import running, wait_until

# ------------------------------------------------------------------ helpers


def script(h, name: str, body: str) -> Path:
    path = h.tmp / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def queue(h, message: bytes, *args: str) -> Path | None:
    """Queue with the installed extsmail; its spool file, or None when a
    running daemon has already sent it."""
    before = set(h.queued())
    res = h.run("extsmail", *args, input=message)
    assert res.returncode == 0, res.stderr
    new = set(h.queued()) - before
    assert len(new) <= 1
    return new.pop() if new else None






def group_members(pgid: int) -> list[int]:
    """Running (not zombie) processes of process group `pgid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []




@pytest.fixture
def pids(ext_home):
    """Where external scripts write their pid (= their process group, as
    extsmaild starts each external in a new session); all killed at teardown."""
    d = ext_home.tmp / "pids"
    d.mkdir()
    yield d
    for f in d.iterdir():
        try:
            os.killpg(int(f.read_text().split()[0]), signal.SIGKILL)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            pass


def stamping(h, name: str, status: int = 0) -> tuple[Path, Path]:
    """An external that appends its start time (date +%s.%N) to a file,
    reads its whole input and exits with `status`."""
    starts = h.tmp / f"{name}.starts"
    path = script(h, name, f'date +%s.%N >> "{starts}"\ncat > /dev/null\nexit {status}\n')
    return path, starts


# ------------------------------------------------------------------ wake-up


@pytest.mark.slow
def test_new_message_wakes_the_daemon_at_once(ext_home, daemons):
    # The documented wake-up contract (extsmaild(1): "a message landing in
    # spool_dir/msgs ends any wait at once (within 100 ms, through
    # inotify)"), not a speed benchmark: the median over 20 messages from
    # extsmail returning to the external starting, with the daemon idle in
    # its 60 s poll wait each time.
    ext, starts = stamping(ext_home, "fast")
    ext_home.write_externals(f'group {{ external fast {{ sendmail = "{ext}" }} }}')
    d = daemons()
    latencies = []
    for i in range(20):
        queue(ext_home, simple_message(subject=f"m{i}"))
        queued_at = time.time()
        assert wait_until(lambda i=i: len(lines_of(starts)) > i, 5), d.text()
        latencies.append(float(lines_of(starts)[i]) - queued_at)
        assert wait_until(lambda: ext_home.queued() == [], 5)
        assert d.wait_log("sent via fast", count=i + 1)
    assert statistics.median(latencies) < 0.1, latencies
    assert d.stop() == 0


# ------------------------------------------------------------------ backoff


@pytest.mark.slow
def test_failing_cycles_back_off_5_then_10_seconds(ext_home, daemons):
    ext, starts = stamping(ext_home, "down", status=1)
    ext_home.write_externals(f'group {{ external down {{ sendmail = "{ext}" }} }}')
    path = queue(ext_home, simple_message())
    d = daemons()
    assert wait_until(lambda: len(lines_of(starts)) >= 3, 20), (lines_of(starts), d.text())
    t = [float(x) for x in lines_of(starts)[:3]]
    assert 4.5 <= t[1] - t[0] <= 7, t
    assert 9.5 <= t[2] - t[1] <= 12.5, t
    assert d.wait_log("external down failed: exit status 1", count=3), d.text()
    assert ext_home.queued() == [path]


@pytest.mark.slow
def test_timeout_holds_back_the_fallback_in_daemon_mode(ext_home, daemons):
    main = ext_home.recorder("main")
    main.fail_with(1)
    fallback = ext_home.recorder("fallback")
    ext_home.write_externals(f"""group {{
    external main {{ sendmail = "{main.path}" timeout = 1h }}
    external fallback {{ sendmail = "{fallback.path}" }}
}}""")
    d = daemons()
    path = queue(ext_home, simple_message())
    assert wait_until(lambda: len(main.received()) == 1, 5), d.text()
    assert d.wait_log("external main failed")
    time.sleep(0.5)
    assert fallback.received() == []
    assert ext_home.queued() == [path]
    # A new message starts a new cycle within the backoff: main again, and
    # still no fallback while main is within its timeout.
    queue(ext_home, simple_message(subject="second"))
    assert wait_until(lambda: len(main.received()) >= 2, 5), d.text()
    time.sleep(0.5)
    assert fallback.received() == []
    assert len(ext_home.queued()) == 2
    assert d.stop() == 0


# ------------------------------------------------------------------- SIGHUP


def test_sighup_reloads_the_externals_and_keeps_the_old_on_error(ext_home, daemons):
    old = ext_home.recorder("old")
    new = ext_home.recorder("new")
    ext_home.write_externals(f'group {{ external old {{ sendmail = "{old.path}" }} }}')
    d = daemons()
    queue(ext_home, simple_message(subject="one"))
    assert wait_until(lambda: len(old.received()) == 1, 5), d.text()

    ext_home.write_externals(f'group {{ external new {{ sendmail = "{new.path}" }} }}')
    d.signal(signal.SIGHUP)
    assert d.wait_log("configuration reloaded"), d.text()
    queue(ext_home, simple_message(subject="two"))
    assert wait_until(lambda: len(new.received()) == 1, 5), d.text()

    ext_home.write_externals('group {\n  external broken { sendmail = "unterminated }\n}\n')
    d.signal(signal.SIGHUP)
    assert d.wait_log("reload failed, keeping the old configuration"), d.text()
    assert f"{ext_home.externals}:2" in d.text()
    assert d.proc.poll() is None
    queue(ext_home, simple_message(subject="three"))
    assert wait_until(lambda: len(new.received()) == 2, 5), d.text()
    assert len(old.received()) == 1
    assert wait_until(lambda: ext_home.queued() == [], 5)
    assert d.stop() == 0


# ------------------------------------------------------------------ SIGTERM


SLOW = """echo $$ > "{pids}/{name}.pid"
cat > "{out}/$$.msg"
[ -f "{flag}" ] && sleep {sleep}
echo done >> "{out}/$$.msg"
exit 0
"""


def slow_external(h, pids: Path, name: str, sleep: int) -> tuple[Path, Path, Path]:
    """An external that reads the whole message (into out/PID.msg), then,
    while `flag` exists, sleeps `sleep` s holding it; exits 0."""
    out = h.tmp / f"{name}-out"
    out.mkdir()
    flag = h.tmp / f"{name}.flag"
    flag.touch()
    path = script(h, name, SLOW.format(pids=pids, name=name, out=out, flag=flag, sleep=sleep))
    return path, out, flag


def test_sigterm_stops_the_running_external_and_keeps_the_message(ext_home, daemons, pids):
    ext, out, flag = slow_external(ext_home, pids, "slow", 30)
    ext_home.write_externals(f'group {{ external slow {{ sendmail = "{ext}" }} }}')
    d = daemons()
    message = simple_message(subject="held")
    path = queue(ext_home, message)
    pidfile = pids / "slow.pid"
    assert wait_until(lambda: any(p.stat().st_size for p in out.glob("*.msg")), 5), d.text()
    pgid = int(pidfile.read_text())
    assert group_members(pgid)
    stopped = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert time.monotonic() - stopped < 8  # SIGTERM to the group, KILL after 5 s at worst
    assert wait_until(lambda: group_members(pgid) == [], 2)
    assert ext_home.queued() == [path]
    assert "stays queued" in d.text()
    # A later batch run delivers it.
    flag.unlink()
    res = ext_home.run("extsmaild", "-m", "batch")
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    done = [p.read_bytes() for p in out.glob("*.msg") if p.read_bytes().endswith(b"done\n")]
    assert done == [message + b"done\n"]


# ------------------------------------------------------------------ kill -9


@pytest.mark.slow
def test_kill_9_during_delivery_loses_nothing(ext_home, daemons, pids):
    ext, out, flag = slow_external(ext_home, pids, "slow", 3)
    ext_home.write_externals(f'group {{ external slow {{ sendmail = "{ext}" }} }}')
    d = daemons()
    message = simple_message(subject="crash")
    path = queue(ext_home, message)
    assert wait_until(lambda: any(p.stat().st_size for p in out.glob("*.msg")), 5), d.text()
    orphan = int((pids / "slow.pid").read_text())
    os.killpg(d.proc.pid, signal.SIGKILL)
    d.proc.wait(5)
    assert ext_home.queued() == [path]  # not removed: not yet accepted
    assert group_members(orphan)  # the external outlives its killed daemon
    # A new daemon takes over at once: neither the instance lock nor the
    # message's lock is held by the orphaned external.
    flag.unlink()
    d2 = daemons()
    assert wait_until(lambda: ext_home.queued() == [], 5), d2.text()
    assert d2.wait_log("sent via slow")
    assert group_members(orphan)  # it was still running all along
    # Both copies are whole: the message went at most twice, never lost.
    assert wait_until(lambda: group_members(orphan) == [], 5)
    copies = [p.read_bytes() for p in out.glob("*.msg")]
    assert 1 <= len(copies) <= 2
    assert all(c.startswith(message) for c in copies)
    assert d2.stop() == 0


def test_second_daemon_on_the_same_spool_exits_75(ext_home, daemons):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    d = daemons()
    for args in (["-m", "daemon", "-f"], ["-m", "daemon"], ["-m", "batch"]):
        res = ext_home.run("extsmaild", *args, timeout=10)
        assert res.returncode == 75, (args, res.stderr)
        err = res.stderr.decode().splitlines()
        assert len(err) == 1 and "extsmaild.lock" in err[0], err
    assert d.proc.poll() is None
    # The first one still works.
    queue(ext_home, simple_message())
    assert wait_until(lambda: len(rec.received()) == 1, 5), d.text()
    assert d.stop() == 0


# ------------------------------------------------- the C extsmail's writer

# Mimics /usr/bin/extsmail's write protocol (extsmail.c: mkstemp in msgs/,
# flock LOCK_EX, write the v1 header and the message in place, close),
# with a pause after creating the file (the window the C code's comment
# describes: an empty unlocked file) and the rest of the message held back
# until the test says "go", so the timing can be controlled.  The C
# extsmail itself cannot be paused half-way.
C_WRITER = r"""
import fcntl, os, sys, tempfile, time
msgs, first, rest = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
fd, path = tempfile.mkstemp(dir=msgs, prefix="")
print(os.path.basename(path), flush=True)
time.sleep(0.3)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"v1\n1\n3\n-oi\n" + first)
print("locked", flush=True)
sys.stdin.readline()
for i in range(0, len(rest), 10):
    os.write(fd, rest[i:i + 10])
    time.sleep(0.01)
fcntl.flock(fd, fcntl.LOCK_UN)
os.close(fd)
print("done", flush=True)
"""


@pytest.mark.slow
def test_message_written_in_place_under_flock_is_sent_only_when_complete(ext_home, daemons):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    d = daemons()
    first = "From: c@example.org\nTo: x@example.org\n"
    rest = "Subject: in place\n\n" + "line of the body\n" * 20
    writer = subprocess.Popen([sys.executable, "-c", C_WRITER, str(ext_home.msgs), first, rest],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        name = writer.stdout.readline().strip()
        assert writer.stdout.readline().strip() == "locked"
        # While it is locked and half-written, a cycle runs (woken by
        # another message) and must leave it alone.
        queue(ext_home, simple_message(subject="other"))
        assert wait_until(lambda: len(rec.received()) == 1, 5), d.text()
        time.sleep(0.3)
        assert [m for _a, m in rec.received()] == [simple_message(subject="other")]
        assert (ext_home.msgs / name).exists()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "done"
        assert writer.wait(5) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    # Unlocked and complete: sent at once (the close wakes the daemon),
    # whole, with its stored argument.
    assert wait_until(lambda: len(rec.received()) == 2, 5), d.text()
    argv, msg = rec.received()[1]
    assert (argv, msg) == ([b"-oi"], (first + rest).encode())
    assert wait_until(lambda: not (ext_home.msgs / name).exists(), 5)
    assert "corrupt" not in d.text()
    assert d.stop() == 0


# ---------------------------------------------------------- corrupt files


def test_corrupt_file_is_logged_once_across_cycles_and_again_when_changed(ext_home, daemons):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    ext_home.msgs.mkdir(mode=0o700)
    bad = ext_home.msgs / "garbage"
    bad.write_bytes(b"\x00not a spool file\n")
    bad.chmod(0o600)
    d = daemons()
    for i in range(3):  # each new message is a new cycle
        queue(ext_home, simple_message(subject=f"m{i}"))
        assert wait_until(lambda i=i: len(rec.received()) == i + 1, 5), d.text()
    assert wait_until(lambda: ext_home.queued() == [bad], 5)
    assert d.text().count("garbage") == 1, d.text()
    bad.write_bytes(b"v9\nstill not\n")
    os.utime(bad, (time.time() + 5, time.time() + 5))  # surely a new mtime
    queue(ext_home, simple_message(subject="m3"))
    assert wait_until(lambda: len(rec.received()) == 4, 5), d.text()
    assert d.wait_log("garbage", count=2), d.text()
    assert d.proc.poll() is None
    assert bad.read_bytes() == b"v9\nstill not\n"
    assert d.stop() == 0


# ------------------------------------------------------------ detached


def lock_holders(lock: Path) -> list[int]:
    """Pids of processes with `lock` open (a detached daemon is not our child)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{name}/fd/{fd}") == str(lock):
                    found.append(int(name))
                    break
            except OSError:
                continue
    return found


def test_detached_daemon_delivers_and_stops_on_sigterm(ext_home):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    res = ext_home.run("extsmaild", "-m", "daemon", timeout=10)
    assert (res.returncode, res.stderr) == (0, b"")
    lock = ext_home.spool / "extsmaild.lock"
    holders: list[int] = []
    try:
        assert wait_until(lambda: bool(holders.extend(lock_holders(lock)) or holders), 5)
        assert len(holders) == 1
        pid = holders[0]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert "Umask:\t0077" in Path(f"/proc/{pid}/status").read_text()
        # It checked the lock before detaching: a second one says so.
        assert ext_home.run("extsmaild", "-m", "daemon", timeout=10).returncode == 75
        queue(ext_home, simple_message())
        assert wait_until(lambda: len(rec.received()) == 1, 5)
        assert wait_until(lambda: ext_home.queued() == [], 5)
        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: not running(pid), 5)
    finally:
        for pid in holders:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ------------------------------------------------------- no double send


@pytest.mark.slow
def test_daemon_and_concurrent_flushes_send_each_message_once(ext_home, daemons):
    out = ext_home.tmp / "sent"
    out.mkdir()
    # Unlike the conftest recorder (which numbers its calls), this one is
    # safe to run several at once: one file per call, named by pid and time.
    ext = script(ext_home, "rec", f'cat > "{out}/$$.$(date +%s%N).msg"\nsleep 0.02\n')
    ext_home.write_externals(f'group {{ external rec {{ sendmail = "{ext}" }} }}')
    count = 30
    for i in range(count):
        queue(ext_home, simple_message(subject=f"m{i}"))
    d = daemons(ready=False)
    flushes = [subprocess.Popen([ext_home.installed.tool("extsmaild"), "--flush"],
                                env=ext_home.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE) for _ in range(2)]
    logs = []
    for proc in flushes:
        logs.append(proc.communicate(timeout=60)[1].decode())
        assert proc.returncode in (0, 1)  # 1: the daemon held some message
    assert wait_until(lambda: ext_home.queued() == [], 20), d.text()
    assert d.wait_log("sent via rec", count=count - sum(t.count("sent via") for t in logs))
    logs.append(d.text())
    assert sum(t.count("sent via rec") for t in logs) == count, logs
    sent = sorted(p.read_bytes() for p in out.glob("*.msg"))
    assert sent == sorted(simple_message(subject=f"m{i}") for i in range(count))
    assert d.stop() == 0
