"""syncmail reads plain command lines without docopt; docopt-ng has the
last word on every other.  Wherever the plain reader answers, it must
give exactly docopt's dictionary."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roammail.core.cli import docopt_args
from roammail.core.errors import UsageError
from roammail.syncmail import cli as syncmail

OPTIONS = st.sampled_from(["-n", "-v", "-q", "--dry-run", "--verbose", "--quiet", "-c",
                           "--config", "--hooks", "-h", "--help", "-V", "--version",
                           "--offline-ok"])
OPERANDS = st.sampled_from(["a", "b c", "host:Maildir", "h:/srv/mail", "~/Mail", "", "x:"])
ODD = st.sampled_from(["--", "-", "-x", "-nv", "-cX", "--config=c.conf", "--hooks=h", "--dry",
                       "-c=x", "-vq"])
# Mostly words the plain reader takes, so that it answers often.
WORDS = st.one_of(OPTIONS, OPTIONS, OPERANDS, OPERANDS, ODD)


def docopt_answer(argv: list[str]):
    try:
        return docopt_args(syncmail.__doc__, argv)
    except (UsageError, SystemExit) as exc:  # --help exits
        return type(exc).__name__


@settings(max_examples=400)
@given(st.lists(WORDS, max_size=7))
@example(["-c", "", "-c", "a"])  # an empty value is still a value given
def test_plain_reader_agrees_with_docopt(argv):
    plain = syncmail.plain_args(argv)
    if plain is not None:
        assert plain == docopt_answer(argv)


@pytest.mark.parametrize("argv", [
    [],
    ["host:Maildir", "/home/me/Mail"],
    ["-n", "-v", "host:Maildir", "/home/me/Mail"],
    ["--hooks", "/h", "-q", "laptop"],
    ["-q", "--offline-ok"],
    ["-c", "/etc/x.conf", "laptop", "work"],
    ["laptop", "--verbose"],
])
def test_the_usual_command_lines_need_no_docopt(argv):
    plain = syncmail.plain_args(argv)
    assert plain is not None
    assert plain == docopt_answer(argv)


@pytest.mark.parametrize("argv", [["--help"], ["-nv"], ["-n", "-n"], ["-c"], ["--", "a"],
                                  ["--config=x"], ["-x"]])
def test_anything_else_is_left_to_docopt(argv):
    assert syncmail.plain_args(argv) is None


@pytest.mark.parametrize("value", ["0", "-1", "", "x", "1.5", " 5", "\u00b2", "\u0663", "\uff11"])
def test_batch_size_must_be_ascii_digits(monkeypatch, value):
    """Superscript two is a digit to str.isdigit() but not to int(): it was exit 70."""
    monkeypatch.setenv("ROAMMAIL_SYNCMAIL_BATCH", value)
    with pytest.raises(UsageError):
        syncmail.batch_messages()
    monkeypatch.setenv("ROAMMAIL_SYNCMAIL_BATCH", "17")
    assert syncmail.batch_messages() == 17
