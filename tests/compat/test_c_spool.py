"""Differential tests of the spool and the externals file against the C extsmail.

The C extsmail and extsmaild (Debian package extsmail, 2.5) and ours share
one HOME: ours finds it through $HOME, the C tools through the passwd entry
(getpwuid), which nss_wrapper points at the same temporary directory.  The
conf says `spool_dir = "~/.extsmail/spool"`, so both expand `~` the same way.

- Either side enqueues and the other delivers, through a real recording
  sendmail: the external gets the same argv and the same bytes, for argument
  and message shapes that break naive code (spaces, empty arguments, a
  newline in an argument, CRLF, 1 MB, bytes that are not UTF-8, a NUL).  The
  spool files the two write are identical byte for byte.
- The same externals files parse in both, or are refused by both.  How the C
  reports: `extsmaild -t FILE` prints "FILE: OK" on stdout when the file is
  valid; when it is not, it prints the parser's complaint and "FILE: Syntax
  error, wrong permissions or file not found" on stderr and still exits 0
  (a known fault), except for a character its lexer cannot read ("Illegal
  char", "Time value out of range"), which exits 1.  So the C's verdict is
  read from its stdout, not from its exit status.
- One spool, two implementations: files of both kinds coexist and are
  delivered by either; a message one side is still writing is not touched
  by the other side's extsmaild, and is delivered once complete.

Behaviours of the C found here (asserted where they matter):
- its spool files are named `XXXX` plus six mkstemp letters;
- `extsmaild -m batch` exits 1 on an empty queue and when every message
  failed, but 0 when one was sent, even if others remain (a message without an empty line after
  its header is "Corrupted" to it and stays queued);
- it unlinks extsmaild.lock when it exits (ours never unlinks a lock file);
- it accepts a second `spool_dir` in the conf, a second `timeout`, an
  external with no `sendmail`, an empty or blank `sendmail`, two externals
  of the same name, and a `sendmail` whose quotes do not pair (its splitter
  treats a quote inside a word literally): ours refuses all of these.
- it refuses `timeout = 0s` ("out of range") and an external named after a
  keyword (`external group`): ours accepts both.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from compat.test_c_matching import missing, nss_wrapper_library
from extsmail.conftest import ExtHome, Recorder

pytestmark = pytest.mark.slow

# Seconds.  One C or ours command takes well under a second; these bounds
# only absorb a loaded CI machine.
RUN_TIMEOUT = 60.0
WAIT_TIMEOUT = 10.0
POLL = 0.02

ELF_MAGIC = b"\x7fELF"
C_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin")


def c_program(name: str) -> str:
    """The C program `name` (an ELF file, never our Python launcher of that name)."""
    for directory in C_DIRS:
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                if f.read(4) == ELF_MAGIC and os.access(path, os.X_OK):
                    return path
        except OSError:
            continue
    missing(f"the C {name} is missing (Debian: extsmail): ./test.sh installs it")
    raise AssertionError("unreachable")


def run_bounded(argv: list, env: dict[str, str], input: bytes = b"",
                timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """Run argv in its own session; kill the whole group if it outlives timeout."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{argv[0]} took more than {timeout} s")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def wait_until(condition, what: str, timeout: float = WAIT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


def is_locked(path: Path) -> bool:
    """True when some process holds an flock on path (read from /proc/locks).

    Probing with flock itself would race the holder: a C extsmaild that
    meets our probe's lock with LOCK_NB gives up.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as locks:
        return any(line.split()[1] == "FLOCK" and line.split()[5] == key
                   for line in locks if len(line.split()) > 5)


@dataclass
class World:
    """One HOME, one conf, one spool; ours and the C tools both use it."""

    home: ExtHome
    c_env: dict[str, str]
    c_extsmail: str
    c_extsmaild: str

    def ours(self, tool: str, *args, input: bytes = b"") -> subprocess.CompletedProcess:
        return run_bounded([self.home.installed.tool(tool), *args],  # type: ignore[attr-defined]
                           self.home.env(), input)

    def c(self, tool: str, *args, input: bytes = b"") -> subprocess.CompletedProcess:
        program = self.c_extsmail if tool == "extsmail" else self.c_extsmaild
        return run_bounded([program, *args], self.c_env, input)

    def enqueue(self, side: str, args: list[bytes], message: bytes) -> Path:
        """Queue message with args through `side` ("ours" or "c"); return its file."""
        before = set(self.home.queued())
        run = self.ours if side == "ours" else self.c
        res = run("extsmail", *args, input=message)
        assert res.returncode == 0, res.stderr
        (new,) = set(self.home.queued()) - before
        return new

    def deliver(self, side: str) -> subprocess.CompletedProcess:
        run = self.ours if side == "ours" else self.c
        return run("extsmaild", "-m", "batch")

    def recorder_externals(self, name: str = "rec") -> Recorder:
        rec = self.home.recorder(name)
        self.home.write_externals(
            f'group {{ external {name} {{ sendmail = "{rec.path} -oem" }} }}\n')
        return rec


@pytest.fixture
def world(tmp_path: Path, installed) -> World:
    library = nss_wrapper_library()
    if library is None:
        missing("nss_wrapper is missing (Debian: libnss-wrapper): ./test.sh installs it")
    c_extsmail, c_extsmaild = c_program("extsmail"), c_program("extsmaild")
    root = tmp_path / "world"
    root.mkdir()
    home_dir = root / "home"
    (home_dir / ".extsmail").mkdir(parents=True)
    spool = home_dir / ".extsmail" / "spool"
    spool.mkdir(mode=0o700)
    os.chmod(spool, 0o700)
    conf = home_dir / ".extsmail" / "conf"
    conf.write_text('spool_dir = "~/.extsmail/spool"\n')
    home = ExtHome(home_dir, spool, conf, home_dir / ".extsmail" / "externals", installed, root)
    uid, gid = os.getuid(), os.getgid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = "roammail"
    passwd_file, group_file = root / "passwd", root / "group"
    passwd_file.write_text(f"{user}:x:{uid}:{gid}:roammail test:{home_dir}:/bin/sh\n")
    group_file.write_text(f"{user}:x:{gid}:\n")
    env = home.env()
    preload = env.get("LD_PRELOAD")
    env.update(LD_PRELOAD=f"{library}:{preload}" if preload else library,
               NSS_WRAPPER_PASSWD=str(passwd_file), NSS_WRAPPER_GROUP=str(group_file))
    return World(home, env, c_extsmail, c_extsmaild)


# ------------------------------------------------------------------ shapes


def message(subject: bytes = b"hello", body: bytes = b"Hello.\n", eol: bytes = b"\n") -> bytes:
    head = [b"From: me@example.org", b"To: rcpt@example.org", b"Subject: " + subject]
    return eol.join(head) + eol + eol + body.replace(b"\n", eol)


def one_megabyte_body() -> bytes:
    line = b"%07d the quick brown fox jumps over the lazy dog 0123456789\n"
    body = b"".join(line % i for i in range((1 << 20) // 50))
    return body[:(1 << 20) - 1] + b"\n"


@dataclass(frozen=True)
class Shape:
    id: str
    args: tuple[bytes, ...]
    message: bytes


SHAPES = [
    Shape("no-args", (), message()),
    Shape("recipient", (b"rcpt@example.org",), message()),
    Shape("spaces", (b"-oi", b"two words", b"  lead and trail  "), message(b"spaces")),
    Shape("empty-args", (b"", b"-oi", b""), message(b"empty")),
    Shape("dash-t", (b"-t",), message(b"dash t")),
    Shape("from-addr", (b"-f", b"me@example.org", b"-t"), message(b"from")),
    Shape("sendmail-flags", (b"-oem", b"-oi", b"--", b"a@example.org", b"b@example.org"),
          message(b"flags")),
    Shape("newline-in-arg", (b"line one\nline two", b"x\r"), message(b"newline")),
    Shape("crlf", (b"-t",), message(b"crlf", b"line 1\nline 2\n", eol=b"\r\n")),
    Shape("one-megabyte", (b"-t",), message(b"big", one_megabyte_body())),
    Shape("not-utf8", (b"-f", b"caf\xe9@example.org", b"\xff\xfe\x80"),
          message(b"caf\xe9 \xff", b"latin-1 \xe9\xe8, invalid \x80\xff, a NUL \x00 here\n")),
    Shape("no-final-newline", (b"-t",), message(b"cut", b"no newline at the end")),
]
SHAPE_IDS = [s.id for s in SHAPES]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_both_write_the_same_spool_file(world: World, shape: Shape) -> None:
    ours = world.enqueue("ours", list(shape.args), shape.message)
    ours_bytes, ours_mode = ours.read_bytes(), ours.stat().st_mode & 0o777
    ours.unlink()
    theirs = world.enqueue("c", list(shape.args), shape.message)
    assert theirs.name.startswith("XXXX")  # the C's mkstemp template
    assert ours_bytes == theirs.read_bytes()
    assert ours_mode == theirs.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(("writer", "deliverer"), [("ours", "c"), ("c", "ours")],
                         ids=["ours-enqueues-c-delivers", "c-enqueues-ours-delivers"])
def test_one_enqueues_the_other_delivers(world: World, shape: Shape, writer: str,
                                         deliverer: str) -> None:
    rec = world.recorder_externals()
    world.enqueue(writer, list(shape.args), shape.message)
    res = world.deliver(deliverer)
    assert res.returncode == 0, res.stderr
    assert world.home.queued() == []
    assert rec.received() == [([b"-oem", *shape.args], shape.message)]


def test_an_empty_message_is_queued_by_neither(world: World) -> None:
    assert world.ours("extsmail", "-t").returncode == 0
    assert world.c("extsmail", "-t").returncode == 0
    assert world.home.queued() == []


def test_a_message_without_header_end_stays_with_the_c_but_not_with_us(world: World) -> None:
    # The C extsmaild reads the header up to an empty line; at end of file it
    # says "Corrupted message" and keeps the message.  Its batch mode exits 1
    # then, but 0 as soon as another message was sent in the same run: the
    # known fault "exits 0 when some messages failed".
    rec = world.recorder_externals()
    header_only = b"Subject: only a header\n"
    world.enqueue("c", [b"-t"], header_only)
    res = world.deliver("c")
    assert res.returncode == 1
    assert b"Corrupted message" in res.stderr
    world.enqueue("c", [b"-t"], message(b"fine"))
    res = world.deliver("c")
    assert res.returncode == 0  # and yet a message remains
    assert len(world.home.queued()) == 1
    assert rec.received() == [([b"-oem", b"-t"], message(b"fine"))]
    res = world.deliver("ours")
    assert res.returncode == 0, res.stderr
    assert world.home.queued() == []
    assert rec.received()[1:] == [([b"-oem", b"-t"], header_only)]


# ------------------------------------------------------------ externals files

VALID_EXTERNALS = {
    "minimal": 'group { external a { sendmail = "/usr/sbin/sendmail -t" } }\n',
    "no-blanks": 'group{external a{sendmail="x"}}\n',
    "documented-example": """\
# comment line
group {
    match header "^To:.*@work\\\\.example"   # a comment after a rule
    external work {
        sendmail = "/usr/bin/ssh -q -C -l me shell.work.example /usr/sbin/sendmail -t"
    }
}
group {
    external home { sendmail = "ssh -q home /usr/sbin/sendmail -t" timeout = 1h }
    external backup { sendmail = "msmtp -a backup -t" }
}
""",
    "match-and-reject": """\
group {
    match header "^(From|Sender):.*[[:alnum:]]+@example\\\\.org$"
    reject header "^Subject: [^x]{2,5}$"
    reject header "^X-Private:"
    external a { timeout = 30s sendmail = "a" }
}
group { external b { sendmail = "b" } }
""",
    "every-time-unit": """\
group {
    external s { sendmail = "s" timeout = 45s }
    external m { sendmail = "m" timeout = 5m }
    external h { sendmail = "h" timeout = 2h }
    external d { sendmail = "d" timeout = 400d }
    external z { sendmail = "z" timeout = 05s }
}
""",
    "string-escapes": """\
group {
    match header "^Subject: \\"quoted\\"\\ttab"
    external a { sendmail = "sh -c 'cat >/dev/null'
        -x" }
}
""",
    "multi-line-string": 'group { external a { sendmail = "a\n  b\n  c" } }\n',
    "quoted-words":
        """group { external a { sendmail = "ssh -o 'ConnectTimeout 20' h \\"s -t\\"" } }\n""",
    "empty-regex": 'group { match header "" external a { sendmail = "a" } }\n',
    "identifiers": 'group { external _a9_B { sendmail = "a" } external Z { sendmail = "z" } }\n',
    "back-reference":
        'group { match header "^From: ([a-z]+) <\\\\1@" external a { sendmail = "a" } }\n',
}

# (text, the line ours names).
INVALID_EXTERNALS = {
    "unterminated-string": ('group {\n  external a {\n    sendmail = "/bin/cat\n  }\n}\n', 3),
    "missing-brace": ('group {\n  external a { sendmail = "x" }\n', 2),
    "bad-time": ('group {\n  external a {\n    sendmail = "x"\n    timeout = 5x\n  }\n}\n', 4),
    "upper-case-time-unit": ('group { external a { sendmail = "x" timeout = 5M } }\n', 1),
    "unknown-key": ('group {\n  external a { sendmail = "x" foo = "y" }\n}\n', 2),
    "wrongly-cased-key": ('group { external a { Sendmail = "x" } }\n', 1),
    "match-without-header": ('group {\n  match "x"\n  external a { sendmail = "x" }\n}\n', 2),
    "empty-file": ("", 0),
    "only-a-comment": ("# nothing here\n", 0),
    "group-without-external": ("group { }\n", 1),
    "external-without-settings": ("group { external a { } }\n", 1),
    "rule-after-external": ('group {\n  external a { sendmail = "x" }\n  match header "x"\n}\n',
                            3),
    "timeout-as-string": ('group { external a { sendmail = "x" timeout = "5m" } }\n', 1),
    "sendmail-as-time": ("group { external a { sendmail = 5m } }\n", 1),
    "two-sendmails": ('group { external a {\n sendmail = "x"\n sendmail = "y" } }\n', 3),
    "bad-regex": ('group {\n  match header "(oops"\n  external a { sendmail = "x" }\n}\n', 2),
    "bad-interval": ('group { match header "x{3,2}" external a { sendmail = "x" } }\n', 1),
    "bad-class": ('group { match header "[[:foo:]]" external a { sendmail = "x" } }\n', 1),
    "semicolon": ('group { external a { sendmail = "x"; } }\n', 1),
    "name-starts-with-digit": ('group { external 9a { sendmail = "x" } }\n', 1),
    "upper-case-keyword": ('GROUP { external a { sendmail = "x" } }\n', 1),
}

# Where we are stricter on purpose (see extsmail.externals(5), COMPATIBILITY):
# the C accepts each of these files, ours refuses it.
STRICTER_EXTERNALS = {
    # Which of the two would a message go to?  The C takes both.
    "duplicate-external-names": (
        'group { external a { sendmail = "x" } }\ngroup { external a { sendmail = "y" } }\n', 2),
    # The C would exec an empty argv at delivery time.
    "empty-sendmail": ('group { external a { sendmail = "" } }\n', 1),
    "blank-sendmail": ('group { external a { sendmail = "   " } }\n', 1),
    # The C accepts an external with only a timeout: no command at all.
    "no-sendmail": ("group { external a { timeout = 5m } }\n", 1),
    # The C keeps the last one silently.
    "two-timeouts": ('group { external a { sendmail = "x"\n timeout = 1d\n timeout = 2d } }\n', 3),
    # Ours splits sendmail as a shell would and refuses unpaired quotes; the
    # C's splitter takes a quote in the middle of a word literally.
    "unpaired-quote": ("""group { external a { sendmail = "it's" } }\n""", 1),
    "trailing-backslash": ('group { external a { sendmail = "a \\\\" } }\n', 1),
}

# Where ours is more lenient: the C refuses these, ours accepts them.
LENIENT_EXTERNALS = {
    # The C's lexer: "Time value '0s' out of range" (exit 1).  Ours: no timeout.
    "zero-timeout": 'group { external a { sendmail = "x" timeout = 0s } }\n',
    # The C reserves its keywords; the grammar has no need to.
    "keyword-as-name": 'group { external group { sendmail = "x" } }\n',
}


def write_file(world: World, name: str, text: str) -> Path:
    path = world.home.tmp / f"{name}.externals"
    path.write_text(text)
    return path


def c_verdict(world: World, path: Path) -> tuple[bool, subprocess.CompletedProcess]:
    """(valid?, result) of the C `extsmaild -t path`; see the module docstring."""
    res = world.c("extsmaild", "-t", str(path))
    valid = res.stdout.startswith(f"{path}: OK\n".encode())
    if not valid:
        assert res.returncode != 0 or b"Syntax error, wrong permissions" in res.stderr, res
    return valid, res


def our_verdict(world: World, path: Path) -> subprocess.CompletedProcess:
    return world.ours("extsmaild", "-t", str(path))


@pytest.mark.parametrize("name", sorted(VALID_EXTERNALS))
def test_valid_externals_are_accepted_by_both(world: World, name: str) -> None:
    path = write_file(world, name, VALID_EXTERNALS[name])
    ours = our_verdict(world, path)
    assert ours.returncode == 0, ours.stderr
    valid, theirs = c_verdict(world, path)
    assert valid, theirs.stderr
    # Both saw the same number of groups.
    ours_groups = [line for line in ours.stdout.splitlines() if line.startswith(b"group ")]
    # The C prints "FILE: OK", then "Group 1:", "Group 2:"... on lines of their own.
    assert theirs.stdout.count(b"\nGroup ") == len(ours_groups) > 0


def assert_ours_refuses(res: subprocess.CompletedProcess, path: Path, line: int) -> None:
    assert res.returncode == 78, res
    where = f"({path}:{line})" if line else f"({path})"
    assert res.stderr.decode().rstrip().endswith(where), res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr


@pytest.mark.parametrize("name", sorted(INVALID_EXTERNALS))
def test_invalid_externals_are_refused_by_both(world: World, name: str) -> None:
    text, line = INVALID_EXTERNALS[name]
    path = write_file(world, name, text)
    assert_ours_refuses(our_verdict(world, path), path, line)
    valid, theirs = c_verdict(world, path)
    assert not valid, theirs.stdout


@pytest.mark.parametrize("name", sorted(STRICTER_EXTERNALS))
def test_where_ours_is_stricter_the_c_accepts(world: World, name: str) -> None:
    text, line = STRICTER_EXTERNALS[name]
    path = write_file(world, name, text)
    assert_ours_refuses(our_verdict(world, path), path, line)
    valid, theirs = c_verdict(world, path)
    assert valid, theirs.stderr


@pytest.mark.parametrize("name", sorted(LENIENT_EXTERNALS))
def test_where_ours_is_lenient_the_c_refuses(world: World, name: str) -> None:
    path = write_file(world, name, LENIENT_EXTERNALS[name])
    ours = our_verdict(world, path)
    assert ours.returncode == 0, ours.stderr
    valid, _ = c_verdict(world, path)
    assert not valid


def test_a_duplicate_conf_key_is_refused_by_ours_only(world: World) -> None:
    # The C's conf parser takes a second spool_dir silently; ours names it.
    world.home.write_conf('spool_dir = "~/.extsmail/spool"\nspool_dir = "~/elsewhere"\n')
    ours = world.ours("extsmail", "-t", input=message())
    assert ours.returncode == 78
    assert f"({world.home.conf}:2)" in ours.stderr.decode()
    theirs = world.c("extsmail", "-t", input=message())
    assert theirs.returncode == 0, theirs.stderr


# ------------------------------------------------------------- a shared spool


def test_files_of_both_coexist_and_either_delivers_all(world: World) -> None:
    rec = world.recorder_externals()
    sent = []
    for deliverer in ("ours", "c"):
        first = message(b"by ours for " + deliverer.encode())
        second = message(b"by the C for " + deliverer.encode())
        a = world.enqueue("ours", [b"-f", b"me@example.org", b"one"], first)
        b = world.enqueue("c", [b"-t", b"two words"], second)
        assert a.name != b.name and len(world.home.queued()) == 2
        res = world.deliver(deliverer)
        assert res.returncode == 0, res.stderr
        assert world.home.queued() == []
        sent += [([b"-oem", b"-f", b"me@example.org", b"one"], first),
                 ([b"-oem", b"-t", b"two words"], second)]
        assert sorted(rec.received()) == sorted(sent)


def test_ours_skips_a_message_the_c_is_still_writing(world: World) -> None:
    rec = world.recorder_externals()
    body = b"".join(b"line %d of a message written slowly\n" % i for i in range(5000))
    slow = message(b"slow", body)
    half = len(slow) // 2
    other = world.enqueue("ours", [b"other"], message(b"other"))
    proc = subprocess.Popen([world.c_extsmail, "-oi", "slow@example.org"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=world.c_env,
                            start_new_session=True)
    try:
        proc.stdin.write(slow[:half])  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        # The C extsmail creates its file in msgs/ and flocks it before it
        # reads a byte of the message.
        partial = wait_until(
            lambda: [p for p in world.home.queued() if p != other and is_locked(p)],
            "the C extsmail to lock its spool file")[0]
        res = world.deliver("ours")
        assert res.returncode == 1, res.stderr  # a message remains
        assert rec.received() == [([b"-oem", b"other"], message(b"other"))]
        assert world.home.queued() == [partial]
        assert b"corrupt" not in res.stderr.lower()
        proc.stdin.write(slow[half:])  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(timeout=RUN_TIMEOUT) == 0, proc.stderr.read()  # type: ignore
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    res = world.deliver("ours")
    assert res.returncode == 0, res.stderr
    assert rec.received()[1:] == [([b"-oem", b"-oi", b"slow@example.org"], slow)]
    assert world.home.queued() == []


def test_the_c_never_sees_a_message_ours_is_still_writing(world: World) -> None:
    rec = world.recorder_externals()
    # More than one read of ours (64 KiB), so its temporary file exists.
    body = b"".join(b"line %d of a message written slowly\n" % i for i in range(10000))
    slow = message(b"slow", body)
    half = len(slow) // 2
    tmp = world.home.spool / "tmp"
    proc = subprocess.Popen([world.home.installed.tool("extsmail"), "-t"],  # type: ignore
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=world.home.env(), start_new_session=True)
    try:
        proc.stdin.write(slow[:half])  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        wait_until(lambda: tmp.is_dir() and any(tmp.iterdir()),
                   "ours to start writing in spool/tmp")
        assert world.home.queued() == []
        res = world.deliver("c")
        # The C's batch mode exits 1 on an empty queue (a known fault); it
        # found nothing to complain about either.
        assert (res.returncode, res.stderr) == (1, b"")
        assert rec.received() == []
        proc.stdin.write(slow[half:])  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(timeout=RUN_TIMEOUT) == 0, proc.stderr.read()  # type: ignore
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert list(tmp.iterdir()) == []
    res = world.deliver("c")
    assert res.returncode == 0, res.stderr
    assert rec.received() == [([b"-oem", b"-t"], slow)]


def test_one_extsmaild_per_spool_across_implementations(world: World) -> None:
    """Both take spool_dir/extsmaild.lock; neither runs while the other holds it."""
    go = world.home.tmp / "go"
    out = world.home.tmp / "delivered"
    # An external that waits for the test's word, so its extsmaild holds the lock.
    script = world.home.tmp / "bin" / "waiting"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.05; done\n'
                      f'cat > "{out}"\n')
    script.chmod(0o755)
    world.home.write_externals(f'group {{ external w {{ sendmail = "{script}" }} }}\n')
    lock = world.home.spool / "extsmaild.lock"
    for holder, other in (("c", "ours"), ("ours", "c")):
        go.unlink(missing_ok=True)
        world.enqueue("ours", [], message(b"held by " + holder.encode()))
        program = ([world.c_extsmaild] if holder == "c"
                   else [world.home.installed.tool("extsmaild")])  # type: ignore
        env = world.c_env if holder == "c" else world.home.env()
        proc = subprocess.Popen([*program, "-m", "batch"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            wait_until(lambda: is_locked(lock), f"the {holder} extsmaild to take its lock")
            res = world.deliver(other)
            assert res.returncode != 0
            if other == "ours":
                assert res.returncode == 75 and b"another extsmaild" in res.stderr
            else:
                assert b"Unable to obtain lockfile" in res.stderr
            go.touch()
            assert proc.wait(timeout=RUN_TIMEOUT) == 0, proc.stderr.read()  # type: ignore
        finally:
            go.touch()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stderr.close()  # type: ignore[union-attr]
        assert out.read_bytes() == message(b"held by " + holder.encode())
        # The C removes its lock file on exit; ours leaves it (unlinking a
        # lock file lets two daemons hold "it").
        assert lock.exists() == (holder == "ours")


def test_a_c_message_refused_for_good_is_set_aside_and_retried(world: World,
                                                                smtp_server) -> None:
    """A message the C extsmail queued, refused with 550 through real msmtp:
    ours sets it aside in failed/ with a report, which the C extsmaild never
    looks at; put back with --retry, the C extsmaild delivers it."""
    from extsmail.test_clients import externals_string, msmtp_command

    maildir = world.home.home / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    smtp_server.clear()
    world.home.write_externals(
        f"group {{ external smtp {{ sendmail = "
        f"{externals_string(msmtp_command(smtp_server.port))} }} }}\n")
    try:
        smtp_server.rcpt_response = "550 5.1.1 no such user"
        queued = world.enqueue("c", [b"-oi", b"-t"], message(b"refused"))
        res = world.deliver("ours")
        assert res.returncode == 0, res.stderr
        assert world.home.queued() == []
        assert [p.name for p in (world.home.spool / "failed").iterdir()] == [queued.name]
        assert len(list((maildir / "new").iterdir())) == 1

        smtp_server.clear()  # the server would take it now
        res = world.deliver("c")
        assert res.returncode == 1  # an empty queue, to the C extsmaild
        assert smtp_server.connections == 0

        res = world.ours("extsmaild", "--retry", queued.name)
        assert res.returncode == 0, res.stderr
        assert world.home.queued() == [queued]
        res = world.deliver("c")
        assert res.returncode == 0, res.stderr
        assert world.home.queued() == []
        (got,) = smtp_server.wait_for_messages(1, timeout=WAIT_TIMEOUT)
        assert b"Subject: refused" in got.content
    finally:
        smtp_server.clear()


def test_the_c_delivers_a_spool_that_keeps_delivery_states(world: World) -> None:
    # spool_dir/status/ is ours alone: the C extsmaild reads msgs/ and sends
    # what it finds there as before, and ours still answers --status after.
    rec = world.recorder_externals()
    rec.fail_with(75)
    world.enqueue("ours", [b"-oi"], b"Message-ID: <c-and-ours@example.org>\n" + message(b"one"))
    assert world.deliver("ours").returncode == 1
    assert (world.home.spool / "status").is_dir()
    assert world.ours("extsmaild", "--status", "<c-and-ours@example.org>").returncode == 1
    rec.succeed()
    res = world.deliver("c")
    assert res.returncode == 0, res.stderr
    assert world.home.queued() == []
    assert b"Subject: one" in [body for _, body in rec.received()][-1]
    # Sent by the C, which keeps no state: unknown to us now, not "queued".
    res = world.ours("extsmaild", "--status", "<c-and-ours@example.org>")
    assert res.returncode == 66, res.stdout
