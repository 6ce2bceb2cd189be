"""syncmail: move new mail from a server's maildir to the laptop over ssh.

Usage:
  syncmail [-c CONFIG] [-n] [-v] [-q] [--hooks DIR] [SOURCE...]
  syncmail [-n] [-v] [-q] [--hooks DIR] HOST:REMOTE_MAILDIR LOCAL_MAILDIR
  syncmail -h | --help

Options:
  -c CONFIG --config=CONFIG  Configuration file, instead of
                             $XDG_CONFIG_HOME/roammail/syncmail.conf.
  -n --dry-run               Copy nothing, remove nothing: list what would move.
  -v --verbose               Log every message on stderr, even off a terminal.
  -q --quiet                 Only errors on stderr.
  --hooks DIR                Hook base directory instead of
                             $XDG_CONFIG_HOME/roammail/hooks.
  -h --help                  Show this help.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

from . import durable, hookdirs, locations, maildir
from .cli import docopt_args, guarded
from .config import Token, TokenStream, describe, read_config_file, shorten, tokenize
from .durable import fsync_dir, write_file_atomically
from .errors import EX_CONFIG, EX_TEMPFAIL, ConfigError, IOFailure, RoammailError, UsageError
from .remote import ConnectError
from .syncmail_plan import (
    INBOX_ACTION,
    Action,
    Entry,
    LocalCopy,
    batch_length,
    choose,
    plan_listing,
    removable,
)

TOOL = "syncmail"

EXIT_OK = 0
EXIT_LEFT = 1          # some messages left on the server (named in the log)
EXIT_TEMPFAIL = EX_TEMPFAIL  # could not connect, or the connection broke
EXIT_CONFIG = EX_CONFIG

# Server tmp/ files untouched this long are reported (maildir's own limit).
STALE_TMP_SECONDS = 36 * 3600
# One tar stream carries at most this many messages / about this many
# bytes: a round trip per batch, and the journal is written per batch.
BATCH_MESSAGES = 1000
BATCH_BYTES = 64 * 1024 * 1024
COPY_CHUNK = 256 * 1024
# Background rm's on the server run this many batches before they are
# asked how they ended: by then they are done, and the server need not
# wait for one before it goes on.
RM_RUNNING = 2
# Tar streams asked for ahead: the next one is under way before the one
# being read ends, so a slow link has no round trip between batches.
TARS_AHEAD = 2
# Messages up to this size are read from the tar stream in one call (and
# the first this many bytes of a larger one): headers.HEAD_LIMIT.
WHOLE_MESSAGE_BYTES = 1024 * 1024

log = logging.getLogger("roammail.syncmail")


# ------------------------------------------------------------ configuration
#
# Grammar (syncmail.conf(5)); the tokens are config.py's:
#
#   <config>  ::= <source> | <source> <config>
#   <source>  ::= "source" ID "{" <items> "}"
#   <items>   ::= "" | <item> <items>
#   <item>    ::= "host" "=" STRING | "remote" "=" STRING
#               | "local" "=" STRING | <rule>
#   <rule>    ::= "match" "header" STRING <action>
#   <action>  ::= "inbox" | "folder" STRING | "discard" | "archive" STRING

@dataclass(frozen=True)
class Rule:
    pattern: str
    line: int
    regex: object
    action: Action


@dataclass
class Source:
    name: str
    host: str
    remote: str
    local: str
    rules: list = field(default_factory=list)
    path: str = ""
    line: int = 0
    remote_line: int = 0


_SETTINGS = ("host", "remote", "local")


def parse_config(data: bytes | str, path: str) -> list[Source]:
    """Parse a syncmail.conf; ConfigError(path, line, ...) on any fault."""
    ts = TokenStream(tokenize(data, path), path)
    sources: list[Source] = []
    names: dict[str, int] = {}
    while not ts.at_eof():
        sources.append(_source(ts, names))
    if not sources:
        raise ConfigError(path, 0, "no source defined")
    return sources


def _source(ts: TokenStream, names: dict[str, int]) -> Source:
    start = ts.expect_word("source")
    name_token = ts.expect("ID", "a name after 'source'")
    name = str(name_token.value)
    if name in names:
        raise ts.error(name_token, f"source '{name}' already defined at line {names[name]}")
    names[name] = name_token.line
    ts.expect("LBRACE", f"'{{' after 'source {name}'")
    values: dict[str, Token] = {}
    rules: list[Rule] = []
    while ts.peek().kind != "RBRACE":
        token = ts.peek()
        if token.kind == "ID" and token.value == "match":
            rules.append(_rule(ts))
            continue
        if token.kind != "ID" or token.value not in _SETTINGS:
            raise ts.error(token, f"expected 'host', 'remote', 'local', 'match' or '}}', "
                                  f"found {describe(token)}")
        key, value = ts.assignment("a key")
        if key.value in values:
            raise ts.error(key, f"'{key.value}' already set at line {values[key.value].line} "
                                f"in source '{name}'")
        ts.check_type(key, value, "STRING")
        if value.value == "":
            raise ts.error(key, f"'{key.value}' is empty")
        values[str(key.value)] = value
    ts.next()
    for needed in _SETTINGS:
        if needed not in values:
            raise ts.error(start, f"source '{name}' has no '{needed}'")
    host = str(values["host"].value)
    if host.startswith("-") or any(c.isspace() for c in host):
        raise ts.error(values["host"], f"bad host '{shorten(host)}'")
    return Source(name, host, str(values["remote"].value),
                  locations.expand_home(str(values["local"].value)), rules,
                  ts.path, start.line, values["remote"].line)


def _rule(ts: TokenStream) -> Rule:
    from .headers import compile_rule

    start = ts.expect_word("match")
    ts.expect_word("header")
    pattern = ts.expect("STRING", "a header regex in double quotes")
    verb = ts.expect("ID", "'inbox', 'folder', 'discard' or 'archive'")
    if verb.value == "inbox":
        action = Action("inbox", None, start.line)
    elif verb.value == "discard":
        action = Action("discard", None, start.line)
    elif verb.value in ("folder", "archive"):
        target = ts.expect("STRING", f"a string after '{verb.value}'")
        text = str(target.value)
        if verb.value == "folder":
            problem = maildir._folder_problem(text) if text != maildir.INBOX else None
            if problem is not None:
                raise ts.error(target, f"{problem}: '{shorten(text)}'")
        elif not text:
            raise ts.error(target, "archive directory is empty")
        else:
            text = locations.expand_home(text)
        action = Action(str(verb.value), text, start.line)
    else:
        raise ts.error(verb, f"expected 'inbox', 'folder', 'discard' or 'archive', "
                             f"found {describe(verb)}")

    class _Parsed:
        kind = "match"

    parsed = _Parsed()
    parsed.pattern = str(pattern.value)  # type: ignore[attr-defined]
    parsed.line = start.line  # type: ignore[attr-defined]
    compiled = compile_rule(parsed, ts.path)
    return Rule(compiled.pattern, start.line, compiled.regex, action)


def batch_messages() -> int:
    """Messages per batch: BATCH_MESSAGES, or $ROAMMAIL_SYNCMAIL_BATCH."""
    value = os.environ.get("ROAMMAIL_SYNCMAIL_BATCH")
    if value is None:
        return BATCH_MESSAGES
    if not value.isdigit() or int(value) < 1:
        raise UsageError("ROAMMAIL_SYNCMAIL_BATCH must be a positive number, "
                         f"not '{shorten(value)}'")
    return int(value)


def allow_open_files(wanted: int) -> None:
    """Raise the soft limit of open files towards `wanted` (within the hard
    limit); where it stays lower, staged files get names instead."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    except (OSError, ValueError):
        pass


def default_config() -> str:
    return os.path.join(locations.xdg_config_home(), "roammail", "syncmail.conf")


def state_dir() -> str:
    value = os.environ.get("XDG_STATE_HOME", "")
    base = value if value.startswith("/") else os.path.join(locations.home(), ".local", "state")
    return os.path.join(base, "roammail", "syncmail")


# ------------------------------------------------------------------ journal

class Journal:
    """name -> size of messages this tool stored (or was about to store)
    locally and has not seen removed on the server: a later run removes
    such a message on the server if it is here with that size."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, int] = {}
        try:
            with open(path, "rb") as f:
                for raw in f.read().split(b"\n"):
                    size, _, name = raw.partition(b" ")
                    if name and size.isdigit():
                        self.entries[os.fsdecode(name)] = int(size)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise IOFailure(f"cannot read {path}: {exc.strerror}") from exc
        self.on_disk = self.data()  # what the file holds (b"": no file, or empty)

    def data(self) -> bytes:
        """The file's content for the entries as they are now."""
        return b"".join(b"%d %s\n" % (size, os.fsencode(name))
                        for name, size in sorted(self.entries.items()))

    def write(self, data: bytes) -> None:
        """Make the file hold `data` (durably), unless it does already: a
        run that finds nothing new writes nothing."""
        if data != self.on_disk:
            write_file_atomically(self.path, data)
            self.on_disk = data

    def save(self) -> None:
        self.write(self.data())


# ------------------------------------------------------------ local index

class LocalIndex:
    """The messages already in the source's local maildirs (inbox and the
    rule folders), by unique name; read once per run."""

    def __init__(self, dirs: list[str]) -> None:
        self.paths: dict[str, str] = {}
        for base in dirs:
            for sub in ("new", "cur"):
                directory = os.path.join(base, sub)
                try:
                    with os.scandir(directory) as it:
                        for entry in it:
                            self.paths.setdefault(maildir.base_name(entry.name), entry.path)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise IOFailure(f"cannot list {directory}: {exc.strerror}") from exc

    def lookup(self, name: str) -> Optional[LocalCopy]:
        path = self.paths.get(maildir.base_name(name))
        if path is None:
            return None
        try:
            size = os.lstat(path).st_size
        except OSError:
            size = -1
        return LocalCopy(path, size)


# ------------------------------------------------------------------ one run

@dataclass
class Result:
    moved: int = 0
    bytes: int = 0
    discarded: int = 0
    left: list = field(default_factory=list)  # names left on the server
    refused: int = 0
    status: int = EXIT_OK


def destination_dirs(source: Source) -> list[str]:
    dirs = [source.local]
    for rule in source.rules:
        if rule.action.kind == "folder":
            dirs.append(maildir.folder_to_path(source.local, rule.action.target))
    return dirs


def stale_stamp(now: float) -> str:
    """touch -t stamp (UTC) of the moment STALE_TMP_SECONDS ago."""
    return time.strftime("%Y%m%d%H%M.%S", time.gmtime(now - STALE_TMP_SECONDS))


def source_key(source: Source) -> str:
    if source.path:
        return source.name
    digest = hashlib.sha256(f"{source.host}:{source.remote}\0{source.local}".encode(
        "utf-8", "surrogateescape")).hexdigest()[:16]
    return f"oneshot-{digest}"


def lock_source(key: str) -> int:
    directory = state_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, key + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise _Busy() from None
        raise IOFailure(f"cannot lock {path}: {exc.strerror}") from exc
    return fd


class _Busy(Exception):
    pass


def _chunks(first: bytes, stream, session) -> object:
    """A large message from the tar stream: `first`, what was read of it
    already, then the rest.  A stream that breaks mid-message is the
    connection's failure."""
    if first:
        yield first
    while True:
        try:
            chunk = stream.read(COPY_CHUNK)
        except EOFError as exc:
            raise session.broken(f"in the tar stream ({exc})") from None
        if not chunk:
            return
        yield chunk


class _Left(str):
    """Why a message stays on the server (a copy's outcome)."""


@dataclass
class _Copy:
    """A message of a batch in flight, staged in the maildirs it goes to
    (durable.Staged: unnamed, or under a temporary name), not yet under its
    own."""

    name: str
    size: int
    dest: str
    action: Action
    inbox: durable.Staged
    archive: Optional[durable.Staged] = None
    done: bool = False  # published, or its temporary files removed

    def abandon(self) -> None:
        if not self.done:
            durable.abandon(self.inbox)
            if self.archive is not None:
                durable.abandon(self.archive)
            self.done = True


def _name_copy(copy: _Copy, label: str, dirs: set) -> object:
    """Give a durable staged copy its name (the archive's first): the inbox
    path, or a _Left.  Either way, and when it raises, the copy's
    temporary files are gone; `dirs` gets the directories to fsync."""
    copy.done = True
    if copy.archive is not None:
        try:
            durable.publish(copy.archive)
        except FileExistsError:
            log.info("%s: %s is in the archive %s already", label, copy.name,
                     copy.action.target)
        except BaseException:
            durable.abandon(copy.inbox)
            raise
        else:
            dirs.add(os.path.dirname(copy.archive.final))
    try:
        path = durable.publish(copy.inbox)
    except FileExistsError:
        return _Left(f"a message of that name is here already ({copy.dest})")
    dirs.add(os.path.dirname(path))
    return path


@dataclass
class _Flight:
    """A batch on its way from the server's new/ to here: staged here;
    then, in a thread while the next batch is read, made durable, written
    into the journal and named here; then checked and removed on the
    server."""

    wanted: dict                                  # name -> size when listed
    staging: durable.Batch = field(default_factory=durable.Batch)
    copies: list = field(default_factory=list)    # _Copy, staged
    stored: dict = field(default_factory=dict)    # name -> size: safely here, or discarded
    answers: int = 0                              # size answers asked for
    names: list = field(default_factory=list)     # asked to be removed on the server
    failure: Optional[RoammailError] = None       # the first local one
    outcomes: list = field(default_factory=list)  # of the copies named: path or _Left
    naming_error: Optional[RoammailError] = None  # what stopped the naming
    _thread: Optional[threading.Thread] = None
    _error: Optional[BaseException] = None

    def start(self, journal: Journal, label: str) -> None:
        """Land the staged copies, in a thread: make them durable, save
        the journal with this batch in it (before any of its messages has
        its name), name each copy, fsync the directories."""
        if not self.copies:
            return
        journal.entries.update(self.wanted)
        self._thread = threading.Thread(target=self._land, name="syncmail-land", daemon=True,
                                        args=(journal, journal.data(), label))
        self._thread.start()

    def _land(self, journal: Journal, journal_data: bytes, label: str) -> None:
        try:
            self.staging.sync()
            journal.write(journal_data)
            dirs: set[str] = set()
            try:
                for copy in self.copies:
                    self.outcomes.append(_name_copy(copy, label, dirs))
            except RoammailError as exc:
                self.naming_error = exc
            for directory in sorted(dirs):
                fsync_dir(directory)  # before anything is removed on the server
        except BaseException as exc:  # noqa: BLE001 - handed to finish()
            self._error = exc

    def finish(self) -> None:
        """Wait for start()'s thread; raise what stopped it before the
        named copies were durable (then none of them counts as stored)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def abandon(self) -> None:
        """Remove the copies never named (a thread still running is waited
        for first); nothing is left under a message name."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for copy in self.copies:
            copy.abandon()


class _Pipeline:
    """The batches of one source on their way, requests ahead of answers.

    Requests go ahead of their answers (remote.py), which come back in
    order: `replies` says what each will be.  Once under way, two tar
    streams are asked for ahead (TARS_AHEAD), so the server tars batch k+1
    while this machine reads and stages batch k, with no round trip between
    them; meanwhile a thread makes batch k-1 durable and names its messages
    (_Flight), and the server removes earlier batches with rm in the
    background.  The sizes of the next messages to batch are asked ahead
    too.  Each answer, when it comes:

      "sizes" (of messages to batch): batch them; ask for tars;
      "tar" (batch k): stage it; ask for tar(k+2), and for more sizes; wait
          for batch k-1 to land and ask for the sizes of what it stored;
          ask how the rm's started RM_RUNNING batches ago ended; start
          landing batch k;
      "check" (sizes of what a batch stored): ask to remove what is still
          the size stored here;
      "removed": drop the removed from the journal.

    A message is removed on the server only after it is durable here; at
    most six batches are in both places at once, all of them in the
    journal.  After a local failure no more is asked for: what was asked
    is read, what landed is removed on the server.
    """

    def __init__(self, mover: Mover, session, fetch: list, by_name: dict,
                 journal: Journal) -> None:
        self.mover, self.session, self.by_name, self.journal = mover, session, by_name, journal
        self.batch = mover.batch
        self.todo = deque(fetch)  # listed, sizes not asked yet
        self.sized: deque = deque()  # (entry, size), not in a batch yet
        self.replies: deque = deque()  # (kind, payload) of each answer to come, in order
        self.failure: Optional[RoammailError] = None  # the first local one
        self.landing: Optional[_Flight] = None  # its thread runs
        self.rm_running: deque = deque()  # _Flight whose rm runs, not asked how it ended
        self.sizes_asked = 0  # messages whose sizes are asked for, not read yet
        self.tars_asked = 0  # tar streams asked for, not read yet

    def run(self) -> None:
        self.ask_ahead()
        while self.replies or self.landing is not None or self.rm_running:
            if not self.replies:  # the end: land the last batch, finish the last rm's
                self.land_and_check(None)
                continue
            kind, payload = self.replies.popleft()
            if kind == "sizes":
                chunk, answers = payload
                self.sizes_asked -= len(chunk)
                now = self.session.read_sizes(answers)
                self.sized.extend((e, now[e.name]) for e in chunk if e.name in now)
                self.ask_ahead()
            elif kind == "tar":
                self.tars_asked -= 1
                flight = _Flight({e.name: size for e, size in payload})
                try:
                    self.mover.fetch_batch(self.session, flight, stopped=self.failure)
                except BaseException:
                    flight.abandon()
                    raise
                self.failure = self.failure or flight.failure
                # The checks first: their answers then come before the
                # next tar's, and batches leave the journal sooner.
                self.land_and_check(flight)
                self.ask_ahead()
            elif kind == "check":
                self.mover.ask_removal(self.session, payload, self.by_name)
                if payload.names:
                    self.rm_running.append(payload)
            else:  # "removed"
                self.mover.removal_done(self.session, payload, self.by_name, self.journal)

    def ask_sizes(self) -> None:
        chunk = [self.todo.popleft() for _ in range(min(len(self.todo), self.batch))]
        answers = self.session.send_sizes([e.index for e in chunk])
        self.replies.append(("sizes", (chunk, answers)))
        self.sizes_asked += len(chunk)

    def ask_tar(self) -> None:
        count = batch_length((size for _, size in self.sized), self.batch, BATCH_BYTES)
        batch = [self.sized.popleft() for _ in range(count)]
        self.session.send_tar([e.index for e, _ in batch])
        self.replies.append(("tar", batch))
        self.tars_asked += 1

    def whole_batch_sized(self) -> bool:
        """`sized` holds a whole batch, or all there will be."""
        if not self.sized:
            return False
        if not (self.todo or self.sizes_asked) or len(self.sized) >= self.batch:
            return True
        sizes = (size for _, size in self.sized)
        return batch_length(sizes, self.batch, BATCH_BYTES) < len(self.sized)

    def ask_ahead(self) -> None:
        """Keep the next tars and the next sizes asked for."""
        if self.failure is not None:
            return
        while self.tars_asked < TARS_AHEAD and self.whole_batch_sized():
            self.ask_tar()
        # Sizes are answered after the tars asked before them: ask them a
        # batch further ahead than the tars, or a slow link would wait a
        # round trip for each batch.
        while self.todo and len(self.sized) + self.sizes_asked < (TARS_AHEAD + 1) * self.batch:
            self.ask_sizes()

    def land_and_check(self, staged: Optional[_Flight]) -> None:
        """Wait for the batch landing now and ask for the sizes of what it
        stored; ask how old rm's ended; start landing `staged`."""
        landed, self.landing = self.landing, None
        if landed is not None:
            self.failure = self.mover.publish_flight(landed) or self.failure
            if landed.stored and not self.mover.dry_run:
                landed.answers = self.session.send_sizes(
                    [self.by_name[n].index for n in landed.stored])
                self.replies.append(("check", landed))
        # An rm is asked how it ended RM_RUNNING rounds after it started:
        # by then it is done, and the server need not wait for it.
        while len(self.rm_running) > (RM_RUNNING if staged is not None else 0):
            self.session.send_removed()
            self.replies.append(("removed", self.rm_running.popleft()))
        if staged is not None:
            staged.start(self.journal, self.mover.label)
            self.landing = staged


class Mover:
    """Moves one source's new mail; `run()` returns a Result."""

    def __init__(self, source: Source, dry_run: bool, batch: int = BATCH_MESSAGES,
                 terminal: Optional[TerminalLog] = None) -> None:
        self.source = source
        self.dry_run = dry_run
        self.batch = batch  # messages per batch
        self.terminal = terminal  # for a progress line
        self.progress: Optional[Progress] = None
        self.result = Result()
        self.made: set[str] = set()  # maildirs made (or found) in this run
        self.label = source.name if source.path else f"{source.host}:{source.remote}"

    def left(self, name: str, why: str) -> None:
        self.result.left.append(name)
        log.warning("%s: %s left on the server: %s", self.label, name, why)

    def run(self) -> Result:
        from .remote import RemoteSession

        # Unnamed staged files hold a descriptor each until they are named.
        allow_open_files(4 * self.batch + 256)
        source = self.source
        session = RemoteSession(source.host, source.remote, stale_stamp(time.time()))
        try:
            # While ssh connects: this machine's side.
            if not self.dry_run:
                maildir.make_maildir(source.local)
            journal = Journal(os.path.join(state_dir(), source_key(source) + ".journal"))
            index = LocalIndex(destination_dirs(source))
            session.hello()
            listing = session.listing()
            for name in listing.stale_tmp:
                log.warning("%s: tmp/%s is older than 36 hours on the server", self.label, name)
            self._run(session, listing, index, journal)
            session.close()
        except BaseException:
            session.abort()
            raise
        return self.result

    def _run(self, session, listing, index: LocalIndex, journal: Journal) -> None:
        entries: list[Entry] = listing.entries
        listed = {e.name for e in entries}
        if any(name not in listed for name in journal.entries) and not self.dry_run:
            journal.entries = {n: s for n, s in journal.entries.items() if n in listed}
            journal.save()
        plan = plan_listing(entries, index.lookup, journal.entries)
        for entry, reason in plan.refused:
            self.result.refused += 1
            self.left(ascii(entry.name)[1:-1], f"refused: {reason}")
        for entry, path in plan.collisions:
            self.left(entry.name, f"a message of that name is here already ({path})")
        by_name = {e.name: e for e in entries}
        # Messages an interrupted run stored: only remove them on the server.
        if plan.confirm and not self.dry_run:
            confirmed = {e.name: size for e, size in plan.confirm}
            flight = _Flight(confirmed, stored=confirmed, answers=session.send_sizes(
                [by_name[n].index for n in confirmed]))
            self.ask_removal(session, flight, by_name)
            if flight.names:
                session.send_removed()
                self.removal_done(session, flight, by_name, journal)
            journal.save()
            for name in flight.names:
                if name not in journal.entries:
                    log.info("%s: %s was already here (an interrupted run): removed on the "
                             "server", self.label, name)
        if self.terminal is not None and len(plan.fetch) >= PROGRESS_MESSAGES:
            self.progress = Progress(self.terminal, self.label, len(plan.fetch))
        try:
            self._move(session, plan.fetch, by_name, journal)
        finally:
            if self.progress is not None:
                self.progress.end()

    def _move(self, session, fetch: list, by_name: dict, journal: Journal) -> None:
        """Move the messages of `fetch` (listed entries): see _Pipeline."""
        pipeline = _Pipeline(self, session, fetch, by_name, journal)
        try:
            pipeline.run()
        finally:
            if pipeline.landing is not None:
                pipeline.landing.abandon()
        unmoved = len(pipeline.todo) + len(pipeline.sized)
        if unmoved:
            log.warning("%s: %d more messages stay on the server for the next run",
                        self.label, unmoved)
        if not self.dry_run:
            journal.save()

    def publish_flight(self, flight: _Flight) -> Optional[RoammailError]:
        """Wait until `flight` has landed (_Flight.start); note what is
        safely here; return its first failure."""
        try:
            if flight.copies:
                try:
                    flight.finish()
                except RoammailError as exc:
                    log.error("%s: %s", self.label, exc)
                    flight.failure = flight.failure or exc
                else:
                    self._account(flight)
        finally:
            flight.abandon()  # the copies not named
        if flight.failure is not None:
            for name in flight.wanted:
                if name not in flight.stored and name not in self.result.left:
                    self.left(name, "not stored here")
        return flight.failure

    def _account(self, flight: _Flight) -> None:
        """Log and count the copies the flight named."""
        for copy, outcome in zip(flight.copies, flight.outcomes):
            if isinstance(outcome, _Left):
                self.left(copy.name, str(outcome))
                continue
            flight.stored[copy.name] = copy.size
            self.result.moved += 1
            self.result.bytes += copy.size
            where = (copy.dest if copy.action.kind != "archive"
                     else f"{copy.dest} (archived in {copy.action.target})")
            log.info("%s: moved %s (%d bytes) to %s", self.label, copy.name, copy.size, where,
                     extra=PER_MESSAGE)
        if flight.naming_error is not None:
            log.error("%s: %s", self.label, flight.naming_error)
            flight.failure = flight.failure or flight.naming_error

    def ask_removal(self, session, flight: _Flight, by_name: dict) -> None:
        """Read the sizes asked for `flight`; ask to remove the files that
        are still the regular files of the size stored here."""
        flight.names = removable(flight.stored, session.read_sizes(flight.answers))
        chosen = set(flight.names)
        for name in flight.stored:
            if name not in chosen:
                self.left(name, "it changed on the server since it was listed")
        if flight.names:
            session.send_remove([by_name[n].index for n in flight.names])

    def removal_done(self, session, flight: _Flight, by_name: dict,
                      journal: Journal) -> None:
        """Read what a removal left (send_removed() was sent); drop the
        removed from the journal (saved with the next batch, or at the
        end)."""
        still = session.read_removed()
        for name in flight.names:
            if by_name[name].index in still:
                self.left(name, "it could not be removed on the server")
            else:
                journal.entries.pop(name, None)

    def fetch_batch(self, session, flight: _Flight,
                     stopped: Optional[RoammailError] = None) -> None:
        """Read the batch's tar stream, staging each message (flight.copies)
        or noting it discarded (flight.stored); flight.failure is the first
        local failure.  After `stopped`, an earlier failure, only read it."""
        wanted, staging, copies, stored = (flight.wanted, flight.staging, flight.copies,
                                           flight.stored)
        failure = stopped
        seen: set[str] = set()
        for member, stream in session.read_tar():
            name = member.name[2:] if member.name.startswith("./") else None
            if name is None or name not in wanted or name in seen:
                log.warning("%s: unexpected tar member %r ignored", self.label, member.name)
                continue
            seen.add(name)
            if stream is None:
                self.left(name, "it is no longer a regular file")
                continue
            if member.size != wanted[name]:
                self.left(name, f"its size changed ({wanted[name]} -> {member.size})")
                continue
            if failure is not None:
                continue  # drain: the stream must be read to its end
            try:
                outcome = self._stage(name, member, stream, staging, session)
            except EOFError as exc:
                # The stream broke mid-message (a cut connection): the
                # partial file was never linked; nothing is removed.
                raise session.broken(f"in the tar stream ({exc})") from None
            except ConnectError:
                raise
            except RoammailError as exc:
                failure = exc
                log.error("%s: %s", self.label, exc)
                continue
            if self.progress is not None:
                self.progress.add(member.size)
            if isinstance(outcome, _Copy):
                copies.append(outcome)
            elif isinstance(outcome, _Left):
                self.left(name, str(outcome))
            else:
                stored[name] = member.size  # discarded, or a dry run's
        for name in wanted:
            if name not in seen:
                self.left(name, "it vanished before the copy")
        if session.tar_status not in (0, None):
            log.debug("%s: remote tar exited %s", self.label, session.tar_status)
        flight.failure = failure

    def _stage(self, name: str, member, stream, staging: durable.Batch, session):
        """Stage one message where the rules say: a _Copy; True if it is
        discarded (or only shown, in a dry run); a _Left if it must stay
        on the server."""
        size = member.size
        # The message, or its first WHOLE_MESSAGE_BYTES (HEAD_LIMIT: all of
        # the header section that rules match), in one read; a cut stream
        # raises EOFError.
        first = stream.read(min(size, WHOLE_MESSAGE_BYTES))
        whole = first if len(first) == size else None
        action = INBOX_ACTION
        if self.source.rules:
            from .headers import header_lines, read_head

            action = choose(self.source.rules, header_lines(read_head(io.BytesIO(first))))
        if action.kind == "discard":
            if self.dry_run:
                print(f"would discard {name} ({size} bytes), rule at line {action.line}")
            else:
                log.info("%s: discarded %s (%d bytes), rule at line %d", self.label, name,
                         size, action.line, extra=PER_MESSAGE)
            self.result.discarded += 1
            return True
        if action.kind == "folder":
            dest = maildir.folder_to_path(self.source.local, action.target)
        else:
            dest = self.source.local
        if self.dry_run:
            extra = f" and a copy to {action.target}" if action.kind == "archive" else ""
            print(f"would move {name} ({size} bytes) to {dest}{extra}")
            self.result.moved += 1
            self.result.bytes += size
            return True
        self._make_maildir(dest)
        data = whole if whole is not None else _chunks(first, stream, session)
        mtime = float(member.mtime)
        archive = None
        if action.kind == "archive":
            self._make_maildir(action.target)
            if os.path.lexists(os.path.join(action.target, "new", name)):
                log.info("%s: %s is in the archive %s already", self.label, name,
                         action.target)
            else:
                # The archive copy first: the inbox copy is what marks it done.
                archive = maildir.stage(staging, action.target, data, name=name, mtime=mtime)
                if whole is None:
                    data = durable.reopen(archive)  # closed below
        try:
            inbox = maildir.stage(staging, dest, data, name=name, mtime=mtime)
        except BaseException:
            if archive is not None:
                durable.abandon(archive)
            raise
        finally:
            if hasattr(data, "close"):
                data.close()
        return _Copy(name, size, dest, action, inbox, archive)

    def _make_maildir(self, path: str) -> None:
        """maildir.make_maildir, once per directory and run."""
        if path not in self.made:
            maildir.make_maildir(path)
            self.made.add(path)


# ------------------------------------------------------------------ wiring

PER_MESSAGE = {"per_message": True}  # `extra` of the log line of each message moved
# Runs of at least this many messages show a progress line on a terminal.
PROGRESS_MESSAGES = 100
PROGRESS_SECONDS = 0.2  # between redraws


class TerminalLog(logging.StreamHandler):
    """Log lines on a terminal, above a progress line redrawn in place.

    While a progress line is up (`show`), the per-message lines (logged
    with extra=PER_MESSAGE) are left to syslog unless `verbose`."""

    def __init__(self, stream, verbose: bool) -> None:
        super().__init__(stream)
        self.verbose = verbose
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        if self.line and not self.verbose and getattr(record, "per_message", False):
            return
        if self.line:
            self.stream.write("\r\x1b[K")
        super().emit(record)
        if self.line:
            self.stream.write(self.line)
            self.flush()

    def show(self, text: str) -> None:
        """Put up, or redraw, the progress line."""
        with self.lock:  # type: ignore[union-attr]
            self.line = text
            self.stream.write("\r\x1b[K" + text)
            self.flush()

    def done(self) -> None:
        """Take the progress line down."""
        with self.lock:  # type: ignore[union-attr]
            if self.line:
                self.stream.write("\r\x1b[K")
                self.flush()
            self.line = ""


def human_bytes(count: int) -> str:
    """"512 bytes", "4.1 KB", "46.1 MB", "2.3 GB" (powers of 1000)."""
    if count < 1000:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KB", "MB"):
        value /= 1000
        if value < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} GB"


class Progress:
    """Messages copied so far, on the terminal's progress line."""

    def __init__(self, terminal: TerminalLog, label: str, total: int) -> None:
        self.terminal = terminal
        self.label = label
        self.total = total
        self.count = 0
        self.bytes = 0
        self.started = time.monotonic()
        self.shown = 0.0

    def add(self, size: int) -> None:
        self.count += 1
        self.bytes += size
        now = time.monotonic()
        if now - self.shown >= PROGRESS_SECONDS or self.count == self.total:
            self.shown = now
            self.terminal.show(f"{TOOL}: {self.label}: {self.count}/{self.total} messages, "
                               f"{human_bytes(self.bytes)}, {now - self.started:.1f} s")

    def end(self) -> None:
        self.terminal.done()


def setup_logging(verbose: bool, quiet: bool) -> Optional[TerminalLog]:
    """syslog, and stderr as the options and a terminal say; the
    TerminalLog for a progress line, if stderr is one and not --quiet."""
    from . import log as roamlog

    logger = roamlog.setup(TOOL, stderr=False, verbose=verbose)
    to_syslog = any(not isinstance(h, logging.NullHandler) for h in logger.handlers)
    on_terminal = sys.stderr is not None and sys.stderr.isatty()
    handler: logging.StreamHandler = (TerminalLog(sys.stderr, verbose) if on_terminal
                                      else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(f"{TOOL}: %(message)s"))
    if quiet:
        handler.setLevel(logging.ERROR)
    elif verbose:
        handler.setLevel(logging.DEBUG)
    elif on_terminal:
        handler.setLevel(logging.INFO)
    else:
        handler.setLevel(logging.WARNING)  # cron: quiet unless something is wrong
    handler._roammail_handler = True  # type: ignore[attr-defined]  # replaced by setup()
    logger.addHandler(handler)
    # Lines nobody would see are not even made (a line per message moved).
    if verbose:
        logger.setLevel(logging.DEBUG)
    else:
        logger.setLevel(logging.INFO if to_syslog else max(logging.INFO, handler.level))
    return handler if on_terminal and not quiet else None  # type: ignore[return-value]


def sources_from_args(args: dict) -> list[Source]:
    operands = args["SOURCE"] or []
    if args.get("HOST:REMOTE_MAILDIR"):
        operands = [args["HOST:REMOTE_MAILDIR"], args["LOCAL_MAILDIR"]]
    if any(":" in op for op in operands):
        if len(operands) != 2 or ":" not in operands[0] or args["--config"] is not None:
            raise UsageError("the one-shot form is HOST:REMOTE_MAILDIR LOCAL_MAILDIR, "
                             "without -c; see --help")
        host, remote = operands[0].split(":", 1)
        if not host or not remote or host.startswith("-"):
            raise UsageError(f"bad HOST:REMOTE_MAILDIR '{operands[0]}'")
        return [Source(f"{host}:{remote}", host, remote, os.path.abspath(
            locations.expand_home(operands[1])))]
    path = args["--config"]
    if path is None:
        path = default_config()
    sources = parse_config(read_config_file(path), path)
    if operands:
        known = {s.name: s for s in sources}
        for op in operands:
            if op not in known:
                raise ConfigError(path, 0, f"no source '{op}'")
        sources = [known[op] for op in operands]
    return sources


def run_one(source: Source, args: dict, batch: int = BATCH_MESSAGES,
            terminal: Optional[TerminalLog] = None) -> int:
    label = source.name if source.path else f"{source.host}:{source.remote}"
    endpoint = label
    hook_base = args["--hooks"] or hookdirs.default_base()
    dry_run = bool(args["--dry-run"])
    started = time.monotonic()
    try:
        lock_fd = lock_source(source_key(source))
    except _Busy:
        log.error("%s: another syncmail is moving this source's mail", label)
        return EXIT_TEMPFAIL
    try:
        hook_log = os.path.join(state_dir(), source_key(source) + ".hooks.log")
        env = {"ROAMMAIL_HOOK_LOG": hook_log, "ROAMMAIL_SSH_HOST": source.host}
        if not dry_run:
            for res in hookdirs.run_hooks(hook_base, "pre", "pull", endpoint, 0,
                                          log_path=hook_log, extra_env=env):
                if not res.ok:
                    log.error("%s: pre-pull hook %s failed (%s): not moving mail", label,
                              res.path, res.status)
                    _post(hook_base, endpoint, EXIT_LEFT, hook_log, env, label)
                    return EXIT_LEFT
        status = _move(source, dry_run, label, started, batch, terminal)
        if not dry_run:
            _post(hook_base, endpoint, status, hook_log, env, label)
        return status
    finally:
        os.close(lock_fd)


def _post(base: str, endpoint: str, status: int, hook_log: str, env: dict, label: str) -> None:
    for res in hookdirs.run_hooks(base, "post", "pull", endpoint, status,
                                  log_path=hook_log, extra_env=env):
        if not res.ok:
            log.error("%s: post-pull hook %s failed (%s)", label, res.path, res.status)


def _move(source: Source, dry_run: bool, label: str, started: float, batch: int,
          terminal: Optional[TerminalLog]) -> int:
    from .remote import ConnectError, RemoteError

    mover = Mover(source, dry_run, batch, terminal)
    status = EXIT_OK
    try:
        mover.run()
    except ConnectError as exc:
        log.error("%s", exc)
        status = EXIT_TEMPFAIL
    except RemoteError as exc:
        where = f" ({source.path}:{source.remote_line})" if source.path else ""
        log.error("%s%s", exc, where)
        status = EXIT_LEFT
    except RoammailError as exc:
        log.error("%s: %s", label, exc)
        status = EXIT_LEFT
    result = mover.result
    if result.left and status == EXIT_OK:
        status = EXIT_LEFT
    seconds = time.monotonic() - started
    verb = "would move" if dry_run else "moved"
    summary = (f"{label}: {verb} {result.moved} messages ({result.bytes} bytes), "
               f"discarded {result.discarded}, left {len(result.left)} on the server, "
               f"in {seconds:.1f} s")
    if status == EXIT_OK:
        log.info("%s", summary)
    else:
        log.warning("%s", summary)
    return status


def run(argv: list[str] | None) -> int:
    args = docopt_args(__doc__, argv)
    terminal = setup_logging(bool(args["--verbose"]), bool(args["--quiet"]))
    sources = sources_from_args(args)
    batch = batch_messages()
    status = EXIT_OK
    for source in sources:
        status = max(status, run_one(source, args, batch, terminal))
    return status


def main(argv: list[str] | None = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
