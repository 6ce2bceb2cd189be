"""inputkill: run a command and kill it when standard input closes.

Usage:
  inputkill [--grace=SECONDS] [--] COMMAND [ARGS...]
  inputkill -h | --help

Options:
  --grace=SECONDS  Seconds between TERM and KILL [default: 5].
  -h --help        Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("inputkill", lambda: not_implemented("inputkill", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
