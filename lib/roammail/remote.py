"""remote.py: syncmail's one ssh session to the server's maildir.

Owns the wire: it runs the system OpenSSH client (through plumbum) once
per source, with a small POSIX sh program (REMOTE_SCRIPT) as the remote
command, and speaks that program's line protocol over the session's
stdin/stdout.  The server needs only sh, find, wc, tar, touch and rm.  It
never writes a local file, never decides what to fetch or remove (the
caller does, see syncmail_plan.py), and never puts data (a file name, a
path) into a command line unquoted: the maildir path travels as one
shlex.quote'd argument, and file names never travel to the server at all;
the caller names files by their index in the server's own listing.

Protocol, after the remote program prints `H 2`:
  listing  the stale tmp/ files (NUL-terminated names, then an empty one),
           then new/ as "INDEX TYPE NAME" records, each NUL-terminated,
           then an empty record.  TYPE is f (regular), l (symlink), d
           (directory) or o (other).  The listing is the remote shell's
           positional parameters from then on: later requests name files
           by INDEX.
  C SPEC   sizes of the regular files (not symlinks, nothing followed) among
           SPEC: `wc -c` lines, then "END".
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
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from dataclasses import dataclass
from typing import IO, Iterator, Optional

from . import tarstream
from .errors import RoammailError, TempFailure
from .syncmail_plan import Entry, ranges

PROTOCOL = "H 2"
BLOCK = 512
# How much of ssh's stderr is kept for error messages.
STDERR_KEEP = 64 * 1024
READ_CHUNK = 256 * 1024
# Buffer of the pipe from ssh (fs.pipe-max-size allows 1 MiB by default).
PIPE_BYTES = 1024 * 1024
# At most this many indices in one C request (see RemoteSession.send_sizes).
SIZE_CHUNK = 1000

REMOTE_SCRIPT = r"""
LC_ALL=C; export LC_ALL
umask 077
md=$1; stamp=$2
case $md in
"~") md=$HOME ;;
"~/"*) md=$HOME/${md#??} ;;
-*) md=./$md ;;
esac
cd "$md" 2>/dev/null || { printf 'E cannot change to the maildir\n'; exit 3; }
[ -d new ] && [ -d tmp ] || { printf 'E not a maildir (no new/ or tmp/)\n'; exit 3; }
# GNU tar unquotes backslash escapes in operand names unless told not to.
tarq=
case $(tar --version 2>/dev/null) in *GNU*) tarq=--no-unquote ;; esac
printf 'H 2\n'
ref=.syncmail-ref.$$
if (cd tmp && TZ=UTC0 touch -t "$stamp" "$ref") 2>/dev/null; then
  (cd tmp && find . ! -name . -prune -type f ! -name "$ref" ! -newer "$ref" \
     -exec sh -c 'for f do printf "%s\000" "${f#./}"; done' sh {} +
   rm -f "$ref")
fi
printf '\000'
cd new || { printf 'E cannot change to new/\n'; exit 3; }
set -- * .[!.]* ..?*
# dd gathers the listing into large writes: a write per record would be an
# ssh packet per record.
{
  i=0
  for f do
    i=$((i+1))
    if [ -L "$f" ]; then t=l
    elif [ -f "$f" ]; then t=f
    elif [ -d "$f" ]; then t=d
    elif [ -e "$f" ]; then t=o
    else continue
    fi
    printf '%s %s %s\000' "$i" "$t" "$f"
  done
  printf '\000'
} | dd ibs=65536 obs=65536 2>/dev/null
set -f
# refs SPEC: R, the quoted words of SPEC's files, and I, their indices.
# Each SPEC given as indices is remembered as number nS for "=N".
refs() {
  R=; I=
  [ $# -gt 0 ] || return 0
  for r do
    case $r in
    =*) n=${r#=}
        case $n in ''|*[!0-9]*) return 1 ;; esac
        [ $# -eq 1 ] && [ "$n" -ge 1 ] && [ "$n" -le "$nS" ] || return 1
        eval "R=\"\$R\$bR$n\"; I=\"\$I\$bI$n\""; return 0 ;;
    ''|*[!0-9-]*|-*|*-) return 1 ;;
    *-*) a=${r%-*}; b=${r#*-}
         while [ "$a" -le "$b" ]; do R="$R \"./\${$a}\""; I="$I $a"; a=$((a+1)); done ;;
    *) R="$R \"./\${$r}\""; I="$I $r" ;;
    esac
  done
  nS=$((nS+1)); eval "bR$nS=\$R; bI$nS=\$I"
}
nR=0; nW=0; nS=0
while IFS= read -r line; do
  cmd=${line%% *}; spec=${line#"$cmd"}
  refs $spec || { printf 'E bad request\n'; exit 3; }
  case $cmd in
  C) [ -n "$R" ] && eval "find $R -prune -type f -exec wc -c {} +" 2>/dev/null
     printf 'END\n' ;;
  T) if [ -n "$R" ]; then eval "tar cf - $tarq -- $R"; st=$?; else st=0; fi
     printf '%-511s\n' "T $st" ;;
  R) nR=$((nR+1)); p=
     if [ -n "$R" ]; then eval "rm -f -- $R" & p=$!; fi
     eval "rmpid$nR=\$p; rmI$nR=\$I" ;;
  W) [ "$nW" -lt "$nR" ] || { printf 'E bad request\n'; exit 3; }
     nW=$((nW+1)); eval "p=\$rmpid$nW; ri=\$rmI$nW"; unset "rmpid$nW" "rmI$nW"
     st=0
     if [ -n "$p" ]; then wait "$p"; st=$?; fi
     if [ "$st" -ne 0 ]; then
       for n in $ri; do
         eval "f=\${$n}"
         if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\n' "$n"; fi
       done
     fi
     printf 'END\n' ;;
  Q) exit 0 ;;
  *) printf 'E bad request\n'; exit 3 ;;
  esac
done
"""


def _widen_pipe(pipe) -> None:
    """Give the pipe from ssh PIPE_BYTES of buffer (Linux; best effort).
    With the default 64 KiB, ssh stalls whenever this side is busy
    writing files, and a tar stream arrives in fits and starts: 10,000
    messages took 0.15 s longer."""
    import fcntl

    try:
        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (OSError, ValueError):
        pass  # another system, or over the user's pipe buffer quota


class ConnectError(TempFailure):
    """The ssh connection could not be made or broke: try again later."""


class RemoteError(RoammailError):
    """The remote side refused (no such maildir) or spoke out of protocol."""

    exit_code = 1


def remote_command(maildir: str, stamp: str) -> str:
    """The command line ssh gives the remote login shell: sh with our
    program, the maildir and the stale-tmp stamp, each quoted."""
    return " ".join(["exec", "/bin/sh", "-c", shlex.quote(REMOTE_SCRIPT), "syncmail-remote",
                     shlex.quote(maildir), shlex.quote(stamp)])


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


@dataclass
class Listing:
    stale_tmp: list
    entries: list  # syncmail_plan.Entry


class RemoteSession:
    """One ssh process running REMOTE_SCRIPT; see the module docstring."""

    def __init__(self, host: str, maildir: str, stamp: str,
                 ssh_program: str = "ssh") -> None:
        from plumbum import local

        self.host = host
        self.maildir = maildir
        ssh = local[ssh_program]
        argv = ["-T", "-o", "BatchMode=yes", "--", host, remote_command(maildir, stamp)]
        try:
            self.proc = ssh[argv].popen(stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        except OSError as exc:
            raise ConnectError(f"cannot run {ssh_program}: {exc.strerror or exc}") from exc
        _widen_pipe(self.proc.stdout)
        self.reader = Reader(self.proc.stdout)
        self._stderr = bytearray()
        self._specs: dict[frozenset, int] = {}  # indices -> their number (see _spec)
        self._specs_given = 0
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    # -- plumbing -------------------------------------------------------------

    def _drain_stderr(self) -> None:
        stream = self.proc.stderr
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            keep = STDERR_KEEP - len(self._stderr)
            if keep > 0:
                self._stderr += chunk[:keep]

    def stderr_text(self) -> str:
        text = bytes(self._stderr).decode("utf-8", "replace").strip()
        return " ".join(text.split())[:600]

    def broken(self, what: str) -> ConnectError:
        """The exception for a session that ended out of turn."""
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
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
            try:
                status = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                status = None
            self._stderr_thread.join(timeout=2)
            why = self.stderr_text() or f"ssh exit status {status}"
            raise ConnectError(f"cannot connect to {self.host}: {why}")
        text = data.decode("utf-8", "replace")
        if text.startswith("E "):
            raise RemoteError(f"{self.host}:{self.maildir}: {text[2:]}")
        if text != PROTOCOL:
            raise RemoteError(f"{self.host}: unexpected greeting {text[:80]!r} (does the "
                              "login shell print something?)")

    def listing(self) -> Listing:
        stale = []
        while True:
            rec = self.reader.record(b"\0")
            if rec is None:
                raise self.broken("while listing tmp/")
            if not rec:
                break
            stale.append(os.fsdecode(rec))
        entries = []
        while True:
            rec = self.reader.record(b"\0")
            if rec is None:
                raise self.broken("while listing new/")
            if not rec:
                break
            index, kind, name = rec.split(b" ", 2)
            entries.append(Entry(int(index), kind.decode(), os.fsdecode(name)))
        return Listing(stale, entries)

    def _size_lines(self, what: str, out: dict) -> None:
        """Read `wc -c` lines up to "END" into `out` (name -> size)."""
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
        try:
            status = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self._stderr_thread.join(timeout=2)
        return status

    def abort(self) -> None:
        """Kill ssh (after an error); never raises."""
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
