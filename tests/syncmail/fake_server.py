"""A FAKE server for syncmail's moving (move.Mover): a maildir's new/ in
memory, reached through FakeSession, an in-memory session.ServerSession.

It is a fake, not a model of sshd: it exists to inject the faults a real
server cannot produce on demand, at an exact point.  The session breaks
at its Nth reply, raising remote.ConnectError as a cut ssh connection
does, and a tar stream can be cut in the middle of a message's body (the
reader's EOFError, as tarstream gives it).  The server checks every
removal against `before_remove` first, so that a test can look at the
local side at the moment a message would be gone from the server.

What it keeps of the real server program (remote.sh): the listing's
indices (glob order, LC_ALL=C) name files in every later request; sizes
only of regular files still there; tar streams of the files still there,
in the order asked; removals carried out in the order the requests were
sent, without an answer; answers read in the order asked.  What a cut
leaves: the requests sent before it are carried out or not, as the test
says (`removes_run_on_break`): either may happen on a real link.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Optional

from roammail.syncmail.plan import Entry
from roammail.syncmail.remote import ConnectError, Listing
from roammail.syncmail.tarstream import Body, Member


class FakeServer:
    """A server maildir's new/: name -> (data, mtime); `removed`, the names
    removed in the order they were; `before_remove(name)`, called before
    each removal (a test's check)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, int]] = {}
        self.removed: list[str] = []
        self.before_remove: Optional[Callable[[str], None]] = None

    def deliver(self, name: str, data: bytes, mtime: int) -> None:
        self.files[name] = (data, mtime)

    def remove(self, name: str) -> None:
        if name in self.files:
            if self.before_remove is not None:
                self.before_remove(name)
            del self.files[name]
            self.removed.append(name)


class _Cut(Exception):
    """The fake's own break, turned into ConnectError by the session."""


class FakeSession:
    """A FAKE session.ServerSession over a FakeServer (see the module
    docstring).  `break_at`: the reply (1 = the greeting, 2 = the listing,
    then each answer to a sizes request, each tar member and each tar
    trailer, each answer about removals) at which the connection breaks,
    None for never; `cut_in_body`: a break at a tar member comes in the
    middle of its body (half of it arrives), not before its header;
    `gnu_find`: the listing gives the sizes (else they are asked for);
    `removes_run_on_break`: the removals sent before a break are carried
    out (else they are lost with the connection)."""

    def __init__(self, server: FakeServer, break_at: Optional[int] = None, *,
                 cut_in_body: bool = False, gnu_find: bool = True,
                 removes_run_on_break: bool = True) -> None:
        self.server = server
        self.break_at = break_at
        self.cut_in_body = cut_in_body
        self.gnu_find = gnu_find
        self.removes_run_on_break = removes_run_on_break
        self.tar_status: Optional[int] = None
        self.replies = 0  # replies given so far
        self.cut = False  # the connection is broken
        self.closed = False
        self.names: list[str] = []  # the listing's names: index N is names[N - 1]
        self.requests: deque = deque()  # (kind, indices), sent, not carried out yet
        self.rm_left: deque = deque()  # per removal request: the indices it left

    # -- the link ---------------------------------------------------------------

    def broken(self, what: str) -> ConnectError:
        self.cut = True
        return ConnectError(f"fakehost: connection lost {what} (fake)")

    def _reply(self, what: str) -> None:
        """One more reply arrives, unless this is where the link breaks."""
        if self.cut or self.closed:
            raise self.broken(what)
        self.replies += 1
        if self.break_at is not None and self.replies >= self.break_at:
            self._break()
            raise self.broken(what)

    def _break(self) -> None:
        self.cut = True
        if self.removes_run_on_break:
            while self.requests:
                kind, indices = self.requests.popleft()
                if kind == "R":
                    self._rm(indices)

    def _send(self, kind: str, indices: list[int]) -> None:
        if self.cut or self.closed:
            raise self.broken("while sending a request")
        self.requests.append((kind, indices))

    def _next(self, kind: str, what: str) -> list[int]:
        """Carry out the requests sent before the next one of `kind` (the
        removals) and return that one's indices."""
        while self.requests:
            sent, indices = self.requests.popleft()
            if sent == "R":
                self._rm(indices)
            elif sent == kind:
                return indices
            else:
                raise AssertionError(f"the client reads a {kind} answer, the next is {sent}")
        raise AssertionError(f"the client reads a {kind} answer it never asked for ({what})")

    def _rm(self, indices: list[int]) -> None:
        for i in indices:
            self.server.remove(self.names[i - 1])
        self.rm_left.append([i for i in indices if self.names[i - 1] in self.server.files])

    # -- the phases -------------------------------------------------------------

    def hello(self) -> None:
        self._reply("while connecting")

    def listing(self) -> Listing:
        self._reply("while listing new/")
        self.names = sorted(self.server.files, key=lambda n: n.encode("utf-8",
                                                                     "surrogateescape"))
        entries = [Entry(i, "f", name) for i, name in enumerate(self.names, 1)]
        sizes = ({name: len(data) for name, (data, _) in self.server.files.items()}
                 if self.gnu_find else {})
        return Listing([], entries, sizes)

    def send_sizes(self, indices: list[int]) -> int:
        self._send("C", list(indices))
        return 1

    def read_sizes(self, answers: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for _ in range(answers):
            indices = self._next("C", "sizes")
            self._reply("while checking sizes")
            for i in indices:
                found = self.server.files.get(self.names[i - 1])
                if found is not None:
                    out[self.names[i - 1]] = len(found[0])
        return out

    def send_tar(self, indices: list[int]) -> None:
        self._send("T", list(indices))

    def read_tar(self) -> Iterator[tuple[Member, Optional[Body]]]:
        self.tar_status = None
        indices = self._next("T", "tar")
        status = 0
        for i in sorted(set(indices)):
            name = self.names[i - 1]
            found = self.server.files.get(name)
            if found is None:
                status = 2  # tar: ./NAME: Cannot stat
                continue
            data, mtime = found
            cut_here = (not self.cut and self.cut_in_body and self.break_at is not None
                        and self.replies + 1 >= self.break_at and len(data) > 1)
            if cut_here:
                self.replies += 1
                self._break()
                yield Member("./" + name, len(data), mtime, b"0"), Body(
                    _Cutting(data[:len(data) // 2]).read, len(data))
                # The client skips the rest of the body (after a local
                # failure, it only drains the stream): the stream ends.
                raise self.broken("in the tar stream (unexpected end of data)")
            self._reply("in the tar stream (unexpected end of data)")
            yield Member("./" + name, len(data), mtime, b"0"), Body(_Cutting(data).read,
                                                                     len(data))
        self._reply("after the tar stream")
        self.tar_status = status

    def send_remove(self, indices: list[int]) -> None:
        self._send("R", list(indices))

    def send_removed(self) -> None:
        self._send("W", [])

    def read_removed(self) -> set[int]:
        self._next("W", "removed")
        self._reply("while removing")
        return set(self.rm_left.popleft())

    def close(self) -> int:
        if self.cut:
            return 255
        # Q: the server carries out what it was sent, then exits.
        while self.requests:
            kind, indices = self.requests.popleft()
            if kind == "R":
                self._rm(indices)
        self.closed = True
        return 0

    def abort(self) -> None:
        """ssh killed: what the server had been sent may still run."""
        if not self.cut:
            self._break()


class _Cutting:
    """read(n) over `data`: fewer than n bytes once it runs out (a pipe at
    its end), as the real session's reader gives them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk
