"""smtpdcheck's command line: the original's argument format and exit 2.

smtpdcheck parses its command line by hand (docopt costs ~10 ms of start-up
on a tool run once per SMTP transaction); the differential test below holds
that parser to docopt's reading of the usage text in the module docstring,
so the text stays the contract.  The black-box tests check the one-line
messages and exit status 2 of the installed tool.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from roammail.smtpdcheck import cli as smtpdcheck
from roammail.smtpdcheck.check import Server
from roammail.smtpdcheck.cli import parse_command_line, parse_server
from roammail.smtpdcheck.probe import CheckError

# ------------------------------------------------------------- [prio:]host


@pytest.mark.parametrize("arg, expected", [
    ("mx.example.org", Server(None, "mx.example.org")),
    ("10:mx.example.org", Server(10, "mx.example.org")),
    ("0:mx", Server(0, "mx")),
    ("65535:mx.", Server(65535, "mx.")),
    ("127.0.0.1", Server(None, "127.0.0.1")),
    ("::1", Server(None, "::1")),
    ("2001:db8::25", Server(None, "2001:db8::25")),
    ("fe80::1%lo", Server(None, "fe80::1%lo")),
    ("10:::1", Server(10, "::1")),
    # a whole IPv6 address is a host: brackets give it a priority
    ("5:2001:db8::25", Server(None, "5:2001:db8::25")),
    ("5:[2001:db8::25]", Server(5, "2001:db8::25")),
    ("[::1]", Server(None, "::1")),
    ("0:[::1]", Server(0, "::1")),
    ("10:127.0.0.1", Server(10, "127.0.0.1")),
])
def test_server_arguments(arg, expected):
    assert parse_server(arg) == expected


@pytest.mark.parametrize("arg, message", [
    ("", "empty server name"),
    ("10:", "empty server name in '10:'"),
    ("x:mx", "bad priority 'x'"),
    (":mx", "bad priority ''"),
    ("-1:mx", "bad priority '-1'"),
    ("1.5:mx", "bad priority '1.5'"),
    ("\u00b2:mx", "bad priority"),  # a digit to str.isdigit, not a number
    ("10:mx:25", "bad server name 'mx:25'"),
    ("[mx]:25", "bad server name '[mx]:25'"),  # no host:port form
    ("[::1", "bad server name '[::1'"),
])
def test_bad_server_arguments(arg, message):
    with pytest.raises(CheckError) as raised:
        parse_server(arg)
    assert message in str(raised.value)
    assert raised.value.exit_code == 2


# ------------------------------------------------------ against docopt

TOKENS = ["--stop", "--timeout", "--port", "--cache", "--cache-ttl", "--sequential",
          "--no-cache", "--help", "-h", "--st", "--tim", "--seq", "--no", "--cache-t",
          "--stop=me", "--timeout=3", "--port=", "--sequential=1", "--foo", "--cach",
          "-x", "-", "mx", "10:mx", "5", "0", "x.y", "::1"]


def docopt_reading(argv: list[str]):
    from docopt import DocoptExit, docopt

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return dict(docopt(smtpdcheck.__doc__, argv=argv))
    except DocoptExit:
        return "error"
    except SystemExit:  # --help
        return "help"


def our_reading(argv: list[str]):
    try:
        parsed = parse_command_line(argv)
    except CheckError as exc:
        assert exc.exit_code == 2
        return "error"
    return "help" if parsed["--help"] else parsed


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=6))
@example(["--stop", "me", "10:a", "20:b"])
@example(["10:a", "--timeout", "3", "--sequential", "20:b"])
@example(["--cache", "f", "--no-cache", "mx"])
@example(["--stop", "a", "--stop", "b", "mx"])
@example(["--foo", "--help"])
@example(["--stop", "--help", "mx"])
def test_the_parse_is_docopts_reading_of_the_usage_text(argv):
    assert our_reading(argv) == docopt_reading(argv)


def test_double_dash_ends_the_options():
    # (docopt would keep "--" itself among the servers: we do not)
    assert parse_command_line(["--", "-x", "mx"])["SERVER"] == ["-x", "mx"]
    assert parse_command_line(["mx", "--", "--stop"])["SERVER"] == ["mx", "--stop"]


# ------------------------------------------------------------ black box


@pytest.mark.parametrize("args, message", [
    (["x:mx.example.org"], "smtpdcheck: bad priority 'x' in 'x:mx.example.org': not a number"),
    (["10:"], "smtpdcheck: empty server name in '10:'"),
    ([""], "smtpdcheck: empty server name"),
    (["--stop"], "smtpdcheck: --stop needs a value; see --help"),
    (["mx", "--timeout"], "smtpdcheck: --timeout needs a value; see --help"),
    ([], "smtpdcheck: no server given; see --help"),
    (["--stop", "me"], "smtpdcheck: no server given; see --help"),
    (["--bogus", "mx"], "smtpdcheck: unknown option --bogus; see --help"),
    (["--timeout", "soon", "mx"], "smtpdcheck: bad --timeout 'soon': not a number of seconds"),
    (["--timeout", "-1", "mx"], "smtpdcheck: bad --timeout '-1': not a number of seconds"),
    (["--cache-ttl", "1e3", "mx"], "smtpdcheck: bad --cache-ttl '1e3': not a number of seconds"),
    (["--port", "0", "mx"], "smtpdcheck: bad --port '0': not a port number (1-65535)"),
    (["--port", "65536", "mx"], "smtpdcheck: bad --port '65536': not a port number (1-65535)"),
    (["--stop=", "mx"], "smtpdcheck: empty --stop name"),
    (["--stop", "a", "--stop", "b", "mx"], "smtpdcheck: --stop given twice; see --help"),
    (["--sequential=yes", "mx"], "smtpdcheck: --sequential takes no value; see --help"),
])
def test_bad_command_lines_exit_2_with_one_line(check, args, message):
    run = check(*args)
    assert run.status == 2
    assert run.out == ""
    assert run.err == message + "\n"


def test_cache_and_no_cache_exclude_each_other(installed, check_env):
    import subprocess

    proc = subprocess.run([installed.tool("smtpdcheck"), "--cache", "/tmp/x", "--no-cache",
                           "mx"], capture_output=True, text=True, env=check_env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == "smtpdcheck: --cache and --no-cache exclude each other; see --help\n"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_0_with_the_usage(check, flag):
    run = check(flag)
    assert run.status == 0
    assert run.out.startswith("smtpdcheck: tell whether a more preferred SMTP server is up.")
    assert "Usage:\n  smtpdcheck [--stop HOST] [--timeout SECONDS]" in run.out
    assert run.err == ""


@pytest.mark.slow
def test_unresolvable_stop_name_exits_2(check, smtp_server):
    run = check("--timeout", "5", "--port", str(smtp_server.port), "--stop",
                "no-such-host.invalid", "127.0.0.1")
    assert run.status == 2
    assert run.out == ""
    assert run.err.startswith("smtpdcheck: cannot resolve --stop no-such-host.invalid: ")
    assert run.err.count("\n") == 1
