"""queue.py: the queue commands of extsmaild: --list, --show, --delete,
--failed, --retry and --status, and extsmail's sendmail-style listing (-bp,
mailq).

Spool file names stay what the writers made them (the C extsmail reads
the same spool); what users see and type is a short ID: the first hex
digits of the SHA-1 of the file name, as few as name no other message of
msgs/ and failed/ together, never fewer than SHORT_ID_MIN (`short_ids`).
A message keeps its ID when it moves between msgs/ and failed/, and an
ID once shown keeps naming it for as long as no other message shares
those digits.  `resolve_id` takes a whole file name, a short ID (or a
longer prefix of the hash) or a unique prefix of the file name, in that
order; for a failed message (--retry) in failed/.

--list and --show read a message even while it is being delivered
(without its lock); --delete removes a message only for the holder of its
lock (spool.remove), so never one an external has right now, and removes
a corrupt one at once.  The listings decode RFC 2047 header words, never
print a control character from a message, and show the envelope (the
stored sendmail arguments: -f, the recipients, -t).

Nothing here delivers, and nothing is imported before one of these
commands runs: extsmaild imports this module for them only, extsmail for
-bp only.
"""

from __future__ import annotations

import os
import stat
import sys
import time

from ..core.errors import EX_DATAERR, EX_IOERR, EX_TEMPFAIL, DataError, UsageError
from . import spool
from . import status as states
from .deliver import ERRORS_DIR, clear_error, read_error

SHORT_ID_MIN = 8  # hex digits: a collision needs about 65,000 queued messages
HASH_DIGITS = 40  # SHA-1
# How much of a message file one read takes: the v1 header and the mail's
# header section, nearly always.
PEEK = 1 << 16
HEAD_LIMIT = 1 << 20  # the most of a header section read (headers.HEAD_LIMIT)


def name_hash(name: str) -> str:
    """The hex SHA-1 of a spool file name: what short IDs are prefixes of."""
    import hashlib

    return hashlib.sha1(os.fsencode(name)).hexdigest()


def short_ids(names) -> dict[str, str]:
    """Each name's short ID: the shortest prefix of its hash, of at least
    SHORT_ID_MIN digits, that is the prefix of no other name's hash."""
    hashed = sorted((name_hash(name), name) for name in set(names))
    ids = {}
    for i, (digest, name) in enumerate(hashed):
        need = SHORT_ID_MIN
        for j in (i - 1, i + 1):
            if 0 <= j < len(hashed):
                other = hashed[j][0]
                if digest[:SHORT_ID_MIN] != other[:SHORT_ID_MIN]:
                    continue  # nearly always: the shortest ID is enough
                common = SHORT_ID_MIN
                while common < HASH_DIGITS and digest[common] == other[common]:
                    common += 1
                need = max(need, common + 1)
        ids[name] = digest[:need]
    return ids


def _is_hash_prefix(ident: str) -> bool:
    return (SHORT_ID_MIN <= len(ident) <= HASH_DIGITS
            and all(c in "0123456789abcdef" for c in ident.lower()))


def resolve_id(spool_dir: str, ident: str, failed: bool = False) -> str:
    """The msgs/ path of a queue ID (a whole name, a short ID, or a unique
    prefix of a name); with `failed`, the failed/ path of a failed
    message's ID."""
    if "/" in ident or not ident or ident.startswith("."):
        raise UsageError(f"bad message ID '{ident}'")
    paths = spool.list_failed(spool_dir) if failed else spool.list_messages(spool_dir)
    what = "failed message" if failed else "queued message"
    exact = [p for p in paths if os.path.basename(p) == ident]
    if exact:
        return exact[0]
    if _is_hash_prefix(ident):
        wanted = ident.lower()
        hashed = [p for p in paths if name_hash(os.path.basename(p)).startswith(wanted)]
        if len(hashed) == 1:
            return hashed[0]
        if hashed:
            raise UsageError(f"message ID '{ident}' is ambiguous ({len(hashed)} messages)")
    prefixed = [p for p in paths if os.path.basename(p).startswith(ident)]
    if len(prefixed) == 1:
        return prefixed[0]
    if not prefixed:
        raise DataError(f"no {what} {ident}")
    raise UsageError(f"message ID '{ident}' is ambiguous ({len(prefixed)} messages)")


# ------------------------------------------------------------ what is shown


# C0 and C1 controls and DEL: a header must not drive the terminal.
_CONTROLS = {code: "?" for code in [*range(0x20), *range(0x7f, 0xa0)]}
_CONTROLS.update({ord("\t"): " ", ord("\n"): " ", ord("\r"): " "})
WANTED_HEADERS = ("from", "to", "cc", "bcc", "subject")
# sendmail's options that take a value (getopt's "A:B:b:C:d:e:F:f:h:L:M:N:
# O:o:p:q:Q:R:r:V:X:"), in the same word or the next.
_VALUE_OPTIONS = frozenset("ABbCdeFfhLMNOopqQRrVX")


def clean(text: str) -> str:
    """`text` as one line: controls become '?', runs of white space one."""
    return " ".join(text.translate(_CONTROLS).split())


def decode_header_value(raw: str) -> str:
    """A header value with its RFC 2047 encoded words decoded, as one clean
    line.  Never raises: an unknown charset or a bad byte is shown as
    U+FFFD or left as it was."""
    if "=?" not in raw:
        return clean(raw)
    from email.header import decode_header

    try:
        parts = decode_header(raw)
    except Exception:  # the email package's parser on hostile input
        return clean(raw)
    pieces = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            pieces.append(chunk)
            continue
        try:
            pieces.append(chunk.decode(charset or "ascii", "replace"))
        except LookupError:  # a charset Python does not know
            pieces.append(chunk.decode("utf-8", "replace"))
    return clean("".join(pieces))


def header_fields(head: bytes) -> dict[str, str]:
    """The first From, To, Cc, Bcc and Subject of a header section,
    unfolded, undecoded (UTF-8, a bad byte as U+FFFD)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    end = head.find(b"\n\n")
    if end >= 0:
        head = head[:end + 1]  # the body is never read, nor decoded
    for line in head.decode("utf-8", "replace").split("\n"):
        line = line.rstrip("\r")
        if not line.strip():
            break
        if line[:1] in (" ", "\t"):
            if current is not None:
                current.append(line)
            continue
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        current = None
        if colon and key in WANTED_HEADERS and key not in found:
            current = found[key] = [value]
    return {key: "".join(lines) for key, lines in found.items()}


def envelope(args: list[bytes]) -> tuple[str | None, list[str], bool]:
    """What sendmail makes of the stored arguments: the envelope sender
    (-f or -r, else None), the recipients on the command line, and whether
    -t asks for the header's recipients too."""
    words = [arg.decode("utf-8", "replace") for arg in args]
    sender = None
    recipients: list[str] = []
    from_header = False
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            recipients.extend(words[i:])
            break
        if not word.startswith("-") or word == "-":
            recipients.append(word)
            continue
        for j in range(1, len(word)):
            letter = word[j]
            if letter == "t":
                from_header = True
            if letter in _VALUE_OPTIONS:
                value = word[j + 1:]
                if not value and letter != "q" and i < len(words):
                    value = words[i]
                    i += 1
                if letter in "fr":
                    sender = value
                break
    return sender, recipients, from_header


def addresses(values: list[str]) -> list[str]:
    """The addresses of address header values (To:, From:...).  The plain
    forms (`a@x`, `Name <a@x>`, lists of them) are read here; quoted names,
    comments and groups by email.utils, whose parser costs a listing of
    10,000 messages more than all the rest."""
    found: list[str] = []
    for value in values:
        if any(c in value for c in '"()\\:;'):
            from email.utils import getaddresses

            found += [addr for _, addr in getaddresses([value]) if addr.strip()]
            continue
        for part in value.split(","):
            start = part.rfind("<")
            if start >= 0:
                end = part.find(">", start)
                part = part[start + 1:end] if end >= 0 else part[start + 1:]
            address = "".join(part.split())
            if address:
                found.append(address)
    return found


class Entry:
    """One message file as the listings show it."""

    def __init__(self, path: str, st: os.stat_result, args: list[bytes],
                 body_offset: int, fields: dict[str, str]) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.size = st.st_size - body_offset
        self.mtime = st.st_mtime
        self.uid = st.st_uid
        self.args = args
        self.fields = fields
        self._envelope: tuple[str | None, list[str], bool] | None = None

    def envelope(self) -> tuple[str | None, list[str], bool]:
        if self._envelope is None:
            self._envelope = envelope(self.args)
        return self._envelope

    def recipients(self) -> list[str]:
        """The envelope recipients: the command line's, and with -t the
        addresses of To, Cc and Bcc."""
        _, listed, from_header = self.envelope()
        found = [clean(r) for r in listed]
        if from_header:
            values = [self.fields[k] for k in ("to", "cc", "bcc") if k in self.fields]
            found += [clean(addr) for addr in addresses(values)]
        return found

    def sender(self) -> tuple[str, str]:
        """(whole sender, address): the From: header, else -f, else the
        spool file's owner, and how it was found when not from From:."""
        raw = self.fields.get("from")
        if raw is not None and raw.strip():
            whole = decode_header_value(raw)
            found = addresses([raw])
            return whole, clean(found[0]) if found else whole
        envelope_sender, _, _ = self.envelope()
        if envelope_sender:
            return f"{clean(envelope_sender)} (envelope sender, no From: header)", \
                clean(envelope_sender)
        owner = owner_name(self.uid)
        return f"{owner} (the spool file's owner, no From: header)", owner

    def sender_address(self) -> str:
        """sender()[1], without decoding the whole From: for nothing."""
        raw = self.fields.get("from")
        if raw is not None and raw.strip():
            found = addresses([raw])
            if found:
                return clean(found[0])
        return self.sender()[1]


_OWNERS: dict[int, str] = {}


def owner_name(uid: int) -> str:
    if uid not in _OWNERS:
        import pwd

        try:
            _OWNERS[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            _OWNERS[uid] = str(uid)
    return _OWNERS[uid]


def read_entry(path: str) -> Entry | None:
    """Read what the listings show of a message file, without its lock
    (one being delivered is listed too); None when it is gone or empty
    (the C extsmail still writing it).  DataError when it is corrupt."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"cannot open spool file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"spool file {path} is not a regular file")
        if st.st_size == 0:
            return None
        data = os.pread(fd, PEEK, 0)
        try:
            args, offset = spool.parse_header(data, path)
        except DataError:
            if len(data) >= st.st_size:
                raise
            args, offset = spool.read_header(fd, st.st_size, path)
            data = os.pread(fd, offset + PEEK, 0)
        head = data[offset:]
        while (b"\n\n" not in head and b"\n\r\n" not in head
               and offset + len(head) < st.st_size and len(head) < HEAD_LIMIT):
            more = os.pread(fd, min(len(head), HEAD_LIMIT - len(head)) or PEEK,
                            offset + len(head))
            if not more:
                break
            head += more
    except OSError as exc:
        raise DataError(f"cannot read spool file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return Entry(path, st, args, offset, header_fields(head))


def human_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class _Listing:
    """What every listing needs: the IDs of msgs/ and failed/ together,
    which messages have an error note, and a writer that never fails on a
    character the output's encoding lacks."""

    def __init__(self, spool_dir: str, out) -> None:
        self.spool_dir = spool_dir
        self.queued = spool.list_messages(spool_dir)
        self.failed = spool.list_failed(spool_dir)
        self.ids = short_ids(os.path.basename(p) for p in self.queued + self.failed)
        try:
            self.noted = set(os.listdir(os.path.join(spool_dir, ERRORS_DIR)))
        except OSError:
            self.noted = set()
        self.out = out
        self.encoding = getattr(out, "encoding", None) or "utf-8"
        self.now = time.time()

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
        except UnicodeEncodeError:
            self.out.write(text.encode(self.encoding, "replace").decode(self.encoding))

    def error(self, name: str) -> str | None:
        return read_error(self.spool_dir, name) if name in self.noted else None

    def failed_note(self) -> str:
        count = len(self.failed)
        if not count:
            return ""
        return (f"{count} failed message{'s' if count > 1 else ''}, not retried: "
                "extsmaild --failed lists them")


def list_queue(spool_dir: str, out) -> int:
    """--list: every queued message, its sender, recipients and last error."""
    listing = _Listing(spool_dir, out)
    for path in listing.queued:
        _describe(listing, path, "Last error")
    note = listing.failed_note()
    if not listing.queued:
        listing.write(f"queue is empty{f' ({note})' if note else ''}\n")
    elif note:
        listing.write(f"({note})\n")
    return 0


def list_failed(spool_dir: str, out) -> int:
    """--failed: the messages set aside in failed/, with why."""
    listing = _Listing(spool_dir, out)
    for path in listing.failed:
        _describe(listing, path, "Error")
    if not listing.failed:
        listing.write("no failed messages\n")
    return 0


def _describe(listing: _Listing, path: str, error_label: str) -> None:
    name = os.path.basename(path)
    ident = listing.ids[name]
    try:
        entry = read_entry(path)
    except DataError as exc:
        listing.write(f"{ident}  corrupt: {exc}\n")
        return
    if entry is None:
        return
    sender, _ = entry.sender()
    fields = entry.fields
    args = " ".join(a.decode("utf-8", "replace") for a in entry.args)
    listing.write(
        f"{ident}  {human_age(listing.now - entry.mtime)}  {entry.size} bytes  file {name}\n"
        f"  From: {sender}\n"
        f"  To: {decode_header_value(fields.get('to', ''))}\n"
        f"  Subject: {decode_header_value(fields.get('subject', ''))}\n"
        f"  Recipients: {', '.join(entry.recipients())}\n"
        f"  Arguments: {clean(args)}\n")
    err = listing.error(name)
    if err:
        # The external's stderr follows on lines of their own, indented.
        first, *rest = err.split("\n")
        listing.write(f"  {error_label}: {first}\n")
        for line in rest:
            listing.write(f"    {line}\n" if line else "\n")


# sendmail's mailq columns: ID, size, queue time, sender; then the last
# error and the recipients on lines of their own.
MAILQ_HEADING = ("-----Q-ID----- --Size-- -----Q-Time----- "
                 "------------Sender/Recipient-----------\n")
MAILQ_INDENT = " " * 41
MAILQ_ERROR_WIDTH = 70


def mailq(spool_dir: str, out) -> int:
    """extsmail -bp, mailq: the queue as sendmail's mailq shows it."""
    listing = _Listing(spool_dir, out)
    count = len(listing.queued)
    note = listing.failed_note()
    if not count:
        listing.write("Mail queue is empty\n")
        if note:
            listing.write(f"({note})\n")
        return 0
    listing.write(f"\t\t{os.path.join(spool_dir, spool.MSGS)} "
                  f"({count} request{'s' if count > 1 else ''})\n")
    listing.write(MAILQ_HEADING)
    minutes: dict[int, str] = {}  # the queue time column, per minute
    for path in listing.queued:
        name = os.path.basename(path)
        ident = listing.ids[name]
        try:
            entry = read_entry(path)
        except DataError as exc:
            listing.write(f"{ident:<14} (corrupt: {clean(str(exc))})\n")
            continue
        if entry is None:
            listing.write(f"{ident:<14} (being written)\n")
            continue
        minute = int(entry.mtime // 60)
        queued = minutes.get(minute)
        if queued is None:
            queued = minutes[minute] = time.strftime("%a %b %d %H:%M",
                                                     time.localtime(entry.mtime))
        lines = [f"{ident:<14} {entry.size:>8} {queued} {entry.sender_address()}\n"]
        err = listing.error(name)
        if err:
            first = clean(err.split("\n", 1)[0])
            if len(first) > MAILQ_ERROR_WIDTH:
                first = first[:MAILQ_ERROR_WIDTH - 3] + "..."
            lines.append(f"      ({first})\n")
        for recipient in entry.recipients() or ["(no recipients)"]:
            lines.append(f"{MAILQ_INDENT}{recipient}\n")
        listing.write("".join(lines))  # one write a message: 10,000 add up
    listing.write(f"\t\tTotal requests: {count}\n")
    if note:
        listing.write(f"({note})\n")
    return 0


def retry_messages(spool_dir: str, idents: list[str], log) -> int:
    """--retry: move failed messages back into the queue, to be sent by
    the next pass (of a daemon, at once: it sees them arrive)."""
    names = [os.path.basename(resolve_id(spool_dir, ident, failed=True)) for ident in idents]
    for name in names:
        if spool.put_back(spool_dir, name, time.time()) is None:
            continue  # put back by another --retry meanwhile
        clear_error(spool_dir, name)
        states.remove(spool_dir, name)  # queued again, from the start
        log.info("%s: back in the queue", name)
    return 0


def _open_for_reading(path: str) -> spool.QueuedMessage | None:
    """Open a message to look at it; a locked one is being delivered."""
    message = spool.open_message(path)
    if message is None and os.path.exists(path):
        # Locked (being delivered or still written): read without the lock.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            args, offset = spool.read_header(fd, st.st_size, path)
        except BaseException:
            os.close(fd)
            raise
        return spool.QueuedMessage(path, fd, args, offset, st.st_size, st.st_mtime)
    return message


def show_message(spool_dir: str, ident: str) -> int:
    path, _ = resolve_queued_or_failed(spool_dir, ident)
    message = _open_for_reading(path)
    if message is None:
        raise DataError(f"no queued or failed message {ident}")
    with message:
        stream = message.stream()
        out = sys.stdout.buffer
        while True:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            out.write(chunk)
        out.flush()
    return 0


def resolve_queued_or_failed(spool_dir: str, ident: str) -> tuple[str, bool]:
    """(path, failed): the queued message `ident`, else the failed one."""
    try:
        return resolve_id(spool_dir, ident), False
    except DataError:
        pass
    try:
        return resolve_id(spool_dir, ident, failed=True), True
    except DataError:
        raise DataError(f"no queued or failed message {ident}") from None


def delete_messages(spool_dir: str, idents: list[str], log) -> int:
    found = [resolve_queued_or_failed(spool_dir, ident) for ident in idents]
    status = 0
    for path, failed in found:
        name = os.path.basename(path)
        if failed:
            if spool.delete_failed(spool_dir, name):
                clear_error(spool_dir, name)
                states.remove(spool_dir, name)
                log.info("%s: deleted (it had failed)", name)
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # delivered meanwhile
        if not stat.S_ISREG(st.st_mode):
            log.error("%s: not a regular file, not a queued message; not deleted", name)
            status = EX_DATAERR
            continue
        try:
            message = spool.open_message(path)
        except DataError:
            message = None
            if os.path.exists(path):  # corrupt: deleting it is what one wants
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.error("%s: cannot delete it: %s", name, exc.strerror or exc)
                    status = EX_IOERR
                    continue
                clear_error(spool_dir, name)
                log.info("%s: deleted (it was corrupt)", name)
                continue
        if message is None:
            if os.path.exists(path):
                if st.st_size == 0:
                    log.error("%s: empty: the C extsmail is still writing it; not deleted",
                              name)
                else:
                    log.error("%s: being delivered right now; not deleted", name)
                status = EX_TEMPFAIL
            continue
        with message:
            spool.remove(message)
        clear_error(spool_dir, name)
        states.remove(spool_dir, name)
        log.info("%s: deleted", name)
    return status


def show_status(spool_dir: str, ident: str | None, as_json: bool, out, err) -> int:
    """--status [ID]: each message's delivery state, one line each (or a
    JSON list).  With ID (a queue ID or a Message-ID) only that message's,
    and the exit status says what became of it (states.exit_status)."""
    records = states.all_records(spool_dir)
    if ident is not None:
        records = states.find(records, ident)
    if as_json:
        import json

        out.write(json.dumps([states.public(r) for r in records], indent=1) + "\n")
    else:
        out.writelines(states.describe(r) + "\n" for r in records)
    if ident is None:
        return 0
    if not records:
        err.write(f"extsmaild: no message {ident} (queued, sent or failed)\n")
    return states.exit_status(records)
