"""paths.py: os.path's arithmetic on str paths, without importing os.

extsmail runs for every mail sent, and `import os` (which brings
_collections_abc along) is about a third of what it costs above the
interpreter's own start.  The modules on its path (spool, durable, maildir,
locations, cli) therefore call the `posix` module directly, and take from
here the few os.path functions they need, with posixpath's results
(tests/core/test_paths.py checks them against posixpath).

Those modules also do without `from __future__ import annotations`, which
imports the __future__ module: their annotations that Python 3.9 cannot
evaluate are written as strings.

Only str paths; no `~`: locations.py does that.
"""

import posix
import sys

_ENCODING = sys.getfilesystemencoding()


def fsencode(name: str) -> bytes:
    return name.encode(_ENCODING, "surrogateescape")


def fsdecode(name: bytes) -> str:
    return name.decode(_ENCODING, "surrogateescape")


def join(first: str, *rest: str) -> str:
    path = first
    for part in rest:
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def split(path: str) -> "tuple[str, str]":
    i = path.rfind("/") + 1
    head, tail = path[:i], path[i:]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head, tail


def dirname(path: str) -> str:
    return split(path)[0]


def basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def normpath(path: str) -> str:
    if not path:
        return "."
    initial = 1 if path.startswith("/") else 0
    if initial and path.startswith("//") and not path.startswith("///"):
        initial = 2  # POSIX leaves the meaning of exactly two slashes open
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp != ".." or (not initial and not parts) or (parts and parts[-1] == ".."):
            parts.append(comp)
        elif parts:
            parts.pop()
    result = "/" * initial + "/".join(parts)
    return result or "."


def abspath(path: str) -> str:
    if not path.startswith("/"):
        path = join(posix.getcwd(), path)
    return normpath(path)


def _mode(path: str, follow: bool) -> "int | None":
    try:
        return (posix.stat(path) if follow else posix.lstat(path)).st_mode
    except (OSError, ValueError):
        return None


def exists(path: str) -> bool:
    return _mode(path, True) is not None


def lexists(path: str) -> bool:
    return _mode(path, False) is not None


def isdir(path: str) -> bool:
    mode = _mode(path, True)
    return mode is not None and mode & 0o170000 == 0o040000


def islink(path: str) -> bool:
    mode = _mode(path, False)
    return mode is not None and mode & 0o170000 == 0o120000


def makedirs(path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
    """os.makedirs(path, mode, exist_ok)."""
    head, tail = split(path)
    if not tail:
        head, tail = split(head)
    if head and tail and not exists(head):
        try:
            makedirs(head, mode, exist_ok=True)
        except FileExistsError:
            pass
    try:
        posix.mkdir(path, mode)
    except OSError:
        if not exist_ok or not isdir(path):
            raise


def getenv(name: str, default: str = "") -> str:
    """os.environ.get(name, default): os.environ itself once os is loaded
    (someone may have changed it), else the environment the process got."""
    os_module = sys.modules.get("os")
    if os_module is not None:
        return os_module.environ.get(name, default)
    value = posix.environ.get(fsencode(name))
    return default if value is None else fsdecode(value)
