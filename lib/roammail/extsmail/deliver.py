"""deliver.py: hands queued messages to their externals, one pass at a time.

`Deliverer.cycle` is one pass over spool_dir/msgs/: each message goes to
the group its headers select (externals(5)) and is tried through that
group's externals in order (`plan`); an external that exits 0 has the
message, which is then removed from the queue, and nothing else does.
Up to `jobs` messages are handed over at once, the first of a pass alone;
the messages of an ssh external share one connection per pass (sshshare).

Contracts:
- A message is removed only after an external exited 0 with it, by the
  holder of its lock (spool.remove); a corrupt or locked message is left
  where it is.
- An external that fails is not tried again in the same pass; one with a
  `timeout` holds back the ones after it in daemon mode (`holds_back`).
- The last delivery error of each message is kept in
  spool_dir/errors/NAME for --list (`record_error`, `read_error`); those
  notes are best effort and never fail a delivery.
- Each message's state (status.py) is written before an external gets it
  (sending) and after (sent, retrying, uncertain, failed); a state that
  cannot be written is logged, never a failed delivery.
- A try is uncertain when the external read the whole message and was then
  killed, stalled, stopped or lost its link (ssh's exit status 255): it
  may have been sent.  When that external deduplicates (`dedup = "yes"`,
  the dedup-sendmail wrapper) no other is tried for the message in that
  pass: the next pass sends it through the same one again, harmlessly.
  Otherwise the message falls back and is retried as after any failure,
  and its sent state says "may be a duplicate".
- A failure is permanent when the external exits with one of its
  `permanent` statuses (externals.DEFAULT_PERMANENT unless the externals
  file says), and only then: a signal, a stall or any other status is
  temporary.  A permanent failure is about the message, so no further
  external is tried: the message is reported into the user's maildir
  (report.py) and set aside in spool_dir/failed/ (spool.set_aside), never
  retried.  So is a message that failed temporarily once it has been
  queued for max_age.  With `permanent_failures = "no"` every failure is
  temporary and nothing is set aside for its age either (the C extsmaild's
  behaviour).

What a pass with an empty queue does not need (headers and their regex
engine, child, random, threading, sshshare) is imported late, when a
message is there: cron runs extsmaild mostly over an empty queue.
"""

from __future__ import annotations

import _thread
import os
import time

from ..core.errors import DataError, RoammailError
from . import spool, status

TYPE_CHECKING = False  # typing is not imported at run time: an empty-queue run avoids it
if TYPE_CHECKING:
    from typing import Callable

    from .settings import Settings

# An external that neither reads its input nor writes anything for this
# long is killed (the original's rule); --stall-timeout changes it.
STALL_TIMEOUT = 60.0
# How long a killed external has between SIGTERM and SIGKILL.
KILL_GRACE = 5.0
# The longest piece of an external's stderr in one log line: a longer line
# is logged in pieces, as some syslog daemons cut a line at 1 KiB.
STDERR_PIECE = 800

ERRORS_DIR = "errors"  # spool_dir/errors/NAME: the last delivery error
# A daemon prunes the sent states (keep_sent) at most this often (seconds).
PRUNE_INTERVAL = 3600.0
SSH_CONNECTION_LOST = 255  # ssh's exit status when the connection failed or broke


def holds_back(external, last_success: dict[str, float], started: float, now: float,
               daemon: bool) -> bool:
    """True when a failed `external` must not yet give way to the next one.

    An external with a `timeout` is, in daemon mode, retried (not fallen
    back from) until it has gone that long without a success; batch mode
    ignores timeouts, as the original does.
    """
    if not daemon or external.timeout is None:
        return False
    return now - last_success.get(external.name, started) < external.timeout


def plan(externals, failed: set[str], last_success: dict[str, float], started: float,
         now: float, daemon: bool) -> list:
    """The externals to try for one message, in order, this cycle.

    An external that failed earlier in the cycle is skipped; if it holds
    back (see holds_back), nothing after it is tried either.  After a try
    fails, the caller stops when that external holds back.
    """
    chosen = []
    for external in externals:
        if external.name in failed:
            if holds_back(external, last_success, started, now, daemon):
                break
            continue
        chosen.append(external)
    return chosen


class CycleResult:
    __slots__ = ("sent", "failed", "remaining", "sent_names", "oldest_failed", "set_aside")

    def __init__(self) -> None:
        self.sent = 0
        self.set_aside = 0   # messages moved to failed/: reported, not retried
        self.failed = 0      # delivery failures: backoff and notification
        self.remaining = 0   # messages still queued afterwards (any reason)
        self.sent_names: list[str] = []
        self.oldest_failed: float | None = None  # queue time of the oldest failed message


class Deliverer:
    """Delivers queued messages; keeps the state that spans cycles."""

    def __init__(self, settings: Settings, log, *, daemon: bool,
                 stall_timeout: float = STALL_TIMEOUT, jobs: int = 1) -> None:
        self.settings = settings
        self.jobs = jobs
        self.log = log
        self.daemon = daemon
        self.stall_timeout = stall_timeout
        self.started = time.time()
        self.last_success: dict[str, float] = {}
        self.last_failure: dict[str, tuple[float, str]] = {}  # name -> (time, why)
        self.network: str | None = None  # "online"/"offline" when a daemon follows events
        self.stopping = False
        self.reported_corrupt: dict[str, float] = {}
        # Called once, before the first delivery (batch mode installs its
        # signal handlers there: `signal` is not cheap to import).
        self.before_delivery: Callable[[], None] | None = None
        self._sharing = None  # sshshare.SshSharing, made for the first delivery
        self._log_lock = _thread.allocate_lock()
        self._pruned = 0.0  # when the sent states were last pruned

    # -- one cycle -----------------------------------------------------------

    def cycle(self, random_start: bool = False) -> CycleResult:
        result = CycleResult()
        for path in spool.remove_stale_temporaries(self.settings.spool_dir, time.time()):
            self.log.info("removed %s, left over by an interrupted extsmail", path)
        paths = spool.list_messages(self.settings.spool_dir)
        self.prune_states(paths)
        if random_start and paths:
            import random

            k = random.randrange(len(paths))
            paths = paths[k:] + paths[:k]
        failed_externals: set[str] = set()
        if paths:
            if self.before_delivery is not None:
                self.before_delivery()
                self.before_delivery = None
            self.settings.compile()  # here, not in a delivering thread
        try:
            if self.jobs > 1 and len(paths) > 1:
                self._deliver_concurrently(paths, failed_externals, result)
            else:
                for path in paths:
                    self._tally(result, path, self._deliver_one(path, failed_externals))
        finally:
            if self._sharing is not None:
                self._sharing.close()  # a shared ssh connection lives for one pass
        if result.sent:
            spool.sync_removals(self.settings.spool_dir)
        # Messages queued while we worked count as remaining too.
        left = len(spool.list_messages(self.settings.spool_dir))
        result.remaining = max(result.remaining, left)
        if paths or left:
            # A pass over an empty queue (cron's extsmaild, every few
            # minutes) leaves the record alone: roammail-status counts the
            # queue itself, and writing would cost that run a JSON module.
            from .health import record_pass

            record_pass(self)
        return result

    def prune_states(self, paths: list[str]) -> None:
        """Remove the sent states older than keep_sent (in a daemon, at most
        every PRUNE_INTERVAL) and the states of deleted messages."""
        now = time.time()
        if self.daemon and now - self._pruned < PRUNE_INTERVAL:
            return
        self._pruned = now
        spool_dir = self.settings.spool_dir
        status.prune(spool_dir, self.settings.conf.keep_sent, now,
                     {os.path.basename(p) for p in paths},
                     {os.path.basename(p) for p in spool.list_failed(spool_dir)})

    def save_state(self, record: dict) -> None:
        """Write a message's state; a failure is logged, nothing more."""
        try:
            status.write(self.settings.spool_dir, record)
        except RoammailError as exc:
            self.log.error("%s: cannot record its delivery state: %s", record["id"], exc)

    def sharing(self):
        """The ssh connection sharing of this pass (see sshshare.py)."""
        if self._sharing is None:
            from .sshshare import SshSharing

            self._sharing = SshSharing()
        return self._sharing

    def _deliver_one(self, path: str, failed_externals: set[str]) -> str:
        return "kept" if self.stopping else self.deliver_path(path, failed_externals)

    @staticmethod
    def _tally(result: CycleResult, path: str, outcome: str) -> None:
        if outcome == "sent":
            result.sent += 1
            result.sent_names.append(os.path.basename(path))
        elif outcome == "failed":
            result.failed += 1
            result.remaining += 1
            try:
                queued = os.stat(path).st_mtime
            except OSError:
                queued = time.time()
            if result.oldest_failed is None or queued < result.oldest_failed:
                result.oldest_failed = queued
        elif outcome == "kept":
            result.remaining += 1
        elif outcome == "set aside":
            result.set_aside += 1

    def _deliver_concurrently(self, paths: list[str], failed_externals: set[str],
                              result: CycleResult) -> None:
        """Up to `jobs` deliveries at once, started in queue order.  The first
        message goes alone: through ssh it opens the connection the others
        share, and over a link that is down it fails once, not `jobs` times."""
        import threading

        self._tally(result, paths[0], self._deliver_one(paths[0], failed_externals))
        lock = threading.Lock()
        pending = iter(paths[1:])
        errors: list[BaseException] = []

        def work() -> None:
            try:
                while True:
                    with lock:
                        path = next(pending, None)
                    if path is None or errors:
                        return
                    outcome = self._deliver_one(path, failed_externals)
                    with lock:
                        self._tally(result, path, outcome)
            except BaseException as exc:  # noqa: B036 - raised again in the caller
                errors.append(exc)

        workers = [threading.Thread(target=work, name=f"deliver-{n}", daemon=True)
                   for n in range(min(self.jobs, len(paths) - 1))]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for path in pending:  # left by a worker that failed
            self._tally(result, path, "kept")
        if errors:
            raise errors[0]

    def deliver_path(self, path: str, failed_externals: set[str]) -> str:
        """Deliver one queued file: "sent", "failed", "set aside", "kept" or
        "gone"."""
        name = os.path.basename(path)
        try:
            message = spool.open_message(path)
        except DataError as exc:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                return "gone"
            if self.reported_corrupt.get(path) != mtime:
                self.log.error("%s; skipped, left in the queue", exc)
                self.reported_corrupt[path] = mtime
            return "kept"
        if message is None:
            return "kept" if os.path.exists(path) else "gone"
        with message:
            return self.deliver(message, failed_externals, name)

    def deliver(self, message: spool.QueuedMessage, failed_externals: set[str],
                name: str) -> str:
        """Try the externals for `message`: "sent", "failed", "set aside" or
        "kept"."""
        outcome, error = self.attempt(message, failed_externals, name)
        if outcome != "failed" or not self.settings.conf.permanent_failures:
            return outcome
        max_age = self.settings.conf.max_age
        if max_age and time.time() - message.mtime >= max_age:
            from ..core.times import render_duration

            return self.set_aside(message, name, f"still not sent after "
                                  f"{render_duration(max_age)} (max_age); last error: "
                                  + error.split("\n", 1)[0], error.partition("\n")[2])
        return outcome

    def attempt(self, message: spool.QueuedMessage, failed_externals: set[str],
                name: str) -> tuple[str, str]:
        """deliver() without the queue lifetime: the outcome, and for a
        failure the error noted for --list."""
        from ..core.headers import header_lines, read_head, select

        path = message.path

        lines = header_lines(read_head(message.stream()))
        message_id = status.message_id_of(lines)
        record = status.read(self.settings.spool_dir, name) \
            or status.new_record(name, message_id, message.mtime)
        record["message_id"] = record["message_id"] or message_id
        if record["state"] == "sending" and record["external"]:
            # Left by an extsmaild that was killed while the external had it.
            record["uncertain_via"] = sorted({*record["uncertain_via"], record["external"]})
        chosen = select(self.settings.groups, lines)
        if chosen is None:
            error = "no group of the externals file matches its headers"
            self.record_error(name, error)
            record.update(state="retrying", error=error, next_try=None)
            self.save_state(record)
            self.log.error("%s: no group of %s matches its headers; left in the queue",
                           name, self.settings.externals_path)
            return "failed", error
        now = time.time()
        tried = False
        error = ""
        for external in plan(chosen.group.externals, failed_externals, self.last_success,
                             self.started, now, self.daemon):
            tried = True
            from ..core import child

            argv = self.sharing().argv(external.name, list(external.sendmail_argv)) \
                + [os.fsdecode(a) for a in message.args]
            before = record["state"]
            record.update(state="sending", external=external.name,
                          attempts=(record["attempts"] or 0) + 1, next_try=None)
            self.save_state(record)
            res = child.run_child(argv, message.stream(), stall_timeout=self.stall_timeout,
                                  grace=KILL_GRACE, should_abort=lambda: self.stopping)
            if res.ok:
                spool.remove(message)
                self.clear_error(name)
                self.last_success[external.name] = time.time()
                duplicate = any(via != external.name or not external.dedup
                                for via in record["uncertain_via"])
                lines_out = stderr_pieces(stderr_text(res))
                record.update(state="sent", sent_at=int(time.time()), error=None,
                              duplicate=duplicate,
                              output=lines_out[-1] if lines_out else None)
                self.save_state(record)
                self.log.info("%s: sent via %s (%d bytes)%s", name, external.name,
                              message.size - message.body_offset,
                              "; it may be a duplicate: an earlier try was uncertain"
                              if duplicate else "")
                return "sent", ""
            why = res.describe()
            if uncertain(res, external):
                record.update(state="uncertain", error=f"via {external.name}: {why}",
                              uncertain_via=sorted({*record["uncertain_via"], external.name}))
                self.save_state(record)
            if res.aborted:
                if record["state"] == "sending":
                    record["state"] = before
                    self.save_state(record)
                self.log.info("%s: delivery via %s stopped: extsmaild is exiting; "
                              "the message stays queued", name, external.name)
                return "kept", ""
            err = stderr_text(res)
            with self._log_lock:  # a failure's lines stay together
                for line in failure_lines(external.name, external.sendmail, path, res):
                    self.log.error("%s", line)
                if self.is_permanent(external, res):
                    self.log.error("%s: external %s failed permanently: %s", name,
                                   external.name, why)
                else:
                    self.log.error("%s: external %s failed: %s", name, external.name, why)
            if self.is_permanent(external, res):
                # About the message, not the external: no other external is
                # tried, and the external stays usable for other messages.
                return self.set_aside(message, name, f"via {external.name}: {why} "
                                      "(a permanent failure)", err, record), ""
            self.last_failure[external.name] = (time.time(), why)
            error = f"via {external.name}: {why}" + (f"\n{err}" if err else "")
            self.record_error(name, error)
            failed_externals.add(external.name)
            if record["state"] == "uncertain":
                self.log.error("%s: external %s read the whole message before it failed: "
                               "it may have been sent%s", name, external.name,
                               "; tried again through it in the next pass" if external.dedup
                               else "; sending it again may make a duplicate")
                if external.dedup:  # only a try through it again is safe
                    return "failed", error
            else:
                record.update(state="retrying", error=error)
                self.save_state(record)
            if holds_back(external, self.last_success, self.started, time.time(),
                          self.daemon):
                break
        if not tried:  # still one line, and a --list note, for each message not sent
            names = ", ".join(e.name for e in chosen.group.externals if e.name in failed_externals)
            self.log.error("%s: not tried: %s failed earlier in this cycle; left in the queue",
                           name, names)
            error = f"not tried: {names} failed earlier in this cycle"
            prior = self.read_error(name)
            self.record_error(name, error)
            if record["state"] != "uncertain":
                record.update(state="retrying", error=prior.split(" ", 2)[-1] if prior else error)
                self.save_state(record)
            if prior:  # the last real error, for a report on the queue lifetime
                error = prior.split(" ", 2)[-1]
        return "failed", error

    def is_permanent(self, external, res) -> bool:
        """Whether a failed try says the message can never be sent."""
        return (self.settings.conf.permanent_failures and res.signal is None
                and res.error is None and not res.stalled
                and res.returncode in external.permanent)

    def set_aside(self, message: spool.QueuedMessage, name: str, reason: str,
                  detail: str, record: dict | None = None) -> str:
        """Report a message that will not be sent and move it to failed/;
        "set aside", or "kept" when it could not be moved (it is then
        tried again, and reported again)."""
        from .report import report_failure

        report_failure(self.settings, self.log, message, name, reason, detail)
        self.record_error(name, reason + (f"\n{detail}" if detail else ""))
        try:
            where = spool.set_aside(message, self.settings.spool_dir)
        except RoammailError as exc:
            self.log.error("%s: cannot set it aside, left in the queue: %s", name, exc)
            return "kept"
        if record is None:
            record = status.read(self.settings.spool_dir, name) \
                or status.new_record(name, None, message.mtime)
        record.update(state="failed", error=reason, failed_path=where, next_try=None)
        self.save_state(record)
        self.log.error("%s: not sent, and not tried again: %s; moved to %s", name, reason,
                       where)
        return "set aside"

    # -- last-error notes, for --list ---------------------------------------

    def record_error(self, name: str, text: str) -> None:
        record_error(self.settings.spool_dir, name, text)

    def clear_error(self, name: str) -> None:
        clear_error(self.settings.spool_dir, name)

    def read_error(self, name: str) -> str | None:
        return read_error(self.settings.spool_dir, name)


def uncertain(res, external) -> bool:
    """Whether a failed try may have sent the message: the external read
    all of it, then did not say (killed, stalled, stopped, an I/O error,
    or ssh's lost connection) whether it took it."""
    if not res.stdin_complete or res.ok:
        return False
    if res.stalled or res.aborted or res.signal is not None or res.error is not None:
        return True
    from .sshshare import is_ssh

    return res.returncode == SSH_CONNECTION_LOST and is_ssh(list(external.sendmail_argv))


# -- failure log lines ---------------------------------------------------------


def stderr_text(res) -> str:
    """A child's whole stderr as text: its lines, without trailing blank ones,
    and a note of what did not fit in run_child's buffer."""
    text = res.stderr.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\r\n")
    lost = res.stderr_total - len(res.stderr)
    if lost > 0:
        text += f"\n({lost} more bytes of standard error not kept)"
    return text


def stderr_pieces(text: str) -> list[str]:
    """The lines of `text` for the log: blank lines dropped, a line longer
    than STDERR_PIECE cut into pieces of that length."""
    pieces = []
    for line in text.split("\n"):
        line = line.rstrip()
        for start in range(0, len(line), STDERR_PIECE):
            pieces.append(line[start:start + STDERR_PIECE])
    return pieces


def failure_lines(external: str, sendmail: str, path: str, res) -> list[str]:
    """The log lines of a failed try, in the C extsmaild's wording.

    The first line is the C extsmaild's line for such a failure:

        NAME: Received error N when executing 'SENDMAIL' on 'PATH': STDERR
        NAME: Received signal N when executing ...
        NAME: Timeout when executing ...
        NAME: Unable to read/write successfully when executing ...: REASON

    where STDERR is the first line of the external's standard error
    (": STDERR" is left out when it wrote nothing).  Each further line of
    its standard error follows as `NAME: stderr: LINE`; a line too long for
    syslog is logged in pieces (STDERR_PIECE), so nothing is lost.
    """
    pieces = stderr_pieces(stderr_text(res))
    reason = None
    if res.stalled:
        if res.stdin_complete and res.stderr_closed:
            phrase = "Timeout"  # done with its I/O, but it did not exit
        else:
            phrase, reason = "Unable to read/write successfully", "Timeout"
    elif res.error is not None:
        phrase, reason = "Unable to read/write successfully", res.error
    elif res.signal is not None:
        phrase = f"Received signal {res.signal}"
    elif res.returncode:
        phrase = f"Received error {res.returncode}"
    else:  # exit status 0 before reading the whole message
        phrase, reason = "Unable to read/write successfully", res.describe()
    first = f"{external}: {phrase} when executing '{sendmail}' on '{path}'"
    if reason is None and pieces:
        # The first piece of stderr ends the line, which is no longer than
        # a `stderr:` line; the rest of the piece goes on the next line.
        longest = len(f"{external}: stderr: ") + STDERR_PIECE
        room = max(80, longest - len(first) - 2)
        reason = pieces[0][:room]
        if len(pieces[0]) > room:
            pieces[0] = pieces[0][room:]
        else:
            pieces.pop(0)
    if reason is not None:
        first += f": {reason}"
    return [first] + [f"{external}: stderr: {piece}" for piece in pieces]


def _error_path(spool_dir: str, name: str) -> str:
    return os.path.join(spool_dir, ERRORS_DIR, name)


def record_error(spool_dir: str, name: str, text: str) -> None:
    """Note the last delivery error of a message (best effort)."""
    from ..core.durable import write_file_atomically

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        os.makedirs(os.path.join(spool_dir, ERRORS_DIR), mode=0o700, exist_ok=True)
        write_file_atomically(_error_path(spool_dir, name),
                              f"{stamp} {text}\n".encode("utf-8", "replace"))
    except (OSError, RoammailError):
        pass


def clear_error(spool_dir: str, name: str) -> None:
    try:
        os.unlink(_error_path(spool_dir, name))
    except OSError:
        pass


def read_error(spool_dir: str, name: str) -> str | None:
    try:
        with open(_error_path(spool_dir, name), encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None

