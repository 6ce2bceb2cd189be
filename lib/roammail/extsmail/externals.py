"""externals.py: the extsmail externals file (extsmail.externals(5)).

Owns the grammar of the externals file: which groups of externals a message
may be sent through, chosen by its headers, and the command of each
external.  The lexical rules (comments, identifiers, strings and their
escapes, TIME) are core/tokens.py's, and so is the TokenStream this grammar is
parsed with.  Every error is ConfigError(path, line, message), with line 0
meaning the whole file.  Like tokens.py, it only turns bytes into values: it
never compiles a header regex and never runs a command.  Only extsmaild
imports it (extsmail, run for every mail sent, must not pay for it).

Grammar (BNF; ID, STRING and TIME are the tokens of core/tokens.py):

    <externals> ::= <group> | <group> <externals>
    <group>     ::= "group" "{" <rules> <external-list> "}"
    <rules>     ::= "" | <rule> <rules>
    <rule>      ::= "match" "header" STRING | "reject" "header" STRING
    <external-list> ::= <external> | <external> <external-list>
    <external>  ::= "external" ID "{" <settings> "}"
    <settings>  ::= "" | <setting> <settings>
    <setting>   ::= "sendmail" "=" STRING | "timeout" "=" TIME
                  | "permanent" "=" STRING | "dedup" "=" STRING

A file has at least one group and every group at least one external; the
header rules of a group come before its externals.  In an external,
`sendmail` is required and each key is given at most once, in any order.
Unlike the C extsmail, two externals of the same name (in any groups) are
an error.  A header regex is POSIX ERE text, kept as written after the
string escapes (so `"a\\.b"` is the regex `a.b`; write `"a\\\\.b"` for a
literal dot).  `sendmail` is split into words as a POSIX shell would,
without running a shell: quotes and backslashes group words, and nothing is
expanded.  `permanent` lists, separated by blanks, the exit statuses of the
external that say a message can never be sent (an empty string: none);
without it, DEFAULT_PERMANENT.  `dedup` is "yes" when the external drops
a message whose Message-ID it has already taken (share/roammail/
dedup-sendmail on the far side), "no" (the default) otherwise.  The C
extsmail knows neither `permanent` nor `dedup`.
"""

from __future__ import annotations

from roammail.core.errors import ConfigError
from roammail.core.tokens import (
    Token,
    TokenStream,
    _Frozen,
    describe,
    split_words,
    tokenize,
)

__all__ = [
    "DEFAULT_PERMANENT",
    "External",
    "Group",
    "HeaderRule",
    "parse_externals",
]

# No dataclasses, shlex or typing here: each costs a cron job's run of
# extsmaild over an empty queue more than the rest of its work.

# The exit statuses (sysexits.h) that say an external will never take a
# message: EX_DATAERR (msmtp: the server refused a recipient or the sender
# with a 5xx reply), EX_NOUSER and EX_NOHOST (sendmail: no such user, no
# such host).  Left out on purpose: EX_UNAVAILABLE (msmtp says it for a 4xx
# reply too), EX_PROTOCOL (often a connection that broke), EX_NOPERM (a
# client may say it for a refused login: the account, not the message),
# EX_USAGE and EX_CONFIG (the external's set-up, which the user fixes),
# EX_TEMPFAIL, any other status, a signal and a timeout.
DEFAULT_PERMANENT = frozenset((65, 67, 68))


class HeaderRule(_Frozen):
    """`match header "RE"` or `reject header "RE"`; pattern is POSIX ERE text."""

    __slots__ = ("kind", "pattern", "line")
    kind: str  # "match" or "reject"
    pattern: str
    line: int

    def __init__(self, kind: str, pattern: str, line: int) -> None:
        self._set("kind", kind)
        self._set("pattern", pattern)
        self._set("line", line)


class External(_Frozen):
    """One `external NAME { ... }`: a command to send a message through.

    sendmail_argv is sendmail split into words as a POSIX shell would,
    without running a shell.  timeout is in seconds, None when not given.
    permanent is the set of exit statuses that are permanent failures,
    DEFAULT_PERMANENT when not given.  dedup says that sending a message
    again through it cannot make a duplicate.
    """

    __slots__ = ("name", "sendmail", "sendmail_argv", "timeout", "line", "permanent", "dedup")
    name: str
    sendmail: str
    sendmail_argv: list
    timeout: int | None
    line: int
    permanent: frozenset
    dedup: bool

    def __init__(self, name: str, sendmail: str, sendmail_argv: list,
                 timeout: int | None, line: int,
                 permanent: frozenset = DEFAULT_PERMANENT, dedup: bool = False) -> None:
        self._set("name", name)
        self._set("sendmail", sendmail)
        self._set("sendmail_argv", sendmail_argv)
        self._set("timeout", timeout)
        self._set("line", line)
        self._set("permanent", permanent)
        self._set("dedup", dedup)


class Group(_Frozen):
    """One `group { ... }`: header rules, then externals tried in order."""

    __slots__ = ("matches", "externals", "line")
    matches: list
    externals: list
    line: int

    def __init__(self, matches: list, externals: list, line: int) -> None:
        self._set("matches", matches)
        self._set("externals", externals)
        self._set("line", line)


_EXTERNAL_TYPES = {"sendmail": "STRING", "timeout": "TIME", "permanent": "STRING",
                   "dedup": "STRING"}


def parse_externals(data: bytes | str, path: str) -> list[Group]:
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
    start, name_token = ts.named_block("external", names)
    name = str(name_token.value)
    seen: dict[str, int] = {}  # key -> line where it was set
    sendmail: str | None = None
    argv: list[str] = []
    timeout: int | None = None
    permanent = DEFAULT_PERMANENT
    dedup = False
    while ts.peek().kind != "RBRACE":
        key, value = ts.assignment("a key or '}'")
        key_name = ts.setting(key, value, _EXTERNAL_TYPES, seen, f"external '{name}'")
        if key_name == "sendmail":
            sendmail = str(value.value)
            argv = _split_command(ts, key, sendmail)
        elif key_name == "permanent":
            permanent = _exit_statuses(ts, key, str(value.value))
        elif key_name == "dedup":
            if value.value not in ("yes", "no"):
                raise ts.error(key, "'dedup' takes \"yes\" or \"no\", "
                               f"not \"{str(value.value)[:20]}\"")
            dedup = value.value == "yes"
        else:
            timeout = int(value.value)
    ts.next()
    if sendmail is None:
        raise ts.error(start, f"external '{name}' has no sendmail")
    return External(name, sendmail, argv, timeout, start.line, permanent, dedup)


def _exit_statuses(ts: TokenStream, key: Token, text: str) -> frozenset:
    """The exit statuses of `permanent`: numbers from 1 to 255, separated by
    blanks (none at all for an empty string)."""
    statuses = set()
    for word in text.split():
        if not (word.isascii() and word.isdigit() and 1 <= int(word) <= 255):
            raise ts.error(key, "'permanent' takes exit statuses from 1 to 255 "
                           f"separated by blanks, not '{word[:20]}'")
        statuses.add(int(word))
    return frozenset(statuses)


def _split_command(ts: TokenStream, key: Token, command: str) -> list[str]:
    """Split a sendmail command into words as a POSIX shell would."""
    try:
        argv = split_words(command)
    except ValueError as e:
        raise ts.error(key, f"cannot split sendmail into words: {e}") from None
    if not argv:
        raise ts.error(key, "sendmail is empty")
    return argv
