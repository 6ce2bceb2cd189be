"""Black-box: the installed launchers, run through a real bash as a user would.

Uses pytest-shell's `bash` fixture: each command goes through an
interactive bash with the installed prefix first on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from peers.require import require_program

TOP = Path(__file__).resolve().parents[2]
TOOLS = ["extsmail", "extsmaild", "watch-maildirs", "watch_maildirs", "watch-imap", "inputkill",
         "socketwatch", "mswatch", "syncmail", "smtpdcheck", "watch-network",
         "roammail-status"]


def test_every_tool_answers_help_through_a_shell(bash, installed):
    bash.send(f'export PATH="{installed.bindir}:$PATH"')
    for tool in TOOLS:
        out = bash.send(f"{tool} --help")
        assert "Usage:" in out, f"{tool} --help printed {out!r}"
        assert bash.send("echo $?").strip() == "0", f"{tool} --help failed"
        assert bash.send(f"command -v {tool}").strip() == installed.tool(tool)


def test_launchers_run_the_private_interpreter_isolated(installed):
    for tool in TOOLS:
        lines = Path(installed.tool(tool)).read_text().splitlines()
        assert lines[0] == "#!/bin/sh", lines[0]
        found = re.search(r'exec "([^"]+)" -IS "\$0" "\$@"', lines[1])
        assert found, lines[1]
        interpreter = found.group(1)
        assert interpreter.startswith(str(installed.prefix)), interpreter
        assert Path(interpreter).exists()


def test_a_directory_as_standard_input_is_one_line_not_a_python_abort(installed, tmp_path):
    """CPython aborts ("Fatal Python error") when fd 0 is a directory; the
    launcher's shell line answers first."""
    for tool in TOOLS:
        directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            done = subprocess.run([installed.tool(tool), "--version"], stdin=directory,
                                  capture_output=True, text=True, timeout=30)
        finally:
            os.close(directory)
        name = "watch-maildirs" if tool == "watch_maildirs" else tool
        assert done.returncode == 66, (tool, done)
        assert done.stderr == f"{name}: standard input is a directory\n", (tool, done.stderr)
        assert done.stdout == ""


def test_pages_that_exist_are_found_by_man(installed):
    man = require_program("man")
    pages = sorted((TOP / "man").glob("*.[1-8]"))
    assert pages, "no man pages in man/"
    for page in pages:
        name, section = page.stem, page.suffix[1:]
        where = subprocess.run([man, "-M", str(installed.mandir), "-w", section, name],
                               capture_output=True, text=True, timeout=30)
        assert where.returncode == 0, where.stderr
        assert where.stdout.strip().startswith(str(installed.mandir))


@pytest.mark.slow
def test_install_upgrade_uninstall_round_trip(tmp_path):
    """A fresh prefix: install, re-install in place, uninstall leaves nothing."""
    prefix = tmp_path / "p"
    install = [str(TOP / "install.sh"), "--prefix", str(prefix)]
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    extsmail = prefix / "bin" / "extsmail"
    assert extsmail.exists()
    stamp = extsmail.stat().st_mtime_ns
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    assert extsmail.stat().st_mtime_ns >= stamp
    help_out = subprocess.run([str(prefix / "bin" / "smtpdcheck"), "--help"],
                              capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "Usage:" in help_out.stdout
    subprocess.run(install + ["--uninstall"], check=True, capture_output=True, timeout=120)
    left = sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*"))
    assert left == [], left


def test_install_refuses_unknown_arguments():
    proc = subprocess.run([str(TOP / "install.sh"), "--bogus"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "install.sh: unknown argument '--bogus'; see --help"]


def test_install_says_clearly_when_python_is_missing(tmp_path):
    proc = subprocess.run([str(TOP / "install.sh"), "--prefix", str(tmp_path / "p")],
                          capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "PYTHON": "no-such-python3"})
    assert proc.returncode != 0
    assert "no-such-python3 not found" in proc.stderr
    assert not (tmp_path / "p" / "bin").exists()


def test_every_tool_answers_version(installed):
    from roammail import __version__

    for tool in TOOLS:
        out = subprocess.run([installed.tool(tool), "--version"], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
        name = "watch-maildirs" if tool == "watch_maildirs" else tool
        assert (out.returncode, out.stdout) == (0, f"{name} (roammail) {__version__}\n"), \
            (tool, out.stderr)
