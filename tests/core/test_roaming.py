"""core.roaming's settling decision, driven with a fake clock."""

from __future__ import annotations

import pytest

from roammail.core.roaming import MAX_HOLD, NetState, Settler

OFFLINE = NetState()
ONLINE = NetState(frozenset({(2, "10.0.0.1", 2)}), frozenset({(2, "10.0.0.2/24", 2)}), "a")
MOVED = NetState(frozenset({(2, "10.0.0.3", 2)}), ONLINE.addresses, "a")


def test_nothing_new_opens_no_window() -> None:
    settler = Settler(2.0, ONLINE)
    settler.note_state(0.0, ONLINE)
    assert settler.deadline() is None


def test_a_burst_ends_settle_seconds_after_its_last_change() -> None:
    settler = Settler(2.0, OFFLINE)
    settler.note_state(0.0, ONLINE)
    settler.note_state(1.5, OFFLINE)
    settler.note_state(3.0, ONLINE)
    assert settler.deadline() == 5.0
    assert settler.settle_now(ONLINE) == ["online"]
    assert settler.deadline() is None


def test_a_link_that_never_stops_flapping_is_held_back_at_most_max_hold_settles() -> None:
    settler = Settler(1.0, ONLINE)
    for tick in range(100):
        settler.note_state(tick * 0.1, OFFLINE if tick % 2 else ONLINE)
    # The window opened at 0.1, the first change from ONLINE.
    assert settler.deadline() == pytest.approx(0.1 + MAX_HOLD * 1.0)


def test_back_where_it_was_is_changed_when_online_and_nothing_when_offline() -> None:
    online = Settler(2.0, ONLINE)
    online.note_state(0.0, OFFLINE)
    online.note_state(0.1, ONLINE)
    assert online.settle_now(ONLINE) == ["changed"]
    offline = Settler(2.0, OFFLINE)
    offline.note_state(0.0, ONLINE)
    offline.note_state(0.1, OFFLINE)
    assert offline.settle_now(OFFLINE) == []


def test_resumed_comes_first_and_once() -> None:
    settler = Settler(2.0, ONLINE)
    settler.note_resumed(0.0)
    settler.note_resumed(0.5)
    settler.note_state(0.6, MOVED)
    assert settler.settle_now(MOVED) == ["resumed", "changed"]
    settler.note_connected(10.0)
    assert settler.settle_now(MOVED) == ["changed"]
