"""extsmail: a sendmail lookalike that spools every message durably.

Usage:
  extsmail [SENDMAIL-ARGUMENTS...] < message
  extsmail -bp          (also: mailq)
  extsmail -q
  extsmail -V | --version
  extsmail --help

Every argument is stored verbatim with the message read from standard
input, and later appended to the command line of the external that
extsmaild(1) delivers it through.  The message is in the spool only when
it is complete and on disk; extsmail exits 0 only then.  An empty message
is not spooled (exit 0).  A lone -bp, or the name mailq, lists the queue
as sendmail's mailq does; a lone -q delivers it now (extsmaild --flush).
The configuration is ~/.extsmail/conf, else
$XDG_CONFIG_HOME/roammail/extsmail.conf, else /etc/extsmail/conf.
"""

# This module runs for every mail sent: it must not import docopt, plumbum
# or anything else heavy.  It parses no options (a lone --help or --version
# excepted, a lone -V, which sendmail only knows with an argument, and the
# queue commands -bp and -q, which import what they need when given):
# every argument belongs to the sendmail command line.

import sys

from ..core import locations, paths
from ..core.cli import exit_at_once, guarded
from ..core.errors import ConfigError, IOFailure, UsageError
from . import spool
from .conf import ExtsmailConf, parse_extsmail_conf, read_config_file

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import BinaryIO

TOOL = "extsmail"
MAILQ = "mailq"  # the name under which extsmail lists the queue
QUEUE_COMMANDS = ("-bp", "-q")


def load_conf() -> "ExtsmailConf":
    """The first conf file that exists, parsed; ConfigError when none does."""
    candidates = locations.extsmail_conf_candidates()
    path = locations.first_existing(candidates)
    if path is None:
        raise ConfigError(candidates[0], 0, "no configuration file (also looked for "
                          + ", ".join(candidates[1:]) + ")")
    return parse_extsmail_conf(read_config_file(path), path)


def standard_input() -> "BinaryIO":
    """The message source; IOFailure when file descriptor 0 is closed."""
    if sys.stdin is None:  # Python's way of saying fd 0 was not open
        raise IOFailure("cannot read the message: standard input is closed")
    return sys.stdin.buffer


def run(args: "list[bytes]", message: "BinaryIO") -> int:
    conf = load_conf()
    spool.enqueue(locations.expand_home(conf.spool_dir), args, message)
    return 0


def queue_command(command: str, words: "list[str]", program: str = TOOL) -> int:
    """-bp (mailq): list the queue; -q: one delivery pass, as
    `extsmaild --flush`."""
    if words:
        raise UsageError(f"{program} takes no arguments" if program == MAILQ
                         else f"{command} takes no other arguments")
    if command == "-q":
        from .extsmaild import run as extsmaild_run

        return extsmaild_run(["--flush"])
    from .queue import mailq

    conf = load_conf()
    spool_dir = locations.expand_home(conf.spool_dir)
    spool.check_spool_dir(spool_dir, create=True)
    return mailq(spool_dir, sys.stdout)


def dispatch(words: "list[str]", program: str = TOOL) -> int:
    if program == MAILQ:
        return queue_command("-bp", words[1:] if words[:1] == ["-bp"] else words, program)
    if words[:1] and words[0] in QUEUE_COMMANDS:
        return queue_command(words[0], words[1:])
    if words == ["--help"]:
        sys.stdout.write(__doc__.split("\n", 2)[2])
        return 0
    if words in (["--version"], ["-V"]):
        from .. import __version__

        sys.stdout.write(f"extsmail (roammail) {__version__}\n")
        return 0
    return run([paths.fsencode(word) for word in words], standard_input())


def main(argv: "list[str] | None" = None) -> int:
    """The program (argv None: sys.argv, and the process ends here, at once,
    when the message is spooled or refused) or a call (argv given: the
    status is returned)."""
    words = sys.argv[1:] if argv is None else argv
    program = paths.basename(sys.argv[0]) if argv is None and sys.argv else TOOL
    tool = MAILQ if program == MAILQ else TOOL
    status = guarded(tool, lambda: dispatch(words, program))
    if argv is None:
        exit_at_once(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
