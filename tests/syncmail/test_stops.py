"""How a run that cannot finish ends, as a user sees it: its exit status
(syncmail(1), EXIT STATUS), one line saying what state it left, and the
state files a one-shot run leaves in $XDG_STATE_HOME.

Every local fault is a real one: a full tmpfs mounted in a private mount
namespace (unshare -m) for a full disk, chattr +i for a directory that
cannot be written (root only, as for test_faults.py's immutable server
files); SIGINT and SIGTERM are real signals to a real run.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from syncmail_helpers import check_all_local, check_nothing_lost, fill_server

from peers.maildirs import make_maildir
from peers.require import require_program, require_root
from peers.waiting import wait_until


def state_files(world) -> list[str]:
    directory = world.home / ".local" / "state" / "roammail" / "syncmail"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


@pytest.fixture
def immutable():
    """immutable(path) sets chattr +i on `path` (root only); cleared at the end."""
    require_root("chattr +i makes a directory that even root cannot write")
    require_program("chattr")
    made: list[Path] = []

    def chattr(path: Path) -> None:
        res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"chattr +i: {res.stderr.strip()}")
        made.append(path)

    yield chattr
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def ssh_recorder(world, tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose ssh notes that it ran (in the returned file), then is the test ssh."""
    bindir = tmp_path / "recording-ssh"
    bindir.mkdir()
    flag = tmp_path / "ssh-ran"
    real = subprocess.run(["sh", "-c", "command -v ssh"], env=world.env(), capture_output=True,
                          text=True, check=True).stdout.strip()
    (bindir / "ssh").write_text(f'#!/bin/sh\ntouch "{flag}"\nexec "{real}" "$@"\n')
    (bindir / "ssh").chmod(0o755)
    return f"{bindir}:{world.env()['PATH']}", flag


# ------------------------------------------------------------ exit statuses

def test_remote_maildir_missing_is_66_in_one_line(world):
    fill_server(world, 1, sizes=[10])
    result = world.run(f"testhost:{world.root}/none", str(world.local))
    assert result.returncode == 66, result.stderr
    assert result.stderr.splitlines() == [
        f"syncmail: testhost:{world.root}/none: cannot change to the maildir"]
    (world.root / "plain").mkdir()
    result = world.run(f"testhost:{world.root}/plain", str(world.local))
    assert result.returncode == 66, result.stderr
    assert "not a maildir" in result.stderr


def test_local_maildir_not_writable_is_73(world, immutable):
    made = fill_server(world, 3, sizes=[10, 20, 30])
    make_maildir(world.local)
    immutable(world.local / "new")
    world.basic_config()
    result = world.run()
    assert result.returncode == 73, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("syncmail: laptop: local maildir not writable (")
    assert lines[0].endswith("Operation not permitted): 0 of 3 messages moved, "
                             "3 left on the server")
    assert world.server_new() == set(made)


def test_local_maildir_that_cannot_be_made_is_73(world, immutable):
    fill_server(world, 1, sizes=[10])
    parent = world.root / "locked"
    parent.mkdir()
    immutable(parent)
    result = world.run(f"testhost:{world.server}", str(parent / "Mail"))
    assert result.returncode == 73, result.stderr
    assert result.stderr == (f"syncmail: testhost:{world.server}: local maildir not writable "
                             f"(cannot make directory {parent}/Mail: Operation not "
                             "permitted): no message moved\n")
    assert len(world.server_new()) == 1


def test_messages_left_on_the_server_stay_1(world):
    made = fill_server(world, 2, sizes=[10, 20])
    make_maildir(world.local)
    name = sorted(made)[0]
    (world.local / "new" / name).write_bytes(b"mine\n")
    world.basic_config()
    assert world.run().returncode == 1


# ---------------------------------------------------------------- full disk

def test_full_disk_is_one_line(world, tmp_path):
    """200 messages of 20 kB towards a 256 KiB tmpfs (mounted in a mount
    namespace of syncmail's own, gone when it exits): one line says how
    far it got, not a line per message left."""
    require_root("mounting a small tmpfs")
    unshare = require_program("unshare")
    made = fill_server(world, 200, sizes=[20_000] * 200)
    mnt = tmp_path / "small"
    mnt.mkdir()
    local = mnt / "Mail"
    script = 'mount -t tmpfs -o size=256k tmpfs "$1" && shift && exec "$@"'
    argv = [unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", str(mnt),
            *world.argv(f"testhost:{world.server}", str(local))]
    result = world.run_argv(argv)
    assert result.returncode == 74, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    left = len(world.server_new())
    assert 0 < left < 200
    assert lines[0] == (f"syncmail: testhost:{world.server}: local disk full: {200 - left} of "
                        f"200 messages moved, {left} left on the server")
    assert os.listdir(mnt) == []  # the mount was syncmail's alone
    # What landed went with the tmpfs; the rest is still on the server,
    # whole: on a disk with room, the next run moves it.
    rest = world.server_new()
    result = world.run(f"testhost:{world.server}", str(world.local))
    assert result.returncode == 0, result.stderr
    assert world.server_new() == set()
    check_all_local(world, {name: made[name] for name in rest})


# ---------------------------------------------------------- one-shot state

def test_one_shot_run_leaves_no_state_files(world):
    fill_server(world, 3, sizes=[10, 20, 30])
    result = world.run(f"testhost:{world.server}", str(world.local))
    assert result.returncode == 0, result.stderr
    assert state_files(world) == []
    assert world.run("-n", f"testhost:{world.server}", str(world.local)).returncode == 0
    assert state_files(world) == []
    # A configured source keeps its lock file, as it always did.
    world.basic_config()
    assert world.run().returncode == 0
    assert state_files(world) == ["laptop.lock"]


def test_one_shot_keeps_its_journal_while_it_is_needed(world, immutable):
    """The server cannot remove a message (chattr +i): it is in both places
    and the journal says so; once it can, the next run removes it there
    and nothing stays in the state directory."""
    made = fill_server(world, 2, sizes=[10, 20])
    stuck = world.server / "new" / sorted(made)[0]
    immutable(stuck)
    result = world.run(f"testhost:{world.server}", str(world.local))
    assert result.returncode == 1, result.stderr
    journals = [n for n in state_files(world) if n.endswith(".journal")]
    assert len(journals) == 1 and not [n for n in state_files(world) if n.endswith(".lock")]
    subprocess.run(["chattr", "-i", str(stuck)], check=True)
    result = world.run(f"testhost:{world.server}", str(world.local))
    assert result.returncode == 0, result.stderr
    assert world.server_new() == set()
    assert state_files(world) == []


# ---------------------------------------------------------------- signals

@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_says_what_state_it_left(world, signum, status):
    """Ctrl-C (SIGINT to the terminal's whole process group) or SIGTERM
    once some messages have landed: one line with what moved and what is
    still on the server, exit 128+N; the next run finishes the job."""
    world.batch = 2
    made = fill_server(world, 40, sizes=[2_000_000] * 40)
    proc = world.popen(f"testhost:{world.server}", str(world.local), stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # Two batches removed on the server: the first is counted as moved
        # by then (a batch still being saved when the signal comes is not
        # counted yet; it is in the journal, and the next run ends it).
        assert wait_until(lambda: len(world.server_new()) <= 36 or proc.poll() is not None, 60)
        assert proc.poll() is None, "the run ended before the signal"
        os.killpg(proc.pid, signum)  # as the terminal sends Ctrl-C: to the whole group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == status, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = f"syncmail: testhost:{world.server}: interrupted: "
    assert lines[0].startswith(prefix), err
    assert lines[0].endswith(" left on the server; nothing is lost: the next run finishes "
                             "the job"), err
    moved = int(lines[0][len(prefix):].split(" ", 1)[0])
    assert f" of 40 messages moved, {40 - moved} left" in lines[0]
    assert 0 < moved < 40
    check_nothing_lost(world, made)
    result = world.run(f"testhost:{world.server}", str(world.local), timeout=120)
    assert result.returncode == 0, result.stderr
    assert world.server_new() == set()
    check_all_local(world, made)
    assert state_files(world) == []


# ------------------------------------------------------ a maildir's subdir

@pytest.mark.parametrize("inside", ["new", "cur", "tmp", "new/sub"])
def test_local_maildir_in_a_maildirs_subdir_is_refused_before_connecting(world, tmp_path,
                                                                         inside):
    fill_server(world, 1, sizes=[10])
    make_maildir(world.local)
    path, flag = ssh_recorder(world, tmp_path)
    local = world.local / inside
    result = world.run(f"testhost:{world.server}", str(local), PATH=path)
    assert result.returncode == 64, result.stderr
    where = "is" if "/" not in inside else "is inside"
    sub = inside.split("/")[0]
    assert result.stderr == (f"syncmail: local maildir {local} {where} the {sub}/ of the "
                             f"maildir {world.local}: give the maildir itself\n")
    assert not flag.exists(), "ssh ran"
    assert set(os.listdir(world.local / "new")) == set()
    # The maildir itself is fine.
    result = world.run(f"testhost:{world.server}", str(world.local), PATH=path)
    assert result.returncode == 0, result.stderr
    assert flag.exists()


def test_configured_local_maildir_in_a_subdir_is_a_config_error(world):
    make_maildir(world.local)
    path = world.write_config(
        f'source a {{\n  host = "testhost"\n  remote = "{world.server}"\n'
        f'  local = "{world.local}/cur"\n}}\n')
    result = world.run()
    assert result.returncode == 78, result.stderr
    assert result.stderr == (f"syncmail: source 'a': local maildir {world.local}/cur is the "
                             f"cur/ of the maildir {world.local} ({path}:1)\n")


# ------------------------------------------------------------------ grammar

def test_one_message_is_one_message(world):
    fill_server(world, 1, sizes=[10])
    result = world.run("-v", f"testhost:{world.server}", str(world.local))
    assert result.returncode == 0, result.stderr
    assert f"syncmail: testhost:{world.server}: moved 1 message (10 bytes)," in result.stderr
