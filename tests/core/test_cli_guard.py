"""cli.py: one line and the right exit status for every kind of failure."""

from __future__ import annotations

import pytest

from roammail.core.cli import docopt_args, guarded
from roammail.core.errors import EX_SOFTWARE, EX_USAGE, ConfigError, UsageError

USAGE = """Usage:
  prog [--count=N] FILE
  prog -h | --help

Options:
  --count=N  How many.
"""


@pytest.mark.parametrize("argv, wanted", [
    (["--bogus", "f"], "unknown option --bogus; see --help"),
    (["-x", "f"], "unknown option -x; see --help"),
    (["--bogus=1", "f"], "unknown option --bogus; see --help"),
    (["a", "b"], "extra operand 'b'; see --help"),
    (["--count"], "option --count requires an argument; see --help"),
    (["--count=1", "--count=2", "f"], "option --count is misplaced, repeated or lacks its"
                                      " operand; see --help"),
    ([], "missing operand, or options that do not go together; see --help"),
])
def test_docopt_complaints_become_one_actionable_line(argv, wanted):
    with pytest.raises(UsageError) as info:
        docopt_args(USAGE, argv)
    assert str(info.value) == wanted
    assert "\n" not in str(info.value)


def test_guarded_reports_a_config_error_with_file_and_line(capsys):
    def body():
        raise ConfigError("/x/conf", 3, "unknown key 'y'")
    assert guarded("prog", body) == 78
    assert capsys.readouterr().err == "prog: unknown key 'y' (/x/conf:3)\n"


def test_guarded_turns_a_bug_into_one_line_and_70(capsys, monkeypatch):
    monkeypatch.delenv("ROAMMAIL_DEBUG", raising=False)

    def body():
        raise KeyError("boom")
    assert guarded("prog", body) == EX_SOFTWARE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("prog: internal error: KeyError")


def test_guarded_shows_the_traceback_when_debugging(monkeypatch):
    monkeypatch.setenv("ROAMMAIL_DEBUG", "1")

    def body():
        raise UsageError("x")
    with pytest.raises(UsageError):
        guarded("prog", body)
    assert UsageError.exit_code == EX_USAGE
