"""watchproto.py: the watcher protocol of mswatch, as a watcher speaks it.

A watcher (watch-maildirs, watch-imap) prints one empty line once its
watches are in place, then the name of each mailbox that changes, one per
line, flushed at once.  This module owns the pieces both watchers share:
the encoding of the lines, a complete write of them to a descriptor, the
test for a reader that has gone away, and `Coalescer`, which holds back a
burst of changes of one mailbox so that it is printed once per window.
It never opens, polls or reads anything itself.
"""

from __future__ import annotations

import os
import select

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

READY_LINE = b"\n"

# How long a burst in one folder may be held back, in seconds: a folder
# reported less than this long ago is reported again once this long after
# that line, however many changes came in between.  The contract with
# mswatch is "never later than 50 ms"; 20 ms leaves room for scheduling.
COALESCE_WINDOW = 0.020


class Coalescer:
    """Per-name throttle: a name is due at once unless it was written less
    than `window` seconds ago; then it is due when that window ends, once,
    however many changes came in between.  No change waits longer than
    `window` (plus the caller's scheduling delay).  Times are seconds on a
    monotonic clock, passed in: a pure object, tested with a fake clock."""

    def __init__(self, window: float = COALESCE_WINDOW) -> None:
        self.window = window
        self._last: dict[str, float] = {}     # name -> when it was last written
        self._pending: dict[str, float] = {}  # name -> when it is due

    def add(self, name: str, now: float) -> None:
        if name in self._pending:
            return
        last = self._last.get(name)
        if last is None or now - last >= self.window:
            self._pending[name] = now
        else:
            self._pending[name] = last + self.window

    def next_due(self) -> float | None:
        """The earliest time a pending name is due, None if none is."""
        return min(self._pending.values()) if self._pending else None

    def pop_due(self, now: float) -> list[str]:
        """The names due at `now` (in the order they were added), marked as
        written at `now`."""
        due = [name for name, when in self._pending.items() if when <= now]
        for name in due:
            del self._pending[name]
            self._last[name] = now
        if len(self._last) > 4 * len(self._pending) + 256:
            self._last = {name: when for name, when in self._last.items()
                          if now - when < self.window}
        return due

    def pop_all(self) -> list[str]:
        names = list(self._pending)
        self._pending.clear()
        return names


def write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # a pipe reader slower than us, or a signal
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view):]


def protocol_lines(names: Iterable[str], cache: dict[str, bytes] | None = None,
                   delimiter: str = ".") -> bytes:
    """The protocol lines for `names`: each as the bytes on disk, then a
    newline.  delimiter: what stands for the Maildir++ hierarchy dot of a
    folder name ("/" names "a.b" "a/b", as mbsync does).  `cache` keeps the
    encoded lines between calls (of one delimiter)."""
    if cache is None:
        cache = {}
    out = []
    for name in names:
        line = cache.get(name)
        if line is None:
            shown = name if delimiter == "." else name.replace(".", delimiter)
            line = cache[name] = os.fsencode(shown) + b"\n"
        out.append(line)
    return b"".join(out)


def closed_revents(revents: int) -> bool:
    """True when poll() says the reading end of our output is gone."""
    return bool(revents & (select.POLLERR | select.POLLHUP | select.POLLNVAL))
