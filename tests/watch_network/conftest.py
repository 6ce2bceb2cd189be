"""Fixtures for watch-network tests: a network namespace of the test's own
with a veth pair, and the INSTALLED tool run inside it with `ip netns exec`.

`netns` makes the namespace (and /etc/netns/NAME/resolv.conf, which
`ip netns exec` mounts over /etc/resolv.conf) and removes both at the end;
`netns.ip(...)` runs `ip -n NAME ...`; `netns.go_online()` brings v0 up
with a global address and a default route.  `watcher(*args)` starts
`watch-network ARGS...` in the namespace and kills it in teardown.  The
tool's system D-Bus is a path that does not exist unless a test says
otherwise: the host's bus plays no part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from peers.netns import Netns, namespace
from peers.watchers import WatcherProcess


@pytest.fixture
def netns() -> Iterator[Netns]:
    with namespace("roammail-test", "10.77.0") as ns:
        yield ns


@pytest.fixture
def tool_env(installed, tmp_path: Path) -> dict[str, str]:
    env = installed.env(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus")
    env.pop("ROAMMAIL_DEBUG", None)
    return env


@pytest.fixture
def watcher(installed, netns: Netns, tool_env) -> Iterator[Callable[..., WatcherProcess]]:
    started: list[WatcherProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WatcherProcess:
        argv = ["ip", "netns", "exec", netns.name, installed.tool("watch-network"), *args]
        proc = WatcherProcess(argv, env or tool_env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
