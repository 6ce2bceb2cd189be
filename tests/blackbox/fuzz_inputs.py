"""Generated command lines and config files for every tool, the sandbox
they run in, and the runner that calls a tool's main() in a forked child.

A Case is one run of one tool: its argv, the files to lay out in a fresh
home first (config files, maildirs, a spool), its stdin and environment.
The strategies mix each tool's real options and config grammar with junk:
random tokens, braces, quotes, long names, odd bytes, numbers and times.

Safety: the tools run as whoever runs the tests (root in CI), so every path
a tool may write to, every command a config or argv may run, and every host
it may reach is drawn from short lists of harmless values: paths inside
the home or below /dev/null (which nothing can create; a few read-only
system files are read), commands such as true, cat, a fake ssh that never
leaves this machine and a scripted IMAP server, hosts that are IP literals
of the loopback interface.  Random text goes only where it names nothing
on the system: numbers, names, regexes, IMAP responses.  Every run has a
deadline; a run that outlives it is a hang.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

# Seconds a tool that should end by itself may take before it counts as hung.
ENDS_WITHIN = 30.0
# Seconds a daemon-like tool (a watcher, mswatch) runs before it gets SIGTERM.
LIVE_FOR = 0.3
# Seconds it then has to stop.
STOPS_WITHIN = 10.0

# tool -> (module, function): the in-process entry points.
ENTRY_POINTS = {
    "extsmail": ("roammail.extsmail.extsmail", "main"),
    "extsmaild": ("roammail.extsmail.extsmaild", "main"),
    "watch-maildirs": ("roammail.watch_maildirs.cli", "main"),
    "watch-imap": ("roammail.watch_imap.cli", "main"),
    "inputkill": ("roammail.guards.inputkill", "main"),
    "socketwatch": ("roammail.guards.socketwatch", "main"),
    "mswatch": ("roammail.mswatch.cli", "main"),
    "syncmail": ("roammail.syncmail.cli", "main"),
    "smtpdcheck": ("roammail.smtpdcheck.cli", "main"),
    "roammail-status": ("roammail.status.cli", "main"),
}
HOOKS = ("mail-on-failure", "persistent-ssh")


# ------------------------------------------------------------------ the world

FAKE_SSH = r"""#!/bin/sh
# ssh without a network: -G prints a configuration, -O finds no master, a
# host of letters, digits, dots and dashes runs the remote command here
# (in $HOME, under sh, as a remote login shell would); any other host, or
# no command, fails as ssh does.
mode=
while [ $# -gt 0 ]; do
    case $1 in
        --) shift; break ;;
        -G) mode=G; shift ;;
        -O) mode=O; shift; [ $# -gt 0 ] && shift ;;
        -[BbcDEeFIiJLlmopQRSWw]) shift; [ $# -gt 0 ] && shift ;;
        -*) shift ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "ssh: no host given" >&2; exit 255; }
host=$1; shift
case $mode in
    G) printf 'hostname %s\ncontrolmaster no\ncontrolpath none\n' "$host"; exit 0 ;;
    O) echo "Control socket connect($host): No such file or directory" >&2; exit 255 ;;
esac
case $host in
    ''|-*|*[!A-Za-z0-9.-]*|unreachable*)
        echo "ssh: Could not resolve hostname $host" >&2; exit 255 ;;
esac
[ $# -gt 0 ] || { echo "ssh: no login shell here" >&2; exit 255; }
cd "$HOME" || exit 255
exec /bin/sh -c "$*"
"""

FAKES = {
    "ssh": FAKE_SSH,
    "mail": "#!/bin/sh\ncat >/dev/null\n",
    "sendmail": "#!/bin/sh\ncat >/dev/null\n",
    "mbsync": '#!/bin/sh\ncase $1 in --version|-v|-V) echo "isync 1.4.4";; esac\n',
}


def make_fake_bin(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in FAKES.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    return directory


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GREETER = r"""
import os, random, socket, sys, threading, time
def orphaned():  # the test's end, or its death, closes our stdin
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
replies = [b"220 ready\r\n", b"554 go away\r\n", b"", b"\xff\xfe\x00junk\r\n",
           b"220-first\r\n220 last\r\n", b"220", b"2" * 5000 + b"\r\n", b"421 busy\r\n"]
def serve(conn):
    with conn:
        try:
            conn.sendall(random.choice(replies))
            time.sleep(random.choice([0, 0, 0.05, 0.3, 1.5]))
        except OSError:
            pass
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


class Greeter:
    """A local SMTP-ish listener that answers each connection with one of
    a few greetings (good, bad, none, garbage, long) and hangs up."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", GREETER], stdout=subprocess.PIPE,
                                     stdin=subprocess.PIPE)
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stdin.close()


@dataclass
class World:
    """What every case shares: the fakes, the installed tools, a listener
    (smtp_port) and a closed port, and where the homes are made (root)."""

    fake_bin: Path
    tool_bin: Path
    hooks_dir: Path
    smtp_port: int
    dead_port: int
    root: Path


@dataclass
class Case:
    tool: str
    argv: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # path below the home -> bytes (or None: a dir)
    stdin: bytes = b""
    env: dict = field(default_factory=dict)  # values with ~ are in the home
    runs_on: bool = False  # a watcher or daemon: SIGTERM after LIVE_FOR is normal

    def show(self) -> str:
        files = {k: (v if v is None or len(v) < 400 else v[:400] + b"...")
                 for k, v in self.files.items()}
        return f"{self.tool} {self.argv!r}\n  files={files!r}\n  env={self.env!r}"


# A maildir with two messages, laid out in homes that want one.
MESSAGE = b"From: a@example.org\nTo: b@example.org\nSubject: hi\n\nbody\n"


def base_files() -> dict:
    files = {"file": b"just a file\n", "adir": None}
    for box in ("Maildir", "Maildir/.Sub"):
        for sub in ("cur", "new", "tmp"):
            files[f"{box}/{sub}"] = None
    files["Maildir/new/1700000000.M1P1.host"] = MESSAGE
    files["Maildir/cur/1700000001.M2P2.host:2,S"] = MESSAGE
    return files


def expand(word: str, home: Path) -> str:
    """word as a shell gives it: a leading ~ is the home."""
    return str(home) + word[1:] if word == "~" or word.startswith("~/") else word


def lay_out(home: Path, case: Case) -> None:
    for rel, data in {**base_files(), **case.files}.items():
        path = home / rel
        if data is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for rel in (".extsmail/spool", ".extsmail/spool/msgs"):
        if (home / rel).is_dir():
            (home / rel).chmod(0o700)


def environment(world: World, home: Path, case: Case) -> dict:
    env = {
        "HOME": str(home),
        "USER": "fuzz", "LOGNAME": "fuzz",
        "PATH": f"{world.fake_bin}:{world.tool_bin}:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TMPDIR": str(home / "tmp"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "RES_OPTIONS": "timeout:1 attempts:1",
    }
    for key, value in case.env.items():
        env[key] = expand(value, home)
    return env


def new_home(root: Path) -> Path:
    home = Path(tempfile.mkdtemp(prefix="h", dir=root))
    (home / "tmp").mkdir()
    (home / "run").mkdir(mode=0o700)
    return home


def remove_home(home: Path) -> None:
    try:
        shutil.rmtree(home)
    except (OSError, RecursionError):  # a tree too deep for rmtree (~/d/d/d/...)
        subprocess.run(["rm", "-rf", "--", str(home)], check=False)


# ------------------------------------------------------------------- running

@dataclass
class Outcome:
    status: int | None  # exit status; None: killed by a signal (see signal)
    signal: int | None
    stdout: bytes
    stderr: bytes
    hung: bool
    termed: bool  # stopped by our SIGTERM after LIVE_FOR

    def problem(self) -> str | None:
        """Why this outcome is a bug, or None."""
        err = self.stderr.decode(errors="replace")
        if self.hung:
            return "hung (killed at the deadline)"
        if self.status == 70:
            return "exit 70 (internal error)"
        if "Traceback (most recent call last)" in err:
            return "a Python traceback on stderr"
        if "internal error" in err:
            return "an internal error reported"
        if self.signal is not None and not (self.termed and self.signal == signal.SIGTERM):
            return f"killed by signal {self.signal}"
        return None


def _child_body(tool: str, argv: list, env: dict, home: Path, stdin_path: str,
                out_path: str, err_path: str) -> None:
    """In the forked child: become the tool's process and call its main()."""
    status = 71
    try:
        os.setsid()
        _die_with_parent()
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1,
                       signal.SIGUSR2, signal.SIGALRM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the interpreter sets it
        for fd, path, flags in ((0, stdin_path, os.O_RDONLY),
                                (1, out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                     encoding="utf-8", errors="surrogateescape")
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                      encoding="utf-8", errors="surrogateescape")
        sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                      encoding="utf-8", errors="backslashreplace",
                                      line_buffering=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        logging.root.handlers.clear()  # pytest's capture handler is not the tool's
        os.environ.clear()
        os.environ.update(env)
        os.chdir(home)
        sys.argv = [tool, *argv]
        module, name = ENTRY_POINTS[tool]
        entry = getattr(importlib.import_module(module), name)
        result = entry(list(argv))
        status = 0 if result is None else int(result)
    except SystemExit as exc:
        code = exc.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:  # noqa: B036 - a bug of the tool: shown, then 70
        traceback.print_exc()
        status = 70
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: B036, S110 - the child is ending anyway
                pass
        os._exit(status & 0xFF)


def _die_with_parent() -> None:
    """SIGKILL this process when the test process dies (Linux), so that an
    interrupted test leaves no tool running."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait(pid: int, seconds: float) -> int | None:
    """The wait status of child pid if it ends within seconds, else None."""
    end = time.monotonic() + seconds
    pause = 0.001
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            return wait_status
        if time.monotonic() >= end:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def run_in_process(world: World, case: Case) -> Outcome:
    """Run case through the tool's main() in a forked child, in a fresh home."""
    home = new_home(world.root)
    try:
        lay_out(home, case)
        env = environment(world, home, case)
        stdin_path = str(home / ".stdin")
        Path(stdin_path).write_bytes(case.stdin)
        out_path, err_path = str(home / ".stdout"), str(home / ".stderr")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            argv = [expand(word, home) for word in case.argv]
            _child_body(case.tool, argv, env, home, stdin_path, out_path, err_path)
        return _finish(pid, case, lambda: (Path(out_path).read_bytes(),
                                           Path(err_path).read_bytes()))
    finally:
        remove_home(home)


def run_launcher(world: World, case: Case) -> Outcome:
    """Run case through the installed launcher (or hook), in a fresh home."""
    home = new_home(world.root)
    try:
        lay_out(home, case)
        env = environment(world, home, case)
        program = (world.hooks_dir / case.tool if case.tool in HOOKS
                   else world.tool_bin / case.tool)
        argv = [os.fsencode(str(program)), *(os.fsencode(expand(a, home)) for a in case.argv)]
        with open(home / ".stdout", "w+b") as out, open(home / ".stderr", "w+b") as err:
            proc = subprocess.Popen(argv, env=env, cwd=home, stdin=subprocess.PIPE,
                                    stdout=out, stderr=err, start_new_session=True)
            try:
                proc.stdin.write(case.stdin)
            except BrokenPipeError:
                pass
            proc.stdin.close()

            def outputs():
                out.seek(0)
                err.seek(0)
                return out.read(), err.read()
            return _finish(proc.pid, case, outputs, popen=proc)
    finally:
        remove_home(home)


def _finish(pid: int, case: Case, outputs, popen=None) -> Outcome:
    hung = termed = False
    try:
        wait_status = _wait(pid, LIVE_FOR if case.runs_on else ENDS_WITHIN)
        if wait_status is None and case.runs_on:
            termed = True
            os.kill(pid, signal.SIGTERM)
            wait_status = _wait(pid, STOPS_WITHIN)
        if wait_status is None:
            hung = True
            _kill_group(pid)
            wait_status = _wait(pid, 10)
    finally:
        _kill_group(pid)  # whatever it left running
    if popen is not None:
        popen.returncode = 0  # reaped above: Popen must not wait again
    status = sig = None
    if wait_status is not None:
        if os.WIFEXITED(wait_status):
            status = os.WEXITSTATUS(wait_status)
        elif os.WIFSIGNALED(wait_status):
            sig = os.WTERMSIG(wait_status)
    stdout, stderr = outputs()
    return Outcome(status, sig, stdout, stderr, hung, termed)


# ---------------------------------------------------------------- strategies

# Words with a history of breaking parsers: empties, dashes, numbers that
# are not quite numbers (superscript and Arabic-Indic digits are isdigit()),
# huge numbers, NaN and infinities, odd characters, long runs.
ODD_WORDS = ["", " ", "-", "--", "-x", "--nope", "--=", "=", "a b", "\t", "\n", "\r",
             "~", ".", "..", "0", "-1", "1", "00", "1e309", "-1e309", "nan", "inf", "-inf",
             "99999999999999999999999", "0x10", "1_000", "\u00b2", "\u0663", "\uff11",
             "3.5", "1s", "5m", "2h", "10d", "0s", "1x", "%s", "%n", "{", "}", '"', "'",
             "\\", "*", "?", "é", "\u202e", "\x7f", "\x01", "\udcff", "\udc80abc",
             "a" * 300, "-" * 300]
ODD = st.sampled_from(ODD_WORDS)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=40)
NON_UTF8 = st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b).map(os.fsdecode)
JUNK = st.one_of(ODD, ODD, TEXT, NON_UTF8)
NUMBERS = st.one_of(st.sampled_from(["0", "1", "2", "0.05", "0.5", "3", "60", "-1", "-0",
                                     "1e-9", "1e9", "nan", "inf", "1e309", "\u00b2", "\u0663",
                                     "99999999999999999999", "5s", "", " 1", "0x1"]),
                    st.integers(-5, 10**6).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr), JUNK)
# Paths a tool may read, write or create: inside the home, or below
# /dev/null (never creatable), or read-only system files.
READ_PATHS = ["~/file", "~/adir", "~/nosuch", "~/nosuch/deeper", "/dev/null", "/dev/null/x",
              "/etc/passwd", "/proc/self/status", "", "relative", "~", "~/" + "n" * 300,
              "~/" + "/".join(["d"] * 1200)]
WRITE_PATHS = ["~/out", "~/new/out", "~/adir", "~/file", "/dev/null/x", "", "relative-out",
               "~/" + "n" * 300, "~/" + "/".join(["d"] * 1200), "~/adir/x/y"]
SAFE_COMMANDS = ["true", "false", "cat", "echo", "sleep 0.1", "no-such-program",
                 "sh -c 'exit 3'", "/dev/null", ".", "''", "'unbalanced", 'a"b',
                 "ssh fakehost cat", "ssh -q unreachable true", "ssh -o ControlMaster=no h false",
                 "printf x", "printf '\\n'", "sh -c 'echo; echo INBOX; echo .Sub; sleep 0.2'"]


def quoted(text: str) -> str:
    """text as an extsmail-style double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


STRING_BODY = st.one_of(TEXT, ODD, st.sampled_from(SAFE_COMMANDS))
TIME_TOKEN = st.one_of(st.sampled_from(["0s", "1s", "30s", "5m", "2h", "1d", "0", "5",
                                        "99999999999999d", "1x", "5mx", "3600", "-1s"]),
                       st.integers(0, 10**15).map(lambda n: f"{n}s"))
ID_TOKEN = st.one_of(st.from_regex(r"[_a-zA-Z][_a-zA-Z0-9]{0,12}", fullmatch=True),
                     st.integers(1, 400).map(lambda n: "a" * n),
                     st.sampled_from(["source", "group", "external", "account", "match",
                                      "header", "reject", "inbox", "folder", "archive",
                                      "discard", "store", "watch"]))


def token_soup(keywords: list) -> st.SearchStrategy:
    """Tokens of the extsmail-style grammar, in any order."""
    token = st.one_of(st.sampled_from(keywords), ID_TOKEN, STRING_BODY.map(quoted),
                      TIME_TOKEN, st.sampled_from(["{", "}", "=", "# a comment\n", "\n",
                                                  '"unterminated', "\\", "\r\n", "\t", "==",
                                                  "{}", "\"\"", "'", ";", "\u00e9", "\x0b"]))
    return st.lists(token, max_size=30).map(" ".join)


def as_bytes(text_strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Config text as bytes, sometimes with odd bytes (invalid UTF-8, NUL,
    CR) dropped in."""
    @st.composite
    def build(draw):
        data = draw(text_strategy).encode("utf-8", "surrogateescape")
        for _ in range(draw(st.integers(0, 2))):
            at = draw(st.integers(0, len(data)))
            odd = draw(st.sampled_from([b"\xff", b"\x00", b"\r", b"\xc3", b"\xe2\x80",
                                        b"\n\n", b"\"", b"{", b"}", b"\\"]))
            data = data[:at] + odd + data[at:]
        return data
    return build()


@st.composite
def mutated(draw, text_strategy):
    """A mostly valid text with a few random edits."""
    text = draw(text_strategy)
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["cut", "insert", "double"]))
        if kind == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif kind == "insert":
            text = text[:at] + draw(st.one_of(ODD, TEXT)) + text[at:]
        else:
            end = min(len(text), at + draw(st.integers(1, 40)))
            text = text[:end] + text[at:end] + text[end:]
    return text


def config_file(structured: st.SearchStrategy, keywords: list) -> st.SearchStrategy:
    """A config file's bytes: mostly as the grammar has it (with drawn
    values), sometimes edited at random, sometimes a soup of its tokens."""
    text = st.one_of(structured, structured, structured, mutated(structured),
                     token_soup(keywords))
    plain = text.map(lambda t: t.encode("utf-8", "surrogateescape"))
    return st.one_of(plain, plain, plain, plain, as_bytes(text))


def rarely(draw, n: int) -> bool:
    """True once in n draws (False is the simple case hypothesis tries first)."""
    return draw(st.sampled_from([False] * (n - 1) + [True]))


def _option_words(draw, names: str, values) -> list:
    name = draw(st.sampled_from(names.split("|")))  # one of its spellings
    if values is None:
        return [name]
    if name.startswith("--") and draw(st.integers(0, 3)) == 0:
        return [f"{name}={draw(values)}"]
    return [name, draw(values)]


@st.composite
def argv_of(draw, options: dict, forms: st.SearchStrategy | None = None,
            operands: st.SearchStrategy | None = None, max_words=6,
            common: frozenset = frozenset()):
    """A command line: mostly a plausible one (one of the tool's forms, its
    words drawn, then a few of its options, each once, with drawn values,
    before or after it; or an option that stands alone, such as --help);
    sometimes real options, operands and junk words in any number and
    order.  `common`: options of the alone kind that combine (-v for
    verbose)."""
    names = sorted(options)
    if not rarely(draw, 5):
        words = list(draw(forms)) if forms is not None else []
        alone = {n for n in names if set(n.split("|")) & ({"-h", "-V", "-v"} - common)}
        chosen = draw(st.lists(st.sampled_from([n for n in names if n not in alone and
                                                not set(n.split("|")) & set(words)]),
                               unique=True, max_size=3))
        for name in chosen:  # before or after the form's words, which stay together
            at = draw(st.sampled_from([0, len(words)]))
            words[at:at] = _option_words(draw, name, options[name])
        if rarely(draw, 10):
            words = _option_words(draw, draw(st.sampled_from(sorted(alone) or ["--help"])), None)
        if rarely(draw, 8):
            words.insert(draw(st.integers(0, len(words))), draw(JUNK))
        return words
    words = []
    for _ in range(draw(st.integers(0, max_words))):
        kind = draw(st.sampled_from(["option", "option", "option", "operand", "junk"]))
        if kind == "option":
            name = draw(st.sampled_from(names))
            words += _option_words(draw, name, options[name])
        elif kind == "operand" and operands is not None:
            words.append(draw(operands))
        else:
            words.append(draw(JUNK))
    return words


# --- extsmail, extsmaild

def mostly(good, bad) -> st.SearchStrategy:
    """good (a strategy, or a list to pick from) three times in four, else bad."""
    if isinstance(good, list):
        good = st.sampled_from(good)
    if isinstance(bad, list):
        bad = st.sampled_from(bad)
    return st.one_of(good, good, good, bad)


# Junk for inside config files: UTF-8 (odd bytes are as_bytes's job).
CONFIG_JUNK = st.one_of(ODD.filter(lambda w: not any("\udc80" <= c <= "\udcff" for c in w)),
                        TEXT)
GOOD_COMMANDS = ["true", "false", "cat", "echo", "sleep 0.1", "no-such-program",
                 "sh -c 'exit 3'", "ssh fakehost cat", "ssh -q unreachable true",
                 "ssh -o ControlMaster=no fakehost false", "printf x", "cat /dev/null",
                 "/bin/cat"]
ODD_COMMANDS = ["", "   ", "/dev/null", ".", "''", "'unbalanced", 'a"b', "\\", "~/file",
                "sh -c"]
SPOOL_DIRS = ["~/nospool", "~/file", "", "/dev/null", "relative", "~", "~/adir",
              "~/" + "s" * 300, "/dev/null/x", "~/.extsmail", "~/.extsmail/spool/"]
GOOD_REGEXES = ["^To:", "^From:.*@example\\\\.org", "^Subject: hi", ".", "^x-none:",
                "[[:alpha:]]+", "^(to|cc):"]
REGEXES = st.one_of(TEXT, st.sampled_from(["(", "[", "*", "a{1,99999}", "(a*)*$", "\\\\1",
                                           "x{,}", "[z-a]", "\\\\", "^$", "(?i)x", "a**",
                                           "[[:nope:]]", "(((((((((((a)))))))))))",
                                           "\u00e9+", ".{256}", "a{2,1}", "[a", "\\\\(",
                                           "a|*", "()", "^*", "$^", "a{99999999999}"]))
NOTIFY_COMMANDS = ["true", "false", "echo ${TIME}", "echo ${SUCCESSES}", "echo ${SUCCESSES}${",
                   "sh -c 'exit 1'", "cat", "${TIME}", "echo ${TIME", "sleep 0.1"]


def shuffled(draw, items: list) -> list:
    return list(draw(st.permutations(items))) if items else []


class Faults:
    """Where one generated config file goes wrong: nowhere in about half
    the files (so that runs get past the parser), else at some of the
    places that could."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.on = draw(st.booleans())

    def pick(self, good, bad):
        """A good value, or (in a faulty file, now and then) a bad one."""
        choice = bad if self.on and rarely(self.draw, 3) else good
        return self.draw(st.sampled_from(choice) if isinstance(choice, list) else choice)

    def lines(self, lines: list, junk: st.SearchStrategy) -> list:
        """lines, in a faulty file perhaps with a line of junk added or one dropped."""
        if not self.on:
            return lines
        draw = self.draw
        if draw(st.booleans()):
            lines.insert(draw(st.integers(0, len(lines))), draw(junk))
        if lines and draw(st.integers(0, 3)) == 0:
            del lines[draw(st.integers(0, len(lines) - 1))]
        return lines


@st.composite
def extsmail_conf_text(draw):
    f = Faults(draw)
    settings = {"spool_dir": quoted(f.pick(st.just("~/.extsmail/spool"),
                                                st.sampled_from(SPOOL_DIRS)))}
    if draw(st.booleans()):
        settings["notify_failure_interval"] = f.pick(
            ["1s", "0s", "30m", "2h"], st.one_of(TIME_TOKEN, CONFIG_JUNK.map(quoted)))
    for key in ("notify_failure_cmd", "notify_success_cmd"):
        if draw(st.booleans()):
            settings[key] = quoted(draw(st.sampled_from(NOTIFY_COMMANDS)))
    lines = shuffled(draw, [f"{k} = {v}" for k, v in settings.items()])
    junk = st.one_of(st.sampled_from(['spool_dir = "~/x"', "spool_dir", "= 1s", '"x"',
                                      "notify_failure_interval = 5"]),
                     st.builds(lambda k, v: f"{k} = {quoted(v)}", ID_TOKEN, CONFIG_JUNK))
    lines = f.lines(lines, junk)
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n", "\n# end"]))


@st.composite
def externals_text(draw):
    f = Faults(draw)
    groups = []
    serial = 0
    for _ in range(draw(st.integers(1, 3))):
        items = []
        for _ in range(draw(st.integers(0, 2))):
            verb = draw(st.sampled_from(["match", "match", "reject"]))
            items.append(f"{verb} header {quoted(f.pick(GOOD_REGEXES, REGEXES))}")
        for _ in range(draw(st.integers(1, 3))):
            serial += 1
            name = f.pick(st.just(f"e{serial}"), ID_TOKEN)
            settings = [f"sendmail = {quoted(f.pick(GOOD_COMMANDS, ODD_COMMANDS))}"]
            if draw(st.booleans()):
                settings.append(f"timeout = {f.pick(['1s', '5m', '0s'], TIME_TOKEN)}")
            settings = f.lines(settings, st.one_of(
                st.sampled_from(['sendmail = "true"', "timeout = 1", "sendmail", "}"]),
                st.builds(lambda k, v: f"{k} = {quoted(v)}", ID_TOKEN, CONFIG_JUNK)))
            items.append(f"external {name} {{\n    " + "\n    ".join(settings) + "\n  }")
        groups.append("group {\n  " + "\n  ".join(items) + "\n}")
    return "\n".join(groups) + "\n"


QUEUED_ARGS = st.lists(st.sampled_from([b"-t", b"-oi", b"-f", b"me@example.org", b"", b"a b",
                                         b"\xc3\xa9", b"\n", b"--"]), max_size=4)


@st.composite
def spool_files(draw) -> dict:
    """msgs/ files: well-formed ones (the v1 header, then the message) and
    damaged ones."""
    from roammail.extsmail.spool import encode_header

    files = {}
    for i in range(draw(st.integers(0, 3))):
        data = encode_header(draw(QUEUED_ARGS)) + draw(st.sampled_from(
            [MESSAGE, b"To: x@example.org\n\nhi\n", b"\n", b"no header at all"]))
        if draw(st.integers(0, 3)) == 0:
            cut = draw(st.integers(0, len(data)))
            data = data[:cut] + draw(st.binary(max_size=20))
        files[f".extsmail/spool/msgs/m{i}"] = data
    if draw(st.integers(0, 5)) == 0:  # a directory where a message should be
        files[".extsmail/spool/msgs/m9"] = None
    return files


@st.composite
def extsmail_case(draw):
    files = {".extsmail/spool": None,
             ".extsmail/conf": draw(config_file(extsmail_conf_text(), ["spool_dir"]))}
    words = draw(st.lists(st.one_of(JUNK, st.sampled_from(["-t", "-oi", "-f", "--", "-bs",
                                                           "--help", "--version"])),
                          max_size=6))
    stdin = draw(st.one_of(st.just(MESSAGE), st.binary(max_size=300), st.just(b"")))
    return Case("extsmail", words, files, stdin)


EXTSMAILD_OPTIONS = {
    "-c|--conf": st.sampled_from(["~/.extsmail/conf", "~/conf2"] + READ_PATHS),
    "-e|--externals": st.sampled_from(["~/.extsmail/externals", "~/ext2"] + READ_PATHS),
    "-m|--mode": st.sampled_from(["batch", "batch", "daemon", "", "Batch", "batch "]),
    "-f|--foreground": None, "-t|--test": None, "--flush": None,
    "--list": None, "--show": st.one_of(JUNK, st.sampled_from(["m0", "m1", "0", "-1", "m"])),
    "--delete": st.one_of(JUNK, st.sampled_from(["m0", "m1", "0", "all", "*"])),
    "-j|--jobs": mostly(["1", "2", "4", "64"], NUMBERS),
    "--stall-timeout": mostly(["1", "0.5", "60"], NUMBERS),
    "-v|--version": None, "-h|--help": None,
}


@st.composite
def extsmaild_case(draw):
    files = {".extsmail/spool": None, ".extsmail/spool/msgs": None}
    files.update(draw(spool_files()))
    files[".extsmail/conf"] = draw(config_file(extsmail_conf_text(), ["spool_dir"]))
    files[".extsmail/externals"] = draw(config_file(externals_text(),
                                                    ["group", "external", "sendmail"]))
    files["conf2"] = draw(config_file(extsmail_conf_text(), ["spool_dir"]))
    files["ext2"] = draw(config_file(externals_text(), ["group", "external"]))
    ids = st.one_of(st.sampled_from(["m0", "m1", "m2", "m9"]), JUNK)
    forms = st.one_of(st.just([]), st.just(["-t"]), st.just(["-t", "~/ext2"]),
                      st.just(["--list"]), st.just(["--flush"]),
                      ids.map(lambda i: ["--show", i]),
                      st.lists(ids, min_size=1, max_size=3).map(lambda i: ["--delete", *i]),
                      st.sampled_from([["-m", "batch"], ["-m", "daemon", "-f"],
                                       ["--mode=daemon", "--foreground"]]))
    common = {k: v for k, v in EXTSMAILD_OPTIONS.items()
              if k in ("-c|--conf", "-e|--externals", "-j|--jobs", "--stall-timeout")}
    argv = draw(argv_of(EXTSMAILD_OPTIONS, operands=st.sampled_from(
        ["~/ext2", "x", "m1", "m0"]))) if rarely(draw, 5) else draw(argv_of(common, forms))
    daemon = "daemon" in argv or "--mode=daemon" in argv
    if daemon and not {"-f", "--foreground"} & set(argv):
        argv.append("-f")  # never detach from the test
    return Case("extsmaild", argv, files, runs_on=daemon)


# --- syncmail

SYNC_HOSTS = ["unreachable", "-oProxyCommand=x", "a b", "h\u00e9", "h;x", "h" * 300, ""]
SYNC_REMOTES = ["~/Maildir", "~/", "nosuch", "a b", "'", "\"", "$(false)", "`false`",
                "Maildir/", "./Maildir", "-rf", "--", "*", "Maildir\n", "\u00e9", "x" * 300,
                "\\", "~/file", "~/adir", "Maildir/.Sub", ""]
SYNC_LOCALS = ["~/Maildir", "/dev/null", "~/file", "relative", "~/adir", "/dev/null/x",
               "~/" + "l" * 300, "~/Local/" + "/".join(["d"] * 1200), "", "~/Local/.x"]
GOOD_ACTIONS = ["inbox", "discard", "folder \"Sub\"", "folder \"INBOX\"", "archive \"~/arch\"",
                "folder \"New.Deep\""]
BAD_ACTIONS = st.one_of(st.sampled_from(["folder \"\"", "folder \"a/b\"", "folder \".x\"",
                                         "folder \"a..b\"", "archive \"/dev/null\"",
                                         "archive \"\"", "archive \"~/file\"", "folder",
                                         "archive", "nope", "folder \"" + "f" * 300 + "\"",
                                         "archive \"~/adir\""]),
                        CONFIG_JUNK.map(lambda t: f"folder {quoted(t)}"))
SOURCE_NAMES = st.one_of(st.sampled_from(["a", "laptop", "oneshot", "x" * 2000]), ID_TOKEN,
                         st.integers(240, 300).map(lambda n: "a" * n))


@st.composite
def syncmail_conf_text(draw):
    f = Faults(draw)
    sources = []
    for _ in range(draw(st.integers(1, 3))):
        settings = {"host": quoted(f.pick(st.just("fakehost"), SYNC_HOSTS)),
                    "remote": quoted(f.pick(st.just("Maildir"), SYNC_REMOTES)),
                    "local": quoted(f.pick(st.just("~/Local"), SYNC_LOCALS))}
        items = shuffled(draw, [f"{key} = {value}" for key, value in settings.items()])
        for _ in range(draw(st.integers(0, 3))):
            regex = f.pick(GOOD_REGEXES, REGEXES)
            items.append(f"match header {quoted(regex)} {f.pick(GOOD_ACTIONS, BAD_ACTIONS)}")
        items = f.lines(items, st.one_of(
            st.sampled_from(['host = "h"', "host", "match", "match header", "=", "{",
                             'local = "~/Other"', 'match header "x" inbox inbox']),
            st.builds(lambda k, v: f"{k} = {quoted(v)}", ID_TOKEN, CONFIG_JUNK)))
        sources.append(f"source {draw(SOURCE_NAMES)} {{\n  " + "\n  ".join(items) + "\n}")
    return "\n".join(sources) + "\n"


SYNCMAIL_OPTIONS = {
    "-c|--config": st.sampled_from(["~/s.conf"] + READ_PATHS),
    "-n|--dry-run": None, "-v|--verbose": None, "-q|--quiet": None,
    "--hooks": st.sampled_from(["~/hooks", "~/adir", "~/file", "/dev/null/x", ""]),
    "-V|--version": None, "-h|--help": None,
}
SYNCMAIL_OPERANDS = st.one_of(SOURCE_NAMES, st.sampled_from(
    ["fakehost:Maildir", "~/Local", "fakehost:", ":Maildir", "unreachable:x", "-x:y",
     "fakehost:~/Maildir", "a:b:c"]), JUNK)
HOOK_SCRIPT = b"#!/bin/sh\necho \"hook $*\"\nexit ${HOOK_STATUS:-0}\n"


@st.composite
def syncmail_case(draw):
    conf = draw(config_file(syncmail_conf_text(), ["source", "host", "remote", "local"]))
    files = {".config/roammail/syncmail.conf": conf, "s.conf": conf,
             "hooks/pre-pull.d/a": HOOK_SCRIPT, "hooks/post-pull.d/b": HOOK_SCRIPT}
    for i in range(draw(st.integers(0, 3))):  # more mail on the "server"
        files[f"Maildir/new/17000000{i:02d}.M{i}.fuzz"] = draw(st.sampled_from(
            [MESSAGE, b"", b"Subject: x\n\n" + b"y" * 5000, b"\xff\xfe"]))
    forms = st.one_of(st.just([]), st.lists(SOURCE_NAMES, max_size=2),
                      st.sampled_from([["fakehost:Maildir", "~/Local"],
                                       ["fakehost:~/Maildir", "~/Maildir/.Sub"],
                                       ["fakehost:nosuch", "~/Local"]]))
    argv = draw(argv_of(SYNCMAIL_OPTIONS, forms, SYNCMAIL_OPERANDS, common=frozenset({"-v"})))
    env = {}
    if draw(st.integers(0, 3)) == 0:
        env["ROAMMAIL_SYNCMAIL_BATCH"] = draw(mostly(["1", "2", "1000"], NUMBERS))
    if draw(st.integers(0, 3)) == 0:
        env["XDG_STATE_HOME"] = draw(st.sampled_from(["~/file", "", "relative", "~/adir",
                                                      "/dev/null/x", "~/" + "s" * 300]))
    return Case("syncmail", argv, files, env=env)


# --- mswatch

DURATIONS = (["0", "1", "0.5", "30s", "5m", "1h", "2d", "0.01"], st.one_of(NUMBERS, TIME_TOKEN))
MSWATCH_WATCHERS = ["echo", "cat", "true", "false", "no-such-program", "printf x",
                    "sh -c 'echo; echo INBOX; echo a.b; sleep 0.1; echo INBOX'",
                    "sh -c 'echo; sleep 5'", "sh -c 'echo; printf \"\\377\\n\\n\"'",
                    "watch-maildirs -m ~/Maildir", "inputkill cat"]
MSWATCH_SYNCS = ["true", "false", "mbsync -q", "echo", "sh -c 'exit 2'", "no-such-program",
                 "sleep 0.1", "socketwatch -t 1 true"]
MAILBOXES = (["INBOX", "a.b", "Sub", "lists/x"],
             CONFIG_JUNK.filter(lambda w: "\n" not in w and "\r" not in w))


def mswatch_word(text: str) -> str:
    """text as one mswatchrc token: bare when it can be, else in quotes."""
    if text and not any(c in text for c in ' \t"#{}\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def mswatchrc_text(draw):
    f = Faults(draw)
    lines = []
    for default in ("local", "server"):
        braces = f.pick(["{ watch %s }", "{\nwatch %s\n}", "\n{\n  watch %s\n}",
                              "{watch %s}"],
                             ["{ watch %s", "{ %s }", "{ watch }", "{ watch %s } }",
                              "watch %s", "{ watch %s }}"])
        name = f.pick(st.just(default), st.sampled_from(["a", "", "{", "local"]))
        command = draw(st.sampled_from(MSWATCH_WATCHERS))
        lines.append(f"store {mswatch_word(name)} " + braces.replace("%s", command))
    lines.append("sync " + draw(st.sampled_from(MSWATCH_SYNCS)))
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(["base_delay", "inter_delay", "max_delay", "poll_period",
                                    "ignore", "mailbox_prefix"]))
        if key == "inter_delay":
            words = [f.pick(*DURATIONS)] + [f.pick(*MAILBOXES)
                                            for _ in range(draw(st.integers(0, 2)))]
        elif key.endswith(("delay", "period")):
            words = [f.pick(*DURATIONS)]
        elif key == "ignore":
            words = [f.pick(*MAILBOXES) for _ in range(draw(st.integers(1, 3)))]
        else:
            words = draw(st.sampled_from([["srv", ":"], ["srv"], ["", ""], ["a", "/"]]))
        lines.append(" ".join([key] + [mswatch_word(w) for w in words]))
    lines = f.lines(shuffled(draw, lines), st.one_of(
        st.sampled_from(["sync", "store", "base_delay", "ignore", "{", "}", '"', "store x {",
                         "max_delay 1 2", "mailbox_prefix a b c"]),
        st.builds(lambda k, v: f"{k} {v}", ID_TOKEN, CONFIG_JUNK)))
    return "\n".join(lines) + "\n"


MSWATCH_OPTIONS = {
    "-c|--config": st.sampled_from(["~/.mswatchrc"] + READ_PATHS),
    "-d|--dry": None, "-q|--quiet": None, "-f|--foreground": None,
    "--pid-file": st.sampled_from(WRITE_PATHS), "--hooks": st.sampled_from(READ_PATHS),
    "-l|--log-file": st.sampled_from(WRITE_PATHS),
    "--sync-now": None, "--network-changed": None, "-V|--version": None,
    "-h|--help|-?": None,
}


@st.composite
def mswatch_case(draw):
    files = {".mswatchrc": draw(config_file(mswatchrc_text(), ["store", "watch", "sync"]))}
    forms = st.sampled_from([[], [], ["-f"], ["-d"], ["--sync-now"], ["--network-changed"],
                              ["--daemon"]])
    argv = draw(argv_of(MSWATCH_OPTIONS, forms))
    if "--daemon" in argv:  # never detach from the test
        argv = ["-f" if word == "--daemon" else word for word in argv]
    return Case("mswatch", argv, files, runs_on=True)


# --- watch-maildirs

WATCH_MAILDIRS_OPTIONS = {
    "-m|--maildir": st.sampled_from(["~/Maildir", "~/Maildir/.Sub"] + READ_PATHS),
    "--exit-on-new-folder": None,
    "--delimiter": mostly(["/", ".", ":"], st.one_of(st.sampled_from(["", "//", "\n"]), JUNK)),
    "-V|--version": None, "-h|--help|-?": None,
}


@st.composite
def watch_maildirs_case(draw):
    forms = st.sampled_from([[], ["-m", "~/Maildir"], ["--exit-on-new-folder"]])
    argv = draw(argv_of(WATCH_MAILDIRS_OPTIONS, forms))
    env = {}
    if draw(st.booleans()):
        env["MAILDIR"] = draw(st.sampled_from(["~/Maildir", "~/nosuch", "", "~/file"]))
    return Case("watch-maildirs", argv, {}, env=env, runs_on=True)


# --- watch-imap (and ~/.mbsyncrc)

IMAP_HOSTS = ["::1", "[::1]", "127.0.0.2", "imaps:127.0.0.1", ""]
IMAP_TUNNELS = ["cat", "true", "printf '* PREAUTH hi\\r\\n'; sleep 1",
                "printf '* OK [CAPABILITY IMAP4rev1 IDLE] hi\\r\\n'; sleep 1",
                "printf '* BYE no\\r\\n'", "printf 'garbage\\r\\n\\377\\r\\n'",
                "printf '* PREAUTH [CAPABILITY IMAP4rev1 NOTIFY] x\\r\\n'; cat",
                "printf '* PREAUTH [CAPABILITY IMAP4rev1] x\\r\\n* 1 EXISTS\\r\\n'; sleep 1",
                "printf '* OK hi\\r\\n'; sleep 0.1; printf 'a1 OK done\\r\\n'; sleep 1"]


# A scripted IMAP server, run as a tunnel: a PREAUTH greeting with the
# capabilities of its first argument, then, before the tagged OK of each
# command, the untagged lines of the other arguments.
IMAP_SERVER = rb"""
import sys
capabilities, extra = sys.argv[1].encode(), [a.encode() for a in sys.argv[2:]]
out = sys.stdout.buffer
out.write(b"* PREAUTH [CAPABILITY IMAP4rev1 " + capabilities + b"] hi\r\n")
out.flush()
for line in sys.stdin.buffer:
    tag = line.split(b" ", 1)[0]
    for response in extra:
        out.write(response + b"\r\n")
    if b"IDLE" in line.upper():
        out.write(b"+ idling\r\n")
    else:
        out.write(tag + b" OK done\r\n")
    out.flush()
"""
IMAP_LINES = st.one_of(st.sampled_from([
    '* NAMESPACE (("" "/")) NIL NIL', '* NAMESPACE (("INBOX." ".")) NIL NIL',
    '* NAMESPACE NIL NIL NIL', '* NAMESPACE (("" "ab")) NIL NIL', '* LIST () "/" INBOX',
    '* LIST () "/" Sub', '* LIST () "." INBOX.a', '* LIST () NIL x', '* LIST () "/" {5}',
    '* LIST () "/" {99999999999999}', '* LIST () "/" "&Jjo"', '* LIST () "/" "&AGE"',
    '* LIST (\\Noselect) "/" ""', '* LIST () "/" "a//b"', '* LIST () "/" "a\\"b"',
    '* STATUS INBOX (MESSAGES 1 UIDNEXT 2 UIDVALIDITY 3)', '* STATUS INBOX (MESSAGES x)',
    '* STATUS "Sub" (MESSAGES 99999999999999999999 UIDNEXT 1)', '* 4294967296 EXISTS',
    '* 1 EXISTS', '* 0 EXPUNGE', '* BYE bye', '* OK [ALERT] x', '* CAPABILITY', ')', '(',
    '* ', '+', 'x OK', '* NO [', '* LIST () "/" ' + "a" * 3000, "* \xff", "abcde"]),
    CONFIG_JUNK.filter(lambda t: "\n" not in t and "\r" not in t))


@st.composite
def imap_server_tunnel(draw) -> str:
    import shlex

    capabilities = draw(st.sampled_from(["IDLE NOTIFY", "IDLE", "", "NOTIFY", "LITERAL+ IDLE"]))
    lines = draw(st.lists(IMAP_LINES, max_size=4))
    return " ".join([shlex.quote(sys.executable), "imap-server.py", shlex.quote(capabilities),
                     *(shlex.quote(line) for line in lines)])


def imap_value(f: Faults, key: str, port: int, dead: int) -> str:
    """A value for watch-imap.conf key (quoted, or a bare number or time)."""
    draw = f.draw
    if key == "host":
        return quoted(f.pick(st.just("127.0.0.1"), IMAP_HOSTS))
    if key == "port":
        return f.pick([str(port), str(dead)],
                           ["0", "65536", "99999999999999", "\"143\"", "1s"])
    if key == "tunnel":
        return quoted(draw(st.one_of(imap_server_tunnel(), st.sampled_from(IMAP_TUNNELS))))
    if key in ("user_cmd", "pass_cmd"):
        return quoted(draw(st.sampled_from(["echo me", "true", "false", "printf ''",
                                            "sh -c 'exit 1'", "echo"])))
    if key in ("timeout", "keepalive", "poll"):
        return f.pick(["1s", "5s", "2m", "0s"], TIME_TOKEN)
    if key == "max_idle":
        return f.pick(["1", "4"], ["0", "64", "65", "999999999999", '"4"'])
    if key == "ca_file":
        return quoted(draw(st.sampled_from(READ_PATHS)))
    choices = {"tls": (["imaps", "starttls", "none"], ["IMAPS", "", "tls"]),
               "mode": (["auto", "notify", "idle"], ["x", ""]),
               "names": (["auto", "utf7", "utf8"], ["x"]),
               "system_certificates": (["yes", "no"], ["maybe"]),
               "use_namespace": (["yes", "no"], ["1"]),
               "auth": (["PLAIN", "LOGIN", "*"], ["CRAM-MD5", "PLAIN LOGIN", ""]),
               "delimiter": (["/", "."], ["", "ab"]),
               "idle": (["INBOX", "Sub"], ["", "a/b", "&Jjo-"]),
               "mbsync": (["office", "store", "chan"], ["nosuch", ""]),
               "path": (["", "INBOX."], ["x/", "/"]), "user": (["me"], [""]),
               "pass": (["pw"], [""])}
    good, bad = choices.get(key, ([""], [""]))
    return quoted(f.pick(good, st.one_of(st.sampled_from(bad), CONFIG_JUNK)))


IMAP_KEYS = ["host", "port", "tls", "tunnel", "user", "user_cmd", "pass", "pass_cmd", "ca_file",
             "system_certificates", "auth", "timeout", "keepalive", "mode", "idle", "max_idle",
             "poll", "path", "use_namespace", "delimiter", "names", "mbsync"]


@st.composite
def watch_imap_conf_text(draw, port: int, dead: int):
    f = Faults(draw)
    accounts = []
    for name in draw(st.lists(mostly(["office", "store", "chan"], ID_TOKEN), max_size=2)):
        settings = {}
        if draw(st.booleans()):
            settings["tunnel"] = imap_value(f, "tunnel", port, dead)
        else:
            for key in ("host", "port", "tls", "user", "pass", "timeout"):
                settings[key] = imap_value(f, key, port, dead)
        for key in draw(st.lists(st.sampled_from(IMAP_KEYS), max_size=4)):
            settings[key] = imap_value(f, key, port, dead)
        lines = shuffled(draw, [f"{k} = {v}" for k, v in settings.items()])
        lines = f.lines(lines, st.one_of(
            st.sampled_from(["host", 'host = "127.0.0.1"', "port = x", "=", "{"]),
            st.builds(lambda k, v: f"{k} = {quoted(v)}", ID_TOKEN, CONFIG_JUNK)))
        accounts.append(f"account {name} {{\n  " + "\n  ".join(lines) + "\n}")
    return "\n".join(accounts) + "\n"


def mbsync_word(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def mbsyncrc_text(draw, port: int, dead: int):
    f = Faults(draw)
    account = {"Host": f.pick(st.just("127.0.0.1"), IMAP_HOSTS),
               "Port": f.pick([str(port), str(dead)], ["x", "", "1234567"]),
               "User": "me", "Pass": "pw",
               "SSLType": f.pick(["None", "STARTTLS", "IMAPS"], ["yes", "tls"])}
    for key in draw(st.lists(st.sampled_from(["PassCmd", "UserCmd", "Tunnel", "AuthMechs",
                                              "CertificateFile", "Timeout", "UseIMAPS",
                                              "SystemCertificates"]), max_size=3)):
        if key in ("PassCmd", "UserCmd"):
            account[key] = mbsync_word(draw(st.sampled_from(["echo pw", "+echo pw", "false",
                                                             ""])))
        elif key == "Tunnel":
            account[key] = mbsync_word(draw(st.one_of(imap_server_tunnel(),
                                                      st.sampled_from(IMAP_TUNNELS))))
        elif key == "CertificateFile":
            account[key] = draw(st.sampled_from(READ_PATHS))
        elif key == "Timeout":
            account[key] = f.pick(["5", "0"], NUMBERS)
        else:
            account[key] = f.pick(["yes", "no", "PLAIN", "*"], CONFIG_JUNK)
    lines = ["IMAPAccount office"] + shuffled(draw, [f"{k} {v}" for k, v in account.items()])
    sections = ["\n".join(f.lines(lines, st.one_of(
        st.sampled_from(["Host", "Port", '"', "\\", "IMAPAccount", "Pass \"a\\"]),
        CONFIG_JUNK)))]
    sections.append("\n".join(["IMAPStore store", "Account office"] + draw(st.lists(
        st.sampled_from(["Path INBOX.", "PathDelimiter /", "UseNamespace no", "Path",
                         "Account nosuch", "Account", "Trash x", "PathDelimiter"]),
        max_size=2))))
    sections.append("\n".join(["Channel chan"] + draw(st.lists(st.sampled_from(
        ["Far :store:", "Near :local:", "Far :store:Archive/", "Far :nosuch:", "Far store",
         "Far", "Master :store:", "Patterns *"]), min_size=1, max_size=3))))
    return "\n\n".join(shuffled(draw, sections)) + "\n"


@st.composite
def watch_imap_case(draw, port: int, dead: int):
    conf = watch_imap_conf_text(port, dead)
    rc = mbsyncrc_text(port, dead)
    files = {
        ".config/roammail/watch-imap.conf": draw(config_file(conf, ["account", "host"])),
        ".mbsyncrc": draw(st.one_of(rc, rc, rc, mutated(rc)).map(
            lambda t: t.encode("utf-8", "surrogateescape"))),
        "imap-server.py": IMAP_SERVER,
    }
    options = {
        "-a|--account": st.one_of(st.sampled_from(["office", "store", "chan", "nosuch"]), JUNK),
        "-c|--config": st.sampled_from(["~/.config/roammail/watch-imap.conf"] + READ_PATHS),
        "--mbsyncrc": st.sampled_from(["~/.mbsyncrc"] + READ_PATHS),
        "-l|--list": None, "-v|--verbose": None, "-V|--version": None, "-h|--help": None,
    }
    names = st.sampled_from(["office", "store", "chan"])
    forms = st.one_of(names.map(lambda n: ["-a", n]), names.map(lambda n: ["-a", n, "--list"]))
    plain = {k: v for k, v in options.items() if k in ("-c|--config", "--mbsyncrc",
                                                       "-v|--verbose")}
    argv = (draw(argv_of(options)) if rarely(draw, 4)
            else draw(argv_of(plain, forms, common=frozenset({"-v"}))))
    return Case("watch-imap", argv, files, runs_on=True)


# --- inputkill, socketwatch

GUARDED_COMMANDS = st.sampled_from([["true"], ["false"], ["cat"], ["sleep", "0.1"],
                                    ["no-such-program"], ["sh", "-c", "exit 7"],
                                    ["sh", "-c", "kill -TERM $$"], ["/dev/null"], ["."],
                                    ["echo", "-x"], ["sh", "-c", "sleep 0.1 & exit 0"],
                                    ["--"], ["-x"]])


@st.composite
def guard_case(draw, tool: str):
    options = {"--grace": NUMBERS, "-h|--help": None, "-V|--version": None}
    if tool == "socketwatch":
        options["-t|--timeout"] = NUMBERS
    argv = draw(argv_of(options, max_words=3))
    if draw(st.booleans()):
        argv.append("--")
    argv += draw(GUARDED_COMMANDS)
    stdin = draw(st.sampled_from([b"", b"input\n"]))
    return Case(tool, argv, {}, stdin)


# --- smtpdcheck

SMTP_HOSTS = ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "[127.0.0.1]", "127.0.0.1.",
              "[::1", "::1]", "[]"]
PRIOS = ["", "10:", "0:", "-1:", "x:", "\u00b2:", "99999999999999999999:", ":", "1:2:",
         "\u0663:", " 5:"]


@st.composite
def smtpdcheck_case(draw, port: int, dead: int):
    ports = st.one_of(st.sampled_from([str(port), str(dead), "0", "65536", "-1", "25x",
                                       "\u00b2", " 25", "99999999999999999999"]), JUNK)
    seconds = st.one_of(st.sampled_from(["0.5", "1", "0.05", "0", "-1", "nan", "inf", "1e309",
                                         "", "1s", "\u00b2", "0.000001", "1e-9", "0.001"]),
                        NUMBERS)
    server = st.builds(lambda p, h: p + h, st.sampled_from(PRIOS), st.sampled_from(SMTP_HOSTS))
    options = {"--stop": st.sampled_from(SMTP_HOSTS + PRIOS), "--timeout": seconds,
               "--port": ports, "--sequential": None,
               "--cache": st.sampled_from(WRITE_PATHS), "--no-cache": None,
               "--cache-ttl": seconds, "-V|--version": None, "-h|--help": None}
    forms = st.lists(server, min_size=1, max_size=3)
    argv = draw(argv_of(options, forms, server))
    if draw(st.booleans()) and "--port" not in argv:
        argv = ["--port", str(port)] + argv
    return Case("smtpdcheck", argv, {})


# --- hooks

@st.composite
def hook_case(draw, hook: str):
    def one_of_or_junk(*words):
        return draw(mostly(list(words), JUNK))
    argv = [one_of_or_junk("pre", "post"), one_of_or_junk("pull", "push", "sync"),
            one_of_or_junk("fakehost", "unreachable", "a/b", "../x", ".", "-x", "e" * 300),
            one_of_or_junk("0", "1", "75", "-1", "256")]
    argv = argv[:draw(st.integers(0, 5))] if draw(st.booleans()) else argv
    if draw(st.integers(0, 9)) == 0:
        argv = [draw(st.sampled_from(["--help", "--version"]))]
    env = {}
    if draw(st.booleans()):
        env["ROAMMAIL_HOOK_LOG"] = draw(st.sampled_from(["~/hook.log", "~/adir", "/dev/null/x",
                                                         "", "~/nosuch/log"]))
    if draw(st.booleans()):
        env["ROAMMAIL_SSH_HOST"] = draw(st.sampled_from(["fakehost", "unreachable", "", "-x",
                                                         "a b"]))
    if draw(st.booleans()):
        env["SSH"] = draw(st.sampled_from(["ssh", "ssh -q", "", "no-such-ssh", "false"]))
    files = {"hook.log": b"a log line\n", ".smd/hooks": None}
    return Case(hook, argv, files, env=env)
