"""conf.py: the grammar of syncmail.conf (syncmail.conf(5)).

Owns `parse_config` and the values it makes: a `Source` per source block,
with its `Rule`s.  Built on core.tokens (the lexical rules of
extsmail.conf(5)); header patterns are compiled by core.headers.  It only
turns bytes into values (a leading `~` in local is expanded here), and
must stay cheap to import: syncmail reads its configuration while ssh
logs in, and typing is not imported at run time.
"""

from __future__ import annotations

from ..core import locations
from ..core.errors import ConfigError

TYPE_CHECKING = False  # typing costs ~15 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Optional

    from ..core.tokens import Token, TokenStream
    from .plan import Action


# Grammar (syncmail.conf(5)); the tokens are core/tokens.py's:
#
#   <config>  ::= <source> | <source> <config>
#   <source>  ::= "source" ID "{" <items> "}"
#   <items>   ::= "" | <item> <items>
#   <item>    ::= "host" "=" STRING | "remote" "=" STRING
#               | "local" "=" STRING | "offline_ok" "=" STRING | <rule>
#   <rule>    ::= "match" "header" STRING <action>
#   <action>  ::= "inbox" | "folder" STRING | "discard" | "archive" STRING

class Rule:
    """A `match header` rule: the regex (and its text), its line, its action."""

    __slots__ = ("pattern", "line", "regex", "action")

    def __init__(self, pattern: str, line: int, regex: object, action: Action) -> None:
        self.pattern = pattern
        self.line = line
        self.regex = regex
        self.action = action


class Source:
    """One source: its server maildir (host, remote), its local maildir,
    its rules; where it was configured (path, line, the line of `remote`;
    path "" for the one-shot form); whether a run that finds the server
    unreachable succeeds (offline_ok)."""

    __slots__ = ("name", "host", "remote", "local", "rules", "path", "line", "remote_line",
                 "offline_ok")

    def __init__(self, name: str, host: str, remote: str, local: str,
                 rules: Optional[list] = None, path: str = "", line: int = 0,
                 remote_line: int = 0, offline_ok: bool = False) -> None:
        self.name = name
        self.host = host
        self.remote = remote
        self.local = local
        self.rules = [] if rules is None else rules
        self.path = path
        self.line = line
        self.remote_line = remote_line
        self.offline_ok = offline_ok


_SETTINGS = ("host", "remote", "local")
_OPTIONAL = ("offline_ok",)
_SETTING_TYPES = {setting: "STRING" for setting in _SETTINGS + _OPTIONAL}
_BOOLEANS = {"yes": True, "no": False}


def parse_config(data: bytes | str, path: str) -> list[Source]:
    """Parse a syncmail.conf; ConfigError(path, line, ...) on any fault."""
    from ..core.tokens import TokenStream, tokenize

    ts = TokenStream(tokenize(data, path), path)
    sources: list[Source] = []
    names: dict[str, int] = {}
    while not ts.at_eof():
        sources.append(_source(ts, names))
    if not sources:
        raise ConfigError(path, 0, "no source defined")
    return sources


def _source(ts: TokenStream, names: dict[str, int]) -> Source:
    from ..core.tokens import describe, shorten

    start, name_token = ts.named_block("source", names)
    name = str(name_token.value)
    values: dict[str, Token] = {}
    seen: dict[str, int] = {}
    rules: list[Rule] = []
    while ts.peek().kind != "RBRACE":
        token = ts.peek()
        if token.kind == "ID" and token.value == "match":
            rules.append(_rule(ts))
            continue
        if token.kind != "ID" or token.value not in _SETTING_TYPES:
            raise ts.error(token, f"expected 'host', 'remote', 'local', 'offline_ok', 'match' "
                                  f"or '}}', found {describe(token)}")
        key, value = ts.assignment("a key")
        ts.setting(key, value, _SETTING_TYPES, seen, f"source '{name}'")
        if value.value == "":
            raise ts.error(key, f"'{key.value}' is empty")
        values[str(key.value)] = value
    ts.next()
    for needed in _SETTINGS:
        if needed not in values:
            raise ts.error(start, f"source '{name}' has no '{needed}'")
    host = str(values["host"].value)
    if host.startswith("-") or any(c.isspace() for c in host):
        raise ts.error(values["host"], f"bad host '{shorten(host)}'")
    offline_ok = False
    if "offline_ok" in values:
        text = str(values["offline_ok"].value)
        if text not in _BOOLEANS:
            raise ts.error(values["offline_ok"],
                           f"'offline_ok' must be \"yes\" or \"no\", not '{shorten(text)}'")
        offline_ok = _BOOLEANS[text]
    return Source(name, host, str(values["remote"].value),
                  locations.expand_home(str(values["local"].value)), rules,
                  ts.path, start.line, values["remote"].line, offline_ok)


def _rule(ts: TokenStream) -> Rule:
    from ..core import maildir
    from ..core.headers import compile_rule
    from ..core.tokens import describe, shorten
    from .plan import Action

    start = ts.expect_word("match")
    ts.expect_word("header")
    pattern = ts.expect("STRING", "a header regex in double quotes")
    verb = ts.expect("ID", "'inbox', 'folder', 'discard' or 'archive'")
    if verb.value == "inbox":
        action = Action("inbox", None, start.line)
    elif verb.value == "discard":
        action = Action("discard", None, start.line)
    elif verb.value in ("folder", "archive"):
        target = ts.expect("STRING", f"a string after '{verb.value}'")
        text = str(target.value)
        if verb.value == "folder":
            problem = maildir._folder_problem(text) if text != maildir.INBOX else None
            if problem is not None:
                raise ts.error(target, f"{problem}: '{shorten(text)}'")
        elif not text:
            raise ts.error(target, "archive directory is empty")
        else:
            text = locations.expand_home(text)
        action = Action(str(verb.value), text, start.line)
    else:
        raise ts.error(verb, f"expected 'inbox', 'folder', 'discard' or 'archive', "
                             f"found {describe(verb)}")

    class _Parsed:
        kind = "match"

        def __init__(self, pattern: str, line: int) -> None:
            self.pattern = pattern
            self.line = line

    compiled = compile_rule(_Parsed(str(pattern.value), start.line), ts.path)
    return Rule(compiled.pattern, start.line, compiled.regex, action)
