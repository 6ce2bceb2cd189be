"""Faults: kill -9 of syncmail, a cut ssh connection, a full local disk.

The guarantee (syncmail(1), GUARANTEES): after any interruption every
message is on the server, or whole on the laptop, or both; never lost,
never half-written under its name, never overwritten.  Messages in both
places are those of the (at most six) batches in flight, and every one of
them is in the journal; the next run removes them on the server (the
journal says they were ours) without copying them again.
ITERATIONS kills each; each run is bounded by a random delay of at most
MAX_DELAY seconds, so the default suite stays around a minute.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time

import pytest
from syncmail_helpers import check_all_local, check_nothing_lost, fill_server

ITERATIONS = 50
MAX_DELAY = 0.6
IN_FLIGHT_BATCHES = 6  # at most in both places (syncmail(1), GUARANTEES)


def children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return found


def ssh_children(pid: int) -> list[int]:
    found = []
    for kid in children(pid):
        try:
            with open(f"/proc/{kid}/comm") as f:
                if f.read().strip() == "ssh":
                    found.append(kid)
        except OSError:
            pass
    return found


def writing_in(pid: int, directory) -> bool:
    """The process has a file in `directory` open (named, or unnamed:
    O_TMPFILE files show as DIRECTORY/#INODE (deleted))."""
    prefix = str(directory) + "/"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def can_make_unnamed_files(directory) -> bool:
    """O_TMPFILE works there (then syncmail stages unnamed files)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return False
    try:
        os.close(os.open(directory, os.O_WRONLY | flag, 0o600))
    except OSError:
        return False
    return True


def journal_names(world) -> set[str]:
    path = world.home / ".local" / "state" / "roammail" / "syncmail" / "laptop.journal"
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return set()
    return {os.fsdecode(line.split(b" ", 1)[1]) for line in lines if b" " in line}


def kill_loop(world, victim: str) -> int:
    rng = random.Random(7 if victim == "syncmail" else 11)
    made: dict = {}
    world.basic_config()
    world.batch = 3  # four batches a run: kills land in every step of the pipeline
    unnamed = can_make_unnamed_files(world.root)
    killed = 0
    for round_no in range(ITERATIONS):
        sizes = [rng.choice([100, 4000, 60_000, 400_000]) for _ in range(12)]
        made.update(fill_server(world, len(sizes), sizes, prefix=f"r{round_no}", seed=round_no))
        proc = world.popen(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rng.uniform(0.05, MAX_DELAY)
        target = None
        while time.monotonic() < deadline and proc.poll() is None:
            if victim == "ssh" and target is None:
                kids = ssh_children(proc.pid)
                target = kids[0] if kids else None
            time.sleep(0.005)
        pid = proc.pid if victim == "syncmail" else target
        if proc.poll() is None and pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
        if victim == "syncmail":  # its ssh may linger a moment
            time.sleep(0.05)
        both = check_nothing_lost(world, made)
        assert both <= journal_names(world), "in both places but not in the journal"
        assert len(both) <= IN_FLIGHT_BATCHES * world.batch
        if unnamed and (world.local / "tmp").is_dir():
            # Staged files have no name: a killed run leaves nothing behind.
            assert os.listdir(world.local / "tmp") == []
    final = world.run()
    assert final.returncode == 0, final.stderr
    assert world.server_new() == set()
    check_all_local(world, made)
    names = [n.split(":")[0] for sub in ("new", "cur") for n in os.listdir(world.local / sub)]
    assert len(names) == len(set(names)) == len(made)
    return killed


def test_kill_9_syncmail_at_random_moments(world):
    assert kill_loop(world, "syncmail") > ITERATIONS // 3


def test_cut_ssh_connection_mid_transfer(world):
    assert kill_loop(world, "ssh") > ITERATIONS // 3


def test_cut_connection_status_is_75(world):
    fill_server(world, 6, sizes=[20 * 1024 * 1024] * 6)
    world.basic_config()
    proc = world.popen(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kids: list[int] = []
    for _ in range(2000):  # kill ssh once the first message is being written
        kids = kids or ssh_children(proc.pid)
        if kids and writing_in(proc.pid, world.local / "tmp"):
            break
        time.sleep(0.002)
    os.kill(kids[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_local_disk_removes_nothing_not_stored(world, small_disk):
    world.local = small_disk / "Mail"
    world.batch = 3  # the disk fills up with batches in flight
    made = fill_server(world, 10, sizes=[400_000] * 10)
    world.basic_config()
    result = world.run()
    assert result.returncode == 74
    assert "laptop: local disk full: " in result.stderr
    local = world.local_messages()
    server = world.server_new()
    assert 0 < len(server) < 10
    for name, (data, _) in made.items():
        if name in local:
            assert local[name].read_bytes() == data
            assert name not in server
        else:
            assert name in server
    assert not [n for n in os.listdir(world.local / "tmp")]


@pytest.fixture
def immutable():
    """immutable(paths, True) sets chattr +i on server files, so that the
    server's rm fails for just those (root only: CAP_LINUX_IMMUTABLE);
    immutable(paths, False) clears it, as the test's end does for any left."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file immutable")
    made: set = set()

    def chattr(paths, on: bool) -> None:
        res = subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)],
                             capture_output=True, text=True)
        assert res.returncode == 0, f"chattr: {res.stderr.strip()}"
        (made.update if on else made.difference_update)(paths)

    yield chattr
    if made:
        chattr(list(made), False)


def test_a_server_rm_that_fails_leaves_exactly_those_files(world, immutable):
    """The server's rm fails for three files (immutable) in different
    batches: the run names exactly those as left, the rest is removed;
    once rm can remove them, the next run removes them without copying."""
    world.batch = 25  # ranges of indices across several batches
    made = fill_server(world, 120, sizes=[300] * 120)
    names = sorted(made)
    stuck = {names[3], names[37], names[90]}
    stuck_paths = [world.server / "new" / name for name in stuck]
    immutable(stuck_paths, True)
    world.basic_config()
    first = world.run("-v")
    assert first.returncode == 1, first.stderr
    check_all_local(world, made)
    assert world.server_new() == stuck
    lines = [line for line in first.stderr.splitlines()
             if "it could not be removed on the server" in line]
    assert len(lines) == len(stuck), first.stderr
    assert {name for name in names if any(name in line for line in lines)} == stuck
    immutable(stuck_paths, False)
    second = world.run("-v")
    assert second.returncode == 0, second.stderr
    assert world.server_new() == set()
    assert "moved 0 messages" in second.stderr
    for name in stuck:
        assert f"{name} was already here (an interrupted run): removed on the server" \
            in second.stderr
    check_all_local(world, made)
