"""What syncmail makes the server do: the programs its remote shell runs.

The server's PATH starts with a directory of wrappers that log each
program they stand for, then run the real one (or refuse, to stand for a
server whose find is not GNU find).  The program itself is also run
directly by each shell a server may have as sh (dash, bash, busybox)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from syncmail_helpers import check_all_local, fill_server

from peers.require import require_program
from roammail.syncmail import remote

PROGRAMS = ("find", "tar", "touch", "rm", "wc", "dd")


def server_programs(world, tmp_path: Path, *, gnu_find: bool = True) -> tuple[Path, Path]:
    """A client bin dir whose ssh gives the server logging wrappers first on
    its PATH; and the log, one line per program run: "NAME ARGS..."."""
    log = tmp_path / "server-programs.log"
    log.touch()
    wrappers = tmp_path / "server-bin"
    wrappers.mkdir()
    for name in PROGRAMS:
        real = shutil.which(name)
        assert real is not None, name
        refuse = ""
        if name == "find" and not gnu_find:  # as BSD and busybox find answer -printf
            refuse = ('for a do [ "$a" = -printf ] && { echo "find: -printf: unknown primary" >&2;'
                      " exit 1; }; done\n")
        path = wrappers / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n{refuse}exec {real} "$@"\n')
        path.chmod(0o755)
    client = tmp_path / "client-bin"
    world.sshd.write_ssh_wrapper(client, remote_path=[wrappers])
    return client, log


def run_with(world, client: Path, *args: str):
    return world.run(*args, PATH=f"{client}:{world.env()['PATH']}")


def test_a_run_that_finds_nothing_new_runs_no_program_on_the_server(world, tmp_path):
    client, log = server_programs(world, tmp_path)
    made = fill_server(world, 5, sizes=[10, 200, 3000, 0, 40])
    world.basic_config()
    first = run_with(world, client)
    assert first.returncode == 0, first.stderr
    check_all_local(world, made)
    ran = log.read_text().splitlines()
    assert any(line.startswith("tar ") for line in ran)  # the wrappers were in the way
    log.write_text("")
    again = run_with(world, client)
    assert again.returncode == 0, again.stderr
    assert log.read_text() == ""


def test_the_listing_gives_the_sizes_where_find_is_gnu_find(world, tmp_path):
    client, log = server_programs(world, tmp_path)
    made = fill_server(world, 30, sizes=[100 + i for i in range(30)])
    world.basic_config()
    world.batch = 7
    result = run_with(world, client)
    assert result.returncode == 0, result.stderr
    check_all_local(world, made)
    ran = log.read_text().splitlines()
    assert any("-printf %y %s %P" in line for line in ran)
    assert not any(line.startswith(("wc ", "dd ")) for line in ran)


def test_a_server_without_gnu_find(world, tmp_path):
    """Types from test(1) builtins and sizes asked for by batch: the same
    result, hostile names and refusals included."""
    client, log = server_programs(world, tmp_path, gnu_find=False)
    made = fill_server(world, 30, sizes=[100 + 37 * i for i in range(30)])
    for name in ("1.with space.host", "2.quote'\"q.host", "-3.dash.host", "4.*glob?[x].host"):
        world.deliver_remote(name, b"Subject: odd\n\nx\n", 1_700_000_000)
        made[name] = (b"Subject: odd\n\nx\n", 1_700_000_000)
    (world.server / "new" / "5.new\nline.host").write_bytes(b"x")
    (world.server / "new" / "6.link.host").symlink_to("/etc/passwd")
    world.basic_config()
    world.batch = 7
    result = run_with(world, client)
    assert result.returncode == 1, result.stderr
    check_all_local(world, made)
    assert world.server_new() == {"5.new\nline.host", "6.link.host"}
    assert "6.link.host left on the server: refused: a symbolic link" in result.stderr
    assert "5.new\\nline.host left on the server: refused: control character" in result.stderr
    ran = log.read_text().splitlines()
    assert any(line.startswith("wc ") for line in ran)  # the sizes came from C requests


@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_the_remote_program_names_exactly_the_files_of_each_spec(tmp_path, shell):
    """The server's program, run by each shell a server may have as sh,
    without ssh: ranges long and short (whole hundreds, tens and single
    files in one), lists, "=N" (a spec given before), and what it refuses."""
    argv = [require_program(shell)] + (["sh"] if shell == "busybox" else [])
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    names = [f"{1_700_000_000 + i}.M{i}.host" for i in range(300)]
    for i, name in enumerate(names):
        (maildir / "new" / name).write_bytes(b"x" * i)
    listed = sorted(names)  # the shell's glob order, LC_ALL=C: index N is listed[N - 1]

    def program(requests: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*argv, "-c", remote.remote_program(), "syncmail-remote", str(maildir), "202601010000"],
            input=requests.encode(), capture_output=True, timeout=60)

    def answers(*requests: str) -> list[list[str]]:
        proc = program("".join(r + "\n" for r in requests) + "Q\n")
        text = proc.stdout.rsplit(b"\0", 1)[1].decode()
        return [block.split("\n") for block in text.split("END\n")]

    def expected(indices) -> list[str]:
        return sorted(f"{listed[n - 1].split('.M')[1].split('.')[0]} ./{listed[n - 1]}"
                      for n in indices)

    def got(block: list[str]) -> list[str]:
        # "SIZE ./NAME" (GNU find), or wc -c's "  SIZE ./NAME" and "SIZE total"
        # (busybox sh runs its own find, which has no -printf).
        fields = [line.split() for line in block]
        return sorted(" ".join(f) for f in fields if len(f) == 2 and f[1].startswith("./"))

    specs = {"3-257": range(3, 258), "1 5 9-12 300": [1, 5, 9, 10, 11, 12, 300],
             "100-199": range(100, 200), "7-7": [7], "5-3 7": [7], "40-49": range(40, 50)}
    blocks = answers(*(f"C {spec}" for spec in specs), "C =1", "C =6")
    assert len(blocks) == len(specs) + 3 and blocks[-1] == [""]  # "" after the last END
    for block, indices in zip(blocks, [*specs.values(), specs["3-257"], specs["40-49"]]):
        assert got(block) == expected(indices)
    for bad in ("1-2-3", "-3", "3-", "x", "=9", "1 =1"):
        proc = program(f"C 1-3\nC {bad}\nQ\n")
        assert proc.stdout.endswith(b"END\nE bad request\n"), (bad, proc.stdout[-80:])
        assert proc.returncode == 3
