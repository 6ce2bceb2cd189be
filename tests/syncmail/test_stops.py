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
import subprocess
from pathlib import Path

import pytest
from syncmail_helpers import fill_server

from peers.maildirs import make_maildir


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
