"""inputkill: run a command and kill it when standard input closes.

Usage:
  inputkill [--grace=SECONDS] [--] COMMAND [ARGS...]
  inputkill -h | --help
  inputkill -V | --version

Options:
  --grace=SECONDS  Seconds between SIGTERM and SIGKILL [default: 5].
  -h --help        Show this help (-? too, the original's spelling).
  -V --version     Show the version.
"""

from __future__ import annotations

import os
import sys

from .. import __version__
from ..core.cli import guarded
from ..core.errors import UsageError
from ..core.supervise import Supervisor, parse_command_line
from ..core.times import parse_seconds

TOOL = "inputkill"
CHUNK = 64 * 1024  # bytes read (and dropped) from our stdin at a time


def stdin_closed(fd: int = 0) -> bool:
    """Read (and drop) what is waiting on `fd`; True at EOF or on an error."""
    try:
        return os.read(fd, CHUNK) == b""
    except BlockingIOError:
        return False  # a non-blocking stdin with nothing to read after all
    except OSError:
        return True


def occupy_closed_stdin() -> None:
    """A closed fd 0 reads as end of file: put /dev/null there, so that no
    descriptor of ours lands on 0 and is taken for our input."""
    try:
        os.fstat(0)
    except OSError:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.close(fd)


def run(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    # -? is the original's help option, which docopt cannot spell; only
    # before the command (`inputkill ls -?` runs `ls -?`).
    for word in words:
        if word == "-?":
            sys.stdout.write(__doc__.strip() + "\n")
            return 0
        if word == "--" or not word.startswith("-"):
            break
    args = parse_command_line(__doc__, argv, version=f"{TOOL} (roammail) {__version__}")
    occupy_closed_stdin()
    try:
        grace = parse_seconds(args["--grace"])
    except ValueError as exc:
        raise UsageError(f"--grace: {exc}") from None
    command = [args["COMMAND"], *args["ARGS"]]
    with Supervisor(command) as child:
        child.start()
        while not child.exited:
            if child.wait(None, fds=[0]) and stdin_closed(0):
                child.stop(grace)
        return child.exit_status()


def main(argv: list[str] | None = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
