"""Maildir++ builders for tests.

Layout (Maildir++, as mbsync's `SubFolders Maildir++` and dovecot use): the
base directory is INBOX and holds cur/new/tmp; folder "Sent" is the
subdirectory ".Sent", folder "lists/roam" (or "lists.roam") is ".lists.roam",
each with cur/new/tmp and an empty `maildirfolder` file.
"""

from __future__ import annotations

import email.utils
import itertools
import os
import socket
import time
from pathlib import Path
from typing import Iterable, Mapping, Optional

INBOX = "INBOX"
SUBDIRS = ("cur", "new", "tmp")
_counter = itertools.count(1)


def folder_path(maildir: str | os.PathLike[str], folder: str = INBOX) -> Path:
    """The directory of `folder` inside Maildir++ `maildir` (INBOX is the base)."""
    base = Path(maildir)
    if folder in (INBOX, ""):
        return base
    name = folder.replace("/", ".")
    return base / (name if name.startswith(".") else "." + name)


def make_maildir(path: str | os.PathLike[str], folders: Iterable[str] = ()) -> Path:
    """Create Maildir++ `path` (INBOX) and its `folders`; existing ones are kept. Return path."""
    base = Path(path)
    for folder in (INBOX, *folders):
        directory = folder_path(base, folder)
        for sub in SUBDIRS:
            (directory / sub).mkdir(parents=True, exist_ok=True)
        if directory != base:
            (directory / "maildirfolder").touch()
    return base


def unique_name() -> str:
    """A Maildir unique file name: time.MusecPpidQcounter.host (no ':' or '/')."""
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}.{host}"


def render_message(body: bytes, *, subject: str = "test message",
                   sender: str = "sender@example.org", to: str = "recipient@example.org",
                   headers: Optional[Mapping[str, str]] = None) -> bytes:
    """A simple RFC 5322 message (LF line ends, as stored in maildirs)."""
    fields = {
        "From": sender,
        "To": to,
        "Subject": subject,
        "Date": email.utils.formatdate(),
        "Message-ID": email.utils.make_msgid(domain="roammail.test"),
        **(headers or {}),
    }
    head = "".join(f"{key}: {value}\n" for key, value in fields.items()).encode()
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return head + b"\n" + body


def add_message(maildir: str | os.PathLike[str], folder: str = INBOX,
                body: bytes = b"Hello from the roammail tests.\n", subdir: str = "new",
                name: Optional[str] = None, *, raw: Optional[bytes] = None, flags: str = "",
                subject: str = "test message",
                headers: Optional[Mapping[str, str]] = None) -> Path:
    """Deliver one message into `folder` of `maildir`; return its path.

    The file is written in tmp/ and renamed into `subdir` ("new" or "cur").
    `name` defaults to a unique name; in cur/ a name without info gets
    ":2,<flags>".  `raw` replaces the whole generated message.  The folder
    must exist (make_maildir).
    """
    if subdir not in ("new", "cur"):
        raise ValueError(f"subdir must be 'new' or 'cur', not {subdir!r}")
    directory = folder_path(maildir, folder)
    if not (directory / "tmp").is_dir():
        raise FileNotFoundError(f"no maildir folder {folder!r} at {directory}")
    if name is None:
        name = unique_name()
    if subdir == "cur" and ":" not in name:
        name += ":2," + "".join(sorted(flags))
    data = raw if raw is not None else render_message(body, subject=subject, headers=headers)
    tmp = directory / "tmp" / name.split(":", 1)[0]
    tmp.write_bytes(data)
    final = directory / subdir / name
    os.rename(tmp, final)
    return final


def messages(maildir: str | os.PathLike[str], folder: str = INBOX,
             subdirs: Iterable[str] = ("new", "cur")) -> dict[str, bytes]:
    """File name -> content of every message in `subdirs` of `folder` (dot files skipped)."""
    directory = folder_path(maildir, folder)
    found: dict[str, bytes] = {}
    for sub in subdirs:
        for path in sorted((directory / sub).iterdir()):
            if not path.name.startswith(".") and path.is_file():
                found[path.name] = path.read_bytes()
    return found


__all__ = [
    "INBOX", "add_message", "folder_path", "make_maildir", "messages", "render_message",
    "unique_name",
]
