"""Black-box tests of the installed extsmaild in batch mode and its queue
commands (-t, --flush, --list, --show, --delete).

Every external is a real program (the recording sendmail of conftest.py or
a small shell script written here, one per misbehaviour); every lock a
test holds is a real flock(2) on the real spool files.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extsmail.conftest import simple_message
from peers.require import require_root
from peers.waiting import running, wait_until

MB = 1 << 20


# ------------------------------------------------------------------ helpers


def script(h, name: str, body: str) -> Path:
    """A real executable /bin/sh script in the test's bin/ directory."""
    path = h.tmp / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def queue(h, message: bytes, *args: str) -> Path:
    """Queue `message` with the installed extsmail; return its spool file."""
    before = set(h.queued())
    res = h.run("extsmail", *args, input=message)
    assert res.returncode == 0, res.stderr
    new = set(h.queued()) - before
    assert len(new) == 1
    return new.pop()


def batch(h, *args: str, timeout: float = 60):
    return h.run("extsmaild", "-m", "batch", *args, timeout=timeout)


def lines(res) -> list[str]:
    return res.stderr.decode("utf-8", "replace").splitlines()


def subjects(rec) -> list[str]:
    """The Subject of every message a recorder received, in order."""
    found = []
    for _argv, msg in rec.received():
        m = re.search(rb"^Subject: *(.*?)\r?$", msg, re.M)
        found.append(m.group(1).decode() if m else "")
    return found


def hold_flock(path: Path) -> int:
    """Take flock(LOCK_EX) on `path` from this process; close the fd to release."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd






@pytest.fixture
def pids(ext_home):
    """A directory where external scripts write their pids; every process
    group named there is killed at teardown, whatever the test did."""
    d = ext_home.tmp / "pids"
    d.mkdir()
    yield d
    for f in d.iterdir():
        try:
            pid = int(f.read_text().split()[0])
        except (ValueError, IndexError):
            continue
        for kill in (os.killpg, os.kill):  # its group (the external), or it alone
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# --------------------------------------------------------- group selection


def test_group_selection_by_headers(ext_home):
    work = ext_home.recorder("work")
    home = ext_home.recorder("home")
    lists = ext_home.recorder("lists")
    ext_home.write_externals(f"""
group {{
    match header "^To:.*[[:digit:]]@work[.]example"
    reject header "^Subject:.*private"
    external work {{ sendmail = "{work.path}" }}
}}
group {{
    match header "^X-Route: *home"
    external home {{ sendmail = "{home.path}" }}
}}
group {{
    match header "^From:.*@lists[.]"
    external lists {{ sendmail = "{lists.path}" }}
}}
""")
    messages = {
        # POSIX class and case-insensitive matching of the header line.
        "digit": b"From: me@x\nTo: Bob <BOB7@WORK.Example>\nSubject: digit\n\nb\n",
        # The matching address is on a folded continuation line.
        "folded": b"From: me@x\nTo: ann@home.example,\n\tbob7@work.example\n"
                  b"Subject: folded\n\nb\n",
        # CRLF: only the second header line can route it (the C stops at line 1).
        "crlf": b"Subject: crlf\r\nTo: x9@work.example\r\nFrom: me@x\r\n\r\nb\r\n",
        # Matches groups 1 and 2: the first matching group wins.
        "both": b"From: me@x\nTo: x1@work.example\nX-Route: home\nSubject: both\n\nb\n",
        # Rejected by group 1 (reject, case-insensitive), taken by group 2.
        "rejected": b"From: me@x\nTo: x1@work.example\nX-Route: home\n"
                    b"Subject: Very PRIVATE\n\nb\n",
        # The address is in the body, not the header: group 3 by From.
        "body": b"From: a@lists.example\nTo: a@b\nSubject: body\n\nTo: x1@work.example\n",
        # No digit before @work, no X-Route, no list: no group matches.
        "nomatch": b"From: me@x\nTo: bob@work.example\nSubject: nomatch\n\nb\n",
    }
    for msg in messages.values():
        queue(ext_home, msg)
    res = batch(ext_home)
    assert res.returncode == 1, res.stderr  # "nomatch" remains
    assert sorted(subjects(work)) == ["both", "crlf", "digit", "folded"]
    assert subjects(home) == ["Very PRIVATE"]
    assert subjects(lists) == ["body"]
    for _argv, msg in work.received():
        assert msg in messages.values()  # byte for byte, CRLF kept
    left = ext_home.queued()
    assert len(left) == 1
    assert left[0].read_bytes().endswith(messages["nomatch"])
    err = [ln for ln in lines(res) if left[0].name in ln and "no group" in ln]
    assert len(err) == 1, res.stderr


def test_no_group_matches_stays_queued_exit_1_and_logged(ext_home):
    rec = ext_home.recorder("only")
    ext_home.write_externals(f'group {{ match header "^To:.*@nowhere" '
                             f'external only {{ sendmail = "{rec.path}" }} }}\n')
    path = queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    assert rec.received() == []
    assert any("no group" in ln and path.name in ln for ln in lines(res)), res.stderr


# ------------------------------------------------------------- fallback


def test_externals_tried_in_order_and_removed_only_after_success(ext_home):
    first = ext_home.recorder("first")
    first.fail_with(1)
    seen = ext_home.tmp / "queue-while-sending"
    # The second external notes whether the message is still queued while
    # it runs, then records what it is given.
    second = script(ext_home, "second", f"""
ls "{ext_home.msgs}" | wc -l > "{seen}"
cat > "{ext_home.tmp}/second.msg"
printf '%s\\n' "$@" > "{ext_home.tmp}/second.args"
""")
    ext_home.write_externals(f"""group {{
    external first {{ sendmail = "{first.path}" }}
    external second {{ sendmail = "{second} -i" }}
}}""")
    message = simple_message(subject="fallback")
    queue(ext_home, message, "-oi", "rcpt@example.org")
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert [m for _a, m in first.received()] == [message]
    assert (ext_home.tmp / "second.msg").read_bytes() == message
    assert (ext_home.tmp / "second.args").read_text() == "-i\n-oi\nrcpt@example.org\n"
    assert seen.read_text().strip() == "1"
    assert ext_home.queued() == []
    text = res.stderr.decode()
    assert "external first failed: exit status 1" in text
    assert "sent via second" in text


def test_failed_external_is_skipped_for_the_rest_of_the_cycle(ext_home):
    bad = ext_home.recorder("bad")
    bad.fail_with(75)
    good = ext_home.recorder("good")
    ext_home.write_externals(f"""group {{
    external bad {{ sendmail = "{bad.path}" }}
    external good {{ sendmail = "{good.path}" }}
}}""")
    for i in range(3):
        queue(ext_home, simple_message(subject=f"m{i}"))
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert len(bad.received()) == 1  # one try per cycle, not one per message
    assert sorted(subjects(good)) == ["m0", "m1", "m2"]
    # A new cycle (a new run) tries it again, once.
    queue(ext_home, simple_message(subject="m3"))
    assert batch(ext_home).returncode == 0
    assert len(bad.received()) == 2


def test_messages_after_the_external_failed_still_get_a_log_line_and_an_error(ext_home):
    down = ext_home.recorder("down")
    down.fail_with(1)
    ext_home.write_externals(f'group {{ external down {{ sendmail = "{down.path}" }} }}')
    paths = [queue(ext_home, simple_message(subject=f"m{i}")) for i in range(3)]
    res = batch(ext_home)
    assert res.returncode == 1
    assert len(down.received()) == 1
    for path in paths:  # one line per message not sent, saying why
        mine = [ln for ln in lines(res) if ln.startswith(f"extsmaild: {path.name}: ")]
        assert len(mine) == 1, res.stderr
        assert "down" in mine[0]
    listing = ext_home.run("extsmaild", "--list").stdout.decode()
    assert listing.count("Last error: ") == 3
    assert listing.count("not tried: down failed earlier in this cycle") == 2


def test_all_externals_fail_message_stays_queued(ext_home):
    a = ext_home.recorder("a")
    b = ext_home.recorder("b")
    a.fail_with(1)
    b.fail_with(2)
    ext_home.write_externals(f'group {{ external a {{ sendmail = "{a.path}" }} '
                             f'external b {{ sendmail = "{b.path}" }} }}')
    message = simple_message()
    path = queue(ext_home, message)
    before = path.read_bytes()
    res = batch(ext_home)
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    assert path.read_bytes() == before
    assert "external b failed: exit status 2" in res.stderr.decode()


FAILURES = {
    "missing": (None, "could not run {tmp}/bin/missing: No such file or directory"),
    "signal": ("cat > /dev/null\nkill -9 $$\n", "killed by signal 9 (SIGKILL)"),
    "early": ("exec 0<&-\nsleep 0.2\nexit 1\n", "exit status 1, before reading all its input"),
    "stderr": ("cat > /dev/null\necho 'ssh: connect to host x port 22:' >&2\n"
               "echo '  Network is unreachable' >&2\nexit 255\n",
               "exit status 255"),
}
# The C extsmaild's line of each failure, and the lines of stderr after it.
C_LINES = {
    "missing": ["Unable to read/write successfully when executing '{bad}' on '{path}': "
                "could not run {bad}: No such file or directory"],
    "signal": ["Received signal 9 when executing '{bad}' on '{path}'"],
    "early": ["Received error 1 when executing '{bad}' on '{path}'"],
    "stderr": ["Received error 255 when executing '{bad}' on '{path}': "
               "ssh: connect to host x port 22:", "stderr:   Network is unreachable"],
}


@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_each_failure_is_logged_in_c_wording_and_falls_back(ext_home, kind):
    body, reason = FAILURES[kind]
    bad = ext_home.tmp / "bin" / "missing"
    if body is not None:
        bad = script(ext_home, kind, body)
    good = ext_home.recorder("good")
    ext_home.write_externals(f'group {{ external bad {{ sendmail = "{bad}" }} '
                             f'external good {{ sendmail = "{good.path}" }} }}')
    message = simple_message(body=b"m" * MB)  # more than a pipe holds
    path = queue(ext_home, message)
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    failed = [ln for ln in lines(res) if "external bad failed" in ln]
    assert len(failed) == 1, res.stderr
    assert failed[0].endswith(": external bad failed: " + reason.format(tmp=ext_home.tmp))
    c_lines = [ln for ln in lines(res) if ln.startswith("extsmaild: bad: ")]
    assert c_lines == ["extsmaild: bad: " + ln.format(bad=bad, path=path)
                       for ln in C_LINES[kind]]
    assert [m for _a, m in good.received()] == [message]


def test_batch_mode_ignores_timeout(ext_home):
    slow_link = ext_home.recorder("slowlink")
    slow_link.fail_with(1)
    other = ext_home.recorder("other")
    ext_home.write_externals(f"""group {{
    external slowlink {{ sendmail = "{slow_link.path}" timeout = 1h }}
    external other {{ sendmail = "{other.path}" }}
}}""")
    queue(ext_home, simple_message())
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert len(slow_link.received()) == 1
    assert len(other.received()) == 1


def test_exit_0_without_reading_the_message_is_a_failure(ext_home):
    # The external reads the message from a file of its own, so child.py
    # sees how far it read: a message left unread is told from a sent one,
    # large (here) or small (test_extsmaild_killed.py).
    lazy = script(ext_home, "lazy", "exit 0\n")
    ext_home.write_externals(f'group {{ external lazy {{ sendmail = "{lazy}" }} }}')
    body = b"x" * (MB - 1) + b"\n"
    path = queue(ext_home, simple_message(body=body))
    res = batch(ext_home)
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    assert "exited before reading all its input (exit status 0)" in res.stderr.decode()


# ------------------------------------------------------------ exit status


def test_empty_queue_exits_0(ext_home):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    assert not ext_home.msgs.exists()
    res = batch(ext_home)
    assert (res.returncode, res.stderr) == (0, b"")
    ext_home.msgs.mkdir(mode=0o700)
    res = batch(ext_home)
    assert (res.returncode, res.stderr) == (0, b"")
    res = ext_home.run("extsmaild")  # batch is the default mode
    assert res.returncode == 0
    assert rec.received() == []


def test_exit_1_when_messages_remain_0_once_sent(ext_home):
    rec = ext_home.recorder("r")
    rec.fail_with(1)
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    queue(ext_home, simple_message())
    assert batch(ext_home).returncode == 1
    rec.succeed()
    assert batch(ext_home).returncode == 0
    assert ext_home.queued() == []


def test_another_instance_holding_the_lock_exits_75(ext_home):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    queue(ext_home, simple_message())
    fd = hold_flock(ext_home.spool / "extsmaild.lock")
    try:
        res = batch(ext_home)
        assert res.returncode == 75
        assert len(lines(res)) == 1, res.stderr
        assert lines(res)[0].startswith("extsmaild: ")
        assert "extsmaild.lock" in lines(res)[0]
        assert rec.received() == []
        assert len(ext_home.queued()) == 1
    finally:
        os.close(fd)
    assert batch(ext_home).returncode == 0


SPOOL = 'spool_dir = "~/.extsmail/spool"\n'
GOOD_EXTERNALS = 'group { external ok { sendmail = "/bin/true" } }\n'

BAD_FILES = [
    # (which file, its text, the line the error names)
    ("conf", 'spool_dir = "~/.extsmail/spool\n', 1),
    ("conf", SPOOL + 'colour = "blue"\n', 2),
    ("conf", SPOOL + "\nnotify_failure_interval = 5x\n", 3),
    ("conf", SPOOL + 'notify_failure_interval = "5m"\n', 2),
    ("externals", 'group {\n  external a {\n    sendmail = "x\n  }\n}\n', 3),
    ("externals", 'group {\n  external a {\n    sendmail = "x"\n    colour = "red"\n'
                  '  }\n}\n', 4),
    ("externals", 'group {\n  external a {\n    sendmail = "x"\n    timeout = 10y\n'
                  '  }\n}\n', 4),
    ("externals", 'group {\n  external a {\n    timeout = 1h\n  }\n}\n', 2),
    ("externals", 'group {\n  match header "("\n  external a { sendmail = "x" }\n}\n', 2),
    ("externals", 'group {\n  match header "^To:"\n}\n', 1),
]


@pytest.mark.parametrize("which,text,line", BAD_FILES)
@pytest.mark.parametrize("how", ["batch", "test"])
def test_bad_configuration_exits_78_with_file_and_line(ext_home, which, text, line, how):
    ext_home.write_conf(SPOOL)
    ext_home.write_externals(GOOD_EXTERNALS)
    path = ext_home.conf if which == "conf" else ext_home.externals
    path.write_text(text)
    queue_text = simple_message()
    if which == "externals":  # extsmail needs the conf only
        queue(ext_home, queue_text)
    res = batch(ext_home) if how == "batch" else ext_home.run("extsmaild", "-t")
    assert res.returncode == 78, res.stderr
    assert len(lines(res)) == 1, res.stderr
    assert lines(res)[0].startswith("extsmaild: ")
    assert f"{path}:{line})" in lines(res)[0]
    assert res.stdout == b""
    assert "Traceback" not in res.stderr.decode()


def test_externals_owned_by_another_user_exits_78(ext_home):
    require_root("chown the externals file to another user")
    ext_home.write_externals(GOOD_EXTERNALS)
    nobody = pwd.getpwnam("nobody")
    os.chown(ext_home.externals, nobody.pw_uid, nobody.pw_gid)
    path = queue(ext_home, simple_message())
    for args in (["-m", "batch"], ["-t"], ["--flush"]):
        res = ext_home.run("extsmaild", *args)
        assert res.returncode == 78, (args, res.stderr)
        assert len(lines(res)) == 1
        assert str(ext_home.externals) in lines(res)[0]
        assert "not owned" in lines(res)[0]
    assert ext_home.queued() == [path]


@pytest.mark.parametrize("args", [
    ["--bogus"],
    ["-m", "sometimes"],
    ["--stall-timeout", "0"],
    ["--stall-timeout", "soon"],
    ["--stall-timeout", "-5"],
    ["--show"],
    ["--list", "--flush"],
])
def test_bad_options_exit_64(ext_home, args):
    ext_home.write_externals(GOOD_EXTERNALS)
    res = ext_home.run("extsmaild", *args)
    assert res.returncode == 64, res.stderr
    assert len(lines(res)) == 1, res.stderr
    assert lines(res)[0].startswith("extsmaild: ")


def test_a_missing_spool_dir_is_made_0700_on_first_use(ext_home):
    # A fresh set-up (extsmail(1)'s quick start) has no spool yet: every
    # form that reads it makes it, as extsmail does, instead of exiting 73.
    ext_home.write_externals(GOOD_EXTERNALS)
    for args in (["--list"], ["-m", "batch"], ["--flush"]):
        shutil.rmtree(ext_home.spool)
        res = ext_home.run("extsmaild", *args)
        assert res.returncode == 0, (args, res.stderr)
        assert ext_home.spool.is_dir()
        assert ext_home.spool.stat().st_mode & 0o777 == 0o700
    # Its parent missing is still an error: only the spool itself is made.
    ext_home.write_conf(f'spool_dir = "{ext_home.tmp}/no/such/spool"\n')
    res = ext_home.run("extsmaild", "-m", "batch")
    assert res.returncode == 73, res.stderr
    assert len(lines(res)) == 1 and "no/such/spool" in lines(res)[0]


def test_unusable_spool_dir_exits_73(ext_home):
    ext_home.write_externals(GOOD_EXTERNALS)
    ext_home.spool.chmod(0o755)
    for args in (["-m", "batch"], ["--flush"], ["--list"]):
        res = ext_home.run("extsmaild", *args)
        assert res.returncode == 73, (args, res.stderr)
        assert len(lines(res)) == 1
        assert str(ext_home.spool) in lines(res)[0]


# ------------------------------------------------------------------- faults


@pytest.mark.slow
def test_external_flooding_stderr_without_reading_does_not_hang(ext_home):
    flood = script(ext_home, "flood",
                   "head -c 10485760 /dev/zero | tr '\\0' 'E' >&2\nexit 3\n")
    ext_home.write_externals(f'group {{ external flood {{ sendmail = "{flood}" }} }}')
    path = queue(ext_home, simple_message(body=b"y" * (10 * MB)))
    started = time.monotonic()
    res = batch(ext_home, timeout=60)
    assert time.monotonic() - started < 30
    assert res.returncode == 1
    assert ext_home.queued() == [path]
    failed = [ln for ln in lines(res) if "external flood failed" in ln]
    assert len(failed) == 1, res.stderr[:2000]
    assert "exit status 3" in failed[0]
    assert lines(res)[0].startswith("extsmaild: flood: Received error 3 when executing")
    # Its first MiB is logged, in lines of at most 1 KiB, and the rest counted.
    assert max(len(ln) for ln in lines(res)) < 1024
    assert "".join(lines(res)).count("E") >= MB
    assert f"extsmaild: flood: stderr: ({9 * MB} more bytes of standard error not kept)" \
        in lines(res)
    assert len(res.stderr) < 2 * MB


HANG = """echo $$ > "{pids}/hang.pid"
{grandchild} &
echo $! > "{pids}/grandchild.pid"
exec sleep 1000
"""


@pytest.mark.slow
def test_hung_external_and_its_grandchild_are_killed_on_stall(ext_home, pids):
    hang = script(ext_home, "hang", HANG.format(pids=pids, grandchild="sleep 1000"))
    ext_home.write_externals(f'group {{ external hang {{ sendmail = "{hang}" }} }}')
    path = queue(ext_home, simple_message())
    started = time.monotonic()
    res = batch(ext_home, "--stall-timeout", "1", timeout=60)
    elapsed = time.monotonic() - started
    assert res.returncode == 1
    assert 1 <= elapsed < 10
    assert ext_home.queued() == [path]
    assert "stalled for 1 second without I/O, killed" in res.stderr.decode()
    for name in ("hang.pid", "grandchild.pid"):
        pid = int((pids / name).read_text())
        assert wait_until(lambda pid=pid: not running(pid), 2), name


@pytest.mark.slow
def test_stall_kill_escalates_to_sigkill_for_a_grandchild_ignoring_sigterm(ext_home, pids):
    stubborn = "sh -c 'trap \"\" TERM; sleep 1000'"
    hang = script(ext_home, "hang", HANG.format(pids=pids, grandchild=stubborn))
    ext_home.write_externals(f'group {{ external hang {{ sendmail = "{hang}" }} }}')
    path = queue(ext_home, simple_message())
    started = time.monotonic()
    res = batch(ext_home, "--stall-timeout", "1", timeout=60)
    elapsed = time.monotonic() - started
    assert res.returncode == 1
    assert elapsed < 15  # stall 1 s + SIGTERM grace 5 s + slack
    assert ext_home.queued() == [path]
    pid = int((pids / "grandchild.pid").read_text())
    assert wait_until(lambda: not running(pid), 2)


def test_corrupt_spool_files_are_reported_once_skipped_and_kept(ext_home):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    good = queue(ext_home, simple_message(subject="good"))
    corrupt = {
        "garbage": bytes(range(256)) * 4,
        "badversion": b"v2\n0\nFrom: a\n\nb\n",
        "cutshort": b"v1\n2\n3\n-oi\n",
    }
    for name, data in corrupt.items():
        p = ext_home.msgs / name
        p.write_bytes(data)
        p.chmod(0o600)
    for _run in range(2):
        res = batch(ext_home)
        assert res.returncode == 1
        for name in corrupt:
            mentions = [ln for ln in lines(res) if name in ln]
            assert len(mentions) == 1, (name, res.stderr)
            assert "corrupt" in mentions[0]
        assert "Traceback" not in res.stderr.decode()
    assert subjects(rec) == ["good"]
    assert not good.exists()
    for name, data in corrupt.items():
        assert (ext_home.msgs / name).read_bytes() == data


@pytest.mark.slow
def test_slow_but_steady_reader_is_not_a_stall(ext_home):
    # The stall timeout is about progress, not total time: this external
    # reads 1 MB in pipe-sized pieces over ~2 s, never pausing 1 s.
    reader = ext_home.tmp / "bin" / "steady"
    reader.parent.mkdir(parents=True, exist_ok=True)
    reader.write_text(f"""#!{sys.executable}
import os, sys, time
total = 0
while True:
    data = os.read(0, 65536)
    if not data:
        break
    total += len(data)
    time.sleep(0.12)
open({str(ext_home.tmp / "steady.count")!r}, "w").write(str(total))
""")
    reader.chmod(0o755)
    ext_home.write_externals(f'group {{ external steady {{ sendmail = "{reader}" }} }}')
    message = simple_message(body=b"s" * MB)
    queue(ext_home, message)
    started = time.monotonic()
    res = batch(ext_home, "--stall-timeout", "1")
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started > 1.2  # longer than the stall timeout in total
    assert int((ext_home.tmp / "steady.count").read_text()) == len(message)
    assert ext_home.queued() == []


def test_sigint_stops_the_external_keeps_the_message_and_exits_130(ext_home, pids):
    slow = script(ext_home, "slow", f'echo $$ > "{pids}/slow.pid"\ncat > /dev/null\nsleep 30\n')
    ext_home.write_externals(f'group {{ external slow {{ sendmail = "{slow}" }} }}')
    path = queue(ext_home, simple_message())
    proc = subprocess.Popen([ext_home.installed.tool("extsmaild"), "-m", "batch"],
                            env=ext_home.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_until(lambda: (pids / "slow.pid").exists()
                          and (pids / "slow.pid").read_text().strip(), 10)
        pid = int((pids / "slow.pid").read_text())
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err  # as extsmaild(1) says, and as a shell reports it
    assert b"stays queued" in err
    assert wait_until(lambda: not running(pid), 2)
    assert ext_home.queued() == [path]


# ------------------------------------------------------------ notifications


def note_script(h, name: str) -> tuple[Path, Path]:
    """A notification command that appends its arguments, one call a line."""
    out = h.tmp / f"{name}.out"
    return script(h, name, f'echo "$*" >> "{out}"\n'), out


def calls(out: Path) -> list[str]:
    return out.read_text().splitlines() if out.exists() else []


def test_notify_success_cmd_gets_the_count_at_the_end_of_the_string(ext_home):
    rec = ext_home.recorder("r")
    note, out = note_script(ext_home, "note")
    ext_home.write_conf(SPOOL + f'notify_success_cmd = "{note} sent ${{SUCCESSES}}"\n')
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    assert batch(ext_home).returncode == 0
    assert calls(out) == []  # nothing sent: no notification
    for i in range(3):
        queue(ext_home, simple_message(subject=f"m{i}"))
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert calls(out) == ["sent 3"]


@pytest.mark.slow
def test_notify_failure_after_the_interval_and_not_before(ext_home):
    rec = ext_home.recorder("r")
    rec.fail_with(1)
    note, out = note_script(ext_home, "note")
    ext_home.write_conf(SPOOL + "notify_failure_interval = 1s\n"
                        f'notify_failure_cmd = "{note} failing for ${{TIME}}"\n')
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    queued_at = time.time()
    queue(ext_home, simple_message())
    assert batch(ext_home).returncode == 1
    if time.time() - queued_at < 0.9:
        assert calls(out) == []  # failing for less than the interval
    time.sleep(1.2)
    assert batch(ext_home).returncode == 1
    first = calls(out)
    assert len(first) == 1
    assert re.fullmatch(r"failing for \d+ seconds?", first[0]), first
    assert batch(ext_home).returncode == 1  # well within the interval
    assert calls(out) == first
    time.sleep(1.2)
    assert batch(ext_home).returncode == 1
    assert len(calls(out)) == 2
    assert re.fullmatch(r"failing for \d+ seconds?", calls(out)[1])
    # A successful cycle ends the failure: no notice, and it starts over.
    rec.succeed()
    assert batch(ext_home).returncode == 0
    assert len(calls(out)) == 2


# ----------------------------------------------------------------------- -t


def test_t_prints_the_groups_and_exits_0(ext_home):
    ext_home.write_externals(GOOD_EXTERNALS)
    other = ext_home.tmp / "other-externals"
    other.write_text('group {\n  match header "^To:.*@work"\n'
                     '  external work { sendmail = "ssh -q work sendmail -t" timeout = 1h }\n'
                     '  external fallback { sendmail = "msmtp -a x" }\n}\n'
                     'group { external home { sendmail = "/bin/true" } }\n')
    path = queue(ext_home, simple_message())
    res = ext_home.run("extsmaild", "-t", str(other))
    assert res.returncode == 0, res.stderr
    text = res.stdout.decode()
    assert str(other) in text
    assert "group 1 (line 1)" in text and "group 2 (line 6)" in text
    assert 'match header "^To:.*@work"' in text
    assert "external work: ssh -q work sendmail -t, timeout 3600s" in text
    assert "external fallback" in text and "external home" in text
    # Default externals, and -e.
    res = ext_home.run("extsmaild", "-t")
    assert res.returncode == 0
    assert "external ok" in res.stdout.decode()
    res = ext_home.run("extsmaild", "-e", str(other), "-t")
    assert res.returncode == 0
    assert "external work" in res.stdout.decode()
    assert ext_home.queued() == [path]  # -t delivers nothing


# -------------------------------------------------------- queue commands


def test_list_shows_id_headers_arguments_and_last_error(ext_home):
    rec = ext_home.recorder("home")
    rec.fail_with(5)
    ext_home.write_externals(f'group {{ external home {{ sendmail = "{rec.path}" }} }}')
    path = queue(ext_home, b"From: Me <me@example.org>\nTo: ann@example.org\n"
                           b"Subject: the report\n\nbody\n", "-oi", "--", "ann@example.org")
    res = ext_home.run("extsmaild", "--list")
    assert res.returncode == 0
    text = res.stdout.decode()
    assert path.name in text
    assert "Last error" not in text
    assert batch(ext_home).returncode == 1
    res = ext_home.run("extsmaild", "--list")
    assert res.returncode == 0
    out = res.stdout.decode().splitlines()
    ident, age, size, bytes_, file_, name = out[0].split()
    assert len(ident) == 8 and all(c in "0123456789abcdef" for c in ident)
    assert (size, bytes_, file_, name) == ("72", "bytes", "file", path.name)
    assert out[1:6] == ["  From: Me <me@example.org>", "  To: ann@example.org",
                        "  Subject: the report", "  Recipients: ann@example.org",
                        "  Arguments: -oi -- ann@example.org"]
    assert out[6].startswith("  Last error: ")
    assert out[6].endswith("via home: exit status 5")
    # Once sent, the error note goes with it.
    rec.succeed()
    assert batch(ext_home).returncode == 0
    res = ext_home.run("extsmaild", "--list")
    assert (res.returncode, res.stdout) == (0, b"queue is empty\n")
    assert list((ext_home.spool / "errors").iterdir()) == []


def test_show_prints_exactly_the_queued_bytes(ext_home):
    ext_home.write_externals(GOOD_EXTERNALS)
    message = (b"Subject: raw\r\nTo: a@b\r\n\r\n\x00\x01\xff binary\r\n" + b"z" * 200_000
               + b"no final newline")
    path = queue(ext_home, message, "-oi")
    res = ext_home.run("extsmaild", "--show", path.name)
    assert res.returncode == 0
    assert res.stdout == message
    res = ext_home.run("extsmaild", "--show", path.name[:-4])
    assert res.stdout == message


def test_delete_by_id_and_unique_prefix(ext_home):
    ext_home.write_externals(GOOD_EXTERNALS)
    a = queue(ext_home, simple_message(subject="a"))
    b = queue(ext_home, simple_message(subject="b"))
    c = queue(ext_home, simple_message(subject="c"))
    for command in ("--delete", "--show"):
        res = ext_home.run("extsmaild", command, "no-such-id")
        assert res.returncode == 65  # extsmaild(1): no queued message has this id
        assert len(lines(res)) == 1 and "no-such-id" in lines(res)[0]
    # An ambiguous prefix deletes nothing.
    res = ext_home.run("extsmaild", "--delete", os.path.commonprefix([a.name, b.name]))
    assert res.returncode == 64
    assert len(lines(res)) == 1
    assert sorted(ext_home.queued()) == sorted([a, b, c])
    # An unknown ID among good ones: nothing is deleted.
    res = ext_home.run("extsmaild", "--delete", a.name, "no-such-id")
    assert res.returncode == 65
    assert sorted(ext_home.queued()) == sorted([a, b, c])
    res = ext_home.run("extsmaild", "--delete", a.name)
    assert res.returncode == 0, res.stderr
    res = ext_home.run("extsmaild", "--delete", b.name[:-3])  # a unique prefix
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == [c]


def test_delete_refuses_what_is_not_a_message_and_an_empty_file(ext_home):
    ext_home.write_externals(GOOD_EXTERNALS)
    queued = queue(ext_home, simple_message())
    (ext_home.msgs / "adir").mkdir()
    (ext_home.msgs / "empty").write_bytes(b"")  # the C extsmail, still writing it
    res = ext_home.run("extsmaild", "--delete", "adir")
    assert res.returncode == 65, res.stderr
    assert lines(res) == ["extsmaild: adir: not a regular file, not a queued message; "
                          "not deleted"]
    res = ext_home.run("extsmaild", "--delete", "empty")
    assert res.returncode == 75, res.stderr
    assert len(lines(res)) == 1 and "still writing it" in lines(res)[0]
    assert (ext_home.msgs / "adir").is_dir() and (ext_home.msgs / "empty").exists()
    assert queued.exists()


def test_flush_delivers_while_another_process_holds_the_instance_lock(ext_home):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    queue(ext_home, simple_message(subject="one"))
    queue(ext_home, simple_message(subject="two"))
    fd = hold_flock(ext_home.spool / "extsmaild.lock")
    try:
        assert batch(ext_home).returncode == 75
        res = ext_home.run("extsmaild", "--flush")
        assert res.returncode == 0, res.stderr
    finally:
        os.close(fd)
    assert sorted(subjects(rec)) == ["one", "two"]
    assert ext_home.queued() == []


def test_flush_skips_a_message_locked_by_another_process(ext_home):
    rec = ext_home.recorder("r")
    ext_home.write_externals(f'group {{ external r {{ sendmail = "{rec.path}" }} }}')
    locked = queue(ext_home, simple_message(subject="locked"))
    queue(ext_home, simple_message(subject="free"))
    data = locked.read_bytes()
    # Another delivery (a daemon, another --flush) holds this message.
    fd = hold_flock(locked)
    try:
        res = ext_home.run("extsmaild", "--flush")
        assert res.returncode == 1  # the locked message remains
        assert subjects(rec) == ["free"]
        assert locked.read_bytes() == data
        # --list still shows it; --delete refuses while it is locked.
        assert locked.name in ext_home.run("extsmaild", "--list").stdout.decode()
        res = ext_home.run("extsmaild", "--delete", locked.name)
        assert res.returncode == 75
        assert locked.exists()
    finally:
        os.close(fd)
    assert ext_home.run("extsmaild", "--flush").returncode == 0
    assert sorted(subjects(rec)) == ["free", "locked"]  # each exactly once


# ------------------------------------------------------------------ jobs


def intervals(h, n: int) -> list[tuple[float, float]]:
    """(start, end) of each call of the `slow` external, in start order."""
    out = []
    for path in sorted((h.tmp / "calls").glob("*")):
        start, end = path.read_text().split()
        out.append((float(start), float(end)))
    assert len(out) == n
    return sorted(out)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("jobs,peak", [("1", 1), ("3", 3)])
def test_jobs_bounds_the_deliveries_at_once(ext_home, jobs, peak):
    calls = ext_home.tmp / "calls"
    calls.mkdir()
    slow = script(ext_home, "slow", f'start=$(date +%s.%N)\ncat >/dev/null\nsleep 0.4\n'
                                    f'echo "$start $(date +%s.%N)" > {calls}/$$\n')
    ext_home.write_externals(f'group {{ external slow {{ sendmail = "{slow}" }} }}\n')
    for i in range(7):
        queue(ext_home, simple_message(subject=f"m{i}"))
    res = batch(ext_home, "-j", jobs)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    spans = intervals(ext_home, 7)
    assert most_at_once(spans) == peak
    # The first message goes alone (an ssh external opens its shared
    # connection with it): nothing starts before it has ended.
    assert all(start >= spans[0][1] for start, _ in spans[1:])


def test_bad_jobs_is_a_usage_error(ext_home):
    for bad in ("0", "65", "x", "-1"):
        res = batch(ext_home, "-j", bad)
        assert res.returncode == 64, (bad, res.stderr)
        assert lines(res) == [f"extsmaild: --jobs needs a number from 1 to 64, not '{bad}'"]
