"""Unit and property tests of roammail.watch_imap's wire format (wire.py, utf7.py): responses (with
literals), arguments, modified UTF-7 and the canonical mailbox names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roammail.watch_imap.utf7 import mutf7_decode, mutf7_encode, server_mailbox
from roammail.watch_imap.wire import (
    Literal,
    ProtocolError,
    _literal_size,
    astring,
    capabilities_of,
    parse_response,
)

# ------------------------------------------------------------ responses


def test_greeting_with_capability_code() -> None:
    r = parse_response(b"* OK [CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN] Dovecot ready.\r\n")
    assert (r.tag, r.kind, r.code_name, r.text) == ("*", "OK", "CAPABILITY", "Dovecot ready.")
    assert capabilities_of(r.code[1:]) == {"IMAP4REV1", "IDLE", "AUTH=PLAIN"}


def test_preauth_and_bye() -> None:
    assert parse_response(b"* PREAUTH [CAPABILITY IMAP4rev1] Logged in as u\r\n").kind \
        == "PREAUTH"
    bye = parse_response(b"* BYE Server shutting down.\r\n")
    assert (bye.kind, bye.text) == ("BYE", "Server shutting down.")


def test_tagged_answers() -> None:
    ok = parse_response(b"W3 OK [READ-ONLY] Examine completed (0.001 secs).\r\n")
    assert (ok.tag, ok.kind, ok.code, ok.text) == ("W3", "OK", ["READ-ONLY"],
                                                   "Examine completed (0.001 secs).")
    no = parse_response(b"W4 no [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    assert (no.kind, no.code_name) == ("NO", "AUTHENTICATIONFAILED")


def test_code_with_a_list() -> None:
    r = parse_response(b"* OK [PERMANENTFLAGS (\\Seen \\*)] Limited\r\n")
    assert r.code == ["PERMANENTFLAGS", ["\\Seen", "\\*"]]


def test_numbered_data() -> None:
    assert (parse_response(b"* 23 EXISTS\r\n").kind, parse_response(b"* 23 EXISTS\r\n").number) \
        == ("EXISTS", 23)
    fetch = parse_response(b"* 4 FETCH (FLAGS (\\Seen) UID 9)\r\n")
    assert (fetch.kind, fetch.number, fetch.data) == ("FETCH", 4,
                                                       [["FLAGS", ["\\Seen"], "UID", "9"]])


def test_list_with_quoted_delimiter_and_names() -> None:
    r = parse_response(b'* LIST (\\HasNoChildren) "." "With Space"\r\n')
    assert r.data == [["\\HasNoChildren"], b".", b"With Space"]
    r = parse_response(b"* LIST (\\Noselect) NIL Lists\r\n")
    assert r.data == [["\\Noselect"], "NIL", "Lists"]


def test_list_rename_extended_data() -> None:
    r = parse_response(b'* LIST () "." NewBox2 ("OLDNAME" (NewBox))\r\n')
    assert r.data == [[], b".", "NewBox2", [b"OLDNAME", ["NewBox"]]]


def test_status_with_a_literal_name() -> None:
    # Dovecot 2.3 sends NOTIFY's STATUS names in raw UTF-8, as a literal.
    raw = b"* STATUS {5}\r\nCaf\xc3\xa9 (MESSAGES 2 UIDNEXT 3)\r\n"
    assert _literal_size(b"* STATUS {5}\r\n") == 5
    r = parse_response(raw)
    assert r.data == [b"Caf\xc3\xa9", ["MESSAGES", "2", "UIDNEXT", "3"]]
    assert server_mailbox(r.data[0]) == "Caf&AOk-"


def test_quoted_string_escapes() -> None:
    r = parse_response(b'* LIST () "/" "a\\"b\\\\c"\r\n')
    assert r.data[2] == b'a"b\\c'


def test_continuation() -> None:
    r = parse_response(b"+ idling\r\n")
    assert (r.tag, r.kind, r.text) == ("+", "+", "idling")


@pytest.mark.parametrize("raw", [
    b"* LIST (\\Noselect \"/\" x\r\n",      # unclosed list
    b'* LIST () "/ x\r\n',                  # unterminated string
    b"* STATUS {9}\r\nab\r\n",               # literal longer than the response
    b"* LIST ) x\r\n",                      # stray )
    b"W1 FETCH x\r\n",                      # a tagged answer must be OK/NO/BAD
    b"*\r\n",                               # no kind
])
def test_garbage_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response(raw)


def test_literal_size_only_at_the_end() -> None:
    assert _literal_size(b"* X {12+}\r\n") == 12
    assert _literal_size(b"* OK text {3} more\r\n") == -1
    assert _literal_size(b"* OK {x}\r\n") == -1


# ------------------------------------------------------------ arguments


def test_astring_quotes_or_uses_a_literal() -> None:
    assert astring("INBOX") == b'"INBOX"'
    assert astring('a"b\\c') == b'"a\\"b\\\\c"'
    lit = astring("pässword")
    assert isinstance(lit, Literal) and lit.data == "pässword".encode()
    assert isinstance(astring("two\r\nlines"), Literal)


# ------------------------------------------------------------ modified UTF-7


@pytest.mark.parametrize("text,encoded", [
    ("INBOX", "INBOX"),
    ("Café", "Caf&AOk-"),
    ("&", "&-"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("~peter/mail/日本語/台北", "~peter/mail/&ZeVnLIqe-/&U,BTFw-"),
    ("Entwürfe", "Entw&APw-rfe"),
])
def test_mutf7_known_values(text: str, encoded: str) -> None:
    assert mutf7_encode(text) == encoded
    assert mutf7_decode(encoded) == text


@given(st.text(max_size=40))
def test_mutf7_round_trip(text: str) -> None:
    encoded = mutf7_encode(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert mutf7_decode(encoded) == text


@pytest.mark.parametrize("bad", ["&AOk", "&*-", "caf\xe9", "&AGE-"])
def test_mutf7_refuses_what_is_not(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7_decode(bad)


def test_server_mailbox_canonical_inbox_and_utf8() -> None:
    assert server_mailbox("inbox") == "INBOX"
    assert server_mailbox(b"InBoX") == "INBOX"
    assert server_mailbox(b"Lists.foo") == "Lists.foo"
    assert server_mailbox("Caf&AOk-") == "Caf&AOk-"
    assert server_mailbox("Caf\xe9".encode()) == "Caf&AOk-"
