#!/usr/bin/env python3
"""watch_imap_bench.py: mswatch + watch-imap side by side with imapnotify, on one Dovecot.

Usage:
  .venv-test/bin/python3 bench/watch_imap_bench.py [--prefix PREFIX] [--quick] [--keep]
                                                   [--summary FILE]

It runs with the test virtualenv's interpreter (./test.sh creates it): the
server is the real Dovecot of the tests (tests/peers/dovecot.py), which
imports pytest.

Ours: mswatch with watch-imap on the server side and watch-maildirs on the
local maildir, running `mbsync t:FOLDER` for each folder reported;
base_delay 0 and inter_delay 0, mswatch's fastest setting.
The peer: bench/imapnotify_peer.js, a stand-in for imapnotify (which the
reachable npm registry does not have) on imapnotify's own library, node-imap
0.8.19: one IDLE connection per box, and on each new mail the box's
command through /bin/sh (`sync-recorder LOG mbsync -q -c RC t:BOX`).

One Dovecot with NOTIFY and 20 folders f01..f20 (plus INBOX).  Ours watches
all 21 folders (NOTIFY); the peer watches the 20 folders (a 21st connection
would be needed for INBOX).  Each side has its own local maildir and mbsync
configuration (the same IMAPAccount, its own Near store and SyncState), and
both run the same sync-recorder: it appends the epoch time ($EPOCHREALTIME,
no fork) and its arguments to the side's log, then execs mbsync.

1. connections held while idle (Dovecot's logged-in IMAP sessions): ours
   started alone, ready (its first full sync done) and the count stable;
   then the peer, the count stable again, the difference.  Then both again
   against a second Dovecot without NOTIFY, ours with `idle` set to all 21
   folders and max_idle 4 (its IDLE fallback: 4 IDLE connections and one
   that polls the other 17 folders with STATUS).
2. latency, both sides running at once on the same server: a delivery
   through dovecot-lda into one of the 20 folders, in turn, one every
   2 s (2 uncounted warm-ups, then 60 rounds; --quick 12); from
   dovecot-lda's return to the first sync start of that folder (`t:FOLDER`)
   in each side's log; a side without one within 10 s missed it.  Two bare
   clients measured at the same time show what Dovecot itself does: a
   NOTIFY connection (ours' way) and an IDLE on the folder (the peer's).

Everything happens in a temporary directory; every process started carries
a tag in its environment and whatever is left at the end is ended by pid;
the Dovecot servers are killed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import BenchError, median, ms, percentile, ratio, times  # noqa: E402

BENCH = Path(__file__).resolve().parent
PEER_SCRIPT = BENCH / "imapnotify_peer.js"
# node-imap, the peer's library, is installed here once (ignored by git).
NODE_CACHE = common.REPO / ".bench-cache" / "node"
NODE_IMAP = "imap"
NODE_IMAP_VERSION = "0.8.19"
NODE_HINT = "apt-get install nodejs npm"

ACCOUNT = "t"
FOLDERS = [f"f{i:02d}" for i in range(1, 21)]
ALL_FOLDERS = ["INBOX", *FOLDERS]
ROUNDS = 60
QUICK_ROUNDS = 12
WARMUPS = 2
# Dovecot tells its clients of a delivery 0.5 s after it; an mbsync of one
# folder takes some 50 ms, but ours runs a second one (watch-maildirs sees the
# first one's write), and mbsync sleeps 1 s when the maildir changed in the
# current second: ours is done some 1.6 s after a delivery.  2 s leaves both
# sides idle when the next delivery comes.
SPACING = 2.0
MISS_AFTER = 10.0       # s: a delivery not synced by then is a miss
READY_TIMEOUT = 60.0    # s: a side up and (ours) its first full sync done
STABLE_FOR = 2.0        # s the session count must hold before it is read
STABLE_TIMEOUT = 30.0
RUN_TIMEOUT = 120.0     # s: an npm install, an mbsync full sync
STOP_GRACE = 10.0
MAX_IDLE = 4            # ours' IDLE fallback: max_idle
NOISY_CPUS = 0.25
MESSAGE = b"From: bench@example.org\nTo: tester@example.org\nSubject: bench %d\n\nhello\n"

RECORDER = """#!{bash}
# sync-recorder LOG COMMAND...: append when a sync starts and what it syncs
# to LOG ($EPOCHREALTIME: no fork), then become the sync.
log=$1
shift
printf '%s %s\\n' "$EPOCHREALTIME" "$*" >> "$log"
exec "$@"
"""


# ------------------------------------------------------------------ peers


def import_dovecot():
    """tests/peers/dovecot.py and the pytest outcomes its checks raise."""
    dovecot = common.import_test_peer("peers.dovecot")
    pytest = common.import_test_peer("pytest")
    return dovecot, (pytest.skip.Exception, pytest.fail.Exception)


def start_dovecot(module, outcomes, directory: Path, notify: bool):
    try:
        server = module.DovecotServer.start(directory, notify=notify)
    except outcomes as exc:  # a missing program or user: peers.require says which
        raise BenchError(f"the test Dovecot cannot run: {exc}") from None
    except RuntimeError as exc:
        raise BenchError(f"Dovecot did not start: {exc}") from None
    for name in FOLDERS:
        server.create_folder(name)
    return server


def node_imap(tag: str) -> tuple[str, Path, str]:
    """(node, its NODE_PATH, node's version); node-imap installed once."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BenchError(f"node and npm are needed for the peer ({PEER_SCRIPT.name}): "
                         f"{NODE_HINT}")
    modules = NODE_CACHE / "node_modules"
    if installed_version(modules) != NODE_IMAP_VERSION:
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        package = NODE_CACHE / "package.json"
        if not package.exists():
            package.write_text('{"name": "roammail-bench-peer", "private": true}\n')
        print(f"installing node-imap {NODE_IMAP_VERSION} into {NODE_CACHE} (once)",
              file=sys.stderr)
        try:
            done = subprocess.run(
                [npm, "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund",
                 "--loglevel=error", f"{NODE_IMAP}@{NODE_IMAP_VERSION}"],
                env={**os.environ, common.TAG_VAR: tag}, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
            problem = done.stderr.strip()[-800:] if done.returncode else ""
        except subprocess.TimeoutExpired:
            problem = f"no answer in {RUN_TIMEOUT:.0f} s"
        if problem or installed_version(modules) != NODE_IMAP_VERSION:
            raise BenchError(f"`npm install {NODE_IMAP}@{NODE_IMAP_VERSION}` into "
                             f"{NODE_CACHE} failed: {problem or 'not installed'}")
    check = subprocess.run([node, "-e", f"require('{NODE_IMAP}')"], capture_output=True,
                           text=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                           "NODE_PATH": str(modules)}, check=False)
    if check.returncode != 0:
        raise BenchError(f"node cannot load node-imap from {modules}: "
                         f"{check.stderr.strip()[-400:]}; remove {NODE_CACHE} to reinstall")
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    return node, modules, version


def installed_version(modules: Path) -> str | None:
    try:
        return json.loads((modules / NODE_IMAP / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


def recorder_script(directory: Path) -> Path:
    bash = shutil.which("bash")
    if bash is None:
        raise BenchError("bash is needed for the sync-recorder ($EPOCHREALTIME)")
    probe = subprocess.run([bash, "-c", 'echo "$EPOCHREALTIME"'], capture_output=True,
                           text=True, check=False).stdout.strip()
    if not probe:
        raise BenchError(f"{bash} has no $EPOCHREALTIME (bash 5 or newer is needed)")
    path = directory / "sync-recorder"
    path.write_text(RECORDER.format(bash=bash))
    path.chmod(0o755)
    return path


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout.strip() or out.stderr.strip() or "?").splitlines()[0]


# ------------------------------------------------------------------ configs


def quote(word: object) -> str:
    """A double-quoted token of mswatchrc(5) and watch-imap.conf(5)."""
    return '"' + str(word).replace("\\", "\\\\").replace('"', '\\"') + '"'


def mbsyncrc(server, local: Path) -> str:
    """The same IMAPAccount for both sides; the Near store (and SyncState) is the side's."""
    return f"""\
IMAPAccount {ACCOUNT}
Host {server.host}
Port {server.imaps_port}
User {server.user}
Pass {server.password}
SSLType IMAPS
SystemCertificates no
CertificateFile {server.ca_file}

IMAPStore {ACCOUNT}-far
Account {ACCOUNT}

MaildirStore {ACCOUNT}-near
Inbox {local}
SubFolders Maildir++

Channel {ACCOUNT}
Far :{ACCOUNT}-far:
Near :{ACCOUNT}-near:
Patterns *
Create Both
SyncState *
"""


def watch_imap_conf(server, idle: list[str] | None = None) -> str:
    lines = [f"account {ACCOUNT} {{",
             f"    host = {quote(server.host)}",
             f"    port = {server.imaps_port}",
             '    tls = "imaps"',
             f"    user = {quote(server.user)}",
             f"    pass = {quote(server.password)}",
             f"    ca_file = {quote(server.ca_file)}",
             '    system_certificates = "no"',
             '    mode = "auto"']
    for name in idle or []:
        lines.append(f"    idle = {quote(name)}")
    lines += [f"    max_idle = {MAX_IDLE}", "    poll = 5m", "}"]
    return "\n".join(lines) + "\n"


def make_maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------ sides


class SyncLog:
    """The sync starts a side's sync-recorder wrote: (epoch, argument words)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.starts: list[tuple[float, list[str]]] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[tuple[float, list[str]]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.starts
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            when, _, words = raw.decode("utf-8", "replace").partition(" ")
            self.starts.append((float(when.replace(",", ".")), words.split()))
        return self.starts

    def first(self, word: str, after: float, start: int = 0) -> float | None:
        """The first start after `after` whose arguments hold `word`."""
        for when, words in self.read()[start:]:
            if when > after and word in words:
                return when
        return None


@dataclass
class Side:
    name: str
    work: Path
    env: dict[str, str]
    recorder: Path
    mbsync: str
    server: object
    local: Path = field(init=False)
    rc: Path = field(init=False)
    log: SyncLog = field(init=False)
    proc: subprocess.Popen | None = None
    err: Path = field(init=False)

    def __post_init__(self) -> None:
        self.work.mkdir(parents=True)
        self.local = make_maildir(self.work / "Maildir")
        self.rc = self.work / "mbsyncrc"
        self.rc.write_text(mbsyncrc(self.server, self.local))
        self.log = SyncLog(self.work / "syncs.log")
        self.err = self.work / "stderr"

    def sync_words(self) -> list[str]:
        return [str(self.recorder), str(self.log.path), self.mbsync, "-q", "-c", str(self.rc)]

    def spawn(self, argv: list[str], stdout=subprocess.DEVNULL, **env: str) -> None:
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen(argv, env={**self.env, **env}, stdin=subprocess.DEVNULL,
                                         stdout=stdout, stderr=err, start_new_session=True)

    def failure(self, what: str) -> BenchError:
        tail = self.err.read_text(errors="replace").strip().splitlines()[-8:] \
            if self.err.exists() else []
        status = self.proc.poll() if self.proc is not None else None
        return BenchError(f"{self.name}: {what} (exit status {status}); its stderr ends:\n"
                          + "\n".join(tail or ["(empty)"]))

    def stop(self) -> None:
        """SIGTERM (mswatch ends its watchers and sync), SIGKILL to the group after a grace."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=STOP_GRACE)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_ready_line(side: Side, timeout: float = READY_TIMEOUT) -> None:
    """The watcher protocol's ready signal, an empty line, on the side's stdout."""
    assert side.proc is not None and side.proc.stdout is not None
    fd = side.proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise side.failure(f"not ready after {timeout:.0f} s")
        if select.select([fd], [], [], min(left, 0.2))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise side.failure("ended before it was ready")
            data += chunk
    if data.split(b"\n", 1)[0] != b"":
        raise side.failure(f"said {data[:80]!r} instead of its ready line")


def start_ours(side: Side, tools: dict[str, Path]) -> None:
    conf = side.work / "watch-imap.conf"
    conf.write_text(watch_imap_conf(side.server))
    rc = side.work / "mswatchrc"
    rc.write_text(
        "# mswatch at its fastest: a sync as soon as a change is reported, and no\n"
        "# wait between two syncs of one folder; no periodic full sync.\n"
        "base_delay 0\ninter_delay 0\npoll_period 0\n"
        f"sync {' '.join(quote(w) for w in side.sync_words())}\n"
        f"mailbox_prefix {ACCOUNT} :\n"
        f"store local {{ watch watch-maildirs -m {quote(side.local)} }}\n"
        f"store server {{ watch watch-imap -c {quote(conf)} -a {ACCOUNT} }}\n")
    log = side.work / "mswatch.log"
    side.spawn([str(tools["mswatch"]), "-f", "-c", str(rc), "--pid-file",
                str(side.work / "mswatch.pid"), "--log-file", str(log),
                "--hooks", str(side.work / "hooks")])

    def ready() -> bool:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "sync of all mailboxes failed" in text or side.proc.poll() is not None:
            raise side.failure("its first full sync failed or it ended:\n"
                               + "\n".join(text.splitlines()[-8:]))
        return "synced all mailboxes" in text

    if not common.wait_for(ready, READY_TIMEOUT, 0.05):
        raise side.failure(f"no full sync within {READY_TIMEOUT:.0f} s")


def start_peer(side: Side, node: str, node_path: Path) -> None:
    server = side.server
    # A first full sync, as mswatch does at its start: both sides then hold
    # every folder and its SyncState before the first delivery.
    done = subprocess.run([side.mbsync, "-q", "-c", str(side.rc), ACCOUNT], env=side.env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    if done.returncode != 0:
        raise BenchError(f"the peer's first full mbsync failed: {done.stderr.strip()[-400:]}")
    conf = side.work / "imapnotify.json"
    conf.write_text(json.dumps({
        "host": server.host, "port": server.imaps_port, "tls": True,
        "ca": str(server.ca_file), "username": server.user, "password": server.password,
        "boxes": FOLDERS,
        "onNotify": " ".join(shlex.quote(w) for w in side.sync_words()) + f" {ACCOUNT}:%s",
    }, indent=2))
    side.spawn([node, str(PEER_SCRIPT), str(conf)], stdout=subprocess.PIPE,
               NODE_PATH=str(node_path))
    wait_ready_line(side)


def start_watch_imap(side: Side, tools: dict[str, Path], idle: list[str]) -> None:
    """watch-imap alone (its stdout ours), for the connection count."""
    conf = side.work / "watch-imap-idle.conf"
    conf.write_text(watch_imap_conf(side.server, idle))
    side.spawn([str(tools["watch-imap"]), "-c", str(conf), "-a", ACCOUNT],
               stdout=subprocess.PIPE)
    wait_ready_line(side)


def settled_sessions(server) -> int:
    """Dovecot's logged-in sessions once the count has held for STABLE_FOR s."""
    value, since = server.sessions(), time.monotonic()
    deadline = since + STABLE_TIMEOUT
    while time.monotonic() - since < STABLE_FOR:
        if time.monotonic() > deadline:
            raise BenchError(f"the number of IMAP sessions did not settle in "
                             f"{STABLE_TIMEOUT:.0f} s (last {value})")
        time.sleep(0.1)
        now = server.sessions()
        if now != value:
            value, since = now, time.monotonic()
    return value


# ------------------------------------------------------- Dovecot's own timing


class BareClient:
    """A bare IMAP connection (the plain port: Dovecot trusts 127.0.0.1 with
    LOGIN); a thread stamps each line it receives with the epoch time."""

    def __init__(self, server, name: str) -> None:
        self.name = name
        self.sock = socket.create_connection((server.address, server.imap_port), timeout=10)
        self.sock.settimeout(None)
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        self.serial = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.command(f"LOGIN {server.user} {server.password}")

    def _read(self) -> None:
        try:
            for raw in self.sock.makefile("rb"):
                now = time.time()
                with self.lock:
                    self.lines.append((now, raw.decode("utf-8", "replace").rstrip("\r\n")))
        except OSError:
            pass

    def send(self, text: str) -> str:
        self.serial += 1
        tag = f"b{self.serial}"
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        return tag

    def find(self, test, after: float = 0.0) -> float | None:
        with self.lock:
            for when, line in self.lines:
                if when > after and test(line):
                    return when
        return None

    def expect(self, test, what: str, after: float = 0.0, timeout: float = 10.0) -> None:
        if not common.wait_for(lambda: self.find(test, after) is not None, timeout, 0.001):
            raise BenchError(f"bare {self.name} client: no {what} in {timeout:.0f} s")

    def command(self, text: str) -> None:
        tag = self.send(text)
        self.expect(lambda line: line.startswith(f"{tag} OK"), f"OK for {text.split()[0]}")

    def close(self) -> None:
        try:
            self.sock.sendall(b"DONE\r\nz LOGOUT\r\n")
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


class IdleProbe(BareClient):
    """IDLE on the folder of the next delivery (the peer's way)."""

    def arm(self, folder: str) -> None:
        self.folder = folder
        self.command(f"EXAMINE {folder}")
        sent = time.time()
        tag = self.send("IDLE")
        self.expect(lambda line: line.startswith("+"), f"IDLE continuation ({tag})", sent)

    def heard(self, after: float) -> float | None:
        return self.find(lambda line: line.startswith("* ") and line.endswith(" EXISTS"), after)

    def disarm(self) -> None:
        tag = f"b{self.serial}"
        self.sock.sendall(b"DONE\r\n")
        self.expect(lambda line: line.startswith(f"{tag} OK"), "end of IDLE")


class NotifyProbe(BareClient):
    """NOTIFY SET for every personal folder (ours' way)."""

    def __init__(self, server, name: str) -> None:
        super().__init__(server, name)
        self.command("NOTIFY SET (personal (MessageNew))")

    def heard(self, folder: str, after: float) -> float | None:
        return self.find(lambda line: line.startswith(f"* STATUS {folder} "), after)


# ------------------------------------------------------------------ latency


@dataclass
class Latency:
    samples: dict[str, list[float]] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    lda: list[float] = field(default_factory=list)
    seen: list[dict] = field(default_factory=list)  # per counted delivery: name -> latency
    syncs: dict[str, int] = field(default_factory=dict)
    # The longest time from a counted delivery to a sync start before the next
    # delivery: near SPACING, a side's syncs would run into the next round.
    last_start: dict[str, float] = field(default_factory=dict)


def observe(sides: list[Side], notify: NotifyProbe, idle: IdleProbe, folder: str,
            delivered: float, index: dict[str, int]) -> dict[str, float | None]:
    """When each side started a sync of `folder`, and each bare client heard
    of it, after `delivered`; None for what did not come within MISS_AFTER."""
    got: dict[str, float | None] = {s.name: None for s in sides}
    got.update({"Dovecot NOTIFY": None, "Dovecot IDLE": None})

    def look() -> bool:
        for side in sides:
            if got[side.name] is None:
                got[side.name] = side.log.first(f"{ACCOUNT}:{folder}", delivered,
                                                index[side.name])
        if got["Dovecot NOTIFY"] is None:
            got["Dovecot NOTIFY"] = notify.heard(folder, delivered)
        if got["Dovecot IDLE"] is None:
            got["Dovecot IDLE"] = idle.heard(delivered)
        return all(v is not None for v in got.values())

    common.wait_for(look, MISS_AFTER, 0.001)
    return got


def bench_latency(server, sides: list[Side], rounds: int) -> Latency:
    result = Latency()
    names = [s.name for s in sides] + ["Dovecot NOTIFY", "Dovecot IDLE"]
    for name in names:
        result.samples[name] = []
        result.misses[name] = 0
    deliveries: list[float] = []
    notify = NotifyProbe(server, "NOTIFY")
    idle = IdleProbe(server, "IDLE")
    try:
        first = {side.name: len(side.log.read()) for side in sides}
        for n in range(WARMUPS + rounds):
            counted = n >= WARMUPS
            folder = FOLDERS[n % len(FOLDERS)]
            began = time.monotonic()
            idle.arm(folder)
            if n == WARMUPS:
                first = {side.name: len(side.log.read()) for side in sides}
            index = {side.name: len(side.log.read()) for side in sides}
            lda_start = time.time()
            server.deliver(folder, MESSAGE % n)
            delivered = time.time()
            got = observe(sides, notify, idle, folder, delivered, index)
            idle.disarm()
            if counted:
                result.lda.append(delivered - lda_start)
                result.seen.append({k: (v - delivered if v is not None else None)
                                    for k, v in got.items()})
                for name in names:
                    when = got[name]
                    if when is None:
                        result.misses[name] += 1
                    else:
                        result.samples[name].append(when - delivered)
            if counted:
                deliveries.append(delivered)
            time.sleep(max(0.0, began + SPACING - time.monotonic()))
        time.sleep(SPACING)  # the last delivery's syncs
        for side in sides:
            starts = [when for when, _ in side.log.read()[first[side.name]:]]
            result.syncs[side.name] = len(starts)
            result.last_start[side.name] = max(
                (when - max(d for d in deliveries if d < when) for when in starts
                 if when > deliveries[0]), default=0.0)
    finally:
        notify.close()
        idle.close()
    return result


# ------------------------------------------------------------------ report


def stats_row(name: str, values: list[float], misses: int) -> list[str]:
    if not values:
        return [name, "-", "-", "-", "-", "-", "-", str(misses)]
    return [name, str(len(values)), ms(min(values)), ms(median(values)),
            ms(percentile(values, 90)), ms(percentile(values, 99)), ms(max(values)), str(misses)]


def times3(x: float) -> str:
    """A ratio of latencies: both sides wait 0.5 s for Dovecot, so the
    differences are in the third decimal."""
    return "n/a" if x != x else f"{x:.3f}x"


def paired(seen: list[dict], side: str, bare: str) -> float:
    """Median, per delivery, of a side's latency less the bare client's that
    shows what the side waits for (ours: NOTIFY; the peer: IDLE)."""
    diffs = [one[side] - one[bare] for one in seen
             if one[side] is not None and one[bare] is not None]
    return median(diffs) if diffs else float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark mswatch + watch-imap against an imapnotify stand-in.")
    parser.add_argument("--prefix", help="where roammail is installed [default: "
                        f"${common.PREFIX_ENV}, else {common.DEFAULT_PREFIX}]")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROUNDS} deliveries instead of {ROUNDS}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    common.add_summary_option(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    prefix = common.resolve_prefix(args.prefix)
    tools = common.installed_tools(prefix, ["mswatch", "watch-imap", "watch-maildirs"])
    interpreter = common.launcher_interpreter(tools["watch-imap"])[0]
    mbsync = shutil.which("mbsync")
    if mbsync is None:
        raise BenchError("mbsync is not installed: apt-get install isync")
    module, outcomes = import_dovecot()
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    tag = common.new_tag()
    root = Path(tempfile.mkdtemp(prefix="roammail-watch-imap-bench-"))
    servers = []
    sides: list[Side] = []
    started = time.monotonic()
    try:
        node, node_path, node_version = node_imap(tag)
        recorder = recorder_script(root)
        mode = "quick" if args.quick else "full"
        print("# watch-imap benchmark: mswatch + watch-imap vs imapnotify (node-imap)\n")
        print("```")
        for line in common.environment_lines(interpreter):
            print(line)
        print(f"roammail:       {version_of([str(tools['watch-imap']), '--version'])} "
              f"({prefix})")
        print(f"peer:           {PEER_SCRIPT.name} (stands in for imapnotify) on node "
              f"{node_version}, node-imap {installed_version(node_path)}")
        dovecot = shutil.which("dovecot", path="/usr/sbin:/usr/bin:/sbin:/bin") or "dovecot"
        print(f"server:         Dovecot {version_of([dovecot, '--version'])}, "
              f"{len(FOLDERS)} folders + INBOX; {version_of([mbsync, '--version'])}")
        print(f"mode:           {mode}: {WARMUPS} warm-up + {rounds} deliveries, one every "
              f"{SPACING:g} s, folders in turn; a miss after {MISS_AFTER:g} s; mswatch "
              "base_delay 0, inter_delay 0")
        print("```")
        sys.stdout.flush()

        others = common.OtherLoad()
        server = start_dovecot(module, outcomes, root / "dovecot", notify=True)
        servers.append(server)
        env_path = f"{prefix / 'bin'}:/usr/local/bin:/usr/bin:/bin"

        def side(name: str, where, directory: str) -> Side:
            home = root / directory
            made = Side(name, home, common.base_env(tag, home, PATH=env_path), recorder,
                        mbsync, where)
            sides.append(made)
            return made

        ours = side("mswatch + watch-imap", server, "ours")
        peer = side("imapnotify (node-imap)", server, "peer")

        # 1. connections, then 2. latency with both still running.
        base = settled_sessions(server)
        start_ours(ours, tools)
        with_ours = settled_sessions(server)
        start_peer(peer, node, node_path)
        with_both = settled_sessions(server)
        conns = {"ours": with_ours - base, "peer": with_both - with_ours}

        lat = bench_latency(server, [ours, peer], rounds)
        for one in (peer, ours):
            one.stop()

        # The IDLE fallback: a second Dovecot without NOTIFY.
        plain = start_dovecot(module, outcomes, root / "dovecot-idle", notify=False)
        servers.append(plain)
        ours_idle = side("watch-imap (IDLE fallback)", plain, "ours-idle")
        peer_idle = side("imapnotify (no NOTIFY server)", plain, "peer-idle")
        base = settled_sessions(plain)
        start_watch_imap(ours_idle, tools, ALL_FOLDERS)
        with_ours = settled_sessions(plain)
        start_peer(peer_idle, node, node_path)
        with_both = settled_sessions(plain)
        conns["ours idle"] = with_ours - base
        conns["peer idle"] = with_both - with_ours
        for one in (peer_idle, ours_idle):
            one.stop()

        print("\n## Delivery -> sync start (both sides at once, one Dovecot)\n")
        print(common.markdown_table(
            ["side", "n", "min", "median", "p90", "p99", "max", "missed"],
            [stats_row(name, lat.samples[name], lat.misses[name]) for name in lat.samples]))
        print(f"\nFrom dovecot-lda's return (it took {ms(median(lat.lda))} median).  "
              "Dovecot rows: bare clients, what the server itself tells a NOTIFY connection "
              "(ours' way) and an IDLE on the folder (the peer's).")
        print("\nSyncs started during the counted deliveries (each delivery, and anything "
              "it caused):")
        for one in (ours, peer):
            count = lat.syncs[one.name]
            print(f"- {one.name}: {count} for {rounds} deliveries "
                  f"({count / rounds:.2f} each); the latest started "
                  f"{ms(lat.last_start[one.name])} after its delivery (spacing "
                  f"{SPACING:g} s)")

        print("\n## IMAP connections held while idle (Dovecot sessions)\n")
        print(common.markdown_table(
            ["server", "ours", "watches", "peer", "watches"],
            [["NOTIFY", str(conns["ours"]), "all 21 folders (NOTIFY, INBOX examined)",
              str(conns["peer"]), f"{len(FOLDERS)} folders, one IDLE each"],
             ["no NOTIFY", str(conns["ours idle"]),
              f"idle = all 21: IDLE on the first {MAX_IDLE} (max_idle), STATUS poll of "
              f"the other {len(ALL_FOLDERS) - MAX_IDLE} every 5 min",
              str(conns["peer idle"]), f"{len(FOLDERS)} folders, one IDLE each"]]))

        busy = others.cpus()
        print(f"\nother processes used {busy:.2f} of {os.cpu_count()} CPUs on average "
              "during the run")
        if busy > NOISY_CPUS:
            print(f"WARNING: more than {NOISY_CPUS} CPUs of other load: the figures may be "
                  "noisy; compare with a run on a quiet machine")

        o_lat, p_lat = lat.samples[ours.name], lat.samples[peer.name]
        o_med = median(o_lat) if o_lat else float("nan")
        p_med = median(p_lat) if p_lat else float("nan")
        o_p99 = percentile(o_lat, 99) if o_lat else float("nan")
        p_p99 = percentile(p_lat, 99) if p_lat else float("nan")
        o_miss, p_miss = lat.misses[ours.name], lat.misses[peer.name]
        o_over = paired(lat.seen, ours.name, "Dovecot NOTIFY")
        p_over = paired(lat.seen, peer.name, "Dovecot IDLE")
        notify_met = conns["ours"] == 1 and conns["peer"] == len(FOLDERS)
        idle_met = conns["ours idle"] == MAX_IDLE + 1
        rows = [
            [f"delivery -> sync start, median ({rounds} deliveries)", ms(o_med), ms(p_med),
             times3(ratio(o_med, p_med)), "ours <= peer", "yes" if o_med <= p_med else "NO"],
            ["delivery -> sync start, p99", ms(o_p99), ms(p_p99), times3(ratio(o_p99, p_p99)),
             "", ""],
            ["time over Dovecot's own report, median", ms(o_over), ms(p_over),
             times(ratio(o_over, p_over)), "", ""],
            [f"deliveries missed (no sync in {MISS_AFTER:g} s)", str(o_miss), str(p_miss),
             "n/a", "0", "yes" if o_miss == 0 else "NO"],
            [f"connections, NOTIFY server, {len(FOLDERS)} folders", str(conns["ours"]),
             str(conns["peer"]), times(ratio(conns["ours"], conns["peer"])),
             f"1 vs {len(FOLDERS)}", "yes" if notify_met else "NO"],
            [f"connections, no NOTIFY, idle = 21, max_idle {MAX_IDLE}",
             str(conns["ours idle"]), str(conns["peer idle"]),
             times(ratio(conns["ours idle"], conns["peer idle"])),
             f"ours {MAX_IDLE} + 1", "yes" if idle_met else "NO"],
        ]
        print(f"\n## Summary ({mode} run, {time.monotonic() - started:.0f} s)\n")
        headers = ["metric", "mswatch + watch-imap", "imapnotify (node-imap)", "ours/peer",
                   "target", "met"]
        print(common.markdown_table(headers, rows))
        common.write_summary(args.summary, common.summary_rows(
            "watch-imap", headers, rows, metric="metric", ours="mswatch + watch-imap",
            peer="imapnotify (node-imap)", ratio="ours/peer", target="target", met="met"))
        return 0
    finally:
        for one in sides:
            try:
                one.stop()
            except (OSError, subprocess.TimeoutExpired):
                pass
        for server in servers:
            try:
                server.close()
            except RuntimeError as exc:
                print(f"watch_imap_bench: {exc}", file=sys.stderr)
        common.clean_up(tag, root, args.keep)


def main(argv: list[str] | None = None) -> int:
    return common.run_main("watch_imap_bench", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
