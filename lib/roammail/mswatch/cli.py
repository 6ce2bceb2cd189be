"""mswatch: run a sync program for exactly the mailboxes that changed, moments after they change.

Usage:
  mswatch [options] [-f | --daemon]
  mswatch [options] --sync-now
  mswatch [options] --network-changed
  mswatch -V | --version
  mswatch -h | --help

Options:
  -c FILE, --config=FILE    The configuration file, instead of the first of
                            ~/.mswatchrc and $XDG_CONFIG_HOME/roammail/mswatchrc.
  -d, --dry                 Print each sync command line instead of running it.
  -q, --quiet               Log failures only, not every sync.
  -f, --foreground          Stay in the foreground, log to stderr (the default).
  --daemon                  Detach from the terminal; log to syslog.
  --pid-file=FILE           Where the running instance's pid is kept; default
                            $XDG_RUNTIME_DIR/roammail/mswatch.pid, else
                            ~/.cache/roammail/mswatch.pid.
  --hooks=DIR               The hook base directory holding pre-sync.d and
                            post-sync.d; default $XDG_CONFIG_HOME/roammail/hooks.
  -l FILE, --log-file=FILE  Also append log lines, the sync program's and the
                            hooks' output to FILE.
  --sync-now                Ask the running mswatch (see --pid-file) for a full
                            sync now, then exit.
  --network-changed         Tell the running mswatch that the network changed:
                            it restarts its watchers, then syncs everything.
  -V, --version             Print the version.
  -h, --help                Show this help (-? too).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Optional

from .. import __version__
from ..core import hookdirs, locations, lockfile
from ..core.child import describe_returncode, kill_group
from ..core.cli import docopt_args, guarded
from ..core.errors import AlreadyRunning, IOFailure, RoammailError, UnavailableError
from ..core.supervise import SpareChild, SpareUnusable, spawn_dying_with_us
from .config import MswatchConfig, Store, read_mswatchrc
from .plan import Schedule, StartSync, Wait, decide, sync_argv

if TYPE_CHECKING:  # imported when used: only a running mswatch listens to the network
    from ..core.roaming import NetworkEvents

TOOL = "mswatch"
WATCHER_BACKOFF_FIRST = 1.0  # s before the first restart of a dead watcher; doubles
WATCHER_TERM_GRACE = 0.5  # s between SIGTERM and SIGKILL for a watcher that ended
WATCHER_EXIT_WAIT = 0.5  # s a watcher that closed its output has to exit by itself
SYNC_STOP_GRACE = 10.0  # s a running sync has to end after SIGTERM when we stop
REAP_AFTER_STOP = 5.0  # s we wait at most for a stopped child to be reaped
LOOP_TICK = 30.0  # s: the longest select() ever sleeps (a safety net, not a poll)
READ_CHUNK = 65536
MAX_LINE = 4096  # a watcher line longer than this is nonsense: dropped
NOT_FOUND = 127  # the shell's (and so ssh's) exit status for "command not found"
# The longest restart backoff of a watcher while the machine is offline: the
# network's return restarts it at once anyway, when network events are on.
OFFLINE_BACKOFF_MAX = 30.0
# "The network changed" (mswatch --network-changed): SIGHUP, SIGUSR1 and
# SIGUSR2 are taken, and SIGWINCH comes from a terminal being resized.
NETWORK_SIGNAL = signal.SIGRTMIN
NETWORK_SIGNAL_NAME = "SIGRTMIN"


# ------------------------------------------------------------------ children


def spawn(argv: list, *, stdin, stdout, stderr) -> subprocess.Popen:
    """Start argv in its own session and process group, dying with us."""
    return spawn_dying_with_us(argv, stdin=stdin, stdout=stdout, stderr=stderr)


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """TERM -> `grace` s -> KILL of proc's group (core.child.kill_group);
    then reap proc, waiting at most REAP_AFTER_STOP s."""
    kill_group(proc.pid, grace)
    try:
        proc.wait(timeout=REAP_AFTER_STOP)
    except subprocess.TimeoutExpired:
        pass


class Watcher:
    """One store's watcher: a child whose stdout we read line by line.

    We hold its stdin open (a pipe we never write): `ssh host inputkill
    watch-maildirs` must not see EOF on its input until we stop it.
    """

    def __init__(self, store: Store, log, out_fd: Optional[int],
                 max_delay: float = float("inf")) -> None:
        self.store = store
        self.max_delay = max_delay  # the cap of the restart backoff
        self.log = log
        self.out_fd = out_fd  # where its stderr goes (None: ours)
        self.proc: Optional[subprocess.Popen] = None
        self.fd = -1
        self.stdin_w = -1
        self.buf = b""
        self.ready = False
        self.backoff = 0.0
        self.restart_at: Optional[float] = 0.0  # monotonic time; None while running
        # "command not found" was told and the watcher has not been ready since.
        self.not_found_told = False

    def start(self, now: float) -> None:
        self.restart_at = None
        self.ready = False
        self.buf = b""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self.proc = spawn(list(self.store.watch), stdin=in_r, stdout=out_w,
                              stderr=self.out_fd)
        except OSError as exc:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            self.log.error("store %s: cannot run watcher %s: %s", self.store.name,
                           self.store.watch[0], exc.strerror)
            self.schedule_restart(now)
            return
        os.close(in_r)
        os.close(out_w)
        os.set_blocking(out_r, False)
        self.fd, self.stdin_w = out_r, in_w
        self.log.debug("store %s: watcher started (pid %d)", self.store.name, self.proc.pid)

    def schedule_restart(self, now: float, cap: Optional[float] = None) -> None:
        """The next start after the backoff, doubled each time up to
        max_delay (or `cap`, when lower)."""
        limit = self.max_delay if cap is None else min(cap, self.max_delay)
        self.backoff = min(limit, WATCHER_BACKOFF_FIRST if not self.backoff else self.backoff * 2)
        self.restart_at = now + self.backoff

    def restart_now(self, now: float) -> None:
        """Start again at once (stopping it first if running), backoff reset."""
        if self.proc is not None or self.fd >= 0:
            self.close()
        self.backoff = 0.0
        self.restart_at = now

    def read(self) -> Optional[list]:
        """Lines now available ("" is the ready line); None at EOF."""
        try:
            data = os.read(self.fd, READ_CHUNK)
        except BlockingIOError:
            return []
        except OSError:
            data = b""
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        if len(self.buf) > MAX_LINE:
            self.buf = b""
        return [ln.decode("utf-8", "replace") for ln in lines if len(ln) <= MAX_LINE]

    def close(self, grace: float = WATCHER_TERM_GRACE, exit_wait: float = 0.0) -> Optional[int]:
        """Stop its process group, reap it, close our ends; its exit code.

        `exit_wait`: how long it may take to exit by itself first, so that
        its own exit status is kept (ssh killed by SIGTERM exits 255,
        hiding the 127 of a remote command that was not found)."""
        if self.proc is not None and exit_wait > 0:
            try:
                self.proc.wait(timeout=exit_wait)
            except subprocess.TimeoutExpired:
                pass
        for fd in (self.fd, self.stdin_w):
            if fd >= 0:
                os.close(fd)
        self.fd = self.stdin_w = -1
        self.ready = False
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        stop_group(proc, grace)
        return proc.returncode


# ------------------------------------------------------------------ the loop


class Mswatch:
    def __init__(self, config_path: str, config: MswatchConfig, log, *, dry: bool,
                 quiet: bool, hooks_base: str, log_file: Optional[str]) -> None:
        self.config_path = config_path
        self.config = config
        self.log = log
        self.dry = dry
        self.quiet = quiet
        self.hooks_base = hooks_base
        self.log_file = log_file
        self.out_fd: Optional[int] = None
        if log_file:
            self.out_fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                  | os.O_CLOEXEC, 0o600)
        self.schedule = Schedule(config.timing)
        self.watchers = [Watcher(s, log, self.out_fd, config.timing.max_delay)
                         for s in config.stores]
        self.all_ready_once = False
        self.sync_proc: Optional[subprocess.Popen] = None
        self.sync_action: Optional[StartSync] = None
        self.sync_started = 0.0
        # The next sync's process, started while nothing runs (SpareChild):
        # a sync then starts with an exec, not a fork of this interpreter.
        self.spare: Optional[SpareChild] = None
        self.spare_wanted = False  # make one the next time the loop waits
        self.flags: set[int] = set()
        self.events: Optional[NetworkEvents] = None  # while they are listened to
        self.offline = False  # the network events said offline (and not online since)
        self.health: Optional[dict] = None  # the syncs' outcomes, for roammail-status

    def say(self, fmt: str, *args) -> None:
        (self.log.debug if self.quiet else self.log.info)(fmt, *args)

    def _on_signal(self, signum, frame) -> None:
        self.flags.add(signum)

    # -- signals -------------------------------------------------------------

    def handle_flags(self, now: float) -> bool:
        """Act on the signals noted; False when we must stop."""
        flags, self.flags = self.flags, set()
        if flags & {signal.SIGTERM, signal.SIGINT}:
            return False
        if signal.SIGHUP in flags:
            self.reload(now)
        if signal.SIGUSR1 in flags:
            self.report_pending(now)
        if signal.SIGUSR2 in flags:
            self.log.info("full sync requested (SIGUSR2)")
            self.schedule.want_full(now, forced=True)
        if NETWORK_SIGNAL in flags:
            self.log.info("network change announced (%s): restarting the watchers, "
                          "then a full sync", NETWORK_SIGNAL_NAME)
            self.restart_watchers(now)
        return True

    def report_pending(self, now: float) -> None:
        s = self.schedule
        if not s.pending and not s.full_wanted:
            self.log.info("no sync pending%s", self._running_text(now))
            return
        boxes = ", ".join(f"{n} (due in {max(0.0, s.due_at(n) - now):.1f} s)"
                          for n in sorted(s.pending))
        full = "a full sync; " if s.full_wanted else ""
        self.log.info("pending: %s%s%s", full, boxes or "no mailbox", self._running_text(now))

    def _running_text(self, now: float) -> str:
        if self.sync_action is None:
            return ""
        return f"; running for {now - self.sync_started:.1f} s: {self._what(self.sync_action)}"

    def reload(self, now: float) -> None:
        try:
            new = read_mswatchrc(self.config_path)
        except RoammailError as exc:
            self.log.error("reload failed, keeping the old configuration: %s", exc)
            return
        for text in warning_lines(new):
            self.log.warning("%s", text)
        old, self.config = self.config, new
        if new.network_events != old.network_events:
            if new.network_events:
                self.open_events()
            else:
                self.close_events()
                self.offline = False
        self.schedule.timing = new.timing
        for w in self.watchers:
            w.max_delay = new.timing.max_delay
        for name in list(self.schedule.pending):
            if name in new.timing.ignore:
                del self.schedule.pending[name]
        if old.stores != new.stores:
            self.log.info("stores changed: restarting the watchers")
            for w in self.watchers:
                w.close()
            self.watchers = [Watcher(s, self.log, self.out_fd, new.timing.max_delay)
                             for s in new.stores]
            self.all_ready_once = False
        self.log.info("configuration reloaded from %s", self.config_path)

    # -- the network ---------------------------------------------------------

    def open_events(self) -> None:
        """Listen to the machine's network events; without them (no
        netlink, no pyroute2) one line says so and mswatch works as ever."""
        from ..core.roaming import open_events

        events, why = open_events()
        if events is None:
            self.log.info("no network events (%s): watchers and syncs are retried "
                          "on their own schedule", why)
            return
        self.events = events
        if not events.online:
            self.went_offline()

    def close_events(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None

    def event_fds(self) -> list:
        return self.events.fds() if self.events is not None else []

    def poll_events(self, now: float) -> None:
        """Act on the network events now due."""
        if self.events is None:
            return
        try:
            found = self.events.process()
        except OSError as exc:
            self.log.warning("network events failed (%s): carrying on without them",
                             exc.strerror or exc)
            self.close_events()
            self.offline = False
            return
        self.on_network(found, now)

    def on_network(self, found: list, now: float) -> None:
        from ..core.roaming import CHANGED, OFFLINE, ONLINE, RESUMED

        if OFFLINE in found:
            self.went_offline()
        elif CHANGED in found or RESUMED in found:
            # Connections over the old network may be dead without anyone
            # knowing yet: new ones, now.
            self.offline = False
            what = "changed" if CHANGED in found else "the machine woke up"
            self.log.info("network %s: restarting the watchers, then a full sync", what)
            self.restart_watchers(now)
        elif ONLINE in found and self.offline:
            self.offline = False
            self.log.info("network back: restarting stopped watchers, then a full sync")
            self.schedule.reset_backoff()
            restarted = False
            for w in self.watchers:
                if w.restart_at is not None:
                    w.restart_now(now)
                    restarted = True
            if not restarted and all(w.ready for w in self.watchers):
                self.schedule.want_full(now)
            # else: the full sync comes once every watcher is ready again

    def went_offline(self) -> None:
        if not self.offline:
            self.offline = True
            self.log.info("network offline: watcher restarts and failed syncs are not "
                          "reported until it is back")
            self.record_health()

    def record_health(self, running: bool = True) -> None:
        """Leave the state of the syncs, the watchers and the network for
        roammail-status (core.health): at each sync's end and each change
        of a watcher or of the network, never per mailbox."""
        if self.dry:
            return
        from ..core import health

        key = self.config.store_pair
        if self.health is None:
            old = health.read_one(TOOL, key) or {}
            self.health = {k: old.get(k) for k in
                           ("last_sync", "last_success", "last_failure", "last_error")}
        watchers = {w.store.name: ("restarting" if w.restart_at is not None
                                   else "running" if w.ready else "starting")
                    for w in self.watchers}
        network = "offline" if self.offline else "online" if self.events is not None else None
        state = dict(self.health, stores=key, running=running, watchers=watchers,
                     network=network)
        problem = health.record(TOOL, key, state)
        if problem:
            self.log.debug("%s", problem)

    def restart_watchers(self, now: float) -> None:
        """Every watcher started again at once; the full sync follows when
        they are all ready."""
        self.schedule.reset_backoff()
        for w in self.watchers:
            w.restart_now(now)

    # -- watchers ------------------------------------------------------------

    def on_lines(self, watcher: Watcher, lines: list, now: float) -> None:
        for line in lines:
            if not watcher.ready:
                if line == "":
                    watcher.ready = True
                    watcher.backoff = 0.0
                    watcher.not_found_told = False
                    self.say("store %s: watcher ready", watcher.store.name)
                    self.record_health()
                    if all(w.ready for w in self.watchers):
                        self.schedule.want_full(now)  # at start, and after a restart
                        self.all_ready_once = True
                continue
            name = line.strip("\r")
            if not name:
                continue
            if self.schedule.note_change(name, now):
                self.log.debug("store %s: %s changed", watcher.store.name, name)

    def on_eof(self, watcher: Watcher, now: float) -> None:
        code = watcher.close(exit_wait=WATCHER_EXIT_WAIT)
        watcher.schedule_restart(now, OFFLINE_BACKOFF_MAX if self.offline else None)
        status = describe_returncode(code) if code is not None else "gone"
        report = self.log.debug if self.offline else self.log.warning
        if code == NOT_FOUND and not watcher.not_found_told:
            watcher.not_found_told = True
            self.log.error("%s", not_found_text(watcher.store))
            report = self.log.debug
        elif watcher.not_found_told:
            report = self.log.debug  # told once; quiet until it has been ready again
        report("store %s: watcher ended (%s); restarting in %.0f s",
               watcher.store.name, status, watcher.backoff)
        self.record_health()

    # -- syncs ---------------------------------------------------------------

    def _what(self, action: StartSync | None) -> str:
        if action is None:
            return "nothing"
        return "all mailboxes" if action.full else ", ".join(action.names)

    def run_hooks(self, when: str, status: int) -> bool:
        extra = {"ROAMMAIL_HOOK_LOG": self.log_file} if self.log_file else None
        results = hookdirs.run_hooks(self.hooks_base, when, "sync", self.config.store_pair,
                                     status, log_path=self.log_file, extra_env=extra)
        ok = True
        for res in results:
            if not res.ok:
                ok = False
                self.log.warning("%s-sync hook %s failed: %s", when, res.path, res.status)
        return ok

    def start_sync(self, action: StartSync, now: float) -> None:
        c = self.config
        argv = sync_argv(list(c.sync), action.names, action.full, c.prefix, c.separator)
        self.schedule.started(action, now)
        self.sync_action, self.sync_started = action, now
        if self.dry:
            sys.stdout.write(" ".join(_shell_word(a) for a in argv) + "\n")
            sys.stdout.flush()
            self.finish_sync(0, now)
            return
        if not self.run_hooks("pre", 0):
            self.log.error("sync of %s not run: a pre-sync hook failed", self._what(action))
            self.finish_sync(1, time.monotonic(), hooks=False)
            return
        try:
            self.sync_proc = self.spawn_sync(argv)
        except OSError as exc:
            self.log.error("cannot run %s: %s", argv[0], exc.strerror)
            self.finish_sync(127, time.monotonic())

    def spawn_sync(self, argv: list) -> subprocess.Popen:
        """Start the sync: in the spare when there is one, else in a child forked now."""
        spare, self.spare = self.spare, None
        if spare is not None:
            try:
                return spare.run(argv)
            except SpareUnusable:
                self.log.debug("the process started for the next sync is gone: "
                               "starting the sync afresh")
        return spawn(argv, stdin=subprocess.DEVNULL, stdout=self.out_fd, stderr=self.out_fd)

    def prepare_spare(self) -> None:
        """Start the next sync's process now, while nothing runs."""
        self.spare_wanted = False
        try:
            self.spare = SpareChild(stdin=subprocess.DEVNULL, stdout=self.out_fd,
                                    stderr=self.out_fd)
        except OSError as exc:
            self.log.debug("cannot start a process for the next sync ahead of it: %s",
                           exc.strerror or exc)

    def discard_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            spare.discard()

    def poll_sync(self, now: float) -> None:
        if self.sync_proc is None:
            return
        code = self.sync_proc.poll()
        if code is None:
            return
        self.sync_proc = None
        self.finish_sync(code, now)

    def finish_sync(self, code: int, now: float, hooks: bool = True) -> None:
        action = self.sync_action
        assert action is not None
        took = now - self.sync_started
        self.schedule.finished(code == 0, now)
        self.sync_action = None
        self.spare_wanted = not self.dry
        if code == 0:
            self.say("synced %s in %.1f s: exit status 0", self._what(action), took)
        else:
            report = self.log.debug if self.offline else self.log.warning
            report("sync of %s failed after %.1f s: %s; retry in %.0f s",
                             self._what(action), took, describe_returncode(code),
                             self.schedule.backoff)
        if hooks and not self.dry:
            self.run_hooks("post", code if code >= 0 else 128 - code)
        self.note_sync(code, action)

    def note_sync(self, code: int, action: StartSync) -> None:
        """A sync ended with `code`: the health record says so."""
        if self.dry:
            return
        if self.health is None:
            self.record_health()  # reads what an earlier mswatch knew
        assert self.health is not None
        now = round(time.time(), 3)
        self.health["last_sync"] = now
        if code == 0:
            self.health["last_success"] = now
        else:
            self.health["last_failure"] = now
            self.health["last_error"] = (f"sync of {self._what(action)}: "
                                         f"{describe_returncode(code)}")
        self.record_health()

    def stop_sync(self) -> None:
        if self.sync_proc is not None:
            self.log.info("stopping the running sync of %s", self._what(self.sync_action))
            stop_group(self.sync_proc, SYNC_STOP_GRACE)
            self.sync_proc = None

    # -- the loop ------------------------------------------------------------

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGCHLD, NETWORK_SIGNAL)
        old = {s: signal.signal(s, self._on_signal) for s in handled}
        self.log.info("started: config %s, stores %s", self.config_path,
                      " and ".join(s.name for s in self.config.stores))
        try:
            if self.config.network_events:
                self.open_events()
            self.loop(wake_r)
        finally:
            self.close_events()
            self.stop_sync()
            self.discard_spare()
            for w in self.watchers:
                w.close()
            self.record_health(running=False)
            for s, h in old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)
            if self.out_fd is not None:
                os.close(self.out_fd)
        self.log.info("stopped")
        return 0

    def loop(self, wake_r: int) -> None:
        while True:
            now = time.monotonic()
            if self.flags and not self.handle_flags(now):
                return
            for w in self.watchers:
                if w.restart_at is not None and now >= w.restart_at:
                    w.start(now)
            self.poll_sync(now)
            wait_until: Optional[float] = None
            if self.all_ready_once:
                action = decide(self.schedule, now)
                if isinstance(action, StartSync):
                    self.start_sync(action, now)
                    continue
                assert isinstance(action, Wait)
                wait_until = action.until
            for w in self.watchers:
                if w.restart_at is not None:
                    wait_until = w.restart_at if wait_until is None else min(wait_until,
                                                                              w.restart_at)
            timeout = LOOP_TICK if wait_until is None else min(LOOP_TICK,
                                                               max(0.0, wait_until - now))
            if self.events is not None:
                timeout = min(timeout, self.events.timeout())
            if self.spare_wanted and self.sync_proc is None and timeout > 0:
                self.prepare_spare()
            fds = [wake_r] + self.event_fds() + [w.fd for w in self.watchers if w.fd >= 0]
            try:
                readable, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                continue
            if wake_r in readable:
                _drain(wake_r)
            now = time.monotonic()
            self.poll_events(now)
            for w in list(self.watchers):
                if w.fd >= 0 and w.fd in readable:
                    lines = w.read()
                    if lines is None:
                        self.on_eof(w, now)
                    else:
                        self.on_lines(w, lines, now)


def not_found_text(store: Store) -> str:
    """What a watcher that exited 127, "command not found", tells the user."""
    if any(os.path.basename(word) == "ssh" for word in store.watch):
        return (f"store {store.name}: watch command not found on the remote side "
                f"(exit {NOT_FOUND}): is roammail installed there, and on the PATH of a "
                f"non-interactive ssh session?")
    return (f"store {store.name}: watch command not found (exit {NOT_FOUND}): is every "
            f"program it runs installed, and on the PATH?")


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _shell_word(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


# ------------------------------------------------------------------ pid file


def default_pid_file() -> str:
    """$XDG_RUNTIME_DIR/roammail/mswatch.pid, else ~/.cache/roammail/mswatch.pid
    (~/.cache itself, as the manual says, whatever XDG_CACHE_HOME is)."""
    runtime = locations.xdg_runtime_dir()
    if runtime is not None:
        return os.path.join(runtime, "roammail", "mswatch.pid")
    return os.path.join(locations.home(), ".cache", "roammail", "mswatch.pid")


def lock_path(pid_path: str) -> str:
    """The instance lock of a pid file: PID_FILE.lock beside it (core.lockfile:
    never removed; the pid file itself is, when we stop)."""
    return pid_path + ".lock"


def hold_pid_file(path: str) -> int:
    """Take the instance lock of pid file `path`, then write our pid in it;
    the descriptor returned keeps the lock.  AlreadyRunning when another
    mswatch holds it; IOFailure when a file cannot be made (a directory, a
    missing parent that cannot be created...)."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except FileExistsError:  # something else is in the way
        raise IOFailure(f"cannot open the pid file {path}: {directory} is not a directory") \
            from None
    except OSError as exc:
        raise IOFailure(f"cannot open the pid file {path}: {exc.strerror or exc}") from None
    try:
        lock = lockfile.hold(lock_path(path))
    except lockfile.LockFileError as exc:
        raise IOFailure(f"cannot {exc.action} the lock file {exc.path}: {exc.strerror}") \
            from None
    if lock is None:
        raise AlreadyRunning(f"another mswatch is running (pid {_pid_in(path) or '?'}, {path})")
    # Opened only now, under the lock: a pid file opened before it might be
    # the one the last holder removes as it stops.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        lockfile.release(lock)
        raise IOFailure(f"cannot open the pid file {path}: {exc.strerror or exc}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        lockfile.release(lock)
        raise IOFailure(f"cannot write the pid file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return lock


def _pid_in(path: str) -> str:
    """What pid file `path` says now ("" when it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)


def check_log_file(path: str) -> None:
    """IOFailure unless the --log-file can be opened for appending (made
    if missing): told now, in one line, not by a failing log handler."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        raise IOFailure(f"cannot open the log file {path}: {exc.strerror or exc}") from None


def release_pid_file(path: str, fd: int) -> None:
    """Remove the pid file (ours: we hold its lock), then release the lock;
    the lock file stays."""
    try:
        os.unlink(path)
    except OSError:
        pass
    lockfile.release(fd)


def signal_running(path: str, signum: int) -> int:
    """Send signum to the mswatch holding pid file `path`; its pid."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        raise UnavailableError(f"no running mswatch ({path} is missing)") from None
    try:
        try:
            held = lockfile.is_held(lock_path(path))
        except lockfile.LockFileError as exc:
            raise IOFailure(f"cannot {exc.action} the lock file {exc.path}: {exc.strerror}") \
                from None
        if not held:
            raise UnavailableError(f"no running mswatch ({path} is stale)")
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    finally:
        os.close(fd)
    if not text.isdigit():
        raise UnavailableError(f"no running mswatch ({path} holds no pid)")
    pid = int(text)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise UnavailableError(f"no running mswatch (pid {pid} of {path} is gone)") from None
    return pid


# ---------------------------------------------------------------------- main


def warning_lines(config: MswatchConfig) -> list:
    """One line for each warning of the configuration, naming file and line."""
    return [f"warning: {message} ({config.path}:{line})" for line, message in config.warnings]


def find_config(explicit: Optional[str]) -> str:
    if explicit:
        return locations.expand_home(explicit)
    cands = locations.candidates("~/.mswatchrc", "mswatchrc", None)
    found = locations.first_existing(cands)
    if found is None:
        from ..core.errors import ConfigError

        raise ConfigError(cands[0], 0, "no configuration file (also looked for "
                          + ", ".join(cands[1:]) + ")")
    return found


def setup_log(stderr: bool, log_file: Optional[str]):
    import logging

    from ..core import log as logmod

    logger = logmod.setup(TOOL, stderr=stderr)
    for h in [h for h in logger.handlers if getattr(h, "_mswatch_file", False)]:
        logger.removeHandler(h)
    if log_file:
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s mswatch[%(process)d]: %(message)s"))
        handler._mswatch_file = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


def run(argv: Optional[list]) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    if "-?" in args_in:  # the original's help option; docopt cannot spell it
        sys.stdout.write(__doc__.strip() + "\n")
        return 0
    args = docopt_args(__doc__, args_in)
    if args["--version"]:
        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        return 0
    pid_path = locations.expand_home(args["--pid-file"] or default_pid_file())
    if args["--sync-now"]:
        pid = signal_running(pid_path, signal.SIGUSR2)
        sys.stdout.write(f"mswatch: asked pid {pid} for a full sync\n")
        return 0
    if args["--network-changed"]:
        pid = signal_running(pid_path, NETWORK_SIGNAL)
        sys.stdout.write(f"mswatch: told pid {pid} that the network changed\n")
        return 0
    config_path = find_config(args["--config"])
    config = read_mswatchrc(config_path)
    for text in warning_lines(config):
        sys.stderr.write(f"{TOOL}: {text}\n")
    sys.stderr.flush()
    hooks = args["--hooks"]
    hooks_base = hookdirs.default_base() if hooks is None else locations.expand_home(hooks)
    log_file = args["--log-file"]
    if log_file:
        log_file = os.path.abspath(locations.expand_home(log_file))
        check_log_file(log_file)
    options = dict(dry=args["--dry"], quiet=args["--quiet"], hooks_base=hooks_base,
                   log_file=log_file)
    if args["--daemon"]:
        import daemon as pydaemon

        pid_path = os.path.abspath(pid_path)
        config_path = os.path.abspath(config_path)
        os.close(hold_pid_file(pid_path))  # refuse now, while we can still say why
        with pydaemon.DaemonContext(umask=0o077, working_directory="/"):
            log = setup_log(False, log_file)
            fd = hold_pid_file(pid_path)
            try:
                return Mswatch(config_path, config, log, **options).run()
            except Exception as exc:  # detached: the log is the only place left
                log.error("exiting on an unexpected error: %s: %s", type(exc).__name__, exc)
                return 70
            finally:
                release_pid_file(pid_path, fd)
    fd = hold_pid_file(pid_path)
    try:
        log = setup_log(True, log_file)
        return Mswatch(config_path, config, log, **options).run()
    finally:
        release_pid_file(pid_path, fd)


def main(argv: Optional[list] = None) -> int:
    return guarded(TOOL, lambda: run(argv))


if __name__ == "__main__":
    sys.exit(main())
