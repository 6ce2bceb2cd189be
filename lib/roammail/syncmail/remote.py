"""syncmail/remote.py: syncmail's one ssh session to the server's maildir.

Owns the wire: it runs the system OpenSSH client once per source, with a
small POSIX sh program (remote.sh, next to this module) as the remote
command, and speaks that program's line protocol over the session's
stdin/stdout.  The server
needs only sh, find, tar, touch and rm (and wc and dd where find is not
GNU find).  It never writes a local file, never decides what to fetch or
remove (the caller does, see plan.py), and never puts data (a
file name, a path) into a command line unquoted: the maildir path travels
as one quoted argument, and file names never travel to the server at
all; the caller names files by their index in the server's own listing.

Why ssh is started with os.posix_spawnp and not through plumbum, the
project's tool for running commands: syncmail starts ssh before it
imports anything else, so that the login (most of a run that finds
nothing new) overlaps with the rest of its start-up.  plumbum's import
alone costs about 30 ms, subprocess's about 15 ms (it imports locale and
re), threading's and signal's several more; os.posix_spawnp needs only
the os module, already loaded.  Neither would add anything here: this is
one argv, three pipes and a wait.

Protocol, after the remote program prints `H 3`:
  listing  the stale tmp/ files (NUL-terminated names, then an empty one);
           then the names in new/, NUL-terminated, then an empty record:
           the N-th name has INDEX N, and the names are the remote
           shell's positional parameters from then on (later requests
           name files by INDEX); then "TYPE SIZE NAME" records about them
           (in any order, NUL-terminated, then an empty record).  TYPE is
           f (regular), l (symlink), d (directory) or anything else for
           other types; SIZE is the size of a regular file, or "-" where
           the server's find cannot say (then C gives it).  A name with no
           record vanished (or is an unmatched glob pattern): it is not
           listed.  An empty new/ ends the session there: no request can
           follow, and ssh exits without waiting for Q.
  C SPEC   sizes of the regular files (not symlinks, nothing followed) among
           SPEC: "SIZE ./NAME" lines, then "END".
  T SPEC   a tar archive of SPEC, then a 512-byte trailer "T STATUS".
  R SPEC   rm -f SPEC in the background (other requests go on meanwhile);
           no answer.
  W        wait for the oldest R not waited for yet; the indices it left,
           one a line, then "END" (looked for only when rm failed).
  Q        exit.
SPEC is indices and ranges: "1-4 7 9-10", or "=N": the files of the
N-th request that gave its SPEC so (the remote shell builds each list of
names once).

The remote program answers requests in the order they come and reads the
next one only when it has answered the last, so the caller may send
requests ahead (send_*) and read their answers later (read_*), in the
same order: syncmail asks for the next batch's tar stream before it
stores the current batch, so that the server works while it does.

What the remote program costs the server is on every run's clock: an
empty tmp/ or new/ costs no process at all, the listing is one find
(GNU find's -printf gives types and sizes together; elsewhere a loop of
test(1) builtins), and tar's flavour is looked up at the first tar.
"""

from __future__ import annotations

import os

from ..core.errors import IOFailure, RoammailError, TempFailure

try:  # signal's own import costs ~5 ms (it imports enum); _signal is loaded
    import _signal as signals
except ImportError:  # pragma: no cover - every CPython has _signal
    import signal as signals

TYPE_CHECKING = False  # typing costs ~15 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import IO, Iterator, Optional

    from . import tarstream

PROTOCOL = "H 3"
BLOCK = 512
# How much of ssh's stderr is kept for error messages.
STDERR_KEEP = 64 * 1024
READ_CHUNK = 256 * 1024
# Buffer of the pipe from ssh (fs.pipe-max-size allows 1 MiB by default).
PIPE_BYTES = 1024 * 1024
# At most this many indices in one C request (see RemoteSession.send_sizes).
SIZE_CHUNK = 1000
# Seconds ssh has to exit after Q (else it is killed), and to report how it
# ended after a failure.
CLOSE_SECONDS = 30
BROKEN_SECONDS = 5
# Options for every session, whatever the user's ssh_config says: no
# terminal, no password prompt (cron), and nothing forwarded: the remote
# program needs no agent, no X11 and no ports, and a forwarding the
# configuration asks for could only fail ("address already in use") or
# cost a round trip.  Compression and ciphers stay the user's choice.
SSH_OPTIONS = ("-T", "-x", "-a", "-o", "BatchMode=yes", "-o", "ClearAllForwardings=yes")
# Signals a child gets back at their default disposition: Python ignores
# them, and subprocess resets them the same way.
DEFAULT_SIGNALS = tuple(getattr(signals, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                        if hasattr(signals, name))

# The server program: package data next to this module (shellchecked,
# and run by dash, bash and busybox sh in the tests).  Read when the first
# session starts: a read of a few KiB, with no import.
PROGRAM_FILE = "remote.sh"
_program: Optional[str] = None

# The listing's TYPE letters (GNU find's %y, or the fallback loop's) as
# plan.py's entry kinds; any other letter is "o".
_KINDS = {b"f": "f", b"l": "l", b"d": "d"}


def quote(text: str) -> str:
    """`text` as one word for a POSIX shell: in single quotes, each ' as
    '\\''.  (shlex.quote, whose import costs ~10 ms: it imports re.)"""
    return "'" + text.replace("'", "'\\''") + "'"


def program_path() -> str:
    """Where the server program (PROGRAM_FILE) is installed."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), PROGRAM_FILE)


def remote_program() -> str:
    """The server program's text (read once); IOFailure if it cannot be
    read (an incomplete installation)."""
    global _program
    if _program is None:
        path = program_path()
        try:
            with open(path, "rb") as f:
                _program = f.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise IOFailure(f"cannot read the server program {path}: {why}") from exc
    return _program


def remote_command(maildir: str, stamp: str) -> str:
    """The command line ssh gives the remote login shell: sh with our
    program, the maildir and the stale-tmp stamp, each quoted."""
    return " ".join(["exec", "/bin/sh", "-c", quote(remote_program()), "syncmail-remote",
                     quote(maildir), quote(stamp)])


class ConnectError(TempFailure):
    """The ssh connection could not be made or broke: try again later.
    `offline`: ssh could not reach the server at all (see unreachable())."""

    def __init__(self, message: str, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline


# What ssh says (after "ssh: connect to host HOST port PORT: ") when
# connect(2) failed: the network is down or does not lead to the server.
# OpenSSH prints strerror(3), which it does not translate.
_CONNECT_FAILURES = ("Network is unreachable", "No route to host", "Connection refused",
                     "Connection timed out", "Operation timed out", "Host is down",
                     "Cannot assign requested address")


def unreachable(status: Optional[int], stderr: str) -> bool:
    """Whether ssh, which exited `status` before the session started,
    printing `stderr`, failed because it could not reach the server at
    all: it exited 255 and said that the host name did not resolve or
    that it could not connect (ssh's own line, or a ProxyJump's).  A
    server that answered and refused (an authentication failure, a
    changed host key) is no such failure."""
    if status != 255:
        return False
    lines = [line.strip() for line in stderr.splitlines()]
    if any(line.startswith(("Permission denied", "Host key verification failed"))
           for line in lines):
        return False
    for line in lines:
        if line.startswith("ssh: Could not resolve hostname "):
            return True
        if (line.startswith("ssh: connect to host ")
                and line.rpartition(": ")[2] in _CONNECT_FAILURES):
            return True
    return False


class RemoteError(RoammailError):
    """The remote side spoke out of protocol (a bad request, a login shell
    that prints something)."""

    exit_code = 76  # sysexits' EX_PROTOCOL


class NoRemoteMaildir(RemoteError):
    """The server's maildir is missing, or is not a maildir."""

    exit_code = 66  # sysexits' EX_NOINPUT


def _pipe() -> tuple[int, int]:
    """A pipe (close-on-exec) whose ends are not 0, 1 or 2, which the child
    gets as its own: with a standard descriptor closed, pipe(2) could hand
    one out."""
    import fcntl

    ends = []
    for fd in os.pipe():
        if fd <= 2:
            high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = high
        ends.append(fd)
    return ends[0], ends[1]


def _widen_pipe(fd: int) -> None:
    """Give the pipe from ssh PIPE_BYTES of buffer (Linux; best effort).
    With the default 64 KiB, ssh stalls whenever this side is busy
    writing files, and a tar stream arrives in fits and starts: 10,000
    messages took 0.15 s longer."""
    import fcntl

    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (OSError, ValueError):
        pass  # another system, or over the user's pipe buffer quota


class Child:
    """A program started with pipes on its stdin, stdout and stderr
    (`stdin`, a buffered writer; `stdout` and `stderr`, unbuffered
    readers); `wait`, `poll` and `kill` as subprocess.Popen's.  Raises
    OSError if it cannot be started."""

    def __init__(self, argv: list[str]) -> None:
        fds: list[int] = []
        try:
            for _ in range(3):
                fds.extend(_pipe())
            in_r, in_w, out_r, out_w, err_r, err_w = fds
            actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, in_r, 0),
                                              (os.POSIX_SPAWN_DUP2, out_w, 1),
                                              (os.POSIX_SPAWN_DUP2, err_w, 2)]
            closefrom = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)  # Python 3.13
            if closefrom is not None:
                actions.append((closefrom, 3))
            # In a process group of its own: a Ctrl-C on the terminal is
            # syncmail's to handle (it stops the session itself), not a
            # signal that kills ssh under it.
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions,
                                       setsigdef=DEFAULT_SIGNALS, setpgroup=0)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        self.returncode: Optional[int] = None
        self.stdin = open(in_w, "wb")  # noqa: SIM115 - closed by close()/the caller
        self.stdout = open(out_r, "rb", buffering=0)  # noqa: SIM115
        self.stderr = open(err_r, "rb", buffering=0)  # noqa: SIM115

    def _reaped(self, status: int) -> int:
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._reaped(status)
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        """Its exit status (-N: killed by signal N); TimeoutError if it is
        still running after `timeout` seconds."""
        if self.returncode is not None:
            return self.returncode
        if timeout is not None and not self._exits_within(timeout):
            raise TimeoutError(f"pid {self.pid} still running after {timeout} s")
        if self.returncode is None:
            return self._reaped(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def _exits_within(self, timeout: float) -> bool:
        """Wait at most `timeout` seconds for the exit: on a pidfd where
        there is one (no polling loop, no latency), else by polling."""
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            import select

            try:
                fd = pidfd_open(self.pid)
            except OSError:
                fd = None  # an old kernel: poll as below
            if fd is not None:
                try:
                    poller = select.poll()
                    poller.register(fd, select.POLLIN)
                    return bool(poller.poll(max(0, int(timeout * 1000))))
                finally:
                    os.close(fd)
        import time

        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return True

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signals.SIGKILL)
            except ProcessLookupError:
                pass


class Reader:
    """Buffered reads of exact sizes and separated records from a pipe."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.buf = bytearray()
        self.pos = 0

    def _fill(self) -> bool:
        read = getattr(self.raw, "read1", self.raw.read)
        chunk = read(READ_CHUNK)
        if not chunk:
            return False
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk
        return True

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes (fewer only at end of input); what tarstream calls."""
        if n is None or n < 0:
            raise ValueError("Reader.read needs a size")
        while len(self.buf) - self.pos < n:
            if not self._fill():
                break
        end = min(self.pos + n, len(self.buf))
        data = bytes(self.buf[self.pos:end])
        self.pos = end
        return data

    def record(self, sep: bytes) -> Optional[bytes]:
        """The bytes up to the next `sep` (which is consumed), None at EOF."""
        while True:
            i = self.buf.find(sep, self.pos)
            if i >= 0:
                data = bytes(self.buf[self.pos:i])
                self.pos = i + len(sep)
                return data
            if not self._fill():
                return None

    def section(self) -> Optional[list[bytes]]:
        """The NUL-terminated records up to the next empty one (which is
        consumed), in one split; None at EOF."""
        searched = 0  # bytes after pos known to hold no b"\0\0"
        while True:
            ready = len(self.buf) - self.pos
            if ready and self.buf[self.pos] == 0:
                self.pos += 1
                return []
            i = self.buf.find(b"\0\0", self.pos + searched)
            if i >= 0:
                records = bytes(self.buf[self.pos:i]).split(b"\0")
                self.pos = i + 2
                return records
            searched = max(0, ready - 1)
            if not self._fill():
                return None


class Listing:
    """What the server's maildir holds: `stale_tmp`, the names of old tmp/
    files; `entries`, new/ (plan.Entry); `sizes`, name -> size of
    the regular files whose size the listing gave."""

    __slots__ = ("stale_tmp", "entries", "sizes")

    def __init__(self, stale_tmp: list, entries: list, sizes: dict) -> None:
        self.stale_tmp = stale_tmp
        self.entries = entries
        self.sizes = sizes


class RemoteSession:
    """One ssh process running the server program (remote.sh); see the module docstring.
    Starting it returns at once: ssh logs in while the caller goes on,
    and hello() waits for it."""

    def __init__(self, host: str, maildir: str, stamp: str,
                 ssh_program: str = "ssh") -> None:
        self.host = host
        self.maildir = maildir
        argv = [ssh_program, *SSH_OPTIONS, "--", host, remote_command(maildir, stamp)]
        try:
            self.proc = Child(argv)
        except OSError as exc:
            raise ConnectError(f"cannot run {ssh_program}: {exc.strerror or exc}") from exc
        _widen_pipe(self.proc.stdout.fileno())
        self.reader = Reader(self.proc.stdout)
        self._stderr = bytearray()
        self._specs: dict[frozenset, int] = {}  # indices -> their number (see _spec)
        self._specs_given = 0
        self.tar_status: Optional[int] = None
        # Imported after the start, while ssh logs in: select for waiting
        # on ssh's exit at the end.
        import select  # noqa: F401
        import threading

        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    # -- plumbing -------------------------------------------------------------

    def _drain_stderr(self) -> None:
        stream = self.proc.stderr
        while True:
            chunk = stream.read(65536)
            if not chunk:
                return
            keep = STDERR_KEEP - len(self._stderr)
            if keep > 0:
                self._stderr += chunk[:keep]

    def stderr_text(self) -> str:
        text = bytes(self._stderr).decode("utf-8", "replace").strip()
        return " ".join(text.split())[:600]

    def _status_after(self, seconds: float) -> Optional[int]:
        """ssh's exit status, if it exits within `seconds`."""
        try:
            return self.proc.wait(timeout=seconds)
        except TimeoutError:
            return None

    def broken(self, what: str) -> ConnectError:
        """The exception for a session that ended out of turn."""
        status = self._status_after(BROKEN_SECONDS)
        self._stderr_thread.join(timeout=2)
        why = self.stderr_text()
        if why:
            detail = f": {why}"
        else:
            detail = f" (ssh exit status {status})" if status is not None else ""
        return ConnectError(f"{self.host}: connection lost {what}{detail}")

    def _send(self, line: str) -> None:
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self.broken("while sending a request") from None

    def _line(self, what: str) -> str:
        data = self.reader.record(b"\n")
        if data is None:
            raise self.broken(what)
        text = data.decode("utf-8", "surrogateescape")
        if text.startswith("E "):
            raise RemoteError(f"{self.host}:{self.maildir}: {text[2:]}")
        return text

    # -- the phases -----------------------------------------------------------

    def hello(self) -> None:
        """Wait for the remote program's greeting; ConnectError or RemoteError."""
        data = self.reader.record(b"\n")
        if data is None:
            status = self._status_after(10)
            self._stderr_thread.join(timeout=2)
            why = self.stderr_text() or f"ssh exit status {status}"
            offline = unreachable(status, bytes(self._stderr).decode("utf-8", "replace"))
            raise ConnectError(f"cannot connect to {self.host}: {why}", offline)
        text = data.decode("utf-8", "replace")
        if text.startswith("E "):  # remote.sh's only errors before its greeting
            raise NoRemoteMaildir(f"{self.host}:{self.maildir}: {text[2:]}")
        if text != PROTOCOL:
            raise RemoteError(f"{self.host}: unexpected greeting {text[:80]!r} (does the "
                              "login shell print something?)")

    def _section(self, what: str) -> list[bytes]:
        records = self.reader.section()
        if records is None:
            raise self.broken(what)
        return records

    def listing(self) -> Listing:
        from .plan import OTHER, Entry

        stale = [os.fsdecode(rec) for rec in self._section("while listing tmp/")]
        names = self._section("while listing new/")
        about = {}
        for rec in self._section("while listing new/"):
            fields = rec.split(b" ", 2)
            if len(fields) != 3:
                raise RemoteError(f"{self.host}: the listing of new/ is out of protocol")
            about[fields[2]] = (fields[0], fields[1])
        entries = []
        sizes = {}
        for index, raw in enumerate(names, 1):
            found = about.get(raw)
            if found is None:
                continue  # vanished, or a glob pattern that matched nothing
            kind = _KINDS.get(found[0], OTHER)
            name = os.fsdecode(raw)
            entries.append(Entry(index, kind, name))
            if kind == "f" and found[1].isdigit():
                sizes[name] = int(found[1])
        return Listing(stale, entries, sizes)

    def _size_lines(self, what: str, out: dict) -> None:
        """Read "SIZE ./NAME" lines up to "END" into `out` (name -> size)."""
        while True:
            text = self._line(what)
            if text == "END":
                return
            number, _, name = text.lstrip(" ").partition(" ")
            if name.startswith("./") and number.isdigit():
                out[name[2:]] = int(number)

    # Requests are sent ahead with send_*() and their answers read, in
    # the same order, with the matching read_*().

    def _spec(self, indices: list[int]) -> str:
        """The SPEC of `indices` in a request sent right after: "=N" if a
        request gave them before (the N-th to give indices), else the
        indices, which the remote shell then remembers as the next N."""
        from .plan import ranges

        if not indices:
            return ""
        key = frozenset(indices)
        number = self._specs.get(key)
        if number is not None:
            return f"={number}"
        self._specs_given += 1
        self._specs[key] = self._specs_given
        return ranges(indices)

    def send_sizes(self, indices: list[int]) -> int:
        """Ask for the sizes of the regular files among `indices`, now;
        return the number of answers read_sizes() must read.

        Indices asked before are named by number; others are asked in
        requests of at most SIZE_CHUNK indices: the remote shell builds its
        word lists by string concatenation, which is quadratic in a
        request's length."""
        if frozenset(indices) in self._specs:
            self._send("C " + self._spec(indices))
            return 1
        wanted = sorted(set(indices))
        chunks = [wanted[i:i + SIZE_CHUNK] for i in range(0, len(wanted), SIZE_CHUNK)] or [[]]
        self._send("\n".join("C " + self._spec(chunk) for chunk in chunks))
        return len(chunks)

    def read_sizes(self, answers: int) -> dict[str, int]:
        """name -> size, the answers to one send_sizes()."""
        out: dict[str, int] = {}
        for _ in range(answers):
            self._size_lines("while checking sizes", out)
        return out

    def send_tar(self, indices: list[int]) -> None:
        """Ask for the tar stream of `indices` (read it with read_tar())."""
        self._send("T " + self._spec(indices))

    def read_tar(self) -> Iterator[tuple[tarstream.Member, Optional[tarstream.Body]]]:
        """Yield (member, body) for each member of the next tar stream
        (tarstream.members); body is None for a member that is not a
        regular file.  Afterwards the trailer is read; tar's status is in
        self.tar_status.  A stream that breaks or is not tar is
        ConnectError (see broken())."""
        from . import tarstream

        self.tar_status = None
        try:
            yield from tarstream.members(self.reader.read)
        except (EOFError, tarstream.TarFormatError) as exc:
            raise self.broken(f"in the tar stream ({exc})") from None
        self._trailer()

    def _trailer(self) -> None:
        while True:
            block = self.reader.read(BLOCK)
            if len(block) < BLOCK:
                raise self.broken("after the tar stream")
            if block.count(0) == BLOCK:
                continue
            text = block.decode("ascii", "replace").strip()
            if not text.startswith("T "):
                raise RemoteError(f"{self.host}: the tar stream ended out of protocol")
            self.tar_status = int(text[2:]) if text[2:].isdigit() else None
            return

    def send_remove(self, indices: list[int]) -> None:
        """Ask for rm -f of the files at `indices`, which the server starts
        in the background; send_removed() asks how it ended."""
        self._send("R " + self._spec(indices))

    def send_removed(self) -> None:
        """Ask what the oldest send_remove() not asked about yet left (see
        read_removed())."""
        self._send("W")

    def read_removed(self) -> set[int]:
        """The indices still there, the answer to one send_removed()."""
        left: set[int] = set()
        while True:
            text = self._line("while removing")
            if text == "END":
                return left
            if text.isdigit():
                left.add(int(text))

    def close(self) -> int:
        """Say goodbye and wait for ssh; return its exit status."""
        try:
            self.proc.stdin.write(b"Q\n")
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        status = self._status_after(CLOSE_SECONDS)
        if status is None:
            self.proc.kill()
            status = self.proc.wait()
        self._stderr_thread.join(timeout=2)
        return status

    def abort(self) -> None:
        """Kill ssh (after an error); never raises."""
        try:
            self.proc.kill()
            self.proc.wait(timeout=BROKEN_SECONDS)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
