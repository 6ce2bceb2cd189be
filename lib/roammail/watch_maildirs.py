"""watch-maildirs: print the name of each maildir folder that changes.

Usage:
  watch-maildirs [-m DIR]
  watch-maildirs -h | --help

Options:
  -m DIR --maildir=DIR  The base maildir [default: $MAILDIR or ~/Maildir].
  -h --help             Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("watch-maildirs", lambda: not_implemented("watch-maildirs", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
