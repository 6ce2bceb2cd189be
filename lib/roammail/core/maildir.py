"""maildir.py: the maildir layout, Maildir++ folder names, unique message
names, name checks and safe delivery.

It owns the rules of https://cr.yp.to/proto/maildir.html as the tools apply
them: a message is written in tmp/, fsynced, then linked into new/ (or cur/)
under a name that is checked first, and the directory is fsynced; a
delivery never replaces an existing message.  It never writes a file except
through durable (write_durably, or a durable.Batch for many at once),
never follows a symlink where a message is expected (see
is_safe_message), and never deletes a message.

Maildir++ folders: "INBOX" is the base maildir itself; folder "foo.bar" is
the maildir base/.foo.bar ("." is the hierarchy separator).
"""

import errno
import posix
import stat
import time

from . import paths
from .durable import fsync_dir, write_durably
from .errors import DataError, IOFailure

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Literal, Union

    from .durable import Batch, Source, Staged

INBOX = "INBOX"
SUBDIRS = ("cur", "new", "tmp")

# NAME_MAX on every file system the tools meet: the longest name, in bytes.
NAME_MAX_BYTES = 255

# Delivery counter for unique_name (the "Q" part): distinguishes two names
# made by one process in the same microsecond.
_deliveries = [0]  # names made by this process (a list: no itertools to import)


def _control_character(text: str) -> "str | None":
    """The first C0/C1 control character (NUL and newline included) or DEL
    in `text`, or None."""
    if text.isascii() and text.isprintable():
        return None  # the usual name, checked at C speed
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return char
    return None


def _encoded_length(text: str) -> "int | None":
    """Length of `text` in bytes on the file system, None if not encodable."""
    try:
        return len(paths.fsencode(text))
    except UnicodeError:
        return None


# ------------------------------------------------------------------ folders

def _folder_problem(name: str) -> "str | None":
    """Why `name` cannot be a Maildir++ folder name, or None if it can."""
    if not name:
        return "empty folder name"
    if "/" in name:
        return "'/' in folder name"
    if _control_character(name) is not None:
        return "control character in folder name"
    if name.startswith(".") or name.endswith(".") or ".." in name:
        return "empty component in folder name"
    size = _encoded_length(name)
    if size is None:
        return "folder name not encodable"
    if size + 1 > NAME_MAX_BYTES:
        return "folder name too long"
    return None


def folder_to_path(base: str, name: str) -> str:
    """The maildir of Maildir++ folder `name` under `base`: "INBOX" is `base`,
    "foo.bar" is `base`/.foo.bar.  Raises DataError for a name that is not a
    folder name (empty, "/", control characters, empty components)."""
    if name == INBOX:
        return base
    problem = _folder_problem(name)
    if problem is not None:
        raise DataError(f"{problem}: {name!r}")
    return paths.join(base, "." + name)


def path_to_folder(base: str, path: str) -> str:
    """The Maildir++ folder name of `path` under `base` (the inverse of
    folder_to_path).  Symlinks are not resolved: `path` must be `base` or a
    `.NAME` entry directly in it.  Raises DataError otherwise."""
    base_abs = paths.normpath(paths.abspath(base))
    path_abs = paths.normpath(paths.abspath(path))
    if path_abs == base_abs:
        return INBOX
    parent, leaf = paths.split(path_abs)
    if parent == base_abs and leaf.startswith("."):
        name = leaf[1:]
        if name != INBOX and _folder_problem(name) is None:
            return name
    raise DataError(f"not a Maildir++ folder of {base}: {path!r}")


def is_maildir(path: str) -> bool:
    """True if `path` is a directory with cur/, new/ and tmp/ (following
    symlinks)."""
    return all(paths.isdir(paths.join(path, sub)) for sub in SUBDIRS)


def list_folders(base: str) -> "list[str]":
    """The Maildir++ folders under `base`: "INBOX" first if `base` is a
    maildir, then, sorted, every `.NAME` entry that is a maildir (symlinked
    folders followed) and whose NAME is a valid folder name.
    Raises IOFailure if `base` cannot be listed."""
    try:
        leaves = posix.listdir(base)
    except OSError as exc:
        raise IOFailure(f"cannot list {base}: {exc.strerror}") from exc
    folders = [INBOX] if is_maildir(base) else []
    for leaf in sorted(leaves):
        if not leaf.startswith("."):
            continue
        name = leaf[1:]
        if name == INBOX or _folder_problem(name) is not None:
            continue
        if is_maildir(paths.join(base, leaf)):
            folders.append(name)
    return folders


def make_maildir(path: str, mode: int = 0o700) -> None:
    """Create the maildir `path` (with any missing parents) and its cur/,
    new/ and tmp/, each with `mode` (less the umask); fsync what was
    created.  Does nothing to what exists already.  Raises IOFailure."""
    missing = []
    top = paths.abspath(path)
    while not paths.lexists(top):
        missing.append(top)
        parent = paths.dirname(top)
        if parent == top:
            break
        top = parent
    wanted = list(reversed(missing)) + [paths.join(path, sub) for sub in ("tmp", "new", "cur")]
    for directory in wanted:
        try:
            posix.mkdir(directory, mode)
        except FileExistsError:
            if not paths.isdir(directory):
                raise IOFailure(f"cannot make maildir {path}: {directory} exists "
                                "and is not a directory") from None
            continue
        except OSError as exc:
            raise IOFailure(f"cannot make directory {directory}: {exc.strerror}") from exc
        fsync_dir(paths.dirname(paths.abspath(directory)))


# ------------------------------------------------------------ message names

def unique_name(hostname: "str | None" = None) -> str:
    """A new maildir message name: `<sec>.M<usec>P<pid>Q<n>R<hex>.<host>`,
    with "/" and ":" in the host written as \\057 and \\072."""
    now_ns = time.time_ns()
    _deliveries[0] += 1
    host = posix.uname().nodename if hostname is None else hostname
    host = host.replace("/", "\\057").replace(":", "\\072")
    return (f"{now_ns // 1_000_000_000}.M{now_ns // 1000 % 1_000_000}"
            f"P{posix.getpid()}Q{_deliveries[0]}R{posix.urandom(8).hex()}.{host}")


def check_message_name(name: str) -> None:
    """Raise DataError unless `name` may be a message file name: not empty,
    no "/", no control character (NUL and newline included), no leading
    ".", at most 255 bytes."""
    if not name:
        raise DataError("empty message name")
    if "/" in name:
        raise DataError(f"'/' in message name {name!r}")
    if _control_character(name) is not None:
        raise DataError(f"control character in message name {name!r}")
    if name.startswith("."):
        raise DataError(f"message name starts with '.': {name!r}")
    size = _encoded_length(name)
    if size is None:
        raise DataError(f"message name not encodable: {name!r}")
    if size > NAME_MAX_BYTES:
        raise DataError(f"message name longer than {NAME_MAX_BYTES} bytes: {name[:40]!r}...")


def base_name(name: str) -> str:
    """`name` without its info part (":2,FLAGS"): the unique name that stays
    the same when a reader moves the message from new/ to cur/."""
    return name.split(":", 1)[0]


# ----------------------------------------------------------------- delivery

def deliver(maildir: str, source: "Source", *, name: "str | None" = None,
            subdir: str = "new", mtime: "float | None" = None,
            sync_directory: bool = True) -> str:
    """Deliver `source` (bytes, binary file or iterable of bytes) durably
    into `maildir`/`subdir` ("new" or "cur") under `name` (a new
    unique_name() if None); return the message's path.

    Written in `maildir`/tmp, fsynced, linked into place, directories
    fsynced: after a crash the message is there whole or not at all.
    sync_directory=False leaves the fsync of `subdir` to the caller (see
    durable.write_durably).  Raises DataError for a bad name, FileExistsError if that message file
    exists already (it is left as it was), IOFailure for an I/O failure.
    """
    if subdir not in ("new", "cur"):
        raise ValueError(f"subdir must be 'new' or 'cur', not {subdir!r}")
    if name is None:
        name = unique_name()
    check_message_name(name)
    return write_durably(paths.join(maildir, subdir), name, source,
                         tmp_dir=paths.join(maildir, "tmp"), mode=0o600,
                         mtime=mtime, overwrite=False, sync_directory=sync_directory)


def stage(batch: "Batch", maildir: str, source: "Source", *, name: str,
          subdir: str = "new", mtime: "float | None" = None,
          checked: bool = False) -> "Staged":
    """deliver() in steps, for many messages at once: write `source` in
    `maildir`/tmp for `maildir`/`subdir`/`name` through `batch`
    (durable.Batch); after batch.sync(), durable.publish() links it into
    place and the caller fsyncs `subdir`.  Raises as deliver() does,
    except FileExistsError, which publish() raises.  `checked`: the
    caller has passed `name` through check_message_name already."""
    if subdir not in ("new", "cur"):
        raise ValueError(f"subdir must be 'new' or 'cur', not {subdir!r}")
    if not checked:
        check_message_name(name)
    return batch.stage(paths.join(maildir, subdir), name, source,
                       tmp_dir=paths.join(maildir, "tmp"), mode=0o600, mtime=mtime)


def message_exists(maildir: str, name: str) -> bool:
    """True if the message `name` is in `maildir`: new/NAME, cur/NAME or
    cur/NAME:INFO exists (any entry, even a dangling symlink).  Names are
    compared without their info part.  Raises DataError for a bad name,
    IOFailure if cur/ cannot be listed (a missing cur/ is no message)."""
    check_message_name(name)
    unique = base_name(name)
    for sub in ("new", "cur"):
        for candidate in {name, unique}:
            if paths.lexists(paths.join(maildir, sub, candidate)):
                return True
    cur = paths.join(maildir, "cur")
    prefix = unique + ":"
    try:
        with posix.scandir(cur) as entries:
            return any(entry.name.startswith(prefix) for entry in entries)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise IOFailure(f"cannot list {cur}: {exc.strerror}") from exc


class Refusal(str):
    """Why a file is not taken as a message: a str that is false, so that
    `if is_safe_message(d, n):` reads as expected and `str()` gives the
    reason."""

    def __bool__(self) -> bool:
        return False


def is_safe_message(dirpath: str, name: str) -> "Union[Literal[True], Refusal]":
    """True if `dirpath`/`name` may be read as a message: a good name (see
    check_message_name) for a regular file, not a symlink (lstat, never
    followed), device, FIFO, socket or directory.  Otherwise a Refusal:
    false, and its text says why.  Raises IOFailure if the file cannot be
    examined for another reason than not being there."""
    try:
        check_message_name(name)
    except DataError as exc:
        return Refusal(str(exc))
    path = paths.join(dirpath, name)
    try:
        info = posix.lstat(path)
    except FileNotFoundError:
        return Refusal(f"no such file: {path}")
    except OSError as exc:
        raise IOFailure(f"cannot stat {path}: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode):
        return Refusal(f"a symbolic link, not a message: {path}")
    if not stat.S_ISREG(info.st_mode):
        return Refusal(f"not a regular file: {path}")
    return True
