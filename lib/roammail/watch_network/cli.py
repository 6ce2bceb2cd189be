"""watch-network: print online, offline, changed or resumed as the network changes.

Usage:
  watch-network [-q] [--settle=SECONDS] [--exec=CMD]
  watch-network --once [-q]
  watch-network -V | --version
  watch-network -h | --help

Options:
  --exec=CMD          Run CMD with /bin/sh for each line (the first one too),
                      with the event as $1 and in $ROAMMAIL_EVENT.
  --settle=SECONDS    How long a burst of changes may last before it is
                      reported as one event [default: 2].
  --once              Print the current state and exit: 0 online, 1 offline.
  -q, --quiet         Print nothing on standard output.
  -V, --version       Print the version.
  -h, --help          Show this help.
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys

from .. import __version__
from ..core import child
from ..core.cli import docopt_args, error, guarded, silence_stdout
from ..core.errors import UsageError
from ..core.roaming import OFFLINE, ONLINE, NetworkEvents
from ..core.watchproto import closed_revents, write_all

TOOL = "watch-network"
STDOUT = 1
EXIT_OFFLINE = 1  # --once: the machine is offline


class _Terminated(Exception):
    """SIGTERM arrived: stop quietly, exit 0."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


def parse_settle(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--settle wants a number of seconds, not {text!r}")
    return value


class Reporter:
    """Prints each event line and runs the --exec command for it."""

    def __init__(self, quiet: bool, command: str | None, environ: dict[str, str]) -> None:
        self.quiet = quiet
        self.command = command
        self.environ = environ

    def report(self, event: str) -> None:
        if not self.quiet:
            write_all(STDOUT, event.encode() + b"\n")
        if self.command is not None:
            env = dict(self.environ, ROAMMAIL_EVENT=event)
            res = child.run_child(["/bin/sh", "-c", self.command, TOOL, event], env=env)
            if res.stderr:
                try:
                    sys.stderr.buffer.write(res.stderr)
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
            if not res.ok:
                error(TOOL, f"--exec command for {event}: {res.describe()}")


def watch(source: NetworkEvents, reporter: Reporter) -> None:
    """Report the current state, then each event until stdout's reader goes."""
    reporter.report(ONLINE if source.online else OFFLINE)
    while True:
        poller = select.poll()
        for fd in source.fds():
            poller.register(fd, select.POLLIN)
        if not reporter.quiet:
            poller.register(STDOUT, 0)  # only errors and hang-ups: the reader's end
        for fd, revents in poller.poll(source.timeout() * 1000 + 1):
            if fd == STDOUT and closed_revents(revents):
                return
        for event in source.process():
            reporter.report(event)


def run(argv: list[str] | None, environ: dict[str, str]) -> int:
    args = docopt_args(__doc__, argv)
    if args["--version"]:
        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        sys.stdout.flush()
        return 0
    settle = parse_settle(args["--settle"])
    reporter = Reporter(args["--quiet"], args["--exec"], environ)
    signal.signal(signal.SIGTERM, _on_sigterm)
    source = NetworkEvents(settle, dbus=not args["--once"])
    try:
        try:
            source.open()
            if args["--once"]:
                reporter.report(ONLINE if source.online else OFFLINE)
                return 0 if source.online else EXIT_OFFLINE
            watch(source, reporter)
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            source.close()
    except _Terminated:
        pass
    silence_stdout()  # the reader went away (or SIGTERM): nothing left to say
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(TOOL, lambda: run(argv, dict(os.environ)))


if __name__ == "__main__":
    sys.exit(main())
