"""Black-box tests of the installed `extsmail`: what it stores, what it
refuses, and what survives a full disk and kill -9.

Every test runs the launcher that ./install.sh put in the prefix, with
HOME pointing at a fresh home (the `ext_home` fixture); the spool files
it leaves are read back with roammail.extsmail.spool, the format's one reader.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from extsmail.conftest import ExtHome, simple_message
from peers.require import in_ci
from roammail.extsmail import spool

WAIT = 30.0  # seconds: the bound on every wait for a child


def missing(reason: str) -> None:
    """Skip locally; under CI everything must be there, so fail."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def run_bytes(ext_home: ExtHome, args: list[bytes], stdin: bytes | None,
              **env: str) -> subprocess.CompletedProcess:
    """The installed extsmail with a bytes argv (not necessarily UTF-8)."""
    argv = [os.fsencode(ext_home.installed.tool("extsmail")), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=WAIT,
                          env=ext_home.env(**env),
                          stdin=subprocess.DEVNULL if stdin is None else None)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The whole stderr, which must be exactly one `extsmail: ` line."""
    err = proc.stderr.decode(errors="replace")
    assert err.startswith("extsmail: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def the_queued_message(spool_dir: Path) -> tuple[list[bytes], bytes, bytes]:
    """(args, body, raw file bytes) of the one message in spool_dir/msgs."""
    paths = spool.list_messages(str(spool_dir))
    assert len(paths) == 1, paths
    message = spool.open_message(paths[0])
    assert message is not None
    with message:
        return message.args, message.read_body(), Path(paths[0]).read_bytes()


def nothing_queued(ext_home: ExtHome) -> bool:
    return spool.list_messages(str(ext_home.spool)) == []


# ------------------------------------------------------- stored verbatim

ARGV_CASES = {
    "typical": [b"-oi", b"-t"],
    "sender": [b"-f", b"me@example.org", b"-oi", b"--", b"ann@example.org"],
    "spaces": [b"two words", b" leading", b"trailing ", b"\t"],
    "newlines": [b"line\nbreak", b"\n", b"v1\n1\n1\nx\n", b"\r\n"],
    "empty": [b"", b"-t", b"", b""],
    "not-utf8": [b"\xff\xfe", b"caf\xe9@example.org", b"\x80", b"\xc3("],
    "help-among-others": [b"--help", b"-t"],
    "help-last": [b"-oi", b"--help"],
    "help-twice": [b"--help", b"--help"],
    "short-help": [b"-h"],
    "dashes": [b"--", b"-", b"---"],
    "none": [],
}


@pytest.mark.parametrize("args", list(ARGV_CASES.values()), ids=list(ARGV_CASES))
def test_arguments_are_stored_verbatim(ext_home: ExtHome, args: list[bytes]) -> None:
    message = simple_message()
    proc = run_bytes(ext_home, args, message)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and proc.stderr == b""
    stored_args, body, raw = the_queued_message(ext_home.spool)
    assert stored_args == args
    assert body == message
    assert raw == spool.encode_header(args) + message


@pytest.mark.parametrize("locale", ["C", "C.UTF-8", "POSIX"])
def test_non_utf8_arguments_survive_every_locale(ext_home: ExtHome, locale: str) -> None:
    args = [b"\xff", b"caf\xe9", "ü".encode(), b"\xed\xa0\x80"]  # the last: a lone surrogate
    proc = run_bytes(ext_home, args, b"x", LC_ALL=locale, LANG=locale)
    assert proc.returncode == 0, proc.stderr
    assert the_queued_message(ext_home.spool)[0] == args


MESSAGES = {
    "crlf": b"From: a@example.org\r\nTo: b@example.org\r\n\r\nbody\r\n",
    "nul": b"Subject: x\n\nbefore\0after\0",
    "no-final-newline": b"Subject: x\n\nno newline at the end",
    "one-byte": b"x",
    "one-newline": b"\n",
    "every-byte": bytes(range(256)) * 3,
    "looks-like-a-header": b"v1\n1\n2\n-t\nFrom: x\n\n",
    "big": os.urandom(3 * 65536 + 1),
}


@pytest.mark.parametrize("message", list(MESSAGES.values()), ids=list(MESSAGES))
def test_the_message_bytes_are_stored_exactly(ext_home: ExtHome, message: bytes) -> None:
    proc = run_bytes(ext_home, [b"-t"], message)
    assert proc.returncode == 0, proc.stderr
    args, body, raw = the_queued_message(ext_home.spool)
    assert (args, body) == ([b"-t"], message)
    assert raw == b"v1\n1\n2\n-t\n" + message


def test_a_command_line_of_more_than_a_mebibyte_is_queued_readably(ext_home: ExtHome) -> None:
    args = [b"rcpt%05d@example.org,%s" % (i, b"x" * 100) for i in range(11_000)]
    proc = run_bytes(ext_home, args, b"To: many\n\nhi\n")
    assert proc.returncode == 0, proc.stderr
    stored, body, _ = the_queued_message(ext_home.spool)
    assert stored == args
    assert body == b"To: many\n\nhi\n"


def test_each_message_gets_its_own_file(ext_home: ExtHome) -> None:
    for i in range(5):
        assert run_bytes(ext_home, [b"%d" % i], b"same\n").returncode == 0
    stored = []
    for path in spool.list_messages(str(ext_home.spool)):
        with spool.open_message(path) as message:
            stored.append(message.args)
    assert sorted(stored) == [[b"0"], [b"1"], [b"2"], [b"3"], [b"4"]]


def test_queued_files_and_directories_are_private(ext_home: ExtHome) -> None:
    proc = subprocess.run([ext_home.installed.tool("extsmail"), "-t"], input=b"x",
                          capture_output=True, env=ext_home.env(), timeout=WAIT, umask=0)
    assert proc.returncode == 0, proc.stderr
    (path,) = ext_home.queued()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (ext_home.msgs, ext_home.spool / "tmp"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert list((ext_home.spool / "tmp").iterdir()) == []


# ------------------------------------------------------------- --help

def test_a_lone_help_prints_usage_and_queues_nothing(ext_home: ExtHome) -> None:
    proc = ext_home.run("extsmail", "--help", input=simple_message())
    assert proc.returncode == 0
    out = proc.stdout.decode()
    assert out.startswith("Usage:")
    assert "extsmail --help" in out and "SENDMAIL-ARGUMENTS" in out
    assert proc.stderr == b""
    assert nothing_queued(ext_home)


def test_help_needs_no_configuration(ext_home: ExtHome) -> None:
    ext_home.conf.unlink()
    proc = ext_home.run("extsmail", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith(b"Usage:")


# -------------------------------------------------------------- empty input

@pytest.mark.parametrize("stdin", [b"", None], ids=["empty-pipe", "dev-null"])
def test_empty_input_queues_nothing(ext_home: ExtHome, stdin: bytes | None) -> None:
    proc = run_bytes(ext_home, [b"-t"], stdin)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"" and proc.stderr == b""
    assert nothing_queued(ext_home)


def test_a_closed_standard_input_is_an_error_not_an_empty_message(ext_home: ExtHome) -> None:
    tool = ext_home.installed.tool("extsmail")
    proc = subprocess.run(["/bin/sh", "-c", 'exec "$0" -t <&-', tool], capture_output=True,
                          stdin=subprocess.DEVNULL, env=ext_home.env(), timeout=WAIT)
    assert proc.returncode == 74
    assert "standard input" in one_error_line(proc)
    assert nothing_queued(ext_home)


def test_empty_input_still_reports_a_bad_spool(ext_home: ExtHome) -> None:
    ext_home.spool.chmod(0o755)
    proc = run_bytes(ext_home, [b"-t"], b"")
    assert proc.returncode == 73
    one_error_line(proc)


# ------------------------------------------------------- configuration

def test_no_configuration_anywhere(ext_home: ExtHome) -> None:
    if os.path.exists("/etc/extsmail/conf"):
        pytest.skip("/etc/extsmail/conf exists on this machine")
    ext_home.conf.unlink()
    proc = ext_home.run("extsmail", "-t", input=simple_message())
    assert proc.returncode == 78
    err = one_error_line(proc)
    assert str(ext_home.home / ".extsmail" / "conf") in err
    assert nothing_queued(ext_home)


@pytest.mark.parametrize("text, line", [
    ('# a comment\n\nspool_dir "~/.extsmail/spool"\n', 3),
    ('spool_dir = "~/.extsmail/spool"\nno_such_key = "x"\n', 2),
    ('spool_dir = "~/.extsmail/spool\n', 1),
    ('spool_dir = 5m\n', 1),
])
def test_bad_configuration_syntax_names_file_and_line(ext_home: ExtHome, text: str,
                                                       line: int) -> None:
    ext_home.write_conf(text)
    proc = ext_home.run("extsmail", "-t", input=simple_message())
    assert proc.returncode == 78
    err = one_error_line(proc)
    assert f"{ext_home.conf}:{line}" in err
    assert nothing_queued(ext_home)


def test_a_spool_open_to_others_is_refused(ext_home: ExtHome) -> None:
    ext_home.spool.chmod(0o755)
    proc = ext_home.run("extsmail", "-t", input=simple_message())
    assert proc.returncode == 73
    err = one_error_line(proc)
    assert str(ext_home.spool) in err and "0755" in err
    assert stat.S_IMODE(ext_home.spool.stat().st_mode) == 0o755
    assert not ext_home.msgs.exists()


def test_a_spool_that_is_a_file_is_refused(ext_home: ExtHome) -> None:
    ext_home.spool.rmdir()
    ext_home.spool.write_bytes(b"")
    proc = ext_home.run("extsmail", "-t", input=simple_message())
    assert proc.returncode == 73
    one_error_line(proc)
    assert ext_home.spool.read_bytes() == b""


def test_a_missing_spool_is_created_private(ext_home: ExtHome) -> None:
    ext_home.spool.rmdir()
    message = simple_message()
    proc = subprocess.run([ext_home.installed.tool("extsmail"), "-oi"], input=message,
                          capture_output=True, env=ext_home.env(), timeout=WAIT, umask=0)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(ext_home.spool.stat().st_mode) == 0o700
    assert the_queued_message(ext_home.spool)[:2] == ([b"-oi"], message)


def test_a_spool_whose_parent_is_missing_is_refused(ext_home: ExtHome) -> None:
    ext_home.write_conf('spool_dir = "~/no/such/spool"\n')
    proc = ext_home.run("extsmail", "-t", input=simple_message())
    assert proc.returncode == 73
    assert "no/such/spool" in one_error_line(proc)
    assert not (ext_home.home / "no").exists()


def _xdg_conf(ext_home: ExtHome, config_home: Path) -> Path:
    other_spool = ext_home.tmp / "xdg-spool"
    other_spool.mkdir(mode=0o700)
    conf = config_home / "roammail" / "extsmail.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f'spool_dir = "{other_spool}"\n')
    return other_spool


def test_the_xdg_configuration_is_used_without_the_original(ext_home: ExtHome) -> None:
    ext_home.conf.unlink()
    config_home = ext_home.tmp / "xdg"
    other_spool = _xdg_conf(ext_home, config_home)
    message = simple_message()
    proc = run_bytes(ext_home, [b"-t"], message, XDG_CONFIG_HOME=str(config_home))
    assert proc.returncode == 0, proc.stderr
    assert the_queued_message(other_spool)[:2] == ([b"-t"], message)
    assert nothing_queued(ext_home)


def test_xdg_config_home_defaults_to_dot_config(ext_home: ExtHome) -> None:
    ext_home.conf.unlink()
    other_spool = _xdg_conf(ext_home, ext_home.home / ".config")
    proc = run_bytes(ext_home, [b"-t"], b"x")
    assert proc.returncode == 0, proc.stderr
    assert the_queued_message(other_spool)[:2] == ([b"-t"], b"x")


def test_the_original_configuration_wins_over_xdg(ext_home: ExtHome) -> None:
    config_home = ext_home.tmp / "xdg"
    other_spool = _xdg_conf(ext_home, config_home)
    proc = run_bytes(ext_home, [b"-t"], b"x", XDG_CONFIG_HOME=str(config_home))
    assert proc.returncode == 0, proc.stderr
    assert the_queued_message(ext_home.spool)[:2] == ([b"-t"], b"x")
    assert spool.list_messages(str(other_spool)) == []


# ------------------------------------------------------------- full disk

@pytest.fixture
def tiny_spool(ext_home: ExtHome) -> Iterator[ExtHome]:
    """ext_home whose spool is a 256 KiB tmpfs, mode 0700."""
    if os.geteuid() != 0:
        missing("needs root to mount a small tmpfs as the spool")
    mount = shutil.which("mount") or shutil.which("mount", path="/usr/bin:/bin:/sbin")
    umount = shutil.which("umount") or shutil.which("umount", path="/usr/bin:/bin:/sbin")
    if mount is None or umount is None:
        missing("mount(8) and umount(8) are missing")
    proc = subprocess.run([mount, "-t", "tmpfs", "-o", "size=256k,mode=0700",
                           "roammail-test", str(ext_home.spool)],
                          capture_output=True, timeout=WAIT)
    if proc.returncode != 0:
        missing(f"cannot mount a tmpfs: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield ext_home
    finally:
        done = subprocess.run([umount, str(ext_home.spool)], capture_output=True, timeout=WAIT)
        if done.returncode != 0:
            subprocess.run([umount, "-l", str(ext_home.spool)], capture_output=True,
                           timeout=WAIT)


def test_a_full_disk_fails_loudly_and_leaves_nothing(tiny_spool: ExtHome) -> None:
    ext_home = tiny_spool
    assert os.path.ismount(ext_home.spool)
    big = simple_message(body=os.urandom(1 << 20))
    proc = ext_home.run("extsmail", "-t", input=big)
    assert proc.returncode == 74, proc.stderr
    assert "No space left" in one_error_line(proc)
    assert list(ext_home.msgs.iterdir()) == []
    assert list((ext_home.spool / "tmp").iterdir()) == []
    # The space of the failed attempt is free again: a small message fits.
    small = simple_message()
    proc = ext_home.run("extsmail", "-oi", input=small)
    assert proc.returncode == 0, proc.stderr
    assert the_queued_message(ext_home.spool)[:2] == ([b"-oi"], small)
    assert list((ext_home.spool / "tmp").iterdir()) == []


# --------------------------------------------------------------- kill -9

KILL_TRIALS = 15
KILL_MESSAGE_BYTES = 20 * 1024 * 1024
FEED_CHUNK = 256 * 1024


def _start(ext_home: ExtHome, trial: int, stderr) -> subprocess.Popen:
    return subprocess.Popen([ext_home.installed.tool("extsmail"), "-oi", f"trial-{trial}"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                            env=ext_home.env(), bufsize=0)


def _feed(proc: subprocess.Popen, data: memoryview, stop: int) -> None:
    """Write data[:stop] slowly, the way a mail client may."""
    pos = 0
    while pos < stop:
        end = min(pos + FEED_CHUNK, stop)
        view = data[pos:end]
        while view:
            view = view[proc.stdin.write(view):]
        pos = end
        time.sleep(0.0005)


def _reap(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(WAIT)
        raise


@pytest.mark.slow
def test_kill_9_never_leaves_a_partial_message(ext_home: ExtHome) -> None:
    seed = int(os.environ.get("ROAMMAIL_KILL_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    about = f"(seed {seed}; ROAMMAIL_KILL_SEED={seed} repeats the run)"
    message = simple_message(subject="big", body=os.urandom(KILL_MESSAGE_BYTES))
    data = memoryview(message)
    outcomes: dict[int, int] = {}
    started = time.monotonic()
    with tempfile.TemporaryFile() as errors:
        # Trial 0 runs to its end: it measures how long extsmail works
        # after its input ended (the fsync and link window kills aim at).
        proc = _start(ext_home, 0, errors)
        try:
            _feed(proc, data, len(message))
            proc.stdin.close()
            eof = time.monotonic()
            outcomes[0] = _reap(proc)
            after_eof = time.monotonic() - eof
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
        errors.seek(0)
        assert outcomes[0] == 0, errors.read()

        for trial in range(1, KILL_TRIALS + 1):
            proc = _start(ext_home, trial, errors)
            try:
                if rng.random() < 0.35:  # after every byte is written
                    _feed(proc, data, len(message))
                    proc.stdin.close()
                    time.sleep(rng.uniform(0, after_eof * 1.2))
                else:
                    _feed(proc, data, rng.randrange(0, len(message)))
                proc.kill()
                outcomes[trial] = _reap(proc)
            except BrokenPipeError:
                errors.seek(0)
                pytest.fail(f"extsmail stopped reading: {errors.read()!r} {about}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(WAIT)
                try:
                    proc.stdin.close()
                except OSError:
                    pass

    killed = [t for t, status in outcomes.items() if status == -9]
    assert len(killed) >= KILL_TRIALS // 3, f"hardly any kill landed: {outcomes} {about}"
    assert all(status in (0, -9) for status in outcomes.values()), f"{outcomes} {about}"

    queued: set[int] = set()
    for path in spool.list_messages(str(ext_home.spool)):
        stored = spool.open_message(path)
        assert stored is not None, f"{path} is not a whole message {about}"
        with stored:
            assert stored.args[:1] == [b"-oi"] and len(stored.args) == 2
            assert stored.read_body() == message, f"{path} is partial {about}"
            queued.add(int(stored.args[1].split(b"-")[1]))
    finished = {t for t, status in outcomes.items() if status == 0}
    assert finished <= queued, f"an exit 0 without its message {outcomes} {about}"

    rec = ext_home.recorder("out")
    ext_home.write_externals(f'group {{ external out {{ sendmail = "{rec.path}" }} }}\n')
    sent = ext_home.run("extsmaild", "-m", "batch", timeout=WAIT * 2)
    assert sent.returncode == 0, sent.stderr
    assert nothing_queued(ext_home)
    delivered = rec.received()
    assert sorted(int(argv[1].split(b"-")[1]) for argv, _ in delivered) == sorted(queued)
    for argv, body in delivered:
        assert argv[0] == b"-oi"
        assert body == message, f"{argv} was delivered damaged {about}"
    assert time.monotonic() - started < 60, "the kill test is too slow"
    # Free the disk at once: a few hundred MB otherwise stay in /tmp.
    shutil.rmtree(ext_home.spool)
    shutil.rmtree(rec.out)


# ------------------------------------------------------ the C extsmail

def nss_wrapper_library() -> str | None:
    """libnss_wrapper.so as the Debian package libnss-wrapper installs it."""
    try:
        listing = subprocess.run(["dpkg", "-L", "libnss-wrapper"], capture_output=True,
                                 text=True, timeout=WAIT).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listing = []
    for path in listing:
        if path.endswith("/libnss_wrapper.so") and os.path.exists(path):
            return path
    return None


@pytest.fixture
def c_extsmail(ext_home: ExtHome) -> tuple[list[str], dict[str, str]]:
    """The C extsmail's argv[0] and an environment in which its password
    entry names ext_home's home (it does not look at $HOME)."""
    binary = "/usr/bin/extsmail"
    try:
        with open(binary, "rb") as f:
            is_elf = f.read(4) == b"\x7fELF"
    except OSError:
        is_elf = False
    if not is_elf:
        missing("the C extsmail is missing (Debian: extsmail): ./test.sh installs it")
    library = nss_wrapper_library()
    if library is None:
        missing("nss_wrapper is missing (Debian: libnss-wrapper): ./test.sh installs it")
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "roammail"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = "roammail"
    passwd_file = ext_home.tmp / "passwd"
    group_file = ext_home.tmp / "group"
    passwd_file.write_text(f"{user}:x:{uid}:{gid}:test:{ext_home.home}:/bin/sh\n")
    group_file.write_text(f"{group}:x:{gid}:\n")
    env = ext_home.env(LD_PRELOAD=library, NSS_WRAPPER_PASSWD=str(passwd_file),
                       NSS_WRAPPER_GROUP=str(group_file))
    return [binary], env


INTEROP_CASES = {
    "typical": ([b"-oi", b"-t"], simple_message()),
    "hostile-args": ([b"-f", b"me@example.org", b"--", b"two words", b"", b"a\nb",
                      b"\xff\xfe", b"--help"],
                     b"From: a@example.org\r\nTo: b\r\n\r\nbody\0 no final newline"),
    "no-args": ([], b"x"),
    "binary": ([b"-t"], bytes(range(256)) * 600),
}


@pytest.mark.slow
@pytest.mark.parametrize("args, message", list(INTEROP_CASES.values()), ids=list(INTEROP_CASES))
def test_same_file_as_the_c_extsmail(ext_home: ExtHome, c_extsmail, args: list[bytes],
                                     message: bytes) -> None:
    c_argv, c_env = c_extsmail
    c_run = subprocess.run([*c_argv, *args], input=message, capture_output=True,
                           env=c_env, timeout=WAIT)
    assert c_run.returncode == 0, c_run.stderr
    (c_path,) = ext_home.queued()
    c_bytes = c_path.read_bytes()
    c_path.unlink()

    ours = run_bytes(ext_home, args, message)
    assert ours.returncode == 0, ours.stderr
    (our_path,) = ext_home.queued()
    assert our_path.read_bytes() == c_bytes
    assert c_bytes == spool.encode_header(args) + message
