"""Unit tests of watch_maildirs/watch.py's parts that need no running tool:

- Coalescer, with a fake clock (and hypothesis: no change waits longer than
  the window, no name is written twice within it);
- MaildirWatch's mapping from events to folder names, on a real maildir
  with a fake inotify that numbers watches per inode as the kernel does;
- its errors: ENOSPC names the sysctl (exit 1), the base moved (exit 2);
- stream_changes on a real inotify and a real pipe, in-process.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from inotify_simple import Event, flags

from peers.maildirs import make_maildir
from roammail.watch_maildirs.watch import (
    COALESCE_WINDOW,
    IN_CREATE,
    IN_DELETE,
    IN_DONT_FOLLOW,
    IN_IGNORED,
    IN_MOVE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Coalescer,
    MaildirWatch,
    StructureChange,
    WatchError,
    WatchLimitError,
    stream_changes,
)

IN_ISDIR = int(flags.ISDIR)

# ---------------------------------------------------------------- Coalescer


def test_first_change_is_due_at_once():
    c = Coalescer(0.02)
    c.add("INBOX", 10.0)
    assert c.next_due() == 10.0
    assert c.pop_due(10.0) == ["INBOX"]
    assert c.next_due() is None


def test_changes_within_the_window_make_one_line_at_its_end():
    c = Coalescer(0.02)
    c.add("a", 10.0)
    assert c.pop_due(10.0) == ["a"]
    for t in (10.001, 10.005, 10.019):
        c.add("a", t)
        assert c.pop_due(t) == []
    assert c.next_due() == pytest.approx(10.02)
    assert c.pop_due(10.0199) == []
    assert c.pop_due(10.02) == ["a"]
    assert c.pop_due(10.5) == []


def test_other_names_are_not_held_back_by_a_busy_one():
    c = Coalescer(0.02)
    c.add("a", 1.0)
    c.pop_due(1.0)
    c.add("a", 1.001)
    c.add("b", 1.001)
    assert c.pop_due(1.001) == ["b"]
    assert c.pop_due(1.02) == ["a"]


def test_after_a_quiet_window_a_change_is_due_at_once_again():
    c = Coalescer(0.02)
    c.add("a", 1.0)
    c.pop_due(1.0)
    c.add("a", 1.03)
    assert c.pop_due(1.03) == ["a"]


def test_pop_all_returns_what_is_held_back():
    c = Coalescer(0.02)
    c.add("a", 1.0)
    c.pop_due(1.0)
    c.add("a", 1.001)
    assert c.pop_all() == ["a"]
    assert c.next_due() is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from("abc")), max_size=60))
def test_no_change_waits_longer_than_the_window(steps):
    """Drive a Coalescer as stream_changes does (pop at every event and at
    every next_due), with times in ms; check the two promises."""
    window = 20
    c = Coalescer(window)
    now = 0
    changes: list[tuple[int, str]] = []
    written: list[tuple[int, str]] = []

    def pop_until(t: int) -> None:
        while c.next_due() is not None and c.next_due() <= t:
            due_at = c.next_due()
            written.extend((due_at, n) for n in c.pop_due(due_at))

    for gap, name in steps:
        pop_until(now + gap)
        now += gap
        c.add(name, now)
        changes.append((now, name))
        written.extend((now, n) for n in c.pop_due(now))
    pop_until(now + 10 * window)
    for when, name in changes:  # each change is followed by a line soon enough
        assert any(when <= w <= when + window for w, n in written if n == name), (when, name)
    for name in "abc":  # and lines of one name are a window apart at least
        times = [w for w, n in written if n == name]
        assert all(b - a >= window for a, b in zip(times, times[1:])), times


# ------------------------------------------------------- MaildirWatch, mapping


class FakeInotify:
    """inotify as MaildirWatch sees it: one wd per inode (following symlinks
    unless IN_DONT_FOLLOW), ENOSPC past `limit` watches."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self.limit = limit
        self.by_inode: dict[tuple[int, int], int] = {}
        self.paths: dict[int, str] = {}
        self.removed: list[int] = []
        self.pending: list[Event] = []
        self._next = 1

    def add_watch(self, path, mask: int) -> int:
        try:
            st = os.lstat(path) if mask & IN_DONT_FOLLOW else os.stat(path)
        except OSError as exc:
            raise OSError(exc.errno, os.strerror(exc.errno)) from None
        key = (st.st_dev, st.st_ino)
        if key not in self.by_inode:
            if len(self.by_inode) >= self.limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.by_inode[key] = self._next
            self.paths[self._next] = str(path)
            self._next += 1
        return self.by_inode[key]

    def rm_watch(self, wd: int) -> None:
        for key, value in list(self.by_inode.items()):
            if value == wd:
                del self.by_inode[key]
                self.removed.append(wd)
                return
        raise OSError(errno.EINVAL, "Invalid argument")

    def wd(self, path) -> int:
        st = os.stat(path)
        return self.by_inode[(st.st_dev, st.st_ino)]

    def read(self, timeout=None):
        events, self.pending = self.pending, []
        return events

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def ev(wd: int, mask: int, name: str = "") -> Event:
    return Event(wd, mask, 0, name)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir", ["a.b", "Sent"])


def started(base: Path, **kwargs) -> tuple[MaildirWatch, FakeInotify]:
    fake = FakeInotify(**{k: v for k, v in kwargs.items() if k == "limit"})
    watch = MaildirWatch(str(base), inotify=fake,
                         **{k: v for k, v in kwargs.items() if k != "limit"})
    watch.start()
    return watch, fake


def test_events_in_new_and_cur_map_to_folder_names(tree):
    watch, fake = started(tree)
    assert watch.folders() == ["INBOX", "Sent", "a.b"]
    assert watch.handle([ev(fake.wd(tree / "new"), IN_MOVED_TO, "m1")]) == ["INBOX"]
    assert watch.handle([ev(fake.wd(tree / ".a.b" / "cur"), IN_MOVED_FROM, "m1")]) == ["a.b"]
    assert watch.handle([ev(fake.wd(tree / ".Sent" / "new"), IN_DELETE, "m2"),
                         ev(fake.wd(tree / "cur"), IN_CREATE, "m3"),
                         ev(fake.wd(tree / ".Sent" / "cur"), IN_CREATE, "m2")]) \
        == ["Sent", "INBOX"]


def test_tmp_is_not_watched_and_files_in_the_base_mean_nothing(tree):
    watch, fake = started(tree)
    paths = set(fake.paths.values())
    assert str(tree / "tmp") not in paths and str(tree / ".Sent" / "tmp") not in paths
    base_wd = fake.wd(tree)
    assert watch.handle([ev(base_wd, IN_CREATE, "dovecot-uidlist"),
                         ev(base_wd, IN_CREATE, ".mbsyncstate.new"),
                         ev(base_wd, IN_MOVED_TO, ".mbsyncstate")]) == []


def test_unknown_watch_descriptors_are_ignored(tree):
    watch, _ = started(tree)
    assert watch.handle([ev(9999, IN_MOVED_TO, "x")]) == []


def test_new_folder_is_watched_then_reported(tree):
    watch, fake = started(tree)
    make_maildir(tree, ["x.y"])
    assert watch.handle([ev(fake.wd(tree), IN_CREATE | IN_ISDIR, ".x.y")]) == ["x.y"]
    assert watch.handle([ev(fake.wd(tree / ".x.y" / "new"), IN_MOVED_TO, "m")]) == ["x.y"]


def test_folder_completed_later_is_reported_when_it_becomes_a_maildir(tree):
    watch, fake = started(tree)
    (tree / ".late").mkdir()
    assert watch.handle([ev(fake.wd(tree), IN_CREATE | IN_ISDIR, ".late")]) == []
    dir_wd = fake.wd(tree / ".late")
    (tree / ".late" / "new").mkdir()
    assert watch.handle([ev(dir_wd, IN_CREATE | IN_ISDIR, "new")]) == []
    (tree / ".late" / "cur").mkdir()
    (tree / ".late" / "tmp").mkdir()
    assert watch.handle([ev(dir_wd, IN_CREATE | IN_ISDIR, "cur"),
                         ev(dir_wd, IN_CREATE | IN_ISDIR, "tmp")]) == ["late"]
    assert "late" in watch.folders()


def test_rename_reports_both_names_and_moves_the_watches(tree):
    watch, fake = started(tree)
    old_new = fake.wd(tree / ".a.b" / "new")
    os.rename(tree / ".a.b", tree / ".a.c")
    base_wd = fake.wd(tree)
    got = watch.handle([ev(base_wd, IN_MOVED_FROM | IN_ISDIR, ".a.b"),
                        ev(base_wd, IN_MOVED_TO | IN_ISDIR, ".a.c")])
    assert got == ["a.b", "a.c"]
    assert watch.folders() == ["INBOX", "Sent", "a.c"]
    assert watch.handle([ev(fake.wd(tree / ".a.c" / "new"), IN_CREATE, "m")]) == ["a.c"]
    assert old_new in fake.removed  # the old watch went with the old name...
    # ...and its late events (IN_IGNORED included) are harmless.
    assert watch.handle([ev(old_new, IN_MOVED_TO, "m"), ev(old_new, IN_IGNORED)]) == []


def test_one_directory_two_folder_names(tree):
    os.symlink(".a.b", tree / ".alias")
    watch, fake = started(tree)
    assert watch.folders() == ["INBOX", "Sent", "a.b", "alias"]
    shared = fake.wd(tree / ".a.b" / "new")
    assert fake.wd(tree / ".alias" / "new") == shared
    assert sorted(watch.handle([ev(shared, IN_MOVED_TO, "m")])) == ["a.b", "alias"]
    os.unlink(tree / ".alias")  # one name goes: the watch stays for the other
    assert watch.handle([ev(fake.wd(tree), IN_DELETE, ".alias")]) == ["alias"]
    assert shared not in fake.removed
    assert watch.handle([ev(shared, IN_MOVED_TO, "m")]) == ["a.b"]


def test_overflow_rescans_and_reports_every_folder(tree):
    watch, fake = started(tree)
    make_maildir(tree, ["missed"])  # made while the queue was full: no event
    got = watch.handle([ev(fake.wd(tree / "new"), IN_MOVED_TO, "m"), ev(-1, IN_Q_OVERFLOW)])
    assert got == ["INBOX", "Sent", "a.b", "missed"]
    assert watch.overflows == 1
    assert watch.handle([ev(fake.wd(tree / ".missed" / "new"), IN_MOVED_TO, "m")]) == ["missed"]


def test_overflow_reports_a_folder_that_went_away_meanwhile(tree):
    import shutil

    watch, fake = started(tree)
    shutil.rmtree(tree / ".Sent")
    assert watch.handle([ev(-1, IN_Q_OVERFLOW)]) == ["INBOX", "a.b", "Sent"]


def test_base_moved_is_a_structure_change_exit_2(tree):
    watch, fake = started(tree)
    with pytest.raises(StructureChange) as caught:
        watch.handle([ev(fake.wd(tree), IN_MOVE_SELF)])
    assert caught.value.exit_code == 2 and str(tree) in str(caught.value)


def test_exit_on_new_folder(tree):
    watch, fake = started(tree, exit_on_new_folder=True)
    assert watch.handle([ev(fake.wd(tree / "new"), IN_MOVED_TO, "m")]) == ["INBOX"]
    make_maildir(tree, ["fresh"])
    with pytest.raises(StructureChange) as caught:
        watch.handle([ev(fake.wd(tree), IN_CREATE | IN_ISDIR, ".fresh")])
    assert caught.value.exit_code == 2 and "fresh" in str(caught.value)


def test_enospc_is_a_one_line_error_naming_the_sysctl(tree):
    with pytest.raises(WatchLimitError) as caught:
        started(tree, limit=4)
    message = str(caught.value)
    assert caught.value.exit_code == 1
    assert "fs.inotify.max_user_watches" in message and "\n" not in message


def test_base_that_is_no_maildir_is_an_error(tmp_path):
    for path, words in ((tmp_path / "none", "No such file"), (tmp_path, "not a maildir")):
        with pytest.raises(WatchError) as caught:
            MaildirWatch(str(path), inotify=FakeInotify()).start()
        assert caught.value.exit_code == 1 and words in str(caught.value)


# ------------------------------------------------------------- stream_changes


def _run_stream(watch: MaildirWatch) -> tuple[int, threading.Thread, list]:
    read_fd, write_fd = os.pipe()
    outcome: list = []

    def body() -> None:
        try:
            stream_changes(watch, write_fd)
            outcome.append("returned")
        except BaseException as exc:  # reported to the test
            outcome.append(exc)
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return read_fd, thread, outcome


def _read_line(fd: int, timeout: float = 5.0) -> bytes:
    import select

    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line, got {data!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1)
            assert chunk, f"EOF after {data!r}"
            data += chunk
    return data


def test_stream_writes_ready_then_names_and_returns_when_the_reader_goes(tree):
    watch = MaildirWatch(str(tree))
    watch.start()
    try:
        read_fd, thread, outcome = _run_stream(watch)
        assert _read_line(read_fd) == b"\n"
        (tree / "tmp" / "m").write_bytes(b"x\n")
        os.rename(tree / "tmp" / "m", tree / "new" / "m")
        assert _read_line(read_fd) == b"INBOX\n"
        os.close(read_fd)  # idle, then the reader is gone: POLLERR on the pipe
        thread.join(timeout=5)
        assert outcome == ["returned"]
    finally:
        watch.close()


def test_stream_writes_held_back_names_before_a_structure_change(tree, tmp_path):
    watch = MaildirWatch(str(tree))
    watch.start()
    try:
        read_fd, thread, outcome = _run_stream(watch)
        assert _read_line(read_fd) == b"\n"
        os.rename(tree / ".Sent", tmp_path / "gone")
        assert _read_line(read_fd) == b"Sent\n"
        os.rename(tree, tmp_path / "moved")
        thread.join(timeout=5)
        assert len(outcome) == 1 and isinstance(outcome[0], StructureChange)
        os.close(read_fd)
    finally:
        watch.close()


def test_coalescing_window_is_below_the_50ms_contract():
    assert 0 < COALESCE_WINDOW <= 0.025
