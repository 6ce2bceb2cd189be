"""Waiting in tests, always with a deadline: the one `wait_until` and the
one `running` every test directory uses.

`wait_until(predicate, timeout)` polls until the predicate holds or the
timeout passes, and asks it once more at the deadline; it returns the
answer and never raises, so the caller asserts with its own message.
`running(pid)` is true while the process exists and is not a zombie
(killed and not yet reaped counts as gone).
"""

from __future__ import annotations

import time
from typing import Callable

from peers.proctable import stat_fields

POLL_INTERVAL_S = 0.02


def wait_until(predicate: Callable[[], object], timeout: float,
               step: float = POLL_INTERVAL_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")
