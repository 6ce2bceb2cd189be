"""Unit and property tests of roammail.core.times."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roammail.core.times import MAX_SECONDS, parse_seconds, parse_time, render_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0s", 0),
        ("1s", 1),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("2d", 172800),
        ("007m", 420),
        ("36500d", 36500 * 86400),
        (f"{MAX_SECONDS}s", MAX_SECONDS),
    ],
)
def test_parse_time(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds
    assert isinstance(parse_time(text), int)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "12",
        "0",
        "5x",
        "5M",
        "5 m",
        " 5m",
        "5m ",
        "+5m",
        "-5m",
        "1.5h",
        "1h30m",
        "5ms",
        "\uff15m",  # fullwidth digit five
        "\u0665m",  # Arabic-Indic digit five
        "5m\n",
        "36501d",
        f"{MAX_SECONDS + 1}s",
        "9" * 13 + "s",
        "9" * 10000 + "s",  # above Python's int() digit limit: still ValueError
    ],
)
def test_parse_time_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_parse_time_bare_number_message() -> None:
    with pytest.raises(ValueError, match="needs a unit"):
        parse_time("12")


def test_parse_time_long_input_gives_short_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_time("9" * 10000 + "s")
    assert len(str(info.value)) < 100


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0),
        ("30", 30.0),
        ("2.5", 2.5),
        ("0.25", 0.25),
        ("86400", 86400.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
    ],
)
def test_parse_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds
    assert isinstance(parse_seconds(text), float)


@pytest.mark.parametrize(
    "text",
    ["", "-1", "+1", "1e3", "inf", "nan", ".5", "5.", "1,5", " 30", "30 ", "5x", "1h30m",
     str(MAX_SECONDS + 1), "9" * 20, "9" * 5000 + ".5"],
)
def test_parse_seconds_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_seconds(text)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0 seconds"),
        (0.9, "0 seconds"),
        (1, "1 second"),
        (1.5, "1 second"),
        (2, "2 seconds"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (61, "1 minute"),
        (119, "1 minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "1 hour"),
        (3659, "1 hour"),
        (3660, "1 hour 1 minute"),
        (7200, "2 hours"),
        (7260, "2 hours 1 minute"),
        (7500, "2 hours 5 minutes"),
        (86399, "23 hours 59 minutes"),
        (86400, "1 day"),
        (86400 + 3599, "1 day"),
        (86400 + 3600, "1 day 1 hour"),
        (2 * 86400, "2 days"),
        (3 * 86400 + 5 * 3600, "3 days 5 hours"),
        (400 * 86400, "400 days"),
    ],
)
def test_render_duration(seconds: float, text: str) -> None:
    assert render_duration(seconds) == text


def test_render_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        render_duration(-1)


@given(st.integers(min_value=0, max_value=MAX_SECONDS), st.sampled_from("smhd"))
def test_parse_time_matches_arithmetic(n: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if n * factor > MAX_SECONDS:
        with pytest.raises(ValueError):
            parse_time(f"{n}{unit}")
    else:
        assert parse_time(f"{n}{unit}") == n * factor
        assert parse_seconds(f"{n}{unit}") == n * factor


@given(st.text())
def test_parse_time_raises_only_value_error(text: str) -> None:
    try:
        seconds = parse_time(text)
    except ValueError:
        return
    assert 0 <= seconds <= MAX_SECONDS


@given(st.text())
def test_parse_seconds_raises_only_value_error(text: str) -> None:
    try:
        seconds = parse_seconds(text)
    except ValueError:
        return
    assert 0 <= seconds <= MAX_SECONDS


@given(st.integers(min_value=0, max_value=10 * MAX_SECONDS))
def test_render_duration_shape(seconds: int) -> None:
    words = render_duration(seconds).split()
    assert len(words) in (2, 4)
    numbers = [int(w) for w in words[::2]]
    units = words[1::2]
    for number, unit in zip(numbers, units):
        assert unit.rstrip("s") in ("second", "minute", "hour", "day")
        assert unit.endswith("s") == (number != 1)
    # The text never claims more time than there was, and drops less than
    # the precision its leading unit implies.
    value = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    precision = {"second": 1, "minute": 60, "hour": 60, "day": 3600}
    total = sum(n * value[u.rstrip("s")] for n, u in zip(numbers, units))
    assert total <= seconds < total + precision[units[0].rstrip("s")]
    if len(units) == 2:
        assert numbers[1] != 0


# times.py scans characters by hand (no `re`: extsmail imports it for every
# mail).  These check the hand scanning against the grammar as regexes.
TIME_RE = re.compile(r"[0-9]+[dhms]")
NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
near_misses = st.text(alphabet="0123456789dhmsx.+- \n\u0665\uff15\u00b2", max_size=8)


@given(st.one_of(near_misses, st.text(max_size=8)))
def test_parse_time_accepts_exactly_the_grammar(text: str) -> None:
    try:
        parse_time(text)
    except ValueError as e:
        matched = TIME_RE.fullmatch(text) is not None
        assert matched == ("100 years" in str(e)), (text, str(e))
        if not matched:
            bare = re.fullmatch(r"[0-9]+", text) is not None
            assert bare == ("needs a unit" in str(e)), (text, str(e))
    else:
        assert TIME_RE.fullmatch(text)


@given(st.one_of(near_misses, st.text(max_size=8)))
def test_parse_seconds_accepts_exactly_the_grammar(text: str) -> None:
    try:
        parse_seconds(text)
    except ValueError as e:
        matched = TIME_RE.fullmatch(text) or NUMBER_RE.fullmatch(text)
        assert bool(matched) == ("100 years" in str(e)), (text, str(e))
    else:
        assert TIME_RE.fullmatch(text) or NUMBER_RE.fullmatch(text)
