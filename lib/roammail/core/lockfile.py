"""lockfile.py: the one way the tools take a lock file.

Every lock file of the tools (extsmaild's instance lock of a spool,
mswatch's of a pid file, syncmail's of a source, smtpdcheck's of its cache)
follows one policy:

- The file is opened with O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode
  0600: made if missing, never through a symbolic link (that is an
  error), never left open in a program we run.
- The lock is flock(LOCK_EX | LOCK_NB) on that open file: `hold` returns
  the descriptor, which holds the lock until it is closed (`release`), or
  None at once when another open file holds it (another process, or
  another `hold` of ours: flock locks belong to open files, not to
  processes).  With `wait`, it tries again every `poll` seconds for that
  long before it answers None.
- The file is never unlinked, by this module or by its callers, and
  stays when the lock is released.  A lock file that is removed lets two
  holders hold "it": one still holds the old file when the other creates
  and locks a new one under the same name (the C extsmail takes
  extsmaild.lock the same way, so this is also what keeps the two
  compatible).  The one exception, syncmail's one-shot lock, is removed
  by its holder and re-checked by whoever takes it (syncmail/cli.py).
- What the file holds is not the lock's business: a caller may keep data
  of its own in it, through the descriptor it got.

Errors are `LockFileError` (an OSError): "cannot open PATH: reason" or
"cannot lock PATH: reason"; a lock held elsewhere is not an error.

It must stay cheap to import, for extsmail's path (spool imports it):
posix and errno only; fcntl, and time for `wait`, are imported when a
lock is taken.
"""

import errno
import posix

OPEN_FLAGS = posix.O_RDWR | posix.O_CREAT | posix.O_CLOEXEC | posix.O_NOFOLLOW
MODE = 0o600
POLL = 0.05  # seconds between two tries while waiting for a lock held elsewhere
_HELD_ERRNOS = (errno.EWOULDBLOCK, errno.EAGAIN)


class LockFileError(OSError):
    """A lock file could not be opened or locked; `action` says which."""

    def __init__(self, action: str, path: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), path)
        self.action = action  # "open" or "lock"
        self.path = path

    def __str__(self) -> str:
        return f"cannot {self.action} {self.path}: {self.strerror}"


def hold(path: str, wait: float = 0.0, poll: float = POLL) -> "int | None":
    """Open (making it if missing) and lock the lock file `path`.

    Returns the descriptor that holds the lock, or None when another open
    file holds it, after trying for `wait` seconds.  Raises LockFileError
    when the file cannot be opened or locked.
    """
    try:
        fd = posix.open(path, OPEN_FLAGS, MODE)
    except OSError as exc:
        raise LockFileError("open", path, exc) from None
    try:
        if _try_lock(fd, path):
            return fd
        if wait > 0:
            import time

            give_up = time.monotonic() + wait
            while time.monotonic() < give_up:
                time.sleep(min(poll, max(0.0, give_up - time.monotonic())))
                if _try_lock(fd, path):
                    return fd
    except BaseException:
        posix.close(fd)
        raise
    posix.close(fd)
    return None


def _try_lock(fd: int, path: str) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _HELD_ERRNOS:
            return False
        raise LockFileError("lock", path, exc) from None
    return True


def release(fd: int) -> None:
    """Release a lock taken by `hold`: close its descriptor.  The file stays."""
    posix.close(fd)


def is_held(path: str) -> "bool | None":
    """Whether another open file holds the lock of `path` now; None when
    there is no such file.  It neither makes nor keeps the file: a
    reader's question (mswatch --sync-now), not a lock taken."""
    import fcntl

    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockFileError("open", path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _HELD_ERRNOS:
            return True
        raise LockFileError("lock", path, exc) from None
    finally:
        posix.close(fd)
    return False
