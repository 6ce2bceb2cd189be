"""cli.py: the one place that turns library exceptions into a one-line error.

`guarded(tool, body)` runs a tool's body and returns its exit status.  A
RoammailError becomes `tool: message` on stderr and its exit code; any other
exception is a bug and is reported in one line too (exit 70), with the
traceback only when ROAMMAIL_DEBUG=1.  A closed stdout (EPIPE) is not an
error for a filter: exit quietly; any other failure to write stdout is
`tool: write error: STRERROR`, exit 74, as coreutils does.  A bad command
line is one line too, exit 64.  It must stay cheap to import: extsmail,
run for every mail sent, imports it.
"""

import io
import posix
import sys

from . import paths
from .errors import EX_IOERR, EX_SOFTWARE, RoammailError

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Callable, NoReturn

    from typing_extensions import Buffer

EXIT_INTERRUPTED = 128 + 2  # as a shell reports SIGINT
CLOSED_AT_START: "set[int]" = set()  # of 0, 1, 2: see standard_streams


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


class OutputError(RoammailError):
    """Standard output cannot be written (a full disk, a closed descriptor):
    `write error: No space left on device`, as coreutils says it."""

    exit_code = EX_IOERR

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"write error: {exc.strerror or exc}")
        self.errno = exc.errno


def output_error(exc: OSError) -> Exception:
    """What a failed write to standard output raises: BrokenPipeError as it
    is (the reader went away, nothing to report), else an OutputError."""
    if isinstance(exc, BrokenPipeError):
        return exc
    return OutputError(exc)


class _StdoutFile(io.FileIO):
    """File descriptor 1 for sys.stdout: a failed write is an OutputError,
    which guarded() reports in one line, and no other OSError of the body."""

    def write(self, data: "Buffer", /) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise output_error(exc) from None


def standard_streams() -> None:
    """Make file descriptors 0, 1 and 2 safe, and stdout's errors ours.

    A descriptor closed at start (Python then sets sys.stdin, sys.stdout or
    sys.stderr to None) gets /dev/null opened in the wrong direction: a
    file the tool opens later cannot land there, and a write to a closed
    stdout still fails (EBADF) as it would have.  sys.stdout (unless a test
    harness replaced it) becomes a stream over _StdoutFile.
    """
    for fd, stream, flags in ((0, sys.stdin, posix.O_WRONLY), (1, sys.stdout, posix.O_RDONLY),
                              (2, sys.stderr, posix.O_RDONLY)):
        if stream is not None:
            continue
        CLOSED_AT_START.add(fd)
        try:
            posix.fstat(fd)
            continue  # already taken again: not ours to replace
        except OSError:
            pass
        try:
            opened = posix.open("/dev/null", flags)
            if opened != fd:
                posix.dup2(opened, fd)
                posix.close(opened)
            else:
                posix.set_inheritable(fd, True)  # a child gets it too
        except OSError:
            pass
    old = sys.stdout
    if old is not sys.__stdout__ or isinstance(getattr(old, "buffer", None), _Buffered):
        return  # a test's capture, or done already
    try:
        if old is not None:
            old.flush()
        raw = _StdoutFile(1, "w", closefd=False)
    except (OSError, ValueError):
        return
    sys.stdout = io.TextIOWrapper(
        _Buffered(raw), encoding=getattr(old, "encoding", None) or "utf-8",
        errors=getattr(old, "errors", None) or "strict",
        line_buffering=bool(getattr(old, "line_buffering", False)))


def require_stdout() -> None:
    """OutputError (EBADF) when standard output was closed at start: for a
    tool that would otherwise start long work before its first write."""
    if 1 in CLOSED_AT_START:
        raise OutputError(OSError(9, posix.strerror(9)))


class _Buffered(io.BufferedWriter):
    """The buffer of our sys.stdout (its type tells standard_streams it ran)."""


def finish_output(tool: str, status: int) -> int:
    """Flush stdout; a write error is one line and EX_IOERR, a reader gone
    away is silent.  Either way the rest of the buffer goes to /dev/null,
    so that the interpreter's last flush has nothing to complain about."""
    stream = sys.stdout
    if stream is None:
        return status
    try:
        stream.flush()
    except BrokenPipeError:
        silence_stdout()
    except OutputError as exc:
        error(tool, str(exc))
        silence_stdout()
        return EX_IOERR if status == 0 else status
    except (OSError, ValueError) as exc:  # a stream we did not wrap
        if not isinstance(exc, OSError):
            return status
        error(tool, str(OutputError(exc)))
        silence_stdout()
        return EX_IOERR if status == 0 else status
    return status


def guarded(tool: str, body: "Callable[[], int | None]") -> int:
    """Run `body`; return its status, or report its error in one line.

    Standard output is flushed before returning: a write error anywhere is
    `tool: write error: STRERROR` and EX_IOERR; a reader that went away
    (EPIPE) ends the tool quietly with status 0.
    """
    standard_streams()
    try:
        status = body()
        status = 0 if status is None else int(status)
    except OutputError as exc:
        error(tool, str(exc))
        silence_stdout()
        return exc.exit_code
    except RoammailError as exc:
        if debug_enabled():
            raise
        error(tool, str(exc))
        status = exc.exit_code
    except BrokenPipeError:
        # The reader went away: not worth a message.
        silence_stdout()
        return 0
    except SystemExit as exc:  # sys.exit() in the body, or a library's
        code = exc.code
        if code is None:
            status = 0
        elif isinstance(code, int):
            status = code
        else:
            error(tool, str(code))
            status = 1
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line unless debugging
        if debug_enabled():
            raise
        error(tool, f"internal error: {type(exc).__name__}: {exc}"
                    " (set ROAMMAIL_DEBUG=1 for a traceback)")
        status = EX_SOFTWARE
    return finish_output(tool, status)


def silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush into
    a pipe whose reader went away (or a full disk) does not complain."""
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

    words = sys.argv[1:] if argv is None else list(argv)
    try:
        return docopt(usage, argv=words, version=version, options_first=options_first)
    except DocoptExit as exc:
        found = diagnose(usage, words, options_first)
        raise UsageError(f"{found}; see --help" if found
                         else usage_problem(str(exc), usage)) from None


def diagnose(usage: str, argv: "list[str]", options_first: bool = False) -> "str | None":
    """What is wrong with a command line docopt refused, found without
    docopt's words (the docopt Debian packages, 0.6, says only "Usage:"):
    an unknown option, an option without its argument, or operands too
    many (the line parses without them).  None when it cannot tell."""
    from docopt import DocoptExit, docopt

    takes_arg = options_of(usage)
    longs = [name for name in takes_arg if name.startswith("--")]
    operands: list[int] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            operands.extend(range(i + 1, len(argv)))
            break
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            matches = [name] if name in takes_arg else [n for n in longs if n.startswith(name)]
            if len(matches) != 1:
                return f"unknown option {name}" if not matches else f"ambiguous option {name}"
            if takes_arg[matches[0]] and "=" not in word:
                if i + 1 >= len(argv):
                    return f"option {matches[0]} requires an argument"
                i += 1
        elif word.startswith("-") and word != "-":
            for j, letter in enumerate(word[1:], start=1):
                name = "-" + letter
                if name not in takes_arg:
                    return f"unknown option {name}"
                if takes_arg[name]:
                    if j == len(word) - 1:
                        if i + 1 >= len(argv):
                            return f"option {name} requires an argument"
                        i += 1
                    break
        else:
            operands.append(i)
            if options_first:
                break
        i += 1
    # The operands from the k-th on are too many when the line parses
    # without them: the k-th is the first extra one.
    for k in reversed(range(len(operands))):
        dropped = set(operands[k:])
        try:
            docopt(usage, argv=[w for i, w in enumerate(argv) if i not in dropped],
                   options_first=options_first)
        except (DocoptExit, SystemExit):
            continue
        return f"extra operand '{argv[operands[k]]}'"
    return None


def options_of(usage: str) -> "dict[str, bool]":
    """Every option a usage text names, and whether it takes an argument:
    as docopt reads it, from the option lines (`-c FILE, --conf=FILE`)
    and from `--name=ARG` in the usage lines."""
    import re

    found: dict[str, bool] = {}
    for line in usage.splitlines():
        spec = line.strip()
        if spec.startswith("-"):  # an option line: its description starts after two spaces
            spec = re.split(r"\s{2,}", spec, maxsplit=1)[0]
            for name, arg in re.findall(r"(--?[\w?][\w-]*)(?:[ =]([A-Z<][\w<>-]*))?", spec):
                found[name] = found.get(name, False) or bool(arg)
        else:
            for name, arg in re.findall(r"(?<![\w-])(--?[A-Za-z0-9?][\w-]*)(=[\w<>-]+)?", line):
                found[name] = found.get(name, False) or bool(arg)
    return found


def usage_problem(text: str, usage: str = "") -> str:
    """docopt's complaint as one line a user can act on: which option is
    unknown, which operand is one too many, which option lacks its
    argument; never docopt's internals."""
    import re

    first = text.strip().splitlines()[0] if text.strip() else ""
    if first.startswith("Warning: found unmatched"):
        problems = []
        for kind, fields in re.findall(r"(Option|Argument|Command)\(([^)]*)\)", first):
            names = re.findall(r"'((?:[^'\\]|\\.)*)'", fields)
            if kind == "Option":
                # Option(short, long, argcount, value): the first quoted
                # field is the name (short, else long).
                name = names[0] if names else "?"
                spelled = re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", usage)
                if usage and not spelled:
                    problems.append(f"unknown option {name}")
                else:
                    problems.append(f"option {name} is misplaced, repeated or lacks its operand")
            else:
                # Argument(name, value) / Command(name, value): the word given.
                word = names[-1] if names else "?"
                problems.append(f"extra operand '{word}'")
        if problems:
            return f"{problems[0]}; see --help"
    if not first or first.lower().startswith("usage:"):
        return "missing operand, or options that do not go together; see --help"
    match = re.match(r"(\S+) requires argument$", first)
    if match:
        return f"option {match.group(1)} requires an argument; see --help"
    return f"{first}; see --help"


def not_implemented(tool: str, usage: str, argv: "list[str] | None") -> int:
    """The body of a tool not built yet: answer --help, else exit 70."""
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        sys.stdout.write(usage.strip() + "\n")
        return 0
    error(tool, "not implemented yet")
    return EX_SOFTWARE
