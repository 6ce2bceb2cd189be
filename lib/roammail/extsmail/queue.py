"""queue.py: the queue commands of extsmaild: --list, --show, --delete,
--failed, --retry and --status.

A message is named by its file name in spool_dir/msgs/, or by a prefix
of it that names no other (`resolve_id`); a failed one (--failed, --retry)
the same way in spool_dir/failed/.  --list and --show read a
message even while it is being delivered (without its lock); --delete
removes a message only for the holder of its lock (spool.remove), so
never one an external has right now, and removes a corrupt one at once.

Nothing here delivers, and nothing is imported before one of these
commands runs: extsmaild imports this module for them only.
"""

from __future__ import annotations

import os
import stat
import sys
import time

from ..core.errors import EX_DATAERR, EX_IOERR, EX_TEMPFAIL, DataError, UsageError
from . import spool
from . import status as states
from .deliver import clear_error, read_error


def resolve_id(spool_dir: str, ident: str, failed: bool = False) -> str:
    """The msgs/ path of a queue ID (a whole name, or a unique prefix); with
    `failed`, the failed/ path of a failed message's ID."""
    if "/" in ident or not ident or ident.startswith("."):
        raise UsageError(f"bad message ID '{ident}'")
    paths = spool.list_failed(spool_dir) if failed else spool.list_messages(spool_dir)
    what = "failed message" if failed else "queued message"
    exact = [p for p in paths if os.path.basename(p) == ident]
    if exact:
        return exact[0]
    prefixed = [p for p in paths if os.path.basename(p).startswith(ident)]
    if len(prefixed) == 1:
        return prefixed[0]
    if not prefixed:
        raise DataError(f"no {what} {ident}")
    raise UsageError(f"message ID '{ident}' is ambiguous ({len(prefixed)} messages)")


def header_summary(message: spool.QueuedMessage) -> dict[str, str]:
    from ..core.headers import header_lines, read_head

    found: dict[str, str] = {}
    for line in header_lines(read_head(message.stream())):
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        if colon and key in ("from", "to", "subject") and key not in found:
            found[key] = " ".join(value.split())
    return found


def human_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def list_queue(spool_dir: str, out) -> int:
    now = time.time()
    for path in spool.list_messages(spool_dir):
        _describe(spool_dir, path, now, "Last error", out)
    failed = len(spool.list_failed(spool_dir))
    if failed:
        out.write(f"({failed} failed message{'s' if failed > 1 else ''}, not retried: "
                  "extsmaild --failed lists them)\n")
    return 0


def list_failed(spool_dir: str, out) -> int:
    """--failed: the messages set aside in failed/, with why."""
    now = time.time()
    for path in spool.list_failed(spool_dir):
        _describe(spool_dir, path, now, "Error", out)
    return 0


def _describe(spool_dir: str, path: str, now: float, error_label: str, out) -> None:
    name = os.path.basename(path)
    try:
        message = _open_for_reading(path)
    except DataError as exc:
        out.write(f"{name}  corrupt: {exc}\n")
        return
    if message is None:
        return
    with message:
        info = header_summary(message)
        size = message.size - message.body_offset
        args = " ".join(os.fsdecode(a) for a in message.args)
        out.write(f"{name}  {human_age(now - message.mtime)}  {size} bytes\n")
        out.write(f"  From: {info.get('from', '')}\n  To: {info.get('to', '')}\n")
        out.write(f"  Subject: {info.get('subject', '')}\n  Arguments: {args}\n")
    err = read_error(spool_dir, name)
    if err:
        # The external's stderr follows on lines of their own, indented.
        first, *rest = err.split("\n")
        out.write(f"  {error_label}: {first}\n")
        out.writelines(f"    {line}\n" if line else "\n" for line in rest)


def retry_messages(spool_dir: str, idents: list[str], log) -> int:
    """--retry: move failed messages back into the queue, to be sent by
    the next pass (of a daemon, at once: it sees them arrive)."""
    names = [os.path.basename(resolve_id(spool_dir, ident, failed=True)) for ident in idents]
    for name in names:
        if spool.put_back(spool_dir, name, time.time()) is None:
            continue  # put back by another --retry meanwhile
        clear_error(spool_dir, name)
        states.remove(spool_dir, name)  # queued again, from the start
        log.info("%s: back in the queue", name)
    return 0


def _open_for_reading(path: str) -> spool.QueuedMessage | None:
    """Open a message to look at it; a locked one is being delivered."""
    message = spool.open_message(path)
    if message is None and os.path.exists(path):
        # Locked (being delivered or still written): read without the lock.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            args, offset = spool.read_header(fd, st.st_size, path)
        except BaseException:
            os.close(fd)
            raise
        return spool.QueuedMessage(path, fd, args, offset, st.st_size, st.st_mtime)
    return message


def show_message(spool_dir: str, ident: str) -> int:
    path = resolve_id(spool_dir, ident)
    message = _open_for_reading(path)
    if message is None:
        raise DataError(f"no queued message {ident}")
    with message:
        stream = message.stream()
        out = sys.stdout.buffer
        while True:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
        out.flush()
    return 0


def delete_messages(spool_dir: str, idents: list[str], log) -> int:
    paths = [resolve_id(spool_dir, ident) for ident in idents]
    status = 0
    for path in paths:
        name = os.path.basename(path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # delivered meanwhile
        if not stat.S_ISREG(st.st_mode):
            log.error("%s: not a regular file, not a queued message; not deleted", name)
            status = EX_DATAERR
            continue
        try:
            message = spool.open_message(path)
        except DataError:
            message = None
            if os.path.exists(path):  # corrupt: deleting it is what one wants
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.error("%s: cannot delete it: %s", name, exc.strerror or exc)
                    status = EX_IOERR
                    continue
                clear_error(spool_dir, name)
                log.info("%s: deleted (it was corrupt)", name)
                continue
        if message is None:
            if os.path.exists(path):
                if st.st_size == 0:
                    log.error("%s: empty: the C extsmail is still writing it; not deleted",
                              name)
                else:
                    log.error("%s: being delivered right now; not deleted", name)
                status = EX_TEMPFAIL
            continue
        with message:
            spool.remove(message)
        clear_error(spool_dir, name)
        states.remove(spool_dir, name)
        log.info("%s: deleted", name)
    return status


def show_status(spool_dir: str, ident: str | None, as_json: bool, out, err) -> int:
    """--status [ID]: each message's delivery state, one line each (or a
    JSON list).  With ID (a queue ID or a Message-ID) only that message's,
    and the exit status says what became of it (states.exit_status)."""
    records = states.all_records(spool_dir)
    if ident is not None:
        records = states.find(records, ident)
    if as_json:
        import json

        out.write(json.dumps([states.public(r) for r in records], indent=1) + "\n")
    else:
        out.writelines(states.describe(r) + "\n" for r in records)
    if ident is None:
        return 0
    if not records:
        err.write(f"extsmaild: no message {ident} (queued, sent or failed)\n")
    return states.exit_status(records)
