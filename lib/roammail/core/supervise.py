"""supervise.py: run ONE command as a supervised child, for the wrapper tools.

A `Supervisor` starts an argument vector (never a shell line) with fork and
exec, in a new session and so in its own process group, with /dev/null as
its standard input (or ours) and every other descriptor passed through (ours
that Python did not make close-on-exec: those we inherited), and with the
parent-death signal SIGKILL (prctl PR_SET_PDEATHSIG) so that it does not
outlive us even when we are killed by SIGKILL.  While it runs, the signals
in FORWARDED sent to us are passed on to its process group.  `wait()`
blocks until the child exits, one of the caller's descriptors is readable,
or a timeout, without losing a signal (the handlers only note it and wake
the loop through set_wakeup_fd).  `stop()` sends SIGTERM to the child's
group, or to every group of a process tree the caller names, then SIGKILL
after a grace period, and reaps the child.  `exit_status()` is what a shell
would report: the exit code, or 128+signal.

Limits, on purpose and documented in inputkill(1) and socketwatch(1):
the parent-death signal reaches the direct child only (it is not inherited
across fork, and the kernel drops it when the child execs a set-user-ID
program); grandchildren are covered only by the group (or tree) kill,
which needs us alive.  A child in its own session has no controlling
terminal: a command that opens /dev/tty to ask for a password fails.

Contracts:
- `start()` raises CannotRun (exit code 127 when the command is not found,
  126 when it is found but cannot be run, as shells do) and never leaves a
  child behind when it does.
- With `subreaper=True` we become a child subreaper: orphaned descendants
  are re-parented to us and reaped by `wait()`; the tree stays visible.
- The child starts with the signals we were given ignored still ignored
  (nohup), every other one at its default action (Python's own SIG_IGN of
  SIGPIPE and SIGXFSZ undone), and the signal mask we were given.
- The caller must be single-threaded (fork) and on the main thread (signal
  handlers).

Must never: run a shell; signal our own process group or groups 0 and 1;
return from `stop()` or `__exit__` with the child unreaped; leave its
signal handlers installed after `__exit__`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import subprocess
import sys
import time
from typing import Callable, Iterable, Mapping

from .child import GROUP_CHECK_INTERVAL, signal_group, signal_process, terminate
from .cli import docopt_args
from .errors import EX_SOFTWARE, RoammailError
from .proc import group_members
from .watchproto import write_all

# Signals passed on to the child's process group while it runs.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
             signal.SIGUSR1, signal.SIGUSR2)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
EXIT_NOT_FOUND = 127  # as shells: the command was not found
EXIT_CANNOT_EXECUTE = 126  # as shells: found, but exec failed (permissions, format)
KILL_SETTLE = 2.0  # seconds we wait at most for SIGKILLed processes to be gone
ERROR_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when we fail ourselves
_NOT_FOUND_ERRNOS = (errno.ENOENT, errno.ENOTDIR)


class CannotRun(RoammailError):
    """The command could not be started; exit_code is 127 or 126."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def parse_command_line(usage: str, argv: list[str] | None,
                       version: str | None = None) -> dict:
    """Parse a wrapper's command line, options first (see cli.docopt_args)."""
    return docopt_args(usage, argv, version, options_first=True)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    """prctl(2) with one argument; OSError on failure."""
    if _libc().prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                     ctypes.c_ulong(0)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl({option}): {os.strerror(code)}")


class Supervisor:
    """One supervised command.  Use as a context manager around start()/wait()."""

    def __init__(self, argv: list[str], *, devnull_stdin: bool = True,
                 pdeathsig: int | None = signal.SIGKILL, subreaper: bool = False,
                 forward: Iterable[int] = FORWARDED) -> None:
        if not argv:
            raise ValueError("Supervisor: empty argv")
        self.argv = [os.fspath(a) for a in argv]
        self.devnull_stdin = devnull_stdin
        self.pdeathsig = pdeathsig
        self.subreaper = subreaper
        self.forward = tuple(forward)
        self.pid: int | None = None
        self.status: int | None = None  # raw wait status once reaped
        self._pending: list[int] = []
        self._wake_r = self._wake_w = -1
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup = -1

    # -- set-up and tear-down ------------------------------------------------

    def __enter__(self) -> Supervisor:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (*self.forward, signal.SIGCHLD):
            self._old_handlers[signum] = signal.signal(signum, self._note_signal)
        if self.subreaper:
            prctl(PR_SET_CHILD_SUBREAPER, 1)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self.pid is not None and self.status is None:
                self.stop(ERROR_GRACE)  # we failed: the command must not outlive us
        finally:
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            self._old_handlers.clear()
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1

    def _note_signal(self, signum: int, _frame: object) -> None:
        if signum != signal.SIGCHLD:
            self._pending.append(signum)

    # -- start -----------------------------------------------------------------

    def start(self) -> None:
        """Fork and exec the command; CannotRun if exec fails."""
        if self._wake_r < 0:
            raise RuntimeError("Supervisor.start() outside its `with` block")
        if self.pid is not None:
            raise RuntimeError("Supervisor.start() called twice")
        libc = _libc() if self.pdeathsig else None  # loaded before fork
        parent = os.getpid()
        blocked = {*self.forward, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            err_r, err_w = os.pipe()  # close-on-exec: EOF means exec worked
            try:
                pid = os.fork()
                if pid == 0:  # the child: no return from here
                    os.close(err_r)
                    self._exec_child(parent, libc, old_mask, err_w)
                os.close(err_w)
                err_w = -1
                report = b""
                while True:
                    chunk = os.read(err_r, 512)
                    if not chunk:
                        break
                    report += chunk
            finally:
                os.close(err_r)
                if err_w >= 0:
                    os.close(err_w)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if report:
            os.waitpid(pid, 0)  # it exited at once: reap it
            code_text, _, where = report.decode(errors="replace").partition(":")
            code = int(code_text)
            raise CannotRun(f"cannot run {self.argv[0]}: {os.strerror(code)}{where}",
                            EXIT_NOT_FOUND if code in _NOT_FOUND_ERRNOS
                            else EXIT_CANNOT_EXECUTE)
        self.pid = pid

    def _exec_child(self, parent: int, libc: ctypes.CDLL | None, mask: Iterable[int],
                    err_w: int) -> None:
        """In the forked child: set up, exec; on failure report errno and _exit."""
        stage = ""
        try:
            signal.set_wakeup_fd(-1)
            for signum in (*self.forward, signal.SIGCHLD):
                # A signal ignored when we were started stays ignored (nohup);
                # any handler of ours becomes the default action.
                ignored = self._old_handlers.get(signum) == signal.SIG_IGN
                signal.signal(signum, signal.SIG_IGN if ignored else signal.SIG_DFL)
            for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these: undo it
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            os.close(self._wake_r)
            os.close(self._wake_w)
            stage = " (setsid)"
            os.setsid()
            if self.devnull_stdin:
                stage = " (/dev/null)"
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)  # dup2 makes fd 0 inheritable
                if null != 0:
                    os.close(null)
            if libc is not None and self.pdeathsig:
                stage = " (prctl)"
                libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(self.pdeathsig),
                           ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
                if os.getppid() != parent:  # the parent died before prctl
                    os.kill(os.getpid(), signal.SIGKILL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            stage = ""
            os.execvp(self.argv[0], self.argv)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        except BaseException:
            code = errno.EINVAL
        try:
            os.write(err_w, f"{code}:{stage}".encode())
        finally:
            os._exit(EXIT_CANNOT_EXECUTE)

    # -- waiting -----------------------------------------------------------------

    @property
    def exited(self) -> bool:
        """True once the command has exited and was reaped."""
        return self.status is not None

    def wait(self, timeout: float | None = None, fds: Iterable[int] = ()) -> set[int]:
        """Wait until the command exits, one of `fds` is readable, or `timeout`.

        Passes on the signals received meanwhile, reaps the command (and,
        as a subreaper, orphans).  Returns the readable fds among `fds`; a
        descriptor that select() rejects (closed) is returned as readable,
        so that the caller's read reports the error.
        """
        watched = list(fds)
        deadline = None if timeout is None else time.monotonic() + timeout
        ready: set[int] = set()
        while True:
            self._forward_pending()
            self._reap()
            if self.exited or ready:
                return ready
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                readable, _, _ = select.select([self._wake_r, *watched], [], [], remaining)
            except OSError as exc:  # EBADF: a caller's fd was closed under us
                if exc.errno != errno.EBADF:
                    raise
                return set(watched)
            if self._wake_r in readable:
                self._drain_wakeup()
            ready = {fd for fd in readable if fd != self._wake_r}
            if not readable and deadline is not None and time.monotonic() >= deadline:
                self._forward_pending()
                self._reap()
                return set()

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _forward_pending(self) -> None:
        while self._pending:
            signum = self._pending.pop(0)
            if self.pid is not None and not self.exited:
                signal_group(self.pid, signum)

    def _reap(self) -> None:
        """Collect exited children without blocking."""
        if self.pid is None:
            return
        # Only a subreaper reaps any child: orphans are its to reap.  Else
        # the command alone, so that other children of a caller are left to it.
        target = -1 if self.subreaper else self.pid
        while not (target == self.pid and self.exited):
            try:
                pid, status = os.waitpid(target, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                self.status = status

    def exit_status(self) -> int:
        """The command's status as a shell reports it: code, or 128+signal."""
        if self.status is None:
            return EX_SOFTWARE
        code = os.waitstatus_to_exitcode(self.status)
        return code if code >= 0 else 128 - code

    # -- stopping ------------------------------------------------------------------

    def stop(self, grace: float,
             members: Callable[[], Mapping[int, int]] | None = None) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; reap the command.

        core.child's TERM -> grace -> KILL (`terminate`), with a settle of
        KILL_SETTLE seconds.  `members()` returns pid -> pgid of the
        processes to stop, now (the running ones); by default the members of
        the command's own group.  Each signal goes to every group named
        there (and the command's own group), or to the process itself when
        its group is ours or 0 or 1.  It is over once they are all gone and
        the command is reaped; after SIGKILL it waits for the command, and
        at most KILL_SETTLE seconds for the others.  Signals we get
        meanwhile are passed on while the command runs.
        """
        if self.pid is None:
            return
        pgid = self.pid
        find = members if members is not None else (lambda: group_members(pgid))

        def running() -> bool:
            self._reap()
            return bool(find()) or not self.exited

        terminate(lambda signum: self._signal_all(find(), signum), running, grace,
                  pause=self._pause, settle=KILL_SETTLE)
        while not self.exited:  # SIGKILLed: it ends, whatever it was doing
            self._pause(GROUP_CHECK_INTERVAL)

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` while stopping: wait() while the command runs (it
        returns at once after that), a plain sleep once it has exited."""
        if self.exited:
            time.sleep(seconds)
            self._reap()  # a subreaper's orphans
        else:
            self.wait(seconds)

    def _signal_all(self, members: Mapping[int, int], signum: int) -> None:
        own = os.getpgrp()
        groups = set() if self.exited or self.pid is None else {self.pid}
        for pid, pgid in members.items():
            if pgid in (0, 1, own):
                signal_process(pid, signum)
            else:
                groups.add(pgid)
        for group in groups:
            signal_group(group, signum)


def spawn_dying_with_us(argv: list, **popen_kwargs) -> subprocess.Popen:
    """subprocess.Popen of argv in its own session and process group, with
    the parent-death signal SIGKILL set, so it never outlives us (mswatch's
    watchers and syncs).  Extra keyword arguments go to Popen."""
    try:
        libc = _libc()
    except OSError:
        libc = None
    parent = os.getpid()

    def setup() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                       ctypes.c_ulong(0), ctypes.c_ulong(0))
            if os.getppid() != parent:  # we died before prctl took effect
                os._exit(127)

    return subprocess.Popen(argv, start_new_session=True, close_fds=True, preexec_fn=setup,
                            **popen_kwargs)


# The program a SpareChild runs until it is told its command.
SPARE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spare_exec.py")


class SpareUnusable(Exception):
    """The spare child is gone (killed, or it never started): nothing was run."""


class SpareChild:
    """A child started ahead of time that becomes one command later: what
    spawn_dying_with_us starts (own session and process group, parent-death
    signal SIGKILL, the standard descriptors given), except that `run(argv)`
    then costs an exec, not a fork of our whole interpreter.

    Until then it is a small interpreter (spare_exec.py: no site-packages)
    that waits on a pipe.  `run()` returns its Popen, which from then on is
    the command's (same pid, so poll(), wait() and kill_group work as for
    spawn_dying_with_us); it raises OSError as Popen does when the command
    cannot be executed, and SpareUnusable when the spare is gone, having
    run nothing.  `discard()` ends an unused spare and reaps it.  One use:
    either run() or discard(), once.
    """

    def __init__(self, *, stdin, stdout, stderr) -> None:
        if not sys.executable:
            raise OSError(errno.ENOENT, "no interpreter to start")
        cmd_r, self._cmd_w = os.pipe()
        self._status_r, status_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SPARE_SCRIPT, str(cmd_r), str(status_w),
                 str(os.getpid())],
                stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
                close_fds=True, pass_fds=(cmd_r, status_w))
        except BaseException:
            os.close(self._cmd_w)
            os.close(self._status_r)
            raise
        finally:
            os.close(cmd_r)
            os.close(status_w)

    def run(self, argv: list) -> subprocess.Popen:
        """Exec argv in the spare; its Popen (see the class)."""
        words = [os.fsencode(word) for word in argv]
        if not words or any(b"\0" in word for word in words):
            self.discard()
            raise ValueError("an empty command, or a NUL byte in an argument")
        try:
            write_all(self._cmd_w, b"".join(word + b"\0" for word in words))
        except BrokenPipeError:
            self.discard()
            raise SpareUnusable("the spare child is gone") from None
        os.close(self._cmd_w)
        self._cmd_w = -1
        try:
            report = _read_to_end(self._status_r)
        finally:
            os.close(self._status_r)
            self._status_r = -1
        if not report.startswith(b"+"):  # it ended before it had the command
            self.proc.wait()
            raise SpareUnusable("the spare child is gone")
        if len(report) > 1:
            self.proc.wait()
            code = int(report[1:]) or errno.EINVAL
            raise OSError(code, os.strerror(code))
        return self.proc

    def discard(self) -> None:
        """End the spare (unused) and reap it."""
        for fd in (self._cmd_w, self._status_r):
            if fd >= 0:
                os.close(fd)
        self._cmd_w = self._status_r = -1
        if self.proc.poll() is None:
            try:
                self.proc.kill()  # it runs nothing of anyone's: no grace needed
            except ProcessLookupError:
                pass
        self.proc.wait()


def _read_to_end(fd: int) -> bytes:
    data = b""
    while True:
        chunk = os.read(fd, 512)
        if not chunk:
            return data
        data += chunk
