"""The systemd user units, as installed: each passes systemd-analyze verify
(which also checks that the commands they run exist)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from peers.require import require_program

TOP = Path(__file__).resolve().parents[2]
UNITS = sorted(p.name for p in (TOP / "systemd").iterdir())


def unit_dir(installed) -> Path:
    for relative in ("share/systemd/user", "lib/systemd/user"):  # install.sh, the .deb
        if (installed.prefix / relative).is_dir():
            return installed.prefix / relative
    raise AssertionError(f"no systemd user unit directory under {installed.prefix}")


def test_every_unit_is_installed(installed) -> None:
    assert {"extsmaild.service", "mswatch.service", "syncmail.service",
            "syncmail.timer"} <= set(UNITS)
    found = {p.name for p in unit_dir(installed).iterdir()}
    assert set(UNITS) <= found


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies(installed, tmp_path: Path, unit: str) -> None:
    analyze = require_program("systemd-analyze")
    path = unit_dir(installed) / unit
    text = path.read_text()
    assert "@BINDIR@" not in text
    assert f"{installed.bindir}/" in text or unit.endswith(".timer")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    # verify also runs `man` for each Documentation= page: ours, where installed.
    result = subprocess.run([analyze, "--user", "verify", str(path)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime),
                                 "HOME": str(tmp_path), "MANPATH": f"{installed.mandir}:"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_a_broken_unit_fails_verify(tmp_path: Path) -> None:
    # The check can fail: a unit naming a command that is not there.
    analyze = require_program("systemd-analyze")
    bad = tmp_path / "bad.service"
    bad.write_text("[Unit]\nDescription=x\n[Service]\nExecStart=/nonexistent/bin/x\n")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    result = subprocess.run([analyze, "--user", "verify", str(bad)], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(runtime),
                                 "HOME": str(tmp_path)})
    assert result.returncode != 0
