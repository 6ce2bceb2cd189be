"""syncmail's two promises, driven by hypothesis over a fake server that
breaks where it is told (fake_server.py):

- nothing is removed on the server unless it is durable here: in the
  local maildir's new/ (or its rule's folder, and the archive for an
  archive rule), byte for byte, under a name the directory was fsynced
  with;
- a cut session loses nothing: afterwards every message is on the server
  or whole here, never neither; and a run that is not cut completes the
  move.

The state machine delivers mail on the server and runs move.Mover, the
code syncmail runs, with a session that breaks at a drawn reply (or
never), in batches of a few messages, with or without the sizes in the
listing.  The kill -9 tests against the real sshd (test_faults.py) stay:
they cover the process and the wire, this covers every point of the
conversation."""

from __future__ import annotations

import os
import shutil
import tempfile

import hypothesis.strategies as st
from fake_server import FakeServer, FakeSession
from hypothesis import HealthCheck, event, given, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from roammail.core import maildir
from roammail.syncmail import move
from roammail.syncmail.conf import parse_config
from roammail.syncmail.remote import ConnectError, RemoteSession
from roammail.syncmail.session import ServerSession

# What a message's Subject makes of it (the source's rules below).
KINDS = ("inbox", "list", "keep")
SIZES = st.one_of(st.integers(0, 3000),
                  st.sampled_from([move.WHOLE_MESSAGE_BYTES - 1, move.WHOLE_MESSAGE_BYTES + 7]))


def message(number: int, kind: str, size: int) -> bytes:
    head = f"From: sender{number}@example.org\nSubject: {kind}\n\n".encode()
    line = f"body of message {number}\n".encode()
    return head + (line * (size // len(line) + 1))[:size]


class Killed(BaseException):
    """The process killed at a chosen point (a fault no real run can be
    made to hit on demand)."""


class Moving(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="syncmail-cut-")
        self.local = os.path.join(self.root, "Mail")
        self.archive = os.path.join(self.root, "Archive")
        self.journal = os.path.join(self.root, "state", "laptop.journal")
        os.makedirs(os.path.dirname(self.journal))
        config = (f'source laptop {{\n  host = "fakehost"\n  remote = "Maildir"\n'
                  f'  local = "{self.local}"\n'
                  f'  match header "^Subject: list" folder "list"\n'
                  f'  match header "^Subject: keep" archive "{self.archive}"\n}}\n')
        [self.source] = parse_config(config, os.path.join(self.root, "syncmail.conf"))
        self.server = FakeServer()
        self.server.before_remove = self.check_durable
        self.sent: dict[str, tuple[bytes, str]] = {}  # every message delivered: data, kind
        self.count = 0
        # The names each directory held at its last fsync (move.fsync_dir).
        self.synced: dict[str, set[str]] = {}
        self.real_fsync_dir = move.fsync_dir
        move.fsync_dir = self.fsync_dir
        self.kill_at_fsync = False

    def teardown(self) -> None:
        move.fsync_dir = self.real_fsync_dir
        shutil.rmtree(self.root, ignore_errors=True)

    def fsync_dir(self, path: str) -> None:
        if self.kill_at_fsync:
            self.kill_at_fsync = False
            raise Killed(f"killed before the fsync of {path}")
        self.real_fsync_dir(path)
        self.synced[os.path.realpath(path)] = set(os.listdir(path))

    def homes(self, kind: str) -> list[str]:
        """The maildirs a message of `kind` must be durable in."""
        if kind == "list":
            return [maildir.folder_to_path(self.local, "list")]
        if kind == "keep":
            return [self.local, self.archive]
        return [self.local]

    def whole_here(self, name: str) -> bool:
        data, kind = self.sent[name]
        for home in self.homes(kind):
            path = os.path.join(home, "new", name)
            if not os.path.isfile(path):
                return False
            with open(path, "rb") as f:
                if f.read() != data:
                    return False
        return True

    def check_durable(self, name: str) -> None:
        """The server is about to remove `name`: it must be durable here."""
        data, kind = self.sent[name]
        for home in self.homes(kind):
            new = os.path.realpath(os.path.join(home, "new"))
            assert name in self.synced.get(new, ()), f"{name} removed, {new} not fsynced with it"
        assert self.whole_here(name), f"{name} removed on the server, not whole here"

    # -- what happens -----------------------------------------------------------

    @initialize(mail=st.lists(st.tuples(st.sampled_from(KINDS), SIZES), min_size=1,
                              max_size=12))
    def mail_waiting(self, mail: list[tuple[str, int]]) -> None:
        for kind, size in mail:
            self.deliver(kind, size)

    @rule(kind=st.sampled_from(KINDS), size=SIZES)
    def deliver(self, kind: str, size: int) -> None:
        self.count += 1
        name = f"{1_700_000_000 + self.count}.M{self.count}P7.server"
        data = message(self.count, kind, size)
        self.server.deliver(name, data, 1_700_000_000 + self.count)
        self.sent[name] = (data, kind)

    def run(self, session: ServerSession, batch: int) -> move.Mover:
        mover = move.Mover(self.source, "laptop", self.journal, dry_run=False, batch=batch)
        mover.run(session)
        return mover

    @rule(break_at=st.integers(1, 40), batch=st.integers(1, 4), gnu_find=st.booleans(),
          cut_in_body=st.booleans(), removes_run=st.booleans())
    def cut_run(self, break_at: int, batch: int, gnu_find: bool, cut_in_body: bool,
                removes_run: bool) -> None:
        session = FakeSession(self.server, break_at, cut_in_body=cut_in_body,
                              gnu_find=gnu_find, removes_run_on_break=removes_run)
        removed = len(self.server.removed)
        try:
            self.run(session, batch)
        except ConnectError:
            assert session.cut
            event("cut")
        else:
            assert not session.cut  # it ended before the reply that would break
            event("ended before its break")
        if len(self.server.removed) > removed:
            event("cut run removed on the server" if session.cut else "run removed on the server")

    @rule(batch=st.integers(1, 4))
    def killed_before_a_directory_fsync(self, batch: int) -> None:
        """The process dies after naming files here, before their directory
        is fsynced: after a power loss those names could be gone, so a
        later run must make them durable before it removes anything."""
        self.kill_at_fsync = True
        try:
            self.run(FakeSession(self.server), batch)
        except Killed:
            event("killed before a directory fsync")
        finally:
            self.kill_at_fsync = False

    @rule(batch=st.integers(1, 4), gnu_find=st.booleans())
    def whole_run(self, batch: int, gnu_find: bool) -> None:
        """A run that is not cut moves everything: the server's new/ is empty."""
        mover = self.run(FakeSession(self.server, gnu_find=gnu_find), batch)
        assert mover.result.left == []
        assert self.server.files == {}

    # -- what always holds ------------------------------------------------------

    @invariant()
    def nothing_lost(self) -> None:
        for name in self.sent:
            assert name in self.server.files or self.whole_here(name), f"{name} lost"

    @invariant()
    def nothing_half_written(self) -> None:
        """No message is here under its name but incomplete."""
        for name, (data, kind) in self.sent.items():
            for home in self.homes(kind):
                path = os.path.join(home, "new", name)
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        assert f.read() == data, f"{path} is not the message"


Moving.TestCase.settings = settings(max_examples=60, stateful_step_count=10, deadline=None,
                                    suppress_health_check=[HealthCheck.too_slow])
test_mail_and_runs_cut_anywhere_lose_nothing = Moving.TestCase

CUT_RUN = st.fixed_dictionaries({
    "break_at": st.integers(1, 30), "batch": st.integers(1, 4), "gnu_find": st.booleans(),
    "cut_in_body": st.booleans(), "removes_run": st.booleans()})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mail=st.lists(st.tuples(st.sampled_from(KINDS), SIZES), min_size=1, max_size=12),
       cuts=st.lists(CUT_RUN, min_size=1, max_size=4), batch=st.integers(1, 4))
def test_runs_cut_one_after_another_then_a_whole_run(mail, cuts, batch) -> None:
    """Every run cut somewhere (or ending before its break), each leaving
    nothing lost; then a run that is not cut moves what is left."""
    world = Moving()
    try:
        world.mail_waiting(mail)
        for cut in cuts:
            world.cut_run(**cut)
            world.nothing_lost()
            world.nothing_half_written()
        world.whole_run(batch, gnu_find=True)
        world.nothing_lost()
        assert all(world.whole_here(name) for name in world.sent)
    finally:
        world.teardown()


def test_both_sessions_are_server_sessions() -> None:
    """The real session and the fake offer what move.py uses (mypy checks
    the real one's signatures where cli.py hands it to move.py)."""
    assert isinstance(FakeSession(FakeServer()), ServerSession)
    operations = [name for name, value in vars(ServerSession).items()
                  if callable(value) and not name.startswith("_")]
    assert "read_tar" in operations and "broken" in operations
    for name in operations:
        assert callable(getattr(RemoteSession, name, None)), name
