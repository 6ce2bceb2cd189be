"""Tests of roammail.core.lockfile: its one policy, with real processes."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from roammail.core import lockfile

LIB = str(Path(__file__).resolve().parents[2] / "lib")

# Another process: takes the lock, says "held" (or "busy"), keeps it until
# its stdin closes, then exits without a word.
HOLDER = """
import sys
sys.path[:0] = [sys.argv[1]]
from roammail.core import lockfile
fd = lockfile.hold(sys.argv[2])
sys.stdout.write("busy\\n" if fd is None else "held\\n")
sys.stdout.flush()
sys.stdin.read()
"""


class Holder:
    """A process of its own taking the lock of `path`."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, LIB, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.said = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


@pytest.fixture
def holders():
    started: list[Holder] = []

    def start(path: Path) -> Holder:
        started.append(Holder(path))
        return started[-1]

    yield start
    for holder in started:
        if holder.proc.poll() is None:
            holder.proc.kill()
            holder.proc.wait()


def test_one_process_holds_it_and_the_next_gets_it_after(tmp_path, holders):
    path = tmp_path / "x.lock"
    first = holders(path)
    assert first.said == "held"
    assert holders(path).said == "busy"
    assert lockfile.hold(str(path)) is None
    assert lockfile.is_held(str(path)) is True
    first.stop()
    assert lockfile.is_held(str(path)) is False
    fd = lockfile.hold(str(path))
    assert fd is not None
    try:
        assert holders(path).said == "busy"
    finally:
        lockfile.release(fd)
    assert holders(path).said == "held"


def test_the_file_is_made_0600_and_never_removed(tmp_path, holders):
    path = tmp_path / "x.lock"
    old = os.umask(0)
    try:
        fd = lockfile.hold(str(path))
    finally:
        os.umask(old)
    assert fd is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lockfile.release(fd)
    assert path.exists()  # released, and still there
    holder = holders(path)
    assert holder.said == "held"
    holder.stop()
    assert path.exists()


def test_two_holds_in_one_process_exclude_each_other(tmp_path):
    path = str(tmp_path / "x.lock")
    fd = lockfile.hold(path)
    assert fd is not None
    try:
        assert lockfile.hold(path) is None  # flock belongs to the open file
    finally:
        lockfile.release(fd)


def test_wait_tries_again_until_the_holder_lets_go(tmp_path, holders):
    path = tmp_path / "x.lock"
    holder = holders(path)
    assert holder.said == "held"
    started = time.monotonic()
    assert lockfile.hold(str(path), wait=0.3) is None
    assert 0.3 <= time.monotonic() - started < 2
    letting_go = threading.Timer(0.3, holder.stop)
    letting_go.start()
    try:
        started = time.monotonic()
        fd = lockfile.hold(str(path), wait=5)
        assert fd is not None
        assert 0.3 <= time.monotonic() - started < 2
        lockfile.release(fd)
    finally:
        letting_go.join()


def test_the_lock_is_not_left_to_a_command_we_run(tmp_path):
    path = str(tmp_path / "x.lock")
    fd = lockfile.hold(path)
    assert fd is not None
    child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        lockfile.release(fd)
        again = lockfile.hold(path)  # the child did not inherit it
        assert again is not None
        lockfile.release(again)
    finally:
        child.kill()
        child.wait()


def test_a_symlink_is_refused_and_errors_say_what_failed(tmp_path):
    target = tmp_path / "target"
    target.write_text("")
    link = tmp_path / "x.lock"
    link.symlink_to(target)
    with pytest.raises(lockfile.LockFileError) as info:
        lockfile.hold(str(link))
    assert info.value.errno == errno.ELOOP and info.value.action == "open"
    assert str(info.value) == f"cannot open {link}: {os.strerror(errno.ELOOP)}"
    with pytest.raises(OSError) as missing:
        lockfile.hold(str(tmp_path / "no" / "x.lock"))
    assert str(missing.value).startswith(f"cannot open {tmp_path}/no/x.lock: ")
    assert lockfile.is_held(str(tmp_path / "none.lock")) is None
    assert not (tmp_path / "none.lock").exists()  # asking does not make it
