"""Fixtures for syncmail tests: a "server" maildir reached only through the
test sshd, a laptop maildir and HOME, and a runner for the INSTALLED
syncmail.

`world` gives a World: world.server (the server's maildir, a temp dir on
this machine that syncmail reaches over ssh to `testhost`), world.local (the
laptop's maildir), world.home (HOME, with XDG dirs below it).
`world.run(*args)` runs the installed launcher with the test ssh wrapper
first on PATH; `world.write_config(text)` writes the default config file.
`world.deliver_remote(name, data, mtime)` writes a message into the server's
new/ as an MDA would (tmp/, then rename).  `world.batch = N` makes runs
move N messages a batch, so that small tests go through every step of the
pipeline (syncmail._move_batches).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class World:
    installed: object
    sshd: object
    root: Path
    server: Path
    local: Path
    home: Path

    batch: int | None = None  # messages per batch (ROAMMAIL_SYNCMAIL_BATCH), if not 1000

    def env(self, **extra: str) -> dict[str, str]:
        env = self.sshd.client_env(self.installed.env(), home=self.home)
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        env["XDG_STATE_HOME"] = str(self.home / ".local" / "state")
        env.pop("ROAMMAIL_DEBUG", None)
        env.pop("ROAMMAIL_SYNCMAIL_BATCH", None)
        if self.batch is not None:
            env["ROAMMAIL_SYNCMAIL_BATCH"] = str(self.batch)
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [self.installed.tool("syncmail"), *args]

    def run(self, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.env(**extra), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def run_argv(self, argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `argv` (syncmail under another program) in the world's environment."""
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def popen(self, *args: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env(), stdin=subprocess.DEVNULL,
                                **kwargs)

    @property
    def config_path(self) -> Path:
        return self.home / ".config" / "roammail" / "syncmail.conf"

    def write_config(self, text: str) -> Path:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)
        return self.config_path

    def basic_config(self, rules: str = "") -> Path:
        return self.write_config(
            "source laptop {\n"
            '    host = "testhost"\n'
            f'    remote = "{self.server}"\n'
            f'    local = "{self.local}"\n'
            f"{rules}"
            "}\n")

    def deliver_remote(self, name: str, data: bytes, mtime: float | None = None) -> Path:
        tmp = self.server / "tmp" / name
        tmp.write_bytes(data)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        final = self.server / "new" / name
        os.rename(tmp, final)
        return final

    def server_new(self) -> set[str]:
        return set(os.listdir(self.server / "new"))

    def local_messages(self, maildir: Path | None = None) -> dict[str, Path]:
        base = maildir or self.local
        found = {}
        for sub in ("new", "cur"):
            d = base / sub
            if d.is_dir():
                for name in os.listdir(d):
                    found[name.split(":", 1)[0]] = d / name
        return found


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def world(installed, sshd, tmp_path: Path) -> World:
    server = make_maildir(tmp_path / "server" / "Maildir")
    home = tmp_path / "home"
    home.mkdir()
    local = tmp_path / "home" / "Mail"
    return World(installed, sshd, tmp_path, server, local, home)
