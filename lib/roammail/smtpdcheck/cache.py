"""cache.py: smtpdcheck's cache of the servers found down.

A server found down is not probed again for --cache-ttl seconds.  The
file (CACHE_HEADER, then one `TIME PORT HOST` line per entry) is written
atomically under a lock on FILE.lock, merged with what other runs wrote
meanwhile; entries older than the TTL go.

It never fails a run: a cache that cannot be read, parsed, locked or
written is ignored (`read_cache` gives {}, `update_cache` False).
"""

from __future__ import annotations

import os

from ..core.errors import RoammailError

# The cache: a bigger file is not ours (ignored); a writer waits this long
# for the lock, then gives up writing (the cache is an optimisation).
MAX_CACHE_BYTES = 1 << 20
CACHE_LOCK_WAIT_S = 2.0
CACHE_LOCK_POLL_S = 0.01
CACHE_HEADER = "roammail-smtpdcheck-cache 1"
CACHE_DIR_MODE = 0o700
CACHE_FILE_MODE = 0o600


def default_cache_path(environ: dict | None = None, euid: int | None = None) -> str:
    """$XDG_CACHE_HOME/roammail/smtpdcheck when set, else
    /var/cache/roammail/smtpdcheck for root, else ~/.cache/roammail/..."""
    from ..core import locations

    env = os.environ if environ is None else environ
    if locations.xdg_env("XDG_CACHE_HOME", env) is None and \
            (os.geteuid() if euid is None else euid) == 0:
        return "/var/cache/roammail/smtpdcheck"
    return os.path.join(locations.xdg_cache_home(env), "roammail", "smtpdcheck")


def parse_cache(text: str) -> dict[tuple[str, int], float] | None:
    """{(host key, port): time found down}; None if the text is not a cache."""
    lines = text.split("\n")
    if lines[0] != CACHE_HEADER or lines[-1] != "":
        return None
    entries: dict[tuple[str, int], float] = {}
    for line in lines[1:-1]:
        fields = line.split(" ")
        if len(fields) != 3:
            return None
        when, port, host = fields
        try:
            stamp = float(when)
            number = int(port)
        except ValueError:
            return None
        if not host or not host.isprintable() or stamp != stamp:
            return None
        key = (host, number)
        entries[key] = max(stamp, entries.get(key, stamp))
    return entries


def format_cache(entries: dict[tuple[str, int], float]) -> str:
    lines = [CACHE_HEADER]
    for (host, port), stamp in sorted(entries.items()):
        lines.append(f"{stamp:.3f} {port} {host}")
    return "\n".join(lines) + "\n"


def _cacheable(host: str) -> bool:
    return bool(host) and host.isprintable() and " " not in host


def read_cache(path: str) -> dict[tuple[str, int], float]:
    """The entries of the cache file; {} when it is missing or not valid."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return {}
    try:
        data = os.read(fd, MAX_CACHE_BYTES + 1)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if len(data) > MAX_CACHE_BYTES:
        return {}
    try:
        entries = parse_cache(data.decode("utf-8"))
    except UnicodeDecodeError:
        return {}
    return entries or {}


def _fresh(stamp: float, ttl: float, now: float) -> bool:
    """Found down less than `ttl` seconds from `now`.  Later than `now` too:
    runs at once stamp their entries with their own clock readings (a run
    that started first may write last); a clock set back by more than the
    TTL only makes entries stale."""
    return abs(now - stamp) < ttl


def fresh_down(entries: dict, port: int, ttl: float, now: float) -> set[str]:
    """The hosts found down on `port` less than `ttl` seconds from `now`."""
    return {host for (host, number), stamp in entries.items()
            if number == port and _fresh(stamp, ttl, now)}


def update_cache(path: str, port: int, ttl: float, now: float,
                 down: set[str], up: set[str]) -> bool:
    """Add `down` (found down at `now`) and forget `up`, under the lock,
    merging with what other runs wrote meanwhile; expired entries go.
    Returns False when the cache could not be written (never raises)."""
    from ..core import lockfile
    from ..core.durable import write_file_atomically

    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=CACHE_DIR_MODE, exist_ok=True)
        lock = lockfile.hold(path + ".lock", wait=CACHE_LOCK_WAIT_S, poll=CACHE_LOCK_POLL_S)
    except OSError:
        return False
    if lock is None:  # held by another run for longer than we wait
        return False
    try:
        entries = read_cache(path)
        kept = {key: stamp for key, stamp in entries.items()
                if _fresh(stamp, ttl, now) and not (key[1] == port and key[0] in up)}
        for host in down:
            if _cacheable(host):
                kept[(host, port)] = now
        try:
            write_file_atomically(path, format_cache(kept).encode("utf-8"),
                                  mode=CACHE_FILE_MODE)
        except (RoammailError, OSError):
            return False
        return True
    finally:
        lockfile.release(lock)
