"""spool.py: the extsmail v1 spool, the only code that writes into spool_dir.

Layout (shared with the C extsmail, which must keep working on it):

    spool_dir/               mode 0700, refused otherwise
    spool_dir/msgs/          one file per queued message, mode 0600
    spool_dir/extsmaild.lock the instance lock (flock), one daemon per spool;
                             it holds the pid of a daemon that takes
                             SIGUSR1 (`extsmaild --wake`), else nothing
    spool_dir/tmp/           ours only: messages being written (the C
                             extsmaild reads msgs/ alone, so it never sees
                             a message that is not complete)
    spool_dir/failed/        ours only: messages that failed permanently
                             (`set_aside`), never retried until
                             `put_back` moves them back into msgs/

A message file is the v1 format, byte for byte what the C tools write:

    v1\\n<argc>\\n( <len>\\n<arg>\\n )* <message bytes, unchanged>

Contracts:
- `enqueue` makes a message appear in msgs/ only complete and durable
  (written in tmp/, fsynced, linked into msgs/, directory fsynced); it
  returns None, spooling nothing, for an empty message, and raises on any
  failure: it never returns without a durable message.
- A queued message is delivered by whoever holds its flock (LOCK_EX); the C
  extsmail holds that lock while it writes in place, so a locked or empty
  file is skipped, never touched.  `remove` unlinks a message only for the
  holder of its lock, and only after an external accepted it.
- A message moves between msgs/ and failed/ only by link and unlink under
  its lock, both directories fsynced: it is always in one of them (after
  a crash, possibly in both, which put_back and set_aside tolerate), never
  lost and never overwritten.

This module must stay cheap to import: extsmail imports it for every mail.
"""

import errno
import posix
import stat

from ..core import lockfile, paths
from ..core.durable import being_written, fsync_dir, write_durably
from ..core.errors import EX_CANTCREAT, DataError, IOFailure, RoammailError
from ..core.maildir import unique_name

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import BinaryIO, Iterator

VERSION_LINE = b"v1\n"
MSGS = "msgs"
TMP = "tmp"
FAILED = "failed"
LOCK_NAME = "extsmaild.lock"
CHUNK = 1 << 16
# A header longer than this is not a v1 spool file but garbage.  Linux
# passes at most 6 MiB of arguments (2 MiB under the usual 8 MiB stack
# limit), and a command line's header is shorter than the command line
# itself (argument, NUL and pointer versus argument, length and newline).
MAX_HEADER = 8 << 20


class SpoolError(RoammailError):
    """The spool directory cannot be used (missing, wrong mode, not ours)."""

    exit_code = EX_CANTCREAT  # the message cannot be queued


def encode_header(args: "list[bytes]") -> bytes:
    """The v1 header for `args`, exactly as the C extsmail writes it."""
    parts = [VERSION_LINE, b"%d\n" % len(args)]
    for arg in args:
        parts.append(b"%d\n%s\n" % (len(arg), arg))
    return b"".join(parts)


def check_spool_dir(spool_dir: str, create: bool = False) -> None:
    """Raise SpoolError unless spool_dir is a directory of ours with mode 0700.

    With `create`, a missing spool_dir (not its parents) is made, 0700, as
    the C extsmail does.
    """
    try:
        st = posix.stat(spool_dir)
    except FileNotFoundError:
        if not create:
            raise SpoolError(f"spool directory {spool_dir} does not exist") from None
        try:
            posix.mkdir(spool_dir, 0o700)
            fsync_dir(paths.dirname(paths.abspath(spool_dir)))
            st = posix.stat(spool_dir)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {spool_dir}: "
                             f"{exc.strerror}") from None
    except OSError as exc:
        raise SpoolError(f"spool directory {spool_dir}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise SpoolError(f"spool directory {spool_dir} is not a directory")
    if st.st_uid != posix.geteuid():
        raise SpoolError(f"spool directory {spool_dir} is not owned by uid {posix.geteuid()}")
    if stat.S_IMODE(st.st_mode) & 0o777 != 0o700:
        raise SpoolError(f"spool directory {spool_dir} must have mode 0700, "
                         f"not {stat.S_IMODE(st.st_mode):04o}")


def _subdir(spool_dir: str, name: str) -> str:
    path = paths.join(spool_dir, name)
    try:
        posix.mkdir(path, 0o700)
        fsync_dir(spool_dir)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SpoolError(f"cannot create {path}: {exc.strerror}") from None
    if not paths.isdir(path) or paths.islink(path):
        raise SpoolError(f"{path} is not a directory")
    return path


def _chunks(first: bytes, stream: "BinaryIO") -> "Iterator[bytes]":
    yield first
    while True:
        try:
            chunk = stream.read(CHUNK)
        except OSError as exc:
            raise IOFailure(f"cannot read the message: {exc.strerror}") from None
        if not chunk:
            return
        yield chunk


def enqueue(spool_dir: str, args: "list[bytes]", message: "BinaryIO") -> "str | None":
    """Queue `message` (read to EOF) with `args`; return the msgs/ path.

    Returns None, queueing nothing, when the message is empty.  Raises
    SpoolError or IOFailure on any failure, leaving nothing in msgs/.
    """
    check_spool_dir(spool_dir, create=True)
    try:
        first = message.read(CHUNK)
    except OSError as exc:
        raise IOFailure(f"cannot read the message: {exc.strerror}") from None
    if not first:
        return None
    msgs = _subdir(spool_dir, MSGS)
    tmp = _subdir(spool_dir, TMP)
    source = _chunks(encode_header(args) + first, message)
    try:
        return write_durably(msgs, unique_name(), source, tmp_dir=tmp, mode=0o600, lock=True)
    except FileExistsError:
        # The name holds the pid, a counter and randomness: a clash means
        # something else writes here.  Never overwrite a queued message.
        raise SpoolError(f"a message with the same name already exists in {msgs}") from None


# ------------------------------------------------------------------ reading


class QueuedMessage:
    """A message file opened and locked (LOCK_EX) for delivery.

    `args` are the stored sendmail arguments, `body_offset` where the
    message bytes start; `stream()` returns the file positioned there.
    Use as a context manager: leaving it releases the lock.
    """

    def __init__(self, path: str, fd: int, args: "list[bytes]", body_offset: int,
                 size: int, mtime: float) -> None:
        self.path = path
        self.name = paths.basename(path)
        self.fd = fd
        self.args = args
        self.body_offset = body_offset
        self.size = size
        self.mtime = mtime
        self._file: BinaryIO | None = None

    def stream(self) -> "BinaryIO":
        """The message bytes (without the v1 header), from the start."""
        if self._file is None:
            self._file = open(posix.dup(self.fd), "rb")
        self._file.seek(self.body_offset)
        return self._file

    def read_body(self, limit: int = -1) -> bytes:
        return self.stream().read(limit)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.fd >= 0:
            posix.close(self.fd)  # releases the flock
            self.fd = -1

    def __enter__(self) -> "QueuedMessage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_header(data: bytes, path: str) -> "tuple[list[bytes], int]":
    """Parse a v1 header from the start of `data`: (args, body offset).

    Raises DataError naming `path` when the header is not v1 or is cut.
    """
    def bad(why: str) -> "DataError":
        return DataError(f"corrupt spool file {path}: {why}")

    if not data.startswith(VERSION_LINE):
        raise bad("not a v1 spool file")
    pos = len(VERSION_LINE)

    def number(index: int) -> int:
        """The decimal number at pos: the argument count (index 0), else
        the length of argument `index`."""
        nonlocal pos
        end = data.find(b"\n", pos, pos + 21)
        digits = data[pos:end] if end >= 0 else b""
        if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
            raise bad(f"bad length of argument {index}" if index else "bad argument count")
        pos = end + 1
        return int(digits)

    argc = number(0)
    args = []
    for i in range(argc):
        length = number(i + 1)
        end = pos + length
        if end >= len(data):
            raise bad(f"argument {i + 1} is cut short")
        if data[end:end + 1] != b"\n":
            raise bad(f"argument {i + 1} does not end where its length says")
        args.append(data[pos:end])
        pos = end + 1
    return args, pos


def read_header(fd: int, size: int, path: str) -> "tuple[list[bytes], int]":
    """parse_header of the file `fd` (`size` bytes long), reading no more of
    it than the header needs: a little first, more only when it is cut."""
    want = min(size, CHUNK)
    while True:
        try:
            return parse_header(posix.pread(fd, want, 0), path)
        except DataError:
            if want >= min(size, MAX_HEADER):
                raise
            want = min(size, MAX_HEADER, want * 16)


def open_message(path: str) -> "QueuedMessage | None":
    """Open and lock a queued message for delivery.

    Returns None when the message is gone, locked by another process (a
    delivery or a C extsmail still writing it) or empty (created by the C
    extsmail, not yet locked).  Raises DataError for a corrupt file (the
    file is left in place, and unlocked).
    """
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot open spool file {path}: {exc.strerror}") from None
    try:
        try:
            import fcntl  # not for enqueue: only for the holders of messages

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                posix.close(fd)
                return None
            raise
        st = posix.fstat(fd)
        # Delivered and unlinked by another process between our open and
        # our lock: the name is gone or names another file now.
        try:
            now = posix.lstat(path)
        except FileNotFoundError:
            posix.close(fd)
            return None
        if (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev):
            posix.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"spool file {path} is not a regular file")
        if st.st_size == 0:
            posix.close(fd)
            return None
        args, offset = read_header(fd, st.st_size, path)
        return QueuedMessage(path, fd, args, offset, st.st_size, st.st_mtime)
    except BaseException:
        try:
            posix.close(fd)
        except OSError:
            pass
        raise


def list_messages(spool_dir: str) -> "list[str]":
    """Paths of the files in msgs/, oldest first (by mtime, then name)."""
    return _listing(paths.join(spool_dir, MSGS))


def _listing(msgs: str) -> "list[str]":
    entries = []
    try:
        with posix.scandir(msgs) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, entry.name))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SpoolError(f"cannot list {msgs}: {exc.strerror}") from None
    return [paths.join(msgs, name) for _, name in sorted(entries)]


def remove(message: "QueuedMessage") -> None:
    """Unlink a delivered message (its lock held).

    Not fsynced here: after a crash an unlinked message may come back and
    be sent twice, which the contract allows; the deliverer fsyncs msgs/
    once per cycle (`sync_removals`) instead of once per message.
    """
    try:
        posix.unlink(message.path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise IOFailure(f"cannot remove {message.path}: {exc.strerror}") from None


def _move(source: str, directory: str) -> str:
    """Link `source` into `directory` under its name, then unlink it; fsync
    `directory`, then the source's.  A file of that name already in
    `directory` is the same message, left there by a crash between the
    link and the unlink: kept, and the source unlinked."""
    target = paths.join(directory, paths.basename(source))
    try:
        posix.link(source, target)
    except FileExistsError:
        pass
    except OSError as exc:
        raise IOFailure(f"cannot move {source} to {directory}: {exc.strerror}") from None
    fsync_dir(directory)
    try:
        posix.unlink(source)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise IOFailure(f"cannot remove {source}: {exc.strerror}") from None
    fsync_dir(paths.dirname(source))
    return target


def set_aside(message: "QueuedMessage", spool_dir: str) -> str:
    """Move a message that failed permanently (its lock held) from msgs/
    to failed/, durably; return its new path.  Raises IOFailure or
    SpoolError."""
    return _move(message.path, _subdir(spool_dir, FAILED))


def list_failed(spool_dir: str) -> "list[str]":
    """Paths of the files in failed/, oldest first (by mtime, then name)."""
    return _listing(paths.join(spool_dir, FAILED))


def _on_failed(spool_dir: str, name: str, what: str, act):
    """act(path, fd) on failed/NAME, opened and locked (flock: --retry and
    --delete exclude each other), and its result; None when there is no
    such failed message (moved or removed by another process meanwhile).
    An OSError is IOFailure "cannot WHAT PATH: ..."."""
    path = paths.join(spool_dir, FAILED, name)
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IOFailure(f"cannot open {path}: {exc.strerror}") from None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            posix.lstat(path)
        except FileNotFoundError:
            return None  # gone while we waited for the lock
        return act(path, fd)
    except OSError as exc:
        raise IOFailure(f"cannot {what} {path}: {exc.strerror}") from None
    finally:
        posix.close(fd)


def delete_failed(spool_dir: str, name: str) -> bool:
    """Remove failed/NAME for good, durably; False when there is no such
    failed message.  Raises IOFailure."""
    def delete(path: str, fd: int) -> str:
        posix.unlink(path)
        fsync_dir(paths.dirname(path))
        return path

    return _on_failed(spool_dir, name, "delete", delete) is not None


def put_back(spool_dir: str, name: str, now: float) -> "str | None":
    """Move failed/NAME back into msgs/ to be delivered again, its queue
    time set to `now` (a queue lifetime starts again); return its msgs/
    path, or None when there is no such failed message.  Raises
    IOFailure or SpoolError."""
    def move(path: str, fd: int) -> str:
        posix.utime(fd, (now, now))
        return _move(path, _subdir(spool_dir, MSGS))

    return _on_failed(spool_dir, name, "put back", move)


def sync_removals(spool_dir: str) -> None:
    """Make the removals of a delivery cycle durable (best effort)."""
    try:
        fsync_dir(paths.join(spool_dir, MSGS))
    except RoammailError:
        pass  # at worst a delivered message is sent again


def acquire_instance_lock(spool_dir: str) -> "int | None":
    """Take spool_dir/extsmaild.lock; return its fd, or None when held.

    The fd must stay open for as long as the lock is wanted.  The file is
    never unlinked (unlinking a lock file lets two daemons hold "it").
    """
    try:
        return lockfile.hold(paths.join(spool_dir, LOCK_NAME))
    except lockfile.LockFileError as exc:
        raise SpoolError(str(exc)) from None


def record_daemon_pid(lock_fd: int, pid: "int | None") -> None:
    """Write `pid` (None: nothing) into the instance lock file, through the
    descriptor that holds the lock: whom `extsmaild --wake` signals."""
    try:
        posix.ftruncate(lock_fd, 0)
        if pid is not None:
            posix.pwrite(lock_fd, f"{pid}\n".encode(), 0)
    except OSError as exc:
        raise SpoolError(f"cannot write {LOCK_NAME}: {exc.strerror or exc}") from None


def daemon_pid(spool_dir: str) -> "tuple[bool, int | None]":
    """Whether the instance lock is held, and the pid of the daemon holding
    it (None when the holder recorded none: a batch run, the C extsmaild).

    A recorded pid counts only while that process has the lock file open,
    so a pid left by a daemon that died (and perhaps reused since) is never
    taken for a holder.  Where /proc cannot tell, the record is believed."""
    path = paths.join(spool_dir, LOCK_NAME)
    try:
        held = lockfile.is_held(path)
    except lockfile.LockFileError as exc:
        raise SpoolError(str(exc)) from None
    if not held:
        return False, None
    try:
        with open(path, "rb") as f:
            text = f.read(32).strip()
        lock = posix.stat(path)
    except OSError:
        return True, None
    if not text.isdigit():
        return True, None
    pid = int(text)
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = posix.listdir(fd_dir)
    except FileNotFoundError:
        return True, None  # gone
    except OSError:
        return True, pid  # not ours to look at
    for name in names:
        try:
            st = posix.stat(f"{fd_dir}/{name}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (lock.st_dev, lock.st_ino):
            return True, pid
    return True, None


# A temporary file nobody writes (no writer holds its lock) and untouched
# for this long is left over from a killed extsmail.  The lock, not the
# age, tells a file being written (however slowly its message arrives)
# from litter; the age only covers the instant between the writer closing
# the file and linking it into msgs/, and files of writers without locks.
STALE_TEMPORARY_SECONDS = 3600


def remove_stale_temporaries(spool_dir: str, now: float) -> "list[str]":
    """Remove the tmp/ files that are litter; return their paths.

    Litter: a regular file (or symlink) that no writer holds locked and
    that was not modified for STALE_TEMPORARY_SECONDS.  They are what a
    killed extsmail left behind; never a queued message (those live in
    msgs/ only), never a file being written.
    """
    tmp = paths.join(spool_dir, TMP)
    removed = []
    try:
        with posix.scandir(tmp) as it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode) or now - st.st_mtime < STALE_TEMPORARY_SECONDS:
                        continue
                    if stat.S_ISREG(st.st_mode) and being_written(entry.path):
                        continue
                    posix.unlink(entry.path)
                    removed.append(entry.path)
                except OSError:
                    continue
    except OSError:
        return removed
    return removed
