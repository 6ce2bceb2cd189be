"""cli.py: the one place that turns library exceptions into a one-line error.

`guarded(tool, body)` runs a tool's body and returns its exit status.  A
RoammailError becomes `tool: message` on stderr and its exit code; any other
exception is a bug and is reported in one line too (exit 70), with the
traceback only when ROAMMAIL_DEBUG=1.  A closed stdout (EPIPE) is not an
error for a filter: exit quietly.  It must stay cheap to import: extsmail,
run for every mail sent, imports it.
"""

import posix
import sys

from . import paths
from .errors import EX_SOFTWARE, RoammailError

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable, NoReturn

EXIT_INTERRUPTED = 128 + 2  # as a shell reports SIGINT


def debug_enabled() -> bool:
    return paths.getenv("ROAMMAIL_DEBUG") == "1"


def error(tool: str, message: str) -> None:
    """Write `tool: message` as one line on stderr."""
    text = " ".join(str(message).split("\n"))
    try:
        sys.stderr.write(f"{tool}: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def guarded(tool: str, body: "Callable[[], int | None]") -> int:
    """Run `body`; return its status, or report its error in one line."""
    try:
        status = body()
        return 0 if status is None else int(status)
    except RoammailError as exc:
        if debug_enabled():
            raise
        error(tool, str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away: not worth a message.
        silence_stdout()
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless debugging
        if debug_enabled():
            raise
        error(tool, f"internal error: {type(exc).__name__}: {exc}"
                    " (set ROAMMAIL_DEBUG=1 for a traceback)")
        return EX_SOFTWARE


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush into
    a pipe whose reader went away does not complain."""
    try:
        devnull = posix.open("/dev/null", posix.O_WRONLY)
        posix.dup2(devnull, 1)
        posix.close(devnull)
    except OSError:
        pass


def exit_at_once(status: int) -> "NoReturn":
    """Flush stdout and stderr and end the process with `status`, skipping
    the interpreter's finalization (freeing every module and object one by
    one), which costs extsmail, run for every mail sent, more than its own
    work.  Only for a program whose work is done and durable: no atexit
    handler runs, no buffered file but stdout and stderr is flushed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    posix._exit(status)


def docopt_args(usage: str, argv: "list[str] | None", version: "str | None" = None,
                options_first: bool = False) -> dict:
    """Parse argv with docopt-ng; a bad command line raises UsageError.

    `--help` prints the usage and exits 0, as docopt does.  With
    options_first, everything from the first operand on is an operand (a
    wrapper's command: `inputkill ls -l` runs `ls -l`).
    """
    from docopt import DocoptExit, docopt  # imported late: heavy for extsmail

    from .errors import UsageError

    try:
        return docopt(usage, argv=argv, version=version, options_first=options_first)
    except DocoptExit as exc:
        raise UsageError(usage_problem(str(exc))) from None


def usage_problem(text: str) -> str:
    """docopt's complaint as one line a user can act on."""
    import re

    first = text.strip().splitlines()[0] if text.strip() else ""
    if first.startswith("Warning: found unmatched"):
        words = re.findall(r"(?:Option|Argument|Command)\([^,]*, '([^']*)'", first)
        if words:
            return f"unexpected {' '.join(words)}; see --help"
    if not first or first.lower().startswith("usage:"):
        return "bad command line; see --help"
    return f"{first}; see --help"


def not_implemented(tool: str, usage: str, argv: "list[str] | None") -> int:
    """The body of a tool not built yet: answer --help, else exit 70."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        sys.stdout.write(usage.strip() + "\n")
        return 0
    error(tool, "not implemented yet")
    return EX_SOFTWARE
