"""Fixtures for extsmail/extsmaild tests: a user's HOME with a conf file, a
spool, an externals file, and recording sendmails that are real programs.

`ext_home` gives an ExtHome: HOME=tmp/home with ~/.extsmail/conf pointing at
~/.extsmail/spool (0700).  `write_externals(text)` writes the externals
file; `recorder(name)` makes a real executable that stores its argv (one
argument per line, NUL-separated in .argv0 for exactness) and its stdin
under out/NAME/N.* and exits with a status chosen by a file, so a test can
make it fail and later succeed.  `run(tool, *args, input=...)` runs the
INSTALLED launcher with that HOME.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers.waiting import wait_until

RECORDER = """#!/bin/sh
# A sendmail that records what it is given: argv and stdin, then exits
# with the status in its .status file (0 when there is none).
dir="{out}"
mkdir -p "$dir"
# Named by the time of the call and the pid: extsmaild may run several
# externals at once, and a count of the files would give two the same name.
n=$(date +%s%N)-$$
printf '%s\\0' "$@" > "$dir/$n.argv0"
cat > "$dir/$n.msg.tmp"
mv "$dir/$n.msg.tmp" "$dir/$n.msg"
status=0
[ -f "{status}" ] && status=$(cat "{status}")
exit "$status"
"""


@dataclass
class Recorder:
    name: str
    path: Path
    out: Path
    status_file: Path

    def fail_with(self, status: int) -> None:
        self.status_file.write_text(f"{status}\n")

    def succeed(self) -> None:
        if self.status_file.exists():
            self.status_file.unlink()

    def received(self) -> list[tuple[list[bytes], bytes]]:
        """(argv, message bytes) of each call that read its whole input, in
        the order the calls started."""
        calls = []
        if not self.out.exists():
            return calls
        def started(path: Path) -> tuple[int, int]:
            stamp, pid = path.name.split(".")[0].split("-")
            return int(stamp), int(pid)

        for msg in sorted(self.out.glob("*.msg"), key=started):
            n = msg.name.split(".")[0]
            raw = (self.out / f"{n}.argv0").read_bytes()
            argv = raw.split(b"\0")[:-1] if raw else []
            calls.append((argv, msg.read_bytes()))
        return calls


@dataclass
class ExtHome:
    home: Path
    spool: Path
    conf: Path
    externals: Path
    installed: object
    tmp: Path

    @property
    def msgs(self) -> Path:
        return self.spool / "msgs"

    def queued(self) -> list[Path]:
        if not self.msgs.exists():
            return []
        return sorted(p for p in self.msgs.iterdir() if not p.name.startswith("."))

    def write_conf(self, text: str) -> None:
        self.conf.write_text(text)

    def write_externals(self, text: str) -> None:
        self.externals.write_text(text)

    def recorder(self, name: str) -> Recorder:
        out = self.tmp / "out" / name
        path = self.tmp / "bin" / name
        status = self.tmp / "status" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        status.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RECORDER.format(out=out, status=status))
        path.chmod(0o755)
        return Recorder(name, path, out, status)

    def env(self, **extra: str) -> dict[str, str]:
        env = self.installed.env(HOME=str(self.home))  # type: ignore[attr-defined]
        env.pop("XDG_CONFIG_HOME", None)
        env.update(extra)
        return env

    def run(self, tool: str, *args: str, input: bytes | None = b"",
            timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([self.installed.tool(tool), *args], input=input,  # type: ignore
                              capture_output=True, env=self.env(), timeout=timeout, **kw)


@pytest.fixture
def ext_home(tmp_path: Path, installed) -> ExtHome:
    home = tmp_path / "home"
    (home / ".extsmail").mkdir(parents=True)
    spool = home / ".extsmail" / "spool"
    spool.mkdir(mode=0o700)
    os.chmod(spool, 0o700)
    conf = home / ".extsmail" / "conf"
    conf.write_text('spool_dir = "~/.extsmail/spool"\n')
    return ExtHome(home, spool, conf, home / ".extsmail" / "externals", installed, tmp_path)


def simple_message(subject: str = "hello", to: str = "someone@example.org",
                   body: bytes = b"Hello.\n") -> bytes:
    return (f"From: me@example.org\nTo: {to}\nSubject: {subject}\n\n").encode() + body


class Daemon:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc = proc
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def lines(self) -> list[str]:
        return self.text().splitlines()

    def wait_log(self, needle: str, timeout: float = 10, count: int = 1) -> bool:
        return wait_until(lambda: self.text().count(needle) >= count, timeout)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def daemons(ext_home):
    """start(*extra_args, prefix=(), env=None) -> a running, ready
    `extsmaild -m daemon -f` (under the command `prefix`, e.g. ip netns
    exec); each one's process group is killed at teardown.  Without a
    prefix the daemon runs with `network_events = no` unless the test's
    conf says otherwise."""
    started: list[subprocess.Popen] = []

    def start(*extra: str, ready: bool = True, prefix: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> Daemon:
        log = ext_home.tmp / f"daemon{len(started)}.log"
        conf = ext_home.conf.read_text() if ext_home.conf.exists() else None
        if not prefix and conf is not None and "network_events" not in conf:
            # In the host's own namespace the network is not the test's: a
            # change there (another test's namespace going away, a lease
            # renewed) is a pass with the backoff reset, which would upset
            # the counts and schedules timed here.  The roaming tests run
            # their daemons in a namespace of their own, with the events.
            ext_home.write_conf(conf + "network_events = no\n")
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [*prefix, ext_home.installed.tool("extsmaild"), "-m", "daemon", "-f", *extra],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env=env or ext_home.env(), start_new_session=True)
        started.append(proc)
        d = Daemon(proc, log)
        if ready:
            assert d.wait_log("started:"), d.text()
        return d

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
