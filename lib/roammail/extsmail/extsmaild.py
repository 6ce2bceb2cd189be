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
  --show                     Print the queued message ID as it will be sent.
  --delete                   Remove the queued messages ID... unsent.
  --failed                   List the messages that failed for good.
  --retry                    Put the failed messages ID... back in the queue.
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
# inotify wake-ups, backoff, signals, reload on SIGHUP) and -t.  The
# delivery itself is deliver.py, the notifications notify.py, the queue
# commands queue.py, the reading of the two files settings.py.

from __future__ import annotations

import os
import sys
import time

from .. import __version__
from ..core import locations
from ..core.cli import EXIT_INTERRUPTED, docopt_args, guarded
from ..core.errors import AlreadyRunning, RoammailError, UsageError
from . import spool
from .deliver import STALL_TIMEOUT, Deliverer
from .notify import Notifier
from .settings import Settings, load_conf, load_settings

TOOL = "extsmaild"

# Daemon timing (seconds).  Backoff after a failing cycle doubles from the
# first value to the second; a quiet queue is still looked at every POLL.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 60.0
POLL = 60.0
# More deliveries at once than this is a typo, not a plan.
MAX_JOBS = 64

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
    spool.check_spool_dir(spool_dir, create=True)  # a fresh set-up has none yet
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

    settings = load_settings(conf_opt, externals_opt)
    settings.compile()  # every error before the first line of output
    out.write(f"configuration {settings.conf_path}: spool_dir {settings.spool_dir}\n")
    out.write(f"externals {settings.externals_path}:\n")
    warnings = []
    for number, compiled in enumerate(settings.groups, 1):
        out.write(f"group {number} (line {compiled.group.line})\n")
        for rule in compiled.rules:
            out.write(f"  {rule.kind} header \"{rule.pattern}\"\n")
        for external in compiled.group.externals:
            timeout = f", timeout {external.timeout}s" if external.timeout else ""
            command = shlex.join(external.sendmail_argv)
            out.write(f"  external {external.name}: {command}{timeout}\n")
            why = missing_program(external.sendmail_argv)
            if why is not None:
                warnings.append(f"{TOOL}: warning: external {external.name} "
                                f"(line {external.line}): {why}\n")
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
    "--failed": False, "--retry": False, "--status": False, "--json": False,
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
