"""syncmail/move.py: moving one source's new mail, over a ServerSession.

Owns what syncmail does with a listing once it has one: the pipeline of
batches (asked for ahead of their answers), staging each message where
the rules send it, making a batch durable and naming its messages (in a
thread, while the next batch is read), the journal of messages in both
places, and asking the server to remove exactly what is safely here.
The decisions themselves are plan.py's pure functions; the wire is
remote.py's.  It never removes anything on the server that is not
durable here under its name, and never overwrites a local message.

syncmail imports it once ssh has started, so that its imports (logging,
threading, durable...) overlap with the login.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import deque

from ..core import durable, maildir
from ..core.durable import fsync_dir
from ..core.errors import IOFailure, RoammailError
from .journal import Journal
from .log import PER_MESSAGE, PROGRESS_MESSAGES, Progress
from .plan import (
    INBOX_ACTION,
    LocalCopy,
    batch_length,
    batch_limit,
    choose,
    plan_listing,
    removable,
)
from .remote import ConnectError

TYPE_CHECKING = False  # typing costs ~15 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Iterator, Optional

    from .log import TerminalLog
    from .plan import Action
    from .remote import Listing
    from .session import ServerSession
    from .tarstream import Body, Member

# One tar stream carries at most the caller's batch of messages and about
# this many bytes: a round trip per batch, and the journal is written per
# batch.
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

log = logging.getLogger("roammail.syncmail.cli")


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


def destination_dirs(source) -> list[str]:
    """The maildirs a source's messages may go to: its own and its rules' folders."""
    dirs = [source.local]
    for rule in source.rules:
        if rule.action.kind == "folder":
            dirs.append(maildir.folder_to_path(source.local, rule.action.target))
    return dirs


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

class Result:
    """What a run did: messages listed, moved (and their bytes), discarded,
    left on the server (their names), refused, removed on the server for
    an interrupted run (recovered); the local failure that stopped it."""

    __slots__ = ("listed", "moved", "bytes", "discarded", "left", "refused", "recovered",
                 "failure")

    def __init__(self) -> None:
        self.listed: Optional[int] = None  # messages in the server's new/, once listed
        self.moved = 0
        self.bytes = 0
        self.discarded = 0
        self.left: list = []  # names left on the server
        self.refused = 0
        self.recovered = 0
        self.failure: Optional[RoammailError] = None


def _chunks(first: bytes, stream: Body, session: ServerSession) -> Iterator[bytes]:
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


class _Copy:
    """A message of a batch in flight, staged in the maildirs it goes to
    (durable.Staged: unnamed, or under a temporary name), not yet under its
    own."""

    __slots__ = ("name", "size", "dest", "action", "inbox", "archive", "done")

    def __init__(self, name: str, size: int, dest: str, action: Action, inbox: durable.Staged,
                 archive: Optional[durable.Staged] = None) -> None:
        self.name = name
        self.size = size
        self.dest = dest
        self.action = action
        self.inbox = inbox
        self.archive = archive
        self.done = False  # published, or its temporary files removed

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


class _Flight:
    """A batch on its way from the server's new/ to here: staged here;
    then, in a thread while the next batch is read, made durable, written
    into the journal and named here; then checked and removed on the
    server."""

    def __init__(self, wanted: dict, stored: Optional[dict] = None, answers: int = 0) -> None:
        self.wanted = wanted                 # name -> size when listed
        self.staging = durable.Batch()
        self.copies: list = []               # _Copy, staged
        self.stored = {} if stored is None else stored  # name -> size: safely here, or discarded
        self.answers = answers               # size answers asked for
        self.names: list = []                # asked to be removed on the server
        self.failure: Optional[RoammailError] = None       # the first local one
        self.outcomes: list = []             # of the copies named: path or _Left
        self.naming_error: Optional[RoammailError] = None  # what stopped the naming
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def start(self, journal: Journal, label: str) -> None:
        """Land the staged copies, in a thread: make them durable, save
        the journal with this batch in it (before any of its messages has
        its name), name each copy, fsync the directories."""
        if not self.copies:
            return
        journal.add(self.wanted)
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
    them (the first and last batches are smaller: batch_limit); meanwhile
    a thread makes batch k-1 durable and names its messages (_Flight), and
    the server removes earlier batches with rm in the background.  Where
    the listing gave the messages' sizes (GNU find on the server), the
    first two tar streams are asked for at once; else the sizes of the
    next messages to batch are asked ahead too.  Each answer, when it
    comes:

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

    def __init__(self, mover: Mover, session: ServerSession, fetch: list, by_name: dict,
                 journal: Journal, sizes: dict) -> None:
        self.mover, self.session, self.by_name, self.journal = mover, session, by_name, journal
        self.batch = mover.batch
        # (entry, size), not in a batch yet; then the listed entries
        # whose sizes are not known yet, not asked yet.
        self.sized: deque = deque((e, sizes[e.name]) for e in fetch if e.name in sizes)
        self.todo = deque(e for e in fetch if e.name not in sizes)
        self.replies: deque = deque()  # (kind, payload) of each answer to come, in order
        self.failure: Optional[RoammailError] = None  # the first local one
        self.landing: Optional[_Flight] = None  # its thread runs
        self.rm_running: deque = deque()  # _Flight whose rm runs, not asked how it ended
        self.sizes_asked = 0  # messages whose sizes are asked for, not read yet
        self.tars_asked = 0  # tar streams asked for, not read yet
        self.tars_started = 0  # tar streams asked for in all

    def run(self) -> None:
        self.ask_ahead()
        while self.replies or self.landing is not None or self.rm_running:
            if not self.replies:  # the end: land the last batch, finish the last rm's
                if not self.land_and_check(None):
                    self.ask_removed(0)
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
                self.ask_removed(RM_RUNNING)
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

    def limit(self) -> int:
        """The most messages the next batch may hold (batch_limit)."""
        left = len(self.sized) + len(self.todo) + self.sizes_asked
        return batch_limit(self.batch, self.tars_started, left)

    def ask_tar(self) -> None:
        count = batch_length((size for _, size in self.sized), self.limit(), BATCH_BYTES)
        batch = [self.sized.popleft() for _ in range(count)]
        self.session.send_tar([e.index for e, _ in batch])
        self.replies.append(("tar", batch))
        self.tars_asked += 1
        self.tars_started += 1

    def whole_batch_sized(self) -> bool:
        """`sized` holds a whole batch, or all there will be."""
        if not self.sized:
            return False
        limit = self.limit()
        if not (self.todo or self.sizes_asked) or len(self.sized) >= limit:
            return True
        sizes = (size for _, size in self.sized)
        return batch_length(sizes, limit, BATCH_BYTES) < len(self.sized)

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

    def land_and_check(self, staged: Optional[_Flight]) -> bool:
        """Wait for the batch landing now and ask for the sizes of what it
        stored; start landing `staged`.  True if a check was asked for."""
        landed, self.landing = self.landing, None
        checking = False
        if landed is not None:
            self.failure = self.mover.publish_flight(landed) or self.failure
            if landed.stored and not self.mover.dry_run:
                landed.answers = self.session.send_sizes(
                    [self.by_name[n].index for n in landed.stored])
                self.replies.append(("check", landed))
                checking = True
        if staged is not None:
            staged.start(self.journal, self.mover.label)
            self.landing = staged
        return checking

    def ask_removed(self, keep: int) -> None:
        """Ask how the oldest rm's ended, all but the `keep` newest.

        The server waits for an rm before it answers, and answers in
        order: whatever is asked after waits too.  So an rm is asked about
        RM_RUNNING rounds after it started, by when it is done, and after
        the next tar stream has been asked for; at the end, only once the
        last removal has started."""
        while len(self.rm_running) > keep:
            self.session.send_removed()
            self.replies.append(("removed", self.rm_running.popleft()))


class Mover:
    """Moves one source's new mail; `run()` returns a Result."""

    def __init__(self, source, label: str, journal_path: str, dry_run: bool, batch: int,
                 terminal: Optional[TerminalLog] = None) -> None:
        self.source = source  # syncmail.Source
        self.label = label
        self.journal_path = journal_path
        self.dry_run = dry_run
        self.batch = batch  # messages per batch
        self.terminal = terminal  # for a progress line
        self.progress: Optional[Progress] = None
        self.result = Result()
        self.made: set[str] = set()  # maildirs made (or found) in this run

    def left(self, name: str, why: str) -> None:
        self.result.left.append(name)
        log.warning("%s: %s left on the server: %s", self.label, name, why)

    def stopped(self, name: str) -> None:
        """`name` stays on the server because a local failure stopped the
        run: the run's summary says how many (a full disk is one line, not
        one per message), -v names each."""
        self.result.left.append(name)
        log.debug("%s: %s left on the server: not stored here", self.label, name,
                  extra=PER_MESSAGE)

    def run(self, session: ServerSession) -> Result:
        """Move the mail over `session` (session.ServerSession: a
        RemoteSession just started, ssh perhaps still logging in), and
        close it; abort it on any failure."""
        source = self.source
        try:
            # While ssh connects: this machine's side.
            # Unnamed staged files hold a descriptor each until they are named.
            allow_open_files(4 * self.batch + 256)
            if not self.dry_run:
                maildir.make_maildir(source.local)
            journal = Journal(self.journal_path)
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

    def _run(self, session: ServerSession, listing: Listing, index: LocalIndex,
             journal: Journal) -> None:
        entries: list = listing.entries
        self.result.listed = len(entries)
        listed = {e.name for e in entries}
        if any(name not in listed for name in journal.entries) and not self.dry_run:
            journal.keep_only(listed)
            journal.save()
        plan = plan_listing(entries, index.lookup, journal.entries)
        for entry, reason in plan.refused:
            self.result.refused += 1
            self.left(ascii(entry.name)[1:-1], f"refused: {reason}")
        for entry, path in plan.collisions:
            self.left(entry.name, f"a message of that name is here already ({path})")
        by_name = {e.name: e for e in entries}
        # Messages an interrupted run stored: only remove them on the server,
        # once their names here are durable (that run may have been killed
        # between naming them and fsyncing their directories).
        if plan.confirm and not self.dry_run:
            confirmed = {e.name: size for e, size in plan.confirm}
            for directory in sorted(self._homes_of(confirmed, index)):
                fsync_dir(directory)
            flight = _Flight(confirmed, stored=confirmed, answers=session.send_sizes(
                [by_name[n].index for n in confirmed]))
            self.ask_removal(session, flight, by_name)
            if flight.names:
                session.send_removed()
                self.removal_done(session, flight, by_name, journal)
            journal.save()
            for name in flight.names:
                if name not in journal.entries:
                    self.result.recovered += 1
                    log.info("%s: %s was already here (an interrupted run): removed on the "
                             "server", self.label, name)
        if self.terminal is not None and len(plan.fetch) >= PROGRESS_MESSAGES:
            self.progress = Progress(self.terminal, self.label, len(plan.fetch))
        try:
            self._move(session, plan.fetch, by_name, journal, listing.sizes)
        finally:
            if self.progress is not None:
                self.progress.end()

    def _homes_of(self, names, index: LocalIndex) -> set[str]:
        """The directories holding the local copies of `names`, and every
        archive's new/ (where a copy of the same name may be too)."""
        homes = set()
        for name in names:
            here = index.lookup(name)
            if here is not None:
                homes.add(os.path.dirname(here.path))
        for rule in self.source.rules:
            if rule.action.kind == "archive" and rule.action.target:
                new = os.path.join(rule.action.target, "new")
                if os.path.isdir(new):
                    homes.add(new)
        return homes

    def _move(self, session: ServerSession, fetch: list, by_name: dict, journal: Journal,
              sizes: dict) -> None:
        """Move the messages of `fetch` (listed entries; `sizes`, the
        sizes the listing gave): see _Pipeline."""
        pipeline = _Pipeline(self, session, fetch, by_name, journal, sizes)
        try:
            pipeline.run()
        finally:
            if pipeline.landing is not None:
                pipeline.landing.abandon()
        for entry in pipeline.todo:
            self.stopped(entry.name)
        for entry, _ in pipeline.sized:
            self.stopped(entry.name)
        self.result.failure = pipeline.failure
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
                    log.debug("%s: %s", self.label, exc)
                    flight.failure = flight.failure or exc
                else:
                    self._account(flight)
        finally:
            flight.abandon()  # the copies not named
        if flight.failure is not None:
            for name in flight.wanted:
                if name not in flight.stored and name not in self.result.left:
                    self.stopped(name)
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
            log.debug("%s: %s", self.label, flight.naming_error)
            flight.failure = flight.failure or flight.naming_error

    def ask_removal(self, session: ServerSession, flight: _Flight, by_name: dict) -> None:
        """Read the sizes asked for `flight`; ask to remove the files that
        are still the regular files of the size stored here."""
        flight.names = removable(flight.stored, session.read_sizes(flight.answers))
        chosen = set(flight.names)
        for name in flight.stored:
            if name not in chosen:
                self.left(name, "it changed on the server since it was listed")
        if flight.names:
            session.send_remove([by_name[n].index for n in flight.names])

    def removal_done(self, session: ServerSession, flight: _Flight, by_name: dict,
                      journal: Journal) -> None:
        """Read what a removal left (send_removed() was sent); drop the
        removed from the journal (saved with the next batch, or at the
        end)."""
        still = session.read_removed()
        for name in flight.names:
            if by_name[name].index in still:
                self.left(name, "it could not be removed on the server")
            else:
                journal.drop(name)

    def fetch_batch(self, session: ServerSession, flight: _Flight,
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
                log.debug("%s: %s", self.label, exc)
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

    def _stage(self, name: str, member: Member, stream: Body, staging: durable.Batch,
               session: ServerSession) -> _Copy | _Left | bool:
        """Stage one message where the rules say: a _Copy; True if it is
        discarded (or only shown, in a dry run); a _Left if it must stay
        on the server.  `name` is a listed one that plan_listing let
        through: its check (maildir.check_message_name) is not repeated."""
        size = member.size
        # The message, or its first WHOLE_MESSAGE_BYTES (HEAD_LIMIT: all of
        # the header section that rules match), in one read; a cut stream
        # raises EOFError.
        first = stream.read(min(size, WHOLE_MESSAGE_BYTES))
        whole = first if len(first) == size else None
        action = INBOX_ACTION
        if self.source.rules:
            from ..core.headers import header_lines, read_head

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
            assert action.target is not None  # a folder rule names its folder (cli._rule)
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
            assert action.target is not None  # an archive rule names its maildir (cli._rule)
            self._make_maildir(action.target)
            if os.path.lexists(os.path.join(action.target, "new", name)):
                log.info("%s: %s is in the archive %s already", self.label, name,
                         action.target)
            else:
                # The archive copy first: the inbox copy is what marks it done.
                archive = maildir.stage(staging, action.target, data, name=name, mtime=mtime,
                                        checked=True)
                if whole is None:
                    data = durable.reopen(archive)  # closed below
        try:
            inbox = maildir.stage(staging, dest, data, name=name, mtime=mtime, checked=True)
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


