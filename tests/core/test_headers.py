"""Unit and property tests of roammail.core.headers: header lines and group selection."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roammail.core.errors import ConfigError
from roammail.core.headers import (
    HEAD_LIMIT,
    CompiledGroup,
    compile_groups,
    header_lines,
    header_text,
    read_head,
    select,
    select_group,
)
from roammail.extsmail.externals import parse_externals

# --- header_lines -------------------------------------------------------------


def test_lines_up_to_the_empty_line() -> None:
    message = b"From: a@x\nTo: b@y\nSubject: hi\n\nTo: not@header\n"
    assert header_lines(message) == ["From: a@x", "To: b@y", "Subject: hi"]


def test_crlf_line_ends() -> None:
    message = b"From: a@x\r\nTo: b@y\r\n\r\nTo: body@z\r\n"
    assert header_lines(message) == ["From: a@x", "To: b@y"]


def test_folded_lines_keep_their_white_space() -> None:
    message = b"To: a@x,\n\tb@work,\n  c@home\nSubject: s\n\nbody\n"
    assert header_lines(message) == ["To: a@x,\tb@work,  c@home", "Subject: s"]


def test_folded_crlf_lines() -> None:
    message = b"To: a@x,\r\n b@work\r\nSubject: s\r\n\r\n"
    assert header_lines(message) == ["To: a@x, b@work", "Subject: s"]


def test_white_space_only_continuation_is_not_the_end() -> None:
    assert header_lines(b"Subject: a\n \nTo: b\n\n") == ["Subject: a ", "To: b"]


def test_a_leading_continuation_line_stands_alone() -> None:
    assert header_lines(b" odd\nTo: b\n\n") == [" odd", "To: b"]


def test_no_empty_line_means_all_header() -> None:
    assert header_lines(b"From: a\nTo: b\n") == ["From: a", "To: b"]
    assert header_lines(b"From: a\nTo: b") == ["From: a", "To: b"]


def test_empty_header_section() -> None:
    assert header_lines(b"") == []
    assert header_lines(b"\nTo: body\n") == []
    assert header_lines(b"\r\nTo: body\n") == []


def test_a_lone_cr_stays_in_its_line() -> None:
    assert header_lines(b"Subject: a\rb\nTo: c\r\r\n\n") == ["Subject: a\rb", "To: c\r"]


def test_bytes_that_are_not_utf8_survive() -> None:
    message = "Subject: caf\u00e9 ".encode() + b"\xff\xfe\nTo: b\n\n"
    lines = header_lines(message)
    assert lines[0] == "Subject: caf\u00e9 \udcff\udcfe"
    assert lines[0].encode("utf-8", "surrogateescape") == message.split(b"\n")[0]


header_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9-]{0,15}\Z")
header_words = st.from_regex(r"\A[!-~]{1,10}\Z")


@st.composite
def header_fields(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A header field: its logical line and its physical lines once folded."""
    name = draw(header_names)
    words = draw(st.lists(header_words, min_size=1, max_size=5))
    physical = [f"{name}: {words[0]}"]
    for word in words[1:]:
        blank = draw(st.sampled_from([" ", "\t", "  ", " \t"]))
        if draw(st.booleans()):
            physical.append(blank + word)
        else:
            physical[-1] += blank + word
    return "".join(physical), physical


@given(
    st.lists(header_fields(), max_size=8),
    st.sampled_from([b"\n", b"\r\n"]),
    st.binary(max_size=50),
)
def test_folding_is_undone(fields: list[tuple[str, list[str]]], eol: bytes, body: bytes) -> None:
    head = b"".join(line.encode() + eol for _, physical in fields for line in physical)
    message = head + eol + body if fields else head
    assert header_lines(message) == [logical for logical, _ in fields]


@given(st.binary(max_size=300), st.binary(max_size=30))
def test_any_bytes_give_nonempty_lines_without_newlines(message: bytes, body: bytes) -> None:
    lines = header_lines(message)
    for line in lines:
        assert line
        assert "\n" not in line
    assert header_lines(message + b"\n\n" + body) == lines
    assert header_lines(read_head(io.BytesIO(message))) == lines


# --- read_head ----------------------------------------------------------------


def test_read_head_stops_after_the_empty_line() -> None:
    head = b"From: a\nTo: b\n\n"
    stream = io.BytesIO(head + b"x" * (20 * 1024 * 1024))
    assert read_head(stream) == head
    assert stream.tell() == len(head)


def test_read_head_crlf() -> None:
    head = b"From: a\r\nTo: b\r\n\r\n"
    stream = io.BytesIO(head + b"\r\nbody\r\n")
    assert read_head(stream) == head
    assert stream.tell() == len(head)


def test_read_head_from_the_current_position() -> None:
    stream = io.BytesIO(b"v1\n0\nTo: b\n\nbody")
    stream.seek(5)
    assert read_head(stream) == b"To: b\n\n"


def test_read_head_without_body() -> None:
    assert read_head(io.BytesIO(b"To: b\nFrom: c")) == b"To: b\nFrom: c"
    assert read_head(io.BytesIO(b"")) == b""


def test_read_head_is_bounded() -> None:
    stream = io.BytesIO(b"X-Long: " + b"y" * (3 * HEAD_LIMIT) + b"\n\nbody")
    head = read_head(stream)
    assert len(head) == HEAD_LIMIT
    assert stream.tell() == HEAD_LIMIT
    many = io.BytesIO(b"X: y\n" * 1000 + b"\n")
    assert read_head(many, limit=100) == b"X: y\n" * 20


def test_read_head_from_a_buffered_file(tmp_path) -> None:
    path = tmp_path / "msg"
    path.write_bytes(b"To: b\n\n" + b"z" * 100000)
    with open(path, "rb") as f:
        assert header_lines(read_head(f)) == ["To: b"]
        assert f.read(3) == b"zzz"


# --- group selection --------------------------------------------------------------

EXTERNALS = rb"""
group {
    match header "^To:.*@work\\.example"
    reject header "^X-Private:"
    external work { sendmail = "work-sendmail -t" }
}
group {
    match header "^From:.*@home"
    match header "^Subject:.*urgent"
    external urgent { sendmail = "urgent -t" }
}
group {
    reject header "^X-Hold:"
    external fallback { sendmail = "fallback -t" }
}
group {
    external last { sendmail = "last -t" }
}
"""


@pytest.fixture(scope="module")
def compiled() -> list[CompiledGroup]:
    return compile_groups(parse_externals(EXTERNALS, "externals"), "externals")


def chosen(compiled: list[CompiledGroup], message: bytes) -> str | None:
    group = select(compiled, header_lines(message))
    return None if group is None else group.group.externals[0].name


@pytest.mark.parametrize(
    ("message", "external"),
    [
        (b"To: a@work.example\n\n", "work"),
        (b"TO: A@WORK.EXAMPLE\n\n", "work"),
        (b"To: a@workxexample\n\n", "fallback"),
        (b"To: a@work.example\nX-Private: yes\n\n", "fallback"),
        (b"Cc: a@work.example\n\n", "fallback"),
        (b"To: a@home.example,\n\tb@work.example\n\n", "work"),
        (b"To: a@home.example,\r\n b@work.example\r\n\r\n", "work"),
        (b"From: me@home\r\nSubject: urgent!\r\n\r\n", "urgent"),
        (b"From: me@home\nSubject: not so\n\n", "fallback"),
        (b"Subject: urgent\nFrom: me@home\n\n", "urgent"),
        (b"From: me@home\nX-Hold: 1\n\n", "last"),
        (b"Subject: a\n\nTo: x@work.example\n", "fallback"),
        (b"\nTo: x@work.example\n", "fallback"),
    ],
)
def test_first_matching_group_wins(
    compiled: list[CompiledGroup], message: bytes, external: str
) -> None:
    assert chosen(compiled, message) == external


def test_no_group_matches() -> None:
    groups = parse_externals(
        rb'group { match header "^To:.*@work" external w { sendmail = "w" } }', "ext"
    )
    assert select(compile_groups(groups, "ext"), header_lines(b"To: x@home\n\n")) is None
    assert select_group(groups, ["To: x@home"]) is None
    assert select_group(groups, ["To: x@work"]) is groups[0]


def test_no_header_line_matches_no_rule() -> None:
    match_empty = SimpleNamespace(matches=[SimpleNamespace(kind="match", pattern="", line=1)])
    reject_empty = SimpleNamespace(matches=[SimpleNamespace(kind="reject", pattern="", line=2)])
    assert select_group([match_empty, reject_empty], []) is reject_empty
    assert select_group([match_empty, reject_empty], [""]) is match_empty


def test_a_rule_matches_within_one_line() -> None:
    group = SimpleNamespace(matches=[SimpleNamespace(kind="match", pattern="a.*b", line=1)])
    [compiled] = compile_groups([group], "ext")
    assert not compiled.matches(["X: a", "Y: b"])
    assert compiled.matches(["X: a", "Y: ab"])
    assert header_text(["X: a", "Y: b"]) == "X: a\nY: b"


def test_groups_can_be_any_objects_with_rules() -> None:
    rule = SimpleNamespace(kind="match", pattern="^subject: [[:digit:]]+$", line=3)
    group = SimpleNamespace(matches=[rule], externals=["e"])
    assert select_group([group], ["Subject: 42"]) is group
    assert select_group([group], ["Subject: 42x"]) is None


def test_a_bad_regex_is_a_config_error_at_its_line() -> None:
    data = (
        b'group {\n  match header "^To:"\n  reject header "(oops"\n'
        b'  external e { sendmail = "e" }\n}\n'
    )
    groups = parse_externals(data, "/home/u/.extsmail/externals")
    with pytest.raises(ConfigError) as caught:
        compile_groups(groups, "/home/u/.extsmail/externals")
    error = caught.value
    assert error.path == "/home/u/.extsmail/externals"
    assert error.line == 3
    assert "bad regex" in error.message
    assert "unmatched (" in error.message
    assert str(error).endswith("(/home/u/.extsmail/externals:3)")


def test_an_unknown_rule_kind_is_a_config_error() -> None:
    group = SimpleNamespace(matches=[SimpleNamespace(kind="maybe", pattern="x", line=7)])
    with pytest.raises(ConfigError) as caught:
        compile_groups([group], "ext")
    assert caught.value.line == 7


def test_compiled_groups_keep_their_group_and_rules() -> None:
    groups = parse_externals(EXTERNALS, "externals")
    compiled = compile_groups(groups, "externals")
    assert [c.group for c in compiled] == groups
    assert [r.kind for r in compiled[0].rules] == ["match", "reject"]
    assert compiled[0].rules[0].pattern == "^To:.*@work\\.example"
    assert compiled[0].rules[0].line == 3
