"""Fixtures of the smtpdcheck tests.

- `check(*args, cache=False, env=None)`: runs the INSTALLED smtpdcheck
  (`installed` fixture) with HOME and XDG_CACHE_HOME in tmp_path; adds
  --no-cache unless `cache` is true; returns a Run (status, out, err,
  seconds).
- `cluster(behaviours)`: listeners sharing one port on several loopback
  addresses (see smtpdcheck_peers), stopped at the end of the test.
- `names(mapping)`: environment giving test host names through nss_wrapper
  (LD_PRELOAD, NSS_WRAPPER_HOSTS): {"s1.domain.com": ["127.0.0.21"], ...}.
  /etc/hosts is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
from smtpdcheck_peers import Cluster

from peers.require import in_ci

WAIT_S = 60.0  # the bound on any one run of the tool in these tests
NSS_WRAPPER = "libnss_wrapper.so"
NSS_WRAPPER_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                    "/usr/lib64", "/usr/lib", "/usr/local/lib")


def missing(reason: str) -> None:
    """Skip locally; under CI everything must be there, so fail."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str
    seconds: float


@pytest.fixture
def check_env(installed, tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return installed.env(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "xdg-cache"))


CheckFn = Callable[..., Run]


@pytest.fixture
def check(installed, check_env) -> CheckFn:
    tool = installed.tool("smtpdcheck")

    def run(*args: str, cache: bool = False, env: dict[str, str] | None = None,
            timeout: float = WAIT_S) -> Run:
        argv = [tool, *([] if cache else ["--no-cache"]), *args]
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**check_env, **(env or {})}, stdin=subprocess.DEVNULL)
        return Run(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)

    return run


@pytest.fixture
def cluster() -> Iterator[Callable[[dict[str, str]], Cluster]]:
    started: list[Cluster] = []

    def start(behaviours: dict[str, str]) -> Cluster:
        one = Cluster.start(behaviours)
        started.append(one)
        return one

    try:
        yield start
    finally:
        for one in started:
            one.stop()


def find_nss_wrapper() -> str | None:
    for directory in NSS_WRAPPER_DIRS:
        path = os.path.join(directory, NSS_WRAPPER)
        if os.path.isfile(path):
            return path
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "libnss-wrapper"], capture_output=True,
                                 text=True, check=False).stdout
        for line in listing.splitlines():
            if line.endswith("/" + NSS_WRAPPER) and os.path.isfile(line):
                return line
    return None


@pytest.fixture(scope="session")
def nss_wrapper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The library, checked to make getaddrinfo read its hosts file."""
    library = find_nss_wrapper()
    if library is None:
        missing("libnss_wrapper.so is missing: apt-get install libnss-wrapper")
    hosts = tmp_path_factory.mktemp("nss") / "hosts"
    hosts.write_text("127.0.0.77 probe.nss-wrapper.test\n")
    probe = ("import socket; print(socket.getaddrinfo('probe.nss-wrapper.test', 25, 0,"
             " socket.SOCK_STREAM)[0][4][0])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "LD_PRELOAD": library,
                              "NSS_WRAPPER_HOSTS": str(hosts)}, timeout=30)
    if out.stdout.strip() != "127.0.0.77":
        missing(f"nss_wrapper does not answer getaddrinfo here: {out.stderr.strip()}")
    return library


@pytest.fixture
def names(nss_wrapper: str, tmp_path: Path) -> Callable[[dict[str, list[str]]], dict[str, str]]:
    def env(mapping: dict[str, list[str]]) -> dict[str, str]:
        hosts = tmp_path / "nss-hosts"
        lines = [f"{address} {name}" for name, addresses in mapping.items()
                 for address in addresses]
        hosts.write_text("\n".join(lines) + "\n")
        return {"LD_PRELOAD": nss_wrapper, "NSS_WRAPPER_HOSTS": str(hosts)}

    return env
