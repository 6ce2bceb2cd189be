"""mswatch/config.py: the ~/.mswatchrc file: its tokenizer and its parser.

The only code that reads ~/.mswatchrc.  The format is the original
mswatch's (mswatchrc(5)): `#` comments, whitespace-separated tokens, one
statement per line except `store NAME { watch CMD... }`, whose braces may
stand on lines of their own.  Beyond the original: a token may be written
in double quotes ("two words", "" for an empty argument; \\" and \\\\
inside), and durations may carry a unit (30s, 5m, 1h, 2d).

Braces are read as the original reads them: a `{` or `}` is a token only
when it stands alone, so `a{b}` and `x{1,2}` are words.  A file that cannot
be read that way is read a second time with every unquoted brace a token of
its own, even against a word (`store a {watch x}`), which the original
refuses.  A store name given twice is taken, as the original takes it: the
later definition replaces the earlier one, and a warning says so.

Every error is ConfigError(path, line, message).  Pure: parse_mswatchrc()
takes the text; read_mswatchrc() only adds reading the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

from ..core.errors import ConfigError
from ..core.times import parse_seconds
from .plan import Timing

# Token kinds.
WORD, OPEN, CLOSE, NEWLINE = "word", "{", "}", "newline"
MAX_CONFIG_BYTES = 1 << 20  # a longer ~/.mswatchrc is a mistake, not a config


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


@dataclass(frozen=True)
class Store:
    name: str
    watch: tuple  # argv
    line: int


@dataclass(frozen=True)
class MswatchConfig:
    path: str
    timing: Timing
    sync: tuple  # argv
    prefix: Optional[str]  # mailbox_prefix, None when not set
    separator: str
    stores: tuple  # exactly two Store
    warnings: tuple = ()  # (line, message) of what was taken but looks wrong
    network_events: bool = True  # act on the machine's network events (roaming)

    @property
    def store_pair(self) -> str:
        """The hooks' ENDPOINT: the two store names joined by "-"."""
        return "-".join(s.name for s in self.stores)


_BLANKS = " \t\r\f\v"
_RUN_ENDS = _BLANKS + "\n#"  # what ends a run of characters, a word at most


def _closed_later(text: str, i: int) -> bool:
    """Whether the `{` at text[i] is closed by a `}` of the same run."""
    depth = 0
    for c in text[i:]:
        if c in _RUN_ENDS:
            return False
        depth += (c == "{") - (c == "}")
        if depth == 0:
            return True
    return False


def tokenize(text: str, path: str, *, split_braces: bool = False) -> Iterator[Token]:
    """The tokens of `text`, with a NEWLINE token at the end of each line.

    As the original reads it, a `{` or `}` is a token when it stands alone
    (followed by a blank, a comment or the end of the line) and part of the
    word when written against other characters.  With `split_braces`, a
    brace against a word is a token too, unless it pairs with another brace
    of the same word (`x{1,2}` stays a word; `a{watch` is `a`, `{`, `watch`).
    """
    line = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            yield Token(NEWLINE, "\n", line)
            line += 1
            i += 1
        elif c in _BLANKS:
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{}" and (i + 1 == n or text[i + 1] in _RUN_ENDS or (
                split_braces and (c == "}" or not _closed_later(text, i)))):
            yield Token(OPEN if c == "{" else CLOSE, c, line)
            i += 1
        else:
            word: list[str] = []
            quoted = False
            depth = 0  # braces of this word still open (with split_braces)
            while i < n and text[i] not in _RUN_ENDS:
                c = text[i]
                if split_braces and c == "}" and depth == 0:
                    break
                if split_braces and c == "{":
                    if not _closed_later(text, i):
                        break
                    depth += 1
                elif split_braces and c == "}":
                    depth -= 1
                if c == '"':
                    quoted = True
                    i += 1
                    while True:
                        if i >= n or text[i] == "\n":
                            raise ConfigError(path, line, "unterminated double quote")
                        c = text[i]
                        if c == '"':
                            i += 1
                            break
                        if c == "\\" and i + 1 < n and text[i + 1] in '"\\':
                            word.append(text[i + 1])
                            i += 2
                            continue
                        word.append(c)
                        i += 1
                else:
                    word.append(c)
                    i += 1
            yield Token(WORD, "".join(word), line) if (word or quoted) else Token(WORD, "", line)
    yield Token(NEWLINE, "\n", line)


class _Parser:
    KEYWORDS = ("base_delay", "inter_delay", "max_delay", "poll_period", "ignore", "sync",
                "mailbox_prefix", "network_events", "store")

    def __init__(self, text: str, path: str, *, split_braces: bool = False) -> None:
        self.path = path
        self.tokens = list(tokenize(text, path, split_braces=split_braces))
        self.warnings: list[tuple[int, str]] = []
        self.twice: list[str] = []  # store names defined again
        self.pos = 0
        self.delays: dict[str, float] = {}
        self.inter_delays: dict[str, float] = {}
        self.ignore: set[str] = set()
        self.sync: Optional[tuple] = None
        self.prefix: Optional[str] = None
        self.separator = ""
        self.network_events = True
        self.stores: list[Store] = []

    def error(self, line: int, message: str) -> ConfigError:
        return ConfigError(self.path, line, message)

    def peek(self) -> Optional[Token]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def rest_of_line(self) -> list[Token]:
        """The WORD tokens up to the end of the line (a brace there is an error)."""
        words: list[Token] = []
        while True:
            tok = self.peek()
            if tok is None or tok.kind == NEWLINE:
                return words
            if tok.kind != WORD:
                raise self.error(tok.line, f"unexpected '{tok.text}'")
            words.append(self.take())

    def skip_newlines(self) -> None:
        while (tok := self.peek()) is not None and tok.kind == NEWLINE:
            self.pos += 1

    def duration(self, keyword: str, tok: Token) -> float:
        try:
            return parse_seconds(tok.text)
        except ValueError as exc:
            raise self.error(tok.line, f"{keyword}: {exc}") from None

    def parse(self) -> MswatchConfig:
        last_line = 1
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok is None:
                break
            last_line = tok.line
            self.take()
            if tok.kind != WORD:
                raise self.error(tok.line, f"unexpected '{tok.text}'")
            if tok.text not in self.KEYWORDS:
                raise self.error(tok.line, f"unknown keyword '{tok.text}'")
            if tok.text == "store":
                self.store(tok)
            else:
                self.statement(tok, self.rest_of_line())
            last_line = self.tokens[self.pos - 1].line
        if len(self.stores) != 2:
            line = self.stores[-1].line if self.stores else last_line
            twice = "".join(f"; store '{name}' is defined twice" for name in self.twice)
            raise self.error(line, f"exactly two stores are needed, found {len(self.stores)}"
                             + twice)
        if self.sync is None:
            raise self.error(last_line, "no 'sync' line: which program syncs the mailboxes?")
        timing = Timing(
            base_delay=self.delays.get("base_delay", 10.0),
            inter_delay=self.delays.get("inter_delay", 60.0),
            inter_delays=dict(self.inter_delays),
            max_delay=self.delays.get("max_delay", 600.0),
            poll_period=self.delays.get("poll_period", 86400.0),
            ignore=frozenset(self.ignore),
        )
        return MswatchConfig(self.path, timing, self.sync, self.prefix, self.separator,
                             tuple(self.stores), tuple(self.warnings), self.network_events)

    def statement(self, kw: Token, args: list[Token]) -> None:
        name = kw.text
        if name in ("base_delay", "max_delay", "poll_period"):
            if len(args) != 1:
                raise self.error(kw.line, f"{name} takes one duration")
            self.delays[name] = self.duration(name, args[0])
        elif name == "inter_delay":
            if not args:
                raise self.error(kw.line, "inter_delay takes a duration and optional mailboxes")
            seconds = self.duration(name, args[0])
            if len(args) == 1:
                self.delays[name] = seconds
            for box in args[1:]:
                self.inter_delays[box.text] = seconds
        elif name == "ignore":
            if not args:
                raise self.error(kw.line, "ignore takes one or more mailboxes")
            self.ignore.update(t.text for t in args)
        elif name == "sync":
            if not args or not args[0].text:
                raise self.error(kw.line, "sync takes a program and its arguments")
            self.sync = tuple(t.text for t in args)
        elif name == "mailbox_prefix":
            if len(args) not in (1, 2):
                raise self.error(kw.line, "mailbox_prefix takes a prefix and a separator")
            self.prefix = args[0].text
            self.separator = args[1].text if len(args) == 2 else ""
        elif name == "network_events":
            if len(args) != 1 or args[0].text not in ("yes", "no"):
                raise self.error(kw.line, "network_events takes yes or no")
            self.network_events = args[0].text == "yes"

    def store(self, kw: Token) -> None:
        name_tok = self.peek()
        if name_tok is None or name_tok.kind != WORD or not name_tok.text:
            raise self.error(kw.line, "store takes a name, then { watch COMMAND... }")
        self.take()
        earlier = next((i for i, s in enumerate(self.stores) if s.name == name_tok.text), None)
        if earlier is None and len(self.stores) == 2:
            raise self.error(kw.line, "exactly two stores are needed, found a third")
        self.skip_newlines()
        tok = self.peek()
        if tok is None or tok.kind != OPEN:
            where = tok.line if tok is not None else kw.line
            raise self.error(where, f"store {name_tok.text}: expected '{{'")
        self.take()
        watch: Optional[tuple] = None
        while True:
            self.skip_newlines()
            tok = self.peek()
            if tok is None:
                raise self.error(kw.line, f"store {name_tok.text}: missing '}}'")
            self.take()
            if tok.kind == CLOSE:
                break
            if tok.kind != WORD or tok.text != "watch":
                raise self.error(tok.line, f"store {name_tok.text}: expected 'watch' or '}}', "
                                 f"not '{tok.text}'")
            words = []
            while (nxt := self.peek()) is not None and nxt.kind == WORD:
                words.append(self.take().text)
            if not words or not words[0]:
                raise self.error(tok.line, "watch takes a command and its arguments")
            if watch is not None:
                raise self.error(tok.line, f"store {name_tok.text}: a second 'watch'")
            watch = tuple(words)
        if watch is None:
            raise self.error(kw.line, f"store {name_tok.text}: no 'watch' command")
        store = Store(name_tok.text, watch, kw.line)
        if earlier is None:
            self.stores.append(store)
            return
        # The original takes a name given twice; the later definition wins.
        self.warnings.append((kw.line, f"store '{store.name}' is defined twice: this "
                              f"definition replaces the one of line {self.stores[earlier].line}"))
        self.stores[earlier] = store
        self.twice.append(store.name)


def parse_mswatchrc(text: str, path: str) -> MswatchConfig:
    """Parse the text of a ~/.mswatchrc; ConfigError(path, line, ...) if wrong.

    Read first as the original reads it (a brace against other characters
    is part of the word), then, if that fails, with every brace a token of
    its own.  When both fail, the error is the one found further down the
    file (the second reading's when on the same line).
    """
    try:
        return _Parser(text, path).parse()
    except ConfigError as first:
        try:
            return _Parser(text, path, split_braces=True).parse()
        except ConfigError as second:
            if first.line > second.line:
                raise first from None
            raise


def read_mswatchrc(path: str) -> MswatchConfig:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, 0, f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(path, 0, "larger than 1 MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(path, line, "not UTF-8") from None
    return parse_mswatchrc(text, path)
