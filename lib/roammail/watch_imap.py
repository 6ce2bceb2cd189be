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
import os
import signal
import stat
import subprocess
import sys

from . import __version__
from .cli import docopt_args, guarded, silence_stdout
from .imapwatch import AccountWatch, MailboxNames, Reporter, list_names
from .watch_imap_config import default_config_path, default_mbsyncrc, resolve_account
from .watchproto import COALESCE_WINDOW, READY_LINE, Coalescer, protocol_lines, write_all

TOOL = "watch-imap"
STDOUT = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT


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
        except OSError:  # EPIPE above all: the reader went away
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
    """Watch until the reader goes away or a signal: the exit status."""
    loop = asyncio.get_running_loop()
    reporter = StdoutReporter(STDOUT)
    reporter.watch_reader()
    stopped: dict = {}
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        stopped.setdefault("signal", signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, on_signal, signum)
    watcher = AccountWatch(account, reporter, names)
    task = asyncio.ensure_future(watcher.run())
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reporter.gone.wait())]
    try:
        await asyncio.wait([task, *waits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        task.cancel()  # a watch that ended with an error is done: no-op
        try:
            await task
        except BaseException:  # noqa: B036 - looked at below, once cleaned up
            pass
        reporter.close()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()
    if stopped.get("signal") == signal.SIGINT:
        return EXIT_INTERRUPTED
    return 0


def run(argv: list | None) -> int:
    args = docopt_args(__doc__, sys.argv[1:] if argv is None else argv)
    if args["--version"]:
        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        return 0
    from . import locations
    from . import log as logmod

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
        sys.stdout.write("".join(f"{name}\n" for name in found))
        sys.stdout.flush()
        return 0
    try:
        os.fstat(STDOUT)
    except OSError:
        from .errors import IOFailure

        raise IOFailure("standard output is closed") from None
    status = asyncio.run(watch(account, names))
    silence_stdout()
    return status


def main(argv: list | None = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
