"""watch-imap: print the name of each IMAP folder that changes, for mswatch.

Usage:
  watch-imap [options] -a NAME
  watch-imap [options] -a NAME --list
  watch-imap -V | --version
  watch-imap -h | --help

Options:
  -a NAME, --account=NAME  The account: a block of the configuration file,
                           else an IMAPAccount, IMAPStore or Channel of
                           mbsync's configuration.
  -c FILE, --config=FILE   The configuration file; default
                           $XDG_CONFIG_HOME/roammail/watch-imap.conf.
  --mbsyncrc=FILE          mbsync's configuration; default ~/.mbsyncrc.
  -l, --list               Print the account's folders as mbsync names
                           them, one per line, then exit.
  -v, --verbose            Log each connection step and each change.
  -V, --version            Print the version.
  -h, --help               Show this help.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import stat
import subprocess
import sys
import threading

from .. import __version__
from ..core.cli import (
    docopt_args,
    exit_at_once,
    guarded,
    output_error,
    require_stdout,
    silence_stdout,
)
from ..core.watchproto import COALESCE_WINDOW, READY_LINE, Coalescer, protocol_lines, write_all
from .config import default_config_path, default_mbsyncrc, resolve_account
from .watch import AccountWatch, MailboxNames, Reporter, list_names

TOOL = "watch-imap"
STDOUT = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CHECK_SIGNAL = signal.SIGUSR1  # "the network changed": check the connections now
# Told to stop, the watcher logs out (connection.LOGOUT_GRACE at most) and ends a
# tunnel command (a few seconds at most, when it lingers); it is not
# waited for longer than this.
SHUTDOWN_LIMIT = 5.0  # seconds

log = logging.getLogger("roammail.watch_imap.cli")


class StdoutReporter(Reporter):
    """The watcher protocol on a descriptor: the ready line, then names,
    a burst of one name coalesced; `gone` is set when the reader left."""

    def __init__(self, fd: int, window: float = COALESCE_WINDOW) -> None:
        self.fd = fd
        self.loop = asyncio.get_running_loop()
        self.coalescer = Coalescer(window)
        self.gone = asyncio.Event()
        self._encoded: dict = {}
        self._timer: asyncio.TimerHandle | None = None
        self._watching = False
        self.failure: OSError | None = None  # a write error other than EPIPE

    def ready(self) -> None:
        self._write(READY_LINE)

    def changed(self, names) -> None:
        now = self.loop.time()
        for name in names:
            self.coalescer.add(name, now)
        self._flush()

    def _flush(self) -> None:
        self._timer = None
        due = self.coalescer.pop_due(self.loop.time())
        if due:
            self._write(protocol_lines(due, self._encoded))
        when = self.coalescer.next_due()
        if when is not None and self._timer is None:
            self._timer = self.loop.call_at(when, self._flush)

    def _write(self, data: bytes) -> None:
        if self.gone.is_set():
            return
        try:
            write_all(self.fd, data)
        except BrokenPipeError:  # the reader went away: nothing to report
            self.gone.set()
        except OSError as exc:  # a full disk, an I/O error: the caller says so
            self.failure = exc
            self.gone.set()

    def watch_reader(self) -> None:
        """Notice a reader that closes its end while nothing is written
        (a pipe's writing end reports an error then)."""
        try:
            if not stat.S_ISFIFO(os.fstat(self.fd).st_mode):
                return
            self.loop.add_reader(self.fd, self._on_event)
            self._watching = True
        except (OSError, ValueError):
            pass

    def _on_event(self) -> None:
        import select

        poller = select.poll()
        poller.register(self.fd, 0)
        if any(r & (select.POLLERR | select.POLLHUP | select.POLLNVAL)
               for _, r in poller.poll(0)):
            self.gone.set()
            self.close()

    def close(self) -> None:
        if self._watching:
            self.loop.remove_reader(self.fd)
            self._watching = False


class NetworkFeed:
    """The machine's network events (core.roaming), handed to the
    AccountWatch in the event loop.  They are read in a thread of their
    own: pyroute2 runs an asyncio loop of its own inside its blocking
    calls, which cannot run in the thread of a running loop."""

    STOP_WAIT = 2.0  # s the thread has to end when we stop

    def __init__(self, watch: AccountWatch) -> None:
        self.watch = watch
        self.loop = asyncio.get_running_loop()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        self._thread = threading.Thread(target=self._run, name="network-events", daemon=True)
        self._thread.start()

    def _post(self, found: list) -> None:
        try:
            self.loop.call_soon_threadsafe(self.watch.on_network, found)
        except RuntimeError:  # the loop is closed: we are stopping
            pass

    def _say(self, level: int, fmt: str, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(lambda: log.log(level, fmt, *args))
        except RuntimeError:
            pass

    def _run(self) -> None:
        from ..core.roaming import OFFLINE, open_events

        name = self.watch.account.name
        events, why = open_events()
        if events is None:
            self._say(logging.INFO, "%s: no network events (%s): a dead connection is "
                      "noticed by its keepalive", name, why)
            return
        try:
            if not events.online:
                self._post([OFFLINE])
            while True:
                poller = select.poll()
                poller.register(self._stop_r, select.POLLIN)
                for fd in events.fds():
                    poller.register(fd, select.POLLIN)
                if any(fd == self._stop_r for fd, _ in poller.poll(events.timeout() * 1000 + 1)):
                    return
                found = events.process()
                if found:
                    self._post(found)
        except OSError as exc:
            self._say(logging.WARNING, "%s: network events failed (%s): carrying on without "
                      "them", name, exc.strerror or exc)
        finally:
            events.close()

    def close(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(self.STOP_WAIT)
            if self._thread.is_alive():  # still opening: the pipe is left to the exit
                return
        os.close(self._stop_r)
        os.close(self._stop_w)


def names_style(style: str) -> bool:
    """True when non-ASCII names are to be printed decoded (UTF-8).

    auto: as the mbsync on PATH names them: 1.5 and later decode modified
    UTF-7, 1.4 and earlier show it encoded (and so does no mbsync)."""
    if style != "auto":
        return style == "utf8"
    try:
        out = subprocess.run(["mbsync", "--version"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=10, check=False).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return False
    return mbsync_decodes(out)


def mbsync_decodes(version_text: str) -> bool:
    """From `mbsync --version` ("isync 1.4.4"): does it decode UTF-7 names?"""
    words = version_text.split()
    for word in words:
        parts = word.split(".")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            return (int(parts[0]), int(parts[1])) >= (1, 5)
    return False


async def watch(account, names: MailboxNames) -> int:
    """Watch until the reader goes away or a signal: the exit status.

    The signal handlers are in place before anything is awaited.  Told to
    stop, the watcher logs out; that may take SHUTDOWN_LIMIT at most, and a
    second signal cuts it short: the process then ends at once."""
    loop = asyncio.get_running_loop()
    signals: list = []
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        signals.append(signum)
        stop.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    reporter = StdoutReporter(STDOUT)
    watcher = AccountWatch(account, reporter, names)
    loop.add_signal_handler(CHECK_SIGNAL, watcher.on_network, ["changed"],
                            "network change announced (SIGUSR1)")
    feed = NetworkFeed(watcher)
    try:
        if account.network_events:
            feed.open()
        reporter.watch_reader()
        task = asyncio.ensure_future(watcher.run())
        await _first_of(task, stop.wait(), reporter.gone.wait())
        told = len(signals)  # before the shutdown: a signal after it cuts it short
        if not task.done():
            task.cancel()
            stop.clear()
            await _first_of(task, stop.wait(), timeout=SHUTDOWN_LIMIT)
    finally:
        feed.close()
        reporter.close()
        for signum in (*STOP_SIGNALS, CHECK_SIGNAL):
            loop.remove_signal_handler(signum)
    status = EXIT_INTERRUPTED if signals and signals[0] == signal.SIGINT else 0
    if not task.done():
        # Waiting longer, or letting asyncio.run wait for it, would keep
        # the process alive after it was told to go.
        why = (f"not done within {SHUTDOWN_LIMIT:g} s" if len(signals) == told
               else "told again" if told else "told to stop")
        log.warning("%s: leaving without logging out (%s)", account.name, why)
        silence_stdout()
        exit_at_once(status)
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        raise failure
    if reporter.failure is not None:
        raise output_error(reporter.failure)
    return status


async def _first_of(task: asyncio.Future, *others, timeout: float | None = None) -> None:
    """Wait until `task` or one of the `others` (coroutines) is done, or `timeout`."""
    waiters = [asyncio.ensure_future(other) for other in others]
    try:
        await asyncio.wait([task, *waiters], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def list_lines(account, found: list) -> list:
    """What --list prints: the lines `mbsync -l CHANNEL` prints for the
    server's folders when the account is a Channel, else the names."""
    channel = account.channel
    if channel is None:
        return list(found)
    if not channel.patterns:
        return [channel.list_line("")]  # one mailbox pair, whether it exists or not
    return [channel.list_line(name) for name in found]


def run(argv: list | None) -> int:
    args = docopt_args(__doc__, sys.argv[1:] if argv is None else argv)
    if args["--version"]:
        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        return 0
    from ..core import locations
    from ..core import log as logmod

    explicit = args["--config"]
    config_path = locations.expand_home(explicit) if explicit else default_config_path()
    mbsyncrc = (locations.expand_home(args["--mbsyncrc"]) if args["--mbsyncrc"]
                else default_mbsyncrc())
    account = resolve_account(args["--account"], config_path, mbsyncrc,
                              config_explicit=bool(explicit))
    logmod.setup(TOOL, stderr=True, syslog=False, verbose=args["--verbose"])
    names = MailboxNames(utf8=names_style(account.names))
    if args["--list"]:
        found = asyncio.run(list_names(account, names))
        sys.stdout.write("".join(f"{line}\n" for line in list_lines(account, found)))
        sys.stdout.flush()
        return 0
    require_stdout()
    status = asyncio.run(watch(account, names))
    silence_stdout()
    return status


def main(argv: list | None = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
