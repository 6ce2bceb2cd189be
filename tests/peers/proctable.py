"""The process table (/proc) as the test peers read it, so that a server
they start leaves nothing behind, however it was left (frozen, killed,
its children double-forked away).

A process is named by a ProcKey, (pid, start time): a pid alone may be
reused.  `kill_all(master, find, what)` freezes the master (it forks no
more), then every process `find()` names, round after round until no new
one appears, kills them all, reaps the master and waits (bounded) until
every one is gone; RuntimeError names the survivors.  Linux only; where
/proc is missing the tables are empty and only the master is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable, Iterable, Optional

ProcKey = tuple[int, str]

# Rounds of "find new processes, SIGSTOP them" until the set stops growing.
FREEZE_ROUNDS = 20
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.02
_STATE, _PPID, _START = 0, 1, 19  # fields of /proc/PID/stat after "(comm)"


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def stat_fields(pid: int) -> Optional[list[str]]:
    """Fields of /proc/PID/stat after "(comm)": state, ppid, ...; None if gone.
    (comm may hold spaces and ")": the last ")" ends it.)"""
    data = _read(f"/proc/{pid}/stat")
    if data is None:
        return None
    text = data.decode(errors="replace")
    return text[text.rindex(")") + 2:].split()


def comm(pid: int) -> str:
    return (_read(f"/proc/{pid}/comm") or b"").decode(errors="replace").strip()


def cmdline(pid: int) -> bytes:
    return _read(f"/proc/{pid}/cmdline") or b""


def environ_has(pid: int, entry: bytes) -> bool:
    """True when NAME=VALUE `entry` is in the process's environment."""
    return entry in (_read(f"/proc/{pid}/environ") or b"").split(b"\0")


def live_table() -> dict[int, list[str]]:
    """pid -> stat fields of every process that is not a zombie."""
    if not os.path.isdir("/proc"):
        return {}
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields is not None and fields[_STATE] not in ("Z", "X"):
                table[int(entry)] = fields
    return table


def tree(roots: Iterable[int], table: dict[int, list[str]]) -> set[int]:
    """The roots (those in the table) and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[_PPID]), []).append(pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def keys(pids: Iterable[int], table: dict[int, list[str]]) -> set[ProcKey]:
    """ProcKeys of those pids that are in the table, never our own."""
    me = os.getpid()
    return {(pid, table[pid][_START]) for pid in pids if pid in table and pid != me}


def still_running(key: ProcKey) -> bool:
    """True if the process exists with the same start time and is not a zombie."""
    fields = stat_fields(key[0])
    return fields is not None and fields[_START] == key[1] and fields[_STATE] not in ("Z", "X")


def send(key: ProcKey, signum: int) -> None:
    """Signal the process if it is still the one the key names."""
    if still_running(key):
        try:
            os.kill(key[0], signum)
        except (ProcessLookupError, PermissionError):
            pass


def freeze(master: Optional[subprocess.Popen], find: Callable[[], set]) -> set[ProcKey]:
    """SIGSTOP the master, then whatever find() names, until nothing new comes."""
    if master is not None and master.poll() is None:
        os.kill(master.pid, signal.SIGSTOP)
    frozen: set[ProcKey] = set()
    for _ in range(FREEZE_ROUNDS):
        new = find() - frozen
        if not new:
            break
        for key in new:
            send(key, signal.SIGSTOP)
        frozen |= new
    return frozen


def kill_all(master: Optional[subprocess.Popen], find: Callable[[], set], what: str) -> None:
    """Freeze, SIGKILL, reap and wait (bounded); RuntimeError on survivors."""
    frozen = freeze(master, find)
    for key in frozen:
        send(key, signal.SIGKILL)
    if master is not None:
        if master.poll() is None:
            master.kill()
        try:
            master.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(still_running(key) for key in frozen) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
    survivors = sorted(key[0] for key in frozen if still_running(key))
    if master is not None and master.poll() is None:
        survivors.append(master.pid)
    if survivors:
        raise RuntimeError(f"{what} processes survived SIGKILL: {survivors}")
