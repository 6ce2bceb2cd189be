"""Black-box: every installed tool's output, when it cannot be written.

As coreutils does: standard output closed (`>&-`) or full (`>/dev/full`) is
one line, `TOOL: write error: STRERROR`, and exit 74 (EX_IOERR; smtpdcheck:
its documented 2); a reader that went away (a pipe whose reading end is
closed) is silent, exit 0 or death by SIGPIPE.  Never a traceback, an
"Exception ignored" or a "Fatal Python error".  And a bad command line is
one line and exit 64 (smtpdcheck: 2) in every tool.  Each run has a
deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

DEADLINE = 30  # seconds for one run
EX_USAGE, EX_IOERR = 64, 74
SMTPDCHECK_ERROR = 2

TOOLS = ["extsmail", "extsmaild", "watch-maildirs", "watch_maildirs", "watch-imap", "inputkill",
         "socketwatch", "mswatch", "syncmail", "smtpdcheck", "roammail-status"]
# The help and version spellings of each tool, the originals' own included.
INFO_OPTIONS = {tool: ["--help", "--version", "-V"] for tool in TOOLS}
for _tool in TOOLS:
    if _tool != "extsmail":  # sendmail's -h takes an argument: extsmail keeps only --help
        INFO_OPTIONS[_tool].append("-h")
INFO_OPTIONS["extsmaild"].append("-v")
for _tool in ("inputkill", "mswatch", "watch-maildirs", "watch_maildirs"):
    INFO_OPTIONS[_tool].append("-?")

BAD_COMMAND_LINES = [["-x"], ["--no-such-option"], ["--no-such=1"]]
# extsmail parses no options: every argument belongs to sendmail's command line.
OPTION_TOOLS = [tool for tool in TOOLS if tool != "extsmail"]


def name_of(tool: str) -> str:
    return "watch-maildirs" if tool == "watch_maildirs" else tool


def io_error_status(tool: str) -> int:
    return SMTPDCHECK_ERROR if tool == "smtpdcheck" else EX_IOERR


def run(argv: list[str], how: str, env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """Run argv with its stdout `how`: closed, full (/dev/full), gone (a
    pipe whose reading end is already closed) or captured."""
    if how == "closed":
        # The shell closes fd 1 for the tool alone, as `tool >&-` does.
        return subprocess.run(["/bin/sh", "-c", 'exec "$@" >&-', "sh", *argv], stdin=stdin,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=DEADLINE)
    if how == "full":
        with open("/dev/full", "w") as full:
            return subprocess.run(argv, stdin=stdin, stdout=full, stderr=subprocess.PIPE,
                                  text=True, env=env, timeout=DEADLINE)
    if how == "gone":
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            return subprocess.run(argv, stdin=stdin, stdout=write_end, stderr=subprocess.PIPE,
                                  text=True, env=env, timeout=DEADLINE)
        finally:
            os.close(write_end)
    return subprocess.run(argv, stdin=stdin, capture_output=True, text=True, env=env,
                          timeout=DEADLINE)


def assert_clean(done: subprocess.CompletedProcess) -> None:
    for bad in ("Traceback", "Exception ignored", "Fatal Python error", "internal error"):
        assert bad not in done.stderr, done.stderr


def assert_write_error(tool: str, done: subprocess.CompletedProcess, how: str) -> None:
    assert_clean(done)
    reason = "Bad file descriptor" if how == "closed" else "No space left on device"
    assert done.stderr == f"{name_of(tool)}: write error: {reason}\n", done.stderr
    assert done.returncode == io_error_status(tool), done


def assert_quiet_when_gone(done: subprocess.CompletedProcess) -> None:
    assert_clean(done)
    assert done.stderr == "", done.stderr
    assert done.returncode in (0, -signal.SIGPIPE), done


@pytest.mark.parametrize("tool", TOOLS)
def test_help_and_version_report_a_write_error_in_one_line(installed, tool):
    for option in INFO_OPTIONS[tool]:
        argv = [installed.tool(tool), option]
        shown = run(argv, "captured")
        assert shown.returncode == 0 and shown.stdout and shown.stderr == "", (option, shown)
        for how in ("closed", "full"):
            assert_write_error(tool, run(argv, how), how)
        assert_quiet_when_gone(run(argv, "gone"))


@pytest.mark.parametrize("tool", TOOLS)
def test_version_is_one_line_naming_the_tool(installed, tool):
    for option in ("-V", "--version"):
        done = run([installed.tool(tool), option], "captured")
        assert done.returncode == 0, done
        assert done.stdout.startswith(f"{name_of(tool)} (roammail) "), done.stdout
        assert done.stdout.count("\n") == 1


@pytest.mark.parametrize("tool", OPTION_TOOLS)
def test_a_bad_command_line_is_one_line_and_ex_usage(installed, tool):
    status = SMTPDCHECK_ERROR if tool == "smtpdcheck" else EX_USAGE
    for words in BAD_COMMAND_LINES:
        done = run([installed.tool(tool), *words], "captured")
        assert_clean(done)
        assert done.returncode == status, (words, done)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        option = words[0].split("=")[0]
        assert lines[0] == f"{name_of(tool)}: unknown option {option}; see --help", lines[0]
        for internal in ("Warning", "Option(", "Argument("):
            assert internal not in lines[0]


@pytest.mark.parametrize("tool, words, problem", [
    ("extsmaild", ["-c"], "option -c requires an argument"),
    ("extsmaild", ["-t", "a", "b"], "extra operand 'b'"),
    ("watch-maildirs", ["extra"], "extra operand 'extra'"),
    ("syncmail", ["--hooks"], "option --hooks requires an argument"),
    ("inputkill", [], "missing operand"),
    ("socketwatch", ["-t"], "option -t requires an argument"),
    ("mswatch", ["stray"], "extra operand 'stray'"),
])
def test_operand_problems_are_one_line_and_ex_usage(installed, tool, words, problem):
    done = run([installed.tool(tool), *words], "captured")
    assert_clean(done)
    assert done.returncode == EX_USAGE, done
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"{tool}: {problem}"), done.stderr


# ------------------------------------------------------- the tools' own output


@pytest.fixture
def extsmail_home(installed, tmp_path) -> dict[str, str]:
    """A home with an extsmail configuration, externals and one queued message."""
    home = tmp_path / "home"
    (home / ".extsmail").mkdir(parents=True)
    spool = tmp_path / "spool"
    (home / ".extsmail" / "conf").write_text(f'spool_dir = "{spool}"\n')
    (home / ".extsmail" / "externals").write_text(
        'group {\n  external null { sendmail = "/bin/true" }\n}\n')
    env = installed.env(HOME=str(home))
    env.pop("XDG_CONFIG_HOME", None)
    queued = subprocess.run([installed.tool("extsmail"), "-oi", "rcpt@example.org"],
                            input="Subject: queued\n\nbody\n", text=True, env=env,
                            capture_output=True, timeout=DEADLINE)
    assert queued.returncode == 0, queued
    return env


@pytest.mark.parametrize("words", [["--list"], ["-t"]])
def test_extsmaild_output_that_cannot_be_written(installed, extsmail_home, words):
    argv = [installed.tool("extsmaild"), *words]
    shown = run(argv, "captured", env=extsmail_home)
    assert shown.returncode == 0 and shown.stdout, shown
    for how in ("closed", "full"):
        assert_write_error("extsmaild", run(argv, how, env=extsmail_home), how)
    assert_quiet_when_gone(run(argv, "gone", env=extsmail_home))


def test_extsmail_with_a_directory_as_standard_input(installed, extsmail_home, tmp_path):
    spool_msgs = tmp_path / "spool" / "msgs"
    before = sorted(os.listdir(spool_msgs))
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        done = run([installed.tool("extsmail"), "-t"], "captured", env=extsmail_home,
                   stdin=directory)
    finally:
        os.close(directory)
    assert_clean(done)
    assert done.returncode == 66, done
    assert done.stderr == "extsmail: standard input is a directory\n"
    assert sorted(os.listdir(spool_msgs)) == before


def test_watch_maildirs_protocol_output_that_cannot_be_written(installed, maildir_factory):
    """The ready line is watch-maildirs' first output: a closed or full
    stdout ends it at once; a gone reader ends it quietly."""
    maildir = maildir_factory("Maildir")
    argv = [installed.tool("watch-maildirs"), "-m", str(maildir)]
    for how in ("closed", "full"):
        assert_write_error("watch-maildirs", run(argv, how), how)
    assert_quiet_when_gone(run(argv, "gone"))


def test_watch_maildirs_change_after_its_reader_left(installed, maildir_factory):
    """A folder change printed, then the reader leaves and the next change
    finds nobody: watch-maildirs ends quietly."""
    maildir = maildir_factory("Maildir")
    proc = subprocess.Popen([installed.tool("watch-maildirs"), "-m", str(maildir)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "\n"
        (Path(maildir) / "new" / f"{time.time()}.msg").write_text("Subject: x\n\n")
        assert proc.stdout.readline() == "INBOX\n"
        proc.stdout.close()
        (Path(maildir) / "new" / f"{time.time()}.again").write_text("Subject: y\n\n")
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err == "", err
    assert proc.returncode in (0, -signal.SIGPIPE)


def test_smtpdcheck_answer_that_cannot_be_written(installed, smtp_server):
    argv = [installed.tool("smtpdcheck"), "--no-cache", "--port", str(smtp_server.port),
            smtp_server.host]
    shown = run(argv, "captured")
    assert shown.returncode == 1 and shown.stdout == f"{smtp_server.host}\n", shown
    for how in ("closed", "full"):
        assert_write_error("smtpdcheck", run(argv, how), how)
    assert_quiet_when_gone(run(argv, "gone"))
