"""Unit tests of spool.py: the v1 format, durable enqueue, the flock
protocol shared with the C extsmail, listing, the instance lock and the
spool directory checks.

Locks are taken by real other processes (a subprocess running a few lines
of Python), never simulated: flock(2) between two descriptors of one
process is what the C tools and extsmaild meet in practice only across
processes.
"""

from __future__ import annotations

import errno
import io
import os
import pwd
import select
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from peers.require import require_root
from roammail.core import durable
from roammail.core.errors import DataError, IOFailure
from roammail.extsmail import spool
from roammail.extsmail.spool import (
    SpoolError,
    acquire_instance_lock,
    check_spool_dir,
    encode_header,
    enqueue,
    list_messages,
    open_message,
    parse_header,
)

LIB = str(Path(spool.__file__).resolve().parents[2])
WAIT = 10.0  # seconds: the bound on every wait for a helper process

args_strategy = st.lists(st.binary(max_size=40), max_size=8)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    path.chmod(0o700)
    return path


# ------------------------------------------------------- helper processes

def _python(code: str, *argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=LIB)
    return subprocess.Popen([sys.executable, "-c", code, *argv], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _first_line(proc: subprocess.Popen) -> bytes:
    """The first line the helper prints, waiting at most WAIT seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], WAIT)
    if not ready:
        raise AssertionError("the helper process said nothing in time")
    line = proc.stdout.readline()
    if not line:
        proc.wait(WAIT)
        raise AssertionError(f"the helper process died: {proc.stderr.read()!r}")
    return line.strip()


def _finish(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(WAIT)
    proc.stdout.close()
    proc.stderr.close()


FLOCK_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""

FLOCK_PROBE = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError as exc:
    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
        raise
    print("busy")
else:
    print("free")
"""

INSTANCE_LOCK_HOLDER = """
import sys
from roammail.extsmail.spool import acquire_instance_lock
fd = acquire_instance_lock(sys.argv[1])
print("busy" if fd is None else "held", flush=True)
sys.stdin.read()
"""


@contextmanager
def flock_held_elsewhere(path: Path) -> Iterator[None]:
    """Another process holds LOCK_EX on `path` for the duration."""
    proc = _python(FLOCK_HOLDER, str(path))
    try:
        assert _first_line(proc) == b"locked"
        yield
    finally:
        _finish(proc)


def lock_state_seen_elsewhere(path: Path) -> str:
    """'busy' when another process cannot flock `path` now, else 'free'."""
    proc = subprocess.run([sys.executable, "-c", FLOCK_PROBE, str(path)],
                          capture_output=True, timeout=WAIT, check=True)
    return proc.stdout.decode().strip()


# ------------------------------------------------------------ the format

def test_header_bytes_of_the_reference_example() -> None:
    assert encode_header([b"-oi", b"-t"]) == b"v1\n2\n3\n-oi\n2\n-t\n"
    assert encode_header([]) == b"v1\n0\n"
    assert encode_header([b""]) == b"v1\n1\n0\n\n"
    assert encode_header([b"a\nb", b"\0"]) == b"v1\n2\n3\na\nb\n1\n\0\n"
    assert encode_header([b"x" * 12]) == b"v1\n1\n12\n" + b"x" * 12 + b"\n"


@given(args=args_strategy)
@example(args=[b"", b"\n", b"\0", b"\n\n12\n", b"\xff\xfe"])
def test_header_layout_is_byte_exact(args: list[bytes]) -> None:
    expected = b"v1\n" + str(len(args)).encode("ascii") + b"\n"
    for arg in args:
        expected += str(len(arg)).encode("ascii") + b"\n" + arg + b"\n"
    assert encode_header(args) == expected


@given(args=args_strategy, body=st.binary(max_size=200))
@example(args=[], body=b"")
@example(args=[b""], body=b"")
@example(args=[b"\n"], body=b"\n")
@example(args=[b"-t", b"\0\n"], body=b"v1\n1\n1\nx\n")
def test_parse_inverts_encode(args: list[bytes], body: bytes) -> None:
    header = encode_header(args)
    parsed, offset = parse_header(header + body, "/spool/msgs/m")
    assert parsed == args
    assert offset == len(header)


@given(args=args_strategy, data=st.data())
def test_every_cut_header_is_refused(args: list[bytes], data: st.DataObject) -> None:
    header = encode_header(args)
    cut = data.draw(st.integers(min_value=0, max_value=len(header) - 1), label="cut")
    with pytest.raises(DataError, match="/spool/msgs/m"):
        parse_header(header[:cut], "/spool/msgs/m")


def test_every_prefix_of_one_header_is_refused() -> None:
    header = encode_header([b"-oi", b"", b"two words", b"a\nb"])
    for cut in range(len(header)):
        with pytest.raises(DataError):
            parse_header(header[:cut], "m")


@pytest.mark.parametrize("data, why", [
    (b"v1\nx\n", "bad argument count"),
    (b"v1\n2\n1\nx\n01\ny\n", "bad length of argument 2"),
    (b"v1\n1\n5\nx\n", "argument 1 is cut short"),
])
def test_a_garbled_header_is_said_where(data: bytes, why: str) -> None:
    with pytest.raises(DataError, match=f"^corrupt spool file /s/m: {why}$"):
        parse_header(data, "/s/m")


@pytest.mark.parametrize("data", [
    b"", b"v2\n0\n", b"V1\n0\n", b"v1\r\n0\r\n", b"v1\n", b"v1\n\n", b"v1\nx\n",
    b"v1\n-1\n", b"v1\n+1\n1\nx\n", b"v1\n01\n1\nx\n", b"v1\n 1\n1\nx\n",
    b"v1\n1\n01\nx\n", b"v1\n1\n2\nx\n", b"v1\n1\n1\nxy", b"v1\n1\n1\nxy\n",
    b"v1\n2\n1\nx\n", b"v1\n1\n99999999999999999999\nx\n",
    b"v1\n99999999999999999999\n", b"v1\n1\n999999999999999999999\n",
    "v1\n1\n\u0661\nx\n".encode(),  # an Arabic-Indic digit is not a digit here
])
def test_garbled_headers_are_refused(data: bytes) -> None:
    with pytest.raises(DataError):
        parse_header(data, "m")


def _check_parse_of_garbage(data: bytes) -> None:
    try:
        args, offset = parse_header(data, "m")
    except DataError:
        return
    # Whatever parses is exactly a canonical header followed by the body.
    assert data[:offset] == encode_header(args)


header_like = st.lists(st.sampled_from([b"0", b"1", b"2", b"9", b"10", b"\n", b"x", b"\0",
                                        b"-", b"v1\n"]), max_size=30).map(b"".join)


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=64), header_like.map(lambda tail: b"v1\n" + tail)))
def test_garbage_raises_data_error_or_parses_canonically(data: bytes) -> None:
    _check_parse_of_garbage(data)


@settings(max_examples=300)
@given(args=args_strategy, body=st.binary(max_size=20), data=st.data())
def test_a_damaged_header_raises_data_error_or_parses_canonically(
        args: list[bytes], body: bytes, data: st.DataObject) -> None:
    whole = bytearray(encode_header(args) + body)
    where = data.draw(st.integers(0, len(whole) - 1), label="where")
    whole[where] = data.draw(st.integers(0, 255), label="byte")
    _check_parse_of_garbage(bytes(whole))


# ---------------------------------------------------------------- enqueue

@given(args=args_strategy, body=st.binary(min_size=1, max_size=3000))
@settings(max_examples=40, deadline=None)
def test_enqueue_stores_header_and_message_verbatim(tmp_path_factory, args: list[bytes],
                                                    body: bytes) -> None:
    spool_dir = tmp_path_factory.mktemp("spool")
    spool_dir.chmod(0o700)
    path = enqueue(str(spool_dir), args, io.BytesIO(body))
    assert path is not None
    assert os.path.dirname(path) == str(spool_dir / "msgs")
    assert Path(path).read_bytes() == encode_header(args) + body
    assert entries(spool_dir / "tmp") == []
    with open_message(path) as message:
        assert message.args == args
        assert message.read_body() == body


def test_enqueue_of_an_empty_stream_queues_nothing(spool_dir: Path) -> None:
    assert enqueue(str(spool_dir), [b"-t"], io.BytesIO(b"")) is None
    assert entries(spool_dir / "msgs") == []
    assert entries(spool_dir / "tmp") == []
    assert list_messages(str(spool_dir)) == []


def test_enqueue_reads_a_pipe_to_its_end_across_short_reads(spool_dir: Path) -> None:
    """A pipe gives short reads: every one of them must be kept."""
    pieces = [b"F", b"rom: a@b\n", b"\n", os.urandom(200_000), b"tail without newline"]
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            for piece in pieces:
                pipe.write(piece)
                time.sleep(0.01)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            path = enqueue(str(spool_dir), [b"-oi"], stream)
    finally:
        writer.join(WAIT)
    assert Path(path).read_bytes() == encode_header([b"-oi"]) + b"".join(pieces)


class FailingStream(io.RawIOBase):
    """A message source that fails with EIO after its first bytes."""

    def __init__(self) -> None:
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.calls += 1
        if self.calls > 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        buffer[:5] = b"From:"
        return 5


def test_a_read_error_queues_nothing_and_leaves_no_temporary_file(spool_dir: Path) -> None:
    with pytest.raises(IOFailure, match="Input/output error"):
        enqueue(str(spool_dir), [], FailingStream())
    assert entries(spool_dir / "msgs") == []
    assert entries(spool_dir / "tmp") == []


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_enqueue_makes_private_directories_and_files(spool_dir: Path, umask: int) -> None:
    os.umask(umask)
    path = enqueue(str(spool_dir), [b"-t"], io.BytesIO(b"To: a@b\n\nhi\n"))
    assert mode_of(spool_dir / "msgs") == 0o700
    assert mode_of(spool_dir / "tmp") == 0o700
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert mode_of(Path(path)) == 0o600
    assert os.lstat(path).st_nlink == 1  # the temporary link is gone


def test_enqueue_gives_each_message_its_own_file(spool_dir: Path) -> None:
    paths = [enqueue(str(spool_dir), [b"%d" % i], io.BytesIO(b"same\n")) for i in range(20)]
    assert len(set(paths)) == 20
    assert sorted(list_messages(str(spool_dir))) == sorted(paths)


def test_enqueue_refuses_a_bad_spool_and_writes_nothing(spool_dir: Path) -> None:
    spool_dir.chmod(0o755)
    with pytest.raises(SpoolError, match="0700"):
        enqueue(str(spool_dir), [], io.BytesIO(b"x"))
    assert entries(spool_dir) == []


def test_a_command_line_longer_than_a_mebibyte_reads_back(spool_dir: Path) -> None:
    """Linux allows 2 MiB of arguments (more with a bigger stack limit):
    a message queued with such a command line must be deliverable, not
    taken for a corrupt file."""
    args = [b"rcpt%06d@example.org" % i + b"x" * 100 for i in range(12_000)]
    assert len(encode_header(args)) > 1 << 20
    body = b"To: many\n\nhello\n"
    path = enqueue(str(spool_dir), args, io.BytesIO(body))
    message = open_message(path)
    assert message is not None
    with message:
        assert message.args == args
        assert message.read_body() == body


# ---------------------------------------------------------- open_message

def queue_one(spool_dir: Path, args: tuple[bytes, ...] | list[bytes] = (b"-t",),
              body: bytes = b"To: x\n\nhi\n") -> str:
    return enqueue(str(spool_dir), list(args), io.BytesIO(body))


def test_open_message_locks_until_closed(spool_dir: Path) -> None:
    path = queue_one(spool_dir, [b"-oi", b""], b"To: a@b\r\n\r\nbody\0")
    message = open_message(path)
    assert message is not None
    try:
        assert message.args == [b"-oi", b""]
        assert message.read_body() == b"To: a@b\r\n\r\nbody\0"
        assert message.read_body() == b"To: a@b\r\n\r\nbody\0"  # from the start again
        assert message.size == os.path.getsize(path)
        assert lock_state_seen_elsewhere(Path(path)) == "busy"
    finally:
        message.close()
    assert lock_state_seen_elsewhere(Path(path)) == "free"


def test_a_file_locked_by_another_process_is_skipped_untouched(spool_dir: Path) -> None:
    path = queue_one(spool_dir)
    before = Path(path).read_bytes()
    with flock_held_elsewhere(Path(path)):
        assert open_message(path) is None
    assert Path(path).read_bytes() == before
    message = open_message(path)  # the lock, not the file, was the reason
    assert message is not None
    message.close()


def test_an_empty_file_is_skipped(spool_dir: Path) -> None:
    """The C extsmail creates the file empty, then locks and writes it."""
    (spool_dir / "msgs").mkdir(mode=0o700)
    empty = spool_dir / "msgs" / "XXXXabcdef"
    empty.touch(mode=0o600)
    assert open_message(str(empty)) is None
    assert empty.exists()
    assert lock_state_seen_elsewhere(empty) == "free"


def test_a_file_unlinked_after_listing_is_skipped(spool_dir: Path) -> None:
    path = queue_one(spool_dir)
    assert list_messages(str(spool_dir)) == [path]
    os.unlink(path)
    assert open_message(path) is None


def _thread_blocked_opening_a_fifo(tid: int) -> bool:
    try:
        wchan = Path(f"/proc/self/task/{tid}/wchan").read_text()
    except OSError:
        return False
    return wchan == "wait_for_partner"


def test_a_file_replaced_between_open_and_lock_is_skipped(spool_dir: Path) -> None:
    """open_message opens the name, then locks; if the name was delivered
    and reused in between, the descriptor is not the message any more.

    To stop open_message between its open(2) and its flock(2), the name is
    first a FIFO: opening it blocks until a writer comes.  While it blocks,
    a regular message is renamed over the name, and only then is the FIFO
    (through a second link) opened for writing."""
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to see a thread blocked in open(2)")
    msgs = spool_dir / "msgs"
    msgs.mkdir(mode=0o700)
    name = msgs / "1234.M1P1Q1R00.host"
    os.mkfifo(name, 0o600)
    other_link = spool_dir / "fifo"
    os.link(name, other_link)
    outcome: dict = {}

    def open_it() -> None:
        outcome["tid"] = threading.get_native_id()
        try:
            outcome["result"] = open_message(str(name))
        except BaseException as exc:  # reported by the assertion below
            outcome["result"] = exc

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    deadline = time.monotonic() + WAIT
    while "tid" not in outcome or not _thread_blocked_opening_a_fifo(outcome["tid"]):
        if time.monotonic() > deadline:
            pytest.skip("cannot see the thread block in open(2) (/proc wchan hidden?)")
        time.sleep(0.005)
    replacement = spool_dir / "new"
    replacement.write_bytes(encode_header([b"-new"]) + b"To: y\n\nnew\n")
    os.rename(replacement, name)
    writer = os.open(other_link, os.O_WRONLY)
    try:
        opener.join(WAIT)
    finally:
        os.close(writer)
    assert not opener.is_alive()
    assert outcome["result"] is None
    # The new message under that name is untouched, unlocked and readable.
    with open_message(str(name)) as message:
        assert message.args == [b"-new"]
        assert message.read_body() == b"To: y\n\nnew\n"


def test_a_corrupt_file_raises_and_stays_unlocked(spool_dir: Path) -> None:
    (spool_dir / "msgs").mkdir(mode=0o700)
    bad = spool_dir / "msgs" / "bad"
    bad.write_bytes(b"v1\n3\n1\nx\n")
    with pytest.raises(DataError, match=str(bad)):
        open_message(str(bad))
    assert bad.read_bytes() == b"v1\n3\n1\nx\n"
    assert lock_state_seen_elsewhere(bad) == "free"


def test_a_symlink_in_msgs_is_not_followed(spool_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(encode_header([]) + b"x")
    (spool_dir / "msgs").mkdir(mode=0o700)
    (spool_dir / "msgs" / "link").symlink_to(target)
    with pytest.raises(DataError):
        open_message(str(spool_dir / "msgs" / "link"))


# ---------------------------------------------------------- list_messages

def test_list_messages_skips_dot_files_and_orders_by_mtime(spool_dir: Path) -> None:
    msgs = spool_dir / "msgs"
    msgs.mkdir(mode=0o700)
    now = time.time()
    mtimes = {"c": now - 300, "a": now - 200, "b": now - 100, "d": now - 200,
              ".hidden": now - 1000, ".": None}
    for name, mtime in mtimes.items():
        if mtime is None:
            continue
        (msgs / name).write_bytes(b"v1\n0\nx")
        os.utime(msgs / name, (mtime, mtime))
    listed = [os.path.basename(p) for p in list_messages(str(spool_dir))]
    assert listed == ["c", "a", "d", "b"]
    assert all(p.startswith(str(msgs) + "/") for p in list_messages(str(spool_dir)))


def test_list_messages_of_a_spool_without_msgs_is_empty(spool_dir: Path) -> None:
    assert list_messages(str(spool_dir)) == []


def test_list_messages_ignores_the_tmp_directory(spool_dir: Path) -> None:
    (spool_dir / "tmp").mkdir(mode=0o700)
    (spool_dir / "tmp" / "partial").write_bytes(b"v1\n0\nhalf")
    path = queue_one(spool_dir)
    assert list_messages(str(spool_dir)) == [path]


# ------------------------------------------------------- the instance lock

def test_the_instance_lock_is_exclusive_across_processes(spool_dir: Path) -> None:
    lock_file = spool_dir / spool.LOCK_NAME
    fd = acquire_instance_lock(str(spool_dir))
    assert fd is not None
    inode = os.stat(lock_file).st_ino
    try:
        other = _python(INSTANCE_LOCK_HOLDER, str(spool_dir))
        try:
            assert _first_line(other) == b"busy"
        finally:
            _finish(other)
        # A second open file description in this process is refused too.
        assert acquire_instance_lock(str(spool_dir)) is None
    finally:
        os.close(fd)

    other = _python(INSTANCE_LOCK_HOLDER, str(spool_dir))
    try:
        assert _first_line(other) == b"held"
        assert acquire_instance_lock(str(spool_dir)) is None
    finally:
        _finish(other)
    # The holder is gone, its lock with it; the file stays, the same file.
    assert os.stat(lock_file).st_ino == inode
    fd = acquire_instance_lock(str(spool_dir))
    assert fd is not None
    os.close(fd)
    assert os.stat(lock_file).st_ino == inode
    assert mode_of(lock_file) == 0o600


def test_the_instance_lock_refuses_a_symlink(spool_dir: Path, tmp_path: Path) -> None:
    (spool_dir / spool.LOCK_NAME).symlink_to(tmp_path / "target")
    with pytest.raises(SpoolError):
        acquire_instance_lock(str(spool_dir))
    assert not (tmp_path / "target").exists()


# ---------------------------------------------------------- check_spool_dir

def test_check_accepts_a_private_directory(spool_dir: Path) -> None:
    check_spool_dir(str(spool_dir))


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o500, 0o600, 0o300, 0o000])
def test_check_refuses_other_modes(spool_dir: Path, mode: int) -> None:
    spool_dir.chmod(mode)
    try:
        with pytest.raises(SpoolError, match=f"{mode:04o}"):
            check_spool_dir(str(spool_dir), create=True)
        assert mode_of(spool_dir) == mode  # refused, not "fixed"
    finally:
        spool_dir.chmod(0o700)


def test_check_refuses_a_file(tmp_path: Path) -> None:
    file = tmp_path / "spool"
    file.write_bytes(b"")
    file.chmod(0o700)
    with pytest.raises(SpoolError, match="not a directory"):
        check_spool_dir(str(file), create=True)


def test_check_refuses_someone_elses_directory(spool_dir: Path) -> None:
    require_root("chown the spool directory to nobody")
    nobody = pwd.getpwnam("nobody")
    os.chown(spool_dir, nobody.pw_uid, nobody.pw_gid)
    with pytest.raises(SpoolError, match="owned"):
        check_spool_dir(str(spool_dir), create=True)
    with pytest.raises(SpoolError):
        enqueue(str(spool_dir), [], io.BytesIO(b"x"))
    assert entries(spool_dir) == []


def test_check_creates_a_missing_directory_only_when_asked(tmp_path: Path) -> None:
    missing = tmp_path / "spool"
    with pytest.raises(SpoolError, match="does not exist"):
        check_spool_dir(str(missing))
    assert not missing.exists()
    os.umask(0o000)
    check_spool_dir(str(missing), create=True)
    assert missing.is_dir()
    assert mode_of(missing) == 0o700


def test_check_does_not_create_missing_parents(tmp_path: Path) -> None:
    deep = tmp_path / "no" / "such" / "spool"
    with pytest.raises(SpoolError, match="cannot create"):
        check_spool_dir(str(deep), create=True)
    assert not (tmp_path / "no").exists()


def test_stale_temporaries_are_removed_and_fresh_ones_and_messages_kept(tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    (spool_dir / "tmp").mkdir(mode=0o700)
    (spool_dir / "msgs").mkdir(mode=0o700)
    now = time.time()
    old = spool_dir / "tmp" / "old"
    fresh = spool_dir / "tmp" / "fresh"
    queued = spool_dir / "msgs" / "queued"
    for path in (old, fresh, queued):
        path.write_bytes(b"v1\n0\nx")
    ancient = now - spool.STALE_TEMPORARY_SECONDS - 60
    os.utime(old, (ancient, ancient))
    os.utime(queued, (ancient, ancient))
    removed = spool.remove_stale_temporaries(str(spool_dir), now)
    assert removed == [str(old)]
    assert not old.exists() and fresh.exists() and queued.exists()


def test_a_temporary_being_written_is_kept_however_old(tmp_path):
    # The writer's lock (durable.stage(lock=True), as enqueue takes it) is
    # held by another process here: a real writer, not this one, since
    # POSIX record locks are per process.
    spool_dir = tmp_path / "spool"
    spool.check_spool_dir(str(spool_dir), create=True)
    (spool_dir / "tmp").mkdir(mode=0o700)
    writing = spool_dir / "tmp" / ".tmp.writing"
    left = spool_dir / "tmp" / ".tmp.left"
    left.write_bytes(b"v1\n0\npartial")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys\n"
         f"fd = os.open({str(writing)!r}, os.O_WRONLY | os.O_CREAT, 0o600)\n"
         "os.lockf(fd, os.F_TLOCK, 0)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        long_ago = time.time() - spool.STALE_TEMPORARY_SECONDS - 60
        for path in (writing, left):
            os.utime(path, (long_ago, long_ago))
        assert durable.being_written(str(writing))
        assert not durable.being_written(str(left))
        removed = spool.remove_stale_temporaries(str(spool_dir), time.time())
        assert removed == [str(left)]
        assert writing.exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    # Its writer gone, the same file is litter.
    assert not durable.being_written(str(writing))
    assert spool.remove_stale_temporaries(str(spool_dir), time.time()) == [str(writing)]
