"""mswatch/plan.py: mswatch's scheduling decisions, as pure code.

Owns WHEN a sync runs and WHICH mailboxes it covers.  `Schedule` holds the
state (pending mailboxes with the time of their first queued change, the
start time of the last sync of each mailbox, whether a full sync is wanted,
the failure backoff, whether a sync is running); `decide(schedule, now)`
returns the next action: `StartSync(names, full)` or `Wait(until)`.  The
event loop (mswatch/cli.py) tells the schedule what happened (`note_change`,
`want_full`, `started`, `finished`) and does the I/O.

Rules (mswatch(1) documents them):
- One sync at a time: while one runs, the answer is Wait(None).
- A sync starts no sooner than base_delay after the first queued change of
  a mailbox it covers, and covers every pending mailbox whose own
  inter_delay has passed since the start of its last successful sync.
- A mailbox is never synced twice within its inter_delay, except by a full
  sync (which covers everything: at start, after a watcher restarts, every
  poll_period, on SIGUSR2).  A failed sync does not count: its mailboxes
  go back to the queue with their first-change times.
- After a failed sync nothing starts before the backoff has passed: it is
  max(1 s, base_delay) after the first failure, doubling, capped at
  max_delay; a success resets it, and so does the network coming back
  (reset_backoff).  A forced full sync (SIGUSR2) ignores it.
- `ignore`d mailboxes are never queued: they are synced by full syncs only.

Must never: read the clock, sleep, or do I/O; every time comes in `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

BACKOFF_MIN = 1.0  # seconds: the shortest first retry after a failed sync


@dataclass(frozen=True)
class Timing:
    """The delays of ~/.mswatchrc, in seconds."""

    base_delay: float = 10.0
    inter_delay: float = 60.0
    inter_delays: Mapping[str, float] = field(default_factory=dict)  # per mailbox
    max_delay: float = 600.0
    poll_period: float = 86400.0  # 0: never
    ignore: frozenset = frozenset()

    def inter(self, name: str) -> float:
        return self.inter_delays.get(name, self.inter_delay)

    def first_backoff(self) -> float:
        return min(self.max_delay, max(BACKOFF_MIN, self.base_delay))


@dataclass(frozen=True)
class StartSync:
    names: tuple  # sorted mailbox names; () for a full sync
    full: bool


@dataclass(frozen=True)
class Wait:
    until: Optional[float]  # None: until something happens


Action = Union[StartSync, Wait]


@dataclass
class Schedule:
    timing: Timing
    pending: dict = field(default_factory=dict)     # name -> first queued change
    last_sync: dict = field(default_factory=dict)   # name -> start of last good sync
    full_wanted: bool = False
    full_forced: bool = False                       # SIGUSR2: ignores the backoff
    last_full: Optional[float] = None               # start of the last good full sync
    running: Optional[StartSync] = None
    running_since: float = 0.0
    failures: int = 0
    backoff: float = 0.0
    retry_at: Optional[float] = None
    _saved: dict = field(default_factory=dict)      # last_sync before the running sync
    _saved_pending: dict = field(default_factory=dict)  # their first-change times

    # -- what happened -----------------------------------------------------

    def note_change(self, name: str, now: float) -> bool:
        """A watcher reported `name`; False when it is ignored (full syncs only)."""
        if name in self.timing.ignore:
            return False
        self.pending.setdefault(name, now)
        return True

    def want_full(self, now: float, forced: bool = False) -> None:
        self.full_wanted = True
        self.full_forced = self.full_forced or forced

    def reset_backoff(self) -> None:
        """Forget the failures so far (the network came back): the next
        sync may start at once."""
        self.failures, self.backoff, self.retry_at = 0, 0.0, None

    def started(self, action: StartSync, now: float) -> None:
        """The loop started `action` (as decide() returned it) at `now`."""
        assert self.running is None, "one sync at a time"
        self.running = action
        self.running_since = now
        covered = list(self.pending) if action.full else list(action.names)
        self._saved = {n: self.last_sync.get(n) for n in covered}
        self._saved_pending = {n: self.pending[n] for n in covered if n in self.pending}
        for name in covered:
            self.pending.pop(name, None)
            self.last_sync[name] = now
        if action.full:
            self.full_wanted = False
            self.full_forced = False

    def finished(self, ok: bool, now: float) -> None:
        """The running sync ended, with success `ok`, at `now`."""
        action = self.running
        assert action is not None, "finished() without a running sync"
        self.running = None
        if ok:
            if action.full:
                self.last_full = self.running_since
            self.failures, self.backoff, self.retry_at = 0, 0.0, None
            return
        # Not synced after all: back in the queue, earliest change kept.
        for name, before in self._saved.items():
            if before is None:
                self.last_sync.pop(name, None)
            else:
                self.last_sync[name] = before
        for name, first in self._saved_pending.items():
            self.pending[name] = min(first, self.pending.get(name, first))
        if action.full:
            self.full_wanted = True
        self.failures += 1
        self.backoff = (self.timing.first_backoff() if self.failures == 1
                        else min(self.timing.max_delay, self.backoff * 2))
        self.retry_at = now + self.backoff

    # -- reading -------------------------------------------------------------

    def due_at(self, name: str) -> float:
        """When pending `name` may be synced: base_delay and inter_delay both passed."""
        first = self.pending[name]
        last = self.last_sync.get(name)
        ready = first + self.timing.base_delay
        if last is not None:
            ready = max(ready, last + self.timing.inter(name))
        return ready

    def next_poll(self) -> Optional[float]:
        if not self.timing.poll_period or self.last_full is None:
            return None
        return self.last_full + self.timing.poll_period


def decide(s: Schedule, now: float) -> Action:
    """The next action for schedule `s` at time `now`."""
    if s.running is not None:
        return Wait(None)
    if s.full_forced:
        return StartSync((), True)
    if s.retry_at is not None and now < s.retry_at:
        return Wait(s.retry_at)
    poll = s.next_poll()
    if s.full_wanted or (poll is not None and now >= poll):
        return StartSync((), True)
    waits = [t for t in (poll,) if t is not None]
    eligible = []
    trigger = False
    for name, first in s.pending.items():
        last = s.last_sync.get(name)
        if last is not None and now < last + s.timing.inter(name):
            waits.append(s.due_at(name))
            continue
        eligible.append(name)
        if now >= first + s.timing.base_delay:
            trigger = True
        else:
            waits.append(first + s.timing.base_delay)
    if trigger:
        return StartSync(tuple(sorted(eligible)), False)
    return Wait(min(waits) if waits else None)


def sync_argv(sync: list, names: tuple, full: bool, prefix: Optional[str],
              separator: str) -> list:
    """`sync + mailboxes`: "" (or the prefix alone) for everything, else
    PREFIX+SEP+NAME (or NAME) per mailbox."""
    if full:
        return [*sync, prefix if prefix is not None else ""]
    if prefix is None:
        return [*sync, *names]
    return [*sync, *(prefix + separator + name for name in names)]
