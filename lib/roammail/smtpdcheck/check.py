"""check.py: one run of smtpdcheck: what is known of the servers, and the drivers.

`Check` keeps, for each server argument, whether it matches --stop and
whether it is up (True, False, or None: not known yet), from the cache,
the lookups and the probes of an Engine (probe.py), and asks decide.py
after every event whether the answer is settled.  It starts only the
lookups and probes whose outcome can still change the answer, and
cancels the probes that no longer can.

`run_parallel` does everything at once under one deadline;
`run_sequential` takes one server after the other, each with its own
timeout, as Mail Avenger's smtpdcheck does.
"""

from __future__ import annotations

from .decide import candidacy, decide
from .probe import CheckError, Engine, Lookup, lookup_done, probe_answered


class Server:
    """One server argument: its priority (None without one) and host."""

    __slots__ = ("prio", "host")

    def __init__(self, prio: int | None, host: str) -> None:
        self.prio = prio
        self.host = host

    def __repr__(self) -> str:
        return f"Server({self.prio!r}, {self.host!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Server)
                and (self.prio, self.host) == (other.prio, other.host))


def host_key(host: str) -> str:
    """The name compared with --stop and kept in the cache: DNS names are
    case-insensitive, and a final dot does not make another host."""
    key = host.lower()
    return key[:-1] if key.endswith(".") and len(key) > 1 else key


class Check:
    """One run: the servers, what is known of them, and the two drivers."""

    def __init__(self, servers: list[Server], stop: str | None, port: int,
                 timeout: float, cached_down: set[str], engine: Engine) -> None:
        self.servers = servers
        self.prios = [server.prio for server in servers]
        self.keys = [host_key(server.host) for server in servers]
        self.stop = stop
        self.stop_key = host_key(stop) if stop is not None else None
        self.port = port
        self.timeout = timeout
        self.cached_down = cached_down
        self.engine = engine
        self.stop_lookup: Lookup | None = None
        self.spelling: dict[str, str] = {}
        for server, key in zip(servers, self.keys):
            self.spelling.setdefault(key, server.host)

    def _deadline(self) -> float | None:
        return self.engine.clock() + self.timeout if self.timeout > 0 else None

    # ------------------------------------------------------ knowledge

    def _match(self, i: int) -> bool | None:
        if self.stop is None:
            return False
        if self.keys[i] == self.stop_key:
            return True
        stop = self.stop_lookup
        lookup = self.engine.lookups.get(self.keys[i])
        if stop is None or not stop.done or lookup is None or not lookup.done:
            return None
        return bool(stop.keys & lookup.keys)

    def _up(self, key: str) -> bool | None:
        if key in self.cached_down:
            return False
        lookup = self.engine.lookups.get(key)
        if lookup is not None and lookup.done and lookup.error is not None:
            return False
        probe = self.engine.probes.get(key)
        return None if probe is None else probe.up

    def knowledge(self) -> tuple[list, list]:
        match = [self._match(i) for i in range(len(self.keys))]
        up = [self._up(key) for key in self.keys]
        return match, up

    def _stop_failed(self) -> None:
        stop = self.stop_lookup
        if stop is not None and stop.done and stop.error is not None:
            raise CheckError(f"cannot resolve --stop {self.stop}: {stop.error}")

    def _start_stop_lookup(self, deadline: float | None) -> None:
        if self.stop is not None:
            self.stop_lookup = self.engine.lookup("\0stop", self.stop, None, deadline)
            self._stop_failed()

    def _stop_known(self) -> bool:
        return self.stop_lookup is None or self.stop_lookup.done

    def _wants(self, match: list, up: list) -> tuple[set, set]:
        """(hosts whose addresses matter, hosts worth probing now)."""
        table = candidacy(self.prios, match)
        resolve, probe = set(), set()
        for (relevant, possible, _certain), key, state in zip(table, self.keys, up):
            if relevant:
                resolve.add(key)
            if possible and state is None:
                probe.add(key)
        return resolve, probe

    def _probe_if_ready(self, key: str, deadline: float | None) -> bool:
        lookup = self.engine.lookups.get(key)
        if (key in self.engine.probes or key in self.cached_down or lookup is None
                or not lookup.done or lookup.error is not None):
            return False
        self.engine.probe(key, lookup.addresses, deadline)
        return True

    # -------------------------------------------------------- drivers

    def run_parallel(self) -> int | None:
        """Everything at once, one deadline for all."""
        deadline = self._deadline()
        self._start_stop_lookup(deadline)
        while True:
            self._stop_failed()
            match, up = self.knowledge()
            decided, answer = decide(self.prios, match, up)
            if decided and self._stop_known():
                return answer
            resolve, probe = self._wants(match, up)
            for key in resolve:
                if key not in self.engine.lookups:
                    self.engine.lookup(key, self.spelling[key], self.port, deadline)
            for key, running in list(self.engine.probes.items()):
                if key not in probe and running.up is None and not running.cancelled:
                    self.engine.cancel(running)
            started = False
            for key in probe:
                started |= self._probe_if_ready(key, deadline)
            if started:
                continue  # a probe may have ended at once (all refused)
            if not self.engine.busy():
                return self._settle()
            self.engine.step()

    def run_sequential(self) -> int | None:
        """One server after the other, each with its own timeout, as the
        original: its lookup, then (if it may be the answer) its probe."""
        self._start_stop_lookup(self._deadline())
        self.engine.run_until(self._stop_known)
        self._stop_failed()
        for i, key in enumerate(self.keys):
            match, up = self.knowledge()
            decided, answer = decide(self.prios, match, up)
            if decided:
                return answer
            relevant, possible, _certain = candidacy(self.prios, match)[i]
            if not relevant:
                continue
            deadline = self._deadline()
            if key not in self.engine.lookups:
                lookup = self.engine.lookup(key, self.spelling[key], self.port, deadline)
                self.engine.run_until(lookup_done(lookup))
            _relevant, possible, _certain = candidacy(self.prios, self.knowledge()[0])[i]
            if possible and self._probe_if_ready(key, deadline):
                probe = self.engine.probes[key]
                self.engine.run_until(probe_answered(probe))
        decided, answer = decide(self.prios, *self.knowledge())
        return answer if decided else self._settle()

    def _settle(self) -> int | None:
        """Nothing is running and yet undecided (cannot happen): what is
        not known is treated as no."""
        match, up = self.knowledge()
        return decide(self.prios, [m is True for m in match], [u is True for u in up])[1]

    def found_down(self) -> set[str]:
        """The hosts this run found down (not those it took from the cache)."""
        down = set()
        for key, lookup in self.engine.lookups.items():
            if key in self.spelling and lookup.done and lookup.error is not None:
                down.add(key)
        for key, probe in self.engine.probes.items():
            if probe.up is False and not probe.cancelled:
                down.add(key)
        return down - self.cached_down

    def found_up(self) -> set[str]:
        return {key for key, probe in self.engine.probes.items() if probe.up is True}

