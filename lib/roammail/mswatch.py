"""mswatch: sync exactly the mailboxes that changed, moments after they change.

Usage:
  mswatch [-c FILE] [-d] [-q] [-f | --daemon]
  mswatch -V
  mswatch -h | --help

Options:
  -c FILE --config=FILE  Configuration file [default: ~/.mswatchrc].
  -d --dry               Print the syncs instead of running them.
  -q --quiet             Less output.
  -f --foreground        Stay in the foreground.
  --daemon               Detach.
  -V --version           Print the version.
  -h --help              Show this help.

Not implemented yet: this release only answers --help.
"""

from __future__ import annotations

import sys

from .cli import guarded, not_implemented


def main(argv: list[str] | None = None) -> int:
    return guarded("mswatch", lambda: not_implemented("mswatch", __doc__, argv))


if __name__ == "__main__":
    sys.exit(main())
