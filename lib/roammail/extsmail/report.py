"""report.py: the report of a message extsmaild will not send, put into
the user's own maildir.

A report is a MIME message (multipart/mixed): a text/plain part that
says why the message was not sent, what the external wrote on its
standard error, and how to send it again (extsmaild --retry), then the
message itself as a message/rfc822 part, its bytes unchanged but for
CRLF line ends, which become LF (a maildir holds LF lines).  It goes into
report_maildir (extsmail.conf(5)), by default ~/Maildir when that is a
maildir, written the maildir way (core.maildir.deliver: tmp/, fsync, link
into new/, fsync).  It is never sent by mail: the mail system is what
failed.

Contracts: a report never fails the run.  When there is no maildir to
write it to, or writing fails, a log line says so, and the message is set
aside all the same.  Only the failure path imports this module.
"""

from __future__ import annotations

import os
import time

from ..core import locations
from ..core.errors import RoammailError
from ..core.maildir import deliver, is_maildir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import spool
    from .settings import Settings

DEFAULT_MAILDIR = "~/Maildir"
# The headers of the message a report takes over (bytes, lower case).
_COPIED = (b"from", b"subject", b"message-id")


def report_maildir(configured: str | None) -> tuple[str | None, str]:
    """The maildir to put reports into, or None and why there is none."""
    if configured == "":
        return None, "report_maildir is empty"
    path = locations.expand_home(DEFAULT_MAILDIR if configured is None else configured)
    if not is_maildir(path):
        return None, f"{path} is not a maildir (no cur/, new/ and tmp/)"
    return path, ""


def _fields(message: bytes) -> dict[bytes, bytes]:
    """The first From, Subject and Message-ID of the header, unfolded."""
    head = message.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    found: dict[bytes, bytes] = {}
    current: bytes | None = None
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            found[current] += b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        current = None
        if colon and key in _COPIED and key not in found:
            found[key] = value.strip()
            current = key
    return found


def _safe_header(value: bytes) -> bytes:
    """A header value kept on one line, without control characters."""
    return bytes(b if b >= 0x20 and b != 0x7F else 0x20 for b in value)[:900]


def build_report(name: str, reason: str, detail: str, args: list[bytes],
                 message: bytes, failed_path: str, now: float | None = None) -> bytes:
    """The report (bytes, LF line ends) of the queued message `name`."""
    from email.utils import formatdate

    host = os.uname().nodename or "localhost"
    original = message.replace(b"\r\n", b"\n")
    if not original.endswith(b"\n"):
        original += b"\n"
    while True:
        boundary = b"=_extsmaild_" + os.urandom(12).hex().encode()
        if boundary not in original:
            break
    fields = _fields(original)
    subject = fields.get(b"subject", b"")
    head = [
        b"From: extsmaild <MAILER-DAEMON@" + host.encode("ascii", "replace") + b">",
    ]
    if b"from" in fields:
        head.append(b"To: " + _safe_header(fields[b"from"]))
    head += [
        b"Subject: Undelivered: " + _safe_header(subject) if subject
        else b"Subject: Undelivered message",
        b"Date: " + formatdate(now, localtime=True).encode(),
        b"Message-ID: <" + f"{time.time_ns()}.{os.getpid()}.extsmaild@{host}".encode(
            "ascii", "replace") + b">",
        b"Auto-Submitted: auto-generated",
        b"X-Extsmaild-Queue-ID: " + _safe_header(os.fsencode(name)),
    ]
    if b"message-id" in fields:
        msgid = _safe_header(fields[b"message-id"])
        head += [b"In-Reply-To: " + msgid, b"References: " + msgid]
    head += [
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="' + boundary + b'"',
    ]
    arguments = " ".join(os.fsdecode(a) for a in args)
    text = [
        "extsmaild did not send the message attached below, and will not try",
        "to send it again.",
        "",
        f"Reason:    {reason}",
        f"Queue ID:  {name}",
        f"Arguments: {arguments}",
        "",
    ]
    if detail:
        text.append("The external wrote on its standard error:")
        text.append("")
        text += ["    " + line for line in detail.split("\n")]
        text.append("")
    text += [
        f"The message is kept in {failed_path}.",
        "Once the cause is mended, this sends it again:",
        "",
        f"    extsmaild --retry {name}",
        "",
    ]
    body = "\n".join(text).replace("\r", " ").encode("utf-8", "replace")
    encoding = b"7bit" if original.isascii() else b"8bit"
    parts = [
        b"\n".join(head),
        b"",
        b"This is a MIME report of an undelivered message.",
        b"",
        b"--" + boundary,
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        b"Content-Disposition: inline",
        b"",
        body,
        b"--" + boundary,
        b"Content-Type: message/rfc822",
        b"Content-Transfer-Encoding: " + encoding,
        b"Content-Disposition: attachment",
        b"",
        original,
    ]
    # The line end before a boundary belongs to the boundary (RFC 2046), so
    # the message keeps its own last line end.
    return b"\n".join(parts) + b"\n--" + boundary + b"--\n"


def report_failure(settings: Settings, log, message: spool.QueuedMessage, name: str,
                   reason: str, detail: str) -> str | None:
    """Put the report of `message` into the report maildir; its path, or
    None (with a log line) when there is none."""
    from .spool import FAILED

    maildir, why = report_maildir(settings.conf.report_maildir)
    if maildir is None:
        log.error("%s: no report written: %s", name, why)
        return None
    failed_path = os.path.join(settings.spool_dir, FAILED, name)
    try:
        data = build_report(name, reason, detail, message.args, message.read_body(),
                            failed_path)
        path = deliver(maildir, data)
    except (OSError, RoammailError) as exc:
        log.error("%s: cannot write its report into %s: %s", name, maildir, exc)
        return None
    log.info("%s: report written to %s", name, path)
    return path
