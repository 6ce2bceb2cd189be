"""extsmail: a sendmail lookalike that spools every message durably.

Usage:
  extsmail [SENDMAIL-ARGUMENTS...] < message
  extsmail -V | --version
  extsmail --help

Every argument is stored verbatim with the message read from standard
input, and later appended to the command line of the external that
extsmaild(1) delivers it through.  The message is in the spool only when
it is complete and on disk; extsmail exits 0 only then.  An empty message
is not spooled (exit 0).  The configuration is ~/.extsmail/conf, else
$XDG_CONFIG_HOME/roammail/extsmail.conf, else /etc/extsmail/conf.
"""

# This module runs for every mail sent: it must not import docopt, plumbum
# or anything else heavy.  It parses no options (a lone --help or --version
# excepted, and a lone -V, which sendmail only knows with an argument):
# every argument belongs to the sendmail command line.

import sys

from ..core import locations, paths
from ..core.cli import exit_at_once, guarded
from ..core.errors import ConfigError, IOFailure
from . import spool
from .conf import ExtsmailConf, parse_extsmail_conf, read_config_file

TYPE_CHECKING = False  # typing is slow to import: only type checkers read it
if TYPE_CHECKING:
    from typing import BinaryIO

TOOL = "extsmail"


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


def dispatch(words: "list[str]") -> int:
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
    status = guarded(TOOL, lambda: dispatch(words))
    if argv is None:
        exit_at_once(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
