"""Unit and property tests of roammail.core.tokens: tokenizer, TokenStream and conf.

The externals grammar is tested in test_externals.py, which reuses the
helpers here (config_error, only_config_errors, Renderer...).
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roammail.core.errors import ConfigError
from roammail.core.tokens import (
    Token,
    TokenStream,
    read_config_file,
    tokenize,
)
from roammail.extsmail.conf import ExtsmailConf, parse_extsmail_conf

P = "test.conf"


def kinds(tokens: list[Token]) -> list[str]:
    return [t.kind for t in tokens]


def config_error(parse, data, line: int, match: Optional[str] = None) -> ConfigError:
    """Assert parse(data, P) raises ConfigError at line (and message ~ match)."""
    with pytest.raises(ConfigError) as info:
        parse(data, P)
    err = info.value
    assert err.path == P
    assert err.line == line, f"line {err.line}: {err.message}"
    if match is not None:
        assert match in err.message, err.message
    return err


# --- tokenizer ----------------------------------------------------------------


def test_tokenize_kinds_values_lines() -> None:
    tokens = tokenize(b'group {\n  key = "v"\n  t = 5m\n}\n', P)
    assert tokens == [
        Token("ID", "group", 1),
        Token("LBRACE", "{", 1),
        Token("ID", "key", 2),
        Token("EQUALS", "=", 2),
        Token("STRING", "v", 2),
        Token("ID", "t", 3),
        Token("EQUALS", "=", 3),
        Token("TIME", 300, 3),
        Token("RBRACE", "}", 4),
        Token("EOF", "", 4),
    ]


def test_tokenize_str_and_bytes_agree() -> None:
    text = 'a = "é\nx" # c\nb = 2d\n'
    assert tokenize(text, P) == tokenize(text.encode(), P)


def test_tokens_need_no_spaces() -> None:
    tokens = tokenize(b'a="x"b=1s{}', P)
    assert kinds(tokens) == ["ID", "EQUALS", "STRING", "ID", "EQUALS", "TIME",
                             "LBRACE", "RBRACE", "EOF"]


@pytest.mark.parametrize("name", ["a", "_", "_a1", "A_b_9", "group", "x" * 200])
def test_identifiers(name: str) -> None:
    assert tokenize(name.encode(), P)[0] == Token("ID", name, 1)


@pytest.mark.parametrize("text, seconds", [("0s", 0), ("30s", 30), ("5m", 300), ("1h", 3600),
                                           ("2d", 172800), ("010s", 10)])
def test_time_tokens(text: str, seconds: int) -> None:
    assert tokenize(text, P)[0] == Token("TIME", seconds, 1)


@pytest.mark.parametrize(
    "data, line, match",
    [
        (b"a = 5x", 1, "5x"),
        (b"\n\na = 12\n", 3, "needs a unit"),
        (b"a = 0", 1, "needs a unit"),
        (b"a = 5mfoo", 1, "5mfoo"),
        (b"a =\n1h30m", 2, "1h30m"),
        (b"a = 1.5h", 1, None),
        (b"\na = 99999999999999d", 2, "100 years"),
        (b"a = " + b"9" * 10000 + b"s", 1, "100 years"),
    ],
)
def test_bad_time(data: bytes, line: int, match: Optional[str]) -> None:
    err = config_error(tokenize, data, line, match)
    assert len(str(err)) < 200


@pytest.mark.parametrize(
    "data, line, char",
    [
        (b"a = ;", 1, ";"),
        (b"\n\n  @", 3, "@"),
        (b'a = "x";', 1, ";"),
        (b'a = "x\ny";', 2, ";"),
        (b"a-b", 1, "-"),
        (b"\n-5m", 2, "-"),
        (b"+5m", 1, "+"),
        ("\n\nnamé".encode(), 3, "é"),
        (b"'single'", 1, "'"),
        (b"a\\n", 1, "\\"),
        (b"(", 1, "("),
        ("\u00a0".encode(), 1, "\\xa0"),
    ],
)
def test_stray_character(data: bytes, line: int, char: str) -> None:
    config_error(tokenize, data, line, f"unexpected character '{char}'")


@pytest.mark.parametrize(
    "source, value",
    [
        (r'"plain"', "plain"),
        (r'""', ""),
        (r'"a\nb"', "a\nb"),
        (r'"a\rb"', "a\rb"),
        (r'"a\tb"', "a\tb"),
        (r'"a\\b"', "a\\b"),
        (r'"a\"b"', 'a"b'),
        (r'"a\.b"', "a.b"),  # any other escaped char stands for itself
        (r'"\q\$\{"', "q${"),
        (r'"\\."', "\\."),
        ('"tab\there"', "tab\there"),
        ('"# not a comment"', "# not a comment"),
        ('"{ } = 5m"', "{ } = 5m"),
        ('"é ☃"', "é ☃"),
    ],
)
def test_strings_and_escapes(source: str, value: str) -> None:
    assert tokenize(source, P)[0] == Token("STRING", value, 1)


def test_string_spanning_lines_keeps_line_count() -> None:
    tokens = tokenize(b'a = "one\ntwo\nthree"\nb = "x"\n\nc', P)
    assert tokens[2] == Token("STRING", "one\ntwo\nthree", 1)
    assert tokens[3] == Token("ID", "b", 4)
    assert tokens[6] == Token("ID", "c", 6)


def test_escaped_newline_stands_for_itself_and_counts() -> None:
    tokens = tokenize(b'"a\\\nb" x', P)
    assert tokens[0] == Token("STRING", "a\nb", 1)
    assert tokens[1] == Token("ID", "x", 2)


@pytest.mark.parametrize(
    "data, line",
    [
        (b'"abc', 1),
        (b'a = "x"\n\nb = "abc\n\ndef\n', 3),
        (b'a = "abc\\"', 1),  # the escaped quote does not close the string
        (b'\na = "abc\\', 2),  # a backslash at the very end
        (b'# "\n"', 2),
    ],
)
def test_unterminated_string_names_its_first_line(data: bytes, line: int) -> None:
    config_error(tokenize, data, line, "not terminated")


def test_comments() -> None:
    data = b'# top "unterminated\na # x = ; @\n"b # kept" # c { }\n#last'
    assert tokenize(data, P) == [
        Token("ID", "a", 2),
        Token("STRING", "b # kept", 3),
        Token("EOF", "", 4),
    ]


def test_crlf_line_endings() -> None:
    data = b'a = "x"\r\nb = 5m\r\n# c\r\n\r\nc = "one\r\ntwo\\r"\r\nd\r\n'
    tokens = tokenize(data, P)
    assert [(t.kind, t.line) for t in tokens] == [
        ("ID", 1), ("EQUALS", 1), ("STRING", 1),
        ("ID", 2), ("EQUALS", 2), ("TIME", 2),
        ("ID", 5), ("EQUALS", 5), ("STRING", 5),
        ("ID", 7),
        ("EOF", 7),
    ]
    assert tokens[8].value == "one\ntwo\r"


def test_lone_cr_is_blank_outside_strings_and_kept_inside() -> None:
    tokens = tokenize(b'a\rb "x\ry"', P)
    assert tokens[:3] == [Token("ID", "a", 1), Token("ID", "b", 1), Token("STRING", "x\ry", 1)]


@pytest.mark.parametrize(
    "data, line",
    [(b"", 1), (b"a", 1), (b"a\n", 1), (b"a\n\n", 2), (b"a\nb", 2), (b"\n", 1), (b"# c", 1)],
)
def test_eof_token_is_on_the_last_line(data: bytes, line: int) -> None:
    tokens = tokenize(data, P)
    assert tokens[-1] == Token("EOF", "", line)


@pytest.mark.parametrize(
    "data, line",
    [(b"\x00", 1), (b"a\n\nb\x00", 3), (b'a = "x\n\x00"', 2), (b"# c\x00\n", 1)],
)
def test_nul_byte(data: bytes, line: int) -> None:
    config_error(tokenize, data, line, "NUL")
    config_error(tokenize, data.decode(), line, "NUL")


@pytest.mark.parametrize(
    "data, line",
    [(b"\xff", 1), (b'a = "x"\n\n"\xc3"', 3), (b"# \xe9t\xe9\n", 1), (b"a\n\xed\xa0\x80", 2)],
)
def test_bad_utf8_names_the_line(data: bytes, line: int) -> None:
    config_error(tokenize, data, line, "UTF-8")


def test_read_config_file(tmp_path: Path) -> None:
    f = tmp_path / "conf"
    f.write_bytes(b'spool_dir = "x"\n')
    assert read_config_file(str(f)) == b'spool_dir = "x"\n'


def test_read_config_file_missing(tmp_path: Path) -> None:
    path = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    assert (info.value.path, info.value.line) == (path, 0)
    assert info.value.message == "cannot read: No such file or directory"
    assert str(info.value) == f"cannot read: No such file or directory ({path})"


def test_read_config_file_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_config_file(str(tmp_path))
    assert info.value.line == 0
    assert info.value.message == "cannot read: Is a directory"


# --- TokenStream --------------------------------------------------------------


def test_token_stream() -> None:
    ts = TokenStream(tokenize(b"a = \n 5m", P), P)
    assert ts.peek() == Token("ID", "a", 1)
    assert ts.next() == Token("ID", "a", 1)
    assert ts.expect("EQUALS", "'='") == Token("EQUALS", "=", 1)
    assert not ts.at_eof()
    with pytest.raises(ConfigError) as info:
        ts.expect("STRING", "a quoted command")
    assert (info.value.path, info.value.line) == (P, 2)
    assert info.value.message == "expected a quoted command, found a time"
    assert ts.next() == Token("TIME", 300, 2)
    assert ts.at_eof()
    assert ts.next().kind == "EOF"
    assert ts.next().kind == "EOF"
    assert ts.peek().kind == "EOF"


@pytest.mark.parametrize(
    "data, found",
    [(b"x", "'x'"), (b'"x"', "a string"), (b"5m", "a time"), (b"{", "'{'"), (b"}", "'}'"),
     (b"=", "'='"), (b"", "end of file")],
)
def test_expect_names_what_it_found(data: bytes, found: str) -> None:
    ts = TokenStream(tokenize(data, P), P)
    with pytest.raises(ConfigError) as info:
        ts.expect("NOPE", "THING")
    assert info.value.message == f"expected THING, found {found}"


def test_token_stream_needs_eof() -> None:
    with pytest.raises(ValueError):
        TokenStream([Token("ID", "a", 1)], P)


def test_token_is_frozen() -> None:
    token = Token("ID", "a", 1)
    with pytest.raises(AttributeError):
        token.line = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        token.other = 2  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del token.kind  # type: ignore[misc]
    assert token == Token("ID", "a", 1)


def test_token_is_a_value() -> None:
    token = Token("TIME", 300, 2)
    assert token == Token("TIME", 300, 2)
    assert token != Token("TIME", 300, 3)
    assert token != Token("ID", 300, 2)
    assert token != ("TIME", 300, 2)
    assert hash(token) == hash(Token("TIME", 300, 2))
    assert len({token, Token("TIME", 300, 2), Token("EOF", "", 2)}) == 2
    assert repr(token) == "Token(kind='TIME', value=300, line=2)"
    assert (token.kind, token.value, token.line) == ("TIME", 300, 2)
    assert pickle.loads(pickle.dumps(token)) == token
    assert copy.deepcopy(token) == token


# --- conf ---------------------------------------------------------------------


def test_conf_minimal() -> None:
    assert parse_extsmail_conf(b'spool_dir = "~/.extsmail/spool"\n', P) == ExtsmailConf(
        "~/.extsmail/spool", 0, None, None
    )


def test_conf_man_page_example() -> None:
    data = b"""spool_dir = "~/somewhere"
notify_failure_interval = 30m
notify_failure_cmd = "notify-send -a extsmaild -c email
  -i mail-send -u critical 'extsmaild: ${TIME} since a fully
  successful send cycle'"
notify_success_cmd = "notify-send -a extsmaild -c email
  -i mail-send -u low 'extsmaild: ${SUCCESSES} messages
  successfully sent'"
"""
    conf = parse_extsmail_conf(data, P)
    assert conf.spool_dir == "~/somewhere"
    assert conf.notify_failure_interval == 1800
    assert conf.notify_failure_cmd == (
        "notify-send -a extsmaild -c email\n  -i mail-send -u critical 'extsmaild: "
        "${TIME} since a fully\n  successful send cycle'"
    )
    assert conf.notify_success_cmd is not None
    assert "${SUCCESSES}" in conf.notify_success_cmd


def test_conf_keys_in_any_order_on_one_line() -> None:
    conf = parse_extsmail_conf(
        'notify_success_cmd="s" notify_failure_interval=0s spool_dir="/q" # c', P
    )
    assert conf == ExtsmailConf("/q", 0, None, "s")


def test_conf_crlf() -> None:
    data = b'spool_dir = "/s"\r\nnotify_failure_interval = 1h\r\n'
    assert parse_extsmail_conf(data, P) == ExtsmailConf("/s", 3600)


@pytest.mark.parametrize(
    "data, line, match",
    [
        (b'spool_dir = "x"\nspool = "y"', 2, "unknown key 'spool'"),
        (b'spool_dir = "x"\n\nSpool_dir = "y"', 3, "unknown key"),
        (b"spool_dir = 5m", 1, "'spool_dir' needs a string"),
        (b'spool_dir = "x"\nnotify_failure_interval = "5m"', 2, "needs a time"),
        (b'spool_dir = "x"\nnotify_failure_interval = 0', 2, "needs a unit"),
        (b'spool_dir = "x"\nnotify_failure_cmd = 5m', 2, "needs a string"),
        (b'spool_dir = "x"\nnotify_success_cmd = 1s', 2, "needs a string"),
        (b'spool_dir = "x"\n# c\nspool_dir = "y"', 3, "already set at line 1"),
        (b'spool_dir = "x"\nnotify_failure_cmd = "a"\nnotify_failure_cmd = "b"', 3,
         "already set at line 2"),
        (b'notify_failure_cmd = "x"', 0, "spool_dir not set"),
        (b"", 0, "spool_dir not set"),
        (b"# only a comment\n\n", 0, "spool_dir not set"),
        (b'spool_dir = ""', 1, "empty"),
        (b'spool_dir "x"', 1, "expected '=' after 'spool_dir', found a string"),
        (b"spool_dir =\n", 1, "found end of file"),
        (b"spool_dir =\n\n{", 3, "expected a string or a time after '=', found '{'"),
        (b'spool_dir = = "x"', 1, "found '='"),
        (b'"x" = "y"', 1, "expected a key, found a string"),
        (b'spool_dir = "x"\n}', 2, "expected a key, found '}'"),
        (b'spool_dir = "x"\nnotify_failure_cmd = "a\nb\nc" ;', 4, "';'"),
        (b'spool_dir = "x"\nnotify_failure_cmd = "a\nb\nc', 2, "not terminated"),
    ],
)
def test_conf_errors(data: bytes, line: int, match: str) -> None:
    config_error(parse_extsmail_conf, data, line, match)


def test_conf_failure_keys() -> None:
    conf = parse_extsmail_conf(b'spool_dir = "s"\nreport_maildir = "~/Mail"\nmax_age = 5d\n'
                               b'permanent_failures = "no"\n', P)
    assert (conf.report_maildir, conf.max_age, conf.permanent_failures) == ("~/Mail", 432000,
                                                                            False)
    conf = parse_extsmail_conf(b'spool_dir = "s"\npermanent_failures = "yes"', P)
    assert (conf.report_maildir, conf.max_age, conf.permanent_failures) == (None, 0, True)
    assert parse_extsmail_conf(b'spool_dir = "s" report_maildir = ""', P).report_maildir == ""
    config_error(parse_extsmail_conf, b'spool_dir = "s"\npermanent_failures = "off"', 2,
                 "'permanent_failures' needs yes or no, not \"off\"")
    config_error(parse_extsmail_conf, b'spool_dir = "s"\nmax_age = "5d"', 2,
                 "'max_age' needs a time")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", True), ("network_events = yes\n", True), ("network_events = no\n", False),
     ('network_events = "no"\n', False)],
)
def test_conf_network_events(value: str, expected: bool) -> None:
    conf = parse_extsmail_conf(f'spool_dir = "x"\n{value}'.encode(), "conf")
    assert conf.network_events is expected


@pytest.mark.parametrize(
    ("data", "line", "match"),
    [(b'spool_dir = "x"\nnetwork_events = maybe', 2,
      "'network_events' needs yes or no, not 'maybe'"),
     (b'spool_dir = "x"\nnetwork_events = 1s', 2, "needs yes or no, not a time"),
     (b'spool_dir = "x"\nnetwork_events = no\nnetwork_events = no', 3,
      "already set at line 2")],
)
def test_conf_network_events_errors(data: bytes, line: int, match: str) -> None:
    config_error(parse_extsmail_conf, data, line, match)


def test_conf_is_a_frozen_value() -> None:
    conf = ExtsmailConf("/s", notify_success_cmd="x")
    assert conf == ExtsmailConf(spool_dir="/s", notify_failure_interval=0,
                                notify_failure_cmd=None, notify_success_cmd="x")
    assert conf != ExtsmailConf("/s")
    assert hash(conf) == hash(ExtsmailConf("/s", 0, None, "x"))
    assert repr(conf) == ("ExtsmailConf(spool_dir='/s', notify_failure_interval=0, "
                          "notify_failure_cmd=None, notify_success_cmd='x', "
                          "report_maildir=None, max_age=0, permanent_failures=True, "
                          "network_events=True, keep_sent=604800)")
    with pytest.raises(AttributeError):
        conf.spool_dir = "/t"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ExtsmailConf()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ExtsmailConf("/s", spool="/t")  # type: ignore[call-arg]


def test_conf_error_message_is_one_line() -> None:
    err = config_error(parse_extsmail_conf, b'\n\nspool_dir = "x"\nfoo = "y"\n', 4)
    assert str(err) == f"unknown key 'foo' ({P}:4)"


# --- property tests -----------------------------------------------------------

FRAGMENTS = [
    "group", "external", "match", "reject", "header", "sendmail", "timeout", "spool_dir",
    "notify_failure_interval", "notify_failure_cmd", "notify_success_cmd", "permanent",
    "report_maildir", "max_age", "permanent_failures", "\"65 67\"", "\"no\"", "x", "_a1",
    "{", "}", "=", '"', '""', '"ssh -q host -t"', "\"'\"", '"a\\.b"', "\\", "\\\"",
    "5m", "0s", "1h", "12", "5x", "99999999999d", "#", "# comment\n", "\n", "\r\n", "\r",
    " ", "\t", ";", "@", "é", "\x00", "\u2028",
]
config_text = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)


def line_count(data: bytes | str) -> int:
    newline = b"\n" if isinstance(data, bytes) else "\n"
    return data.count(newline) + 1  # type: ignore[arg-type]


def only_config_errors(data: bytes | str, parsers=(tokenize, parse_extsmail_conf)) -> None:
    """Run each parser on data: success, or a ConfigError at a sane line."""
    for parse in parsers:
        try:
            result = parse(data, P)
        except ConfigError as e:
            assert e.path == P
            assert 0 <= e.line <= line_count(data) + 1
            assert "\n" not in str(e)
        else:
            if parse is tokenize:
                assert result[-1].kind == "EOF"
                lines = [t.line for t in result]
                assert lines == sorted(lines)
                assert 1 <= lines[0] and lines[-1] <= line_count(data)


@settings(deadline=None, max_examples=300)
@given(st.binary())
def test_arbitrary_bytes_raise_only_config_error(data: bytes) -> None:
    only_config_errors(data)


@settings(deadline=None, max_examples=300)
@given(config_text)
def test_config_fragments_raise_only_config_error(text: str) -> None:
    only_config_errors(text)
    only_config_errors(text.encode("utf-8", "surrogatepass"))


@settings(deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    only_config_errors(text)


# Round trip: generate structures, render them as a user might write them,
# parse them back.  The renderer records the line each item starts on.

SEPARATORS = [" ", "\t", "\n", "\n\n", "\r\n", " # a comment \"{ =\n", "\n# whole line\n"]
values = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


def quote(value: str, style: str) -> str:
    """Render value as a config string; style: "escaped", "raw" or "backslashes"."""
    out = ['"']
    for c in value:
        if c == "\r":
            out.append("\\r")  # a raw CR before LF would be read as a line end
        elif c in '\\"':
            out.append("\\" + c)
        elif style == "escaped" and c in "\n\t":
            out.append("\\n" if c == "\n" else "\\t")
        elif style == "backslashes" and c not in "nrt":
            out.append("\\" + c)  # any other escaped char stands for itself
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def render_time(seconds: int, unit_choice: int) -> str:
    units = [u for u, n in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)) if seconds % n == 0]
    unit = units[unit_choice % len(units)]
    return f"{seconds // {'d': 86400, 'h': 3600, 'm': 60, 's': 1}[unit]}{unit}"


class Renderer:
    def __init__(self, draw) -> None:
        self.draw = draw
        self.parts: list[str] = []
        self.style = draw(st.sampled_from(["escaped", "raw", "backslashes"]))

    def line(self) -> int:
        """The line the next token starts on."""
        return "".join(self.parts).count("\n") + 1

    def emit(self, *tokens: str) -> None:
        for token in tokens:
            self.parts.append(token)
            self.parts.append(self.draw(st.sampled_from(SEPARATORS)))

    def string(self, value: str) -> str:
        return quote(value, self.style)

    def time(self, seconds: int) -> str:
        return render_time(seconds, self.draw(st.integers(0, 3)))

    def text(self) -> str:
        return "".join(self.parts)


@st.composite
def conf_files(draw) -> tuple[str, ExtsmailConf]:
    r = Renderer(draw)
    conf = ExtsmailConf(
        spool_dir=draw(values.filter(bool)),
        notify_failure_interval=draw(st.integers(0, 400 * 86400)),
        notify_failure_cmd=draw(st.one_of(st.none(), values)),
        notify_success_cmd=draw(st.one_of(st.none(), values)),
    )
    defs = [("spool_dir", r.string(conf.spool_dir))]
    if conf.notify_failure_interval or draw(st.booleans()):
        defs.append(("notify_failure_interval", r.time(conf.notify_failure_interval)))
    for key in ("notify_failure_cmd", "notify_success_cmd"):
        value = getattr(conf, key)
        if value is not None:
            defs.append((key, r.string(value)))
    for key, value in draw(st.permutations(defs)):
        r.emit(key, "=", value)
    return r.text(), conf


@settings(deadline=None, max_examples=300)
@given(conf_files())
def test_conf_round_trip(case: tuple[str, ExtsmailConf]) -> None:
    text, conf = case
    assert parse_extsmail_conf(text, P) == conf
    assert parse_extsmail_conf(text.encode(), P) == conf


# --- command words ------------------------------------------------------------


@settings(max_examples=3000)
@given(st.text(alphabet=list("ab \t\n\r\"'\\#$|;"), max_size=16))
def test_split_words_is_shlex_split(text: str) -> None:
    import shlex

    from roammail.core.tokens import split_words

    try:
        want: object = shlex.split(text)
    except ValueError:
        want = ValueError
    try:
        got: object = split_words(text)
    except ValueError:
        got = ValueError
    assert got == want


def test_split_words_examples() -> None:
    from roammail.core.tokens import split_words

    assert split_words("ssh -q 'my host' \"/usr/sbin/sendmail\" -t") == \
        ["ssh", "-q", "my host", "/usr/sbin/sendmail", "-t"]
    assert split_words('a "b\\"c\\\\d\\e" \'\' x\\ y') == ["a", 'b"c\\d\\e', "", "x y"]
    for bad in ('"open', "'open", "trailing\\"):
        with pytest.raises(ValueError):
            split_words(bad)
