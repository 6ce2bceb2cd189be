"""Fault injection: extsmaild and extsmail killed (SIGKILL) mid-way.

A killed extsmaild must never let its external take part of a message for
the whole of it: the external reads the spool file itself, so it gets the
whole message (or nothing) whether or not extsmaild still lives.  A killed
extsmail leaves a partial file in spool_dir/tmp/, which extsmaild removes;
never a file that is still being written.

Every external is a real program; every kill is a real SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extsmail.conftest import simple_message
from extsmail.test_extsmaild_batch import batch, queue
from peers.waiting import running, wait_until
from roammail.extsmail import spool

MB = 1 << 20

# A sendmail that reads its stdin slowly (so that extsmaild is killed while
# the message is being handed over), then keeps what it read and exits 0,
# as a real sendmail does with whatever it took for the whole message.
SLOW_READER = """#!{python}
import os, sys, time
out = {out!r}
os.makedirs(out, exist_ok=True)
me = str(os.getpid())
open(os.path.join(out, me + ".pid"), "w").write(me)
data = bytearray()
while True:
    chunk = os.read(0, {chunk})
    if not chunk:
        break
    data += chunk
    open(os.path.join(out, me + ".progress"), "w").write(str(len(data)))
    time.sleep({pause})
with open(os.path.join(out, me + ".msg.tmp"), "wb") as f:
    f.write(data)
os.rename(os.path.join(out, me + ".msg.tmp"), os.path.join(out, me + ".msg"))
"""


def slow_reader(h, name: str, *, chunk: int, pause: float) -> tuple[Path, Path]:
    out = h.tmp / "out" / name
    path = h.tmp / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SLOW_READER.format(python=sys.executable, out=str(out), chunk=chunk,
                                       pause=pause))
    path.chmod(0o755)
    return path, out


def start_batch(h) -> subprocess.Popen:
    return subprocess.Popen([h.installed.tool("extsmaild"), "-m", "batch"], env=h.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def external_pids(out: Path) -> list[int]:
    return [int(p.read_text()) for p in out.glob("*.pid") if p.read_text()]


def kill_all(out: Path) -> None:
    for pid in external_pids(out):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_extsmaild_killed_while_handing_over_a_large_message(ext_home):
    # 3 MB read 64 KiB at a time, 20 ms apart: about a second of reading.
    # extsmaild is killed when a third of it has been read.  Before, the
    # external then saw end-of-input and kept a third of the message.
    reader, out = slow_reader(ext_home, "slow", chunk=1 << 16, pause=0.02)
    ext_home.write_externals(f'group {{ external slow {{ sendmail = "{reader}" }} }}')
    message = simple_message(body=b"0123456789abcdef" * (3 * MB // 16))
    queued = queue(ext_home, message)
    proc = start_batch(ext_home)
    try:
        def a_third_read() -> bool:
            return any(int(p.read_text() or 0) >= MB for p in out.glob("*.progress"))

        assert wait_until(a_third_read, 30), "the external never read a third of the message"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        pids = external_pids(out)
        assert len(pids) == 1
        # The external outlives extsmaild and ends on its own.
        assert wait_until(lambda: not running(pids[0]), 30), "the external never finished"
        kept = [p.read_bytes() for p in out.glob("*.msg")]
        assert kept == [message], f"the external took {[len(k) for k in kept]} bytes " \
                                  f"of {len(message)} for the message"
        assert ext_home.queued() == [queued]  # not known to be sent: still queued
    finally:
        reap(proc)
        kill_all(out)


@pytest.mark.slow
def test_extsmaild_killed_as_the_external_starts(ext_home):
    # Small messages, extsmaild killed the moment its external runs, before
    # the external reads a byte: the external gets all of it, every time.
    reader, out = slow_reader(ext_home, "quick", chunk=7, pause=0.001)
    ext_home.write_externals(f'group {{ external quick {{ sendmail = "{reader}" }} }}')
    message = simple_message(body=b"a short message\n" * 20)
    for attempt in range(5):
        for leftover in ext_home.queued():
            leftover.unlink()
        queue(ext_home, message)
        seen = set(external_pids(out))
        proc = start_batch(ext_home)
        try:
            assert wait_until(lambda seen=seen: set(external_pids(out)) - seen, 30)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            (pid,) = set(external_pids(out)) - seen
            assert wait_until(lambda pid=pid: not running(pid), 30)
            got = (out / f"{pid}.msg").read_bytes()
            assert got == message, f"try {attempt + 1}: {len(got)} of {len(message)} bytes"
        finally:
            reap(proc)
            kill_all(out)


@pytest.mark.slow
def test_an_external_that_stops_reading_half_way_is_a_stall(ext_home):
    # Stall detection with the spool file as the external's stdin: reading
    # is progress, and a reader that stops mid-message is killed.
    pid_file = ext_home.tmp / "half.pid"
    half = ext_home.tmp / "bin" / "half"
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_text(f"""#!{sys.executable}
import os, time
open({str(pid_file)!r}, "w").write(str(os.getpid()))
os.read(0, 100000)
time.sleep(1000)
""")
    half.chmod(0o755)
    ext_home.write_externals(f'group {{ external half {{ sendmail = "{half}" }} }}')
    path = queue(ext_home, simple_message(body=b"h" * MB))
    started = time.monotonic()
    res = batch(ext_home, "--stall-timeout", "1", timeout=60)
    assert res.returncode == 1, res.stderr
    assert time.monotonic() - started < 15
    assert "stalled for 1 second without I/O, killed" in res.stderr.decode()
    assert ext_home.queued() == [path]
    assert wait_until(lambda: not running(int(pid_file.read_text())), 5)


def test_exit_0_after_reading_part_of_a_small_message_is_a_failure(ext_home):
    # With a pipe, a message that fit in the pipe buffer could not be told
    # from a sent one; reading the spool file, it can.
    head = ext_home.tmp / "bin" / "head"
    head.parent.mkdir(parents=True, exist_ok=True)
    head.write_text(f"#!{sys.executable}\nimport os\nos.read(0, 10)\n")
    head.chmod(0o755)
    ext_home.write_externals(f'group {{ external head {{ sendmail = "{head}" }} }}')
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    assert "exited before reading all its input (exit status 0)" in res.stderr.decode()


def test_an_external_reading_the_message_twice_is_not_cut_short(ext_home):
    # The external's stdin is a file of its own: seeking in it (as some
    # programs do with a seekable stdin) changes nothing for extsmaild.
    out = ext_home.tmp / "twice.out"
    twice = ext_home.tmp / "bin" / "twice"
    twice.parent.mkdir(parents=True, exist_ok=True)
    twice.write_text(f"""#!{sys.executable}
import os, sys
first = sys.stdin.buffer.read()
os.lseek(0, 0, os.SEEK_SET)
sys.stdin.buffer.seek(0)
second = sys.stdin.buffer.read()
open({str(out)!r}, "wb").write(first if first == second else b"differ")
""")
    twice.chmod(0o755)
    ext_home.write_externals(f'group {{ external twice {{ sendmail = "{twice}" }} }}')
    message = simple_message(body=b"twice\n" * 1000)
    queue(ext_home, message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == message
    assert ext_home.queued() == []


# ------------------------------------------------- extsmail killed mid-enqueue


def tmp_files(h) -> list[Path]:
    tmp = h.spool / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def start_enqueue(h) -> subprocess.Popen:
    """An extsmail reading a message from a pipe this test keeps open."""
    proc = subprocess.Popen([h.installed.tool("extsmail"), "-t"], env=h.env(),
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(simple_message(body=b"p" * (256 << 10)))
    proc.stdin.flush()
    return proc


def test_extsmaild_removes_what_a_killed_extsmail_left_and_nothing_being_written(ext_home):
    rec = ext_home.recorder("rec")
    ext_home.write_externals(f'group {{ external rec {{ sendmail = "{rec.path}" }} }}')
    killed = [start_enqueue(ext_home) for _ in range(3)]
    writing = start_enqueue(ext_home)
    try:
        assert wait_until(lambda: len(tmp_files(ext_home)) == 4, 30), tmp_files(ext_home)
        for proc in killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        (live,) = [p for p in tmp_files(ext_home) if f"P{writing.pid}Q" in p.name]
        res = batch(ext_home)
        assert res.returncode == 0, res.stderr
        assert len(tmp_files(ext_home)) == 4  # too fresh to be called litter yet
        # All four untouched for longer than the stated age: the lock of
        # the writer still at work, not the age, keeps its file.
        long_ago = time.time() - spool.STALE_TEMPORARY_SECONDS - 60
        for path in tmp_files(ext_home):
            os.utime(path, (long_ago, long_ago))
        res = batch(ext_home)
        assert res.returncode == 0, res.stderr
        assert tmp_files(ext_home) == [live]  # the three left-overs went, not this one
        assert res.stderr.decode().count("left over by an interrupted extsmail") == 3
        # The one still being written completes and is queued.
        assert writing.stdin is not None
        writing.stdin.close()
        assert writing.wait(timeout=30) == 0
        assert tmp_files(ext_home) == []
        assert len(ext_home.queued()) == 1
    finally:
        for proc in (*killed, writing):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
