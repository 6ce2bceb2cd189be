"""durable.py: the only way the tools write a file that must survive a crash.

Every spool file, delivered message and state file is written here, and
nowhere else: write a temporary file (O_EXCL, O_NOFOLLOW), write all of it,
fsync it, move it into place, fsync the directory.  A crash (kill -9, power
loss) at any moment leaves either the old state or the whole new file under
its final name, never a partial one; a temporary file may be left behind.

`write_durably` does it all for one file.  For many files at once (a
syncmail batch) the same steps come apart: `Batch.stage` writes each as an
unnamed file (O_TMPFILE, where the system can: nothing is left behind by a
crash) or under its temporary name, `Batch.sync` makes them all durable
(one syncfs(2) per file system where that is as good as an fsync(2) of
each, see Batch), `publish` gives each its name, and the caller fsyncs the
directories.  `publish` refuses a file that is not durable yet.

Contracts:
- `write_durably` never replaces an existing file unless `overwrite=True`
  (it moves with link(2), which fails on an existing name, symlinks
  included); an existing destination is reported as FileExistsError,
  unchanged, so the caller decides.
- Every other failure removes the temporary file and raises IOFailure with
  one line naming the operation and the path ("cannot write /x/y: No space
  left on device").  An error raised by the source while it is read becomes
  IOFailure too, except a RoammailError, which keeps its type and message.
- If it fails after the file reached its final name (the directory fsync),
  the file there is complete; only its durability is unknown.
- It must stay cheap to import (extsmail, run for every mail, imports it):
  the standard library's os and errno only (typing is for type checkers;
  ctypes and resource are imported by the first Batch that needs them).
"""

import errno
import posix

from . import paths
from .errors import DataError, IOFailure, RoammailError

# typing costs ~8 ms to import (it imports re): only type checkers read it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Iterable, Union

    Source = Union[bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]]

# How much of a file-like source is read at once: big enough for few system
# calls, small enough not to matter for memory.
READ_CHUNK_BYTES = 256 * 1024

# Attempts at a fresh temporary name before giving up; a collision needs a
# leftover with the same 64 random bits, so a second attempt always suffices
# in practice.
TEMP_NAME_ATTEMPTS = 8

# At most this many characters of the final name go into the temporary
# name (to recognise it by eye) so that it stays under NAME_MAX (255 bytes).
TEMP_NAME_HINT_CHARS = 40

_OPEN_FLAGS = (posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL
               | getattr(posix, "O_CLOEXEC", 0) | getattr(posix, "O_NOFOLLOW", 0))
_DIR_FLAGS = posix.O_RDONLY | getattr(posix, "O_DIRECTORY", 0) | getattr(posix, "O_CLOEXEC", 0)

# fsync(2) on a directory fails with these where the file system cannot do
# it (some FUSE and network file systems): nothing more can be done there.
_FSYNC_DIR_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


def _reason(exc: "BaseException") -> str:
    """The one-line reason of an exception, as strerror(3) says it."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, OSError):
            text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())


def _failure(what: str, path: str, exc: "BaseException") -> "IOFailure":
    return IOFailure(f"cannot {what} {path}: {_reason(exc)}")


def fsync_dir(path: str) -> None:
    """fsync the directory `path`, making the names created or removed in it
    durable.  Raises IOFailure ("cannot fsync directory PATH: ...")."""
    try:
        fd = posix.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise _failure("open directory", path, exc) from exc
    try:
        posix.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_UNSUPPORTED:
            raise _failure("fsync directory", path, exc) from exc
    finally:
        posix.close(fd)


def _random_token() -> str:
    return posix.urandom(8).hex()


def _temp_name(prefix: str, name: str) -> str:
    return f"{prefix}{name[:TEMP_NAME_HINT_CHARS]}.{posix.getpid()}.{_random_token()}"


def _create_temp(directory: str, prefix: str, name: str, mode: int) -> "tuple[str, int]":
    """Create a fresh temporary file in `directory`; return (path, fd)."""
    for _ in range(TEMP_NAME_ATTEMPTS):
        path = paths.join(directory, _temp_name(prefix, name))
        try:
            return path, posix.open(path, _OPEN_FLAGS, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _failure("create", path, exc) from exc
    raise IOFailure(f"cannot create a temporary file in {directory}: "
                    f"{TEMP_NAME_ATTEMPTS} names in a row exist already")


def _write_all(fd: int, data: "bytes | bytearray | memoryview") -> None:
    """Write all of `data`, looping on short writes."""
    view = memoryview(data).cast("B")
    while view:
        written = posix.write(fd, view)
        if written <= 0:  # write(2) returns 0 only for a 0-byte request
            raise OSError(errno.EIO, posix.strerror(errno.EIO))
        view = view[written:]


class _SourceError(Exception):
    """The source failed while it was read: `__cause__` says how."""


def _copy_source(fd: int, source: "Source") -> None:
    """Write every byte of `source` to `fd`.  An exception raised by the
    source itself is wrapped in _SourceError; OSError from writing is not."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        _write_all(fd, source)
        return
    read = getattr(source, "read", None)
    try:
        if read is not None:
            chunks: Iterable[bytes] = iter(lambda: read(READ_CHUNK_BYTES), b"")
        else:
            chunks = iter(source)
    except Exception as exc:
        raise _SourceError() from exc
    while True:
        try:
            chunk = next(chunks)  # type: ignore[call-overload]
            if not isinstance(chunk, (bytes, bytearray, memoryview)):
                raise TypeError(f"the source gave {type(chunk).__name__}, not bytes")
        except StopIteration:
            return
        except RoammailError:
            raise
        except Exception as exc:
            raise _SourceError() from exc
        _write_all(fd, chunk)


def _remove_quietly(path: str) -> None:
    try:
        posix.unlink(path)
    except OSError:
        pass


class Staged:
    """A complete file not yet under its own name: what `stage` returns
    and `publish` (or `abandon`) consumes.  It has a temporary name
    (`temp`), or none at all (`fd`, an unnamed file: O_TMPFILE)."""

    __slots__ = ("temp", "final", "synced", "fd")

    def __init__(self, temp: "str | None", final: str, synced: bool,
                 fd: "int | None" = None) -> None:
        self.temp = temp      # the temporary file, complete; None: unnamed
        self.final = final    # the name publish() gives it
        self.synced = synced  # fsynced already (else a Batch syncs it)
        self.fd = fd          # an unnamed file's open descriptor


# Unnamed files (O_TMPFILE, Linux): nothing in tmp/ to remove afterwards,
# nothing left there when the process is killed.  publish() links them in
# through /proc/self/fd.
_O_TMPFILE = getattr(posix, "O_TMPFILE", 0)
_UNNAMED_FLAGS = posix.O_RDWR | _O_TMPFILE | getattr(posix, "O_CLOEXEC", 0)
# open(2) says so where a kernel or file system cannot make unnamed files.
_NO_UNNAMED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL)
_no_unnamed: "set[str]" = set()  # directories where O_TMPFILE was refused
_proc_fds: "int | None" = None  # /proc/self/fd, opened once; -1: not there
# Unnamed files open now (set.add and set.discard are atomic, so threads
# may publish while another stages), and how many may be: the limit of
# open files less a reserve, so that named files can still be opened.
_unnamed_fds: "set[int]" = set()
_unnamed_budget: "int | None" = None
UNNAMED_RESERVE = 64  # descriptors left for everything else, at least


def _budget() -> int:
    global _unnamed_budget
    if _unnamed_budget is None:
        import resource  # only batches need it: extsmail never pays for it

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        _unnamed_budget = max(0, soft - max(UNNAMED_RESERVE, soft // 4))
    return _unnamed_budget


def _proc_fd_dir() -> "int | None":
    global _proc_fds
    if _proc_fds is None:
        try:
            _proc_fds = posix.open("/proc/self/fd", _DIR_FLAGS)
        except OSError:
            _proc_fds = -1
    return None if _proc_fds < 0 else _proc_fds


def _open_unnamed(directory: str, mode: int) -> "int | None":
    """A new unnamed file in `directory`, or None where there cannot be
    one (then a named temporary file does)."""
    if (not _O_TMPFILE or directory in _no_unnamed or _proc_fd_dir() is None
            or len(_unnamed_fds) >= _budget()):
        return None
    try:
        fd = posix.open(directory, _UNNAMED_FLAGS, mode)
    except OSError as exc:
        if exc.errno in _NO_UNNAMED:
            _no_unnamed.add(directory)
        return None  # EMFILE and the like: this once, a named file
    _unnamed_fds.add(fd)
    return fd


def _close_unnamed(fd: int) -> None:
    _unnamed_fds.discard(fd)
    posix.close(fd)


def _check_names(name: str, source: object, tmp_prefix: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise DataError(f"not a plain file name: {name!r}")
    if isinstance(source, str):
        raise TypeError("write_durably writes bytes, not str")
    if "/" in tmp_prefix or "\0" in tmp_prefix:
        raise ValueError(f"tmp_prefix must not contain '/' or NUL: {tmp_prefix!r}")


def stage(directory: str, name: str, source: "Source", *,
          tmp_dir: "str | None" = None, tmp_prefix: str = ".tmp.",
          mode: int = 0o600, mtime: "float | None" = None, sync: bool = True,
          unnamed: bool = False, lock: bool = False) -> "Staged":
    """Write all of `source` to a fresh temporary file for `directory`/`name`.

    The file is made in `tmp_dir` (same file system as `directory`) or
    else in `directory`: unnamed if `unnamed` and the system can (it then
    stays open until publish() or abandon()), else named `tmp_prefix`...;
    created with `mode` (less the umask), written fully, given `mtime` if
    set, and fsynced if `sync`; without `sync` a Batch must make it durable
    before publish().  With `lock`, a named temporary file carries a POSIX
    record lock (lockf) for as long as it is being written: `being_written`
    tells a cleaner of `tmp_dir` to leave it alone, and a killed writer's
    lock goes with it.  Raises as write_durably does, after removing the
    temporary file.
    """
    _check_names(name, source, tmp_prefix)
    final = paths.join(directory, name)
    temp_dir = directory if tmp_dir is None else tmp_dir
    fd = _open_unnamed(temp_dir, mode) if unnamed else None
    if fd is None:
        temp, fd = _create_temp(temp_dir, tmp_prefix, name, mode)
        if lock:
            try:
                posix.lockf(fd, posix.F_TLOCK, 0)
            except OSError:
                pass  # no locks here (ENOLCK): the cleaner's age rule still holds
    else:
        temp = None
    closed = False
    try:
        try:
            _copy_source(fd, source)
            if mtime is not None:
                posix.utime(fd, (mtime, mtime))
            if sync:
                posix.fsync(fd)
        finally:
            if temp is not None:
                closed = True
                posix.close(fd)  # close(2) can report a delayed write error (NFS)
    except BaseException as exc:
        if temp is None:
            _close_unnamed(fd)
        elif not closed:
            posix.close(fd)
        if temp is not None:
            _remove_quietly(temp)
        if isinstance(exc, _SourceError):
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise IOFailure(f"cannot write {final}: reading the data failed: "
                            f"{_reason(cause)}") from cause
        if isinstance(exc, OSError):
            raise _failure("write", final, exc) from exc
        raise
    return Staged(temp, final, sync, fd if temp is None else None)


def being_written(path: str) -> bool:
    """True when a writer holds the lock of stage(lock=True) on `path`.

    False for a file nobody locks (its writer finished or was killed), or
    that is gone.
    """
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK
                        | posix.O_CLOEXEC)
    except OSError:
        return False
    try:
        posix.lockf(fd, posix.F_TEST, 0)
        return False
    except OSError as exc:
        return exc.errno in (errno.EACCES, errno.EAGAIN)
    finally:
        posix.close(fd)


def reopen(staged: "Staged"):
    """A binary file object reading the staged file from its start."""
    if staged.fd is not None:
        return open(posix.open(str(staged.fd), posix.O_RDONLY | getattr(posix, "O_CLOEXEC", 0),
                                 dir_fd=_proc_fd_dir()), "rb")
    assert staged.temp is not None  # named: a Staged has a name or a descriptor
    return open(staged.temp, "rb")  # noqa: SIM115 - the caller closes it


def publish(staged: "Staged", *, overwrite: bool = False) -> str:
    """Give the staged file its final name; return that path.

    link(2), which never replaces anything (FileExistsError, unchanged, if
    the name exists), or rename(2) if `overwrite`.  The temporary name is
    removed either way.  The directory is not fsynced: that is the
    caller's (fsync_dir), before relying on the name.  The file must be
    durable first (stage(sync=True), or Batch.sync()).
    """
    if not staged.synced:
        raise ValueError(f"{staged.final} is not durable yet: Batch.sync() first")
    if staged.fd is not None:
        return _link_unnamed(staged, overwrite)
    temp, final = staged.temp, staged.final
    assert temp is not None  # named: a Staged has a name or a descriptor
    try:
        if overwrite:
            posix.rename(temp, final)
        else:
            posix.link(temp, final)
    except FileExistsError:
        _remove_quietly(temp)
        raise
    except OSError as exc:
        _remove_quietly(temp)
        raise _failure("rename" if overwrite else "link", f"{temp} to {final}", exc) from exc
    except BaseException:
        _remove_quietly(temp)
        raise
    if not overwrite:
        # The data is safe under its final name now; a temporary link that
        # cannot be removed is only litter, not a reason to report failure.
        _remove_quietly(temp)
    return final


def _link_unnamed(staged: "Staged", overwrite: bool) -> str:
    """publish() of an unnamed file: linkat(2) through /proc/self/fd."""
    if overwrite:
        raise ValueError("an unnamed file cannot replace another")
    fd, final = staged.fd, staged.final
    staged.fd = None
    try:
        posix.link(str(fd), final, src_dir_fd=_proc_fd_dir(), follow_symlinks=True)
    except FileExistsError:
        raise
    except OSError as exc:
        raise _failure("link", f"a new file to {final}", exc) from exc
    finally:
        _close_unnamed(fd)  # type: ignore[arg-type]
    return final


def abandon(staged: "Staged") -> None:
    """Remove a staged file that will not be published; never raises."""
    if staged.fd is not None:
        fd, staged.fd = staged.fd, None
        try:
            _close_unnamed(fd)  # an unnamed file is gone with its last descriptor
        except OSError:
            pass
    elif staged.temp is not None:
        _remove_quietly(staged.temp)


# ------------------------------------------------------------ batches
#
# A batch of files is made durable with one syncfs(2) per file system
# instead of one fsync(2) per file: on a journalling file system each fsync
# is a journal commit and a cache flush, syncfs is one for all.  That is
# only done where syncfs is known to write and wait for every dirty file
# and its metadata, as an fsync of each would, and to report write-back
# errors (Linux >= 5.8).  FUSE's syncfs, for one, may do nothing at all:
# everywhere else each file is fsynced as it is staged.

SYNCFS_FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})
SYNCFS_MIN_LINUX = (5, 8)  # syncfs(2) returns write-back errors since 5.8

_syncfs_function: object = None  # libc's syncfs, once looked up; False: none


def linux_version(release: str) -> "tuple[int, int] | None":
    """(major, minor) of a Linux release string such as "6.1.0-18-amd64"."""
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1].split("-")[0] if c.isdigit()))
    except (IndexError, ValueError):
        return None


def syncfs_suffices(fs_type: "str | None", system: str, release: str,
                    trusted: "frozenset" = SYNCFS_FILE_SYSTEMS) -> bool:
    """True if one syncfs(2) makes every staged file on a file system of
    `fs_type` as durable as an fsync(2) of each would, with errors
    reported, on this `system` (posix.uname().sysname) and `release`."""
    if system != "Linux" or fs_type not in trusted:
        return False
    version = linux_version(release)
    return version is not None and version >= SYNCFS_MIN_LINUX


def file_system_type(path: str) -> "str | None":
    """The type (ext4, xfs, fuse.sshfs...) of the mounted file system
    holding `path`, from /proc/self/mountinfo; None if unknown."""
    try:
        dev = posix.stat(path).st_dev
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return None
    want = f"{posix.major(dev)}:{posix.minor(dev)}".encode()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4 and fields[2] == want and b"-" in fields[6:]:
            rest = fields[fields.index(b"-", 6) + 1:]
            return paths.fsdecode(rest[0]) if rest else None
    return None


def _libc_syncfs():
    global _syncfs_function
    if _syncfs_function is None:
        try:
            import ctypes  # only batches need it: extsmail never pays for it

            _syncfs_function = ctypes.CDLL(None, use_errno=True).syncfs
        except (OSError, AttributeError):
            _syncfs_function = False
    return _syncfs_function or None


def syncfs(directory: str) -> None:
    """syncfs(2) the file system holding `directory`.  Raises IOFailure."""
    import ctypes

    function = _libc_syncfs()
    if function is None:
        raise IOFailure(f"cannot sync the file system of {directory}: no syncfs(2)")
    try:
        fd = posix.open(directory, _DIR_FLAGS)
    except OSError as exc:
        raise _failure("open directory", directory, exc) from exc
    try:
        if function(fd) != 0:
            number = ctypes.get_errno()
            raise IOFailure(f"cannot sync the file system of {directory}: "
                            f"{posix.strerror(number)}")
    finally:
        posix.close(fd)


class Batch:
    """Files staged together and made durable together.

    `stage()` writes each file, unnamed where the system can (each then
    holds a file descriptor until it is published), else under a
    temporary name; `sync()` makes all of them durable; then the caller
    `publish()`es each and fsyncs the directories (fsync_dir) before
    relying on the names.  On a file system
    where syncfs_suffices(), sync() is one syncfs(2) per file system; on
    any other, stage() fsyncs each file and sync() has nothing left to do.
    `trusted`: the file system types syncfs is used on.
    """

    def __init__(self, trusted: "frozenset" = SYNCFS_FILE_SYSTEMS) -> None:
        self.trusted = trusted
        self._device_of: dict[str, int | None] = {}  # temp dir -> st_dev to syncfs, or None
        self._waiting: dict[int, str] = {}  # st_dev -> a directory on it
        self._unsynced: list[Staged] = []

    def _syncfs_device(self, directory: str) -> "int | None":
        if directory not in self._device_of:
            uname = posix.uname()
            device = None
            if (syncfs_suffices(file_system_type(directory), uname.sysname, uname.release,
                                self.trusted) and _libc_syncfs() is not None):
                try:
                    device = posix.stat(directory).st_dev
                except OSError:
                    device = None
            self._device_of[directory] = device
        return self._device_of[directory]

    def stage(self, directory: str, name: str, source: "Source", *,
              tmp_dir: "str | None" = None, **options) -> "Staged":
        """durable.stage(), fsynced now only where sync() cannot do it."""
        where = directory if tmp_dir is None else tmp_dir
        device = self._syncfs_device(where)
        staged = stage(directory, name, source, tmp_dir=tmp_dir, sync=device is None,
                       unnamed=True, **options)
        if device is not None:
            self._waiting.setdefault(device, where)
            self._unsynced.append(staged)
        return staged

    def sync(self) -> None:
        """Make every file staged so far durable.  Raises IOFailure."""
        for directory in self._waiting.values():
            syncfs(directory)
        self._waiting.clear()
        for staged in self._unsynced:
            staged.synced = True
        self._unsynced.clear()


def write_durably(directory: str, name: str, source: "Source", *,
                  tmp_dir: "str | None" = None, tmp_prefix: str = ".tmp.",
                  mode: int = 0o600, mtime: "float | None" = None,
                  overwrite: bool = False, sync_directory: bool = True,
                  lock: bool = False) -> str:
    """Write `source` durably to `directory`/`name`; return that path.

    `source` is bytes, a binary file object (read to its end) or an iterable
    of bytes chunks.  The data goes first to a temporary file named
    `tmp_prefix`... in `tmp_dir` (which must be on the same file system as
    `directory`, e.g. a maildir's tmp/) or else in `directory`; the file is
    created with `mode` (less the umask, as open(2) does), written fully,
    given `mtime` if set, fsynced, then linked into place (renamed if
    `overwrite`); the directory is fsynced last.

    Raises FileExistsError, unchanged, if the destination exists and not
    `overwrite`; DataError for a `name` that is not a plain file name;
    IOFailure (one line) for every other failure, after removing the
    temporary file.  A RoammailError raised by the source passes through
    unchanged, also after removing the temporary file.

    `lock`: see stage().

    With sync_directory=False the final fsync of `directory` is left to
    the caller, who batches it (fsync_dir) and must do it before relying
    on the name.
    """
    final = publish(stage(directory, name, source, tmp_dir=tmp_dir, tmp_prefix=tmp_prefix,
                          mode=mode, mtime=mtime, sync=True, lock=lock), overwrite=overwrite)
    # The temporary directory is not fsynced: after a crash the temporary
    # name may come back, as litter beside a complete file, which the
    # owners of tmp/ directories clean up (maildir's 36-hour rule).
    if sync_directory:
        fsync_dir(directory)
    return final


def write_file_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace the small file `path` with `data` atomically and durably.

    For state files: readers see the old or the new content, never a mix,
    and after a crash one of the two is there.  The temporary file lives
    beside `path` (`.tmp.` prefix).  Raises IOFailure (one line).
    """
    directory, name = paths.split(path)
    write_durably(directory or ".", name, data, mode=mode, overwrite=True)


def replace_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Replace the small file `path` with `data` atomically, not durably.

    For notes about other data (a message's delivery state, a tool's health
    record), never the data itself: readers see the old or the new content,
    never a mix, and a killed process leaves one of the two; only a crash
    of the whole machine may bring back an older one.  No fsync: a note
    written per message must not cost a disk flush each.  The temporary
    file lives beside `path` (`.tmp.` prefix).  Raises IOFailure (one line).
    """
    directory, name = paths.split(path)
    temp = paths.join(directory or ".", f".tmp.{name}.{posix.getpid()}")
    try:
        fd = posix.open(temp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC
                        | posix.O_NOFOLLOW, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[posix.write(fd, view):]
        finally:
            posix.close(fd)
        posix.rename(temp, path)
    except OSError as exc:
        try:
            posix.unlink(temp)
        except OSError:
            pass
        raise IOFailure(f"cannot write {path}: {exc.strerror or exc}") from None
