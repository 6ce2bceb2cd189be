"""health.py: the small state files that roammail-status reads.

Each long-running or periodic tool leaves one JSON file per thing it looks
after (extsmaild: per spool; syncmail: per source; mswatch: per store
pair; watch-imap: per account) in $XDG_STATE_HOME/roammail/health/,
named TOOL--KEY.json.  `record` replaces a file atomically
(core.durable.replace_file: tmp, rename), but not durably: no fsync, so that a sync that finds
nothing new, every few minutes on a laptop, costs the disk no flush; after
a crash a record may be the one before, which the next run replaces.
`read_all` returns every file there,
and `read_one` one tool's file for one key (a tool that runs now and then
merges what it knew last time).

Contracts:
- `record` never fails the caller's work: an error (a full disk, a
  directory that cannot be made) is returned as one line, not raised.
  It is one small write, made once per pass, sync or state change: never
  per message.
- The directory is made 0700, the files 0600.
- A file is one JSON object with at least "tool", "key", "updated" (the
  epoch time of the write) and "pid" (the writer); the rest is the tool's.
- `read_all` never raises for one file: a file that cannot be read or is
  not such an object is reported in `problems` (one line each) and left
  out.
"""

from __future__ import annotations

import posix

from . import locations, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

SUFFIX = ".json"
SEPARATOR = "--"
# A key is kept readable in the file name up to this many characters;
# a longer key, or one with other characters, gets a hash as well.
KEY_CHARS = 60
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@+-")


def health_dir(environ: Mapping[str, str] | None = None) -> str:
    """$XDG_STATE_HOME/roammail/health (~/.local/state/roammail/health)."""
    return paths.join(locations.xdg_state_home(environ), "roammail", "health")


def file_name(tool: str, key: str) -> str:
    """TOOL--KEY.json; a key with characters outside [A-Za-z0-9_.@+-]
    (a spool path, say) or longer than KEY_CHARS becomes HINT-HASH."""
    if key and len(key) <= KEY_CHARS and all(c in _PLAIN for c in key) \
            and not key.startswith(".") and SEPARATOR not in key:
        return f"{tool}{SEPARATOR}{key}{SUFFIX}"
    from .digest import sha256_hex

    hint = "".join(c if c in _PLAIN and c != "-" else "_" for c in key[:24]).strip("._")
    digest = sha256_hex(key.encode("utf-8", "surrogateescape"))[:16]
    return f"{tool}{SEPARATOR}{hint or 'key'}-{digest}{SUFFIX}"


def _make_dir(path: str) -> None:
    import os

    os.makedirs(path, mode=0o700, exist_ok=True)


def record(tool: str, key: str, data: dict, *, now: float | None = None,
           environ: Mapping[str, str] | None = None) -> str | None:
    """Write TOOL--KEY.json with `data` (JSON-able) plus tool, key, updated
    and pid.  None when written, else what went wrong, in one line."""
    import json
    import time

    from .errors import RoammailError

    body = dict(data)
    body.update(tool=tool, key=key, pid=posix.getpid(),
                updated=round(time.time() if now is None else now, 3))
    directory = health_dir(environ)
    try:
        _make_dir(directory)
        text = json.dumps(body, sort_keys=True, ensure_ascii=True,
                          default=str, separators=(",", ":")) + "\n"
        from .durable import replace_file

        replace_file(paths.join(directory, file_name(tool, key)), text.encode("ascii"))
    except (OSError, ValueError, RoammailError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"cannot record the health state in {directory}: {what}"
    return None


def _load(path: str) -> dict:
    """One file's object; ValueError or OSError when it is not one."""
    import json

    with open(path, "rb") as f:
        data = json.loads(f.read(1 << 20).decode("utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str) \
            or not isinstance(data.get("key"), str) \
            or not isinstance(data.get("updated"), (int, float)):
        raise ValueError("not a health record (an object with tool, key and updated)")
    return data


def read_one(tool: str, key: str, environ: Mapping[str, str] | None = None) -> dict | None:
    """What TOOL last recorded for KEY, or None (none, or unreadable)."""
    try:
        data = _load(paths.join(health_dir(environ), file_name(tool, key)))
    except (OSError, ValueError):
        return None
    return data if data["tool"] == tool and data["key"] == key else None


def read_all(problems: list[str] | None = None,
             environ: Mapping[str, str] | None = None) -> list[dict]:
    """Every record in health_dir(), sorted by tool then key.  A file that
    cannot be used is left out and, with `problems`, named there."""
    directory = health_dir(environ)
    found = []
    try:
        names = sorted(posix.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        if problems is not None:
            problems.append(f"cannot read {directory}: {exc.strerror or exc}")
        return []
    for name in names:
        if name.startswith(".") or not name.endswith(SUFFIX):
            continue
        path = paths.join(directory, name)
        try:
            found.append(_load(path))
        except OSError as exc:
            if problems is not None:
                problems.append(f"cannot read {path}: {exc.strerror or exc}")
        except ValueError as exc:
            if problems is not None:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                problems.append(f"ignoring {path}: {reason}")
    found.sort(key=lambda d: (d["tool"], d["key"]))
    return found
