"""syncmail: move new mail from a server's maildir to the laptop over ssh.

Usage:
  syncmail [-c CONFIG] [-n] [-v] [-q] [--offline-ok] [--hooks DIR] [SOURCE...]
  syncmail [-n] [-v] [-q] [--offline-ok] [--hooks DIR] HOST:REMOTE_MAILDIR LOCAL_MAILDIR
  syncmail -V | --version
  syncmail -h | --help

Options:
  -c CONFIG --config=CONFIG  Configuration file, instead of
                             $XDG_CONFIG_HOME/roammail/syncmail.conf.
  -n --dry-run               Copy nothing, remove nothing: list what would move.
  -v --verbose               Log every message on stderr, even off a terminal.
  -q --quiet                 Only errors on stderr.
  --offline-ok               Exit 0 when a server cannot be reached at all.
  --hooks DIR                Hook base directory instead of
                             $XDG_CONFIG_HOME/roammail/hooks.
  -V --version               Print the version.
  -h --help                  Show this help.
"""

from __future__ import annotations

import os
import sys
import time

from ..core import locations
from ..core.cli import guarded
from ..core.errors import (
    EX_CANTCREAT,
    EX_CONFIG,
    EX_IOERR,
    EX_NOINPUT,
    EX_TEMPFAIL,
    ConfigError,
    RoammailError,
    UsageError,
)
from .conf import Source, parse_config

try:  # signal's own import costs ~5 ms (it imports enum); _signal is loaded
    import _signal as signals
except ImportError:  # pragma: no cover - every CPython has _signal
    import signal as signals

TYPE_CHECKING = False  # typing costs ~15 ms to import: only type checkers read it
if TYPE_CHECKING:
    from typing import Optional

    from .log import TerminalLog

# Start-up is on the clock of every run, and most runs find nothing new:
# such a run is mostly ssh logging in.  So everything up to the start of
# ssh is cheap (os, sys and the small modules of this library; no
# logging, typing, dataclasses, re, subprocess, threading, plumbum or
# docopt for the usual command lines), and ssh starts before anything
# else is imported or read: the local maildirs, the journal, logging and
# the moving machinery (syncmail.move) are loaded while it logs in.
# tests/syncmail/test_start_imports.py holds that list.

TOOL = "syncmail"

EXIT_OK = 0
EXIT_LEFT = 1          # some messages left on the server (named in the log)
EXIT_NO_REMOTE = EX_NOINPUT  # the server's maildir is missing, or not a maildir
EXIT_UNWRITABLE = EX_CANTCREAT  # the local maildir cannot be made or written
EXIT_LOCAL_IO = EX_IOERR  # a local write failed (a full disk), or the state files
EXIT_TEMPFAIL = EX_TEMPFAIL  # could not connect, or the connection broke
EXIT_PROTOCOL = 76     # sysexits' EX_PROTOCOL: the server spoke out of protocol
EXIT_CONFIG = EX_CONFIG
EXIT_INTERRUPTED = 128 + 2   # SIGINT (Ctrl-C), as a shell reports it
EXIT_TERMINATED = 128 + 15   # SIGTERM

# A maildir's own subdirectories: no place for another maildir.
_MAILDIR_SUBDIRS = ("new", "cur", "tmp")

# Server tmp/ files untouched this long are reported (maildir's own limit).
STALE_TMP_SECONDS = 36 * 3600
# Messages per tar stream (and per journal write), unless
# $ROAMMAIL_SYNCMAIL_BATCH says otherwise; move.BATCH_BYTES caps
# a batch's bytes too.
BATCH_MESSAGES = 1000


# ------------------------------------------------------------ command line

# The options without a value, and those with one, as docopt names them.
_FLAGS = {"-n": "--dry-run", "--dry-run": "--dry-run", "-v": "--verbose",
          "--verbose": "--verbose", "-q": "--quiet", "--quiet": "--quiet",
          "--offline-ok": "--offline-ok"}
_VALUED = {"-c": "--config", "--config": "--config", "--hooks": "--hooks"}


def plain_args(argv: list[str]) -> Optional[dict]:
    """docopt's dictionary for a plain command line, without docopt; None
    for any other.  Plain: operands not starting with "-", the options
    without a value (-n, -v, -q, short or long; --offline-ok) each at most once, and
    -c/--config/--hooks each at most once with its value in the next word
    (not starting with "-").  Anything else (--help, --opt=value, bundled
    flags, "--", mistakes) is docopt's to parse or refuse: importing it
    and parsing costs a run ~20 ms.  tests/syncmail/test_args.py checks
    that both agree wherever this one answers."""
    args: dict = {"--config": None, "--dry-run": False, "--verbose": False, "--quiet": False,
                  "--offline-ok": False, "--hooks": None, "SOURCE": [], "HOST:REMOTE_MAILDIR": None,
                  "LOCAL_MAILDIR": None, "--help": False, "--version": False}
    seen = set()  # not args[key]: an empty value ("-c ''") is false too
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            args["SOURCE"].append(word)
            continue
        key = _FLAGS.get(word) or _VALUED.get(word)
        if key is None or key in seen:
            return None
        seen.add(key)
        if key in _FLAGS.values():
            args[key] = True
            continue
        value = next(words, None)
        if value is None or value.startswith("-"):
            return None
        args[key] = value
    return args


def parse_args(argv: Optional[list[str]]) -> dict:
    """The command line (sys.argv[1:] if None) as docopt gives it."""
    args = plain_args(sys.argv[1:] if argv is None else argv)
    if args is None:
        from ..core.cli import docopt_args

        args = docopt_args(__doc__, argv)
    return args


def batch_messages() -> int:
    """Messages per batch: BATCH_MESSAGES, or $ROAMMAIL_SYNCMAIL_BATCH."""
    value = os.environ.get("ROAMMAIL_SYNCMAIL_BATCH")
    if value is None:
        return BATCH_MESSAGES
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        from ..core.tokens import shorten

        raise UsageError("ROAMMAIL_SYNCMAIL_BATCH must be a positive number, "
                         f"not '{shorten(value)}'")
    return int(value)


def default_config() -> str:
    return os.path.join(locations.xdg_config_home(), "roammail", "syncmail.conf")


def state_dir() -> str:
    return os.path.join(locations.xdg_state_home(), "roammail", "syncmail")


def sources_from_args(args: dict) -> list[Source]:
    operands = args["SOURCE"] or []
    if args.get("HOST:REMOTE_MAILDIR"):
        operands = [args["HOST:REMOTE_MAILDIR"], args["LOCAL_MAILDIR"]]
    if any(":" in op for op in operands):
        if len(operands) != 2 or ":" not in operands[0] or args["--config"] is not None:
            raise UsageError("the one-shot form is HOST:REMOTE_MAILDIR LOCAL_MAILDIR, "
                             "without -c; see --help")
        host, remote = operands[0].split(":", 1)
        if not host or not remote or host.startswith("-"):
            raise UsageError(f"bad HOST:REMOTE_MAILDIR '{operands[0]}'")
        local = os.path.abspath(locations.expand_home(operands[1]))
        inside = maildir_holding(local)
        if inside is not None:
            raise UsageError(f"{_inside_text(local, inside)}: give the maildir itself")
        return [Source(f"{host}:{remote}", host, remote, local)]
    from ..core.tokens import read_config_file

    path = args["--config"]
    if path is None:
        path = default_config()
    sources = parse_config(read_config_file(path), path)
    if operands:
        known = {s.name: s for s in sources}
        for op in operands:
            if op not in known:
                raise ConfigError(path, 0, f"no source '{op}'")
        sources = [known[op] for op in operands]
    for source in sources:
        inside = maildir_holding(os.path.abspath(source.local))
        if inside is not None:
            raise ConfigError(path, source.line, f"source '{source.name}': "
                              f"{_inside_text(source.local, inside)}")
    return sources


def maildir_holding(path: str) -> Optional[str]:
    """The maildir whose new/, cur/ or tmp/ is `path` (absolute) or holds
    it, if any: a maildir there would be taken for messages, or removed
    as a stale tmp/ file, by whatever reads the outer one."""
    here = path
    while True:
        parent, base = os.path.split(here)
        if base in _MAILDIR_SUBDIRS and all(
                os.path.isdir(os.path.join(parent, sub)) for sub in _MAILDIR_SUBDIRS):
            return os.path.join(parent, base)
        if parent == here:
            return None
        here = parent


def _inside_text(local: str, subdir: str) -> str:
    where = ("is" if os.path.abspath(local) == subdir else "is inside")
    return (f"local maildir {local} {where} the {os.path.basename(subdir)}/ of the maildir "
            f"{os.path.dirname(subdir)}")


# ------------------------------------------------------------------ one run

def stale_stamp(now: float) -> str:
    """touch -t stamp (UTC) of the moment STALE_TMP_SECONDS ago."""
    return time.strftime("%Y%m%d%H%M.%S", time.gmtime(now - STALE_TMP_SECONDS))


def _sha256_hex(data: bytes) -> str:
    from ..core.digest import sha256_hex

    return sha256_hex(data)


# A file name's limit in bytes (NAME_MAX of Linux's file systems).
NAME_MAX = 255
# Characters of a source's name kept in a hashed state file name.
STATE_HINT_CHARS = 40
# What a name syncmail.conf accepts is made of (core/tokens.py's identifiers).
_NAME_CHARS = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def state_name(source: Source, suffix: str) -> str:
    """The name, in state_dir(), of the source's state file ending in
    `suffix` (".journal", ".lock", ".hooks.log"; syncmail.conf(5)).

    A configured source's file is NAME+SUFFIX, as it always was, when NAME
    is made of [A-Za-z0-9_] (as every name the config accepts is) and that
    fits in NAME_MAX bytes.  Otherwise (a longer name; any other
    character: "/", a leading dot, control or non-UTF-8 characters) it is
    HINT-HASH+SUFFIX: HINT the name's first STATE_HINT_CHARS characters,
    each outside [A-Za-z0-9_] made "_"; HASH the first 32 hex digits of
    the SHA-256 of the whole name.  Stable from run to run, short, and
    unlike any NAME+SUFFIX (which has no "-").  The one-shot form's files
    are oneshot-HASH+SUFFIX (16 digits of the hash of host, remote and
    local maildir)."""
    if not source.path:
        digest = _sha256_hex(f"{source.host}:{source.remote}\0{source.local}".encode(
            "utf-8", "surrogateescape"))[:16]
        return f"oneshot-{digest}{suffix}"
    name = source.name
    if (name and all(c in _NAME_CHARS for c in name)
            and len(name) + len(suffix.encode("utf-8", "surrogateescape")) <= NAME_MAX):
        return name + suffix
    hint = "".join(c if c in _NAME_CHARS else "_" for c in name[:STATE_HINT_CHARS])
    digest = _sha256_hex(name.encode("utf-8", "surrogatepass"))[:32]
    return f"{hint or 'source'}-{digest}{suffix}"


def state_path(source: Source, suffix: str) -> str:
    return os.path.join(state_dir(), state_name(source, suffix))


def lock_source(source: Source) -> int:
    from ..core import lockfile
    from ..core.errors import IOFailure

    directory = state_dir()
    path = os.path.join(directory, state_name(source, ".lock"))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise IOFailure(f"cannot open {path}: {exc.strerror or exc}") from exc
    # A one-shot run removes its lock file at the end (forget_one_shot):
    # a lock taken on the file it removed is no lock, so the file locked
    # must still be the one under the name; if not, take the new one.
    while True:
        try:
            fd = lockfile.hold(path)
        except lockfile.LockFileError as exc:
            raise IOFailure(str(exc)) from exc
        if fd is None:
            raise _Busy()
        try:
            named = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            continue
        held = os.fstat(fd)
        if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)


def forget_one_shot(source: Source) -> None:
    """A one-shot run's state files, at its end (the lock still held):
    the lock file goes, and the journal too unless it names messages a
    later run must finish moving."""
    journal = state_path(source, ".journal")
    try:
        if os.stat(journal).st_size == 0:
            os.unlink(journal)
    except OSError:
        pass
    try:
        os.unlink(state_path(source, ".lock"))
    except OSError:
        pass


class _Busy(Exception):
    pass


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived (on_signal); `reported` once its line is out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.reported = False

    @property
    def status(self) -> int:
        return EXIT_TERMINATED if self.signum == signals.SIGTERM else EXIT_INTERRUPTED


def on_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: stop where the run is, as an exception (the
    session is aborted, what landed stays, see _move); later ones are
    ignored, so that the stop itself is not cut short."""
    for number in (signals.SIGINT, signals.SIGTERM):
        signals.signal(number, signals.SIG_IGN)
    raise Interrupted(signum)


def catch_signals() -> None:
    """on_signal for SIGINT and SIGTERM, unless they are ignored (nohup, a
    background job of a non-interactive shell)."""
    for number in (signals.SIGINT, signals.SIGTERM):
        if signals.getsignal(number) != signals.SIG_IGN:
            signals.signal(number, on_signal)


class Logs:
    """log.setup_logging, done once and only when needed: right
    after ssh has started, or before that for an error."""

    def __init__(self, verbose: bool, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self._log = None
        self.terminal: Optional[TerminalLog] = None

    @property
    def log(self):
        if self._log is None:
            from .log import setup_logging

            self._log, self.terminal = setup_logging(self.verbose, self.quiet)
        return self._log


def run_one(source: Source, args: dict, logs: Logs, batch: int = BATCH_MESSAGES) -> int:
    from ..core import hookdirs

    label = source.name if source.path else f"{source.host}:{source.remote}"
    endpoint = label
    hook_base = args["--hooks"] or hookdirs.default_base()
    dry_run = bool(args["--dry-run"])
    started = time.monotonic()
    try:
        lock_fd = lock_source(source)
    except _Busy:
        logs.log.error("%s: another syncmail is moving this source's mail", label)
        return EXIT_TEMPFAIL
    try:
        hook_log = state_path(source, ".hooks.log")
        env = {"ROAMMAIL_HOOK_LOG": hook_log, "ROAMMAIL_SSH_HOST": source.host}
        if not dry_run:
            for res in hookdirs.run_hooks(hook_base, "pre", "pull", endpoint, 0,
                                          log_path=hook_log, extra_env=env):
                if not res.ok:
                    logs.log.error("%s: pre-pull hook %s failed (%s): not moving mail", label,
                                   res.path, res.status)
                    _post(hook_base, endpoint, EXIT_LEFT, hook_log, env, label, logs)
                    return EXIT_LEFT
        offline_ok = bool(args.get("--offline-ok")) or source.offline_ok
        report: dict = {}
        status, offline = _move(source, dry_run, label, started, batch, logs, offline_ok,
                                report)
        if not dry_run:
            record_health(label, status, offline, report, logs)
            # Post hooks learn that the server was out of reach, not failing
            # (roammail-hooks(7)), with the status a run without
            # --offline-ok has.
            if offline:
                env["ROAMMAIL_OFFLINE"] = "1"
            _post(hook_base, endpoint, status, hook_log, env, label, logs)
        return EXIT_OK if offline and offline_ok else status
    finally:
        if not source.path:
            forget_one_shot(source)
        os.close(lock_fd)


def _post(base: str, endpoint: str, status: int, hook_log: str, env: dict, label: str,
          logs: Logs) -> None:
    from ..core import hookdirs

    for res in hookdirs.run_hooks(base, "post", "pull", endpoint, status,
                                  log_path=hook_log, extra_env=env):
        if not res.ok:
            logs.log.error("%s: post-pull hook %s failed (%s)", label, res.path, res.status)


def _move(source: Source, dry_run: bool, label: str, started: float, batch: int,
          logs: Logs, offline_ok: bool = False,
          report: Optional[dict] = None) -> tuple[int, bool]:
    """Move the source's mail: the exit status, and whether ssh could not
    reach the server at all (then the status is EXIT_TEMPFAIL, and with
    `offline_ok` that is a warning, not an error).  `report` gets the
    run's move.Result ("result") and its error line ("error")."""
    report = {} if report is None else report
    from .remote import ConnectError, RemoteError, RemoteSession

    opened: RemoteSession | ConnectError
    try:
        # First of all: ssh logs in while everything below happens.
        opened = RemoteSession(source.host, source.remote, stale_stamp(time.time()))
    except ConnectError as exc:
        opened = exc
    log = logs.log
    from .move import Mover

    journal = state_path(source, ".journal")
    mover = Mover(source, label, journal, dry_run, batch, logs.terminal)
    result = report["result"] = mover.result
    status = EXIT_OK
    try:
        if isinstance(opened, ConnectError):
            raise opened
        mover.run(opened)
    except ConnectError as exc:
        report["error"] = str(exc)
        if exc.offline and result.listed is None:
            if offline_ok:
                log.warning("%s: offline, nothing moved: %s", label, exc)
            else:
                log.error("%s", exc)
            return EXIT_TEMPFAIL, True
        log.error("%s", exc)
        status = EXIT_TEMPFAIL
    except RemoteError as exc:
        where = f" ({source.path}:{source.remote_line})" if source.path else ""
        log.error("%s%s", exc, where)
        report["error"] = f"{exc}{where}"
        status = exc.exit_code
    except RoammailError as exc:
        result.failure = exc
    except Interrupted as exc:
        exc.reported = True
        if result.listed is None:
            log.error("%s: interrupted before any message moved; nothing is lost: the next "
                      "run does the job", label)
        else:
            log.error("%s: interrupted: %s; nothing is lost: the next run finishes the job",
                      label, _tally(result))
        raise
    if result.failure is not None:
        why, status = local_failure(result.failure)
        tally = "no message moved" if result.listed is None else _tally(result)
        log.error("%s: %s: %s", label, why, tally)
        report["error"] = f"{why}: {tally}"
        return status, False
    if result.listed is None:
        return status, False  # the error said it all: nothing was even listed
    if result.left and status == EXIT_OK:
        status = EXIT_LEFT
    seconds = time.monotonic() - started
    verb = "would move" if dry_run else "moved"
    summary = (f"{label}: {verb} {messages(result.moved)} ({result.bytes} bytes), "
               f"discarded {result.discarded}, left {len(result.left)} on the server, "
               f"in {seconds:.1f} s")
    if status == EXIT_OK:
        log.info("%s", summary)
    else:
        log.warning("%s", summary)
    return status, False


def record_health(label: str, status: int, offline: bool, report: dict, logs: Logs) -> None:
    """Leave this run's outcome for roammail-status (core.health): when it
    ran, when a run last succeeded, how many messages it moved, its error
    line and whether the server was out of reach."""
    from ..core import health

    now = time.time()
    previous = health.read_one(TOOL, label) or {}
    last_success = previous.get("last_success")
    ok = status in (EXIT_OK, EXIT_LEFT) and "error" not in report
    if ok:
        last_success = now
    result = report.get("result")
    error = report.get("error")
    state = {
        "source": label,
        "last_run": round(now, 3),
        "last_success": (round(last_success, 3)
                         if isinstance(last_success, (int, float)) else None),
        "moved": result.moved if result is not None and result.listed is not None else 0,
        "status": status,
        "offline": offline,
        "last_error": None if ok else " ".join(str(error or f"exit status {status}").split()),
    }
    problem = health.record(TOOL, label, state, now=now)
    if problem:
        logs.log.warning("%s", problem)


def messages(count: int) -> str:
    """"1 message", "2 messages"."""
    return f"{count} message" if count == 1 else f"{count} messages"


def _tally(result) -> str:
    """"11 of 200 messages moved, 189 left on the server" of a run the
    listing of which came (move.Result): of the messages listed, less
    those an interrupted run had moved already."""
    total = result.listed - result.recovered
    done = result.moved + result.discarded
    text = f"{result.moved} of {messages(total)} moved"
    if result.discarded:
        text += f", {result.discarded} discarded"
    return f"{text}, {max(total - done, 0)} left on the server"


def os_error_number(exc: Optional[BaseException]) -> Optional[int]:
    """The errno of the OSError behind `exc` (along its causes), if any."""
    for _ in range(8):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def local_failure(exc: RoammailError) -> tuple[str, int]:
    """What a failure here that stopped a run was, in a few words, and its
    exit status: a full disk, a maildir not writable, or what it said."""
    import errno

    number = os_error_number(exc)
    if number in (errno.ENOSPC, errno.EDQUOT):
        return "local disk full", EXIT_LOCAL_IO
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"local maildir not writable ({exc})", EXIT_UNWRITABLE
    return str(exc), exc.exit_code


def run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args["--version"]:
        from .. import __version__

        sys.stdout.write(f"{TOOL} (roammail) {__version__}\n")
        return EXIT_OK
    logs = Logs(bool(args["--verbose"]), bool(args["--quiet"]))
    sources = sources_from_args(args)
    batch = batch_messages()
    status = EXIT_OK
    catch_signals()
    try:
        for source in sources:
            status = max(status, run_one(source, args, logs, batch))
    except Interrupted as exc:
        if not exc.reported:
            logs.log.error("interrupted; nothing is lost: the next run finishes the job")
        return exc.status
    return status


def main(argv: list[str] | None = None) -> int:
    status = guarded(TOOL, lambda: run(argv))
    # The interpreter's last garbage collection, on the way out, walks
    # every object of every module loaded: ~3 ms of a run that finds
    # nothing new.  Nothing syncmail leaves behind needs it (files are
    # closed, children reaped), so it is spared that walk.
    import gc

    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(main())
