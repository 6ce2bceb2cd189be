"""headers.py: which group of the externals file a message goes to.

Owns reading a message's header section, unfolding it into logical header
lines, compiling the groups' `match header` / `reject header` rules (once
per configuration load) and choosing the first group whose rules accept the
header.  It never reads a message body, never runs an external and never
parses the externals file (externals.py does; groups are duck-typed: anything
with `.matches`, a list of rules with `.kind` "match" or "reject",
`.pattern` and `.line`).

Header section: the lines up to the first empty line; LF or CRLF line ends
(unlike the C extsmaild, which stops at the first CR and so sees only the
first line of a CRLF message); a message with no empty line is all header
(the C calls it corrupted and keeps it queued).  A NUL byte is an ordinary
character (the C's matching stops at it).
A line starting with a space or a tab continues the previous one: the line
break is removed and the leading white space kept, exactly as the C does,
so "To: a@x,\\n\\tb@work" becomes "To: a@x,\\tb@work" and `^To:.*@work`
matches it.  Bytes are decoded as UTF-8 with surrogateescape: the header
regexes are UTF-8 text too, so a non-ASCII character in a pattern matches
the same character in a header, and no byte is lost or rejected.

Matching, as in the C: a rule's regex (posixre.compile_ere: POSIX ERE,
ASCII case ignored) is searched in the logical lines joined by "\\n", with
`^`/`$` at each line's ends; `.` and `[^...]` never cross a line, so a rule
matches when it matches some line (only a pattern naming the newline
itself, as a newline character, `\\s`, `\\W` or a class such as
`[[:space:]]`, can reach into the next line, as in the C).
A header section with no line at all matches no rule.  A group matches when
it has no rules, or every `match` rule matches and no `reject` rule does;
the first matching group wins; None when no group matches (the message
stays queued).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Optional

from roammail.core.errors import ConfigError
from roammail.core.posixre import compile_ere

__all__ = [
    "HEAD_LIMIT",
    "CompiledGroup",
    "CompiledRule",
    "compile_group",
    "compile_groups",
    "header_lines",
    "header_text",
    "read_head",
    "select",
    "select_group",
]

# The most bytes of a header section read for matching: real ones are a few
# KiB; a 20 MB message with no empty line must not be read whole.
HEAD_LIMIT = 1 << 20  # bytes

RULE_KINDS = ("match", "reject")


def read_head(stream: IO[bytes], limit: int = HEAD_LIMIT) -> bytes:
    """Read the header section from `stream`'s position and return it.

    Reads line by line up to and including the empty line (LF or CRLF) that
    ends the header section, so the stream is left at the start of the body;
    stops earlier at end of file or after `limit` bytes (the rest of a longer
    header section is then not matched).  Pass a buffered stream: an
    unbuffered one reads a byte at a time.
    """
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        line = stream.readline(limit - total)
        if not line:
            break
        chunks.append(line)
        total += len(line)
        if line in (b"\n", b"\r\n"):
            break
    return b"".join(chunks)


def header_lines(message_head: bytes) -> list[str]:
    """Return the logical (unfolded) header lines of a message.

    `message_head` is the message or its beginning (read_head); only the part
    before the first empty line is used.  Lines end in LF or CRLF; the line
    break before a continuation line (leading space or tab) is removed and
    the white space kept.  Decoded as UTF-8 with surrogateescape.
    """
    lines: list[str] = []
    pos = 0
    end = len(message_head)
    while pos < end:
        newline = message_head.find(b"\n", pos)
        if newline < 0:
            raw = message_head[pos:]
            pos = end
        else:
            raw = message_head[pos:newline]
            pos = newline + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            break  # the empty line that ends the header section
        text = raw.decode("utf-8", "surrogateescape")
        if lines and raw[:1] in (b" ", b"\t"):
            lines[-1] += text
        else:
            lines.append(text)
    return lines


def header_text(lines: Sequence[str]) -> str:
    """The text the rules are searched in: the logical lines joined by newlines."""
    return "\n".join(lines)


@dataclass(frozen=True)
class CompiledRule:
    """One `match header` / `reject header` rule with its compiled regex."""

    kind: str  # "match" or "reject"
    pattern: str
    line: int
    regex: re.Pattern[str]


@dataclass(frozen=True)
class CompiledGroup:
    """A group of the externals file with its rules compiled.

    `group` is the parsed group itself (its externals are used to send).
    """

    group: Any
    rules: tuple[CompiledRule, ...]

    def matches(self, lines: Sequence[str]) -> bool:
        """True if this group accepts a message with these logical header lines."""
        return self._accepts(header_text(lines), bool(lines))

    def _accepts(self, text: str, has_lines: bool) -> bool:
        for rule in self.rules:
            found = has_lines and rule.regex.search(text) is not None
            if found != (rule.kind == "match"):
                return False
        return True


def compile_rule(rule: Any, path: str) -> CompiledRule:
    """Compile one rule; ConfigError(path, rule.line, ...) if its regex is invalid."""
    kind = str(rule.kind)
    line = int(rule.line)
    if kind not in RULE_KINDS:
        raise ConfigError(path, line, f"unknown rule '{kind}': expected 'match' or 'reject'")
    try:
        regex = compile_ere(rule.pattern)
    except ValueError as e:
        raise ConfigError(path, line, f"bad regex in {kind} header {rule.pattern!r}: {e}") from None
    return CompiledRule(kind, rule.pattern, line, regex)


def compile_group(group: Any, path: str) -> CompiledGroup:
    """Compile the rules of one group; ConfigError on the first invalid regex."""
    return CompiledGroup(group, tuple(compile_rule(rule, path) for rule in group.matches))


def compile_groups(groups: Iterable[Any], path: str) -> list[CompiledGroup]:
    """Compile every group's rules, once per load of the externals file at `path`.

    Raises ConfigError(path, line, "bad regex ...: reason") for the first
    invalid regex, so `extsmaild -t` can report file:line.
    """
    return [compile_group(group, path) for group in groups]


def select(
    compiled_groups: Iterable[CompiledGroup], lines: Sequence[str]
) -> Optional[CompiledGroup]:
    """Return the first group that accepts these logical header lines, or None."""
    text = header_text(lines)
    has_lines = bool(lines)
    for compiled in compiled_groups:
        if compiled._accepts(text, has_lines):
            return compiled
    return None


def select_group(groups: Iterable[Any], lines: Sequence[str], path: str = "externals") -> Any:
    """Return the first of `groups` that accepts the header lines, or None.

    Compiles the rules on every call (ConfigError if one is invalid): for
    one-off use; a daemon compiles once with compile_groups and uses select.
    """
    chosen = select(compile_groups(groups, path), lines)
    return chosen.group if chosen is not None else None
