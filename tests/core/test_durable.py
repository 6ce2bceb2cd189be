"""Unit tests of durable.py: the durable-write primitive and its failures."""

from __future__ import annotations

import errno
import io
import os
import posix
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from peers.require import require_program
from roammail.core import durable
from roammail.core.durable import fsync_dir, write_durably, write_file_atomically
from roammail.core.errors import DataError, IOFailure

LIB = str(Path(__file__).resolve().parents[2] / "lib")


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# ---------------------------------------------------------------- success

@pytest.mark.parametrize("make_source", [
    lambda data: data,
    lambda data: bytearray(data),
    lambda data: memoryview(data),
    lambda data: io.BytesIO(data),
    lambda data: [data[:3], b"", data[3:]],
    lambda data: (data[i:i + 5] for i in range(0, len(data), 5)),
], ids=["bytes", "bytearray", "memoryview", "file", "list", "generator"])
def test_writes_every_kind_of_source(tmp_path: Path, make_source) -> None:
    data = b"From: a@example.org\n\nhello\n" * 100
    final = write_durably(str(tmp_path), "msg", make_source(data))
    assert final == str(tmp_path / "msg")
    assert (tmp_path / "msg").read_bytes() == data
    assert entries(tmp_path) == ["msg"]


def test_empty_source_gives_empty_file(tmp_path: Path) -> None:
    write_durably(str(tmp_path), "empty", iter(()))
    assert (tmp_path / "empty").read_bytes() == b""


def test_reads_a_big_file_source_to_its_end(tmp_path: Path) -> None:
    data = os.urandom(3 * durable.READ_CHUNK_BYTES + 17)
    write_durably(str(tmp_path), "big", io.BytesIO(data))
    assert (tmp_path / "big").read_bytes() == data


def test_mode_and_mtime(tmp_path: Path) -> None:
    write_durably(str(tmp_path), "m", b"x", mode=0o640, mtime=1_000_000_000.5)
    info = os.stat(tmp_path / "m")
    assert stat.S_IMODE(info.st_mode) == 0o640
    assert info.st_mtime == pytest.approx(1_000_000_000.5)


def test_default_mode_is_0600(tmp_path: Path) -> None:
    write_durably(str(tmp_path), "m", b"x")
    assert stat.S_IMODE(os.stat(tmp_path / "m").st_mode) == 0o600


def spy_source(seen: list[tuple[list[str], list[str]]], dest: Path, tmp: Path) -> Iterator[bytes]:
    """Yield two chunks, noting both directories' entries in between."""
    yield b"first "
    seen.append((entries(dest), entries(tmp)))
    yield b"second"


def test_temporary_file_in_directory_with_prefix(tmp_path: Path) -> None:
    seen: list[tuple[list[str], list[str]]] = []
    write_durably(str(tmp_path), "final", spy_source(seen, tmp_path, tmp_path),
                  tmp_prefix="#partial#")
    [(during, _)] = seen
    assert len(during) == 1 and during[0].startswith("#partial#")
    assert entries(tmp_path) == ["final"]


def test_temporary_file_in_tmp_dir(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "new", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    seen: list[tuple[list[str], list[str]]] = []
    write_durably(str(dest), "final", spy_source(seen, dest, tmp), tmp_dir=str(tmp))
    [(dest_during, tmp_during)] = seen
    assert dest_during == []
    assert len(tmp_during) == 1 and tmp_during[0].startswith(".tmp.")
    assert entries(dest) == ["final"] and entries(tmp) == []
    assert (dest / "final").read_bytes() == b"first second"


def test_loops_on_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def short_write(fd: int, data) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:7]))

    data = bytes(range(256)) * 4
    with monkeypatch.context() as patch:
        patch.setattr(posix, "write", short_write)  # durable calls posix, not os
        write_durably(str(tmp_path), "short", [data[:500], data[500:]])
    assert (tmp_path / "short").read_bytes() == data
    assert len(calls) >= len(data) // 7


def test_temp_name_collision_never_follows_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    monkeypatch.setattr(durable, "_random_token", lambda: "aaaa")
    trap = tmp_path / durable._temp_name(".tmp.", "msg")
    os.symlink(victim, trap)
    tokens = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(durable, "_random_token", lambda: next(tokens))
    write_durably(str(tmp_path), "msg", b"new data")
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "msg").read_bytes() == b"new data"
    assert os.path.islink(trap)


# ------------------------------------------------------------ overwriting

def test_never_replaces_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "msg").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_durably(str(tmp_path), "msg", b"new")
    assert (tmp_path / "msg").read_bytes() == b"old"
    assert entries(tmp_path) == ["msg"]


def test_never_replaces_an_existing_file_from_tmp_dir(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "new", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    (dest / "msg").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        write_durably(str(dest), "msg", b"new", tmp_dir=str(tmp))
    assert (dest / "msg").read_bytes() == b"old"
    assert entries(dest) == ["msg"] and entries(tmp) == []


def test_never_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"old")
    os.symlink(target, tmp_path / "msg")
    with pytest.raises(FileExistsError):
        write_durably(str(tmp_path), "msg", b"new")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(FileExistsError):
        write_durably(str(tmp_path), "dangling", b"new")
    assert target.read_bytes() == b"old"
    assert not (tmp_path / "nowhere").exists()
    assert entries(tmp_path) == ["dangling", "msg", "target"]


def test_overwrite_replaces(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"old")
    write_durably(str(tmp_path), "state", b"new", overwrite=True)
    assert (tmp_path / "state").read_bytes() == b"new"
    assert entries(tmp_path) == ["state"]


def test_write_file_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state"
    write_file_atomically(str(path), b"one")
    assert path.read_bytes() == b"one"
    write_file_atomically(str(path), b"two", mode=0o644)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    monkeypatch.chdir(tmp_path)
    write_file_atomically("relative", b"three")
    assert (tmp_path / "relative").read_bytes() == b"three"
    assert entries(tmp_path) == ["relative", "state"]


# --------------------------------------------------------------- failures

def failing_source() -> Iterator[bytes]:
    yield b"x" * 100_000
    raise RuntimeError("connection lost\nin the middle")


def test_failing_source_removes_temporary_file(tmp_path: Path) -> None:
    with pytest.raises(IOFailure) as caught:
        write_durably(str(tmp_path), "msg", failing_source())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write {tmp_path / 'msg'}: ")
    assert "connection lost" in message
    assert entries(tmp_path) == []


def test_failing_source_removes_temporary_file_in_tmp_dir(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "new", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    with pytest.raises(IOFailure):
        write_durably(str(dest), "msg", failing_source(), tmp_dir=str(tmp))
    assert entries(dest) == [] and entries(tmp) == []


def test_failing_file_source(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))

    with pytest.raises(IOFailure, match="reading the data failed"):
        write_durably(str(tmp_path), "msg", Broken())
    assert entries(tmp_path) == []


def test_source_giving_str_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match="not bytes"):
        write_durably(str(tmp_path), "msg", [b"ok", "not bytes"])  # type: ignore[list-item]
    assert entries(tmp_path) == []
    with pytest.raises(TypeError):
        write_durably(str(tmp_path), "msg", "text")  # type: ignore[arg-type]


def test_roammail_error_from_source_keeps_its_type(tmp_path: Path) -> None:
    def source() -> Iterator[bytes]:
        yield b"partial"
        raise DataError("bad spool file")

    with pytest.raises(DataError, match="bad spool file"):
        write_durably(str(tmp_path), "msg", source())
    assert entries(tmp_path) == []


def test_interrupt_removes_temporary_file(tmp_path: Path) -> None:
    def source() -> Iterator[bytes]:
        yield b"partial"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_durably(str(tmp_path), "msg", source())
    assert entries(tmp_path) == []


def test_fsync_failure_is_io_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(posix, "fsync", broken_fsync)  # durable calls posix, not os
    with pytest.raises(IOFailure) as caught:
        write_durably(str(tmp_path), "msg", b"data")
    assert str(caught.value) == f"cannot write {tmp_path / 'msg'}: Input/output error"
    assert entries(tmp_path) == []


def test_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match=r"^cannot create .*/nowhere/\.tmp\..*: No such file"):
        write_durably(str(tmp_path / "nowhere"), "msg", b"data")
    (tmp_path / "tmp").mkdir()
    with pytest.raises(IOFailure, match=r"^cannot link .* to .*/nowhere/msg: No such file"):
        write_durably(str(tmp_path / "nowhere"), "msg", b"data", tmp_dir=str(tmp_path / "tmp"))
    assert entries(tmp_path / "tmp") == []


def test_overwrite_of_a_directory_fails(tmp_path: Path) -> None:
    (tmp_path / "msg").mkdir()
    with pytest.raises(IOFailure, match="^cannot rename "):
        write_durably(str(tmp_path), "msg", b"data", overwrite=True)
    assert entries(tmp_path) == ["msg"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape", "nul\0"])
def test_refuses_names_that_are_not_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError):
        write_durably(str(tmp_path), name, b"data")
    assert entries(tmp_path) == []


def test_fsync_dir(tmp_path: Path) -> None:
    fsync_dir(str(tmp_path))
    with pytest.raises(IOFailure, match=r"^cannot open directory .*/missing: No such file"):
        fsync_dir(str(tmp_path / "missing"))
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(IOFailure, match="Not a directory"):
        fsync_dir(str(tmp_path / "file"))


# ---------------------------------------------------------------- batches

def test_stage_then_publish_in_two_steps(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "new", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    staged = durable.stage(str(dest), "m", b"data", tmp_dir=str(tmp), mtime=1_000_000_000)
    assert entries(dest) == [] and len(entries(tmp)) == 1
    assert Path(staged.temp).read_bytes() == b"data" and staged.synced
    assert durable.publish(staged) == str(dest / "m")
    assert entries(dest) == ["m"] and entries(tmp) == []
    assert os.stat(dest / "m").st_mtime == 1_000_000_000


def test_publish_never_replaces_and_removes_the_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"old")
    staged = durable.stage(str(tmp_path), "m", b"new")
    with pytest.raises(FileExistsError):
        durable.publish(staged)
    assert entries(tmp_path) == ["m"] and (tmp_path / "m").read_bytes() == b"old"


def test_abandon_removes_only_the_temporary_file(tmp_path: Path) -> None:
    staged = durable.stage(str(tmp_path), "m", b"x")
    durable.abandon(staged)
    durable.abandon(staged)  # again: nothing left to remove, no error
    assert entries(tmp_path) == []


def test_a_batch_publishes_only_after_sync(tmp_path: Path) -> None:
    batch = durable.Batch(trusted=frozenset({durable.file_system_type(str(tmp_path))}))
    staged = [batch.stage(str(tmp_path), f"m{i}", b"x" * i) for i in range(5)]
    if all(s.synced for s in staged):
        pytest.skip("syncfs(2) cannot be trusted here (not Linux >= 5.8)")
    with pytest.raises(ValueError, match="not durable yet"):
        durable.publish(staged[0])
    batch.sync()
    for s in staged:
        durable.publish(s)
    assert entries(tmp_path) == [f"m{i}" for i in range(5)]


def test_untrusted_file_systems_fsync_each_file_at_once(tmp_path: Path) -> None:
    batch = durable.Batch(trusted=frozenset())
    staged = batch.stage(str(tmp_path), "m", b"x")
    assert staged.synced
    durable.publish(staged)
    batch.sync()  # nothing left to do
    assert entries(tmp_path) == ["m"]


def can_make_unnamed_files(directory: Path) -> bool:
    try:
        os.close(os.open(directory, os.O_WRONLY | getattr(os, "O_TMPFILE", 0), 0o600))
    except (OSError, AttributeError):
        return False
    return hasattr(os, "O_TMPFILE")


def test_a_batch_stages_unnamed_files_where_it_can(tmp_path: Path) -> None:
    if not can_make_unnamed_files(tmp_path):
        pytest.skip("no O_TMPFILE here")
    dest, tmp = tmp_path / "new", tmp_path / "tmp"
    dest.mkdir()
    tmp.mkdir()
    batch = durable.Batch()
    first = batch.stage(str(dest), "m1", b"one", tmp_dir=str(tmp), mtime=1_000_000_000)
    second = batch.stage(str(dest), "m2", [b"tw", b"o"], tmp_dir=str(tmp))
    assert first.temp is None and first.fd is not None
    assert entries(tmp) == [] and entries(dest) == []  # no name anywhere yet
    with durable.reopen(second) as f:
        assert f.read() == b"two"
    batch.sync()
    durable.publish(first)
    durable.abandon(second)
    assert first.fd is None and second.fd is None
    assert entries(dest) == ["m1"] and entries(tmp) == []
    assert (dest / "m1").read_bytes() == b"one"
    assert os.stat(dest / "m1").st_mtime == 1_000_000_000
    assert stat.S_IMODE(os.stat(dest / "m1").st_mode) == 0o600


def test_an_unnamed_file_never_replaces_a_message(tmp_path: Path) -> None:
    if not can_make_unnamed_files(tmp_path):
        pytest.skip("no O_TMPFILE here")
    (tmp_path / "m").write_bytes(b"old")
    batch = durable.Batch()
    staged = batch.stage(str(tmp_path), "m", b"new")
    batch.sync()
    with pytest.raises(FileExistsError):
        durable.publish(staged)
    assert staged.fd is None and entries(tmp_path) == ["m"]
    assert (tmp_path / "m").read_bytes() == b"old"


OUT_OF_FILES_SCRIPT = """
import os, resource, sys
sys.path.insert(0, sys.argv[1])
from roammail.core import durable
resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
batch = durable.Batch()
staged = [batch.stage(sys.argv[2], "m%d" % i, b"x%d" % i) for i in range(300)]
print(sum(s.fd is not None for s in staged), sum(s.temp is not None for s in staged))
batch.sync()
for s in staged:
    durable.publish(s)
"""


def test_out_of_file_descriptors_a_batch_names_its_files(tmp_path: Path) -> None:
    """A real limit of 256 open files: a quarter stays free, the files
    past the rest are staged under names."""
    if not can_make_unnamed_files(tmp_path):
        pytest.skip("no O_TMPFILE here")
    out = subprocess.run([sys.executable, "-I", "-c", OUT_OF_FILES_SCRIPT, LIB, str(tmp_path)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout.split()
    unnamed, named = int(out[0]), int(out[1])
    assert (unnamed, named) == (256 - 64, 300 - 256 + 64)
    assert entries(tmp_path) == sorted(f"m{i}" for i in range(300))
    assert (tmp_path / "m7").read_bytes() == b"x7"


BATCH_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from roammail.core import durable
trusted = frozenset(sys.argv[3].split(",")) if sys.argv[3] else frozenset()
batch = durable.Batch(trusted=trusted)
staged = [batch.stage(sys.argv[2], "m%d" % i, b"x" * 100) for i in range(40)]
batch.sync()
for s in staged:
    durable.publish(s)
"""


def syscalls_of_a_batch(tmp_path: Path, trusted: str) -> dict[str, int]:
    strace = require_program("strace")
    target = tmp_path / f"batch-{trusted or 'none'}"
    target.mkdir()
    log = tmp_path / "strace.log"
    subprocess.run([strace, "-f", "-qq", "-o", str(log), "-e", "trace=fsync,fdatasync,syncfs",
                    sys.executable, "-I", "-c", BATCH_SCRIPT, LIB, str(target), trusted],
                   check=True)
    calls = [line.split()[1].split("(")[0] for line in log.read_text().splitlines()
             if "(" in line and "resumed" not in line]
    assert len(os.listdir(target)) == 40
    return {name: calls.count(name) for name in ("fsync", "fdatasync", "syncfs")}


def test_a_batch_on_a_trusted_file_system_is_one_syncfs(tmp_path: Path) -> None:
    """Observed with strace: 40 staged files cost one syncfs(2), no fsync."""
    kind = durable.file_system_type(str(tmp_path))
    uname = os.uname()
    if not durable.syncfs_suffices(kind, uname.sysname, uname.release, frozenset({kind})):
        pytest.skip("syncfs(2) cannot be trusted here (not Linux >= 5.8)")
    assert syscalls_of_a_batch(tmp_path, str(kind)) == {"fsync": 0, "fdatasync": 0, "syncfs": 1}


def test_a_batch_elsewhere_is_one_fsync_per_file(tmp_path: Path) -> None:
    assert syscalls_of_a_batch(tmp_path, "") == {"fsync": 40, "fdatasync": 0, "syncfs": 0}


def test_file_system_type_agrees_with_findmnt(tmp_path: Path) -> None:
    findmnt = require_program("findmnt")
    for where in (tmp_path, Path("/proc"), Path("/")):
        out = subprocess.run([findmnt, "-n", "-o", "FSTYPE", "--target", str(where)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout.split()
        assert durable.file_system_type(str(where)) == out[0], where
    assert durable.file_system_type(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("kind, system, release, expected", [
    ("ext4", "Linux", "6.1.0-18-amd64", True),
    ("xfs", "Linux", "5.8.0", True),
    ("ext4", "Linux", "5.7.19", False),        # syncfs hid write-back errors
    ("ext4", "Linux", "4.19.0-26-amd64", False),
    ("fuse.sshfs", "Linux", "6.1.0", False),   # FUSE's syncfs may do nothing
    ("nfs4", "Linux", "6.1.0", False),
    (None, "Linux", "6.1.0", False),
    ("ext4", "FreeBSD", "14.0-RELEASE", False),
    ("ext4", "Linux", "garbage", False),
])
def test_when_syncfs_suffices(kind, system: str, release: str, expected: bool) -> None:
    assert durable.syncfs_suffices(kind, system, release) is expected


def test_linux_version() -> None:
    assert durable.linux_version("6.18.44-fc-v657") == (6, 18)
    assert durable.linux_version("5.10.0-28-amd64") == (5, 10)
    assert durable.linux_version("5.8-rc1") == (5, 8)
    assert durable.linux_version("x") is None


def test_syncfs_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match=r"^cannot open directory .*/missing: No such file"):
        durable.syncfs(str(tmp_path / "missing"))


# ------------------------------------------------------------- a full disk

@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real full disk.  Needs root; skipped without it,
    except in CI (CI=true), where the test must run."""
    where = tmp_path / "tiny"
    where.mkdir()
    reason = None
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
    else:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs",
                               str(where)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            reason = f"cannot mount a tmpfs: {proc.stdout.decode(errors='replace').strip()}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the full-disk test must run)")
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_full_disk_is_one_line_io_failure(tiny_filesystem: Path) -> None:
    megabyte = [b"x" * 65536] * 16
    with pytest.raises(IOFailure) as caught:
        write_durably(str(tiny_filesystem), "big", megabyte)
    assert str(caught.value) == (
        f"cannot write {tiny_filesystem / 'big'}: {os.strerror(errno.ENOSPC)}")
    assert entries(tiny_filesystem) == []
    # The space is free again: a small file still fits.
    write_durably(str(tiny_filesystem), "small", b"fits")
    assert entries(tiny_filesystem) == ["small"]


# ------------------------------------------------------------ start-up cost

def test_import_stays_cheap() -> None:
    """extsmail imports durable (and maildir) for every mail: no heavy
    modules behind them."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); before = set(sys.modules);"
            "import roammail.core.durable, roammail.core.maildir;"
            "print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-I", "-c", code, LIB], check=True,
                         stdout=subprocess.PIPE, text=True).stdout.split()
    heavy = {"socket", "random", "secrets", "tempfile", "shutil", "subprocess", "re",
             "typing_extensions", "threading", "logging"}
    assert not heavy & set(out), out
