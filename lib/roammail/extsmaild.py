"""extsmaild: deliver the extsmail queue through external commands.

Usage:
  extsmaild [-c CONF] [-e EXTERNALS] [-m MODE] [-f] [-v]
  extsmaild -t [EXTERNALS]
  extsmaild -h | --help

Options:
  -c CONF       Configuration file.
  -e EXTERNALS  Externals file.
  -m MODE       batch or daemon [default: batch].
  -f --foreground  Stay in the foreground in daemon mode.
  -t            Test the externals file.
  -v            Verbose.
  -h --help     Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("extsmaild", lambda: not_implemented("extsmaild", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
