"""Fixtures of the watch-imap tests: the INSTALLED watch-imap against a
real Dovecot (peers.dovecot), its stdout read line by line.

`watch_imap(conf_text, *args)` writes the configuration into a per-test
HOME and starts `watch-imap -c CONF ARGS...`; it returns a WatcherProcess
(ready(), expect(names), lines_for(seconds), wait(), stderr()).
`run_watch_imap(conf_text, *args)` runs it to its end (bounded).
imap_helpers.account(server, **settings) renders an account block.  Every
process is killed at teardown.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from peers.watchers import WatcherProcess


@pytest.fixture
def imap_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


@pytest.fixture
def imap_env(installed, imap_home: Path) -> dict[str, str]:
    env = installed.env(HOME=str(imap_home), XDG_CONFIG_HOME=str(imap_home / ".config"))
    env.pop("ROAMMAIL_DEBUG", None)
    return env


@pytest.fixture
def watch_imap(installed, imap_home: Path, imap_env) -> Iterator[Callable[..., WatcherProcess]]:
    started: list[WatcherProcess] = []

    def start(conf_text: str, *args: str, account_name: str = "t") -> WatcherProcess:
        conf = imap_home / f"watch-imap{len(started)}.conf"
        conf.write_text(conf_text)
        argv = [installed.tool("watch-imap"), "-c", str(conf),
                "--mbsyncrc", str(imap_home / ".mbsyncrc"), "-a", account_name, *args]
        running = WatcherProcess(argv, imap_env)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


@pytest.fixture
def run_watch_imap(installed, imap_home: Path,
                   imap_env) -> Callable[..., subprocess.CompletedProcess]:
    """run(conf_text, *args) -> the finished `watch-imap -c CONF ARGS...` (bounded)."""

    def run(conf_text: str | None, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [installed.tool("watch-imap")]
        if conf_text is not None:
            conf = imap_home / "watch-imap-run.conf"
            conf.write_text(conf_text)
            argv += ["-c", str(conf)]
        argv += list(args)
        return subprocess.run(argv, env=imap_env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, text=True)

    return run
