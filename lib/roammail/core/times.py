"""times.py: durations as the config files write them and as people read them.

Owns the TIME syntax of the extsmail files (`[0-9]+[dhms]`, e.g. "30m"),
the "seconds or TIME" values of ~/.mswatchrc ("2.5", "5m"), and the human
text of a duration ("2 hours 5 minutes") used in notifications and logs.
Pure functions: no clock, no I/O.  Bad input raises ValueError; callers that
know a file and line turn it into ConfigError.
"""

# No `re` here: config imports this module, and extsmail (run for every mail
# sent) imports config; scanning a few characters by hand costs nothing.

# Largest duration we accept: anything longer is a typo, not a timeout.
MAX_SECONDS = 100 * 365 * 24 * 60 * 60  # 100 years, in seconds
# More digits than this cannot be under MAX_SECONDS; checked before int() so
# a 10,000-digit "number" is refused at once.
_MAX_DIGITS = 12

UNIT_SECONDS = {"s": 1, "m": 60, "h": 60 * 60, "d": 24 * 60 * 60}


def _is_digits(text: str) -> bool:
    """True when text is one or more ASCII digits, `[0-9]+` (no other Unicode digits)."""
    return text.isascii() and text.isdigit()


def _is_time(text: str) -> bool:
    """True when text is exactly `[0-9]+[dhms]`."""
    return text[-1:] in UNIT_SECONDS and _is_digits(text[:-1])


def parse_time(text: str) -> int:
    """Return the seconds of a TIME such as "30s", "5m", "1h", "2d".

    Exactly `[0-9]+[dhms]`: no sign, no spaces, no fraction, no bare number.
    Raises ValueError on anything else or on more than 100 years.
    """
    if not _is_time(text):
        if _is_digits(text):
            raise ValueError(f"bad time {_shorten(text)!r}: a number needs a unit (d, h, m or s)")
        raise ValueError(f"bad time {_shorten(text)!r}: expected digits then d, h, m or s")
    digits, unit = text[:-1], text[-1]
    if len(digits) > _MAX_DIGITS:
        raise ValueError(f"time {_shorten(text)!r} is more than 100 years")
    seconds = int(digits) * UNIT_SECONDS[unit]
    if seconds > MAX_SECONDS:
        raise ValueError(f"time {_shorten(text)!r} is more than 100 years")
    return seconds


def parse_seconds(text: str) -> float:
    """Return the seconds of a plain number ("30", "2.5") or of a TIME ("5m").

    Raises ValueError on anything else (signs, spaces, exponents, "inf",
    "nan") or on more than 100 years.
    """
    if _is_time(text):
        return float(parse_time(text))
    int_part, dot, fraction = text.partition(".")
    if not _is_digits(int_part) or (dot and not _is_digits(fraction)):
        raise ValueError(
            f"bad duration {_shorten(text)!r}: expected seconds (30, 2.5) or a time (30s, 5m)"
        )
    if len(int_part) > _MAX_DIGITS or float(text) > MAX_SECONDS:
        raise ValueError(f"time {_shorten(text)!r} is more than 100 years")
    return float(text)


def render_duration(seconds: float) -> str:
    """Return a human text for a duration, e.g. "2 hours 5 minutes".

    Fractions of a second are dropped.  Under a minute: "N seconds"; under an
    hour: "N minutes"; under a day: "H hours M minutes"; otherwise
    "D days H hours".  A zero second part is left out ("1 hour", "3 days");
    0 is "0 seconds".  Raises ValueError on a negative duration.
    """
    if seconds < 0:
        raise ValueError(f"negative duration {seconds!r}")
    total = int(seconds)
    if total < 60:
        return _count(total, "second")
    if total < 60 * 60:
        return _count(total // 60, "minute")
    if total < 24 * 60 * 60:
        return _two(total // 3600, "hour", total % 3600 // 60, "minute")
    return _two(total // 86400, "day", total % 86400 // 3600, "hour")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    text = _count(big, big_unit)
    return f"{text} {_count(small, small_unit)}" if small else text


def _shorten(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
