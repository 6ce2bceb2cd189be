"""utf7.py: IMAP's modified UTF-7 mailbox names (RFC 3501 5.1.3).

Owns the encoding and decoding of names, and the canonical form of a
name a server sent (`server_mailbox`).  Pure: no I/O.
"""

from __future__ import annotations

import base64


def mutf7_encode(text: str) -> str:
    """`text` in modified UTF-7, as IMAP names mailboxes ("Café" -> "Caf&AOk-")."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            raw = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in text:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def mutf7_decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; ValueError when it is not one."""
    out: list[str] = []
    i, n = 0, len(name)
    while i < n:
        char = name[i]
        if char != "&":
            if not 0x20 <= ord(char) <= 0x7E:
                raise ValueError(f"not modified UTF-7: {name!r}")
            out.append(char)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise ValueError(f"not modified UTF-7 (unterminated '&'): {name!r}")
        chunk = name[i + 1:end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            try:
                raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
                decoded = raw.decode("utf-16-be")
            except (ValueError, UnicodeDecodeError):
                raise ValueError(f"not modified UTF-7: {name!r}") from None
            if any(0x20 <= ord(c) <= 0x7E for c in decoded):
                raise ValueError(f"not modified UTF-7 (ASCII encoded): {name!r}")
            out.append(decoded)
        i = end + 1
    return "".join(out)


def server_mailbox(token: object) -> str:
    """A mailbox name as a server sent it -> the canonical name used here.

    The canonical name is the modified UTF-7 text, with INBOX in capitals
    whatever its case (it is case-insensitive).  A server that sends a name
    in raw UTF-8 (Dovecot does in NOTIFY's STATUS) gets it re-encoded.
    """
    if isinstance(token, bytes):
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            text = mutf7_encode(token.decode("utf-8", "replace"))
    else:
        text = str(token)
    if text.upper() == "INBOX":
        return "INBOX"
    return text
