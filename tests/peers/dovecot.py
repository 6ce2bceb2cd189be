"""A real Dovecot IMAP server on 127.0.0.1 for tests of IMAP clients.

`DovecotServer.start(workdir)` writes a config, a passwd-file with one user
(default "tester", password "secret"), the server's certificate and key, and
starts the Dovecot master in the foreground; it returns once both ports
accept connections and greet (plain IMAP on `imap_port`, STARTTLS offered;
IMAP over TLS on `imaps_port`).  A start that fails raises RuntimeError with
the tail of the Dovecot log.

Attributes: host ("localhost": the name in the certificate; mbsync checks
the host name and accepts no IP subjectAltName, so clients connect to
"localhost"), address ("127.0.0.1", where it listens), imap_port,
imaps_port, ca_file (the CA that signed the certificate), other_ca_file (an
unrelated CA: verification against it fails), user, password, notify,
directory (the server's files), private (True when directory is a temp dir
that close() removes), config_path, log_path, home (the user's home),
maildir (the user's INBOX), run_as (the Unix user the server runs as),
tunnel_path, pid (the master's, None when not running).

Mail and folders.  Folders are named as the server names them: hierarchy
delimiter "." (Maildir++), non-ASCII in modified UTF-7 ("Caf&AOk-" is
"Café"; `imap_utf7_encode()`/`imap_utf7_decode()` convert).  Folder NAME is
the maildir `maildir/.NAME`, INBOX is `maildir` itself (`folder_path()`).

* `client()`: an imaplib.IMAP4_SSL logged in over imaps, verified against
  ca_file; log out, or use it as a context manager.  `ssl_context()` is the
  verifying context it uses.
* `create_folder(name)`: IMAP CREATE.
* `deliver(folder, message)`: through dovecot-lda as the user, reported to
  NOTIFY clients within about 0.5 s.  LDA takes the folder in UTF-8 and
  silently delivers to INBOX when the folder is missing, so deliver()
  refuses a missing folder (FileNotFoundError) and checks afterwards that
  exactly one new message is in the folder (RuntimeError otherwise).
* `deliver_raw(folder, message)`: writes the file straight into the maildir
  (tmp/, then rename into new/, owned by the run-as user, mode 0600) and
  returns its path.  Dovecot does NOT tell NOTIFY clients about such a file
  until something makes it look at that folder; a client that has the
  folder selected and is in IDLE does hear of it (inotify).
* `append(folder, message)`: IMAP APPEND (reported like deliver()).
* `end_sessions()`: SIGTERM to every logged-in session (BYE, then closed).

Tunnel.  `tunnel_command()` (a /bin/sh command line) and `tunnel_argv()` run
a PREAUTH IMAP session for the user on stdin/stdout, which is what an IMAP
client's `Tunnel` setting runs: the greeting is `* PREAUTH [CAPABILITY ...]
Logged in as tester`.  It is a script (`tunnel_path`) that execs Dovecot's
imap binary as the run-as user with HOME and USER set; its log lines (a
standalone imap logs to stderr) are appended to log_path.  The imap binary
reads the config itself: a tunnel session works while the master is killed
or stopped, and freeze() stops only the sessions already running.

NOTIFY.  Dovecot advertises NOTIFY after login.  `notify=False` sets
`imap_capability` to the server's own post-login list (asked from a PREAUTH
session before the master starts) without NOTIFY.  `sasl_ir=False` leaves
SASL-IR out of it the same way, and so out of the greeting's list: clients
must wait for "+" before their first AUTHENTICATE message.

OAuth 2.0.  `oauth2_introspection_url=URL` adds XOAUTH2 and OAUTHBEARER
(RFC 7628) to the mechanisms, checked by Dovecot's oauth2 passdb: every
token is POSTed as `token=...` to URL (an RFC 7662 introspection endpoint
the test serves on 127.0.0.1), which must answer 200 with
{"active": true, "username": USER} for a token that is good; anything else
refuses it.  PLAIN and LOGIN still take the password.

Link and server failures.  `freeze()` sends SIGSTOP to every process of the
instance (connections stay open and go silent; new connections are
accepted by the kernel and never greeted), `thaw()` sends SIGCONT.
`kill()` sends SIGKILL to all (data and config stay); `restart()` starts
again on the same ports and waits until both greet.  `stop()` is a clean
stop (SIGTERM to the master, after thawing; about a second, which is how
long the master waits for its log process), bounded, idempotent, and then
kills whatever is left, tunnel sessions included; `close()`, for teardown,
is kill() plus removing a private directory (below).  kill(), stop() and
close() raise RuntimeError if a process survives.

Processes.  `processes()` is every live process of this instance: the
master, its descendants, and any process whose command line names this
instance's config, tunnel script or instance name (Dovecot rewrites its
children's titles to "dovecot-INSTANCE/SERVICE", which finds them even
after the master is gone; tunnel sessions and dovecot-lda name the config).
`sessions()` counts the logged-in IMAP sessions: every session, network or
tunnel, is one process of Dovecot's `imap` binary (the config pins
`client_limit = 1` and `service_count = 1`, so a process serves one session
and exits when it ends; hibernation is off), and the imap process exists
from the moment a login succeeds.  Right after a LOGOUT the process may
live a few milliseconds more: use `wait_for_sessions(count)`.  (`doveadm
who` would not see tunnel sessions.)

Users.  Dovecot refuses mail access as root, so as root the server runs as
the system user `roammail-test` (./test.sh creates it; without it the test
is skipped, or fails in CI) through `setpriv`; otherwise as the current
user.  The server's files must be reachable by that user: `workdir` is used
when every directory above it is searchable by the run-as user, otherwise
(pytest's tmp_path is under /tmp/pytest-of-root, mode 0700) a private
directory is made under the temp dir and removed by close().  Dovecot's
sockets live in DIRECTORY/run, or, when that path is too long for a Unix
socket (a deep tmp_path), in a short temp dir that close() removes.

Certificates.  `make_certificates(dir)` makes a test CA, a server
certificate signed by it (subjectAltName DNS:localhost and IP:127.0.0.1)
and an unrelated CA.  Key generation costs time: make them once per test
session (fixture `dovecot_certificates`) and pass `certificates=` to
start(); without it, one set per process is made and reused.  Each server
copies the files into its own directory.

Servers that are still running when the Python process exits are closed by
an atexit hook, so a forgotten server does not outlive the test run.
"""

from __future__ import annotations

import atexit
import grp
import imaplib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from peers import proctable
from peers.maildirs import unique_name
from peers.require import require_executable, require_program, require_user
from peers.sshd import free_port

HOST = "localhost"
ADDRESS = "127.0.0.1"
RUN_AS_USER = "roammail-test"
LIBEXEC_DIRS = ("/usr/lib/dovecot", "/usr/libexec/dovecot", "/usr/local/libexec/dovecot")
# Dovecot starts in well under a second; 10 s only absorbs a loaded CI machine.
START_TIMEOUT_S = 10.0
# The master stops its children and exits within a fraction of a second.
STOP_TIMEOUT_S = 5.0
# dovecot-lda, openssl, the capability probe: each takes milliseconds.
RUN_TIMEOUT_S = 30.0
CLIENT_TIMEOUT_S = 10.0
GREETING_TIMEOUT_S = 2.0
# Free port picking races other processes; a few fresh ports are enough.
BIND_ATTEMPTS = 5
POLL_INTERVAL_S = 0.02
LOG_TAIL_LINES = 40
CERT_DAYS = 30
MAX_GREETING_BYTES = 4096
# sun_path holds 108 bytes; Dovecot's longest socket below base_dir is
# "token-login/imap-urlauth" (24), so leave room for names up to 40.
MAX_BASE_DIR_BYTES = 107 - 40



# ------------------------------------------------------------- certificates

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = {cn}
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_SERVER_REQUEST_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
"""

_SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Certificates:
    """Files made by make_certificates(); PEM, keys unencrypted."""

    directory: Path
    ca_file: Path        # the test CA's certificate
    cert_file: Path      # the server certificate, signed by the test CA
    key_file: Path       # its private key
    other_ca_file: Path  # an unrelated CA's certificate


def _openssl(openssl: str, *args: str, cwd: Path) -> None:
    result = subprocess.run([openssl, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _make_ca(openssl: str, directory: Path, name: str, cn: str) -> Path:
    config = directory / f"{name}.cnf"
    config.write_text(_CA_CONFIG.format(cn=cn))
    _openssl(openssl, "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-days", str(CERT_DAYS), "-config", config.name, "-keyout", f"{name}.key",
             "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem"


def make_certificates(directory: Path) -> Certificates:
    """Make a test CA, a server certificate it signs, and an unrelated CA in `directory`.

    The server certificate names CN=localhost with subjectAltName
    DNS:localhost and IP:127.0.0.1, is valid from now for CERT_DAYS days and
    carries the extensions strict verifiers want (key usage, key ids).
    Skips (fails in CI) without openssl.
    """
    openssl = require_program("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = _make_ca(openssl, directory, "ca", "roammail test CA")
    other_ca_file = _make_ca(openssl, directory, "other-ca", "roammail unrelated test CA")
    (directory / "server.cnf").write_text(_SERVER_REQUEST_CONFIG)
    (directory / "server.ext").write_text(_SERVER_EXTENSIONS)
    _openssl(openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-config", "server.cnf",
             "-keyout", "key.pem", "-out", "server.csr", cwd=directory)
    _openssl(openssl, "x509", "-req", "-in", "server.csr", "-CA", ca_file.name,
             "-CAkey", "ca.key", "-set_serial", "0x" + secrets.token_hex(8), "-sha256",
             "-days", str(CERT_DAYS), "-extfile", "server.ext", "-out", "cert.pem",
             cwd=directory)
    return Certificates(directory=directory, ca_file=ca_file,
                        cert_file=directory / "cert.pem", key_file=directory / "key.pem",
                        other_ca_file=other_ca_file)


_shared_certificates: Optional[Certificates] = None


def _default_certificates() -> Certificates:
    """One set of certificates per process, in a temp dir removed at exit."""
    global _shared_certificates
    if _shared_certificates is None:
        directory = Path(tempfile.mkdtemp(prefix="roammail-dovecot-certs-"))
        atexit.register(shutil.rmtree, directory, True)
        _shared_certificates = make_certificates(directory)
    return _shared_certificates


# ------------------------------------------------------- modified UTF-7 names


def imap_utf7_encode(text: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3): "Café" -> "Caf&AOk-".

    Built on Python's own UTF-7 codec (modified UTF-7 shifts with "&"
    instead of "+" and writes "," for "/"), so that the tests' names do not
    come from the code under test."""
    out = []
    for printable, run in _runs(text):
        if printable:
            out.append(run.replace("&", "&-"))
        else:
            shifted = run.encode("utf-7").decode("ascii")  # "+AOk-"
            out.append("&" + shifted[1:].rstrip("-").replace("/", ",") + "-")
    return "".join(out)


def _runs(text: str) -> list:
    """(printable ASCII?, run) pieces of text."""
    runs: list[tuple[bool, str]] = []
    for char in text:
        printable = " " <= char <= "~"
        if runs and runs[-1][0] == printable:
            runs[-1] = (printable, runs[-1][1] + char)
        else:
            runs.append((printable, char))
    return runs


def imap_utf7_decode(name: str) -> str:
    """The text of a modified UTF-7 mailbox name: "Caf&AOk-" -> "Café"."""
    pieces = name.split("&")
    out = [pieces[0]]
    for piece in pieces[1:]:
        chunk, dash, rest = piece.partition("-")
        if not dash:
            raise ValueError(f"unterminated &-sequence in mailbox name {name!r}")
        if chunk:
            out.append(("+" + chunk.replace(",", "/") + "-").encode("ascii").decode("utf-7"))
        else:
            out.append("&")
        out.append(rest)
    return "".join(out)


def _quote(name: str) -> str:
    """An IMAP quoted string (imaplib sends mailbox arguments as they are)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------ run-as


@dataclass(frozen=True)
class RunAs:
    """The Unix user (and its primary group) the server runs as."""

    user: str
    group: str
    uid: int
    gid: int

    @property
    def switches(self) -> bool:
        """True when commands must change to this user (we are root)."""
        return os.geteuid() != self.uid

    def prefix(self, setpriv: Optional[str]) -> list[str]:
        """The argv prefix that runs a command as this user ([] if we are it)."""
        if not self.switches:
            return []
        assert setpriv is not None
        return [setpriv, f"--reuid={self.user}", f"--regid={self.group}", "--clear-groups"]


def _run_as() -> RunAs:
    if os.geteuid() == 0:
        entry = require_user(RUN_AS_USER, "Dovecot refuses mail access as root")
    else:
        try:
            entry = pwd.getpwuid(os.getuid())
        except KeyError:
            raise RuntimeError(
                f"uid {os.getuid()} has no passwd entry; Dovecot needs one") from None
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        raise RuntimeError(f"gid {entry.pw_gid} of {entry.pw_name} has no group entry") from None
    return RunAs(entry.pw_name, group, entry.pw_uid, entry.pw_gid)


def _reachable(path: Path, run_as: RunAs) -> bool:
    """True if `run_as` can search every directory from / to `path` (mode bits only).

    The server runs with --clear-groups, so only the primary group counts.
    """
    for directory in (path, *path.parents):
        info = os.stat(directory)
        if info.st_uid == run_as.uid:
            bit = 0o100
        elif info.st_gid == run_as.gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return False
    return True


# ------------------------------------------------------------ the server

_live_servers: set[DovecotServer] = set()


def _close_leftovers() -> None:
    for server in list(_live_servers):
        try:
            server.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_close_leftovers)


class DovecotServer:
    """One Dovecot instance on 127.0.0.1; see the module docstring."""

    def __init__(self, directory: Path, *, private: bool, run_as: RunAs, notify: bool,
                 user: str, password: str, certificates: Certificates,
                 oauth2_introspection_url: Optional[str] = None, sasl_ir: bool = True) -> None:
        self.host = HOST
        self.address = ADDRESS
        self.imap_port = 0
        self.imaps_port = 0
        self.user = user
        self.password = password
        self.notify = notify
        self.run_as = run_as
        self.directory = directory
        self.config_path = directory / "dovecot.conf"
        self.log_path = directory / "dovecot.log"
        self.ca_file = directory / "ca.pem"
        self.other_ca_file = directory / "other-ca.pem"
        self.home = directory / "mail"
        self.maildir = self.home / "Maildir"
        self.tunnel_path = directory / "imap-tunnel"
        self._cert_file = directory / "cert.pem"
        self._key_file = directory / "key.pem"
        self._passwd_file = directory / "passwd"
        self._oauth2_file = directory / "dovecot-oauth2.conf.ext"
        self.oauth2_introspection_url = oauth2_introspection_url
        self.sasl_ir = sasl_ir
        # base_dir holds Unix sockets, whose paths may not exceed 107 bytes.
        self._base_dir = directory / "run"
        self._short_base_dir = False
        self._stderr_path = directory / "master.stderr"
        self._certificates = certificates
        self.private = private
        self._instance = "roammail-" + secrets.token_hex(6)
        self._capability: Optional[str] = None
        self._setpriv = require_program("setpriv") if run_as.switches else None
        self._dovecot = require_program("dovecot")
        self._imap = require_executable([f"{d}/imap" for d in LIBEXEC_DIRS],
                                        "Dovecot's imap (Debian package dovecot-imapd)")
        self._lda = require_executable([f"{d}/dovecot-lda" for d in LIBEXEC_DIRS],
                                       "Dovecot's dovecot-lda (Debian package dovecot-core)")
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._frozen: set[proctable.ProcKey] = set()

    # ----------------------------------------------------------------- start

    @classmethod
    def start(cls, workdir: Path, *, notify: bool = True, user: str = "tester",
              password: str = "secret",
              certificates: Optional[Certificates] = None,
              oauth2_introspection_url: Optional[str] = None,
              sasl_ir: bool = True) -> DovecotServer:
        """Write the config and start Dovecot; return once both ports greet.

        `workdir` is created if missing and holds the server's files when the
        run-as user can reach it (else see the module docstring).  Skips (fails
        in CI) when Dovecot, setpriv (as root) or the roammail-test user (as
        root) is missing.  Raises RuntimeError, with the log's tail, when
        Dovecot does not come up within START_TIMEOUT_S.
        """
        if not user or re.search(r"[\s:\\\"']", user):
            raise ValueError(f"the user must be a plain word, not {user!r}")
        if not password or re.search(r"[:\r\n\0]", password):  # the passwd-file's syntax
            raise ValueError(f"the password cannot hold ':', CR, LF or NUL: {password!r}")
        run_as = _run_as()
        workdir.mkdir(parents=True, exist_ok=True)
        # The directory itself is given to the run-as user; its parents must let it in.
        if _reachable(workdir.resolve().parent, run_as):
            directory, private = workdir, False
        else:
            directory = Path(tempfile.mkdtemp(prefix="roammail-dovecot-"))
            private = True
            if not _reachable(directory.parent, run_as):
                shutil.rmtree(directory, ignore_errors=True)
                raise RuntimeError(f"neither {workdir} nor {directory.parent} is reachable "
                                   f"by user {run_as.user}")
        server = cls(directory, private=private, run_as=run_as, notify=notify, user=user,
                     password=password, certificates=certificates or _default_certificates(),
                     oauth2_introspection_url=oauth2_introspection_url, sasl_ir=sasl_ir)
        _live_servers.add(server)
        try:
            server._prepare()
            server._launch_on_free_ports()
        except BaseException:
            server.close()
            raise
        return server

    def _prepare(self) -> None:
        if len(os.fsencode(self._base_dir)) > MAX_BASE_DIR_BYTES:
            self._base_dir = Path(tempfile.mkdtemp(prefix="rmdv-"))
            self._short_base_dir = True
        certs = self._certificates
        for source, target in ((certs.cert_file, self._cert_file),
                               (certs.key_file, self._key_file),
                               (certs.ca_file, self.ca_file),
                               (certs.other_ca_file, self.other_ca_file)):
            shutil.copyfile(source, target)
        self._key_file.chmod(0o600)
        self._passwd_file.write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        self._passwd_file.chmod(0o600)
        if self.oauth2_introspection_url:
            # Every token is POSTed (token=...) to the endpoint, which
            # answers {"active": true, "username": USER} for a good one.
            self._oauth2_file.write_text(
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "introspection_mode = post\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n")
        for sub in ("cur", "new", "tmp"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)
        self._base_dir.mkdir(exist_ok=True)
        self.log_path.touch()
        self.log_path.chmod(0o600)
        words = [*self.run_as.prefix(self._setpriv), "env", "-i", f"USER={self.user}",
                 f"HOME={self.home}", self._imap, "-c", str(self.config_path)]
        self.tunnel_path.write_text(
            "#!/bin/sh\n"
            "# A PREAUTH IMAP session of the test Dovecot (tests/peers/dovecot.py) on\n"
            "# stdin/stdout.  A standalone imap logs to stderr: into the server log.\n"
            f"exec {shlex.join(words)} 2>>{shlex.quote(str(self.log_path))}\n")
        self.tunnel_path.chmod(0o755)
        self._write_config()
        self._chown_all()
        if not self.notify or not self.sasl_ir:
            dropped = {*(() if self.notify else ("NOTIFY",)),
                       *(() if self.sasl_ir else ("SASL-IR",))}
            capability = self._probe_capability().split()
            self._capability = " ".join(c for c in capability if c.upper() not in dropped)
            self._write_config()
            self._chown_all()

    def _chown_all(self) -> None:
        """Give the server's directory and files to the run-as user."""
        if not self.run_as.switches:
            return
        uid, gid = self.run_as.uid, self.run_as.gid
        for top in (self.directory, self._base_dir):
            os.chown(top, uid, gid)
            for root, dirs, files in os.walk(top):
                for name in (*dirs, *files):
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)

    def _probe_capability(self) -> str:
        """The post-login CAPABILITY list, from a PREAUTH session's greeting."""
        result = subprocess.run(self.tunnel_argv(), input=b"a LOGOUT\r\n",
                                capture_output=True, timeout=RUN_TIMEOUT_S)
        greeting = result.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
        found = re.match(r"\* PREAUTH \[CAPABILITY ([^]]*)\]", greeting)
        if found is None:
            raise RuntimeError(f"no PREAUTH CAPABILITY from {self.tunnel_path}: {greeting!r}\n"
                               f"{self.log_tail()}")
        return found.group(1)

    def _config(self) -> str:
        run_as = self.run_as
        capability = (f"imap_capability = {self._capability}\n"
                      if self._capability is not None else "")
        mechanisms = "plain login"
        oauth2 = ""
        all_users = ""
        plain_only = ""
        if self.oauth2_introspection_url:
            plain_only = "  mechanisms = plain login\n"
            # Every passdb is for some mechanisms only: a userdb lookup
            # (dovecot-lda's) would find none to confirm the user with.
            all_users = " allow_all_users=yes"
            mechanisms += " xoauth2 oauthbearer"
            oauth2 = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {self._oauth2_file}
}}
"""
        return f"""\
# Generated by tests/peers/dovecot.py for one test server.
base_dir = {self._base_dir}
state_dir = {self._base_dir}/state
instance_name = {self._instance}
protocols = imap
listen = {ADDRESS}
default_internal_user = {run_as.user}
default_internal_group = {run_as.group}
default_login_user = {run_as.user}
first_valid_uid = 1
log_path = {self.log_path}
ssl = yes
ssl_cert = <{self._cert_file}
ssl_key = <{self._key_file}
auth_mechanisms = {mechanisms}
# A wrong password is answered at once, not after the default 2 s.
auth_failure_delay = 0
# Tests open many connections from 127.0.0.1 (the default allows 10).
mail_max_userip_connections = 100
imap_hibernate_timeout = 0
{capability}passdb {{
  driver = passwd-file
{plain_only}  args = scheme=PLAIN {self._passwd_file}
}}
{oauth2}userdb {{
  driver = static
  args = uid={run_as.user} gid={run_as.group} home={self.home}{all_users}
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
  }}
}}
# One process per session, gone when it ends: sessions() counts them.
service imap {{
  client_limit = 1
  service_count = 1
  process_min_avail = 0
}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
service auth {{
  user = {run_as.user}
}}
service auth-worker {{
  user = {run_as.user}
}}
"""

    def _write_config(self) -> None:
        self.config_path.write_text(self._config())

    def _launch_on_free_ports(self) -> None:
        for _ in range(BIND_ATTEMPTS):
            self.imap_port = free_port(ADDRESS)
            self.imaps_port = free_port(ADDRESS)
            if self.imap_port == self.imaps_port:
                continue
            self._write_config()
            if self._launch():
                return
            if "Address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"Dovecot did not start:\n{self.log_tail()}")

    def _launch(self) -> bool:
        """Start the master on the configured ports; True once both greet.

        False if the master exited first; RuntimeError if it neither exits
        nor greets in time.
        """
        pid_file = self._base_dir / "master.pid"
        pid_file.unlink(missing_ok=True)  # left by kill(); the master refuses a live pid only
        with open(self._stderr_path, "ab") as stderr:
            self._proc = subprocess.Popen(
                [*self.run_as.prefix(self._setpriv), self._dovecot, "-F",
                 "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        waiting = {self.imap_port: False, self.imaps_port: True}
        while waiting:
            if self._proc.poll() is not None:
                self._proc = None
                self._kill_all()
                return False
            for port, tls in list(waiting.items()):
                if self._greets(port, tls):
                    del waiting[port]
            if not waiting:
                return True
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"Dovecot not greeting on port(s) {sorted(waiting)} after "
                                   f"{START_TIMEOUT_S} s:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL_S)
        return True

    def _greets(self, port: int, tls: bool) -> bool:
        """True if `port` accepts and sends an IMAP "* OK" greeting (over TLS if `tls`)."""
        try:
            with socket.create_connection((ADDRESS, port), timeout=GREETING_TIMEOUT_S) as raw:
                sock = (self.ssl_context().wrap_socket(raw, server_hostname=HOST)
                        if tls else raw)
                data = b""
                while b"\r\n" not in data and len(data) < MAX_GREETING_BYTES:
                    chunk = sock.recv(MAX_GREETING_BYTES)
                    if not chunk:
                        break
                    data += chunk
                sock.close()
        except (OSError, ssl.SSLError):
            return False
        return data.startswith(b"* OK")

    # --------------------------------------------------------- the log

    def log_text(self) -> str:
        """The Dovecot log (and the master's own stderr) so far."""
        parts = []
        for path in (self.log_path, self._stderr_path):
            try:
                parts.append(path.read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "".join(parts)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines of log_text(), for error messages."""
        tail = self.log_text().splitlines()[-lines:]
        return "\n".join(tail) if tail else f"({self.log_path} is empty)"

    # ------------------------------------------------------------ clients

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against ca_file (host "localhost")."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def client(self) -> imaplib.IMAP4_SSL:
        """An IMAP4_SSL client logged in over imaps; log out (or use `with`) when done."""
        client = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context(),
                                   timeout=CLIENT_TIMEOUT_S)
        try:
            client.login(self.user, self.password)
        except BaseException:
            client.shutdown()
            raise
        return client

    def mbsync_account(self, name: str) -> str:
        """An mbsync IMAPAccount section (ending in an empty line) for this
        server: IMAPS, the test CA alone trusted, the password from PassCmd."""
        command = "printf '%s\\n' " + shlex.quote(self.password)
        quoted = command.replace("\\", "\\\\").replace('"', '\\"')  # mbsync's escapes
        return (f"IMAPAccount {name}\nHost {self.host}\nPort {self.imaps_port}\n"
                f"User {self.user}\nPassCmd \"{quoted}\"\nSSLType IMAPS\n"
                f"SystemCertificates no\nCertificateFile {self.ca_file}\n\n")

    @staticmethod
    def mbsync_channel(name: str, local) -> str:
        """After an IMAPAccount `name`: its IMAPStore NAME-far, a Maildir++
        store NAME-near at `local`, and Channel NAME syncing every folder."""
        return (f"IMAPStore {name}-far\nAccount {name}\n\n"
                f"MaildirStore {name}-near\nInbox {local}\nSubFolders Maildir++\n\n"
                f"Channel {name}\nFar :{name}-far:\nNear :{name}-near:\nPatterns *\n"
                f"Create Both\nSyncState *\n")

    def tunnel_argv(self) -> list[str]:
        """argv of a PREAUTH IMAP session for the user on stdin/stdout."""
        return [str(self.tunnel_path)]

    def tunnel_command(self) -> str:
        """tunnel_argv() as a /bin/sh command line (shell-quoted words)."""
        return shlex.join(self.tunnel_argv())

    # --------------------------------------------------------------- mail

    def folder_path(self, folder: str) -> Path:
        """The maildir of server folder name `folder` (INBOX is `maildir`)."""
        if folder.upper() == "INBOX":
            return self.maildir
        if not folder or folder.startswith(".") or "/" in folder:
            raise ValueError(f"not a folder name of this server: {folder!r}")
        return self.maildir / f".{folder}"

    def message_names(self, folder: str) -> set[str]:
        """Unique names (the part before ":") of the messages in new/ and cur/ of `folder`."""
        directory = self.folder_path(folder)
        names = set()
        for sub in ("new", "cur"):
            for entry in os.scandir(directory / sub):
                if not entry.name.startswith("."):
                    names.add(entry.name.split(":", 1)[0])
        return names

    def create_folder(self, name: str) -> None:
        """IMAP CREATE of server name `name` ("Lists.foo", "Caf&AOk-")."""
        with self.client() as client:
            typ, data = client.create(_quote(name))
            if typ != "OK":
                raise RuntimeError(f"CREATE {name} failed: {data!r}")

    def append(self, folder: str, message: bytes) -> None:
        """IMAP APPEND of `message` to `folder` (line ends become CRLF)."""
        with self.client() as client:
            typ, data = client.append(_quote(folder), "", None, message)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {folder} failed: {data!r}")

    def deliver(self, folder: str, message: bytes) -> None:
        """Deliver `message` to `folder` through dovecot-lda as the user.

        FileNotFoundError if the folder does not exist (LDA would silently
        use INBOX); RuntimeError if LDA fails or the folder did not gain
        exactly one message.  Needs a running server (LDA asks its auth).
        """
        directory = self.folder_path(folder)
        if not (directory / "new").is_dir():
            raise FileNotFoundError(f"no folder {folder!r} at {directory}")
        before = self.message_names(folder)
        result = subprocess.run(
            [*self.run_as.prefix(self._setpriv), self._lda, "-c", str(self.config_path),
             "-d", self.user, "-m", imap_utf7_decode(folder)],
            input=message, capture_output=True, timeout=RUN_TIMEOUT_S,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.home),
                 "USER": self.user}, cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(f"dovecot-lda exited {result.returncode}: "
                               f"{result.stderr.decode(errors='replace').strip()}\n"
                               f"{self.log_tail()}")
        added = self.message_names(folder) - before
        if len(added) != 1:
            raise RuntimeError(f"dovecot-lda left {len(added)} new messages in {folder}, "
                               f"not 1:\n{self.log_tail()}")

    def deliver_raw(self, folder: str, message: bytes) -> Path:
        """Write `message` into `folder`'s maildir behind Dovecot's back; return its path.

        Written to tmp/ (mode 0600, owned by the run-as user) and renamed into
        new/.  FileNotFoundError if the folder does not exist.
        """
        directory = self.folder_path(folder)
        if not (directory / "tmp").is_dir():
            raise FileNotFoundError(f"no folder {folder!r} at {directory}")
        name = unique_name()
        tmp = directory / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(fd, view):]
            if self.run_as.switches:
                os.fchown(fd, self.run_as.uid, self.run_as.gid)
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        final = directory / "new" / name
        os.rename(tmp, final)
        return final

    # ---------------------------------------------------------- processes

    @property
    def pid(self) -> Optional[int]:
        """Pid of the master, None when not running."""
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        """True while the master process is alive (frozen counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    def _keys(self) -> set[proctable.ProcKey]:
        markers = [m.encode() for m in (str(self.config_path), str(self.tunnel_path),
                                        f"dovecot-{self._instance}/")]
        table = proctable.live_table()
        found = proctable.tree([self.pid] if self.pid is not None else [], table)
        found.update(pid for pid in table if pid not in found
                     and any(marker in proctable.cmdline(pid) for marker in markers))
        return proctable.keys(found, table)

    def processes(self) -> set[int]:
        """Pids of every live process of this instance (see the module docstring)."""
        return {pid for pid, _ in self._keys()}

    def sessions(self) -> int:
        """How many IMAP sessions (network and tunnel) are logged in right now."""
        return sum(1 for key in self._keys() if proctable.comm(key[0]) == "imap")

    def end_sessions(self) -> int:
        """SIGTERM every logged-in IMAP session: each says "* BYE" and
        closes its connection, as a server does that ends a login (an
        expired token); the master keeps accepting new ones.  How many."""
        ended = 0
        for key in self._keys():
            if proctable.comm(key[0]) == "imap":
                proctable.send(key, signal.SIGTERM)
                ended += 1
        return ended

    def wait_for_sessions(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until sessions() == count; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.sessions() != count:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)
        return True

    def _freeze_all(self) -> set[proctable.ProcKey]:
        """SIGSTOP the master, then every process found, until no new ones appear."""
        return proctable.freeze(self._proc, self._keys)

    def freeze(self) -> None:
        """SIGSTOP every process of the instance: open connections go silent."""
        self._frozen |= self._freeze_all()

    def thaw(self) -> None:
        """SIGCONT every process freeze() stopped (and any other of the instance)."""
        for key in self._frozen | self._keys():
            proctable.send(key, signal.SIGCONT)
        self._frozen.clear()

    def _kill_all(self) -> None:
        """SIGKILL every process of the instance and wait (bounded) until all are gone."""
        try:
            proctable.kill_all(self._proc, self._keys, "Dovecot")
        finally:
            self._proc = None
            self._frozen.clear()

    def kill(self) -> None:
        """SIGKILL every process (master, children, tunnel sessions); data stays."""
        self._kill_all()

    def restart(self) -> None:
        """Start again after kill() or stop(): same ports, data and config.

        Returns once both ports greet; RuntimeError (with the log's tail) if
        Dovecot cannot start, e.g. because another process took a port.
        """
        if self.running():
            raise RuntimeError("restart() needs a killed or stopped server")
        self._kill_all()  # tunnel sessions or strays from before
        if not self._launch():
            raise RuntimeError(f"Dovecot did not restart:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop cleanly (thaw, SIGTERM, wait), then kill what is left.  Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.thaw()
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._kill_all()

    def close(self) -> None:
        """kill(), then remove the server's directory if it is a private temp dir.

        For teardown, where the data no longer matters: a clean stop() takes
        about a second (the master waits that long for its log process), a
        kill milliseconds.  Idempotent.
        """
        try:
            self._kill_all()
        finally:
            _live_servers.discard(self)
            if self.private:
                shutil.rmtree(self.directory, ignore_errors=True)
            if self._short_base_dir:
                shutil.rmtree(self._base_dir, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


__all__ = [
    "ADDRESS", "Certificates", "DovecotServer", "HOST", "RUN_AS_USER", "RunAs",
    "imap_utf7_decode", "imap_utf7_encode", "make_certificates",
]
