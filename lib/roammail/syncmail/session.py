"""syncmail/session.py: what moving mail asks of the server, as a type.

ServerSession is the seam between move.py (what to ask, what to do with
the answers) and remote.py (the wire): exactly the operations move.py
uses on the server.  remote.RemoteSession implements it over ssh;
tests/syncmail/fake_server.py implements it in memory, to inject the
faults a real server cannot produce on demand.

Requests are sent ahead of their answers (send_*), and the answers read
later in the same order (read_*).  A session that breaks (a cut
connection, ssh killed) raises remote.ConnectError from whichever call
finds out; the server answered nothing more after that, and may or may
not have carried out the requests sent before it.

Only type checkers and tests import this module: typing costs syncmail
milliseconds of a start-up that is on the clock of every run (remote.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .remote import ConnectError, Listing
    from .tarstream import Body, Member


@runtime_checkable
class ServerSession(Protocol):
    """One session with the server program, in the order move.py uses it:
    hello(), listing(), then requests (sizes, tar streams, removals) sent
    ahead and answered in order, then close(), or abort() on a failure."""

    # tar's exit status for the last tar stream read (None: not known).
    tar_status: Optional[int]

    def hello(self) -> None:
        """Wait for the server program's greeting."""

    def listing(self) -> Listing:
        """The server's stale tmp/ files and new/: the entries' indices
        name them in every later request."""

    def send_sizes(self, indices: list[int]) -> int:
        """Ask for the sizes of the regular files among `indices`; return
        how many answers read_sizes() must read."""

    def read_sizes(self, answers: int) -> dict[str, int]:
        """name -> size: the answers to one send_sizes()."""

    def send_tar(self, indices: list[int]) -> None:
        """Ask for a tar stream of the files at `indices`."""

    def read_tar(self) -> Iterator[tuple[Member, Optional[Body]]]:
        """The next tar stream's members and bodies (None: not a regular
        file); then tar_status is set."""

    def send_remove(self, indices: list[int]) -> None:
        """Ask the server to remove the files at `indices` (no answer)."""

    def send_removed(self) -> None:
        """Ask what the oldest send_remove() not asked about yet left."""

    def read_removed(self) -> set[int]:
        """The indices still there: the answer to one send_removed()."""

    def broken(self, what: str) -> ConnectError:
        """The exception for a session that ended `what` ("in the tar
        stream (...)"), for the caller to raise."""

    def close(self) -> int:
        """End the session; its exit status."""

    def abort(self) -> None:
        """End the session after a failure; never raises."""
