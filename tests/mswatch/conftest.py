"""Fixtures of the mswatch tests: the INSTALLED mswatch, run in the foreground.

`mswatch_run(rc_text)` writes the config into a per-test HOME, starts
`mswatch -f -c RC --pid-file P --log-file LOG` (inside network namespace
NS with netns=NS; outside one, with `network_events no` unless the rc
says) and returns a Running:
`wait_log(text)` waits (bounded) for a log line, `stop()` sends SIGTERM and
returns the exit status.  `recorder(fail_first=N, run=...)` writes a sync
script that appends "START <epoch> ARGS" (and "END <epoch> STATUS") to a
file, fails its first N runs, and with run=True runs its arguments (the
real sync) after those.  Every process is killed at teardown, whatever the
test did.  `netns`: a network namespace of the test's own with a veth pair,
its links and routes changed with ip(8); removed at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
from mswatch_helpers import RECORDER, Running

from peers.netns import Netns, namespace


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def mswatch_run(installed, home: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(rc_text: str, *extra: str, env_extra: dict | None = None,
              netns: str | None = None) -> Running:
        rc = home / ".mswatchrc"
        if netns is None and "network_events" not in rc_text:
            # The host's network is not the test's: a change there (another
            # test's namespace going away) would restart the watchers and
            # run a full sync, upsetting the counts timed here.  The
            # network tests run mswatch in a namespace of their own.
            rc_text += "\nnetwork_events no\n"
        rc.write_text(rc_text)
        n = len(started)
        argv = [installed.tool("mswatch"), "-f", "-c", str(rc),
                "--pid-file", str(tmp_path / f"mswatch{n}.pid"),
                "--log-file", str(tmp_path / f"mswatch{n}.log"),
                "--hooks", str(home / "hooks"), *extra]
        if netns is not None:  # ip(8) execs the tool: the pid stays mswatch's
            argv = ["ip", "netns", "exec", netns, *argv]
        env = installed.env(HOME=str(home), **(env_extra or {}))
        env.pop("XDG_CONFIG_HOME", None)
        env.pop("XDG_RUNTIME_DIR", None)
        run = Running(argv, env, tmp_path / f"mswatch{n}.log", tmp_path / f"mswatch{n}.err")
        started.append(run)
        return run

    try:
        yield start
    finally:
        for run in started:
            run.kill()


@pytest.fixture
def recorder(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """make(fail_first=0, sleep=0, run=False) -> (script, log of its starts).

    With run=True the recorder runs its arguments (`RECORDER mbsync ... BOX`)
    and exits with their status, after its first `fail_first` runs failed."""

    def make(fail_first: int = 0, sleep: float = 0, name: str = "sync-recorder",
             run: bool = False) -> tuple[Path, Path]:
        script = tmp_path / name
        log = tmp_path / f"{name}.log"
        script.write_text(RECORDER.format(log=log, fail_first=fail_first,
                                          sleep=f"sleep {sleep}" if sleep else "",
                                          run='else "$@"; status=$?; ' if run else ""))
        script.chmod(0o755)
        return script, log

    return make


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A namespace of the test's own (peers.netns), removed at the end."""
    with namespace("roammail-mswatch", "10.78.0") as ns:
        yield ns
