"""health.py: extsmaild's state after each pass, for roammail-status.

One record per spool (core.health, tool "extsmaild", key spool_dir): the
queue's length and its oldest message's queue time, the messages set
aside in failed/, and per external the time of its last success and of
its last failure with the reason.  A batch run knows only its own pass,
so the externals' times are merged with the previous record.  Written
once at the end of every pass that had a message (not over an empty
queue: the status command counts the queue itself), never per message;
a failure to write it is logged once and never fails a delivery.
"""

from __future__ import annotations

import os
import time

from ..core import health
from . import spool

TOOL = "extsmaild"

_told: set[str] = set()  # health errors logged already


def _queued_at(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def externals_merged(previous: dict | None, last_success: dict[str, float],
                     last_failure: dict[str, tuple[float, str]]) -> dict[str, dict]:
    """Per external: last_success, last_failure, last_error; the later of
    what this process saw and what the previous record said."""
    merged: dict[str, dict] = {}
    old = previous.get("externals") if isinstance(previous, dict) else None
    if isinstance(old, dict):
        for name, entry in old.items():
            if isinstance(name, str) and isinstance(entry, dict):
                merged[name] = {k: entry.get(k) for k in
                                ("last_success", "last_failure", "last_error")}
    for name, when in last_success.items():
        entry = merged.setdefault(name, {"last_success": None, "last_failure": None,
                                         "last_error": None})
        if not isinstance(entry.get("last_success"), (int, float)) \
                or when > entry["last_success"]:
            entry["last_success"] = round(when, 3)
    for name, (when, why) in last_failure.items():
        entry = merged.setdefault(name, {"last_success": None, "last_failure": None,
                                         "last_error": None})
        if not isinstance(entry.get("last_failure"), (int, float)) \
                or when > entry["last_failure"]:
            entry["last_failure"] = round(when, 3)
            entry["last_error"] = " ".join(why.split())
    return merged


def record_pass(deliverer) -> None:
    """Record the spool's state after a pass of `deliverer` (deliver.Deliverer)."""
    spool_dir = deliverer.settings.spool_dir
    queued = spool.list_messages(spool_dir)
    oldest = _queued_at(queued[0]) if queued else None
    previous = getattr(deliverer, "_health_previous", None)
    if previous is None:  # the first pass: what an earlier run knew
        previous = health.read_one(TOOL, spool_dir)
    state = {
        "mode": "daemon" if deliverer.daemon else "batch",
        "spool_dir": spool_dir,
        "queued": len(queued),
        "oldest_queued": None if oldest is None else round(oldest, 3),
        "failed": len(spool.list_failed(spool_dir)),
        "externals": externals_merged(previous, deliverer.last_success,
                                      deliverer.last_failure),
        # "online" or "offline" when the daemon follows the network's events
        "network": getattr(deliverer, "network", None),
        "last_pass": round(time.time(), 3),
    }
    deliverer._health_previous = state
    problem = health.record(TOOL, spool_dir, state)
    if problem and problem not in _told:
        _told.add(problem)
        deliverer.log.warning("%s", problem)
