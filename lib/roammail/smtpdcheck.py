"""smtpdcheck: tell whether a more preferred SMTP server is up.

Usage:
  smtpdcheck [--stop=HOST] [--timeout=SECONDS] SERVER...
  smtpdcheck -h | --help

Options:
  --stop=HOST          Stop before this host.
  --timeout=SECONDS    Seconds per probe [default: 10].
  -h --help            Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("smtpdcheck", lambda: not_implemented("smtpdcheck", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
