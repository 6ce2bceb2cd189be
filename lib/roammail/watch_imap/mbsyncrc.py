"""mbsyncrc.py: mbsync's configuration file (~/.mbsyncrc), as watch-imap reads it.

Owns the syntax of the file as mbsync(1) describes it, and nothing of its
meaning beyond what watch-imap needs: lines whose first non-blank
character is `#` are comments; every other line is a keyword and its
arguments, split at blanks, where double quotes group and a backslash makes
the next character stand for itself (`\\"`, `\\\\`); keywords are
case-insensitive; a section opens with a section keyword (IMAPAccount,
IMAPStore, MaildirStore, Channel, Group and their older names) and ends at
an empty line or at the end of the file.  Options outside a section are
global ones and are kept apart.

`parse_mbsyncrc(text, path)` gives every section with its options and their
lines; it checks only the syntax, so a file mbsync reads is read here too,
whatever options it uses.  Every error is ConfigError(path, line, message).
It never runs a command and never opens a file except in read_mbsyncrc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..core.errors import ConfigError
from ..core.tokens import read_config_file

# Section keyword (lower case) -> the class of object it defines.  mbsync
# 1.4 still reads the names of isync 1.3 and older.
SECTION_KINDS = {
    "imapaccount": "account",
    "imapstore": "imapstore",
    "imap4store": "imapstore",
    "maildirstore": "maildirstore",
    "channel": "channel",
    "group": "group",
}
MAX_FILE_BYTES = 1 << 20  # a longer ~/.mbsyncrc is a mistake, not a config


@dataclass(frozen=True)
class Option:
    keyword: str  # lower case
    args: tuple
    line: int


@dataclass
class Section:
    """One section: its class ("account", "imapstore", "maildirstore",
    "channel", "group"), its name, where it starts, and its options in
    order (a keyword may repeat, as CertificateFile does)."""

    kind: str
    name: str
    line: int
    options: list = field(default_factory=list)

    def get(self, keyword: str) -> Optional[Option]:
        """The last option of that keyword (mbsync keeps the last), or None."""
        found = None
        for option in self.options:
            if option.keyword == keyword:
                found = option
        return found

    def all(self, keyword: str) -> list:
        return [o for o in self.options if o.keyword == keyword]


@dataclass
class MbsyncConfig:
    path: str
    sections: list
    globals: list

    def find(self, kind: str, name: str) -> Optional[Section]:
        for section in self.sections:
            if section.kind == kind and section.name == name:
                return section
        return None

    def of_kind(self, kind: str) -> list:
        return [s for s in self.sections if s.kind == kind]


def split_words(text: str, path: str, line: int) -> list:
    """The words of one line, as mbsync splits them."""
    words: list[str] = []
    word: list[str] = []
    in_word = quoted = False
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n:
            word.append(text[i + 1])
            in_word = True
            i += 2
            continue
        if char == '"':
            quoted = not quoted
            in_word = True
        elif char in " \t" and not quoted:
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        else:
            word.append(char)
            in_word = True
        i += 1
    if quoted:
        raise ConfigError(path, line, "unterminated quoted string (no closing '\"')")
    if in_word:
        words.append("".join(word))
    return words


def parse_mbsyncrc(text: str, path: str) -> MbsyncConfig:
    config = MbsyncConfig(path, [], [])
    current: Optional[Section] = None
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped:
            current = None
            continue
        if stripped.startswith("#"):
            continue
        words = split_words(stripped, path, number)
        if not words:
            continue
        keyword, args = words[0].lower(), tuple(words[1:])
        kind = SECTION_KINDS.get(keyword)
        if kind is not None:
            if len(args) != 1:
                raise ConfigError(path, number, f"{words[0]} needs exactly one name")
            current = Section(kind, args[0], number)
            config.sections.append(current)
            continue
        option = Option(keyword, args, number)
        if current is None:
            config.globals.append(option)
        else:
            current.options.append(option)
    return config


def read_mbsyncrc(path: str) -> MbsyncConfig:
    data = read_config_file(path)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, 0, f"larger than {MAX_FILE_BYTES} bytes: not an mbsync file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, data.count(b"\n", 0, exc.start) + 1, "not valid UTF-8") \
            from None
    return parse_mbsyncrc(text, path)
