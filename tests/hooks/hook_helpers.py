"""Helpers of the hook tests: run a hook, fake programs, a home ssh believes, a mailbox.

* `run_hook()` runs an installed hook the way smd does: argv only, working
  directory $HOME, stdin from /dev/null, bounded.
* `write_program()` puts a small sh script (a fake `mail` or `ssh`) in a bin dir.
* `SshHome`: a temporary home that OpenSSH itself takes for `~`.  OpenSSH
  finds ~/.ssh through the passwd entry, never $HOME (tests/peers/sshd.py),
  so the hook and every ssh of the test run under nss_wrapper with a passwd
  file naming this directory as the user's home.  That way the hook runs
  the plain `ssh` of a user, ~/.ssh/config has exactly the layout of the
  seed (ControlPath ~/.ssh/..., LocalCommand ln -sf ~/.ssh/...), and no
  socket or symlink lands in the real home.  The directory is short
  (/tmp/rmh-XXXXXXXX): a control socket path must stay below 104 bytes.
* `Mailbox`: the user's /var/mail mailbox; only what a test appended is
  read, and `cleanup()` removes it again.
"""

from __future__ import annotations

import email
import email.policy
import fcntl
import glob
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Mapping, Optional

from peers.require import find_program
from peers.sshd import SshServer
from peers.waiting import running as alive
from peers.waiting import wait_until

# A hook must be done long before this; the tests' own bound.
HOOK_TIMEOUT_S = 60.0
# dma hands a message to local delivery at once; this only absorbs a busy machine.
DELIVERY_TIMEOUT_S = 20.0
POLL_INTERVAL_S = 0.05
# Teardown: how long killed processes get to disappear.
KILL_WAIT_S = 5.0

NSS_WRAPPER_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
    "/usr/lib/*-linux-gnu/libnss_wrapper.so",
    "/usr/lib64/libnss_wrapper.so",
    "/usr/lib/libnss_wrapper.so",
)


def run_hook(hook: str | os.PathLike[str], *argv: str, env: Mapping[str, str],
             cwd: Optional[str | os.PathLike[str]] = None,
             timeout: float = HOOK_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run `hook argv...` as smd does (cwd $HOME unless given); capture its output."""
    return subprocess.run([os.fspath(hook), *argv], env=dict(env), cwd=cwd or env["HOME"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=timeout)


def write_program(bin_dir: Path, name: str, body: str) -> Path:
    """Write an executable `bin_dir/name` running the sh script `body`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body.rstrip("\n") + "\n")
    path.chmod(0o755)
    return path


def env_with_path_first(env: Mapping[str, str], *dirs: Path) -> dict[str, str]:
    result = dict(env)
    result["PATH"] = os.pathsep.join([*(os.fspath(d) for d in dirs),
                                      result.get("PATH", os.defpath)])
    return result






def find_nss_wrapper() -> Optional[str]:
    for pattern in NSS_WRAPPER_CANDIDATES:
        for path in sorted(glob.glob(pattern)):
            if os.access(path, os.R_OK):
                return path
    return None


# ------------------------------------------------------------------ ssh home

SEED_CONFIG = """\
Host {alias}
    ControlPath ~/.ssh/master-socket-%l-%r@%h:%p
    ControlMaster auto
    PermitLocalCommand yes
    LocalCommand ln -sf ~/.ssh/master-socket-%l-%r@%h:%p ~/.ssh/master-socket-{alias}
    BatchMode yes
    Compression yes
    Hostname {host}
    Port {port}
    User {user}
    IdentityFile ~/.ssh/id_ed25519
    UserKnownHostsFile ~/.ssh/known_hosts
"""

PLAIN_CONFIG = """\
Host {alias}
    Hostname {host}
    Port {port}
    User {user}
    IdentityFile ~/.ssh/id_ed25519
    UserKnownHostsFile ~/.ssh/known_hosts
    BatchMode yes
    ControlMaster auto
    ControlPath ~/.ssh/cm-%C
"""

NO_CONTROL_PATH_CONFIG = """\
Host {alias}
    Hostname {host}
    Port {port}
    User {user}
    IdentityFile ~/.ssh/id_ed25519
    UserKnownHostsFile ~/.ssh/known_hosts
    BatchMode yes
"""

MASTER_PID = re.compile(r"Master running \(pid=(\d+)\)")


@dataclass
class SshHome:
    """A home dir that the passwd entry (through nss_wrapper) and $HOME agree on."""

    home: Path
    sshd: SshServer
    env: dict[str, str]
    marker: str
    hosts: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, sshd: SshServer, nss_wrapper: str) -> SshHome:
        home = Path(tempfile.mkdtemp(prefix="rmh-", dir="/tmp"))
        home.chmod(0o700)
        sshd.install_home(home)  # the key and known_hosts; the config is ours
        (home / ".ssh" / "config").unlink()
        pw = pwd.getpwuid(os.getuid())
        group = grp.getgrgid(os.getgid()).gr_name
        nss = home / ".nss"
        nss.mkdir()
        passwd = nss / "passwd"
        passwd.write_text(f"{pw.pw_name}:x:{pw.pw_uid}:{pw.pw_gid}:roammail test:"
                          f"{home}:/bin/sh\n")
        (nss / "group").write_text(f"{group}:x:{pw.pw_gid}:\n")
        env = dict(os.environ)
        env.update(HOME=str(home), USER=pw.pw_name, LOGNAME=pw.pw_name,
                   LD_PRELOAD=nss_wrapper, NSS_WRAPPER_PASSWD=str(passwd),
                   NSS_WRAPPER_GROUP=str(nss / "group"))
        env.pop("SSH", None)
        env.pop("ROAMMAIL_SSH_HOST", None)
        env.pop("SSH_AUTH_SOCK", None)
        return cls(home, sshd, env, f"NSS_WRAPPER_PASSWD={passwd}")

    @property
    def dot_ssh(self) -> Path:
        return self.home / ".ssh"

    def write_ssh_config(self, template: str, alias: str, *, port: Optional[int] = None,
                         append: bool = False) -> None:
        text = template.format(alias=alias, host=self.sshd.host,
                               port=self.sshd.port if port is None else port,
                               user=self.sshd.user)
        config = self.dot_ssh / "config"
        old = config.read_text() + "\n" if append and config.exists() else ""
        config.write_text(old + text)
        config.chmod(0o600)
        self.hosts.append(alias)

    def write_smd_config(self, endpoint: str, text: str) -> Path:
        smd = self.home / ".smd"
        smd.mkdir(mode=0o700, exist_ok=True)
        path = smd / f"config.{endpoint}"
        path.write_text(text)
        return path

    def ssh(self, *argv: str, timeout: float = 30.0,
            env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess[str]:
        """Run the plain `ssh argv...` of this home's user."""
        return subprocess.run(["ssh", *argv], env=dict(env or self.env),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)

    def master_pid(self, alias: str) -> Optional[int]:
        """The pid `ssh -O check` reports for alias, None when no master answers."""
        result = self.ssh("-O", "check", alias, timeout=15)
        found = MASTER_PID.search(result.stderr)
        return int(found.group(1)) if result.returncode == 0 and found else None

    def processes(self) -> list[int]:
        """Live processes started under this home (the masters among them)."""
        marker = self.marker.encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if marker in environ.read().split(b"\0") and alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def ssh_processes(self) -> list[int]:
        result = []
        for pid in self.processes():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "ssh":
                result.append(pid)
        return result

    def cleanup(self) -> None:
        """Ask every master to exit, kill what is left of this home's processes."""
        for alias in dict.fromkeys(self.hosts):
            try:
                self.ssh("-O", "exit", alias, timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for signum in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            if wait_until(lambda: not self.processes(), KILL_WAIT_S):
                break
        shutil.rmtree(self.home, ignore_errors=True)


# ------------------------------------------------------------------- mailbox

def mail_programs_present() -> bool:
    return find_program("mail") is not None and find_program("dma") is not None


class Mailbox:
    """The user's mailbox in /var/mail; tests look only at what they appended."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.path = Path("/var/mail") / user
        # Subject markers of the test's mails: cleanup() removes only those.
        self.markers: list[str] = []
        try:
            self.start = self.path.stat().st_size
            self.existed = True
        except FileNotFoundError:
            self.start = 0
            self.existed = False

    def appended(self) -> bytes:
        try:
            with open(self.path, "rb") as mbox:
                mbox.seek(self.start)
                return mbox.read()
        except FileNotFoundError:
            return b""

    def messages(self) -> list[EmailMessage]:
        """The messages appended since the test began, parsed."""
        chunks = re.split(rb"(?m)^From (?=\S+ )", self.appended())
        result = []
        for chunk in chunks:
            if not chunk.strip():
                continue
            _, _, message = chunk.partition(b"\n")  # drop the rest of the "From " line
            result.append(email.message_from_bytes(message, policy=email.policy.default))
        return result

    def matching(self, marker: str) -> list[EmailMessage]:
        """Appended messages with `marker` in their subject or body."""
        return [m for m in self.messages()
                if marker in str(m.get("Subject", "")) or marker in m.get_content()]

    def wait_for(self, marker: str, count: int,
                 timeout: float = DELIVERY_TIMEOUT_S) -> list[EmailMessage]:
        """Wait until `count` messages with `marker` arrived; return them (maybe fewer)."""
        wait_until(lambda: len(self.matching(marker)) >= count, timeout)
        return self.matching(marker)

    def settle(self) -> None:
        """Return once every mail handed to dma before now has been delivered.

        A sentinel goes through `mail` after the test's mails; once it is in
        the mailbox and dma's queue is empty, nothing sent earlier is on its
        way any more, so "no further mail" can be asserted.
        """
        sentinel = f"roammail-settle-{os.getpid()}-{time.monotonic_ns()}"
        mail = find_program("mail") or "mail"
        subprocess.run([mail, "-s", sentinel, "--", self.user], input="settle\n",
                       text=True, capture_output=True, timeout=30, check=True)
        self.wait_for(sentinel, 1)
        wait_until(lambda: not any(Path("/var/spool/dma").glob("Q*")), DELIVERY_TIMEOUT_S)

    def cleanup(self) -> None:
        """Cut the mailbox back to its start if all that was appended is ours."""
        ours = (*self.markers, "roammail-settle-")
        try:
            with open(self.path, "r+b") as mbox:
                fcntl.flock(mbox, fcntl.LOCK_EX)  # as dma locks it for delivery
                mbox.seek(self.start)
                tail = mbox.read()
                chunks = [c for c in re.split(rb"(?m)^From (?=\S+ )", tail) if c.strip()]
                if all(any(m.encode() in c for m in ours) for c in chunks):
                    mbox.truncate(self.start)
                    empty = self.start == 0
                else:
                    empty = False
        except FileNotFoundError:
            return
        if empty and not self.existed:
            self.path.unlink(missing_ok=True)
