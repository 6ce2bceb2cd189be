"""syncmail/plan.py: syncmail's decisions, as pure functions.

Owns what syncmail decides, and nothing it does: which entries of the
server's new/ are fetched, refused, left alone or only removed; where a
message goes by the rules; which server files may be removed.  It never
touches a file, a process or the network: cli.py gathers the facts
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
- `batch_length` keeps every message in exactly one batch, in order;
  `batch_limit` never asks for an empty batch nor one over the maximum.

The value classes are config._Frozen's (frozen, compared by their
__slots__), not dataclasses: syncmail imports this module while ssh logs
in, and dataclasses (with inspect) costs about 20 ms to import, more than
the rest of the module.
"""

from __future__ import annotations

from ..core.errors import DataError
from ..core.maildir import check_message_name
from ..core.tokens import _Frozen

TYPE_CHECKING = False  # typing costs ~15 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable, Iterable, Mapping, Optional, Sequence

# Entry types as the server's listing reports them.
REGULAR = "f"
SYMLINK = "l"
DIRECTORY = "d"
OTHER = "o"

TYPE_WORDS = {SYMLINK: "a symbolic link", DIRECTORY: "a directory",
              OTHER: "not a regular file (fifo, socket or device)"}


class Entry(_Frozen):
    """One entry of the server's new/: its index in the listing, type, name."""

    __slots__ = ("index", "kind", "name")
    index: int
    kind: str
    name: str

    def __init__(self, index: int, kind: str, name: str) -> None:
        self._set("index", index)
        self._set("kind", kind)
        self._set("name", name)


class LocalCopy(_Frozen):
    """A local message of the same name: where it is and its size."""

    __slots__ = ("path", "size")
    path: str
    size: int

    def __init__(self, path: str, size: int) -> None:
        self._set("path", path)
        self._set("size", size)


class Plan:
    """What to do with one listing.

    fetch: entries to copy (their sizes are asked later, a batch ahead);
    confirm: (entry, size) already here from an interrupted run (journal),
    to remove on the server only, if the server's size is that size;
    collisions: (entry, local path) left on the server; refused: (entry,
    reason) left alone.
    """

    __slots__ = ("fetch", "confirm", "collisions", "refused")

    def __init__(self) -> None:
        self.fetch: list = []
        self.confirm: list = []
        self.collisions: list = []
        self.refused: list = []


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


def batch_limit(batch: int, started: int, left: int) -> int:
    """How many messages the next batch may hold: `batch`, except that
    the first two batches of a run (`started` is how many began before)
    hold a quarter and a half of it, and that no batch holds more than
    half of the `left` messages not in one yet (rounded up); never less
    than a tenth of `batch`, nor less than 1.

    Why: a batch is removed on the server only once it is durable here
    and its check has come back, two tar streams later (the server
    answers in order).  Small first batches start that sooner, while
    most of the mail is still coming; small last batches leave little to
    land, check and remove after the last byte has arrived, when nothing
    overlaps with it."""
    least = max(1, batch // 10)
    limit = min(batch, max(least, -(-left // 2)))
    if started < 2:
        limit = min(limit, max(least, batch >> (2 - started)))
    return limit


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

class Action(_Frozen):
    """Where a message goes: kind "inbox", "folder" (target: a Maildir++
    folder name), "discard" or "archive" (inbox plus a copy in the maildir
    `target`); `line`, the rule's line in the configuration."""

    __slots__ = ("kind", "target", "line")
    kind: str
    target: Optional[str]
    line: int

    def __init__(self, kind: str, target: Optional[str] = None, line: int = 0) -> None:
        self._set("kind", kind)
        self._set("target", target)
        self._set("line", line)


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
