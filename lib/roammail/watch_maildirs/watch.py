"""watch_maildirs/watch.py: inotify on maildirs: which Maildir++ folder changed, and when.

It owns every inotify watch put on a maildir (through inotify.py): the
mapping from an event to the folder it concerns ("INBOX" for the base,
"foo.bar" for base/.foo.bar), the following of folders created, removed and
renamed while it runs, the detection of a base maildir that moved away, queue
overflow (a full rescan, then every folder reported) and the coalescing of
bursts (`Coalescer`).  `stream_changes` speaks the watcher protocol of
mswatch on a file descriptor it is handed: one empty line once the watches
are in place, then one folder name per line.

It never writes into a maildir, never reads a message, and prints nothing
but the protocol lines on the descriptor it is given.  It raises the typed
errors below (exit 1: cannot watch; exit 2: a structure change it will not
follow); it never exits itself.

What is watched, per folder (the base is INBOX):
  - new/ and cur/: a message arriving (rename or link), leaving, renamed
    (flags) or written in place.  tmp/ is not: a delivery ends with a rename
    into new/.
  - the folder directory itself: cur/, new/ and tmp/ appearing or going, so
    that a folder made in two steps (mbsync, maildrop: the directory first,
    its subdirectories a moment later) is still followed: watches are added
    first, the folder is looked at afterwards, so nothing falls in between.
  - the base: entries .NAME appearing, going or renamed (folders), and its
    own rename or removal (exit 2).
  - each directory on the path to the base (the path as given, symlinks not
    followed): its own rename or removal (exit 2), as the base's paths are
    meaningless afterwards.
Symlinked folders are watched through the link.  One directory reachable
through two folders (a symlink to another folder) is one inotify watch
shared by both: a change in it reports both names.
"""

from __future__ import annotations

import errno
import math
import os
import select
import stat
import struct
import time

from ..core.cli import output_error
from ..core.errors import DataError, RoammailError
from ..core.inotify import Inotify, flags
from ..core.maildir import INBOX, is_maildir, path_to_folder
from ..core.watchproto import (
    COALESCE_WINDOW,
    READY_LINE,
    Coalescer,
    closed_revents,
    protocol_lines,
    write_all,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable

# Exit codes of watch_maildirs, as the original defines them.
EXIT_ERROR = 1
EXIT_STRUCTURE = 2

# The sysctl that bounds the watches of one user, named in the error.
MAX_USER_WATCHES = "fs.inotify.max_user_watches"
MAX_USER_WATCHES_PATH = "/proc/sys/fs/inotify/max_user_watches"
MAX_USER_INSTANCES = "fs.inotify.max_user_instances"

IN_CREATE = int(flags.CREATE)
IN_DELETE = int(flags.DELETE)
IN_MOVED_FROM = int(flags.MOVED_FROM)
IN_MOVED_TO = int(flags.MOVED_TO)
IN_CLOSE_WRITE = int(flags.CLOSE_WRITE)
IN_MOVE_SELF = int(flags.MOVE_SELF)
IN_DELETE_SELF = int(flags.DELETE_SELF)
IN_UNMOUNT = int(flags.UNMOUNT)
IN_Q_OVERFLOW = int(flags.Q_OVERFLOW)
IN_IGNORED = int(flags.IGNORED)
IN_ONLYDIR = int(flags.ONLYDIR)
IN_DONT_FOLLOW = int(flags.DONT_FOLLOW)
IN_MASK_ADD = int(flags.MASK_ADD)

# new/ and cur/: anything that changes the set of messages, their names
# (flags) or their contents.
MESSAGE_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE
# The base and each folder directory: entries appearing and going.
ENTRY_EVENTS = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
# A watched directory itself renamed, removed, or its file system unmounted.
GONE_EVENTS = IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT

# One read(2) of the inotify descriptor: some 2,000 events; more are read
# on the next turn of the loop.
READ_BYTES = 65536

MESSAGE_SUBDIRS = ("new", "cur")
MAILDIR_SUBDIRS = ("cur", "new", "tmp")

# The kinds of watch (a role is (kind, folder name or path)).
BASE = "base"        # the base maildir directory (INBOX's directory)
ANCHOR = "anchor"    # the base or one of its parents, as named: (ANCHOR, path)
FOLDER = "folder"    # a folder's directory, base/.NAME
MESSAGES = "messages"  # a folder's new/ or cur/


class WatchError(RoammailError):
    """The maildir cannot be watched (exit 1)."""

    exit_code = EXIT_ERROR


class WatchLimitError(WatchError):
    """inotify_add_watch failed with ENOSPC: the user's watches are used up."""


class StructureChange(RoammailError):
    """A change the watcher does not follow: the base maildir (or a parent)
    moved or removed, or, with exit_on_new_folder, a folder created, removed
    or renamed (exit 2)."""

    exit_code = EXIT_STRUCTURE


_EVENT_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len


def raw_events(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Split what read(2) gave from an inotify descriptor into (wd, mask,
    cookie, name) tuples, the name as NUL-padded bytes: decoding waits
    until a name matters (the common event, in new/ or cur/, needs none)."""
    events = []
    unpack = _EVENT_HEADER.unpack_from
    header = _EVENT_HEADER.size
    pos, end = 0, len(data)
    while pos < end:
        wd, mask, cookie, size = unpack(data, pos)
        pos += header
        events.append((wd, mask, cookie, data[pos:pos + size]))
        pos += size
    return events


def _text(name: str | bytes) -> str:
    if isinstance(name, bytes):
        return os.fsdecode(name.split(b"\0", 1)[0])
    return name


class _FolderState:
    """What is known of one folder: its watches and whether it is a maildir."""

    __slots__ = ("dir_wd", "subs", "maildir")

    def __init__(self) -> None:
        self.dir_wd: int | None = None
        self.subs: dict[str, int | None] = {}
        self.maildir = False


def _limit_message(path: str, placed: int) -> str:
    try:
        with open(MAX_USER_WATCHES_PATH, encoding="ascii") as f:
            now = f" (now {f.read().strip()})"
    except OSError:
        now = ""
    return (f"out of inotify watches at {path} after placing {placed}: raise the sysctl "
            f"{MAX_USER_WATCHES}{now}, e.g. sysctl {MAX_USER_WATCHES}=524288")


def open_inotify() -> Inotify:
    """A non-blocking, close-on-exec inotify instance; WatchError if none."""
    try:
        return Inotify(nonblocking=True)
    except OSError as exc:
        if exc.errno == errno.EMFILE:
            raise WatchError(f"too many inotify instances: raise the sysctl "
                             f"{MAX_USER_INSTANCES}") from None
        raise WatchError(f"cannot start inotify: {exc.strerror}") from None


class MaildirWatch:
    """The inotify watches on one Maildir++ tree and the meaning of their
    events.

    `start()` places every watch; then, each time `fileno()` is readable,
    `read_changes()` returns the names of the folders that changed (each
    once, in the order first seen).  `inotify` is the seam for tests: an
    object with add_watch(path, mask), rm_watch(wd), fileno() and close(),
    by default a real inotify.Inotify; tests hand their events to
    `handle()` instead of `read_changes()`.
    """

    def __init__(self, base: str, *, exit_on_new_folder: bool = False,
                 inotify=None) -> None:
        self.base = os.path.abspath(base)
        self.exit_on_new_folder = exit_on_new_folder
        self._inotify = inotify
        self._roles: dict[int, list[tuple[str, str]]] = {}
        self._folders: dict[str, _FolderState] = {}
        self._started = False
        self.overflows = 0  # IN_Q_OVERFLOW events seen, for tests and logs

    # -------------------------------------------------------------- set-up

    def start(self) -> None:
        """Place every watch.  WatchError (exit 1) when the base is not a
        maildir directory or a watch cannot be placed."""
        try:
            st_mode = os.stat(self.base).st_mode
        except OSError as exc:
            raise WatchError(f"cannot watch {self.base}: {exc.strerror}") from None
        if not stat.S_ISDIR(st_mode):
            raise WatchError(f"cannot watch {self.base}: not a directory")
        if not is_maildir(self.base):
            raise WatchError(f"cannot watch {self.base}: not a maildir "
                             "(it needs cur/, new/ and tmp/)")
        if self._inotify is None:
            self._inotify = open_inotify()
        for path in self._anchor_paths():
            try:
                wd = self._place(path, GONE_EVENTS | IN_DONT_FOLLOW, required=True)
            except WatchLimitError:
                raise
            except WatchError:
                if path == self.base:
                    raise
                continue  # a parent we may not read (mode 0711): not watched
            assert wd is not None  # required=True raises instead
            self._attach(wd, (ANCHOR, path))
        wd = self._place(self.base, ENTRY_EVENTS | GONE_EVENTS, required=True)
        assert wd is not None  # required=True raises instead
        self._attach(wd, (BASE, INBOX))
        self._rescan({})
        self._started = True

    def _anchor_paths(self) -> list[str]:
        """The base and each of its parents but "/", as named (not resolved)."""
        paths: list[str] = []
        path = self.base
        while True:
            parent = os.path.dirname(path)
            if parent == path:
                return paths
            paths.append(path)
            path = parent

    def fileno(self) -> int:
        return self._inotify.fileno()

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()

    def folders(self) -> list[str]:
        """The folders that are maildirs now: INBOX first, then sorted."""
        names = sorted(name for name, state in self._folders.items()
                       if state.maildir and name != INBOX)
        inbox = self._folders.get(INBOX)
        return ([INBOX] if inbox is not None and inbox.maildir else []) + names

    def watch_count(self) -> int:
        return len(self._roles)

    # ------------------------------------------------------------- watches

    def _place(self, path: str, mask: int, *, required: bool = False) -> int | None:
        """inotify_add_watch(path) (a directory only, unless the mask has
        IN_DONT_FOLLOW: then the entry itself, a symlink too; the mask adds to
        any other role's on the same inode).  None when there is no directory
        there (any more), unless `required`."""
        if not mask & IN_DONT_FOLLOW:
            mask |= IN_ONLYDIR
        try:
            return self._inotify.add_watch(path, mask | IN_MASK_ADD)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WatchLimitError(_limit_message(path, len(self._roles))) from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP) and not required:
                return None
            raise WatchError(f"cannot watch {path}: {exc.strerror}") from None

    def _attach(self, wd: int, role: tuple[str, str]) -> None:
        self._roles.setdefault(wd, []).append(role)

    def _detach(self, wd: int, role: tuple[str, str]) -> None:
        roles = self._roles.get(wd)
        if roles is None or role not in roles:
            return
        roles.remove(role)
        if not roles:
            del self._roles[wd]
            try:
                self._inotify.rm_watch(wd)
            except OSError:
                pass  # EINVAL: the kernel dropped it already (directory gone)

    def _folder_path(self, name: str) -> str:
        return self.base if name == INBOX else os.path.join(self.base, "." + name)

    def _folder_name(self, leaf: str) -> str | None:
        """The folder named by base entry `leaf` (".foo.bar" -> "foo.bar"),
        None if it is not a Maildir++ folder name."""
        if not leaf.startswith(".") or leaf in (".", ".."):
            return None
        try:
            return path_to_folder(self.base, os.path.join(self.base, leaf))
        except DataError:
            return None

    def _refresh(self, name: str) -> tuple[bool, bool]:
        """Make the watches of folder `name` match what is on disk now;
        return (it was a maildir, it is one now).

        The folder's directory is watched before its subdirectories are
        looked for, and they before is_maildir: whatever appears in between
        raises an event that refreshes it again.
        """
        state = self._folders.get(name)
        was = state.maildir if state is not None else False
        if state is None:
            state = self._folders[name] = _FolderState()
        path = self._folder_path(name)
        if name != INBOX:
            wd = self._place(path, ENTRY_EVENTS)
            self._swap(state, None, wd, (FOLDER, name))
            if wd is None:
                self._forget(name)
                return was, False
        for sub in MESSAGE_SUBDIRS:
            wd = self._place(os.path.join(path, sub), MESSAGE_EVENTS)
            self._swap(state, sub, wd, (MESSAGES, name))
        state.maildir = is_maildir(path)
        return was, state.maildir

    def _swap(self, state: _FolderState, sub: str | None, wd: int | None,
              role: tuple[str, str]) -> None:
        old = state.dir_wd if sub is None else state.subs.get(sub)
        if old == wd:
            return
        if old is not None:
            self._detach(old, role)
        if wd is not None:
            self._attach(wd, role)
        if sub is None:
            state.dir_wd = wd
        else:
            state.subs[sub] = wd

    def _forget(self, name: str) -> None:
        """Remove every watch of folder `name` (not INBOX)."""
        state = self._folders.pop(name, None)
        if state is None:
            return
        if state.dir_wd is not None:
            self._detach(state.dir_wd, (FOLDER, name))
        for wd in state.subs.values():
            if wd is not None:
                self._detach(wd, (MESSAGES, name))

    def _structure(self, name: str, changed: dict[str, None]) -> None:
        """Folder `name` may have been created, removed, renamed or
        completed: refresh it and report it if it is or was a maildir."""
        was, now = self._refresh(name)
        if was != now and self._started and self.exit_on_new_folder:
            what = "created" if now else "removed or renamed"
            raise StructureChange(f"folder {name} {what}; exiting as "
                                  "--exit-on-new-folder asks")
        if was or now:
            changed[name] = None

    def _rescan(self, changed: dict[str, None]) -> None:
        """Refresh every folder on disk or known (after start or overflow)."""
        try:
            leaves = os.listdir(self.base)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise StructureChange(f"{self.base} was moved or removed") from None
            raise WatchError(f"cannot list {self.base}: {exc.strerror}") from None
        names = {INBOX}
        for leaf in leaves:
            name = self._folder_name(leaf)
            if name is not None:
                names.add(name)
        names.update(self._folders)
        for name in sorted(names):
            self._structure(name, changed)

    # -------------------------------------------------------------- events

    def read_changes(self) -> list[str]:
        """Read the pending events; the folders they concern (each once).
        After a queue overflow: every folder, after a full rescan.
        StructureChange (exit 2) for a change it does not follow."""
        try:
            data = os.read(self._inotify.fileno(), READ_BYTES)
        except BlockingIOError:
            return []
        return self.handle(raw_events(data))

    def handle(self, events: Iterable) -> list[str]:
        """The folders that events (wd, mask, cookie, name) concern; a name
        is a str or, as raw_events gives it, NUL-padded bytes."""
        changed: dict[str, None] = {}
        overflow = False
        roles_of = self._roles
        for wd, mask, _cookie, name in events:
            if mask & IN_Q_OVERFLOW:
                overflow = True
                continue
            roles = roles_of.get(wd)
            if roles is None:
                continue
            # The common case, kept short: a message event in new/ or cur/.
            if len(roles) == 1 and roles[0][0] == MESSAGES and not mask & IN_IGNORED:
                if mask & MESSAGE_EVENTS:
                    changed[roles[0][1]] = None
                continue
            self._dispatch(wd, mask, _text(name), roles, changed)
        if overflow:
            self.overflows += 1
            self._rescan(changed)
            everything = self.folders()
            listed = set(everything)
            return everything + [name for name in changed if name not in listed]
        return list(changed)

    def _dispatch(self, wd: int, mask: int, name: str, roles: list[tuple[str, str]],
                  changed: dict[str, None]) -> None:
        for kind, who in list(roles):
            if kind == MESSAGES:
                if mask & MESSAGE_EVENTS:
                    changed[who] = None
            elif kind == FOLDER:
                if mask & ENTRY_EVENTS and name in MAILDIR_SUBDIRS and who in self._folders:
                    self._structure(who, changed)
            elif kind == BASE:
                if mask & GONE_EVENTS:
                    raise StructureChange(f"{self.base} was moved or removed")
                if mask & ENTRY_EVENTS:
                    if name in MAILDIR_SUBDIRS:
                        self._structure(INBOX, changed)
                    else:
                        folder = self._folder_name(name)
                        if folder is not None:
                            self._structure(folder, changed)
            elif kind == ANCHOR and mask & GONE_EVENTS:
                if who == self.base:
                    raise StructureChange(f"{self.base} was moved or removed")
                raise StructureChange(f"{who}, a parent of {self.base}, was moved or removed")
        if mask & IN_IGNORED:
            self._dropped(wd)

    def _dropped(self, wd: int) -> None:
        """The kernel removed watch `wd` (its directory is gone)."""
        for kind, who in self._roles.pop(wd, []):
            state = self._folders.get(who)
            if state is None:
                continue
            if kind == FOLDER and state.dir_wd == wd:
                state.dir_wd = None
            elif kind == MESSAGES:
                for sub, sub_wd in state.subs.items():
                    if sub_wd == wd:
                        state.subs[sub] = None


def _write_out(fd: int, data: bytes) -> None:
    """write_all; a failure other than EPIPE is an OutputError (one line)."""
    try:
        write_all(fd, data)
    except OSError as exc:
        raise output_error(exc) from None


def stream_changes(watch: MaildirWatch, out_fd: int, *, window: float = COALESCE_WINDOW,
                   clock: Callable[[], float] = time.monotonic, delimiter: str = ".") -> None:
    """Speak the watcher protocol on `out_fd` for a started `watch`: the
    ready line, then the name of each folder that changes, coalesced by a
    Coalescer of `window` seconds, its hierarchy dots written as
    `delimiter`.  Returns when the reader has gone away
    (EPIPE, or the pipe's reading end closed while idle: POLLERR/POLLHUP on
    `out_fd`).  StructureChange and WatchError pass through, after the
    names still held back are written."""
    coalescer = Coalescer(window)
    encoded: dict[str, bytes] = {}
    watch_fd = watch.fileno()
    poller = select.poll()
    poller.register(watch_fd, select.POLLIN)
    poller.register(out_fd, 0)  # 0: only POLLERR/POLLHUP/POLLNVAL, never POLLOUT
    try:
        _write_out(out_fd, READY_LINE)
        while True:
            due_at = coalescer.next_due()
            timeout = None
            if due_at is not None:
                timeout = max(0, math.ceil((due_at - clock()) * 1000))
            for fd, revents in poller.poll(timeout):
                if fd != watch_fd:
                    if closed_revents(revents):
                        return
                    continue
                try:
                    names = watch.read_changes()
                except RoammailError:
                    held = coalescer.pop_all()
                    if held:
                        try:
                            write_all(out_fd, protocol_lines(held, delimiter=delimiter))
                        except OSError:
                            pass
                    raise
                now = clock()
                for name in names:
                    coalescer.add(name, now)
            due = coalescer.pop_due(clock())
            if due:
                _write_out(out_fd, protocol_lines(due, encoded, delimiter))
    except BrokenPipeError:
        return
