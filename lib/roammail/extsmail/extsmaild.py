"""extsmaild: deliver the extsmail queue through external commands.

Usage:
  extsmaild [options] [-m MODE] [-f]
  extsmaild [options] -t [EXTERNALS]
  extsmaild [options] --flush
  extsmaild [options] --list
  extsmaild [options] --show ID
  extsmaild [options] --delete ID...
  extsmaild [options] --failed
  extsmaild [options] --retry ID...
  extsmaild [options] --wake
  extsmaild [options] --status [--json] [ID]
  extsmaild -V | -v | --version
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
  --show                     Print the queued (or failed) message ID as it
                             will be sent.
  --delete                   Remove the queued (or failed) messages ID...
                             unsent.
  --failed                   List the messages that failed for good.
  --retry                    Put the failed messages ID... back in the queue.
  --wake                     Tell the daemon of the spool that the network
                             changed: it passes over the queue now.
  --status                   Print what became of each message, or of the
                             one ID (a queue ID or a Message-ID) only: exit
                             0 sent, 1 not yet, 2 failed, 66 unknown.
  --json                     With --status, a JSON list for scripts.
  -j N, --jobs N             Hand up to N messages at once to the externals
                             (1: one at a time, as the original) [default: 4].
  --stall-timeout SECONDS    Kill an external that makes no I/O progress for
                             this long [default: 60].
  -V, --version              Print the version.
  -v                         The same (the C extsmaild's spelling).
  -h, --help                 Show this help.
"""

# What this module owns: the command line above and the wiring of the
# modes to the library: one pass (run_batch), the daemon loop (Daemon:
# inotify wake-ups, backoff, network events, signals, reload on SIGHUP),
# --wake and -t.  The
# delivery itself is deliver.py, the notifications notify.py, the queue
# commands queue.py, the reading of the two files settings.py.

from __future__ import annotations

import os
import sys
import time

from .. import __version__
from ..core import locations
from ..core.cli import EXIT_INTERRUPTED, docopt_args, guarded
from ..core.errors import AlreadyRunning, RoammailError, UnavailableError, UsageError
from . import spool
from .deliver import STALL_TIMEOUT, Deliverer
from .notify import Notifier
from .settings import Settings, load_conf, load_settings

TYPE_CHECKING = False  # typing costs an empty run time: only type checkers read it
if TYPE_CHECKING:
    from ..core.roaming import NetworkEvents

TOOL = "extsmaild"

# Daemon timing (seconds).  Backoff after a failing cycle doubles from the
# first value to the second; a quiet queue is still looked at every POLL.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 60.0
POLL = 60.0
# More deliveries at once than this is a typo, not a plan.
MAX_JOBS = 64
# How long a burst of network changes may last before the daemon acts on it
# (seconds): short, as a pass costs little and mail should go at once; a
# link that flaps for longer costs a failed pass and a backoff, no more.
NETWORK_SETTLE = 0.5

SIGINT = 2  # POSIX's number; importing signal for it would cost an empty run 6 ms


class RunOptions:
    """How to deliver: the stall timeout of an external (seconds) and how
    many messages may be handed to externals at once."""

    __slots__ = ("stall_timeout", "jobs")

    def __init__(self, stall_timeout: float = STALL_TIMEOUT, jobs: int = 1) -> None:
        self.stall_timeout = stall_timeout
        self.jobs = jobs


# --------------------------------------------------------------------- modes


def setup_log(stderr: bool):
    """The log, set up when the first line is written: a run with nothing to
    say (an empty queue) does not import logging."""
    from ..core import log

    return log.Deferred(TOOL, stderr=stderr)


def lock_or_fail(spool_dir: str) -> int:
    """Take the spool's instance lock, its pid record empty (only a daemon,
    once it handles SIGUSR1, writes its pid there: see Daemon.run)."""
    spool.check_spool_dir(spool_dir, create=True)  # a fresh set-up has none yet
    fd = spool.acquire_instance_lock(spool_dir)
    if fd is None:
        raise AlreadyRunning(f"another extsmaild is running on {spool_dir} "
                              f"({os.path.join(spool_dir, spool.LOCK_NAME)} is locked)")
    spool.record_daemon_pid(fd, None)
    return fd


def run_batch(settings: Settings, options: RunOptions, *, take_lock: bool) -> int:
    """One pass: 0 when the queue is empty afterwards, 1 when messages remain.

    SIGTERM, SIGINT or SIGHUP stop the running external (its message stays
    queued) and end the pass; after SIGINT the status is 130, as a shell
    reports it (extsmaild(1)).
    """
    log = setup_log(stderr=True)
    lock_fd = lock_or_fail(settings.spool_dir) if take_lock else None
    spool.check_spool_dir(settings.spool_dir, create=True)
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
    """The daemon loop: cycles, inotify wake-ups, backoff, network events,
    signals.

    The wait between two passes ends with a pass when a message lands, when
    the backoff (or the quiet poll) runs out, and, with the backoff reset,
    when the network comes up or changes, the machine resumes, or SIGUSR1
    says so.  While the network events say offline there is no pass at all
    (but one a SIGUSR1 asks for): the queue waits for the network.
    """

    def __init__(self, conf_opt: str | None, externals_opt: str | None,
                 settings: Settings, log, options: RunOptions,
                 lock_fd: int | None = None) -> None:
        self.conf_opt = conf_opt
        self.externals_opt = externals_opt
        self.settings = settings
        self.log = log
        self.lock_fd = lock_fd
        self.deliverer = Deliverer(settings, log, daemon=True,
                                   stall_timeout=options.stall_timeout, jobs=options.jobs)
        self.notifier = Notifier(settings.conf, log, settings.spool_dir,
                                 should_abort=lambda: self.deliverer.stopping)
        self.reload_wanted = False
        self.wake_wanted = False  # SIGUSR1: the network changed, pass now
        self.events: NetworkEvents | None = None  # when there are events
        self.offline = False      # what the events last said
        self.backoff = 0.0

    # Signal handlers only set flags; the wake-up fd interrupts the wait.
    def _on_stop(self, signum, frame) -> None:
        self.deliverer.stopping = True

    def _on_hup(self, signum, frame) -> None:
        self.reload_wanted = True

    def _on_usr1(self, signum, frame) -> None:
        self.wake_wanted = True

    # ------------------------------------------------------------ network

    def open_events(self) -> None:
        """Follow the network's events when the configuration wants them
        and the machine has them; otherwise say so once and go on without
        (the backoff alone decides when to try again)."""
        if not self.settings.conf.network_events:
            self.log.info("network events off (network_events = no)")
            return
        from ..core.roaming import open_events

        events, why = open_events(NETWORK_SETTLE)
        if events is None:
            self.log.info("network events unavailable, retrying on the backoff "
                          "schedule only: %s", why)
            return
        self.events = events
        self.deliverer.network = "online"
        if not events.online:
            self.went_offline()

    def close_events(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    def note_next_try(self, when: float | None) -> None:
        """Tell --status when the waiting messages are tried again (None:
        when the network is back)."""
        from . import status

        try:
            status.schedule_retries(self.settings.spool_dir, when)
        except (RoammailError, OSError) as exc:
            self.log.warning("cannot note the next try in %s: %s",
                             status.status_dir(self.settings.spool_dir), exc)

    def went_offline(self) -> None:
        self.offline = True
        self.deliverer.network = "offline"
        self.note_next_try(None)
        from .health import record_pass

        record_pass(self.deliverer)  # roammail-status: the queue waits for the network
        waiting = len(spool.list_messages(self.settings.spool_dir))
        self.log.info("network offline: %d message%s wait%s", waiting,
                      "" if waiting == 1 else "s", "s" if waiting == 1 else "")

    def on_events(self, events: list[str]) -> bool:
        """Act on the events of one look; True when a pass is due now."""
        from ..core.roaming import OFFLINE, ONLINE

        due = False
        for event in events:
            if event == OFFLINE:
                if not self.offline:
                    self.went_offline()
                due = False
            elif self.offline and event == ONLINE:
                self.offline = False
                self.deliverer.network = "online"
                self.log.info("network online: passing the queue now")
                due = True
            elif not self.offline:  # online, changed, or resumed while online
                self.log.debug("network %s: passing the queue now", event)
                due = True
        return due

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
        try:
            return self._run()
        finally:
            self.close_events()

    def _run(self) -> int:
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
        signal.signal(signal.SIGUSR1, self._on_usr1)
        if self.lock_fd is not None:  # now that SIGUSR1 is ours: --wake may send it
            spool.record_daemon_pid(self.lock_fd, os.getpid())
        self.log.info("started: spool %s, externals %s", self.settings.spool_dir,
                      self.settings.externals_path)
        self.open_events()
        random_start = False
        try:
            while not self.deliverer.stopping:
                if self.reload_wanted:
                    self.reload()
                if self.offline and not self.wake_wanted:
                    if self.wait(inotify, wake_r, None):  # until the network is back
                        self.backoff, random_start = 0.0, False
                    continue
                self.wake_wanted = False
                result = self.deliverer.cycle(random_start)
                if self.deliverer.stopping:
                    break
                self.notifier.after_cycle(result, time.time())
                if result.failed:
                    self.backoff = (BACKOFF_FIRST if not self.backoff
                                    else min(BACKOFF_MAX, self.backoff * 2))
                    wait, random_start = self.backoff, True
                    self.note_next_try(time.time() + wait)
                else:
                    self.backoff, random_start = 0.0, False
                    wait = POLL
                if self.wait(inotify, wake_r, wait):  # the network says: now
                    self.backoff, random_start = 0.0, False
        finally:
            signal.set_wakeup_fd(old_wakeup)
            inotify.close()
            os.close(wake_r)
            os.close(wake_w)
        self.log.info("stopped")
        return 0

    def wait(self, inotify, wake_r: int, seconds: float | None) -> bool:
        """Sleep until a message lands, a signal comes, the network calls
        for a pass, or `seconds` pass (None: no limit).  While offline,
        neither a message nor the time ends the wait: only the network, a
        signal or being stopped.  True when the network (or SIGUSR1) asked
        for the pass: the backoff is over."""
        import select

        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.deliverer.stopping and not self.reload_wanted:
            if self.wake_wanted:
                return True
            now = time.monotonic()
            if deadline is not None and not self.offline and now >= deadline:
                return False
            timeout = None if deadline is None or self.offline else deadline - now
            fds = [inotify.fd, wake_r]
            if self.events is not None:
                fds.extend(self.events.fds())
                due = self.events.timeout()
                timeout = due if timeout is None else min(timeout, due)
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            if self.events is not None and self.on_events(self.events.process()):
                return True
            if inotify.fd in ready:
                inotify.drain()
                if not self.offline:
                    return False
        return False


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
                return Daemon(conf_opt, externals_opt, settings, log, options,
                              lock_fd).run()
            except Exception as exc:  # detached: syslog is the only place left
                log.error("exiting on an unexpected error: %s: %s", type(exc).__name__, exc)
                return 70
    log = setup_log(stderr=True)
    try:
        return Daemon(conf_opt, externals_opt, settings, log, options, lock_fd).run()
    finally:
        os.close(lock_fd)


# -------------------------------------------------------------------- --wake


def wake_daemon(spool_dir: str) -> int:
    """--wake: SIGUSR1 to the daemon that holds the spool's instance lock;
    0 once sent, UnavailableError (69) when no daemon that takes it runs."""
    import signal

    held, pid = spool.daemon_pid(spool_dir)
    if not held:
        raise UnavailableError(f"no extsmaild daemon is running on {spool_dir}")
    if pid is None:
        raise UnavailableError(f"the extsmaild holding {spool_dir}/{spool.LOCK_NAME} "
                               "is not a daemon that takes --wake (a batch run, or "
                               "the C extsmaild)")
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:  # it ended since we looked
        raise UnavailableError(f"no extsmaild daemon is running on {spool_dir}") from None
    return 0


# ------------------------------------------------------------------------ -t


def missing_program(argv: list[str]) -> str | None:
    """Why the program of a command cannot be run (None when it can), found
    as the delivery finds it: through PATH, unless it names a path."""
    import shutil

    program = argv[0]
    if shutil.which(program) is not None:
        return None
    if "/" in program:
        return f"program '{program}' is not an executable file"
    return f"program '{program}' not found on PATH"


def test_config(conf_opt: str | None, externals_opt: str | None, out, err) -> int:
    """-t: print the configuration on `out`; warn on `err`, one line each, of
    each external whose program is missing (a warning, not an error: PATH
    may differ where extsmaild runs)."""
    import shlex

    from .externals import DEFAULT_PERMANENT

    settings = load_settings(conf_opt, externals_opt)
    settings.compile()  # every error before the first line of output
    conf = settings.conf
    out.write(f"configuration {settings.conf_path}: spool_dir {settings.spool_dir}\n")
    from .report import DEFAULT_MAILDIR

    report = ("none" if conf.report_maildir == "" else conf.report_maildir
              if conf.report_maildir is not None else f"{DEFAULT_MAILDIR} (default)")
    out.write(f"  permanent_failures {'yes' if conf.permanent_failures else 'no'}, "
              f"report_maildir {report}, max_age {conf.max_age or 'none'}"
              f"{'s' if conf.max_age else ''}, keep_sent {conf.keep_sent}s, "
              f"network_events {'yes' if conf.network_events else 'no'}\n")
    out.write(f"externals {settings.externals_path}:\n")
    warnings = []
    for number, compiled in enumerate(settings.groups, 1):
        out.write(f"group {number} (line {compiled.group.line})\n")
        for rule in compiled.rules:
            out.write(f"  {rule.kind} header \"{rule.pattern}\"\n")
        for external in compiled.group.externals:
            extra = f", timeout {external.timeout}s" if external.timeout else ""
            if external.permanent != DEFAULT_PERMANENT:
                statuses = " ".join(str(n) for n in sorted(external.permanent))
                extra += f", permanent {statuses or 'none'}"
            if external.dedup:
                extra += ", dedup"
            command = shlex.join(external.sendmail_argv)
            out.write(f"  external {external.name}: {command}{extra}\n")
            why = missing_program(external.sendmail_argv)
            if why is not None:
                warnings.append(f"{TOOL}: warning: external {external.name} "
                                f"(line {external.line}): {why}\n")
    if conf.permanent_failures and conf.report_maildir:  # one the user named
        from .report import report_maildir

        where, why = report_maildir(conf.report_maildir)
        if where is None:
            warnings.append(f"{TOOL}: warning: report_maildir: {why}: a permanent "
                            "failure is kept in failed/ without a report\n")
    out.flush()
    err.writelines(warnings)
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
    "--failed": False, "--retry": False, "--wake": False, "--status": False, "--json": False,
    "-v": False,
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
    if args["--version"] or args["-v"]:
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
        return test_config(conf_opt, args["EXTERNALS"] or externals_opt, sys.stdout,
                           sys.stderr)
    if args["--wake"]:
        _, conf = load_conf(conf_opt)
        return wake_daemon(locations.expand_home(conf.spool_dir))
    if args["--list"] or args["--show"] or args["--delete"] or args["--failed"] \
            or args["--retry"] or args["--status"]:
        from .queue import delete_messages, list_failed, list_queue, retry_messages, show_message

        _, conf = load_conf(conf_opt)
        spool_dir = locations.expand_home(conf.spool_dir)
        spool.check_spool_dir(spool_dir, create=True)
        if args["--list"]:
            return list_queue(spool_dir, sys.stdout)
        if args["--show"]:
            return show_message(spool_dir, args["ID"][0])
        if args["--failed"]:
            return list_failed(spool_dir, sys.stdout)
        if args["--retry"]:
            return retry_messages(spool_dir, args["ID"], setup_log(stderr=True))
        if args["--status"]:
            from .queue import show_status

            return show_status(spool_dir, args["ID"][0] if args["ID"] else None,
                               args["--json"], sys.stdout, sys.stderr)
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
