"""inotify.py: the inotify system calls, from whichever library is installed.

The tools declare inotify_simple (PyPI) as their dependency, and pip and
install.sh install it; Debian 12 has no package of it, so the .deb uses
pyinotify (python3-pyinotify) instead, and a small ctypes module of our
own would only duplicate what a packaged library already does.
`Inotify` offers the part of inotify_simple's INotify the tools use:
fileno()/fd, add_watch(path, mask) -> wd, rm_watch(wd), drain() and
close().  `flags` holds the event bits, which are the kernel's ABI.
Reading and parsing events stays with the caller (watch.raw_events).

Errors are OSError with the errno of the failed call (ENOSPC: out of
watches, EMFILE: out of instances, ENOENT, ENOTDIR...), whichever library
made it.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class flags:  # noqa: N801 - named as inotify_simple's, which callers knew
    """The inotify event and watch bits (linux/inotify.h)."""

    ACCESS = 0x00000001
    MODIFY = 0x00000002
    ATTRIB = 0x00000004
    CLOSE_WRITE = 0x00000008
    CLOSE_NOWRITE = 0x00000010
    OPEN = 0x00000020
    MOVED_FROM = 0x00000040
    MOVED_TO = 0x00000080
    CREATE = 0x00000100
    DELETE = 0x00000200
    DELETE_SELF = 0x00000400
    MOVE_SELF = 0x00000800
    UNMOUNT = 0x00002000
    Q_OVERFLOW = 0x00004000
    IGNORED = 0x00008000
    ONLYDIR = 0x01000000
    DONT_FOLLOW = 0x02000000
    EXCL_UNLINK = 0x04000000
    MASK_ADD = 0x20000000
    ISDIR = 0x40000000
    ONESHOT = 0x80000000


def backend() -> str:
    """"inotify_simple" or "pyinotify": which library this machine has."""
    try:
        import inotify_simple  # noqa: F401
        return "inotify_simple"
    except ImportError:
        return "pyinotify"


class Inotify:
    """One inotify instance (close-on-exec; non-blocking if asked)."""

    def __init__(self, nonblocking: bool = False, *, use: str | None = None) -> None:
        self._simple: Any = None
        self._calls: Any = None  # pyinotify's inotify calls, where it is the backend
        if (use or backend()) == "inotify_simple":
            from inotify_simple import INotify

            self._simple = INotify(nonblocking=nonblocking)
            self.fd = self._simple.fileno()
            return
        try:
            import pyinotify
        except ImportError:
            raise OSError(errno.ENOSYS, "neither inotify_simple nor pyinotify is "
                                        "installed") from None
        self._calls = pyinotify.INotifyWrapper.create()
        if self._calls is None:
            raise OSError(errno.ENOSYS, "pyinotify finds no inotify in this C library")
        fd = self._calls.inotify_init()
        if fd < 0:
            raise self._error()
        os.set_inheritable(fd, False)
        if nonblocking:
            os.set_blocking(fd, False)
        self.fd = fd

    def _error(self) -> OSError:
        number = self._calls.get_errno() or errno.EIO
        return OSError(number, os.strerror(number))

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str | bytes, mask: int) -> int:
        if self._simple is not None:
            return self._simple.add_watch(path, mask)
        name = os.fsdecode(path)
        try:
            wd = self._calls.inotify_add_watch(self.fd, name, mask)
        except UnicodeEncodeError:  # pyinotify encodes names strictly
            raise OSError(errno.EINVAL, f"pyinotify cannot pass the name {name!r}") from None
        if wd < 0:
            raise self._error()
        return wd

    def rm_watch(self, wd: int) -> None:
        if self._simple is not None:
            self._simple.rm_watch(wd)
            return
        if self._calls.inotify_rm_watch(self.fd, wd) < 0:
            raise self._error()

    def drain(self) -> None:
        """Throw away the events waiting to be read (a non-blocking instance
        only: a blocking one would wait for the next)."""
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        if self._simple is not None:
            self._simple.close()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
