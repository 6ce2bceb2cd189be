"""Helpers for the tests of inputkill and socketwatch: processes seen through /proc.

PID 1 of some containers does not reap orphans, so a killed orphan may stay a
zombie for ever: "running" here means present and not a zombie.  Every wait
is bounded.  `Cleanup` kills, at the end of a test, whatever it was told
about (Popen objects, and processes carrying a marker in their argv).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
import uuid
from typing import Iterable

from peers.waiting import running, wait_until

POLL = 0.02  # seconds between two looks at /proc
PY = "python3"  # the commands under test are plain system python3 scripts


def marker() -> str:
    """A unique word to put in a command's argv, to find its processes."""
    return f"roammail-guard-{uuid.uuid4().hex}"








def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    pids = list(pids)
    return wait_until(lambda: not any(running(p) for p in pids), timeout)


def pids_with(word: str) -> list[int]:
    """Running processes with `word` as one of their argv words."""
    found = []
    needle = word.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if needle in argv and running(int(name)):
            found.append(int(name))
    return found


def read_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """One line of `proc`'s stdout (a pipe), waiting at most `timeout` seconds."""
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no line from {proc.args!r} within {timeout} s: {line!r}")
        byte = os.read(fd, 1)
        if not byte:
            raise AssertionError(f"EOF from {proc.args!r} before a line: {line!r}")
        line += byte
    return line


def is_static_elf(path: str) -> bool:
    """True if `path` is an ELF executable with no program interpreter (PT_INTERP)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:  # 64-bit only, enough here
            return False
        order = "<" if head[5] == 1 else ">"
        phoff, = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from(order + "I", table, i * phentsize)[0] != 3
               for i in range(phnum))


class Cleanup:
    """Processes to kill at the end of a test, whatever happened."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.markers: list[str] = []
        self.pids: list[int] = []

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def marker(self) -> str:
        word = marker()
        self.markers.append(word)
        return word

    def finish(self) -> None:
        victims = set(self.pids)
        for word in self.markers:
            victims.update(pids_with(word))
        for proc in self.procs:
            if proc.poll() is None:
                victims.add(proc.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        wait_gone(victims, 5)
