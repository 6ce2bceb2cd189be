"""syncmail: move new mail from a server's maildir to the laptop over ssh.

Usage:
  syncmail [-c CONFIG] [-n] [-v] [-q] [SOURCE...]
  syncmail -h | --help

Options:
  -c CONFIG --config=CONFIG  Configuration file.
  -n --dry-run               Show what would move.
  -v --verbose               More output.
  -q --quiet                 Only errors.
  -h --help                  Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("syncmail", lambda: not_implemented("syncmail", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
