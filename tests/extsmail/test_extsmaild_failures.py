"""The failure log lines of the installed extsmaild, in the C extsmaild
2.9 wording, and the whole stderr of an external, in the log and in the
--list note; the behaviours the C extsmail's own test suite checks (a
normal small and big message, an external that reads all then fails, one
that stalls, reads slowly, is too slow, is killed, writes a little or a
lot to stderr).

Every external is a real program: a C program compiled with gcc here, or
a /bin/sh script.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from extsmail.conftest import simple_message
from extsmail.test_extsmaild_batch import batch, lines, queue, script

SPOOL = 'spool_dir = "~/.extsmail/spool"\n'

# Reads its stdin to the end, then exits 0 if it got exactly argv[1] bytes.
COUNTING_READER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char buf[8192];
    long long total = 0;
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0)
        total += n;
    if (n < 0 || argc < 2)
        return 2;
    if (total != atoll(argv[1])) {
        fprintf(stderr, "got %lld bytes\n", total);
        return 3;
    }
    return 0;
}
"""


def compile_c(h, name: str, source: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = h.tmp / f"{name}.c"
    src.write_text(source)
    out = h.tmp / "bin" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-Wall", "-O1", "-o", str(out), str(src)], check=True,
                   timeout=60)
    return out


def one_external(h, name: str, sendmail: str) -> None:
    h.write_externals(f'group {{ external {name} {{ sendmail = "{sendmail}" }} }}')


def c_line(name: str, sendmail: str, path: Path, what: str) -> str:
    return f"extsmaild: {name}: {what} when executing '{sendmail}' on '{path}'"


# -------------------------------------------------- normal, small and big


@pytest.mark.parametrize("size", [268, 6 * 1024 * 1024 + 7])
def test_a_message_of_any_size_reaches_the_external_whole(ext_home, size):
    reader = compile_c(ext_home, "reader", COUNTING_READER)
    head = simple_message(body=b"")
    message = head + b"x" * (size - len(head) - 1) + b"\n"
    assert len(message) == size
    one_external(ext_home, "test", f"{reader} {size}")
    queue(ext_home, message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    assert len(lines(res)) == 1
    assert lines(res)[0].endswith(f": sent via test ({size} bytes)")


# ------------------------------------------------ failures, in C wording


def test_an_external_that_reads_all_then_fails(ext_home):
    ext = script(ext_home, "fail", "cat >/dev/null\nexit 1\n")
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    assert lines(res) == [
        c_line("test", str(ext), path, "Received error 1"),
        f"extsmaild: {path.name}: external test failed: exit status 1",
    ]


def test_an_external_killed_by_a_signal(ext_home):
    ext = script(ext_home, "killed", "cat >/dev/null\nkill -9 $$\n")
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    assert lines(res)[0] == c_line("test", str(ext), path, "Received signal 9")
    assert lines(res)[1].endswith("external test failed: killed by signal 9 (SIGKILL)")


@pytest.mark.slow
def test_an_external_that_reads_all_then_stalls_with_its_pipes_closed(ext_home):
    ext = script(ext_home, "stall", "cat >/dev/null\nexec 0<&- 2>&-\nexec sleep 30\n")
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    res = batch(ext_home, "--stall-timeout", "1", timeout=30)
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    assert lines(res)[0] == c_line("test", str(ext), path, "Timeout")


@pytest.mark.slow
@pytest.mark.parametrize("body", [
    "cat >/dev/null\nexec sleep 30\n",   # reads all, then sleeps, stderr open
    "exec sleep 30\n",                   # sleeps before reading
], ids=["after-reading", "before-reading"])
def test_an_external_that_is_too_slow(ext_home, body):
    ext = script(ext_home, "slow", body)
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    res = batch(ext_home, "--stall-timeout", "1", timeout=30)
    assert res.returncode == 1
    assert lines(res)[0] == c_line("test", str(ext), path,
                                   "Unable to read/write successfully") + ": Timeout"
    assert lines(res)[1].endswith(
        "external test failed: stalled for 1 second without I/O, killed")


@pytest.mark.slow
def test_an_external_that_reads_slowly_but_steadily_is_not_stopped(ext_home):
    # 16 reads of 4 KiB, 0.3 s apart: 4.8 s in all, never 2 s without one.
    ext = script(ext_home, "slowread",
                 "while [ -n \"$(dd bs=4096 count=1 status=none | head -c 1)\" ]; do\n"
                 "    sleep 0.3\ndone\n")
    one_external(ext_home, "test", str(ext))
    queue(ext_home, simple_message(body=b"y" * (60 * 1024) + b"\n"))
    res = batch(ext_home, "--stall-timeout", "2", timeout=60)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []


def test_an_external_that_exits_0_without_reading(ext_home):
    ext = script(ext_home, "lazy", "exit 0\n")
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    assert lines(res)[0] == (c_line("test", str(ext), path, "Unable to read/write successfully")
                             + ": exited before reading all its input (exit status 0)")


def test_an_external_that_cannot_be_run(ext_home):
    missing = ext_home.tmp / "no-such-sendmail"
    one_external(ext_home, "test", f"{missing} -t")
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    assert lines(res)[0] == (c_line("test", f"{missing} -t", path,
                                    "Unable to read/write successfully")
                             + f": could not run {missing}: No such file or directory")


# ----------------------------------------------------- stderr, small and big


def test_a_little_stderr_ends_the_c_line(ext_home):
    # Closes stdin and stdout, writes "test" without a newline, fails: the
    # C extsmaild's test greps for a line ending in "test".
    ext = script(ext_home, "stderr", "exec 0<&- 1>&-\nsleep 0.2\nprintf test >&2\nexit 1\n")
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    for extra in (b"", b"z\n" * 10000):  # a message bigger than a pipe buffer too
        with open(path, "ab") as f:
            f.write(extra)
        res = batch(ext_home)
        assert res.returncode == 1
        assert lines(res)[0] == c_line("test", str(ext), path, "Received error 1") + ": test"


BIG_STDERR = r"""
#include <string.h>
#include <unistd.h>

int main(void) {
    static char line[4097];
    while (read(0, line, sizeof line) > 0)
        ;
    memset(line, 'a', 4096);
    line[4096] = '\n';
    write(2, line, sizeof line);
    const char *more = "second  line,\tspaced   as it was\n\n  third line\n";
    write(2, more, strlen(more));
    return 1;
}
"""


def test_a_big_stderr_is_logged_and_kept_whole(ext_home):
    ext = compile_c(ext_home, "bigerr", BIG_STDERR)
    one_external(ext_home, "test", str(ext))
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    got = lines(res)
    first = c_line("test", str(ext), path, "Received error 1") + ": "
    assert got[0].startswith(first)
    assert len(got[0]) < len(first) + 1024  # each line fits a 1 KiB syslog line
    cont = "extsmaild: test: stderr: "
    assert all(line.startswith(cont) for line in got[1:-1])
    pieces = [got[0][len(first):]] + [line[len(cont):] for line in got[1:-1]]
    assert "".join(pieces[:-2]) == "a" * 4096
    assert pieces[-2:] == ["second  line,\tspaced   as it was", "  third line"]
    assert got[-1] == f"extsmaild: {path.name}: external test failed: exit status 1"
    assert len(res.stderr) > 4096
    listing = ext_home.run("extsmaild", "--list").stdout.decode()
    assert "via test: exit status 1\n    " + "a" * 4096 + "\n" in listing
    assert "\n    second  line,\tspaced   as it was\n" in listing
    assert "\n      third line\n" in listing


def test_a_failing_notification_command_logs_its_whole_stderr(ext_home):
    rec = ext_home.recorder("r")
    note = script(ext_home, "note", "printf 'one\\n%0900d\\n' 0 >&2\nexit 2\n")
    ext_home.write_conf(SPOOL + f'notify_success_cmd = "{note} ${{SUCCESSES}}"\n')
    one_external(ext_home, "r", str(rec.path))
    queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    got = lines(res)
    assert f"extsmaild: When running cmd: {note} 1: exit status 2" in got
    tail = got[got.index(f"extsmaild: When running cmd: {note} 1: exit status 2") + 1:]
    prefix = "extsmaild: notification command: stderr: "
    assert [line[len(prefix):] for line in tail] == ["one", "0" * 800, "0" * 100]


# ----------------------------------------------------------------------- -t


def test_t_prints_commands_as_shell_words_and_warns_of_missing_programs(ext_home):
    present = script(ext_home, "my sendmail", "exit 0\n")
    not_executable = ext_home.tmp / "bin" / "plain-file"
    not_executable.write_text("")
    ext_home.write_externals(
        "group {\n"
        f'  external quoted {{ sendmail = "\'{present}\' -f \'me and you\' -t" }}\n'
        '  external absent { sendmail = "no-such-sendmail-program -t" timeout = 1h }\n'
        f'  external plain {{ sendmail = "{not_executable}" }}\n'
        "}\n")
    res = ext_home.run("extsmaild", "-t")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode().splitlines()
    assert f"  external quoted: '{present}' -f 'me and you' -t" in out
    assert "  external absent: no-such-sendmail-program -t, timeout 3600s" in out
    assert f"  external plain: {not_executable}" in out
    assert lines(res) == [
        "extsmaild: warning: external absent (line 3): "
        "program 'no-such-sendmail-program' not found on PATH",
        f"extsmaild: warning: external plain (line 4): "
        f"program '{not_executable}' is not an executable file",
    ]


def test_t_finds_programs_through_path_and_is_silent_when_all_are_there(ext_home):
    script(ext_home, "local-sendmail", "exit 0\n")
    ext_home.write_externals('group { external a { sendmail = "local-sendmail -t" } '
                             'external b { sendmail = "/bin/true" } }\n')
    env = ext_home.env(PATH=f"{ext_home.tmp / 'bin'}:/usr/bin:/bin")
    res = subprocess.run([ext_home.installed.tool("extsmaild"), "-t"], env=env,  # type: ignore[attr-defined]
                         capture_output=True, timeout=60)
    assert (res.returncode, res.stderr) == (0, b""), res.stderr
    assert "  external a: local-sendmail -t" in res.stdout.decode().splitlines()
    res = ext_home.run("extsmaild", "-t")  # PATH without the test's bin/
    assert res.returncode == 0
    assert lines(res) == ["extsmaild: warning: external a (line 1): "
                          "program 'local-sendmail' not found on PATH"]


def test_t_prints_the_delivery_settings_and_each_externals_own(ext_home):
    ext_home.write_conf('spool_dir = "~/.extsmail/spool"\nreport_maildir = "~/Mail"\n'
                        'max_age = 5d\nnetwork_events = no\n')
    ext_home.write_externals(
        'group {\n'
        '  external a { sendmail = "/bin/true" permanent = "77 65" dedup = "yes" }\n'
        '  external b { sendmail = "/bin/true" permanent = "" }\n'
        '  external c { sendmail = "/bin/true" timeout = 1h }\n'
        '}\n')
    res = ext_home.run("extsmaild", "-t")
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode().splitlines()
    assert out[1] == ("  permanent_failures yes, report_maildir ~/Mail, max_age 432000s, "
                      "keep_sent 604800s, network_events no"), out
    assert "  external a: /bin/true, permanent 65 77, dedup" in out
    assert "  external b: /bin/true, permanent none" in out
    assert "  external c: /bin/true, timeout 3600s" in out  # the defaults are not repeated
    # A report maildir the user named that is not one is said: the reports
    # would have nowhere to go.
    assert lines(res) == [f"extsmaild: warning: report_maildir: {ext_home.home}/Mail is not "
                          "a maildir (no cur/, new/ and tmp/): a permanent failure is kept "
                          "in failed/ without a report"]
    for sub in ("cur", "new", "tmp"):
        (ext_home.home / "Mail" / sub).mkdir(parents=True)
    res = ext_home.run("extsmaild", "-t")
    assert (res.returncode, res.stderr) == (0, b"")


def test_t_prints_the_defaults_and_the_c_behaviour(ext_home):
    ext_home.write_externals('group { external a { sendmail = "/bin/true" } }\n')
    res = ext_home.run("extsmaild", "-t")
    assert (res.returncode, res.stderr) == (0, b""), res.stderr
    assert res.stdout.decode().splitlines()[1] == (
        "  permanent_failures yes, report_maildir ~/Maildir (default), max_age none, "
        "keep_sent 604800s, network_events yes")
    ext_home.write_conf('spool_dir = "~/.extsmail/spool"\npermanent_failures = no\n'
                        'report_maildir = "~/nowhere"\n')
    res = ext_home.run("extsmaild", "-t")
    assert (res.returncode, res.stderr) == (0, b""), res.stderr  # no reports: no warning
    assert res.stdout.decode().splitlines()[1].startswith(
        "  permanent_failures no, report_maildir ~/nowhere,")
