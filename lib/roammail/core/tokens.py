"""tokens.py: the tokenizer of the extsmail-style config files, and its TokenStream.

Owns the lexical rules shared by extsmail's `conf` and `externals` files
(see extsmail.conf(5), extsmail.externals(5)) and by the files that borrow
their syntax (syncmail.conf, watch-imap.conf), and the TokenStream every
one of those grammars is parsed with.  The grammars themselves live with
their tools (extsmail/conf.py, extsmail/externals.py, syncmail/plan.py,
watch_imap/config.py).  Every error is ConfigError(path, line, message),
with line 0 meaning the whole file.
This module only turns bytes into values: it never expands `~`, never
compiles a header regex, never runs a command and never opens a file except
in read_config_file.

It must stay cheap to import: extsmail, run for every mail sent, imports it.
So it imports none of re, typing, dataclasses, shlex or inspect: the
scanner looks at characters by hand and the value classes are plain
classes with __slots__.

Lexical rules: `#` starts a comment to the end of the line; identifiers are
`[_a-zA-Z][_a-zA-Z0-9]*`; strings are in double quotes, may span lines and
know the escapes `\\n \\r \\t` (any other escaped character stands for itself,
so `"a\\.b"` is `a.b`); TIME is `[0-9]+[dhms]` and its value is in seconds;
`{`, `}` and `=` are tokens of their own.  A CRLF line end counts as LF
(the C extsmail refuses CR outright).
"""

from roammail.core.errors import ConfigError

__all__ = [
    "ConfigError",
    "Token",
    "TokenStream",
    "describe",
    "read_config_file",
    "shorten",
    "split_words",
    "tokenize",
]


# --- immutable values -------------------------------------------------------


class _Frozen:
    """Base of small immutable value classes (a frozen dataclass, cheaply).

    A subclass lists its fields in __slots__ and sets them in __init__ with
    _set.  Instances compare equal when of the same class with equal fields,
    hash by their fields, and raise AttributeError on any assignment.
    """

    __slots__ = ()

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def _fields(self) -> tuple:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple:
        return (self.__class__, self._fields())


# --- tokens -----------------------------------------------------------------


class Token(_Frozen):
    """One token. kind is ID, STRING, TIME, NUMBER, LBRACE, RBRACE, EQUALS or EOF.

    value: the identifier, the unescaped string, the TIME in seconds (int),
    the NUMBER (int; only when tokenize() was asked for numbers),
    the punctuation character, or "" for EOF.  line: where the token starts.
    """

    __slots__ = ("kind", "value", "line")
    kind: str
    value: "str | int"
    line: int

    def __init__(self, kind: str, value: "str | int", line: int) -> None:
        self._set("kind", kind)
        self._set("value", value)
        self._set("line", line)


_PUNCTUATION = {"{": "LBRACE", "}": "RBRACE", "=": "EQUALS"}
_BLANKS = " \t\r\f\v"
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
# ASCII only: `[_a-zA-Z]` starts an identifier, `[_a-zA-Z0-9]` continues it.
_DIGITS = frozenset("0123456789")
_ID_START = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WORD = _ID_START | _DIGITS


def read_config_file(path: str) -> bytes:
    """Return the bytes of the file at path; ConfigError(path, 0, ...) if unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(str(path), 0, f"cannot read: {e.strerror or e}") from e


def tokenize(data: "bytes | str", path: str, *, numbers: bool = False) -> "list[Token]":
    """Return the tokens of data, the last one EOF; ConfigError on a lexical error.

    numbers: a bare `[0-9]+` is a NUMBER token (its value an int) instead of
    an error; the extsmail files have none, watch-imap's has (`port = 993`).
    """
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
        elif c in _ID_START:
            end = _word_end(text, i + 1)
            tokens.append(Token("ID", text[i:end], line))
            i = end
        elif c in _DIGITS:
            # A TIME and whatever letters stick to it, so "5mx" is one bad
            # TIME rather than a TIME followed by an identifier.
            end = _word_end(text, i + 1)
            if numbers and text[i:end].isdigit():
                if end - i > 12:
                    raise ConfigError(path, line, f"number {shorten(text[i:end], 20)} is too large")
                tokens.append(Token("NUMBER", int(text[i:end]), line))
                i = end
                continue
            from roammail.core.times import parse_time  # here: most conf files have no TIME

            try:
                seconds = parse_time(text[i:end])
            except ValueError as e:
                raise ConfigError(path, line, str(e)) from None
            tokens.append(Token("TIME", seconds, line))
            i = end
        else:
            shown = f"'{c}'" if c.isprintable() else repr(c)
            raise ConfigError(path, line, f"unexpected character {shown}")
    eof_line = line - 1 if text.endswith("\n") else line
    tokens.append(Token("EOF", "", eof_line))
    return tokens


def _word_end(text: str, i: int) -> int:
    """Return the index of the first character at or after i not in `[_a-zA-Z0-9]`."""
    n = len(text)
    while i < n and text[i] in _WORD:
        i += 1
    return i


def _decode(data: "bytes | str", path: str) -> str:
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


def _scan_string(text: str, start: int, line: int, path: str) -> "tuple[str, int, int]":
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


def describe(token: "Token") -> str:
    """Return how an error message names token, e.g. "'}'" or "end of file"."""
    if token.kind == "ID":
        return f"'{shorten(str(token.value))}'"
    if token.kind == "STRING":
        return "a string"
    if token.kind == "TIME":
        return "a time"
    if token.kind == "NUMBER":
        return "a number"
    if token.kind == "EOF":
        return "end of file"
    return f"'{token.value}'"


def shorten(text: str, limit: int = 40) -> str:
    """Return text, cut to limit characters and "..." when longer (for messages)."""
    return text if len(text) <= limit else text[:limit] + "..."


class TokenStream:
    """A cursor over tokens (ending with EOF) that raises ConfigError for path."""

    def __init__(self, tokens: "list[Token]", path: str) -> None:
        if not tokens or tokens[-1].kind != "EOF":
            raise ValueError("token list must end with an EOF token")
        self._tokens = tokens
        self._pos = 0
        self.path = path

    def peek(self) -> "Token":
        """Return the next token without consuming it."""
        return self._tokens[self._pos]

    def next(self) -> "Token":
        """Consume and return the next token; at EOF, keep returning EOF."""
        token = self._tokens[self._pos]
        if token.kind != "EOF":
            self._pos += 1
        return token

    def expect(self, kind: str, what: str) -> "Token":
        """Consume and return the next token if it is of kind.

        Otherwise raise ConfigError "expected WHAT, found X" at its line.
        """
        token = self.peek()
        if token.kind != kind:
            raise self.error(token, f"expected {what}, found {describe(token)}")
        return self.next()

    def expect_word(self, word: str) -> "Token":
        """Consume the identifier word (a keyword) or raise ConfigError."""
        token = self.peek()
        if token.kind != "ID" or token.value != word:
            raise self.error(token, f"expected '{word}', found {describe(token)}")
        return self.next()

    def at_eof(self) -> bool:
        return self.peek().kind == "EOF"

    def error(self, token: "Token", message: str) -> "ConfigError":
        """Return (not raise) a ConfigError at token's line."""
        return ConfigError(self.path, token.line, message)

    def assignment(self, what: str) -> "tuple[Token, Token]":
        """Parse `ID = (STRING | TIME | NUMBER)`; return the key and the value tokens.

        what names the expected key in the error when there is no identifier.
        """
        key = self.expect("ID", what)
        self.expect("EQUALS", f"'=' after '{shorten(str(key.value))}'")
        value = self.next()
        if value.kind not in ("STRING", "TIME", "NUMBER"):
            raise self.error(
                value, f"expected a string or a time after '=', found {describe(value)}"
            )
        return key, value

    def named_block(self, keyword: str, names: "dict[str, int]",
                    what: "str | None" = None) -> "tuple[Token, Token]":
        """`KEYWORD NAME {`, the head of a named block (an external, a
        syncmail source, a watch-imap account): its keyword's and its
        name's tokens.  `names` (name -> line) refuses a name defined
        before and records this one; `what` describes the name expected."""
        start = self.expect_word(keyword)
        name = self.expect("ID", what or f"a name after '{keyword}'")
        text = str(name.value)
        if text in names:
            raise self.error(name, f"{keyword} '{text}' already defined at line {names[text]}")
        names[text] = name.line
        self.expect("LBRACE", f"'{{' after '{keyword} {text}'")
        return start, name

    def setting(self, key: "Token", value: "Token", types: "dict[str, str]",
                seen: "dict[str, int]", where: str, repeatable: "tuple[str, ...]" = ()) -> str:
        """Check one `key = value` of a block (`where`, e.g. "external 'x'"):
        a known key (`types`: key -> STRING, TIME...), set once unless
        `repeatable` (`seen`: key -> line, updated here), of its type.
        Returns the key's name."""
        name = str(key.value)
        if name not in types:
            raise self.error(key, f"unknown key '{shorten(name)}' in {where}")
        if name in seen and name not in repeatable:
            raise self.error(key, f"'{name}' already set at line {seen[name]} in {where}")
        seen.setdefault(name, key.line)
        self.check_type(key, value, types[name])
        return name

    def check_type(self, key: "Token", value: "Token", kind: str) -> None:
        """Raise ConfigError at key unless value is of kind (STRING, TIME or NUMBER)."""
        if value.kind != kind:
            wanted = {"STRING": "a string", "TIME": "a time such as 30m",
                      "NUMBER": "a number"}.get(kind, kind)
            raise self.error(key, f"'{key.value}' needs {wanted}, not {describe(value)}")


# --- command words ----------------------------------------------------------

_WORD_BLANKS = " \t\r\n"


def split_words(command: str) -> "list[str]":
    """Split a command into words as shlex.split(command) does (POSIX mode,
    no comments), without importing shlex and re: blanks separate words;
    a backslash makes the next character stand for itself; '...' keeps
    everything; in "..." a backslash escapes only " and itself.  ValueError
    for an unpaired quote or a trailing backslash."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in _WORD_BLANKS:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
        elif c == "\\":
            if i + 1 == n:
                raise ValueError("No escaped character")
            word.append(command[i + 1])
            in_word = True
            i += 2
        elif c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise ValueError("No closing quotation")
            word.append(command[i + 1:end])
            in_word = True
            i = end + 1
        elif c == '"':
            i += 1
            while True:
                if i == n:
                    raise ValueError("No closing quotation")
                c = command[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and command[i + 1] in '"\\':
                    word.append(command[i + 1])
                    i += 2
                    continue
                word.append(c)
                i += 1
            in_word = True
        else:
            word.append(c)
            in_word = True
            i += 1
    if in_word:
        words.append("".join(word))
    return words
