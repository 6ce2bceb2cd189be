"""Shared test set-up: the installed tools, the real peers, bats files.

- `installed`: the tools as a user has them, installed by ./install.sh.
  ./test.sh installs into .test-prefix and exports ROAMMAIL_PREFIX; run
  alone, pytest installs into a temporary prefix once per session.
- The real peers (sshd, SMTP servers, maildirs) come from peers.fixtures.
- `*.bats` files under tests/ are collected and run with bats-core, with the
  installed tools first on PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers.require import require_program

pytest_plugins = ["peers.fixtures"]

TOP = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Installed:
    prefix: Path

    @property
    def bindir(self) -> Path:
        return self.prefix / "bin"

    @property
    def mandir(self) -> Path:
        return self.prefix / "share" / "man"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment with the installed tools first on PATH."""
        env = dict(os.environ)
        env["PATH"] = f"{self.bindir}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(extra)
        return env


def _install(tmp_root: Path) -> Path:
    prefix = os.environ.get("ROAMMAIL_PREFIX")
    if prefix:
        return Path(prefix)
    prefix_path = tmp_root / "prefix"
    subprocess.run([str(TOP / "install.sh"), "--prefix", str(prefix_path)],
                   check=True, stdout=subprocess.DEVNULL)
    return prefix_path


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return Installed(_install(tmp_path_factory.mktemp("install")))


# ---------------------------------------------------------------- bats files

def pytest_collect_file(parent: pytest.Collector, file_path: Path):
    if file_path.suffix == ".bats":
        return BatsFile.from_parent(parent, path=file_path)
    return None


class BatsFile(pytest.File):
    def collect(self):
        yield BatsItem.from_parent(self, name=self.path.name)


class BatsFailure(Exception):
    pass


class BatsItem(pytest.Item):
    """One bats file, run by bats-core; its TAP output is the report."""

    def runtest(self) -> None:
        bats = require_program("bats")
        prefix = self.config._roammail_prefix  # type: ignore[attr-defined]
        env = Installed(prefix).env(ROAMMAIL_PREFIX=str(prefix),
                                    ROAMMAIL_TOP=str(TOP))
        proc = subprocess.run([bats, "--tap", str(self.path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=600)
        if proc.returncode != 0:
            raise BatsFailure(proc.stdout.decode(errors="replace"))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, BatsFailure):
            return f"bats reported failures:\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, 0, f"bats {self.path.name}"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Install the tools (once) before the first bats item needs them."""
    if isinstance(item, BatsItem) and not hasattr(item.config, "_roammail_prefix"):
        tmp = item.config._tmp_path_factory.mktemp("install")  # type: ignore[attr-defined]
        item.config._roammail_prefix = _install(tmp)  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> str:
    where = os.environ.get("ROAMMAIL_PREFIX", "a temporary prefix (./install.sh)")
    return f"roammail tools under test: {where}; python {sys.version.split()[0]}"
