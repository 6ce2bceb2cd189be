"""status.py: what became of each message, kept in spool_dir/status/.

One small file per message, named by its queue ID (its file name in
msgs/), holding one JSON object with the keys of RECORD_KEYS; it is
replaced atomically (core.durable.replace_file: tmp, rename), so a reader
sees the old or the new state, never a mix.  Not fsynced: a record is a
note about the queue, written before and after every try, and a flush
each would slow a pass down; only a crash of the machine may bring back
an older note (then a send in flight is not known as uncertain).
The C extsmail reads msgs/ alone and never sees these files.

States, in the order a message usually goes through them:

    queued     in msgs/, never tried (a message without a record is queued)
    sending    handed to an external right now
    retrying   an external failed; tried again later (attempts, error,
               next_try when a daemon knows it)
    uncertain  the external was killed, stalled or lost its connection
               after it had read the whole message: it may have been sent
    sent       an external exited 0 (external, sent_at, output: the last
               line it wrote); `duplicate` when an earlier try was
               uncertain and the external that took it does not
               deduplicate (extsmail.externals(5) `dedup`)
    failed     failed for good, set aside in failed/ (failed_path)

Contracts:
- Records are notes about the queue, never the queue itself: a message is
  sent or not by msgs/ alone, and a record that cannot be written is
  logged by the caller, never a failed delivery (`write` raises IOFailure).
- A record is found by its queue ID or by the message's Message-ID
  (`find`): with or without the angle brackets.
- Sent records live for keep_sent (extsmail.conf(5)); `prune` removes
  them afterwards, and the records of messages that are neither queued nor
  set aside (deleted with --delete) at once.

Cheap to import (json only when a record is read or written): an empty
queue run of extsmaild only lists the directory to prune it.
"""

from __future__ import annotations

import os
import time

from ..core.errors import IOFailure

STATUS_DIR = "status"

STATES = ("queued", "sending", "retrying", "uncertain", "sent", "failed")
# Every record has these keys (None when not known), in this order; scripts
# rely on them (--json), so a key is never renamed or removed.
RECORD_KEYS = ("id", "message_id", "state", "queued", "updated", "attempts", "external",
               "sent_at", "output", "error", "next_try", "failed_path", "duplicate",
               "uncertain_via")

# extsmaild --status ID exit statuses, by state (extsmaild(1)).
EXIT_SENT = 0
EXIT_PENDING = 1   # queued, sending, retrying, uncertain
EXIT_FAILED = 2
EXIT_UNKNOWN = 66  # EX_NOINPUT: no message by that ID or Message-ID


def status_dir(spool_dir: str) -> str:
    return os.path.join(spool_dir, STATUS_DIR)


def new_record(name: str, message_id: str | None, queued: float | None) -> dict:
    record: dict = dict.fromkeys(RECORD_KEYS)
    record.update(id=name, message_id=message_id, state="queued", attempts=0,
                  queued=_whole(queued), duplicate=False, uncertain_via=[])
    return record


def _whole(t: float | None) -> int | None:
    return None if t is None else int(t)


def read(spool_dir: str, name: str) -> dict | None:
    """The record of queue ID `name`, or None (none, or unreadable)."""
    return _load(os.path.join(status_dir(spool_dir), name))


def _load(path: str) -> dict | None:
    import json

    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("state") not in STATES:
        return None
    full = dict.fromkeys(RECORD_KEYS)
    full.update((k, record[k]) for k in RECORD_KEYS if k in record)
    if not isinstance(full["uncertain_via"], list):
        full["uncertain_via"] = []
    full["duplicate"] = bool(full["duplicate"])
    return full


def write(spool_dir: str, record: dict, now: float | None = None) -> None:
    """Replace the record of record["id"] durably; IOFailure on failure."""
    import json

    from ..core.durable import replace_file

    record["updated"] = int(time.time() if now is None else now)
    directory = status_dir(spool_dir)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise IOFailure(f"cannot create {directory}: {exc.strerror}") from None
    data = json.dumps({k: record.get(k) for k in RECORD_KEYS}, sort_keys=False)
    replace_file(os.path.join(directory, record["id"]), data.encode() + b"\n")


def schedule_retries(spool_dir: str, next_try: float | None) -> None:
    """Note when the daemon tries its waiting messages again: `next_try`
    (a time), or None (when the network is back).  Only the records of
    messages that wait (retrying, uncertain) change."""
    directory = status_dir(spool_dir)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    when = _whole(next_try)
    for name in names:
        if name.startswith("."):
            continue
        record = _load(os.path.join(directory, name))
        if record is None or record.get("state") not in ("retrying", "uncertain") \
                or record.get("next_try") == when:
            continue
        record["next_try"] = when
        write(spool_dir, record)


def remove(spool_dir: str, name: str) -> None:
    try:
        os.unlink(os.path.join(status_dir(spool_dir), name))
    except OSError:
        pass


def message_id_of(lines: list[str]) -> str | None:
    """The Message-ID of a message's (unfolded) header lines, as written."""
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "message-id":
            return " ".join(value.split()) or None
    return None


def _bare(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def prune(spool_dir: str, keep_sent: float, now: float, queued: set[str],
          failed: set[str]) -> list[str]:
    """Remove the sent records older than keep_sent seconds, and the
    records of messages neither queued nor failed that were not sent
    (deleted messages); return the queue IDs removed."""
    directory = status_dir(spool_dir)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for name in names:
        if name.startswith(".") or name in queued or name in failed:
            continue
        record = _load(os.path.join(directory, name))
        if record is not None and record["state"] == "sent" \
                and now - (record["sent_at"] or record["updated"] or 0) < keep_sent:
            continue
        if record is None and _young(os.path.join(directory, name), now):
            continue  # being written: the atomic write makes that impossible but be kind
        remove(spool_dir, name)
        removed.append(name)
    return removed


def _young(path: str, now: float) -> bool:
    try:
        return now - os.stat(path).st_mtime < 60
    except OSError:
        return False


# ------------------------------------------------------------------ reading


def all_records(spool_dir: str) -> list[dict]:
    """Every message's record: the stored ones, and a queued (or failed)
    record for each message in msgs/ (or failed/) without one; oldest
    queued first.  A message gone from both unsent by us (deleted, or sent
    by the C extsmaild, which keeps no states) has none."""
    from . import spool

    directory = status_dir(spool_dir)
    stored: dict[str, dict] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    for name in names:
        if not name.startswith("."):
            record = _load(os.path.join(directory, name))
            if record is not None:
                stored[name] = record
    present = [(p, "queued") for p in spool.list_messages(spool_dir)] + \
        [(p, "failed") for p in spool.list_failed(spool_dir)]
    names_present = {os.path.basename(p) for p, _ in present}
    for name in [n for n, r in stored.items() if r["state"] != "sent" and n not in names_present]:
        del stored[name]  # gone unsent by us: deleted, or sent by another program
    for path, state in present:
        name = os.path.basename(path)
        record = stored.get(name)
        if record is None:
            try:
                queued = os.stat(path).st_mtime
            except OSError:
                continue
            record = stored[name] = new_record(name, _read_message_id(path), queued)
            record["updated"] = _whole(queued)
        if state == "failed":
            record["state"] = "failed"
            record["failed_path"] = path
        elif record["state"] in ("sent", "failed"):
            record["state"] = "queued"  # back in the queue (--retry, or sent and re-queued)
    records = list(stored.values())
    records.sort(key=lambda r: (r["queued"] or 0, r["id"]))
    return records


def _read_message_id(path: str) -> str | None:
    """The Message-ID of a spool file, read without its lock."""
    from ..core.errors import DataError
    from ..core.headers import header_lines, read_head
    from . import spool

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _, offset = spool.read_header(f.fileno(), size, path)
            f.seek(offset)
            return message_id_of(header_lines(read_head(f, 64 << 10)))
    except (OSError, DataError):
        return None


def find(records: list[dict], ident: str) -> list[dict]:
    """The records `ident` names: a queue ID, a unique prefix of one, or a
    Message-ID (with or without its angle brackets)."""
    exact = [r for r in records if r["id"] == ident]
    if exact:
        return exact
    bare = _bare(ident)
    by_message_id = [r for r in records if r["message_id"] and _bare(r["message_id"]) == bare]
    if by_message_id:
        return by_message_id
    if "/" in ident or not ident or ident.startswith(".") or "@" in ident:
        return []
    prefixed = [r for r in records if r["id"].startswith(ident)]
    return prefixed if len(prefixed) == 1 else []


def exit_status(records: list[dict]) -> int:
    """--status ID's exit status for the records of one message (several
    when a Message-ID was queued more than once: the least done one)."""
    if not records:
        return EXIT_UNKNOWN
    states = {r["state"] for r in records}
    if states - {"sent", "failed"}:
        return EXIT_PENDING
    if "failed" in states:
        return EXIT_FAILED
    return EXIT_SENT


def _clock(t: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"


def describe(record: dict) -> str:
    """One human line for a record."""
    state = record["state"]
    head = f"{record['id']}  {record['message_id'] or '(no Message-ID)'}  "
    attempts = record["attempts"] or 0
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    error = (record["error"] or "").split("\n", 1)[0]
    if state == "sent":
        text = f"sent via {record['external']} at {_clock(record['sent_at'])}"
        if record["duplicate"]:
            text = "sent, may be a duplicate: " + text[5:] + \
                   f" (an earlier try via {', '.join(record['uncertain_via'])} was uncertain)"
        if record["output"]:
            text += f": {record['output']}"
        return head + text
    if state == "queued":
        return head + f"queued since {_clock(record['queued'])}"
    if state == "sending":
        return head + f"sending via {record['external']} since {_clock(record['updated'])}"
    if state == "retrying":
        when = f"next try {_clock(record['next_try'])}" if record["next_try"] \
            else "next try at the next run, or when the network is back"
        return head + f"retrying: {tries}, {when}, last error: {error}"
    if state == "uncertain":
        return head + (f"uncertain: via {record['external']} at {_clock(record['updated'])} "
                       f"it may have been sent ({error}); {tries}")
    return head + f"failed: {error or 'set aside'}; in {record['failed_path']}"


def public(record: dict) -> dict:
    """The record as --json prints it: every key of RECORD_KEYS."""
    return {k: record.get(k) for k in RECORD_KEYS}
