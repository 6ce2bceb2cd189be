"""socketwatch: run a command and kill it when its network traffic stalls.

Usage:
  socketwatch [-t SECONDS] [--] COMMAND [ARGS...]
  socketwatch -h | --help

Options:
  -t SECONDS --timeout=SECONDS  Stall timeout in seconds [default: 120].
  -h --help                     Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("socketwatch", lambda: not_implemented("socketwatch", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
