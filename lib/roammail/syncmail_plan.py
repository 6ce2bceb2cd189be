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
  server's file is still a regular file of that size.
- `plan_listing` never fetches a name that exists locally: such a name is
  either confirmed by the journal (remove only) or a collision (left on
  the server, reported).
- `batch_length` keeps every message in exactly one batch, in order.
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

    fetch: entries to copy (their sizes are asked later, a batch ahead);
    confirm: (entry, size) already here from an interrupted run (journal),
    to remove on the server only, if the server's size is that size;
    collisions: (entry, local path) left on the server; refused: (entry,
    reason) left alone.
    """

    fetch: list = field(default_factory=list)
    confirm: list = field(default_factory=list)
    collisions: list = field(default_factory=list)
    refused: list = field(default_factory=list)


def name_problem(name: str) -> Optional[str]:
    """Why `name` cannot be a message name (maildir.check_message_name), or None."""
    try:
        check_message_name(name)
    except DataError as exc:
        return str(exc)
    return None


def plan_listing(entries: Sequence[Entry], local: Callable[[str], Optional[LocalCopy]],
                 journal: Mapping[str, int]) -> Plan:
    """Decide about every entry of the server's new/.

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
        here = local(entry.name)
        if here is None:
            plan.fetch.append(entry)
        elif journal.get(entry.name) == here.size:
            plan.confirm.append((entry, here.size))
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


def batch_length(sizes: Iterable[int], max_count: int, max_bytes: int) -> int:
    """How many of the next messages (their `sizes`, in order) make one
    batch: at most `max_count`, and about `max_bytes` (a single larger
    message is a batch of its own)."""
    count = total = 0
    for size in sizes:
        if count and (count >= max_count or total + size > max_bytes):
            break
        count += 1
        total += size
    return count


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
