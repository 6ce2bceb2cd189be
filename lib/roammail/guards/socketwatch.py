"""socketwatch: run a command and kill it when its network traffic stalls.

Usage:
  socketwatch [-t SECONDS | --timeout=SECONDS] [--grace=SECONDS] [--] COMMAND [ARGS...]
  socketwatch -h | --help
  socketwatch -V | --version

Options:
  -t SECONDS --timeout=SECONDS  Kill the command after this long without
                                network traffic [default: 120].
  --grace=SECONDS               Seconds between SIGTERM and SIGKILL [default: 5].
  -h --help                     Show this help.
  -V --version                  Show the version.
"""

from __future__ import annotations

import os
import sys
import time

from .. import __version__
from ..core.cli import error, guarded
from ..core.errors import UnavailableError, UsageError
from ..core.supervise import Supervisor, parse_command_line
from ..core.times import parse_seconds
from ..core.traffic import TcpDiag, TrafficWatch

TOOL = "socketwatch"
EXIT_TIMED_OUT = 124  # as timeout(1): we killed the command
# We look at the traffic every timeout/10 seconds, at least every second
# and at most ten times a second: a stall is noticed at most that late.
POLL_MAX = 1.0
POLL_MIN = 0.1


def poll_interval(timeout: float) -> float:
    """Seconds between two looks at the traffic for this timeout."""
    return min(POLL_MAX, max(POLL_MIN, timeout / 10))


def _seconds(args: dict, option: str, *, positive: bool) -> float:
    try:
        value = parse_seconds(args[option])
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if positive and value <= 0:
        raise UsageError(f"{option}: must be more than 0 seconds")
    return value


def _seconds_text(value: float) -> str:
    return f"{value:g} second" if value == 1 else f"{value:g} seconds"


def run(argv: list[str] | None) -> int:
    args = parse_command_line(__doc__, argv, version=f"{TOOL} (roammail) {__version__}")
    timeout = _seconds(args, "--timeout", positive=True)
    grace = _seconds(args, "--grace", positive=False)
    command = [args["COMMAND"], *args["ARGS"]]
    try:
        diag = TcpDiag()
        diag.dump()  # fail now, not when the command is half-way
    except OSError as exc:
        raise UnavailableError(f"cannot read TCP socket statistics (sock_diag): "
                               f"{exc.strerror or exc}") from None
    with diag, Supervisor(command, devnull_stdin=False, subreaper=True) as child:
        child.start()
        assert child.pid is not None  # started
        watch = TrafficWatch(parent=os.getpid(), session=child.pid, diag=diag)
        interval = poll_interval(timeout)
        last_activity = next_look = time.monotonic()
        warned = False
        while True:
            child.wait(max(0.0, next_look - time.monotonic()))
            if child.exited:
                return child.exit_status()
            now = time.monotonic()
            if now < next_look:
                continue  # woken by a signal or an orphan's exit
            next_look = now + interval
            try:
                active = watch.look()
            except OSError as exc:  # benefit of the doubt: never kill blind
                if not warned:
                    error(TOOL, f"cannot read TCP socket statistics: "
                                f"{exc.strerror or exc}; not counting this as a stall")
                    warned = True
                active = True
            if active:
                last_activity = now
            elif now - last_activity >= timeout:
                error(TOOL, f"no network traffic for {_seconds_text(timeout)}: "
                            f"stopping {command[0]}")
                child.stop(grace, members=lambda: {
                    pid: p.pgid for pid, p in watch.members().items()})
                return EXIT_TIMED_OUT


def main(argv: list[str] | None = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
