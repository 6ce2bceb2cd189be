"""Unit and property tests of roammail.extsmail.externals: the externals grammar.

The tokenizer it is built on is tested in test_config.py; the helpers for
errors and for rendering files come from there.
"""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_config import (
    FRAGMENTS,
    SEPARATORS,
    P,
    Renderer,
    config_error,
    config_text,
    only_config_errors,
    values,
)

from roammail.core.tokens import tokenize
from roammail.extsmail.conf import parse_extsmail_conf
from roammail.extsmail.externals import External, Group, HeaderRule, parse_externals

REFERENCE_EXAMPLE = rb"""group {
    match header "^To:.*@work\.example"
    external work {
        sendmail = "/usr/bin/ssh -q -C -l me shell.work.example /usr/sbin/sendmail -t"
    }
}
group {
    external home { sendmail = "ssh -q home /usr/sbin/sendmail -t" timeout = 1h }
    external backup { sendmail = "msmtp -a backup -t" }
}
"""


def test_externals_reference_example() -> None:
    assert parse_externals(REFERENCE_EXAMPLE, P) == [
        Group(
            matches=[HeaderRule("match", "^To:.*@work.example", 2)],
            externals=[
                External(
                    name="work",
                    sendmail="/usr/bin/ssh -q -C -l me shell.work.example /usr/sbin/sendmail -t",
                    sendmail_argv=["/usr/bin/ssh", "-q", "-C", "-l", "me", "shell.work.example",
                                   "/usr/sbin/sendmail", "-t"],
                    timeout=None,
                    line=3,
                )
            ],
            line=1,
        ),
        Group(
            matches=[],
            externals=[
                External("home", "ssh -q home /usr/sbin/sendmail -t",
                         ["ssh", "-q", "home", "/usr/sbin/sendmail", "-t"], 3600, 8),
                External("backup", "msmtp -a backup -t", ["msmtp", "-a", "backup", "-t"],
                         None, 9),
            ],
            line=7,
        ),
    ]


def test_escaped_dot_in_a_regex_is_a_plain_dot() -> None:
    # As in the C extsmail: `\.` is an escape standing for `.`, so a literal
    # dot in a header regex must be written `\\.`.
    groups = parse_externals(rb'group { match header "a\.b" reject header "a\\.b"'
                             rb' external x { sendmail = "x" } }', P)
    assert groups[0].matches == [HeaderRule("match", "a.b", 1), HeaderRule("reject", "a\\.b", 1)]


def test_externals_simplest_man_page_example() -> None:
    data = b"""group {
    external mymachine {
        sendmail = "/usr/bin/ssh -q -C -l user mymachine.net /usr/sbin/sendmail -t"
    }
}
"""
    [group] = parse_externals(data, P)
    assert group.matches == []
    assert [e.name for e in group.externals] == ["mymachine"]
    assert group.externals[0].sendmail_argv[-2:] == ["/usr/sbin/sendmail", "-t"]


def test_externals_rules_keep_order_and_kind() -> None:
    data = b"""# routing
group {
    match header "^From:.*me@"
    reject header "^X-Spam: yes"   # comment
    match header "^To:"
    external a { sendmail = "a" }
}
"""
    [group] = parse_externals(data, P)
    assert group.matches == [
        HeaderRule("match", "^From:.*me@", 3),
        HeaderRule("reject", "^X-Spam: yes", 4),
        HeaderRule("match", "^To:", 5),
    ]
    assert group.line == 2
    assert group.externals[0].line == 6


def test_sendmail_is_split_like_a_shell_without_one() -> None:
    data = rb"""group { external a {
        sendmail = "ssh -o 'ProxyCommand nc %h %p' \"my host\" a\\ b $HOME ; `x` # not a comment"
    } }"""
    [group] = parse_externals(data, P)
    assert group.externals[0].sendmail_argv == [
        "ssh", "-o", "ProxyCommand nc %h %p", "my host", "a b", "$HOME", ";", "`x`", "#", "not",
        "a", "comment",
    ]


def test_sendmail_spanning_lines_and_timeout_first() -> None:
    data = b'group {\n external a {\n  timeout = 2d\n  sendmail = "msmtp\n   -t"\n }\n}\n'
    [group] = parse_externals(data, P)
    assert group.externals == [External("a", "msmtp\n   -t", ["msmtp", "-t"], 172800, 2)]


def test_keywords_may_name_externals() -> None:
    # The C extsmail reserves these words; accepting them harms nobody.
    data = b'group { external group { sendmail = "a" } external match { sendmail = "b" } }'
    [group] = parse_externals(data, P)
    assert [e.name for e in group.externals] == ["group", "match"]


def test_externals_crlf() -> None:
    data = REFERENCE_EXAMPLE.replace(b"\n", b"\r\n")
    assert parse_externals(data, P) == parse_externals(REFERENCE_EXAMPLE, P)


GOOD_EXTERNAL = b'external ok { sendmail = "x" }'


@pytest.mark.parametrize(
    "data, line, match",
    [
        # file structure
        (b"", 0, "no group defined"),
        (b"# nothing\n\n# here\n", 0, "no group defined"),
        (b'external a { sendmail = "x" }', 1, "expected 'group', found 'external'"),
        (b'\n"group"', 2, "expected 'group', found a string"),
        (b"group {\n}", 1, "group has no external"),
        (b'\ngroup {\n match header "x"\n}', 2, "group has no external"),
        (b"group\n\n external", 3, "expected '{' after 'group', found 'external'"),
        (b"group {\n" + GOOD_EXTERNAL + b"\n\n", 3, "expected 'external' or '}', found end of"),
        (b"group {\n" + GOOD_EXTERNAL + b"\n}\n}", 4, "expected 'group', found '}'"),
        (b"group {\n" + GOOD_EXTERNAL + b'\n match header "x"\n}', 3, "must come before"),
        (b"group {\n foo\n}", 2, "expected 'match', 'reject' or 'external', found 'foo'"),
        (b'group {\n match "x"\n}', 2, "expected 'header', found a string"),
        (b"group {\n match header\n x\n}", 3, "expected a header regex in double quotes"),
        (b"group {\n reject header 5m\n}", 2, "expected a header regex"),
        (b'group { external\n{ sendmail = "x" } }', 2, "expected a name after 'external'"),
        (b'group { external "a" { sendmail = "x" } }', 1, "expected a name after 'external'"),
        (b'group { external a\nsendmail = "x" } }', 2, "expected '{' after 'external a'"),
        (b'group { external a {\nsendmail = "x"\n', 2, "expected a key or '}', found end of"),
        (b'group { external a {\n"sendmail" = "x" } }', 2, "expected a key or '}'"),
        (b'group { external a {\nsendmail "x" } }', 2, "expected '=' after 'sendmail'"),
        (b"group { external a {\nsendmail =\n} }", 3, "expected a string or a time after '='"),
        # keys and values
        (b'group { external a {\n sendmail = "x"\n command = "y" } }', 3,
         "unknown key 'command' in external 'a'"),
        (b'group { external a {\n Sendmail = "x" } }', 2, "unknown key 'Sendmail'"),
        (b"group { external a {\n sendmail = 5m } }", 2, "'sendmail' needs a string"),
        (b'group { external a {\n sendmail = "x"\n timeout = "5m" } }', 3,
         "'timeout' needs a time"),
        (b'group { external a {\n sendmail = "x"\n timeout = 300 } }', 3, "needs a unit"),
        (b'group { external a {\n sendmail = "x"\n\n sendmail = "y" } }', 4,
         "'sendmail' already set at line 2 in external 'a'"),
        (b'group { external a {\n sendmail = "x" timeout = 1s\n timeout = 2s } }', 3,
         "'timeout' already set at line 2"),
        (b"group {\n external a {\n timeout = 5m\n }\n}", 2, "external 'a' has no sendmail"),
        (b"group {\n external a {\n }\n}", 2, "external 'a' has no sendmail"),
        (b'group { external a {\n sendmail = "" } }', 2, "sendmail is empty"),
        (b'group { external a {\n sendmail = "  \n\t " } }', 2, "sendmail is empty"),
        (b'group { external a {\n sendmail = "ssh \'host" } }', 2, "cannot split sendmail"),
        (b'group { external a {\n sendmail =\n\n "ssh\n\\"host" } }', 2, "No closing quotation"),
        (b'group { external a {\n sendmail = "ssh host\\\\" } }', 2, "cannot split sendmail"),
        (b'group { external a {\n sendmail = "x"\n permanent = 5m } }', 3,
         "'permanent' needs a string"),
        (b'group { external a {\n sendmail = "x"\n permanent = "65,67" } }', 3,
         "exit statuses from 1 to 255 separated by blanks, not '65,67'"),
        (b'group { external a {\n sendmail = "x"\n permanent = "0" } }', 3, "not '0'"),
        (b'group { external a {\n sendmail = "x"\n permanent = "256" } }', 3, "not '256'"),
        (b'group { external a {\n sendmail = "x"\n permanent = "-1" } }', 3, "not '-1'"),
        # names
        (b'group {\n external a { sendmail = "x" }\n external a { sendmail = "y" }\n}', 3,
         "external 'a' already defined at line 2"),
        (b'group { external a { sendmail = "x" } }\n\ngroup {\n external\n a { sendmail = "y" } }',
         5, "external 'a' already defined at line 1"),
        # lexical errors inside the grammar
        (b"group {\n external a {\n sendmail = 'x'\n } }", 3, "unexpected character"),
        (b'group { external a {\n timeout = 5x\n sendmail = "x" } }', 2, "bad time '5x'"),
        (b'group { external a {\n sendmail = "x\n\ny } }', 2, "not terminated"),
        (b'group { external a {\n sendmail = "x"; } }', 2, "';'"),
    ],
)
def test_externals_errors(data: bytes, line: int, match: str) -> None:
    config_error(parse_externals, data, line, match)


def test_permanent_statuses_default_and_given() -> None:
    [group] = parse_externals(
        b'group {\n external a { sendmail = "x" }\n'
        b' external b { permanent = " 65\n 75\t1 " sendmail = "y" }\n'
        b' external c { sendmail = "z" permanent = "" }\n}\n', P)
    a, b, c = group.externals
    assert a.permanent == frozenset({65, 67, 68})
    assert b.permanent == frozenset({1, 65, 75})
    assert c.permanent == frozenset()
    assert b == External("b", "y", ["y"], None, 3, frozenset({1, 65, 75}))


def test_values_are_frozen() -> None:
    [group] = parse_externals(b'group { external a { sendmail = "x" } }', P)
    with pytest.raises(AttributeError, match="frozen"):
        group.line = 3  # type: ignore[misc]
    with pytest.raises(AttributeError, match="frozen"):
        group.externals[0].timeout = 3  # type: ignore[misc]


# --- property tests -----------------------------------------------------------


def test_fragments_cover_the_externals_keywords() -> None:
    assert {"group", "external", "match", "reject", "header", "sendmail", "timeout"} <= set(
        FRAGMENTS
    )


@settings(deadline=None, max_examples=300)
@given(st.binary())
def test_arbitrary_bytes_raise_only_config_error(data: bytes) -> None:
    only_config_errors(data, (parse_externals,))


@settings(deadline=None, max_examples=300)
@given(config_text)
def test_config_fragments_raise_only_config_error(text: str) -> None:
    only_config_errors(text, (parse_externals,))
    only_config_errors(text.encode("utf-8", "surrogatepass"), (parse_externals,))


@settings(deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    only_config_errors(text, (parse_externals,))


def test_an_externals_file_is_no_conf_and_tokenizes() -> None:
    assert tokenize(REFERENCE_EXAMPLE, P)[-1].kind == "EOF"
    config_error(parse_extsmail_conf, REFERENCE_EXAMPLE, 1, "expected '=' after 'group'")


# Round trip: generate structures, render them as a user might write them
# (test_config.Renderer), parse them back.

names = st.from_regex(r"[_a-zA-Z][_a-zA-Z0-9]{0,8}", fullmatch=True)
words = st.lists(values, min_size=1, max_size=4)
timeouts = st.one_of(st.none(), st.integers(0, 400 * 86400))


@st.composite
def externals_files(draw) -> tuple[str, list[Group]]:
    r = Renderer(draw)
    if draw(st.booleans()):
        r.parts.append(draw(st.sampled_from(SEPARATORS)))
    groups = []
    serial = 0
    for _ in range(draw(st.integers(1, 3))):
        group_line = r.line()
        r.emit("group", "{")
        rules = []
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["match", "reject"]))
            pattern = draw(values)
            rules.append(HeaderRule(kind, pattern, r.line()))
            r.emit(kind, "header", r.string(pattern))
        externals = []
        for _ in range(draw(st.integers(1, 3))):
            serial += 1
            name = f"{draw(names)}_{serial}"
            argv = draw(words)
            sendmail = shlex.join(argv)
            timeout = draw(timeouts)
            line = r.line()
            r.emit("external", name, "{")
            defs = [("sendmail", r.string(sendmail))]
            if timeout is not None:
                defs.append(("timeout", r.time(timeout)))
            for key, value in draw(st.permutations(defs)):
                r.emit(key, "=", value)
            r.emit("}")
            externals.append(External(name, sendmail, argv, timeout, line))
        r.emit("}")
        groups.append(Group(rules, externals, group_line))
    return r.text(), groups


@settings(deadline=None, max_examples=300)
@given(externals_files())
def test_externals_round_trip(case: tuple[str, list[Group]]) -> None:
    text, groups = case
    assert parse_externals(text, P) == groups
    assert parse_externals(text.encode(), P) == groups


