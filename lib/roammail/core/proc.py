"""proc.py: the process table as Linux shows it in /proc; the only reader of it.

Owns the reading and parsing of /proc/PID/stat (pid, parent, process
group, session, state) and of the sockets a process holds
(/proc/PID/fd/N -> "socket:[INODE]"), and the questions asked of them: is
a process group still running (`group_running`, for the TERM -> grace ->
KILL of core.child), who belongs to it (`group_members`), which processes
descend from a root or sit in a session (`tree`, for socketwatch).

Contracts:
- A process that vanishes while we look (a race, not an error) is left
  out; so is one whose entry cannot be read (another user's descriptors).
- Zombies are listed by `processes()` and `process_table()` (state "Z")
  but never count as running: an unreaped zombie holds nothing and does
  nothing, and an orphaned one lasts until init reaps it (some container
  inits never do).
- Without /proc (not Linux, or not mounted) the table is empty, and
  `group_running` answers from kill(2) alone, zombies counted.

Must never: signal or change a process (it only reads); import more than
os and dataclasses (core.child imports it for every delivery of extsmaild).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

PROC = "/proc"


@dataclass(frozen=True)
class Proc:
    """One process as /proc/PID/stat shows it."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str  # R, S, D, Z, T, ...

    @property
    def running(self) -> bool:
        """Not a zombie: it still runs (an unreaped zombie holds nothing)."""
        return self.state not in ("Z", "X")


def parse_stat(data: bytes) -> Proc:
    """Parse one /proc/PID/stat line: "pid (comm) state ppid pgrp session ..."

    comm may hold spaces and ')', so the fields after it are found from the
    last ')'.  Raises ValueError on a malformed line.
    """
    pid = int(data[: data.index(b" (")])
    fields = data[data.rindex(b")") + 2:].split()
    try:
        return Proc(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0].decode())
    except IndexError:
        raise ValueError(f"a short /proc/{pid}/stat line") from None


def read_stat(pid: int, proc_dir: str = PROC) -> Proc | None:
    """The Proc of `pid` now; None when it is gone (or its line unreadable)."""
    try:
        with open(f"{proc_dir}/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except (OSError, ValueError):
        return None


def processes(proc_dir: str = PROC) -> Iterator[Proc]:
    """Every process now, one at a time (threads are not listed); nothing
    without /proc."""
    try:
        entries = os.scandir(proc_dir)
    except OSError:
        return
    with entries:
        for entry in entries:
            if entry.name.isdigit():
                found = read_stat(int(entry.name), proc_dir)
                if found is not None:
                    yield found


def process_table(proc_dir: str = PROC) -> dict[int, Proc]:
    """pid -> Proc for every process now (threads are not listed)."""
    return {p.pid: p for p in processes(proc_dir)}


def group_members(pgid: int, proc_dir: str = PROC) -> dict[int, int]:
    """pid -> pgid of the running (non-zombie) processes of group `pgid`."""
    return {p.pid: p.pgid for p in processes(proc_dir) if p.pgid == pgid and p.running}


def group_running(pgid: int, proc_dir: str = PROC) -> bool:
    """True while a process of group `pgid` runs (zombies do not count).

    kill(2) says whether the group has any member, zombies included; /proc
    tells the running ones from them.  A group we may not signal is
    running as far as we can tell; without /proc, so is any group kill(2)
    finds.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir(proc_dir):
        return True  # no /proc: assume alive, the caller escalates after its grace
    return any(p.pgid == pgid and p.running for p in processes(proc_dir))


def tree(table: Mapping[int, Proc], roots: Iterable[int] = (),
         sessions: Iterable[int] = ()) -> dict[int, Proc]:
    """The running descendants of `roots` (not the roots themselves), plus the
    running members of the `sessions`; zombies left out."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    todo = [child for root in roots for child in children.get(root, ())]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    wanted_sessions = set(sessions)
    if wanted_sessions:
        found.update(p.pid for p in table.values() if p.sid in wanted_sessions)
    return {pid: table[pid] for pid in found if table[pid].running}


def socket_inodes(pids: Iterable[int], proc_dir: str = PROC) -> set[int]:
    """Inodes of the sockets that the processes `pids` hold open.

    A process whose descriptors cannot be read (gone, or another user's)
    adds nothing.  Threads share their process's descriptor table.
    """
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = f"{proc_dir}/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                inodes.add(int(target[8:-1]))
    return inodes
