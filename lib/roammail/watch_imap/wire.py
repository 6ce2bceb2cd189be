"""wire.py: IMAP4rev1's wire format (RFC 3501), as watch-imap speaks it.

Owns the parsing of server responses (literals included) into Python
values (`parse_response`, `Response`), the encoding of arguments as quoted
strings or literals (`astring`, `mailbox_argument`), and the errors of a
link: `LinkError` (the link broke, timed out, or the server closed it: a
new connection may work) and `ProtocolError` (bytes that are not IMAP).
Pure: no I/O; connection.py does the talking.
"""

from __future__ import annotations

from ..core.errors import TempFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Optional


class LinkError(TempFailure):
    """The connection failed or was lost; a new one may work."""


class Response:
    """One response.  tag: "*" (untagged), "+" (continuation) or the tag.

    kind: OK NO BAD BYE PREAUTH (status), or the data kind in capitals
    (CAPABILITY LIST STATUS EXISTS EXPUNGE FETCH ...), "+" for a
    continuation.  number: the number before EXISTS, EXPUNGE, FETCH...
    data: the parsed values after the kind: str for an atom, bytes for a
    quoted string or literal, list for a parenthesized list.  code: the
    bracketed response code of a status response, its first item in
    capitals ("CAPABILITY", "READ-ONLY"...); text: the human text.
    """

    __slots__ = ("tag", "kind", "number", "data", "code", "text")

    def __init__(self, tag: str, kind: str, *, number: Optional[int] = None,
                 data: Optional[list] = None, code: Optional[list] = None,
                 text: str = "") -> None:
        self.tag = tag
        self.kind = kind
        self.number = number
        self.data = data if data is not None else []
        self.code = code
        self.text = text

    @property
    def code_name(self) -> str:
        return str(self.code[0]).upper() if self.code else ""

    def __repr__(self) -> str:
        return (f"Response({self.tag!r}, {self.kind!r}, number={self.number!r}, "
                f"data={self.data!r}, code={self.code!r}, text={self.text!r})")


class ProtocolError(LinkError):
    """The server's bytes are not IMAP."""


STATUS_KINDS = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})
_ATOM_STOP = frozenset(b' ()"{\r\n')


class _Lexer:
    """Values of one response, literals inlined as `{N}\\r\\n` + N bytes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.raw) or self.raw[self.pos] in b"\r\n"

    def space(self) -> None:
        while self.pos < len(self.raw) and self.raw[self.pos] == 0x20:
            self.pos += 1

    def atom(self, stop: frozenset = _ATOM_STOP) -> str:
        start = self.pos
        while self.pos < len(self.raw) and self.raw[self.pos] not in stop:
            self.pos += 1
        if self.pos == start:
            raise ProtocolError(f"unexpected byte in response: {self._excerpt()}")
        return self.raw[start:self.pos].decode("ascii", "surrogateescape")

    def rest(self) -> str:
        text = self.raw[self.pos:].rstrip(b"\r\n")
        self.pos = len(self.raw)
        return text.decode("utf-8", "replace")

    def values(self, stop: frozenset = _ATOM_STOP, close: int = -1) -> list:
        out: list = []
        while True:
            self.space()
            if self.at_end():
                if close >= 0:
                    raise ProtocolError(f"unclosed list in response: {self._excerpt()}")
                return out
            byte = self.raw[self.pos]
            if byte == close:
                self.pos += 1
                return out
            out.append(self.value(stop))

    def value(self, stop: frozenset = _ATOM_STOP) -> object:
        byte = self.raw[self.pos]
        if byte == 0x28:  # (
            self.pos += 1
            return self.values(stop, close=0x29)
        if byte == 0x22:  # "
            return self.quoted()
        if byte == 0x7B:  # {
            return self.literal()
        if byte == 0x29:  # ) without (
            raise ProtocolError(f"unbalanced ')' in response: {self._excerpt()}")
        return self.atom(stop)

    def quoted(self) -> bytes:
        out = bytearray()
        i = self.pos + 1
        raw = self.raw
        while i < len(raw):
            byte = raw[i]
            if byte == 0x22:
                self.pos = i + 1
                return bytes(out)
            if byte == 0x5C and i + 1 < len(raw):  # backslash
                i += 1
                byte = raw[i]
            elif byte in b"\r\n":
                break
            out.append(byte)
            i += 1
        raise ProtocolError(f"unterminated quoted string in response: {self._excerpt()}")

    def literal(self) -> bytes:
        end = self.raw.find(b"}", self.pos)
        digits = self.raw[self.pos + 1:end].rstrip(b"+") if end > 0 else b""
        if not digits.isdigit():
            raise ProtocolError(f"bad literal in response: {self._excerpt()}")
        size = int(digits)
        start = end + 1
        if self.raw[start:start + 2] == b"\r\n":
            start += 2
        elif self.raw[start:start + 1] == b"\n":
            start += 1
        else:
            raise ProtocolError(f"bad literal in response: {self._excerpt()}")
        if start + size > len(self.raw):
            raise ProtocolError("literal longer than the response")
        self.pos = start + size
        return self.raw[start:self.pos]

    def _excerpt(self) -> str:
        return repr(self.raw[max(0, self.pos - 20):self.pos + 20])


_CODE_STOP = _ATOM_STOP | frozenset(b"]")


def parse_response(raw: bytes) -> Response:
    """Parse one response (its literals inlined); ProtocolError if it is not one."""
    lex = _Lexer(raw)
    if raw.startswith(b"+"):
        lex.pos = 1
        lex.space()
        return Response("+", "+", text=lex.rest())
    tag = lex.atom()
    lex.space()
    if lex.at_end():
        raise ProtocolError(f"response without a kind: {raw[:60]!r}")
    first = lex.atom()
    number = None
    if tag == "*" and first.isdigit():
        number = int(first)
        lex.space()
        first = lex.atom()
    kind = first.upper()
    if kind in STATUS_KINDS:
        lex.space()
        code = None
        if lex.pos < len(raw) and raw[lex.pos] == 0x5B:  # [
            lex.pos += 1
            code = lex.values(_CODE_STOP, close=0x5D)
            if code and isinstance(code[0], str):
                code[0] = code[0].upper()
            lex.space()
        return Response(tag, kind, number=number, code=code, text=lex.rest())
    if tag != "*":
        raise ProtocolError(f"tagged response that is not OK, NO or BAD: {raw[:60]!r}")
    return Response(tag, kind, number=number, data=lex.values())


def _literal_size(line: bytes) -> int:
    """N when the line ends with a literal's `{N}` (or `{N+}`), else -1."""
    stripped = line.rstrip(b"\r\n")
    if not stripped.endswith(b"}"):
        return -1
    start = stripped.rfind(b"{")
    digits = stripped[start + 1:-1].rstrip(b"+")
    return int(digits) if start >= 0 and digits.isdigit() else -1


def capabilities_of(values: Iterable) -> frozenset:
    return frozenset(str(v).upper() for v in values if isinstance(v, (str, bytes)))


# ------------------------------------------------------------ arguments


class Literal:
    """An argument sent as a literal (8-bit data, CR or LF, or long)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def astring(value: str | bytes) -> bytes | Literal:
    """The argument for a string: quoted when it can be, else a literal."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) < 1024 and all(0x20 <= b <= 0x7E for b in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return Literal(data)


def mailbox_argument(name: str) -> bytes | Literal:
    """A canonical (modified UTF-7) mailbox name as a command argument."""
    return astring(name)
