"""roammail.completion, the maker of the completion files, run from the source tree.

Fast: no install.  The installed files themselves are tested in
test_completion.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peers.require import require_program
from roammail import completion
from roammail.completion import CompletionError, Option, completion_script, parse_options

TOP = Path(__file__).resolve().parents[2]
LIB = TOP / "lib"
NAMES = ["extsmail", "extsmaild", "watch-maildirs", "watch-imap", "inputkill", "socketwatch",
         "mswatch", "syncmail", "smtpdcheck", "watch-network", "roammail-status",
         "watch_maildirs=watch-maildirs"]


def usage(tool: str) -> str:
    return completion.read_usage(completion.tool_source(tool))


def test_options_as_the_usage_text_writes_them() -> None:
    options = {o.long or o.short: o for o in parse_options(usage("extsmaild"))}
    assert options["--conf"] == Option("-c", "--conf", "FILE", False)
    assert options["--stall-timeout"] == Option(None, "--stall-timeout", "SECONDS", False)
    assert options["--flush"] == Option(None, "--flush", None, False)
    maildir = {o.long: o for o in parse_options(usage("watch-maildirs"))}["--maildir"]
    assert maildir == Option("-m", "--maildir", "DIR", True)
    assert maildir.words == ["-m", "--maildir="]
    timeout = {o.long: o for o in parse_options(usage("socketwatch"))}["--timeout"]
    assert timeout == Option("-t", "--timeout", "SECONDS", True)


def test_options_of_the_usage_lines_alone() -> None:
    # extsmail parses by hand and has no Options: section.
    words = [o.words for o in parse_options(usage("extsmail"))]
    assert words == [["-bp"], ["-q"], ["-V"], ["--version"], ["--help"]]
    doc = "Usage:\n  t [-x] [--level=N] [--] ARG\n"
    assert parse_options(doc) == [Option("-x", None, None), Option(None, "--level", "N", True)]


def test_generating_every_file_imports_no_tool_and_no_dependency(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from roammail.completion import main\n"
            f"assert main([{str(tmp_path)!r}] + sys.argv[1:]) == 0\n"
            "print(' '.join(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, *NAMES], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(LIB)})
    assert proc.returncode == 0, proc.stderr
    modules = set(proc.stdout.split())
    assert {m for m in modules if m.startswith("roammail")} == {"roammail",
                                                                 "roammail.completion"}
    assert modules.isdisjoint({"docopt", "plumbum", "daemon", "inotify_simple"})
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(name.split("=")[0] for name in NAMES)
    assert (tmp_path / "watch_maildirs").read_text() == (tmp_path / "watch-maildirs").read_text()
    assert "complete -F _roammail_watch_maildirs watch-maildirs watch_maildirs" in (
        tmp_path / "watch_maildirs").read_text()


def test_every_file_is_valid_bash(tmp_path: Path) -> None:
    bash = require_program("bash")
    for path in completion.write_completions(str(tmp_path), NAMES):
        check = subprocess.run([bash, "-n", path], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"{path}: {check.stderr}"
        assert (Path(path).stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize(("tool", "old", "new", "missing"), [
    ("syncmail", "[SOURCE...]", "[NAME...]", "SOURCE"),
    ("inputkill", "COMMAND [ARGS...]", "PROGRAM [ARGS...]", "COMMAND"),
    ("watch-imap", "--mbsyncrc=FILE", "--mbsync-config=FILE", "--mbsyncrc"),
    ("extsmaild", "-m MODE, --mode MODE", "-m HOW, --mode HOW", "MODE"),
])
def test_a_usage_text_that_drifts_from_what_completion_relies_on_fails(
        tool: str, old: str, new: str, missing: str) -> None:
    doc = usage(tool)
    assert old in doc
    completion_script(tool, doc)
    with pytest.raises(CompletionError, match=missing):
        completion_script(tool, doc.replace(old, new))


def test_names_a_shell_would_expand_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CompletionError):
        parse_options("Usage:\n  t [options]\n\nOptions:\n  --x$(id)  Nothing.\n")
    with pytest.raises(CompletionError):
        completion.write_completions(str(tmp_path), ["bad name"])
    with pytest.raises(CompletionError, match="no module docstring"):
        (tmp_path / "nodoc").mkdir()
        (tmp_path / "nodoc" / "cli.py").write_text("x = 1\n")
        completion.write_completions(str(tmp_path), ["nodoc"], source_dir=str(tmp_path))


def test_a_bad_command_line_is_a_usage_error(capsys) -> None:
    assert completion.main([]) == 64
    assert completion.main(["--help"]) == 0
    assert "OUTDIR NAME" in capsys.readouterr().out
