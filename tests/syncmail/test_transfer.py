"""Messages move over the real sshd with identical bytes and mtimes."""

from __future__ import annotations

import pytest
from syncmail_helpers import check_all_local, fill_server


def run_and_check(world, count: int) -> None:
    made = fill_server(world, count)
    world.basic_config()
    result = world.run()
    assert result.returncode == 0, result.stderr
    assert world.server_new() == set()
    check_all_local(world, made)
    assert len(world.local_messages()) == count
    # One ssh connection for the whole run.
    # And a second run finds nothing and says nothing (cron).
    again = world.run()
    assert again.returncode == 0 and again.stderr == ""


def test_300_messages_move_identically(world, sshd):
    world.batch = 40  # eight batches: the pipeline full, then drained
    before = sshd.count_accepted()
    run_and_check(world, 300)
    assert sshd.count_accepted() - before == 2  # one connection per run


@pytest.mark.slow
def test_1000_messages_move_identically(world):
    run_and_check(world, 1000)


def test_one_shot_form(world):
    made = fill_server(world, 5, sizes=[10, 100, 1000, 0, 5000])
    result = world.run(f"testhost:{world.server}", str(world.local))
    assert result.returncode == 0, result.stderr
    check_all_local(world, made)
    assert world.server_new() == set()


def test_verbose_logs_one_line_per_message_and_a_summary(world):
    fill_server(world, 3, sizes=[10, 20, 30])
    world.basic_config()
    result = world.run("-v")
    lines = result.stderr.splitlines()
    assert sum(" moved " in line and " bytes) to " in line for line in lines) == 3
    assert "moved 3 messages (60 bytes)" in lines[-1]


def test_stale_server_tmp_is_reported(world):
    import os
    old = world.server / "tmp" / "1.old.host"
    old.write_bytes(b"x")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    (world.server / "tmp" / "2.fresh.host").write_bytes(b"y")
    world.basic_config()
    result = world.run()
    assert result.returncode == 0
    assert "tmp/1.old.host is older than 36 hours" in result.stderr
    assert "2.fresh.host" not in result.stderr
    assert old.exists()


def run_on_a_terminal(world, *args: str) -> tuple[int, str]:
    """Run syncmail with its stdout and stderr on a pseudo-terminal."""
    import os
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen(world.argv(*args), env=world.env(), stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_progress_line_on_a_terminal_instead_of_a_line_per_message(world):
    fill_server(world, 150, sizes=[2000] * 150)
    world.basic_config()
    world.batch = 40
    status, text = run_on_a_terminal(world)
    assert status == 0, text
    assert "laptop: 150/150 messages, 300.0 KB" in text
    assert "\r\x1b[K" in text  # redrawn in place, and taken down
    assert " (2000 bytes) to " not in text  # the per-message lines went to syslog only
    last = text.replace("\r\x1b[K", "\n").split("\n")
    assert any(line.startswith("syncmail: laptop: moved 150 messages (300000 bytes)")
               for line in last)


def test_verbose_on_a_terminal_keeps_the_message_lines(world):
    fill_server(world, 120, sizes=[100] * 120)
    world.basic_config()
    status, text = run_on_a_terminal(world, "-v")
    assert status == 0, text
    assert text.count(" (100 bytes) to ") == 120
    assert "laptop: 120/120 messages" in text


def test_small_runs_on_a_terminal_have_no_progress_line(world):
    fill_server(world, 5, sizes=[10] * 5)
    world.basic_config()
    status, text = run_on_a_terminal(world)
    assert status == 0, text
    assert text.count(" (10 bytes) to ") == 5
    assert "5/5 messages" not in text and "\x1b[K" not in text


def test_a_run_that_finds_nothing_new_writes_nothing(world, tmp_path):
    """Seen with strace: no fsync, syncfs or rename when nothing is new,
    but the renaming of the source's health record (roammail-status), which
    is not fsynced."""
    from peers.require import require_program

    strace = require_program("strace")
    fill_server(world, 3, sizes=[10, 20, 30])
    world.basic_config()
    assert world.run().returncode == 0
    log = tmp_path / "strace.log"
    result = world.run_argv([strace, "-f", "-qq", "-y", "-o", str(log), "-e",
                             "trace=fsync,fdatasync,syncfs,sync,rename,renameat,renameat2",
                             *world.argv()])
    assert result.returncode == 0, result.stderr
    calls = [line for line in log.read_text().splitlines() if "(" in line]
    renames = [line for line in calls if "rename" in line]
    assert len(renames) == 1 and "/roammail/health/" in renames[0], calls
    assert [line for line in calls if "rename" not in line] == []
