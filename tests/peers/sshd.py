"""A real OpenSSH server on 127.0.0.1 for tests that run tools over ssh.

`SshServer.start()` builds everything in a fresh temp dir: an ed25519 host key
and user key (no passphrase), authorized_keys, an sshd_config, a client
ssh_config with one `Host testhost` entry, and a known_hosts file already
holding the host key (so `StrictHostKeyChecking yes` works).  sshd runs in
the foreground (`-D`) and logs at VERBOSE level to `log_path`, so tests can
count logins (`count_accepted()`).

How a tool under test reaches the server (all verified in tests/test_peers.py):

* `ssh -F CONFIG testhost ...` -- `ssh_command()` returns that argv prefix.
  This is the dependable way: with -F, /etc/ssh/ssh_config and ~/.ssh/config
  are not read at all.
* A tool that runs plain `ssh testhost ...` through PATH: put `client_bin`
  first on its PATH (`client_env()` does it).  It holds an `ssh` wrapper that
  execs the real ssh with `-F CONFIG`.  `write_ssh_wrapper()` makes another
  one with per-test remote PATH/HOME.
* `HOME=dir ssh testhost` does NOT work, even after `install_home(dir)`:
  OpenSSH finds ~/.ssh/config, ~/.ssh/id_* and ~/.ssh/known_hosts, and expands
  `~` in its config, through the passwd entry (getpwuid), never through
  $HOME.  `install_home()` is still useful for tools that read their own
  files under $HOME, and for a wrapper or `-F DIR/.ssh/config`; its files use
  absolute paths for that reason.

The far side: sshd runs every session through a ForceCommand script
(`session.sh`) that, after the login shell has read its rc files (bash reads
~/.bashrc for ssh commands and may prepend to PATH), puts
`$ROAMMAIL_TEST_PATH` (if the client sent it) and then `remote_bin` first on
PATH, sets HOME (and cds there) from `$ROAMMAIL_TEST_HOME` if sent, and runs
the client's command with `/bin/sh -c`.  Without a command it execs the login
shell with -l.  Clients send these variables with `-o SetEnv=...`
(`ssh_command(remote_path=..., remote_home=...)`); the server accepts only
those two.  `remote_bin` is shared by the whole session: prefer a per-test
`remote_path`.

Teardown (`stop()`) stops the listener, then freezes (SIGSTOP) and kills
(SIGKILL) every process of the server: its descendants (each connection and
each session runs in its own setsid() session, so a process group kill is not
enough) and any process carrying the server's `ROAMMAIL_TEST_SSHD` token in
its environment (which catches daemons that double-forked away from the
tree).  Then the temp dir is removed.  Process discovery uses /proc (Linux);
elsewhere only sshd itself is killed.

Runs as root (PermitRootLogin prohibit-password; /run/sshd, the privilege
separation dir, is created if missing and left in place) or as a normal user
(who can then log in only as themself).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import pytest

from peers import proctable
from peers.require import require_program

HOST_ALIAS = "testhost"
LISTEN_ADDRESS = "127.0.0.1"
# sshd generates nothing at start-up (keys are made beforehand); it listens
# within milliseconds, 10 s only absorbs a loaded CI machine.
START_TIMEOUT_S = 10.0
# Free port picking races other processes; a few fresh ports are enough.
BIND_ATTEMPTS = 5
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.02
SSH_RUN_TIMEOUT_S = 30.0
PRIVSEP_DIR = "/run/sshd"
TOKEN_VAR = "ROAMMAIL_TEST_SSHD"
REMOTE_PATH_VAR = "ROAMMAIL_TEST_PATH"
REMOTE_HOME_VAR = "ROAMMAIL_TEST_HOME"
SFTP_SERVER_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/ssh/sftp-server",
)
# Options newer sshd versions have and older ones reject; dropped when `sshd -t`
# calls them bad.  PerSourcePenalties (9.8+) would otherwise lock out loopback
# after the failing connections fault-injection tests make on purpose.
OPTIONAL_SSHD_OPTIONS = ("PerSourcePenalties no",)

SESSION_SCRIPT = """\
#!/bin/sh
# ForceCommand of the test sshd (tests/peers/sshd.py).  The login shell has
# already read its rc files; put the test's directories first on PATH now,
# then run what the client asked for with /bin/sh.
PATH="${{{path_var}:+${{{path_var}}}:}}"{remote_bin}":$PATH"
export PATH
if [ -n "${{{home_var}:-}}" ]; then
    HOME=${home_var}
    export HOME
    cd "$HOME" || {{ echo "session.sh: cannot cd to $HOME" >&2; exit 126; }}
fi
unset {path_var} {home_var}
if [ -z "${{SSH_ORIGINAL_COMMAND+set}}" ]; then
    exec "${{SHELL:-/bin/sh}}" -l
fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


def free_port(host: str = LISTEN_ADDRESS) -> int:
    """Return a TCP port on `host` that was free a moment ago (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _setenv_option(remote_path: Sequence[str | os.PathLike[str]],
                   remote_home: Optional[str | os.PathLike[str]]) -> list[str]:
    """`-o SetEnv=...` arguments asking session.sh for a remote PATH/HOME."""
    assignments = []
    if remote_path:
        assignments.append(f"{REMOTE_PATH_VAR}={':'.join(os.fspath(p) for p in remote_path)}")
    if remote_home is not None:
        assignments.append(f"{REMOTE_HOME_VAR}={os.fspath(remote_home)}")
    for assignment in assignments:
        if re.search(r'[\s"\'\\]', assignment):
            raise ValueError(f"remote path/home must not contain blanks or quotes: {assignment!r}")
    return ["-o", "SetEnv=" + " ".join(assignments)] if assignments else []


class SshServer:
    """One running sshd on 127.0.0.1 plus client files; see the module docstring.

    Attributes: host_alias ("testhost"), host ("127.0.0.1"), port, user,
    workdir, config_path (client ssh_config, for `ssh -F`), identity (user
    private key), known_hosts, log_path, sshd_config_path, remote_bin,
    client_bin, ssh_path (the real ssh).
    """

    def __init__(self, workdir: Path, *, remove_workdir: bool = True,
                 host: str = LISTEN_ADDRESS, launch_prefix: Sequence[str] = ()) -> None:
        self.host_alias = HOST_ALIAS
        self.host = host
        self._launch_prefix = list(launch_prefix)
        self.workdir = workdir
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = 0
        self.ssh_path = require_program("ssh")
        self._sshd_path = require_program("sshd")
        self._keygen_path = require_program("ssh-keygen")
        self.config_path = workdir / "ssh_config"
        self.identity = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.log_path = workdir / "sshd.log"
        self.sshd_config_path = workdir / "sshd_config"
        self.remote_bin = workdir / "remote-bin"
        self.client_bin = workdir / "client-bin"
        self._host_key = workdir / "host_ed25519"
        self._authorized_keys = workdir / "authorized_keys"
        self._pid_file = workdir / "sshd.pid"
        self._session_script = workdir / "session.sh"
        self._token = secrets.token_hex(16)
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._remove_workdir = remove_workdir

    # ----------------------------------------------------------------- start

    @classmethod
    def start(cls, workdir: Optional[Path] = None, *, host: str = LISTEN_ADDRESS,
              launch_prefix: Sequence[str] = ()) -> SshServer:
        """Create keys and configs and start sshd; return once it listens.

        With no `workdir` a fresh temp dir is made and removed by `stop()`;
        a given `workdir` is left in place.  Skips (fails in CI) when OpenSSH
        is missing or the user cannot log in.  `host` is the address sshd
        listens on (and clients connect to); `launch_prefix` is put before
        sshd's command line, e.g. `ip netns exec NAME` for a server inside
        a network namespace that has `host` (the port is then one free on
        127.0.0.1 here, which a fresh namespace leaves free too).
        """
        if workdir is None:
            server = cls(Path(tempfile.mkdtemp(prefix="roammail-sshd-")), host=host,
                         launch_prefix=launch_prefix)
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            server = cls(workdir, remove_workdir=False, host=host,
                         launch_prefix=launch_prefix)
        try:
            server._prepare()
            server._launch()
            server._write_client_files()
        except BaseException:
            server.stop()
            raise
        return server

    def _prepare(self) -> None:
        shell = pwd.getpwuid(os.getuid()).pw_shell
        if os.path.basename(shell) in ("nologin", "false"):
            pytest.skip(f"user {self.user} has login shell {shell}: sshd cannot run commands")
        if os.geteuid() == 0:
            # sshd refuses to start as root without its privilege separation dir.
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        self._keygen(self._host_key, "roammail-test-host")
        self._keygen(self.identity, "roammail-test-user")
        shutil.copyfile(self.identity.with_suffix(".pub"), self._authorized_keys)
        self._authorized_keys.chmod(0o600)
        self.remote_bin.mkdir(mode=0o755)
        self.client_bin.mkdir(mode=0o755)
        self._session_script.write_text(SESSION_SCRIPT.format(
            path_var=REMOTE_PATH_VAR, home_var=REMOTE_HOME_VAR,
            remote_bin=shlex.quote(str(self.remote_bin))))
        self._session_script.chmod(0o755)

    def _keygen(self, path: Path, comment: str) -> None:
        subprocess.run(
            [self._keygen_path, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)

    def _sshd_config(self, optional: Iterable[str]) -> str:
        sftp = next((p for p in SFTP_SERVER_CANDIDATES if os.access(p, os.X_OK)), None)
        lines = [
            "# Generated by tests/peers/sshd.py for one test session.",
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            "AddressFamily inet",
            f"HostKey {self._host_key}",
            f"AuthorizedKeysFile {self._authorized_keys}",
            f"AllowUsers {self.user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            f"PidFile {self._pid_file}",
            "PermitRootLogin prohibit-password",
            "PermitUserEnvironment no",
            "MaxStartups 100",
            "MaxSessions 100",
            "AllowTcpForwarding yes",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "LogLevel VERBOSE",
            f"SetEnv {TOKEN_VAR}={self._token}",
            f"AcceptEnv {REMOTE_PATH_VAR} {REMOTE_HOME_VAR}",
            f"ForceCommand {self._session_script}",
        ]
        if sftp is not None:
            lines.append(f"Subsystem sftp {sftp}")
        lines.extend(optional)
        return "\n".join(lines) + "\n"

    def _write_sshd_config(self) -> None:
        """Write sshd_config for self.port, dropping optional options sshd rejects."""
        optional = list(OPTIONAL_SSHD_OPTIONS)
        for _ in range(len(OPTIONAL_SSHD_OPTIONS) + 1):
            self.sshd_config_path.write_text(self._sshd_config(optional))
            check = subprocess.run(
                [self._sshd_path, "-t", "-f", str(self.sshd_config_path)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
            if check.returncode == 0:
                return
            rejected = [o for o in optional if o.split()[0] in check.stderr]
            if not rejected:
                break
            optional = [o for o in optional if o not in rejected]
        raise RuntimeError(f"sshd -t -f {self.sshd_config_path} failed: {check.stderr.strip()}")

    def _launch(self) -> None:
        for _ in range(BIND_ATTEMPTS):
            self.port = free_port()
            self._write_sshd_config()
            self.log_path.write_bytes(b"")
            self._proc = subprocess.Popen(
                [*self._launch_prefix, self._sshd_path, "-D", "-e", "-E", str(self.log_path),
                 "-f", str(self.sshd_config_path)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            if self._wait_listening():
                return
            self._proc.wait(timeout=STOP_TIMEOUT_S)
            self._proc = None
            if "Address already in use" not in self.log_text():
                break
        raise RuntimeError(f"sshd did not start; {self.log_path}:\n{self.log_text()}")

    def _wait_listening(self) -> bool:
        """True once sshd logs that it listens; False if it exited first."""
        assert self._proc is not None
        ready = f"Server listening on {self.host} port {self.port}."
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if ready in self.log_text():
                return True
            if self._proc.poll() is not None:
                return False
            time.sleep(POLL_INTERVAL_S)
        self._proc.kill()
        raise RuntimeError(f"sshd not listening after {START_TIMEOUT_S} s:\n{self.log_text()}")

    def _client_config(self, identity: Path, known_hosts: Path) -> str:
        return "\n".join([
            "# Generated by tests/peers/sshd.py: the test sshd.",
            f"Host {HOST_ALIAS}",
            f"    HostName {self.host}",
            f"    Port {self.port}",
            f"    User {self.user}",
            f"    IdentityFile {identity}",
            "    IdentitiesOnly yes",
            "    IdentityAgent none",
            f"    UserKnownHostsFile {known_hosts}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    UpdateHostKeys no",
            "    BatchMode yes",
            "    LogLevel ERROR",
            "    ConnectTimeout 5",
            "    ControlMaster no",
            "    ControlPath none",
            "",
        ])

    def _known_hosts_line(self) -> str:
        host_pub = self._host_key.with_suffix(".pub").read_text().split()
        return f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n"

    def _write_client_files(self) -> None:
        self.known_hosts.write_text(self._known_hosts_line())
        self.config_path.write_text(self._client_config(self.identity, self.known_hosts))
        self.write_ssh_wrapper(self.client_bin)

    # ------------------------------------------------------------ client API

    def ssh_command(self, *, remote_path: Sequence[str | os.PathLike[str]] = (),
                    remote_home: Optional[str | os.PathLike[str]] = None) -> list[str]:
        """Return [ssh, "-F", config_path, options...]; append "testhost" and a command.

        `remote_path` dirs go first on the remote PATH, `remote_home` becomes
        the remote HOME and working directory (no blanks or quotes in either).
        """
        return [self.ssh_path, "-F", str(self.config_path),
                *_setenv_option(remote_path, remote_home)]

    def write_ssh_wrapper(self, bin_dir: str | os.PathLike[str], *,
                          remote_path: Sequence[str | os.PathLike[str]] = (),
                          remote_home: Optional[str | os.PathLike[str]] = None) -> Path:
        """Write an executable `bin_dir/ssh` that runs `ssh_command(...)` "$@"; return it.

        With `bin_dir` first on PATH, a tool running plain `ssh testhost`
        reaches this server.
        """
        wrapper = Path(bin_dir) / "ssh"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        argv = self.ssh_command(remote_path=remote_path, remote_home=remote_home)
        wrapper.write_text("#!/bin/sh\n# The test sshd (tests/peers/sshd.py).\n"
                           f'exec {shlex.join(argv)} "$@"\n')
        wrapper.chmod(0o755)
        return wrapper

    def client_env(self, env: Optional[Mapping[str, str]] = None, *,
                   home: Optional[str | os.PathLike[str]] = None) -> dict[str, str]:
        """Return a copy of `env` (default os.environ) with `client_bin` first on PATH.

        `home`, if given, becomes HOME.  Plain `ssh testhost` then works.
        """
        result = dict(os.environ if env is None else env)
        result["PATH"] = os.pathsep.join(
            [str(self.client_bin)] + [p for p in result.get("PATH", os.defpath).split(os.pathsep)
                                      if p])
        if home is not None:
            result["HOME"] = os.fspath(home)
        return result

    def install_home(self, home_dir: str | os.PathLike[str]) -> Path:
        """Write home_dir/.ssh/{config,id_ed25519,id_ed25519.pub,known_hosts}; return .ssh.

        The dir is mode 0700, the files 0600; the config names the key and
        known_hosts by absolute path.  OpenSSH itself ignores $HOME (see the
        module docstring): use `-F home_dir/.ssh/config` or a wrapper.
        """
        dot_ssh = Path(home_dir) / ".ssh"
        dot_ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        dot_ssh.chmod(0o700)
        files = {
            "id_ed25519": self.identity.read_bytes(),
            "id_ed25519.pub": self.identity.with_suffix(".pub").read_bytes(),
            "known_hosts": self._known_hosts_line().encode(),
            "config": self._client_config(dot_ssh / "id_ed25519",
                                          dot_ssh / "known_hosts").encode(),
        }
        for name, data in files.items():
            path = dot_ssh / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            path.chmod(0o600)
        return dot_ssh

    # --------------------------------------------------------------- the log

    def log_text(self) -> str:
        """The sshd log so far ("" if not there yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count_accepted(self) -> int:
        """Number of successful logins so far ("Accepted publickey" log lines)."""
        return self.log_text().count("Accepted publickey for ")

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until `text` occurs `count` times in the log; False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.log_text().count(text) >= count:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)

    # ------------------------------------------------------------------ stop

    @property
    def pid(self) -> Optional[int]:
        """Pid of the listening sshd, None when stopped."""
        return self._proc.pid if self._proc is not None else None

    def session_processes(self) -> set[int]:
        """Pids of the processes this server started (descendants and token holders)."""
        if self._proc is None:
            return set()
        return {pid for pid, _ in _server_processes(self._proc.pid, self._token)}

    def stop(self) -> None:
        """Kill sshd and every session process, then remove the temp dir.  Idempotent."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None:
                _kill_server(proc, self._token)
        finally:
            if self._remove_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def ssh_run(sshd: SshServer, *remote_argv: str | os.PathLike[str], shell: bool = False,
            remote_path: Sequence[str | os.PathLike[str]] = (),
            remote_home: Optional[str | os.PathLike[str]] = None,
            timeout: float = SSH_RUN_TIMEOUT_S, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Run `remote_argv` on the test sshd via `ssh -F`; return the CompletedProcess.

    The argv is quoted for the remote /bin/sh; with shell=True the single
    argument is passed as a shell command line instead.  Defaults:
    capture_output=True, text=True, stdin from /dev/null unless `input` is
    given, check=False.  Other keyword arguments go to subprocess.run.
    """
    if shell:
        if len(remote_argv) != 1:
            raise ValueError("shell=True takes one command string")
        command = os.fspath(remote_argv[0])
    else:
        command = shlex.join(os.fspath(a) for a in remote_argv)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    argv = sshd.ssh_command(remote_path=remote_path, remote_home=remote_home)
    return subprocess.run([*argv, sshd.host_alias, command], timeout=timeout, **kwargs)


# ------------------------------------------------------------- process reaping

def _server_processes(master: int, token: str) -> set[proctable.ProcKey]:
    """The master's descendants (not the master) and the holders of the token."""
    table = proctable.live_table()
    marker = f"{TOKEN_VAR}={token}".encode()
    found = proctable.tree([master], table) - {master}
    found.update(pid for pid in table
                 if pid not in found and pid != master and proctable.environ_has(pid, marker))
    return proctable.keys(found, table)


def _kill_server(proc: subprocess.Popen[bytes], token: str) -> None:
    """Freeze the whole server (no more forks), kill it all, wait (bounded)."""
    proctable.kill_all(proc, lambda: _server_processes(proc.pid, token), "test sshd")


__all__ = ["HOST_ALIAS", "SshServer", "free_port", "ssh_run"]
