"""Unit tests of extsmaild's fallback decision: `plan` and `holds_back`.

Both are pure functions of (externals, failed names, last successes, clock,
mode), so they are tested directly with real `External` values, and with
hypothesis for the invariants: a failed external is never planned, the
externals file's order is kept, batch mode ignores `timeout`.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roammail.extsmail.deliver import holds_back, plan
from roammail.extsmail.externals import External, parse_externals

STARTED = 1_000_000.0  # when the daemon started (seconds, any epoch)


def ext(name: str, timeout: int | None = None) -> External:
    return External(name, f"/bin/{name}", [f"/bin/{name}"], timeout, 1)


def names(externals) -> list[str]:
    return [e.name for e in externals]


# ---------------------------------------------------------------- holds_back


def test_no_timeout_never_holds_back():
    assert not holds_back(ext("a"), {}, STARTED, STARTED + 1, daemon=True)
    assert not holds_back(ext("a"), {}, STARTED, STARTED + 1, daemon=False)


def test_timeout_holds_back_in_daemon_mode_only():
    a = ext("a", timeout=3600)
    assert holds_back(a, {}, STARTED, STARTED + 10, daemon=True)
    assert not holds_back(a, {}, STARTED, STARTED + 10, daemon=False)


def test_timeout_counts_from_the_start_without_a_success():
    a = ext("a", timeout=60)
    assert holds_back(a, {}, STARTED, STARTED + 59.9, daemon=True)
    assert not holds_back(a, {}, STARTED, STARTED + 60, daemon=True)


def test_timeout_counts_from_the_last_success():
    a = ext("a", timeout=60)
    last = {"a": STARTED + 1000}
    assert holds_back(a, last, STARTED, STARTED + 1059, daemon=True)
    assert not holds_back(a, last, STARTED, STARTED + 1060, daemon=True)
    # Another external's success does not count for this one.
    assert not holds_back(a, {"b": STARTED + 1000}, STARTED, STARTED + 1059, daemon=True)


def test_timeout_read_from_an_externals_file_holds_back():
    groups = parse_externals(
        'group { external a { sendmail = "x" timeout = 1h } external b { sendmail = "y" } }',
        "externals")
    a, b = groups[0].externals
    assert a.timeout == 3600
    assert holds_back(a, {}, STARTED, STARTED + 3599, daemon=True)
    assert not holds_back(b, {}, STARTED, STARTED + 3599, daemon=True)


# ---------------------------------------------------------------------- plan


def test_plan_tries_all_in_order_when_nothing_failed():
    chain = [ext("a"), ext("b", timeout=60), ext("c")]
    for daemon in (False, True):
        assert names(plan(chain, set(), {}, STARTED, STARTED + 1, daemon)) == ["a", "b", "c"]


def test_plan_skips_failed_externals():
    chain = [ext("a"), ext("b"), ext("c")]
    assert names(plan(chain, {"a"}, {}, STARTED, STARTED + 1, True)) == ["b", "c"]
    assert names(plan(chain, {"a", "c"}, {}, STARTED, STARTED + 1, False)) == ["b"]
    assert plan(chain, {"a", "b", "c"}, {}, STARTED, STARTED + 1, True) == []


def test_plan_stops_at_a_failed_external_that_holds_back_in_daemon_mode():
    chain = [ext("a"), ext("b", timeout=600), ext("c")]
    # b failed this cycle and is within its timeout: no fall back to c.
    assert names(plan(chain, {"b"}, {}, STARTED, STARTED + 10, True)) == ["a"]
    # Its timeout has passed: fall back.
    assert names(plan(chain, {"b"}, {}, STARTED, STARTED + 601, True)) == ["a", "c"]


def test_batch_plan_ignores_timeouts():
    chain = [ext("a", timeout=600), ext("b", timeout=600), ext("c")]
    assert names(plan(chain, {"a"}, {}, STARTED, STARTED + 10, False)) == ["b", "c"]
    assert names(plan(chain, {"a", "b"}, {}, STARTED, STARTED + 10, False)) == ["c"]


# ---------------------------------------------------------------- properties

NAMES = [f"e{i}" for i in range(8)]


@st.composite
def situations(draw):
    chosen = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=8))
    chain = [ext(name, draw(st.one_of(st.none(), st.integers(1, 1000)))) for name in chosen]
    failed = draw(st.sets(st.sampled_from(NAMES)))
    last = draw(st.dictionaries(st.sampled_from(NAMES),
                                st.floats(STARTED, STARTED + 2000, allow_nan=False)))
    now = draw(st.floats(STARTED, STARTED + 3000, allow_nan=False))
    daemon = draw(st.booleans())
    return chain, failed, last, now, daemon


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(name in it for name in part)


@settings(deadline=None, max_examples=200)
@given(situations())
def test_plan_never_returns_a_failed_external_and_keeps_order(situation):
    chain, failed, last, now, daemon = situation
    result = names(plan(chain, failed, last, STARTED, now, daemon))
    assert not set(result) & failed
    assert is_subsequence(result, names(chain))


@settings(deadline=None, max_examples=200)
@given(situations())
def test_plan_in_batch_mode_is_every_external_not_failed(situation):
    chain, failed, last, now, _ = situation
    result = plan(chain, failed, last, STARTED, now, False)
    assert names(result) == [e.name for e in chain if e.name not in failed]


@settings(deadline=None, max_examples=200)
@given(situations())
def test_plan_in_daemon_mode_stops_only_at_a_holding_failed_external(situation):
    chain, failed, last, now, _ = situation
    result = names(plan(chain, failed, last, STARTED, now, True))
    stop = next((i for i, e in enumerate(chain)
                 if e.name in failed and holds_back(e, last, STARTED, now, True)), len(chain))
    # Everything not failed before the stop is tried, nothing after it.
    assert result == [e.name for e in chain[:stop] if e.name not in failed]


@settings(deadline=None, max_examples=200)
@given(situations())
def test_holds_back_is_false_in_batch_mode_and_without_timeout(situation):
    chain, _, last, now, daemon = situation
    for e in chain:
        assert not holds_back(e, last, STARTED, now, False)
        if e.timeout is None:
            assert not holds_back(e, last, STARTED, now, daemon)
        else:
            expected = now - last.get(e.name, STARTED) < e.timeout
            assert holds_back(e, last, STARTED, now, True) == expected


# --- the command lines read without docopt -------------------------------------


def test_common_command_lines_read_as_docopt_reads_them():
    from docopt import docopt

    from roammail.extsmail import extsmaild

    assert extsmaild._COMMON_COMMAND_LINES  # the table is not empty
    for words in extsmaild._COMMON_COMMAND_LINES:
        assert extsmaild.parse_args(list(words)) == dict(docopt(extsmaild.__doc__,
                                                                argv=list(words))), words


def test_other_command_lines_go_to_docopt():
    from roammail.extsmail import extsmaild

    args = extsmaild.parse_args(["-c", "/x/conf", "-m", "daemon", "--stall-timeout", "5"])
    assert (args["--conf"], args["--mode"], args["--stall-timeout"]) == ("/x/conf", "daemon", "5")
    result = extsmaild.parse_args([])
    result["ID"].append("x")  # the table's answers are fresh each time
    assert extsmaild.parse_args([])["ID"] == []
