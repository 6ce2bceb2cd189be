"""config.py: the extsmail-style config files: tokenizer and parsers.

Owns the lexical rules shared by extsmail's `conf` and `externals` files
(see extsmail.conf(5), extsmail.externals(5)) and the two grammars built on
them.  Every error is ConfigError(path, line, message), with line 0 meaning
the whole file.  This module only turns bytes into values: it never expands
`~`, never compiles a header regex, never runs a command and never opens a
file except in read_config_file.

Lexical rules: `#` starts a comment to the end of the line; identifiers are
`[_a-zA-Z][_a-zA-Z0-9]*`; strings are in double quotes, may span lines and
know the escapes `\\n \\r \\t` (any other escaped character stands for itself,
so `"a\\.b"` is `a.b`); TIME is `[0-9]+[dhms]` and its value is in seconds;
`{`, `}` and `=` are tokens of their own.  A CRLF line end counts as LF
(the C extsmail refuses CR outright).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Optional, Union

from roammail.errors import ConfigError
from roammail.times import parse_time

__all__ = [
    "ConfigError",
    "External",
    "ExtsmailConf",
    "Group",
    "HeaderRule",
    "Token",
    "TokenStream",
    "parse_externals",
    "parse_extsmail_conf",
    "read_config_file",
    "tokenize",
]


# --- tokens -----------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One token. kind is ID, STRING, TIME, LBRACE, RBRACE, EQUALS or EOF.

    value: the identifier, the unescaped string, the TIME in seconds (int),
    the punctuation character, or "" for EOF.  line: where the token starts.
    """

    kind: str
    value: Union[str, int]
    line: int


_PUNCTUATION = {"{": "LBRACE", "}": "RBRACE", "=": "EQUALS"}
_BLANKS = " \t\r\f\v"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_ID = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
# A TIME and whatever letters stick to it, so "5mx" is one bad TIME rather
# than a TIME followed by an identifier.
_NUMBER_WORD = re.compile(r"[0-9][_a-zA-Z0-9]*")


def read_config_file(path: str) -> bytes:
    """Return the bytes of the file at path; ConfigError(path, 0, ...) if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(str(path), 0, f"cannot read: {e.strerror or e}") from e


def tokenize(data: Union[bytes, str], path: str) -> list[Token]:
    """Return the tokens of data, the last one EOF; ConfigError on a lexical error."""
    text = _decode(data, path)
    tokens: list[Token] = []
    line = 1
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c in _BLANKS:
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[c], c, line))
            i += 1
        elif c == '"':
            value, i, end_line = _scan_string(text, i, line, path)
            tokens.append(Token("STRING", value, line))
            line = end_line
        elif m := _ID.match(text, i):
            tokens.append(Token("ID", m.group(), line))
            i = m.end()
        elif m := _NUMBER_WORD.match(text, i):
            try:
                seconds = parse_time(m.group())
            except ValueError as e:
                raise ConfigError(path, line, str(e)) from None
            tokens.append(Token("TIME", seconds, line))
            i = m.end()
        else:
            shown = f"'{c}'" if c.isprintable() else repr(c)
            raise ConfigError(path, line, f"unexpected character {shown}")
    eof_line = line - 1 if text.endswith("\n") else line
    tokens.append(Token("EOF", "", eof_line))
    return tokens


def _decode(data: Union[bytes, str], path: str) -> str:
    """Return data as text with CRLF made LF; ConfigError on NUL or bad UTF-8."""
    if isinstance(data, bytes):
        nul = data.find(b"\0")
        if nul >= 0:
            raise ConfigError(path, data.count(b"\n", 0, nul) + 1, "NUL byte in file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise ConfigError(path, line, "not valid UTF-8") from None
    else:
        text = data
        nul = text.find("\0")
        if nul >= 0:
            raise ConfigError(path, text.count("\n", 0, nul) + 1, "NUL character in file")
    return text.replace("\r\n", "\n")


def _scan_string(text: str, start: int, line: int, path: str) -> tuple[str, int, int]:
    """Scan the string opening at text[start] on line.

    Returns (value, index after the closing quote, line of the closing quote).
    """
    out: list[str] = []
    i = start + 1
    current = line
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1, current
        if c == "\\":
            i += 1
            if i == n:
                break
            c = text[i]
            c = _ESCAPES.get(c, c)
            if text[i] == "\n":
                current += 1
        elif c == "\n":
            current += 1
        out.append(c)
        i += 1
    raise ConfigError(path, line, "string not terminated (no closing '\"')")


def describe(token: Token) -> str:
    """Return how an error message names token, e.g. "'}'" or "end of file"."""
    if token.kind == "ID":
        return f"'{_shorten(str(token.value))}'"
    if token.kind == "STRING":
        return "a string"
    if token.kind == "TIME":
        return "a time"
    if token.kind == "EOF":
        return "end of file"
    return f"'{token.value}'"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class TokenStream:
    """A cursor over tokens (ending with EOF) that raises ConfigError for path."""

    def __init__(self, tokens: list[Token], path: str) -> None:
        if not tokens or tokens[-1].kind != "EOF":
            raise ValueError("token list must end with an EOF token")
        self._tokens = tokens
        self._pos = 0
        self.path = path

    def peek(self) -> Token:
        """Return the next token without consuming it."""
        return self._tokens[self._pos]

    def next(self) -> Token:
        """Consume and return the next token; at EOF, keep returning EOF."""
        token = self._tokens[self._pos]
        if token.kind != "EOF":
            self._pos += 1
        return token

    def expect(self, kind: str, what: str) -> Token:
        """Consume and return the next token if it is of kind.

        Otherwise raise ConfigError "expected WHAT, found X" at its line.
        """
        token = self.peek()
        if token.kind != kind:
            raise self.error(token, f"expected {what}, found {describe(token)}")
        return self.next()

    def expect_word(self, word: str) -> Token:
        """Consume the identifier word (a keyword) or raise ConfigError."""
        token = self.peek()
        if token.kind != "ID" or token.value != word:
            raise self.error(token, f"expected '{word}', found {describe(token)}")
        return self.next()

    def at_eof(self) -> bool:
        return self.peek().kind == "EOF"

    def error(self, token: Token, message: str) -> ConfigError:
        """Return (not raise) a ConfigError at token's line."""
        return ConfigError(self.path, token.line, message)


def _assignment(ts: TokenStream, what: str) -> tuple[Token, Token]:
    """Parse `ID = (STRING | TIME)`; return the key and the value tokens.

    what names the expected key in the error when there is no identifier.
    """
    key = ts.expect("ID", what)
    ts.expect("EQUALS", f"'=' after '{_shorten(str(key.value))}'")
    value = ts.next()
    if value.kind not in ("STRING", "TIME"):
        raise ts.error(value, f"expected a string or a time after '=', found {describe(value)}")
    return key, value


def _check_type(ts: TokenStream, key: Token, value: Token, kind: str) -> None:
    if value.kind != kind:
        wanted = "a string" if kind == "STRING" else "a time such as 30m"
        raise ts.error(key, f"'{key.value}' needs {wanted}, not {describe(value)}")


# --- conf -------------------------------------------------------------------


@dataclass(frozen=True)
class ExtsmailConf:
    """The extsmail conf file (extsmail.conf(5)).

    spool_dir is as written: a leading `~` is the caller's to expand.
    notify_failure_interval is in seconds, 0 meaning never.
    """

    spool_dir: str
    notify_failure_interval: int = 0
    notify_failure_cmd: Optional[str] = None
    notify_success_cmd: Optional[str] = None


_CONF_TYPES = {
    "spool_dir": "STRING",
    "notify_failure_interval": "TIME",
    "notify_failure_cmd": "STRING",
    "notify_success_cmd": "STRING",
}


def parse_extsmail_conf(data: Union[bytes, str], path: str) -> ExtsmailConf:
    """Parse a conf file: a sequence of `KEY = VALUE`; ConfigError on any fault.

    Unlike the C extsmail, a key given twice is an error (it kept the last).
    """
    ts = TokenStream(tokenize(data, path), path)
    values: dict[str, Union[str, int]] = {}
    lines: dict[str, int] = {}
    while not ts.at_eof():
        key, value = _assignment(ts, "a key")
        name = str(key.value)
        if name not in _CONF_TYPES:
            raise ts.error(key, f"unknown key '{_shorten(name)}'")
        if name in values:
            raise ts.error(key, f"'{name}' already set at line {lines[name]}")
        _check_type(ts, key, value, _CONF_TYPES[name])
        if name == "spool_dir" and value.value == "":
            raise ts.error(key, "spool_dir is empty")
        values[name] = value.value
        lines[name] = key.line
    if "spool_dir" not in values:
        raise ConfigError(path, 0, "spool_dir not set")
    return ExtsmailConf(**values)  # type: ignore[arg-type]


# --- externals --------------------------------------------------------------


@dataclass(frozen=True)
class HeaderRule:
    """`match header "RE"` or `reject header "RE"`; pattern is POSIX ERE text."""

    kind: str  # "match" or "reject"
    pattern: str
    line: int


@dataclass(frozen=True)
class External:
    """One `external NAME { ... }`: a command to send a message through.

    sendmail_argv is sendmail split into words as a POSIX shell would,
    without running a shell.  timeout is in seconds, None when not given.
    """

    name: str
    sendmail: str
    sendmail_argv: list[str]
    timeout: Optional[int]
    line: int


@dataclass(frozen=True)
class Group:
    """One `group { ... }`: header rules, then externals tried in order."""

    matches: list[HeaderRule]
    externals: list[External]
    line: int


_EXTERNAL_TYPES = {"sendmail": "STRING", "timeout": "TIME"}


def parse_externals(data: Union[bytes, str], path: str) -> list[Group]:
    """Parse an externals file (extsmail.externals(5)); ConfigError on any fault.

    Unlike the C extsmail, two externals of the same name are an error.
    """
    ts = TokenStream(tokenize(data, path), path)
    groups: list[Group] = []
    names: dict[str, int] = {}
    while not ts.at_eof():
        groups.append(_group(ts, names))
    if not groups:
        raise ConfigError(path, 0, "no group defined")
    return groups


def _group(ts: TokenStream, names: dict[str, int]) -> Group:
    start = ts.expect_word("group")
    ts.expect("LBRACE", "'{' after 'group'")
    rules: list[HeaderRule] = []
    while ts.peek().kind == "ID" and ts.peek().value in ("match", "reject"):
        keyword = ts.next()
        ts.expect_word("header")
        pattern = ts.expect("STRING", "a header regex in double quotes")
        rules.append(HeaderRule(str(keyword.value), str(pattern.value), keyword.line))
    externals: list[External] = []
    while ts.peek().kind == "ID" and ts.peek().value == "external":
        externals.append(_external(ts, names))
    token = ts.peek()
    if token.kind != "RBRACE":
        if token.kind == "ID" and token.value in ("match", "reject"):
            raise ts.error(token, f"'{token.value}' must come before the group's externals")
        wanted = "'external' or '}'" if externals else "'match', 'reject' or 'external'"
        raise ts.error(token, f"expected {wanted}, found {describe(token)}")
    if not externals:
        raise ts.error(start, "group has no external")
    ts.next()
    return Group(rules, externals, start.line)


def _external(ts: TokenStream, names: dict[str, int]) -> External:
    start = ts.expect_word("external")
    name_token = ts.expect("ID", "a name after 'external'")
    name = str(name_token.value)
    if name in names:
        raise ts.error(name_token, f"external '{name}' already defined at line {names[name]}")
    names[name] = name_token.line
    ts.expect("LBRACE", f"'{{' after 'external {name}'")
    seen: dict[str, int] = {}  # key -> line where it was set
    sendmail: Optional[str] = None
    argv: list[str] = []
    timeout: Optional[int] = None
    while ts.peek().kind != "RBRACE":
        key, value = _assignment(ts, "a key or '}'")
        key_name = str(key.value)
        if key_name not in _EXTERNAL_TYPES:
            raise ts.error(key, f"unknown key '{_shorten(key_name)}' in external '{name}'")
        if key_name in seen:
            raise ts.error(
                key, f"'{key_name}' already set at line {seen[key_name]} in external '{name}'"
            )
        seen[key_name] = key.line
        _check_type(ts, key, value, _EXTERNAL_TYPES[key_name])
        if key_name == "sendmail":
            sendmail = str(value.value)
            argv = _split_command(ts, key, sendmail)
        else:
            timeout = int(value.value)
    ts.next()
    if sendmail is None:
        raise ts.error(start, f"external '{name}' has no sendmail")
    return External(name, sendmail, argv, timeout, start.line)


def _split_command(ts: TokenStream, key: Token, command: str) -> list[str]:
    """Split a sendmail command into words as a POSIX shell would."""
    try:
        argv = shlex.split(command, posix=True)
    except ValueError as e:
        raise ts.error(key, f"cannot split sendmail into words: {e}") from None
    if not argv:
        raise ts.error(key, "sendmail is empty")
    return argv
