"""syncmail_plan.py: syncmail's decisions, as pure functions.

Owns what syncmail decides, and nothing it does: which entries of the
server's new/ are fetched, refused, left alone or only removed; where a
message goes by the rules; which server files may be removed.  It never
touches a file, a process or the network: syncmail.py gathers the facts
(the server's listing, the local state, the journal), calls these
functions and carries out the actions.

The safety contract, checked by hypothesis (tests/syncmail/test_plan.py):

- `removable` returns only names that were durably stored locally in this
  run (or discarded by a rule), or that the journal of an earlier run says
  were ours and that exist locally with the same size; and only when the
  server's file is still a regular file of the listed size.
- `plan_listing` never fetches a name that exists locally: such a name is
  either confirmed by the journal (remove only) or a collision (left on
  the server, reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Sequence

from .errors import DataError
from .maildir import check_message_name

# Entry types as the server's listing reports them.
REGULAR = "f"
SYMLINK = "l"
DIRECTORY = "d"
OTHER = "o"

TYPE_WORDS = {SYMLINK: "a symbolic link", DIRECTORY: "a directory",
              OTHER: "not a regular file (fifo, socket or device)"}


@dataclass(frozen=True)
class Entry:
    """One entry of the server's new/: its index in the listing, type, name."""

    index: int
    kind: str
    name: str


@dataclass(frozen=True)
class LocalCopy:
    """A local message of the same name: where it is and its size."""

    path: str
    size: int


@dataclass
class Plan:
    """What to do with one listing.

    fetch: (entry, size) to copy; confirm: (entry, size) already here from an
    interrupted run (journal), to remove on the server only; collisions:
    (entry, local path) left on the server; refused: (entry, reason) left
    alone; vanished: regular files that had no size (gone since the listing).
    """

    fetch: list = field(default_factory=list)
    confirm: list = field(default_factory=list)
    collisions: list = field(default_factory=list)
    refused: list = field(default_factory=list)
    vanished: list = field(default_factory=list)


def name_problem(name: str) -> Optional[str]:
    """Why `name` cannot be a message name (maildir.check_message_name), or None."""
    try:
        check_message_name(name)
    except DataError as exc:
        return str(exc)
    return None


def plan_listing(entries: Sequence[Entry], sizes: Mapping[str, int],
                 local: Callable[[str], Optional[LocalCopy]],
                 journal: Mapping[str, int]) -> Plan:
    """Decide about every entry of the server's new/.

    `sizes`: the server's size of each regular file (absent: it vanished);
    `local(name)`: the local message of that name, or None; `journal`:
    name -> size of the messages an earlier, interrupted run stored locally
    and may not have removed on the server.
    """
    plan = Plan()
    for entry in entries:
        problem = name_problem(entry.name)
        if problem is not None:
            plan.refused.append((entry, problem))
            continue
        if entry.kind != REGULAR:
            plan.refused.append((entry, TYPE_WORDS.get(entry.kind, "not a regular file")))
            continue
        size = sizes.get(entry.name)
        if size is None:
            plan.vanished.append(entry)
            continue
        here = local(entry.name)
        if here is None:
            plan.fetch.append((entry, size))
        elif journal.get(entry.name) == size and here.size == size:
            plan.confirm.append((entry, size))
        else:
            plan.collisions.append((entry, here.path))
    return plan


def removable(candidates: Mapping[str, int], now_sizes: Mapping[str, int]) -> list[str]:
    """The names to remove on the server, in a stable order.

    `candidates`: name -> size of what was durably stored locally (or
    discarded, or confirmed); `now_sizes`: the server's sizes checked just
    before removal (regular files only).  A name is removed only when both
    agree.
    """
    return sorted(name for name, size in candidates.items()
                  if now_sizes.get(name) == size)


def batches(items: Sequence, max_count: int, max_bytes: int,
            size_of: Callable[[object], int]) -> Iterable[list]:
    """Split `items` into runs of at most `max_count` items and about
    `max_bytes` bytes (a single larger item is a batch of its own)."""
    batch: list = []
    total = 0
    for item in items:
        size = size_of(item)
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size
    if batch:
        yield batch


def ranges(indices: Iterable[int]) -> str:
    """Indices as the remote side reads them: "1-4 7 9-10" (sorted)."""
    out: list[str] = []
    run_start = previous = None
    for i in sorted(set(indices)):
        if previous is not None and i == previous + 1:
            previous = i
            continue
        if run_start is not None:
            out.append(str(run_start) if run_start == previous else f"{run_start}-{previous}")
        run_start = previous = i
    if run_start is not None:
        out.append(str(run_start) if run_start == previous else f"{run_start}-{previous}")
    return " ".join(out)


# ------------------------------------------------------------------ rules

@dataclass(frozen=True)
class Action:
    """Where a message goes: kind "inbox", "folder" (target: a Maildir++
    folder name), "discard" or "archive" (inbox plus a copy in the maildir
    `target`)."""

    kind: str
    target: Optional[str] = None
    line: int = 0


INBOX_ACTION = Action("inbox")


def choose(rules: Sequence, header_lines: Sequence[str]) -> Action:
    """The action of the first rule whose regex matches the header, else
    the inbox.  `rules`: objects with `.regex` (compiled as extsmail's
    `match header`, headers.compile_rule) and `.action`.  A header with
    no line matches no rule."""
    if not header_lines:
        return INBOX_ACTION
    text = "\n".join(header_lines)
    for rule in rules:
        if rule.regex.search(text) is not None:
            return rule.action
    return INBOX_ACTION
