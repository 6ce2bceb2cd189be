"""child.py: run one child process safely; the only code that pumps a child's pipes.

`run_child` starts a command (an argument vector, never a shell line built
from data) in its own session and process group, feeds it its stdin (bytes,
or a binary file object: a regular file is handed over as the child's stdin
itself, anything else streamed in chunks), collects its stderr (the first
`stderr_limit` bytes, counting the rest) and optionally its stdout, and
pumps all three at once with non-blocking descriptors, so that a child
flooding stderr while not reading its input cannot deadlock us.  It stops a
child that makes no I/O progress for `stall_timeout` seconds, or when the
caller's `should_abort()` says so: SIGTERM to the whole process group, then
SIGKILL to the group after `grace` seconds.  It always reaps the child.

It is also the only code that stops a process group: the rules of TERM ->
grace -> KILL are written once (see "TERM -> grace -> KILL" below) and
serve run_child, `kill_group` (blocking), `kill_group_async` (asyncio) and
`terminate` (any set of processes; core.supervise's stop of a tree).

Contracts:
- Failing to start the command (ENOENT, EACCES, ...) is reported in the
  result (`error`, `returncode` None), never raised.  A child that exits or
  closes its stdin early is reported (`stdin_complete` False), not raised.
  Other exceptions (bad arguments, KeyboardInterrupt) propagate, but only
  after the child's group has been killed and the child reaped.
- A child being killed never sees EOF on its stdin before it is dead, so a
  sendmail killed half-way cannot mistake a partial message for a whole one.
- A regular file given as stdin (a spool file positioned at its message)
  is not pumped through a pipe: its bytes from that position on are copied
  into a sealed memory file (memfd) that becomes the child's stdin.  The
  child then reads exactly those bytes, to their real end, even if we are
  killed while it reads: end-of-input can never come early.  Its reading
  is progress for the stall timeout (we watch the offset we share with
  it), and `stdin_complete` says that it read up to the end.
- After the main child exits we drain its pipes for at most
  DRAIN_AFTER_EXIT seconds: a grandchild that keeps them open (an ssh
  ControlPersist master, say) does not keep us waiting, and is left alone.

Must never: run a shell unless the caller's argv names one; print or log
(the caller decides what to say); raise for a child's failure; leave a
zombie; return while a child it was asked to kill may still be running
without having sent it SIGKILL.

Relies on SIGPIPE being ignored (Python's default), so that writing to a
child that went away is EPIPE, not death.  For a pipe, `stdin_complete`
means every byte went into the pipe and the pipe was closed: a child that
exits without reading what still sat in the pipe buffer is not detected;
its exit status is the authority there.  For a regular file it means the
child's offset reached the end of the file at some point.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import BinaryIO, Callable, Generator, Mapping, Union

from .proc import group_running

CHUNK = 64 * 1024  # bytes per read or write: one default Linux pipe buffer
POLL_INTERVAL = 0.1  # seconds: the longest we sleep without checking should_abort
DRAIN_AFTER_EXIT = 1.0  # seconds we keep reading pipes held open after the child exits
GROUP_CHECK_INTERVAL = 0.02  # seconds between two looks at whether a signalled group is gone

StdinSource = Union[bytes, bytearray, memoryview, BinaryIO, None]


@dataclass(frozen=True)
class ChildResult:
    """What happened to one child.  See `describe()` for a one-line text.

    returncode is the exit status, None when the child was killed by a
    signal (`signal` then says which) or could not be started (`error`).
    """

    argv: list[str]
    returncode: int | None
    signal: int | None
    stderr: bytes
    stderr_total: int
    stdout: bytes | None
    stdin_complete: bool
    stalled: bool = False
    aborted: bool = False
    error: str | None = None
    stall_timeout: float | None = None  # the limit in force, for describe()
    start_errno: int | None = None  # errno when the command could not be started
    stderr_closed: bool = False  # its stderr reached end of file before any kill

    @property
    def ok(self) -> bool:
        """Exit status 0, all input written, and nothing went wrong on our side.

        A child we had to kill (stall, abort) is never ok, even if it
        answered SIGTERM with exit 0: better to send a message twice than
        to lose one.
        """
        return (
            self.returncode == 0
            and self.stdin_complete
            and self.error is None
            and not self.stalled
            and not self.aborted
        )

    def _status(self) -> str:
        if self.signal is not None:
            return f"killed by signal {self.signal} ({_signal_name(self.signal)})"
        if self.returncode is not None:
            return f"exit status {self.returncode}"
        return "status unknown"

    def describe(self) -> str:
        """One line of human text, e.g. "exit status 3"."""
        if self.error is not None and self.returncode is None and self.signal is None:
            return self.error
        if self.error is not None:
            return f"{self.error} (child {self._status()})"
        if self.stalled:
            return f"stalled for {_seconds(self.stall_timeout)} without I/O, killed"
        if self.aborted:
            return f"stopped on request, {self._status()}"
        if self.signal is not None or self.returncode is None:
            return self._status()
        if self.returncode == 0 and not self.stdin_complete:
            return "exited before reading all its input (exit status 0)"
        if not self.stdin_complete:
            return f"exit status {self.returncode}, before reading all its input"
        return self._status()

    def exit_status_for_shell(self) -> int:
        """The status a shell would report: returncode, 128+signal, 127/126 if not run."""
        if self.returncode is not None:
            return self.returncode
        if self.signal is not None:
            return 128 + self.signal
        if self.start_errno == errno.ENOENT:
            return 127
        return 126


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "some time"
    number = int(value) if float(value).is_integer() else value
    return f"{number} second" if number == 1 else f"{number} seconds"


def signal_group(pgid: int, signum: int) -> None:
    """Send signum to the process group pgid; never to groups 0 and 1 or our
    own.  A group that is gone (or no longer ours) is not an error."""
    if pgid <= 1 or pgid == os.getpgrp():
        return
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def signal_process(pid: int, signum: int) -> None:
    """Send signum to the one process pid; never to pids 0 and 1 or ourselves.
    A process that is gone (or no longer ours) is not an error."""
    if pid <= 1 or pid == os.getpid():
        return
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def describe_returncode(code: int) -> str:
    """A subprocess return code as text: "exit status 3", or for a negative
    code "killed by signal 9 (SIGKILL)"."""
    if code < 0:
        return f"killed by signal {-code} ({_signal_name(-code)})"
    return f"exit status {code}"


# -- TERM -> grace -> KILL ------------------------------------------------------
#
# The one way the tools stop what they started (run_child's stall and
# abort, kill_group, kill_group_async, supervise.Supervisor.stop):
#
#  1. Nothing running (no process of the group but zombies): nothing is
#     sent, and the answer is None.
#  2. SIGTERM to all of it at once.
#  3. Wait until nothing of it runs, for at most `grace` seconds, looking
#     every GROUP_CHECK_INTERVAL seconds (zombies do not count: an
#     unreaped child of ours is gone for this purpose).  All gone: the
#     answer is SIGTERM.
#  4. Still running after `grace` seconds: SIGKILL to all of it; the answer
#     is SIGKILL.  With `settle` (Supervisor.stop of a process tree), wait
#     up to `settle` seconds more for it to be gone, sending SIGKILL again
#     to whatever still runs (a process that forked between a look and the
#     kill).
#  5. Interrupted while waiting in step 3 (an exception, a cancelled
#     task): SIGKILL at once, then the exception goes on.  Nothing we were
#     asked to stop is left running without having been sent SIGKILL.
#
# It never reaps: every caller waits for its own child, which `running`
# must not count once it is a zombie.  The rules live in `_termination`,
# a generator that yields the pauses; `terminate` sleeps them (or waits
# in the caller's own way), `kill_group_async` awaits them.


def _termination(send: Callable[[int], None], running: Callable[[], bool], grace: float,
                 settle: float) -> Generator[float, None, int | None]:
    """The steps above; yields the seconds to pause before looking again."""
    if not running():
        return None
    try:
        send(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while running():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            yield min(GROUP_CHECK_INTERVAL, remaining)
        else:
            return signal.SIGTERM
    except BaseException:
        send(signal.SIGKILL)
        raise
    send(signal.SIGKILL)
    deadline = time.monotonic() + settle
    while running():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        send(signal.SIGKILL)
        yield min(GROUP_CHECK_INTERVAL, remaining)
    return signal.SIGKILL


def _drive(steps: Generator[float, None, int | None],
           pause: Callable[[float], object]) -> int | None:
    """Run the steps of a _termination, pausing with `pause`; its answer."""
    try:
        seconds = next(steps)
        while True:
            try:
                pause(seconds)
            except BaseException as exc:
                seconds = steps.throw(exc)  # SIGKILL, then the exception again
            else:
                seconds = next(steps)
    except StopIteration as done:
        return done.value


def terminate(send: Callable[[int], None], running: Callable[[], bool], grace: float, *,
              pause: Callable[[float], object] = time.sleep, settle: float = 0.0) -> int | None:
    """TERM -> grace -> KILL (the rules above) of whatever `send(signum)`
    signals and `running()` says is still running.

    `pause(seconds)` waits between two looks (time.sleep by default; a
    caller with signals to pass on or children to reap waits its own way).
    Blocks for at most `grace` + `settle` seconds plus the pauses' own
    overrun.  Returns the last signal sent (SIGTERM or SIGKILL), or None
    when nothing was running.
    """
    return _drive(_termination(send, running, grace, settle), pause)


def _check_pgid(pgid: int) -> None:
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}")


def kill_group(pgid: int, grace: float) -> int | None:
    """SIGTERM process group `pgid`; SIGKILL it if still alive after `grace` seconds.

    The rules above, for one process group.  Blocks for at most `grace`
    seconds (plus a /proc scan).  Returns the last signal sent (SIGTERM or
    SIGKILL), or None if the group was already gone.  It does not reap: the
    caller waits for its own child.  Refuses (ValueError) group 0, 1 and our
    own group.
    """
    _check_pgid(pgid)
    return terminate(lambda signum: signal_group(pgid, signum),
                     lambda: group_running(pgid), grace)


async def kill_group_async(pgid: int, grace: float) -> int | None:
    """kill_group for asyncio code: the same rules and answer, but the grace
    is awaited (asyncio.sleep between two looks), so the event loop runs on
    meanwhile.  Cancelled during the grace, it sends SIGKILL at once and
    lets the cancellation go on.  A grace of 0 never yields to the loop.
    """
    import asyncio  # loaded already by its callers; not by run_child's

    _check_pgid(pgid)
    steps = _termination(lambda signum: signal_group(pgid, signum),
                         lambda: group_running(pgid), grace, 0.0)
    try:
        seconds = next(steps)
        while True:
            try:
                await asyncio.sleep(seconds)
            except BaseException as exc:
                seconds = steps.throw(exc)  # SIGKILL, then the exception again
            else:
                seconds = next(steps)
    except StopIteration as done:
        return done.value


class _Input:
    """The child's input, handed out in chunks: bytes, or a file read lazily."""

    def __init__(self, source: StdinSource) -> None:
        self._file: BinaryIO | None = None
        self._pending = memoryview(b"")
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._pending = memoryview(source).cast("B")
        elif source is not None:
            self._file = source

    def pending(self) -> memoryview:
        """The next bytes to write; empty at the end.  May raise OSError (reading)."""
        if not self._pending and self._file is not None:
            data = self._file.read(CHUNK)
            if data is None:  # a non-blocking file with nothing ready: not EOF
                raise OSError(errno.EAGAIN, "the input file would block")
            if not data:
                self._file = None
            else:
                self._pending = memoryview(data)
        return self._pending[:CHUNK]

    def consume(self, count: int) -> None:
        self._pending = self._pending[count:]


class _FileInput:
    """A file handed to the child as its stdin, and how far it read.

    `fd` is an open file description of this child's own (nothing the child
    does with its offset moves the caller's, nor a later child's), holding
    the input from its current offset to its end.  The child gets a copy
    of it as fd 0; we keep `fd` to read the offset they share.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.last = self.furthest = os.lseek(fd, 0, os.SEEK_CUR)

    def moved(self) -> bool:
        """True when the child's offset changed since the last call."""
        try:
            where = os.lseek(self.fd, 0, os.SEEK_CUR)
        except OSError:
            return False
        if where == self.last:
            return False
        self.last = where
        self.furthest = max(self.furthest, where)
        return True

    @property
    def complete(self) -> bool:
        self.moved()
        return self.furthest >= self.size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _regular_file(source: StdinSource) -> _FileInput | None:
    """A _FileInput for a file object on a regular file, else None.

    The bytes from the file object's place to the file's end are copied,
    in the kernel, into a sealed memory file (memfd): the child may seek in
    its stdin, fstat it or read it twice and sees exactly those bytes, and
    nothing of the file before them (a spool file's header).  Where there
    is no memfd, the file is reopened read-only, positioned at that place.
    """
    if source is None or isinstance(source, (bytes, bytearray, memoryview)):
        return None
    try:
        fd = source.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    position = source.tell()  # the reader's place, its read-ahead counted
    own = _memory_copy(fd, position, st.st_size)
    try:
        if own is None:
            try:
                own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                own = os.dup(fd)  # shares the offset with `source`, which we leave alone
            os.lseek(own, position, os.SEEK_SET)
        return _FileInput(own, os.fstat(own).st_size)
    except BaseException:
        if own is not None:
            os.close(own)
        raise


def _memory_copy(fd: int, start: int, end: int) -> int | None:
    """A sealed memfd holding bytes start..end of `fd`, at offset 0; None
    where memfd_create is missing."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None:
        return None
    try:
        mem = memfd_create("roammail-stdin", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None
    try:
        offset = start
        while offset < end:
            sent = os.sendfile(mem, fd, offset, min(end - offset, 1 << 30))
            if sent == 0:  # the file shrank: hand over what is there
                break
            offset += sent
        import fcntl

        fcntl.fcntl(mem, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
        try:
            fcntl.fcntl(mem, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
        except OSError as exc:
            # EBUSY: the kernel still held a reference to a page just
            # copied (seen under load).  The size is sealed already, which
            # is what tells the child where the message ends.
            if exc.errno != errno.EBUSY:
                raise
        os.lseek(mem, 0, os.SEEK_SET)
        return mem
    except BaseException:
        os.close(mem)
        raise


def run_child(
    argv: list[str],
    stdin: StdinSource = None,
    *,
    stall_timeout: float | None = None,
    grace: float = 5.0,
    capture_stdout: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stderr_limit: int = 1 << 20,
    should_abort: Callable[[], bool] | None = None,
) -> ChildResult:
    """Run `argv`, feed it `stdin`, collect its stderr; never deadlocks, never raises for it.

    stdin: bytes, a readable binary file object (read in CHUNK pieces from
    its current position: pass a spool file positioned at the message), or
    None for /dev/null.  stdout goes to /dev/null unless `capture_stdout`.
    stall_timeout: seconds without a byte read from or written to the child
    before it is killed (None: never).  should_abort: polled at least every
    POLL_INTERVAL seconds; True kills the child the same way.
    """
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise ValueError("run_child: empty argv")
    infile = _regular_file(stdin)
    try:
        return _start(argv, stdin, infile, stall_timeout=stall_timeout, grace=grace,
                      capture_stdout=capture_stdout, env=env, cwd=cwd,
                      stderr_limit=stderr_limit, should_abort=should_abort)
    finally:
        if infile is not None:
            infile.close()


def _start(argv: list[str], stdin: StdinSource, infile: _FileInput | None, *,
           stall_timeout: float | None, grace: float, capture_stdout: bool,
           env: Mapping[str, str] | None, cwd: str | os.PathLike[str] | None,
           stderr_limit: int, should_abort: Callable[[], bool] | None) -> ChildResult:
    if infile is not None:
        child_stdin: int = infile.fd
    elif stdin is None:
        child_stdin = subprocess.DEVNULL
    else:
        child_stdin = subprocess.PIPE
    try:
        proc = subprocess.Popen(
            argv,
            stdin=child_stdin,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            bufsize=0,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        where = f" (in {cwd})" if cwd is not None and exc.filename == cwd else ""
        return ChildResult(
            argv=argv, returncode=None, signal=None, stderr=b"", stderr_total=0,
            stdout=None, stdin_complete=False, stall_timeout=stall_timeout,
            error=f"could not run {argv[0]}: {exc.strerror or exc}{where}",
            start_errno=exc.errno,
        )
    return _Pump(proc, argv, _Input(None if infile is not None else stdin), infile,
                 stdin is None, stall_timeout, grace, stderr_limit, should_abort).run()


class _Pump:
    """The event loop of one run_child call."""

    def __init__(self, proc: subprocess.Popen, argv: list[str], source: _Input,
                 infile: _FileInput | None, no_stdin: bool, stall_timeout: float | None,
                 grace: float, stderr_limit: int,
                 should_abort: Callable[[], bool] | None) -> None:
        self.proc = proc
        self.argv = argv
        self.source = source
        self.infile = infile
        self.stall_timeout = stall_timeout
        self.grace = grace
        self.stderr_limit = stderr_limit
        self.should_abort = should_abort
        self.stdin_complete = no_stdin
        self.stderr = bytearray()
        self.stderr_total = 0
        self.stderr_closed = False
        self.stdout: bytearray | None = bytearray() if proc.stdout is not None else None
        self.stalled = False
        self.aborted = False
        self.error: str | None = None
        # The TERM -> grace -> KILL of the child's group, once started: its
        # steps (None before), when the next is due, and whether it is over.
        self.stopping: Generator[float, None, int | None] | None = None
        self.next_step_at = 0.0
        self.stop_done = False
        self.sel = selectors.DefaultSelector()

    # -- the loop ---------------------------------------------------------

    def run(self) -> ChildResult:
        proc = self.proc
        try:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    os.set_blocking(pipe.fileno(), False)
            if proc.stdin is not None:
                self.sel.register(proc.stdin, selectors.EVENT_WRITE)
            if proc.stdout is not None:
                self.sel.register(proc.stdout, selectors.EVENT_READ)
            assert proc.stderr is not None  # run_child always pipes it
            self.sel.register(proc.stderr, selectors.EVENT_READ)
            self._loop()
            if self.infile is not None:
                self.stdin_complete = self.infile.complete
            self._close_pipes(keep_stdin=True)
            self._finish_stop()  # the rest of the group, before its stdin's EOF below
        except BaseException:
            if self.stopping is not None:
                self._finish_stop()
            elif proc.poll() is None:
                kill_group(proc.pid, self.grace)
            raise
        finally:
            self._close_pipes()
            self.sel.close()
            proc.wait()  # the main child was killed or has exited: never a zombie
        code = proc.returncode
        return ChildResult(
            argv=self.argv,
            returncode=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            stderr=bytes(self.stderr),
            stderr_total=self.stderr_total,
            stdout=None if self.stdout is None else bytes(self.stdout),
            stdin_complete=self.stdin_complete,
            stalled=self.stalled,
            aborted=self.aborted,
            error=self.error,
            stall_timeout=self.stall_timeout,
            stderr_closed=self.stderr_closed,
        )

    def _loop(self) -> None:
        proc = self.proc
        now = time.monotonic()
        last_progress = now
        next_abort_check = now
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None:
                if not self.sel.get_map() or now >= exited_at + DRAIN_AFTER_EXIT:
                    return
            elif self.stopping is not None:
                if not self.stop_done and now >= self.next_step_at:
                    self._step_stop()
            else:
                if self.should_abort is not None and now >= next_abort_check:
                    next_abort_check = now + POLL_INTERVAL / 2
                    if self.should_abort():
                        self.aborted = True
                        self._start_kill()
                        continue
                if self.stall_timeout is not None and now - last_progress >= self.stall_timeout:
                    self.stalled = True
                    self._start_kill()
                    continue

            timeout = POLL_INTERVAL
            if exited_at is not None:
                timeout = min(timeout, exited_at + DRAIN_AFTER_EXIT - now)
            elif self.stopping is not None:
                if not self.stop_done:
                    timeout = min(timeout, self.next_step_at - now)
            elif self.stall_timeout is not None:
                timeout = min(timeout, last_progress + self.stall_timeout - now)
            timeout = max(timeout, 0.0)

            if self.infile is not None and exited_at is None and self.infile.moved():
                last_progress = now  # the child reads its stdin file
            if not self.sel.get_map():
                if exited_at is None:
                    self._wait_exit(timeout)
                continue
            for key, _events in self.sel.select(timeout):
                if key.fileobj is proc.stdin:
                    moved = self._write_stdin()
                else:
                    moved = self._read(key.fileobj)
                if moved:
                    last_progress = time.monotonic()

    def _wait_exit(self, timeout: float) -> None:
        """Wait up to `timeout` for the child to exit, waking at once when it
        does (a pidfd where Linux has one: Popen.wait's sleeps would cost
        about a millisecond per delivered message)."""
        proc = self.proc
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                fd = pidfd_open(proc.pid)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    select.select([fd], [], [], timeout)
                finally:
                    os.close(fd)
                return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    # -- one step each ----------------------------------------------------

    def _write_stdin(self) -> bool:
        """Write one chunk; True on progress.  Closes stdin at the end or on EPIPE."""
        stdin = self.proc.stdin
        assert stdin is not None  # registered only when stdin is a pipe
        try:
            chunk = self.source.pending()
        except OSError as exc:
            self.error = f"could not read the input: {exc.strerror or exc}"
            self._start_kill()  # stdin stays open: no EOF for a partial input
            return False
        if not chunk:
            self.sel.unregister(stdin)
            stdin.close()
            self.stdin_complete = True
            return True
        try:
            written = os.write(stdin.fileno(), chunk)
        except BlockingIOError:
            return False
        except (BrokenPipeError, ConnectionResetError):
            self.sel.unregister(stdin)
            stdin.close()  # the child closed its stdin or exited: stdin_complete stays False
            return False
        self.source.consume(written)
        return written > 0

    def _read(self, pipe) -> bool:
        try:
            data = os.read(pipe.fileno(), CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(pipe)
            pipe.close()
            if pipe is self.proc.stderr and self.stopping is None:
                self.stderr_closed = True
            return True
        if pipe is self.proc.stderr:
            room = self.stderr_limit - len(self.stderr)
            if room > 0:
                self.stderr += data[:room]
            self.stderr_total += len(data)
        elif self.stdout is not None:
            self.stdout += data
        return True

    def _start_kill(self) -> None:
        """Start the TERM -> grace -> KILL of the group; stop feeding stdin
        but keep it open until the child is dead."""
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            try:
                self.sel.unregister(stdin)
            except KeyError:
                pass
        pid = self.proc.pid
        self.stopping = _termination(
            lambda signum: signal_group(pid, signum),
            lambda: self.proc.poll() is None or group_running(pid), self.grace, 0.0)
        self._step_stop()

    def _step_stop(self) -> None:
        """Take the next step of the stop (the first sends SIGTERM); the loop
        takes them while the main child runs, so the look is a cheap poll()."""
        assert self.stopping is not None
        try:
            self.next_step_at = time.monotonic() + next(self.stopping)
        except StopIteration:
            self.stop_done = True

    def _finish_stop(self) -> None:
        """Take the stop's remaining steps, sleeping between them."""
        if self.stopping is not None and not self.stop_done:
            self.stop_done = True
            _drive(self.stopping, time.sleep)

    def _close_pipes(self, keep_stdin: bool = False) -> None:
        pipes = [self.proc.stdout, self.proc.stderr]
        if not keep_stdin:
            pipes.append(self.proc.stdin)
        for pipe in pipes:
            if pipe is None or pipe.closed:
                continue
            try:
                self.sel.unregister(pipe)
            except (KeyError, ValueError):
                pass
            try:
                pipe.close()
            except OSError:
                pass
