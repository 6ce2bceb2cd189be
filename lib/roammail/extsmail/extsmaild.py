"""extsmaild: deliver the extsmail queue through external commands.

Usage:
  extsmaild [options] [-m MODE] [-f]
  extsmaild [options] -t [EXTERNALS]
  extsmaild [options] --flush
  extsmaild [options] --list
  extsmaild [options] --show ID
  extsmaild [options] --delete ID...
  extsmaild -v | --version
  extsmaild -h | --help

Options:
  -c FILE, --conf FILE       The configuration file, instead of the first of
                             ~/.extsmail/conf, $XDG_CONFIG_HOME/roammail/
                             extsmail.conf and /etc/extsmail/conf.
  -e FILE, --externals FILE  The externals file, instead of the first of
                             ~/.extsmail/externals, $XDG_CONFIG_HOME/roammail/
                             extsmail.externals and /etc/extsmail/externals.
  -m MODE, --mode MODE       batch: one pass over the queue, then exit;
                             daemon: deliver until stopped [default: batch].
  -f, --foreground           In daemon mode, do not detach; log to stderr too.
  -t, --test                 Check the configuration and the externals file
                             (EXTERNALS, else -e, else the default), print
                             the groups, exit 0 if valid, 78 if not.
  --flush                    Deliver the whole queue now, even while a daemon
                             runs (a message is never sent twice).
  --list                     List the queued messages.
  --show                     Print the queued message ID as it will be sent.
  --delete                   Remove the queued messages ID... unsent.
  -j N, --jobs N             Hand up to N messages at once to the externals
                             (1: one at a time, as the original) [default: 4].
  --stall-timeout SECONDS    Kill an external that makes no I/O progress for
                             this long [default: 60].
  -v, --version              Print the version.
  -h, --help                 Show this help.
"""

from __future__ import annotations

import os
import sys
import time

from .. import __version__
from ..core import locations
from ..core.cli import EXIT_INTERRUPTED, docopt_args, guarded
from ..core.errors import (
    EX_TEMPFAIL,
    AlreadyRunning,
    ConfigError,
    DataError,
    RoammailError,
    UsageError,
)
from . import spool
from .conf import ExtsmailConf, parse_extsmail_conf, read_config_file

TYPE_CHECKING = False  # typing is not imported at run time: an empty-queue run avoids it
if TYPE_CHECKING:
    from typing import Callable

TOOL = "extsmaild"

# Daemon timing (seconds).  Backoff after a failing cycle doubles from the
# first value to the second; a quiet queue is still looked at every POLL.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 60.0
POLL = 60.0
# An external that neither reads its input nor writes anything for this
# long is killed (the original's rule); --stall-timeout changes it.
STALL_TIMEOUT = 60.0
# More deliveries at once than this is a typo, not a plan.
MAX_JOBS = 64
# How long a killed external has between SIGTERM and SIGKILL.
KILL_GRACE = 5.0
# How much of an external's stderr goes into one log line.
STDERR_IN_LOG = 600

SIGINT = 2  # POSIX's number; importing signal for it would cost an empty run 6 ms

ERRORS_DIR = "errors"  # spool_dir/errors/NAME: the last delivery error
STATE_DIR = "state"    # spool_dir/state/: notification times


# ------------------------------------------------------------------ settings


class Settings:
    """What a run needs of the two files.  The header rules are compiled
    when a message first needs them: an empty queue (a cron run, most of
    the time) pays neither for the regex engine nor for the compilation."""

    __slots__ = ("conf_path", "conf", "spool_dir", "externals_path", "parsed", "_groups")

    def __init__(self, conf_path: str, conf: ExtsmailConf, spool_dir: str,
                 externals_path: str, parsed: list) -> None:
        self.conf_path = conf_path
        self.conf = conf
        self.spool_dir = spool_dir
        self.externals_path = externals_path
        self.parsed = parsed  # externals.Group, as parsed
        self._groups: list | None = None

    @property
    def groups(self) -> list:
        """headers.CompiledGroup of each group; ConfigError for a bad regex."""
        if self._groups is None:
            from ..core.headers import compile_groups

            self._groups = compile_groups(self.parsed, self.externals_path)
        return self._groups

    def compile(self) -> None:
        """Compile the header rules now (ConfigError for a bad one)."""
        self.groups  # noqa: B018 - the property compiles


class RunOptions:
    """How to deliver: the stall timeout of an external (seconds) and how
    many messages may be handed to externals at once."""

    __slots__ = ("stall_timeout", "jobs")

    def __init__(self, stall_timeout: float = STALL_TIMEOUT, jobs: int = 1) -> None:
        self.stall_timeout = stall_timeout
        self.jobs = jobs


def find_file(explicit: str | None, candidates: list[str], what: str) -> str:
    if explicit:
        return explicit
    found = locations.first_existing(candidates)
    if found is None:
        raise ConfigError(candidates[0], 0, f"no {what} file (also looked for "
                          + ", ".join(candidates[1:]) + ")")
    return found


def load_conf(conf_opt: str | None) -> tuple[str, ExtsmailConf]:
    path = find_file(conf_opt, locations.extsmail_conf_candidates(), "configuration")
    return path, parse_extsmail_conf(read_config_file(path), path)


def load_externals(path: str) -> list:
    """Parse an externals file (its groups, not yet compiled); ConfigError
    with file:line."""
    from .externals import parse_externals

    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(path, 0, f"cannot read: {exc.strerror}") from None
    if st.st_uid != os.geteuid():
        raise ConfigError(path, 0, f"not owned by uid {os.geteuid()}, refusing to run "
                          "its commands")
    return parse_externals(read_config_file(path), path)


def load_settings(conf_opt: str | None, externals_opt: str | None) -> Settings:
    conf_path, conf = load_conf(conf_opt)
    ext_path = find_file(externals_opt, locations.extsmail_externals_candidates(),
                         "externals")
    groups = load_externals(ext_path)
    return Settings(conf_path, conf, locations.expand_home(conf.spool_dir), ext_path, groups)


# ------------------------------------------------------------------ delivery


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
    __slots__ = ("sent", "failed", "remaining", "sent_names", "oldest_failed")

    def __init__(self) -> None:
        self.sent = 0
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
        self.stopping = False
        self.reported_corrupt: dict[str, float] = {}
        # Called once, before the first delivery (batch mode installs its
        # signal handlers there: `signal` is not cheap to import).
        self.before_delivery: Callable[[], None] | None = None
        self._sharing = None  # sshshare.SshSharing, made for the first delivery

    # -- one cycle -----------------------------------------------------------

    def cycle(self, random_start: bool = False) -> CycleResult:
        result = CycleResult()
        for path in spool.remove_stale_temporaries(self.settings.spool_dir, time.time()):
            self.log.info("removed %s, left over by an interrupted extsmail", path)
        paths = spool.list_messages(self.settings.spool_dir)
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
        return result

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
        """Deliver one queued file: "sent", "failed", "kept" or "gone"."""
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
        from ..core.headers import header_lines, read_head, select

        lines = header_lines(read_head(message.stream()))
        chosen = select(self.settings.groups, lines)
        if chosen is None:
            self.record_error(name, "no group of the externals file matches its headers")
            self.log.error("%s: no group of %s matches its headers; left in the queue",
                           name, self.settings.externals_path)
            return "failed"
        now = time.time()
        tried = False
        for external in plan(chosen.group.externals, failed_externals, self.last_success,
                             self.started, now, self.daemon):
            tried = True
            from ..core import child

            argv = self.sharing().argv(external.name, list(external.sendmail_argv)) \
                + [os.fsdecode(a) for a in message.args]
            res = child.run_child(argv, message.stream(), stall_timeout=self.stall_timeout,
                                  grace=KILL_GRACE, should_abort=lambda: self.stopping)
            if res.ok:
                spool.remove(message)
                self.clear_error(name)
                self.last_success[external.name] = time.time()
                self.log.info("%s: sent via %s (%d bytes)", name, external.name,
                              message.size - message.body_offset)
                return "sent"
            if res.aborted:
                self.log.info("%s: delivery via %s stopped: extsmaild is exiting; "
                              "the message stays queued", name, external.name)
                return "kept"
            why = res.describe()
            err = " ".join(res.stderr.decode("utf-8", "replace").split())
            if err:
                why += ": " + (err if len(err) <= STDERR_IN_LOG else err[:STDERR_IN_LOG] + "...")
            self.log.error("%s: external %s failed: %s", name, external.name, why)
            self.record_error(name, f"via {external.name}: {why}")
            failed_externals.add(external.name)
            if holds_back(external, self.last_success, self.started, time.time(),
                          self.daemon):
                break
        if not tried:  # still one line, and a --list note, for each message not sent
            names = ", ".join(e.name for e in chosen.group.externals if e.name in failed_externals)
            self.log.error("%s: not tried: %s failed earlier in this cycle; left in the queue",
                           name, names)
            self.record_error(name, f"not tried: {names} failed earlier in this cycle")
        return "failed"

    # -- last-error notes, for --list ---------------------------------------

    def record_error(self, name: str, text: str) -> None:
        record_error(self.settings.spool_dir, name, text)

    def clear_error(self, name: str) -> None:
        clear_error(self.settings.spool_dir, name)


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


# ------------------------------------------------------------- notifications


def substitute(command: str, name: str, value: str) -> str:
    """Replace every ${NAME} in command (also at its very end)."""
    return command.replace("${" + name + "}", value)


class Notifier:
    """notify_failure_cmd / notify_success_cmd, as extsmail.conf(5) says.

    When the last fully successful cycle was, and when the last failure
    notice went out, are kept as the mtimes of two files in
    spool_dir/state/, so batch runs from cron notify as a daemon does.
    """

    LAST_SUCCESS = "last-success"
    LAST_NOTICE = "last-failure-notice"

    def __init__(self, conf: ExtsmailConf, log, spool_dir: str,
                 should_abort=None) -> None:
        self.conf = conf
        self.should_abort = should_abort
        self.log = log
        self.state_dir = os.path.join(spool_dir, STATE_DIR)

    def _stamp(self, name: str) -> float | None:
        try:
            return os.stat(os.path.join(self.state_dir, name)).st_mtime
        except OSError:
            return None

    def _set(self, name: str, when: float | None) -> None:
        path = os.path.join(self.state_dir, name)
        try:
            if when is None:
                if os.path.exists(path):
                    os.unlink(path)
                return
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            os.utime(path, (when, when))
        except OSError as exc:
            self.log.warning("cannot record %s: %s", path, exc.strerror)

    def after_cycle(self, result: CycleResult, now: float) -> None:
        from ..core.times import render_duration

        if result.sent and self.conf.notify_success_cmd:
            self.run(substitute(self.conf.notify_success_cmd, "SUCCESSES", str(result.sent)))
        if result.failed == 0:
            self._set(self.LAST_SUCCESS, now)
            self._set(self.LAST_NOTICE, None)
            return
        interval = self.conf.notify_failure_interval
        if not interval or not self.conf.notify_failure_cmd:
            return
        last_ok = self._stamp(self.LAST_SUCCESS)
        if last_ok is None:
            # Never fully successful on record: failing since the oldest
            # message that failed was queued.
            last_ok = min(now, result.oldest_failed or now)
            self._set(self.LAST_SUCCESS, last_ok)
        since = now - last_ok
        last_notice = self._stamp(self.LAST_NOTICE)
        if since >= interval and (last_notice is None or now - last_notice >= interval):
            self._set(self.LAST_NOTICE, now)
            self.run(substitute(self.conf.notify_failure_cmd, "TIME", render_duration(since)))

    def run(self, command: str) -> None:
        from ..core import child

        res = child.run_child(["/bin/sh", "-c", command], stall_timeout=STALL_TIMEOUT,
                              grace=KILL_GRACE, should_abort=self.should_abort)
        if not (res.returncode == 0 and res.error is None):
            err = " ".join(res.stderr.decode("utf-8", "replace").split())[:STDERR_IN_LOG]
            self.log.warning("notification command failed: %s%s", res.describe(),
                             f": {err}" if err else "")


# --------------------------------------------------------------------- modes


def setup_log(stderr: bool):
    """The log, set up when the first line is written: a run with nothing to
    say (an empty queue) does not import logging."""
    from ..core import log

    return log.Deferred(TOOL, stderr=stderr)


def lock_or_fail(spool_dir: str) -> int:
    spool.check_spool_dir(spool_dir)
    fd = spool.acquire_instance_lock(spool_dir)
    if fd is None:
        raise AlreadyRunning(f"another extsmaild is running on {spool_dir} "
                              f"({os.path.join(spool_dir, spool.LOCK_NAME)} is locked)")
    return fd


def run_batch(settings: Settings, options: RunOptions, *, take_lock: bool) -> int:
    """One pass: 0 when the queue is empty afterwards, 1 when messages remain.

    SIGTERM, SIGINT or SIGHUP stop the running external (its message stays
    queued) and end the pass; after SIGINT the status is 130, as a shell
    reports it (extsmaild(1)).
    """
    log = setup_log(stderr=True)
    lock_fd = lock_or_fail(settings.spool_dir) if take_lock else None
    spool.check_spool_dir(settings.spool_dir)
    deliverer = Deliverer(settings, log, daemon=False, stall_timeout=options.stall_timeout,
                          jobs=options.jobs)

    caught: list[int] = []

    def stop(signum, frame) -> None:
        caught.append(signum)
        deliverer.stopping = True

    def install_handlers() -> None:
        import signal

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, stop)

    deliverer.before_delivery = install_handlers
    try:
        result = deliverer.cycle()
        if not deliverer.stopping:
            Notifier(settings.conf, log, settings.spool_dir).after_cycle(result, time.time())
        if SIGINT in caught:
            return EXIT_INTERRUPTED
        return 0 if result.remaining == 0 else 1
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


class Daemon:
    """The daemon loop: cycles, inotify wake-ups, backoff, signals."""

    def __init__(self, conf_opt: str | None, externals_opt: str | None,
                 settings: Settings, log, options: RunOptions) -> None:
        self.conf_opt = conf_opt
        self.externals_opt = externals_opt
        self.settings = settings
        self.log = log
        self.deliverer = Deliverer(settings, log, daemon=True,
                                   stall_timeout=options.stall_timeout, jobs=options.jobs)
        self.notifier = Notifier(settings.conf, log, settings.spool_dir,
                                 should_abort=lambda: self.deliverer.stopping)
        self.reload_wanted = False

    # Signal handlers only set flags; the wake-up fd interrupts the wait.
    def _on_stop(self, signum, frame) -> None:
        self.deliverer.stopping = True

    def _on_hup(self, signum, frame) -> None:
        self.reload_wanted = True

    def reload(self) -> None:
        self.reload_wanted = False
        try:
            new = load_settings(self.conf_opt, self.externals_opt)
            new.compile()  # now: a bad rule keeps the old configuration
        except RoammailError as exc:
            self.log.error("reload failed, keeping the old configuration: %s", exc)
            return
        if new.spool_dir != self.settings.spool_dir:
            self.log.error("reload: spool_dir changed to %s; restart extsmaild to use it",
                           new.spool_dir)
            new.spool_dir = self.settings.spool_dir
        self.settings = new
        self.deliverer.settings = new
        self.notifier.conf = new.conf
        self.log.info("configuration reloaded from %s and %s", new.conf_path,
                      new.externals_path)

    def run(self) -> int:
        import signal

        from ..core.inotify import Inotify, flags

        msgs = os.path.join(self.settings.spool_dir, spool.MSGS)
        os.makedirs(msgs, mode=0o700, exist_ok=True)
        inotify = Inotify(nonblocking=True)
        inotify.add_watch(msgs, flags.CREATE | flags.MOVED_TO | flags.CLOSE_WRITE)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        self.log.info("started: spool %s, externals %s", self.settings.spool_dir,
                      self.settings.externals_path)
        backoff = 0.0
        random_start = False
        try:
            while not self.deliverer.stopping:
                if self.reload_wanted:
                    self.reload()
                result = self.deliverer.cycle(random_start)
                if self.deliverer.stopping:
                    break
                self.notifier.after_cycle(result, time.time())
                if result.failed:
                    backoff = BACKOFF_FIRST if not backoff else min(BACKOFF_MAX, backoff * 2)
                    wait, random_start = backoff, True
                else:
                    backoff, random_start = 0.0, False
                    wait = POLL
                self.wait(inotify, wake_r, wait)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            inotify.close()
            os.close(wake_r)
            os.close(wake_w)
        self.log.info("stopped")
        return 0

    def wait(self, inotify, wake_r: int, seconds: float) -> None:
        """Sleep until a message lands, a signal comes, or `seconds` pass."""
        import select

        deadline = time.monotonic() + seconds
        while not self.deliverer.stopping and not self.reload_wanted:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                ready, _, _ = select.select([inotify.fd, wake_r], [], [], left)
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if inotify.fd in ready:
                inotify.drain()
                return


def run_daemon(conf_opt: str | None, externals_opt: str | None, settings: Settings,
               foreground: bool, options: RunOptions) -> int:
    settings.compile()  # a bad header rule is an error now, while we can still say it
    lock_fd = lock_or_fail(settings.spool_dir)
    if not foreground:
        import daemon as pydaemon

        with pydaemon.DaemonContext(files_preserve=[lock_fd], umask=0o077,
                                    working_directory="/"):
            log = setup_log(stderr=False)
            try:
                return Daemon(conf_opt, externals_opt, settings, log, options).run()
            except Exception as exc:  # detached: syslog is the only place left
                log.error("exiting on an unexpected error: %s: %s", type(exc).__name__, exc)
                return 70
    log = setup_log(stderr=True)
    try:
        return Daemon(conf_opt, externals_opt, settings, log, options).run()
    finally:
        os.close(lock_fd)


# ------------------------------------------------------------ queue commands


def resolve_id(spool_dir: str, ident: str) -> str:
    """The msgs/ path of a queue ID (a whole name, or a unique prefix)."""
    if "/" in ident or not ident or ident.startswith("."):
        raise UsageError(f"bad message ID '{ident}'")
    paths = spool.list_messages(spool_dir)
    exact = [p for p in paths if os.path.basename(p) == ident]
    if exact:
        return exact[0]
    prefixed = [p for p in paths if os.path.basename(p).startswith(ident)]
    if len(prefixed) == 1:
        return prefixed[0]
    if not prefixed:
        raise DataError(f"no queued message {ident}")
    raise UsageError(f"message ID '{ident}' is ambiguous ({len(prefixed)} messages)")


def header_summary(message: spool.QueuedMessage) -> dict[str, str]:
    from ..core.headers import header_lines, read_head

    found: dict[str, str] = {}
    for line in header_lines(read_head(message.stream())):
        name, colon, value = line.partition(":")
        key = name.strip().lower()
        if colon and key in ("from", "to", "subject") and key not in found:
            found[key] = " ".join(value.split())
    return found


def human_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def list_queue(spool_dir: str, out) -> int:
    now = time.time()
    for path in spool.list_messages(spool_dir):
        name = os.path.basename(path)
        try:
            message = _open_for_reading(path)
        except DataError as exc:
            out.write(f"{name}  corrupt: {exc}\n")
            continue
        if message is None:
            continue
        with message:
            info = header_summary(message)
            size = message.size - message.body_offset
            args = " ".join(os.fsdecode(a) for a in message.args)
            out.write(f"{name}  {human_age(now - message.mtime)}  {size} bytes\n")
            out.write(f"  From: {info.get('from', '')}\n  To: {info.get('to', '')}\n")
            out.write(f"  Subject: {info.get('subject', '')}\n  Arguments: {args}\n")
        err = read_error(spool_dir, name)
        if err:
            out.write(f"  Last error: {err}\n")
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
    path = resolve_id(spool_dir, ident)
    message = _open_for_reading(path)
    if message is None:
        raise DataError(f"no queued message {ident}")
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


def delete_messages(spool_dir: str, idents: list[str], log) -> int:
    paths = [resolve_id(spool_dir, ident) for ident in idents]
    status = 0
    for path in paths:
        name = os.path.basename(path)
        try:
            message = spool.open_message(path)
        except DataError:
            message = None
            if os.path.exists(path):  # corrupt: deleting it is what one wants
                os.unlink(path)
                clear_error(spool_dir, name)
                log.info("%s: deleted (it was corrupt)", name)
                continue
        if message is None:
            if os.path.exists(path):
                log.error("%s: being delivered right now; not deleted", name)
                status = EX_TEMPFAIL
            continue
        with message:
            spool.remove(message)
        clear_error(spool_dir, name)
        log.info("%s: deleted", name)
    return status


def test_config(conf_opt: str | None, externals_opt: str | None, out) -> int:
    settings = load_settings(conf_opt, externals_opt)
    settings.compile()  # every error before the first line of output
    out.write(f"configuration {settings.conf_path}: spool_dir {settings.spool_dir}\n")
    out.write(f"externals {settings.externals_path}:\n")
    for number, compiled in enumerate(settings.groups, 1):
        out.write(f"group {number} (line {compiled.group.line})\n")
        for rule in compiled.rules:
            out.write(f"  {rule.kind} header \"{rule.pattern}\"\n")
        for external in compiled.group.externals:
            timeout = f", timeout {external.timeout}s" if external.timeout else ""
            out.write(f"  external {external.name}: {external.sendmail_argv}{timeout}\n")
    return 0


# ---------------------------------------------------------------------- main


# What docopt makes of the command lines that cron and the service unit
# repeat (tests/extsmail check each against docopt): docopt costs an empty
# run more than everything else it does (it imports re and typing).
_DOCOPT_DEFAULTS: dict[str, object] = {
    "--conf": None, "--externals": None, "--jobs": "4", "--stall-timeout": "60",
    "--mode": "batch",
    "--foreground": False, "--test": False, "EXTERNALS": None, "--flush": False,
    "--list": False, "--show": False, "ID": [], "--delete": False, "--version": False,
    "--help": False,
}
_COMMON_COMMAND_LINES: dict[tuple[str, ...], dict[str, object]] = {
    (): {},
    ("-m", "batch"): {},
    ("--mode", "batch"): {},
    ("--mode=batch",): {},
    ("-m", "daemon"): {"--mode": "daemon"},
    ("--mode", "daemon"): {"--mode": "daemon"},
    ("--mode=daemon",): {"--mode": "daemon"},
    ("-m", "daemon", "-f"): {"--mode": "daemon", "--foreground": True},
    ("-f", "-m", "daemon"): {"--mode": "daemon", "--foreground": True},
    ("--mode=daemon", "--foreground"): {"--mode": "daemon", "--foreground": True},
    ("--flush",): {"--flush": True},
    ("--list",): {"--list": True},
}


def parse_args(argv: list[str]) -> dict:
    """docopt's reading of argv (for the common lines, from the table)."""
    known = _COMMON_COMMAND_LINES.get(tuple(argv))
    if known is not None:
        args = dict(_DOCOPT_DEFAULTS, ID=[])
        args.update(known)
        return args
    return docopt_args(__doc__, argv, version=None)


def run(argv: list[str] | None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args["--version"]:
        sys.stdout.write(f"extsmaild (roammail) {__version__}\n")
        return 0
    try:
        stall = float(args["--stall-timeout"])
        if not stall > 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--stall-timeout needs a positive number of seconds, "
                         f"not '{args['--stall-timeout']}'") from None
    jobs_text = args["--jobs"]
    if not (jobs_text.isascii() and jobs_text.isdigit() and 1 <= int(jobs_text) <= MAX_JOBS):
        raise UsageError(f"--jobs needs a number from 1 to {MAX_JOBS}, not '{jobs_text}'")
    options = RunOptions(stall, int(jobs_text))
    conf_opt = args["--conf"]
    externals_opt = args["--externals"]
    if args["--test"]:
        return test_config(conf_opt, args["EXTERNALS"] or externals_opt, sys.stdout)
    if args["--list"] or args["--show"] or args["--delete"]:
        _, conf = load_conf(conf_opt)
        spool_dir = locations.expand_home(conf.spool_dir)
        spool.check_spool_dir(spool_dir)
        if args["--list"]:
            return list_queue(spool_dir, sys.stdout)
        if args["--show"]:
            return show_message(spool_dir, args["ID"][0])
        return delete_messages(spool_dir, args["ID"], setup_log(stderr=True))
    settings = load_settings(conf_opt, externals_opt)
    if args["--flush"]:
        return run_batch(settings, options, take_lock=False)
    mode = args["--mode"]
    if mode == "batch":
        return run_batch(settings, options, take_lock=True)
    if mode == "daemon":
        return run_daemon(conf_opt, externals_opt, settings, args["--foreground"], options)
    raise UsageError(f"-m takes batch or daemon, not '{mode}'")


def main(argv: list[str] | None = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
