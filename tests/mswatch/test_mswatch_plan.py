"""mswatch.plan: the scheduling rules, driven by hypothesis through random
histories of changes, sync outcomes, full-sync requests and time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roammail.mswatch.plan import Schedule, StartSync, Timing, Wait, decide, sync_argv

NAMES = ["INBOX", "lists", "Sent", "Trash"]

timings = st.builds(
    Timing,
    base_delay=st.sampled_from([0.0, 0.5, 2.0, 10.0]),
    inter_delay=st.sampled_from([0.0, 1.0, 5.0, 60.0]),
    inter_delays=st.dictionaries(st.sampled_from(NAMES), st.sampled_from([0.0, 3.0, 30.0]),
                                 max_size=2),
    max_delay=st.sampled_from([1.0, 8.0, 600.0]),
    poll_period=st.sampled_from([0.0, 50.0, 1000.0]),
    ignore=st.frozensets(st.sampled_from(NAMES), max_size=1),
)
events = st.lists(st.one_of(
    st.tuples(st.just("change"), st.sampled_from(NAMES)),
    st.tuples(st.just("advance"), st.floats(0, 30)),
    st.tuples(st.just("finish"), st.booleans()),
    st.tuples(st.just("full"), st.booleans()),
), max_size=60)


class World:
    """Runs the schedule as mswatch/cli.py does and records what happened."""

    def __init__(self, timing: Timing) -> None:
        self.s = Schedule(timing)
        self.t = timing
        self.now = 0.0
        self.syncs: list[tuple[float, StartSync, dict]] = []  # start, action, pending then
        self.outcomes: list[bool] = []
        self.changes: list[tuple[str, float]] = []
        self.s.want_full(0.0)

    def step(self) -> None:
        """Start every sync decide() asks for now (at most one: one at a time)."""
        action = decide(self.s, self.now)
        if isinstance(action, StartSync):
            assert self.s.running is None
            self.syncs.append((self.now, action, dict(self.s.pending)))
            self.s.started(action, self.now)
            again = decide(self.s, self.now)
            assert again == Wait(None), "a second sync while one runs"
        else:
            assert action.until is None or action.until > self.now - 1e-9

    def apply(self, event) -> None:
        kind, arg = event
        if kind == "change":
            self.changes.append((arg, self.now))
            self.s.note_change(arg, self.now)
        elif kind == "advance":
            self.now += arg
        elif kind == "finish" and self.s.running is not None:
            self.outcomes.append(arg)
            self.s.finished(arg, self.now)
        elif kind == "full":
            self.s.want_full(self.now, forced=arg)
        self.step()

    def settle(self) -> None:
        """No more events; every sync succeeds: run until nothing is left."""
        for _ in range(1000):
            if self.s.running is not None:
                self.now += 0.5
                self.outcomes.append(True)
                self.s.finished(True, self.now)
            action = decide(self.s, self.now)
            if isinstance(action, StartSync):
                self.step()
                continue
            if action.until is None or (not self.s.pending and not self.s.full_wanted):
                return
            self.now = max(self.now, action.until)
        raise AssertionError("the schedule never settles")


@settings(max_examples=400, deadline=None)
@given(timings, events)
def test_rules(timing: Timing, history) -> None:
    w = World(timing)
    w.step()
    for event in history:
        w.apply(event)
    w.settle()
    assert not w.s.pending and not w.s.full_wanted and w.s.running is None

    # base_delay: a sync of changed mailboxes starts only once one of them
    # has waited base_delay since its first queued change.
    for start, action, pending in w.syncs:
        if not action.full:
            assert action.names
            assert all(n in pending for n in action.names)
            assert any(pending[n] + timing.base_delay <= start + 1e-9 for n in action.names)
            assert not set(action.names) & timing.ignore

    # inter_delay: after a successful sync of a mailbox, no other sync
    # covers it within its inter_delay, unless it is a full sync.
    done = list(zip(w.syncs, w.outcomes))
    for i, ((start, action, pending), ok) in enumerate(done):
        if not ok:
            continue
        covered = set(pending) if action.full else set(action.names)
        for later_start, later, _ in w.syncs[i + 1:]:
            if later.full:
                continue
            for name in covered & set(later.names):
                assert later_start - start >= timing.inter(name) - 1e-9, (name, start,
                                                                          later_start)

    # Every change is synced: some successful sync started at or after it
    # covers the mailbox.  (Ignored ones wait for the next full sync.)
    for name, when in w.changes:
        if name in timing.ignore:
            continue
        assert any(ok and start >= when and (action.full or name in action.names)
                   for (start, action, _), ok in done), (name, when)


@given(timings)
def test_backoff_doubles_to_max_delay(timing: Timing) -> None:
    s = Schedule(timing)
    s.want_full(0.0)
    now, delays = 0.0, []
    for _ in range(12):
        action = decide(s, now)
        assert action == StartSync((), True)
        s.started(action, now)
        s.finished(False, now)
        wait = decide(s, now)
        assert isinstance(wait, Wait)
        delays.append(wait.until - now)
        now = wait.until
    assert delays[0] == min(timing.max_delay, max(1.0, timing.base_delay))
    for a, b in zip(delays, delays[1:]):
        assert b == min(timing.max_delay, a * 2)
    s.started(decide(s, now), now)
    s.finished(True, now)
    assert s.backoff == 0 and s.retry_at is None


def test_forced_full_ignores_backoff() -> None:
    s = Schedule(Timing(max_delay=600))
    s.want_full(0.0)
    s.started(decide(s, 0.0), 0.0)
    s.finished(False, 0.0)
    assert isinstance(decide(s, 0.5), Wait)
    s.want_full(0.5, forced=True)
    assert decide(s, 0.5) == StartSync((), True)


def test_change_during_sync_queues_the_next() -> None:
    s = Schedule(Timing(base_delay=1, inter_delay=5))
    s.note_change("INBOX", 0.0)
    a = decide(s, 1.0)
    assert a == StartSync(("INBOX",), False)
    s.started(a, 1.0)
    s.note_change("INBOX", 2.0)
    assert decide(s, 2.0) == Wait(None)
    s.finished(True, 3.0)
    assert decide(s, 3.0) == Wait(6.0)  # inter_delay from the start at 1.0
    assert decide(s, 6.0) == StartSync(("INBOX",), False)


def test_sync_argv() -> None:
    assert sync_argv(["mbsync"], (), True, None, "") == ["mbsync", ""]
    assert sync_argv(["mbsync"], (), True, "work", ":") == ["mbsync", "work"]
    assert sync_argv(["mbsync"], ("INBOX", "a.b"), False, "work", ":") == [
        "mbsync", "work:INBOX", "work:a.b"]
    assert sync_argv(["s", "-q"], ("INBOX",), False, None, "") == ["s", "-q", "INBOX"]
