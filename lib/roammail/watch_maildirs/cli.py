"""watch-maildirs: print the name of each maildir folder that changes.

Usage:
  watch-maildirs [-m DIR | --maildir=DIR] [--exit-on-new-folder] [--delimiter=CHAR]
  watch-maildirs -V | --version
  watch-maildirs -h | --help

Options:
  -m DIR, --maildir=DIR  The base maildir (INBOX), which holds the Maildir++
                         folders .NAME; default: $MAILDIR, else ~/Maildir.
  --exit-on-new-folder   Exit 2 when a folder is created, removed or
                         renamed, instead of following the change (the
                         original's page says it exits 2; it rarely does).
  --delimiter=CHAR       Print the hierarchy of a folder name with CHAR
                         instead of the Maildir++ dot: --delimiter=/ prints
                         .a.b as a/b, the name mbsync gives it.
  -V, --version          Print the version.
  -h, --help             Show this help (-? too).
"""

from __future__ import annotations

import os
import signal
import sys

from .. import __version__
from ..core.cli import docopt_args, guarded, require_stdout, silence_stdout
from .watch import MaildirWatch, WatchError, stream_changes

TOOL = "watch-maildirs"
STDOUT = 1


class _Terminated(Exception):
    """SIGTERM arrived: stop quietly, exit 0."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


def default_maildir(environ: dict[str, str]) -> str:
    """$MAILDIR, else $HOME/Maildir (the password entry's home without $HOME)."""
    if environ.get("MAILDIR"):
        return os.path.expanduser(environ["MAILDIR"])
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, "Maildir")


def run(argv: list[str] | None, environ: dict[str, str]) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    # -? is the original's help option, which docopt cannot spell (but a
    # directory named "-?" after -m is a directory).
    if any(arg == "-?" and (i == 0 or args_in[i - 1] != "-m")
           for i, arg in enumerate(args_in)):
        sys.stdout.write(__doc__.strip() + "\n")
        sys.stdout.flush()
        return 0
    args = docopt_args(__doc__, args_in)
    if args["--version"]:
        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        sys.stdout.flush()
        return 0
    maildir = args["--maildir"] or default_maildir(environ)
    delimiter = args["--delimiter"] or "."
    if len(delimiter) != 1 or delimiter in "\n\0":
        raise WatchError(f"--delimiter wants one character, not {delimiter!r}")
    require_stdout()
    watch = MaildirWatch(maildir, exit_on_new_folder=args["--exit-on-new-folder"])
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        try:
            watch.start()
            stream_changes(watch, STDOUT, delimiter=delimiter)
        finally:
            # A SIGTERM from here on (mswatch stops its watchers when the
            # reader is already gone) has nothing left to interrupt.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            watch.close()
    except _Terminated:
        pass
    # The reader went away (or SIGTERM): nothing is left for stdout to take.
    silence_stdout()
    return 0


def main(argv: list[str] | None = None) -> int:
    return guarded(TOOL, lambda: run(argv, dict(os.environ)))


if __name__ == "__main__":
    sys.exit(main())
