"""posixre.py: POSIX extended regexes, as glibc compiles them for extsmail.

Owns the translation of the header regexes of an externals file (POSIX ERE,
compiled by the C extsmaild with glibc's
``regcomp(REG_EXTENDED | REG_ICASE | REG_NOSUB | REG_NEWLINE)`` in the "C"
locale) into Python `re` patterns that match the same text.  It never reads
a file, never sees a message and never decides which group a message goes
to (headers.py does that).

`compile_ere(pattern)` returns a compiled `re.Pattern` to be used with
`.search()`; an invalid ERE raises ValueError with a short reason, in the
cases where glibc's regcomp fails.  The translation follows glibc's parser
(posix/regcomp.c), checked by differential tests against glibc itself:

- ``^`` and ``$`` are anchors everywhere and match at line boundaries;
  ``.`` and a non-matching list ``[^...]`` never match a newline
  (REG_NEWLINE).  ``\\s``, ``\\W`` and classes holding the newline, such
  as ``[[:space:]]``, ignore REG_NEWLINE and can match one, as in glibc.
- Case is ignored for ASCII letters only (the C locale): glibc upper-cases
  the pattern and the text before matching, so a range is taken between
  upper-cased ends (``[Z-a]`` is invalid, ``[A-z]`` is ``[A-Z]``, and
  ``[_-~]`` matches no letter at all).
- ``)`` with no open group, ``}`` and ``]`` are ordinary characters; ``*``,
  ``+``, ``?`` or ``{`` with nothing before them (at the start, after ``(``,
  ``|``, or an anchor) are errors; a ``{`` after an atom always starts an
  interval (``a{`` and ``a{x}`` are errors); ``{,n}`` means ``{0,n}``;
  counts go up to 32767; repetitions stack (``a**``, ``a{2}{3}``).
- Bracket expressions: ``]`` first (after an optional ``^``) is literal,
  ``-`` first or last is literal, a backslash is literal, ``[:class:]`` for
  the 12 POSIX classes (ASCII members), ``[.c.]`` and ``[=c=]`` of a single
  character; other names are errors.
- GNU operators: ``\\w \\W \\s \\S \\b \\B \\< \\>``, ``\\``` (start of the
  whole text) and ``\\'`` (end of the whole text); back-references ``\\1`` to
  ``\\9`` to an already closed group of the same alternative.  Any other
  escaped character stands for itself.

Deliberate differences from glibc, for the better:

- An escaped lower-case letter that is not an operator (``\\d``, ``\\n``)
  matches that letter, ignoring case.  glibc compares it against the
  upper-cased text, so it never matches anything.
- The pattern and the text are Unicode strings: ``.`` or a bracket
  expression matches one character where glibc in the C locale matches one
  byte of its UTF-8 encoding, and a range may have non-ASCII ends.
- glibc bugs are not copied: an anchor in a repeated group holds in its
  first copy only (glibc finds ``(^b){2}`` in "bb"), and back-references to
  a group that matched nothing go wrong after an interval (glibc does not
  find ``%(){2}\\1`` in "%").
- More than 200 nested groups, or repetitions stacked deeper than Python's
  `re` can compile, are refused ("nested too deeply").

Whether the match is leftmost-longest (POSIX) or leftmost-first (Python)
is irrelevant here: only "does it match somewhere" is ever asked.  Unlike
glibc's automaton, Python's `re` backtracks: a pathological pattern such as
``(a|aa)*b`` can be slow on a long header line.  The patterns come from the
user's own externals file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

__all__ = ["DUP_MAX", "compile_ere", "translate_ere"]

# glibc's RE_DUP_MAX: the largest count allowed in an interval {n,m}.
DUP_MAX = 0x7FFF
# glibc's BRACKET_NAME_BUF_SIZE: a [:name:], [.name.] or [=name=] holds at
# most this many characters minus one.
_BRACKET_NAME_MAX = 32
# Nesting of ( ) beyond this is refused rather than risking Python's
# recursion limit in this parser or in the `re` compiler.
_MAX_NESTING = 200

_FLAGS = re.IGNORECASE | re.MULTILINE | re.ASCII

_CLASSES: dict[str, frozenset[int]] = {
    "alpha": frozenset([*range(65, 91), *range(97, 123)]),
    "upper": frozenset(range(65, 91)),
    "lower": frozenset(range(97, 123)),
    "digit": frozenset(range(48, 58)),
    "xdigit": frozenset([*range(48, 58), *range(65, 71), *range(97, 103)]),
    "alnum": frozenset([*range(48, 58), *range(65, 91), *range(97, 123)]),
    "space": frozenset([9, 10, 11, 12, 13, 32]),
    "blank": frozenset([9, 32]),
    "punct": frozenset([*range(33, 48), *range(58, 65), *range(91, 97), *range(123, 127)]),
    "print": frozenset(range(32, 127)),
    "graph": frozenset(range(33, 127)),
    "cntrl": frozenset([*range(0, 32), 127]),
}

# Translations of the GNU escapes.  Anchors cannot be repeated.
_ANCHOR_ESCAPES = {
    "<": r"\b(?=\w)",
    ">": r"\b(?<=\w)",
    "b": r"\b",
    # Python's \B never matches in an empty text; glibc's (and POSIX's
    # "not at a word boundary") does.
    "B": r"(?:(?<=\w)(?=\w)|(?<!\w)(?!\w))",
    "`": r"\A",
    "'": r"\Z",
}
_CLASS_ESCAPES = {"w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S"}


def compile_ere(pattern: str) -> re.Pattern[str]:
    """Compile POSIX ERE `pattern` as extsmaild does; ValueError("reason") if invalid.

    The result is meant for `.search()` on text whose lines are separated by
    "\\n"; it ignores ASCII case and anchors ^ and $ at every line.
    """
    source = translate_ere(pattern)
    try:
        return re.compile(source, _FLAGS)
    except RecursionError:
        raise ValueError("pattern nested too deeply") from None
    except (re.error, OverflowError) as e:
        # Not expected: translate_ere emits only what `re` accepts.
        raise ValueError(f"cannot compile translated pattern: {e}") from None


def translate_ere(pattern: str) -> str:
    """Return the Python regex source equivalent to POSIX ERE `pattern`.

    To be compiled with re.IGNORECASE | re.MULTILINE | re.ASCII.  Raises
    ValueError with a short reason if glibc would refuse `pattern`.
    """
    return _Parser(pattern).parse()


def _upper(c: str) -> str:
    """ASCII upper case, as toupper() in the C locale."""
    return chr(ord(c) - 32) if "a" <= c <= "z" else c


@dataclass
class _BracketToken:
    kind: str  # END, CLOSE, RANGE, CHAR, COLL, EQUIV, CLASS
    char: str  # the (upper-cased) character for CHAR, RANGE, CLOSE
    length: int


@dataclass
class _BracketElement:
    kind: str  # CHAR, COLL, EQUIV, CLASS
    name: str  # the character, or the name between the delimiters


class _Parser:
    """A recursive-descent parser shaped like glibc's, emitting Python regex text."""

    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.nsub = 0
        self.depth = 0
        # Groups 1..9 closed so far in the current alternative, as glibc's
        # completed_bkref_map: only those may be back-referenced.
        self.completed: set[int] = set()

    # --- structure ------------------------------------------------------

    def parse(self) -> str:
        out = self.reg_exp(nest=0)
        assert self.i == len(self.p)
        return out

    def peek(self, offset: int = 0) -> Optional[str]:
        j = self.i + offset
        return self.p[j] if j < len(self.p) else None

    def reg_exp(self, nest: int) -> str:
        initial = set(self.completed)
        branches = [self.branch(nest)]
        while self.peek() == "|":
            self.i += 1
            accumulated = set(self.completed)
            self.completed = set(initial)
            branches.append(self.branch(nest))
            self.completed |= accumulated
        return "|".join(branches)

    def branch(self, nest: int) -> str:
        parts: list[str] = []
        while True:
            c = self.peek()
            if c is None or c == "|" or (nest > 0 and c == ")"):
                return "".join(parts)
            parts.append(self.expression(nest))

    def expression(self, nest: int) -> str:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            atom = self.sub_exp(nest)
        elif c == "[":
            atom = self.bracket()
        elif c == "\\":
            c2 = self.peek()
            if c2 is None:
                raise ValueError("trailing backslash")
            self.i += 1
            if c2 in _ANCHOR_ESCAPES:
                return _ANCHOR_ESCAPES[c2]  # an anchor takes no repetition
            if "1" <= c2 <= "9":
                if int(c2) not in self.completed:
                    raise ValueError(f"invalid back reference \\{c2}")
                atom = f"(?:\\{c2})"
            elif c2 in _CLASS_ESCAPES:
                atom = _CLASS_ESCAPES[c2]
            else:
                atom = re.escape(c2)
        elif c in "^$":
            return c  # an anchor takes no repetition
        elif c in "*+?{":
            raise ValueError(f"nothing to repeat before '{c}'")
        elif c == ".":
            atom = "."  # without re.DOTALL: anything but a newline
        else:
            # Ordinary, including ')' with no open group, '}' and ']'.
            atom = re.escape(c)
        return self.repetitions(atom)

    def sub_exp(self, nest: int) -> str:
        self.nsub += 1
        number = self.nsub
        if self.depth >= _MAX_NESTING:
            raise ValueError("groups nested too deeply")
        self.depth += 1
        if self.peek() == ")":
            inner = ""
        else:
            inner = self.reg_exp(nest + 1)
            if self.peek() != ")":
                raise ValueError("unmatched (")
        self.i += 1
        self.depth -= 1
        if number <= 9:
            self.completed.add(number)
        return f"({inner})"

    # --- repetition -----------------------------------------------------

    def repetitions(self, atom: str) -> str:
        simple = ""  # the last quantifier if it was *, + or ?
        repeated = False
        while True:
            c = self.peek()
            if c is None or c not in "*+?{":
                return atom + simple
            self.i += 1
            if c != "{" and (simple or not repeated):
                # Stacked *, + and ? make one: "a**" is "a*", "a+?" is "a*".
                simple = c if simple in ("", c) else "*"
                repeated = True
                continue
            quantifier = c if c != "{" else self.interval()
            if repeated:
                # Python reads "a*?" as lazy and "a**" as an error; POSIX
                # means the repetition of a repetition.
                atom = f"(?:{atom}{simple})"
                simple = ""
            if c == "{":
                atom += quantifier
            else:
                simple = quantifier
            repeated = True

    def interval(self) -> str:
        """Parse the rest of "{n}", "{n,}", "{,m}", "{n,m}" after the "{"."""
        start, stop = self.fetch_number()
        end = 0
        if start == -1:
            if stop == ",":
                start = 0  # "{,m}" is "{0,m}"
            else:
                raise ValueError("invalid interval: no count")  # "{}"
        if start != -2:
            if stop == "}":
                end = start
            elif stop == ",":
                end, stop = self.fetch_number()
            else:
                end = -2
        if start == -2 or end == -2:
            raise ValueError("unmatched {" if stop == "END" else "invalid interval")
        if (end != -1 and start > end) or stop != "}":
            raise ValueError("invalid interval")
        if (start if end == -1 else end) > DUP_MAX:
            raise ValueError(f"interval count over {DUP_MAX}")
        if end == -1:
            return f"{{{start},}}"
        if start == end:
            return f"{{{start}}}"
        return f"{{{start},{end}}}"

    def fetch_number(self) -> tuple[int, str]:
        """glibc's fetch_number: read tokens up to "}" or ",".

        Returns (number, stop): number -1 if there were no digits, -2 if
        anything else came; stop is "}", "," or "END".  An escaped comma
        counts as a comma, as in glibc.
        """
        num = -1
        while True:
            c = self.peek()
            if c is None:
                return -2, "END"
            self.i += 1
            is_char = True
            if c == "\\":
                c2 = self.peek()
                if c2 is None:
                    return -2, "END"
                self.i += 1
                is_char = not (c2 in _ANCHOR_ESCAPES or c2 in _CLASS_ESCAPES or "1" <= c2 <= "9")
                c = c2
            elif c == "}":
                return num, "}"
            elif c in "()[|.*+?{^$":
                is_char = False
            if is_char and c == ",":
                return num, ","
            if not is_char or not ("0" <= c <= "9") or num == -2:
                num = -2
            elif num == -1:
                num = int(c)
            else:
                num = min(DUP_MAX + 1, num * 10 + int(c))

    # --- bracket expressions --------------------------------------------

    def bracket_token(self) -> _BracketToken:
        c = self.peek()
        if c is None:
            return _BracketToken("END", "", 0)
        if c == "[":
            c2 = self.peek(1)
            kinds = {".": "COLL", "=": "EQUIV", ":": "CLASS"}
            if c2 in kinds:
                return _BracketToken(kinds[c2], c2, 2)
            return _BracketToken("CHAR", c, 1)
        if c == "]":
            return _BracketToken("CLOSE", c, 1)
        if c == "-":
            return _BracketToken("RANGE", c, 1)
        return _BracketToken("CHAR", _upper(c), 1)

    def bracket_element(self, token: _BracketToken, accept_hyphen: bool) -> _BracketElement:
        self.i += token.length
        if token.kind in ("COLL", "EQUIV", "CLASS"):
            return _BracketElement(token.kind, self.bracket_name(token))
        if token.kind == "RANGE" and not accept_hyphen:
            # A '-' that does not start a range is allowed only just before ']'.
            if self.bracket_token().kind != "CLOSE":
                raise ValueError("invalid range end")
        return _BracketElement("CHAR", token.char)

    def bracket_name(self, token: _BracketToken) -> str:
        """The name in [:name:], [.name.] or [=name=], after the opening two characters."""
        delim = token.char
        if self.peek() is None:
            raise ValueError("unmatched [")
        name: list[str] = []
        while True:
            if len(name) >= _BRACKET_NAME_MAX:
                raise ValueError("unmatched [")
            ch = self.p[self.i]
            self.i += 1
            if token.kind != "CLASS":
                ch = _upper(ch)
            if self.peek() is None:
                raise ValueError("unmatched [")
            if ch == delim and self.peek() == "]":
                break
            name.append(ch)
        self.i += 1
        return "".join(name)

    def bracket(self) -> str:
        """Parse a bracket expression after its "[" and return a Python class."""
        members: set[int] = set()
        ranges: list[tuple[int, int]] = []
        non_match = False
        token = self.bracket_token()
        if token.kind == "CHAR" and token.char == "^":
            non_match = True
            self.i += 1
            token = self.bracket_token()
        if token.kind == "CLOSE":
            token = _BracketToken("CHAR", "]", 1)  # ']' first is literal
        first = True
        while True:
            if token.kind == "END":
                raise ValueError("unmatched [")
            start = self.bracket_element(token, accept_hyphen=first)
            first = False
            token = self.bracket_token()
            end: Optional[_BracketElement] = None
            if start.kind not in ("CLASS", "EQUIV"):
                if token.kind == "END":
                    raise ValueError("unmatched [")
                if token.kind == "RANGE":
                    self.i += token.length
                    token2 = self.bracket_token()
                    if token2.kind == "END":
                        raise ValueError("unmatched [")
                    if token2.kind == "CLOSE":
                        # A '-' just before the ']' is literal.
                        self.i -= token.length
                        token = _BracketToken("CHAR", "-", 1)
                    else:
                        end = self.bracket_element(token2, accept_hyphen=True)
                        token = self.bracket_token()
            if end is not None:
                ranges.append(_range(start, end))
            else:
                _add_element(start, members)
            if token.kind == "END":
                raise ValueError("unmatched [")
            if token.kind == "CLOSE":
                self.i += token.length
                break
        return _bracket_class(members, ranges, non_match)


def _single(element: _BracketElement) -> int:
    """The character of a [.c.] or [=c=] element; ValueError unless exactly one."""
    if len(element.name) != 1:
        raise ValueError(f"invalid collation element {element.name!r}")
    return ord(element.name)


def _add_element(element: _BracketElement, members: set[int]) -> None:
    if element.kind == "CLASS":
        name = element.name
        if name in ("upper", "lower"):
            name = "alpha"  # glibc, with REG_ICASE
        if name not in _CLASSES:
            raise ValueError(f"invalid character class [:{element.name}:]")
        members.update(_CLASSES[name])
    else:
        members.add(_single(element))


def _range(start: _BracketElement, end: _BracketElement) -> tuple[int, int]:
    if start.kind in ("CLASS", "EQUIV") or end.kind in ("CLASS", "EQUIV"):
        raise ValueError("invalid range end")
    lo, hi = _single(start), _single(end)
    if lo > hi:
        raise ValueError("invalid range end")
    return lo, hi


def _bracket_class(members: set[int], ranges: list[tuple[int, int]], non_match: bool) -> str:
    """Return the Python class for the members and ranges of a bracket expression.

    glibc compares the upper-cased text with a set built from the upper-cased
    pattern, so lower-case letters in the set never match anything; they are
    dropped, and re.IGNORECASE then matches exactly the characters whose
    upper case is in the set.
    """
    spans = sorted([(m, m) for m in members] + ranges)
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    kept: list[tuple[int, int]] = []
    for lo, hi in merged:  # cut out 'a'..'z' (97..122)
        if lo < 97:
            kept.append((lo, min(hi, 96)))
        if hi > 122:
            kept.append((max(lo, 123), hi))
    body = "".join(_class_span(lo, hi) for lo, hi in kept)
    if non_match:
        return f"[^{body}\\n]"  # REG_NEWLINE: [^...] never matches a newline
    return f"[{body}]" if body else "(?!)"


def _class_char(code: int) -> str:
    c = chr(code)
    if c.isascii() and c.isalnum():
        return c
    return f"\\U{code:08x}"


def _class_span(lo: int, hi: int) -> str:
    if lo == hi:
        return _class_char(lo)
    return f"{_class_char(lo)}-{_class_char(hi)}"
