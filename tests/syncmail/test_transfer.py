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
