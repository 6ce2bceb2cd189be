"""The PEP 517 build: `python3 -m build` makes a wheel, and `pipx install`
of it gives console scripts that work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from peers.require import require_module

pytestmark = pytest.mark.slow

TOP = Path(__file__).resolve().parents[2]
SCRIPTS = ["extsmail", "extsmaild", "watch-maildirs", "watch_maildirs", "watch-imap",
           "inputkill", "socketwatch", "mswatch", "syncmail", "smtpdcheck", "watch-network",
           "roammail-status"]


def test_a_wheel_whose_scripts_work_after_pipx_install(tmp_path: Path) -> None:
    require_module("build")
    require_module("pipx")
    out = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                            "--outdir", str(out), str(TOP)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = out.glob("roammail-*.whl")
    env = dict(os.environ, PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(tmp_path / "bin"),
               PIPX_MAN_DIR=str(tmp_path / "man"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    installed = subprocess.run([sys.executable, "-m", "pipx", "install", str(wheel)],
                               capture_output=True, text=True, timeout=900, env=env)
    assert installed.returncode == 0, installed.stderr[-2000:]
    for script in SCRIPTS:
        path = tmp_path / "bin" / script
        assert path.exists(), f"pipx made no {script}"
        ran = subprocess.run([str(path), "--help"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        assert ran.returncode == 0 and "Usage:" in ran.stdout, (script, ran.stderr)
