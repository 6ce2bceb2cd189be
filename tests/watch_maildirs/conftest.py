"""Fixtures for watch-maildirs tests: the INSTALLED tool, run on real
maildirs with real inotify, its stdout read by a bounded reader thread.

`watcher(maildir, *args)` starts `watch-maildirs -m MAILDIR ARGS...` and
returns a Running: `ready()` waits for the ready line, `expect(names)`
collects lines until every name was seen, `lines_for(seconds)` what comes in
a while, `wait()` the exit status.  Every process started is killed in the
fixture's teardown, whatever the test did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from peers.maildirs import make_maildir
from peers.watchers import WatcherProcess as Running


@pytest.fixture
def tool_env(installed, tmp_path: Path) -> dict[str, str]:
    """The environment of the tool: installed PATH, a HOME of its own, no MAILDIR."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = installed.env(HOME=str(home))
    env.pop("MAILDIR", None)
    env.pop("ROAMMAIL_DEBUG", None)
    return env


@pytest.fixture
def watcher(installed, tool_env) -> Iterator[Callable[..., Running]]:
    """start(maildir, *args, env=None, argv=None) -> Running; all killed at the end."""
    started: list[Running] = []

    def start(maildir: str | os.PathLike[str] | None, *args: str,
              env: dict[str, str] | None = None, prefix: list[str] | None = None) -> Running:
        argv = [installed.tool("watch-maildirs")]
        if maildir is not None:
            argv += ["-m", str(maildir)]
        running = Running([*(prefix or []), *argv, *args], env or tool_env)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """A Maildir++ tree: INBOX, a.b, Sent."""
    return make_maildir(tmp_path / "Maildir", ["a.b", "Sent"])

