"""sshshare.py: one ssh connection for all the messages of a queue run.

An external whose command is ssh (`ssh -q host /usr/sbin/sendmail -t`)
costs a whole connection per message: TCP, key exchange, authentication,
several round trips each, which on a slow link dwarf the message itself.
`SshSharing` adds to such a command

    -o ControlMaster=auto -o ControlPath=DIR/NAME -o ControlPersist=30

so that the first message of a run opens a master connection and the
others are sessions over it, and closes every master it started
(`ssh -O exit`) when the run ends.  ControlPersist bounds the master's
life should extsmaild die without closing it: 30 seconds after its last
session.  A persisting master puts /dev/null on its standard input,
output and error, so it holds none of extsmaild's pipes.

It leaves a command alone when the user shares connections already:
-S, -M or any Control* option in the command itself, or a ControlMaster
or ControlPath that `ssh -G` reports from the user's ssh configuration.
`-o ControlMaster=no` in a command is therefore the way to opt out.

DIR is private: $XDG_RUNTIME_DIR/roammail when that is set, else
/tmp/roammail-UID, mode 0700, owned by us (refused otherwise), with
socket names short enough for a Unix socket's path.

It never runs an external itself, only `ssh -G` (no network) and
`ssh -O exit` (the local socket).
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading

PERSIST = 30  # seconds a master outlives its last session, extsmaild gone or not
CONTROL_TIMEOUT = 10.0  # seconds for `ssh -G` or `ssh -O exit`
CONTROL_OPTIONS = ("controlmaster", "controlpath", "controlpersist")
# ssh's options that take an argument (ssh(1), OpenSSH 9): "-p 22" is one option.
ARGUMENT_OPTIONS = frozenset("BbcDEeFIiJLlmOoPpQRSWw")


def is_ssh(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == "ssh"


def manages_sharing(argv: list[str]) -> bool:
    """True when the command's own options decide about connection sharing:
    -S, -M, or -o with a Control* option (before the remote command: ssh
    reads options on both sides of the host)."""
    words = iter(argv[1:])
    seen_host = False
    for word in words:
        if word == "--":
            return False
        if not word.startswith("-"):
            if seen_host:
                return False  # the remote command
            seen_host = True
            continue
        flags = word[1:]
        for i, flag in enumerate(flags):
            if flag == "M":
                return True
            if flag in ARGUMENT_OPTIONS:
                value = flags[i + 1:] or next(words, "")
                if flag == "S":
                    return True
                if flag == "o":
                    key = value.strip().split("=", 1)[0].split(None, 1)
                    if key and key[0].lower() in CONTROL_OPTIONS:
                        return True
                break
    return False


def configured_sharing(argv: list[str]) -> bool:
    """True when the user's ssh configuration shares connections for this
    command (`ssh -G`: ControlMaster other than no, or a ControlPath)."""
    try:
        out = subprocess.run([argv[0], "-G", *argv[1:]], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=CONTROL_TIMEOUT, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: do not touch it
    for line in out.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "controlmaster" and value.strip() not in ("false", "no"):
            return True
        if key == "controlpath" and value.strip() not in ("", "none"):
            return True
    return False


def private_dir(environ: dict) -> str:
    """The directory for the control sockets, made 0700 if missing."""
    from ..core import locations

    runtime = locations.xdg_runtime_dir(environ)
    if runtime is not None and os.path.isdir(runtime):
        path = os.path.join(runtime, "roammail")
    else:
        path = f"/tmp/roammail-{os.getuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of ours")
    return path


class SshSharing:
    """Decides, per external, whether its ssh command shares one connection
    in this run, and closes the masters at the end.  Thread-safe."""

    def __init__(self, environ: dict | None = None, enabled: bool = True) -> None:
        self.environ = dict(os.environ) if environ is None else environ
        self.enabled = enabled
        self._lock = threading.Lock()
        self._decided: dict[tuple, str | None] = {}  # argv -> control path, None: not shared
        self._dir: str | None = None
        self._used: dict[str, str] = {}  # control path -> the ssh program that made it

    def argv(self, name: str, argv: list[str]) -> list[str]:
        """The command to run for external `name`: argv, or argv with the
        sharing options when it is an ssh command that may share."""
        if not self.enabled or not is_ssh(argv):
            return argv
        key = tuple(argv)
        with self._lock:
            if key not in self._decided:
                self._decided[key] = self._path_for(name, argv)
            path = self._decided[key]
            if path is None:
                return argv
            self._used[path] = argv[0]
        return [argv[0], "-o", "ControlMaster=auto", "-o", f"ControlPath={path}",
                "-o", f"ControlPersist={PERSIST}", *argv[1:]]

    def _path_for(self, name: str, argv: list[str]) -> str | None:
        if manages_sharing(argv) or configured_sharing(argv):
            return None
        if self._dir is None:
            try:
                self._dir = private_dir(self.environ)
            except OSError:
                self.enabled = False
                return None
        import hashlib

        digest = hashlib.sha1("\0".join(argv).encode("utf-8", "surrogateescape")).hexdigest()
        return os.path.join(self._dir, f"ssh-{os.getpid()}-{digest[:10]}")

    def close(self) -> None:
        """End every master this run started (`ssh -O exit`), best effort."""
        with self._lock:
            used, self._used = self._used, {}
        for path, program in used.items():
            if not os.path.exists(path):
                continue
            try:
                subprocess.run([program, "-o", f"ControlPath={path}", "-O", "exit", "extsmaild"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=CONTROL_TIMEOUT, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
