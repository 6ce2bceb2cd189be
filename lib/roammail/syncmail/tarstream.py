"""tarstream.py: read a tar stream member by member, as it arrives.

Owns the tar format as syncmail reads it from the server's tar(1): POSIX
ustar headers (with the name prefix), GNU long names ('L' entries) and
base-256 numbers, and pax extended headers ('x': path, size, mtime; 'g'
is skipped), which is what GNU tar, busybox tar and libarchive's bsdtar
write.  It checks every header's checksum, never seeks, never writes a
file and never interprets a member name (the caller does).

It reads through a `read(n)` callable that returns n bytes, or fewer only
at the end of the input; fewer than a whole header or body is EOFError.
It stops at the first all-zero block (the end-of-archive marker): what
follows (the second zero block, tar's padding) is the caller's to skip.

Why not tarfile: it costs about five times as much per member, and a
batch of thousands of small messages is mostly per-member cost.
"""

from __future__ import annotations

# typing costs milliseconds to import (it imports re): only type checkers
# read it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterator, Optional

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
# Longest GNU long name or pax header accepted: far above PATH_MAX.
MAX_EXTENDED_BYTES = 1024 * 1024

REGULAR_TYPES = (b"0", b"\0", b"7")  # file, old-style file, contiguous file


class TarFormatError(ValueError):
    """The stream is not a well-formed tar archive."""


class Member:
    """One member: `name` (decoded with surrogateescape), `size` in bytes,
    `mtime` (seconds, a float when pax gives a fraction), `type` (the
    one-byte typeflag) and `regular`."""

    __slots__ = ("name", "size", "mtime", "type", "regular")

    def __init__(self, name: str, size: int, mtime: float, kind: bytes) -> None:
        self.name = name
        self.size = size
        self.mtime = mtime
        self.type = kind
        self.regular = kind in REGULAR_TYPES

    def __repr__(self) -> str:
        return f"Member({self.name!r}, size={self.size}, mtime={self.mtime}, type={self.type!r})"


class Body:
    """A regular member's data: read(n) gives at most what is left of it."""

    __slots__ = ("_read", "left")

    def __init__(self, read: Callable[[int], bytes], size: int) -> None:
        self._read = read
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            n = self.left
        if n == 0:
            return b""
        data = self._read(n)
        self.left -= len(data)
        if len(data) < n:
            raise EOFError("unexpected end of data")
        return data


def _number(field: bytes) -> int:
    """A numeric header field: octal digits (NUL or space ended), or GNU
    base-256 (first byte 0x80, or 0xff for a negative number)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError(f"bad number {bytes(field)!r} in a tar header") from None


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = int(block[148:156].split(b"\0", 1)[0].strip(b" ") or b"x", 8)
    except ValueError:
        return False
    unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
    if stored == unsigned:
        return True
    # Some old tars summed signed chars.
    signed = unsigned - 256 * sum(1 for b in block if b > 127)
    signed += 256 * sum(1 for b in block[148:156] if b > 127)
    return stored == signed


def _padded(read: Callable[[int], bytes], size: int) -> bytes:
    """`size` bytes and their padding to a whole block."""
    whole = -(-size // BLOCK) * BLOCK
    data = read(whole)
    if len(data) < whole:
        raise EOFError("unexpected end of data")
    return data[:size]


def _skip(read: Callable[[int], bytes], size: int) -> None:
    left = size
    while left:
        chunk = read(min(left, 1024 * 1024))
        if not chunk:
            raise EOFError("unexpected end of data")
        left -= len(chunk)


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """The "LENGTH key=value\\n" records of a pax extended header."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            if not data[pos:].strip(b"\0"):
                break  # padding
            raise TarFormatError("bad pax header record")
        length = int(data[pos:space])
        record = data[space + 1:pos + length]
        if length <= space - pos or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("bad pax header record")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


def _extended(read: Callable[[int], bytes], size: int) -> bytes:
    if size > MAX_EXTENDED_BYTES:
        raise TarFormatError(f"a tar extended header of {size} bytes")
    return _padded(read, size)


def members(read: Callable[[int], bytes]) -> Iterator[tuple[Member, Optional[Body]]]:
    """Yield (member, body) for each member; body is None unless the
    member is a regular file.  A body must be read (any part of it) before
    the next member is asked for: what is left of it is skipped then."""
    long_name: Optional[bytes] = None
    pax: dict[bytes, bytes] = {}
    while True:
        block = read(BLOCK)
        if len(block) < BLOCK:
            raise EOFError("unexpected end of data")
        if block == ZERO_BLOCK:
            return
        if not _checksum_ok(block):
            raise TarFormatError("bad checksum in a tar header")
        kind = block[156:157]
        size = _number(block[124:136])
        if size < 0:
            raise TarFormatError("negative size in a tar header")
        if kind == b"L":
            long_name = _extended(read, size).split(b"\0", 1)[0]
            continue
        if kind == b"x":
            pax = _pax_records(_extended(read, size))
            continue
        if kind in (b"g", b"K"):
            _skip(read, -(-size // BLOCK) * BLOCK)
            continue
        if long_name is not None:
            raw = long_name
        elif b"path" in pax:
            raw = pax[b"path"]
        else:
            raw = block[0:100].split(b"\0", 1)[0]
            if block[257:262] == b"ustar" and block[345:346] != b"\0" and block[263:265] != b" \0":
                prefix = block[345:500].split(b"\0", 1)[0]
                raw = prefix + b"/" + raw
        if b"size" in pax:
            try:
                size = int(pax[b"size"])
            except ValueError:
                size = -1
            if size < 0:
                raise TarFormatError("bad pax size")
        mtime: float = _number(block[136:148])
        if b"mtime" in pax:
            try:
                mtime = float(pax[b"mtime"])
            except ValueError:
                raise TarFormatError("bad pax mtime") from None
        long_name, pax = None, {}
        member = Member(raw.decode("utf-8", "surrogateescape"), size, mtime, kind)
        if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
            # Links, devices, directories and fifos: no data in the
            # archive, whatever the size field says.
            yield member, None
            continue
        body = Body(read, size) if member.regular else None
        yield member, body
        left = body.left if body is not None else size
        _skip(read, left + (-size % BLOCK))
