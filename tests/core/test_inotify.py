"""roammail.core.inotify gives the same watches through either library:
inotify_simple (what pip installs) and pyinotify (what the .deb uses)."""

from __future__ import annotations

import errno
import select
from pathlib import Path

import pytest

from peers.require import require_module
from roammail.core.inotify import Inotify, backend, flags
from roammail.watch_maildirs.watch import raw_events

BACKENDS = ["inotify_simple", "pyinotify"]


@pytest.fixture(params=BACKENDS)
def use(request) -> str:
    require_module(request.param)  # the test virtualenv has both
    return request.param


def events(watch: Inotify) -> list[tuple[int, int, str]]:
    readable, _, _ = select.select([watch.fileno()], [], [], 5)
    assert readable, "no event within 5 s"
    import os

    return [(wd, mask, name.rstrip(b"\0").decode())
            for wd, mask, _, name in raw_events(os.read(watch.fileno(), 65536))]


def test_a_watch_reports_a_created_file(tmp_path: Path, use: str) -> None:
    watch = Inotify(nonblocking=True, use=use)
    try:
        wd = watch.add_watch(str(tmp_path), flags.CREATE | flags.DELETE)
        (tmp_path / "new").write_text("x")
        assert (wd, flags.CREATE, "new") in events(watch)
        watch.rm_watch(wd)
        assert any(mask & flags.IGNORED for _, mask, _ in events(watch))
    finally:
        watch.close()


def test_errors_carry_the_calls_errno(tmp_path: Path, use: str) -> None:
    watch = Inotify(nonblocking=True, use=use)
    try:
        with pytest.raises(OSError) as caught:
            watch.add_watch(str(tmp_path / "missing"), flags.CREATE)
        assert caught.value.errno == errno.ENOENT
        with pytest.raises(OSError) as caught:
            watch.rm_watch(12345)
        assert caught.value.errno == errno.EINVAL
    finally:
        watch.close()


def test_drain_empties_a_nonblocking_instance(tmp_path: Path, use: str) -> None:
    watch = Inotify(nonblocking=True, use=use)
    try:
        watch.add_watch(str(tmp_path), flags.CREATE)
        for i in range(50):
            (tmp_path / f"f{i}").write_text("x")
        watch.drain()
        readable, _, _ = select.select([watch.fileno()], [], [], 0)
        assert readable == []
    finally:
        watch.close()


def test_the_descriptor_is_close_on_exec(use: str) -> None:
    import os

    watch = Inotify(use=use)
    try:
        assert not os.get_inheritable(watch.fileno())
    finally:
        watch.close()


def test_backend_prefers_inotify_simple() -> None:
    require_module("inotify_simple")
    assert backend() == "inotify_simple"
