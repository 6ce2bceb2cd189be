"""The pure decision of smtpdcheck: which server to report, and when.

`decide(prios, match, up)` sees what is known so far (None: not yet) and
says whether the answer is settled.  The property tests hold it to the
original's sequential algorithm, written out again below independently:
whatever the servers' states and whatever order the facts arrive in (the
parallel probes finish in any order), a decided answer is the original's,
and once everything is known the answer is decided.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roammail.smtpdcheck.decide import candidacy, decide


def original(prios: list, match: list, up: list) -> int | None:
    """Mail Avenger's smtpdcheck, one server after the other: find where
    --stop is (and its priority), then walk the list up to there, skipping
    servers of the same priority as the stop server (or a worse one)."""
    stop_at = len(prios)
    for i, matches in enumerate(match):
        if matches:
            stop_at = i
            break
    stop_prio = prios[stop_at] if stop_at < len(prios) else None
    for i in range(stop_at):
        if stop_prio is not None and prios[i] is not None and prios[i] >= stop_prio:
            continue
        if up[i]:
            return i
    return None


prio_st = st.one_of(st.none(), st.integers(min_value=0, max_value=4))


@st.composite
def worlds(draw, max_servers: int = 7):
    n = draw(st.integers(min_value=0, max_value=max_servers))
    prios = draw(st.lists(prio_st, min_size=n, max_size=n))
    match = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    up = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return prios, match, up


# ------------------------------------------------------------ the examples


def test_man_page_first_example_same_priority_is_never_reported():
    # --stop s2 10:s1 10:s2 20:s3: "always succeed, regardless of s1"
    for s1_up in (True, False):
        assert decide([10, 10, 20], [False, True, False], [s1_up, True, True]) == (True, None)


def test_man_page_second_example_more_preferred_is_reported():
    # --stop s2 10:s1 20:s2 30:s3: s1 is reported when up
    assert decide([10, 20, 30], [False, True, False], [True, True, True]) == (True, 0)
    assert decide([10, 20, 30], [False, True, False], [False, True, True]) == (True, None)


def test_first_up_in_argument_order_wins_without_stop():
    assert decide([30, 10], [False, False], [True, True]) == (True, 0)
    assert decide([None, None, None], [False] * 3, [False, False, True]) == (True, 2)


def test_servers_at_or_after_the_stop_are_never_reported():
    assert decide([None, None, None], [False, True, False], [False, True, True]) == (True, None)
    assert decide([None, None], [True, False], [True, True]) == (True, None)


def test_waits_for_an_earlier_candidate_still_unknown():
    assert decide([None, None], [False, False], [None, True]) == (False, None)
    assert decide([None, None], [False, False], [False, True]) == (True, 1)


def test_an_up_server_waits_until_no_later_equal_priority_server_can_be_the_stop():
    # 10:a up, 10:b not yet resolved: b may be the local host
    assert decide([10, 10], [False, None], [True, None]) == (False, None)
    assert decide([10, 10], [False, False], [True, None]) == (True, 0)
    assert decide([10, 20], [False, None], [True, None]) == (True, 0)


def test_an_unknown_match_before_the_answer_also_waits():
    # a is down but might be the stop server: b would then not be reported
    assert decide([None, None], [None, False], [False, True]) == (False, None)
    assert decide([None, None], [False, False], [False, True]) == (True, 1)


def test_a_server_surely_excluded_needs_no_probe():
    # --stop b, 10:a 10:b 20:c: a is the same priority as b, so a's state is irrelevant
    assert decide([10, 10, 20], [False, True, False], [None, None, None]) == (True, None)
    relevant, possible, certain = zip(*candidacy([10, 10, 20], [False, True, False]))
    assert possible == (False, False, False)
    assert relevant == (True, False, False)


def test_no_servers_none_up():
    assert decide([], [], []) == (True, None)


# -------------------------------------------------------------- properties


@given(worlds())
def test_with_everything_known_it_is_the_original(world):
    prios, match, up = world
    assert decide(prios, match, up) == (True, original(prios, match, up))


@settings(max_examples=400)
@given(worlds(), st.randoms(use_true_random=False))
def test_parallel_equals_sequential_in_any_order_of_arrival(world, rnd):
    """Facts arrive in any order (probes and lookups finish when they do);
    every decided answer along the way is the sequential one."""
    prios, match, up = world
    n = len(prios)
    expected = original(prios, match, up)
    facts = [("match", i) for i in range(n)] + [("up", i) for i in range(n)]
    rnd.shuffle(facts)
    known_match: list = [None] * n
    known_up: list = [None] * n
    decided, answer = decide(prios, known_match, known_up)
    for kind, i in facts:
        if decided:
            assert answer == expected
        if kind == "match":
            known_match[i] = match[i]
        else:
            known_up[i] = up[i]
        decided, answer = decide(prios, known_match, known_up)
    assert (decided, answer) == (True, expected)


@given(worlds())
def test_decided_as_soon_as_every_earlier_candidate_is_down(world):
    """With the matches known, the states of the answer and of the
    candidates before it are enough: nothing later is waited for."""
    prios, match, up = world
    expected = original(prios, match, up)
    relevant, possible, certain = zip(*candidacy(prios, match)) if prios else ((), (), ())
    last = len(prios) - 1 if expected is None else expected
    partial_up = [up[i] if i <= last and possible[i] else None for i in range(len(prios))]
    assert decide(prios, match, partial_up) == (True, expected)


@given(worlds(), st.randoms(use_true_random=False))
def test_candidates_only_shrink_as_matches_become_known(world, rnd):
    """What the probes are started for stays valid: learning a match never
    makes a server a possible candidate that was not one before."""
    prios, match, _up = world
    n = len(prios)
    known: list = [None] * n
    before = [p for _r, p, _c in candidacy(prios, known)]
    order = list(range(n))
    rnd.shuffle(order)
    for i in order:
        known[i] = match[i]
        after = [p for _r, p, _c in candidacy(prios, known)]
        assert all(b or not a for a, b in zip(after, before))
        before = after


@given(worlds())
def test_certain_implies_possible(world):
    prios, match, _up = world
    for i in range(len(prios)):
        unknown = list(match)
        unknown[i:] = [None] * (len(prios) - i)
        for table in (candidacy(prios, match), candidacy(prios, unknown)):
            for relevant, possible, certain in table:
                assert not certain or possible
                assert not possible or relevant


@pytest.mark.parametrize("n", [50, 200])
def test_long_lists_decide_quickly(n):
    prios = [i // 3 for i in range(n)]
    match: list = [None] * n
    up: list = [None] * n
    assert decide(prios, match, up) == (False, None)
    match = [False] * n
    up = [False] * (n - 1) + [True]
    assert decide(prios, match, up) == (True, n - 1)
