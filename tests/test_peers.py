"""The peers (tests/peers) work for real: sshd logins, SMTP servers, maildirs."""

from __future__ import annotations

import os
import select
import smtplib
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from peers.fixtures import MaildirFactory
from peers.maildirs import add_message, folder_path, make_maildir, messages
from peers.require import require_program, require_root
from peers.smtp import (
    ScriptedServer,
    SmtpServer,
    start_greets_554,
    start_silent,
    start_smtp_server,
)
from peers.sshd import SshServer, ssh_run

# ------------------------------------------------------------------ require


def test_require_program_returns_absolute_path() -> None:
    path = require_program("sh")
    assert os.path.isabs(path) and os.access(path, os.X_OK)


def test_require_program_looks_in_sbin(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.access("/usr/sbin/sshd", os.X_OK):
        pytest.skip("no /usr/sbin/sshd to find")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert require_program("sshd") == "/usr/sbin/sshd"


def test_require_program_missing_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-prog-x is missing"):
        require_program("no-such-prog-x")


def test_require_program_missing_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception,
                       match=r"no-such-prog-x is missing: \./test\.sh installs it"):
        require_program("no-such-prog-x")


def test_require_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    require_root("binds port 25")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root: binds port 25"):
        require_root("binds port 25")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs root: binds port 25"):
        require_root("binds port 25")


# --------------------------------------------------------------------- sshd


@pytest.mark.slow
def test_ssh_dash_f_runs_a_command(sshd: SshServer) -> None:
    result = subprocess.run([*sshd.ssh_command(), sshd.host_alias, "echo", "hi"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")
    assert (sshd.host_alias, sshd.host) == ("testhost", "127.0.0.1")


@pytest.mark.slow
def test_ssh_run_quotes_argv_and_passes_status(sshd: SshServer) -> None:
    result = ssh_run(sshd, "printf", "%s|", "a b", "x;y", "$HOME")
    assert (result.returncode, result.stdout) == (0, "a b|x;y|$HOME|")
    assert ssh_run(sshd, "exit 7", shell=True).returncode == 7
    assert ssh_run(sshd, "cat", input="piped\n").stdout == "piped\n"


@pytest.mark.slow
def test_two_connections_are_counted(sshd: SshServer) -> None:
    before = sshd.count_accepted()
    for _ in range(2):
        assert ssh_run(sshd, "true").returncode == 0
    assert sshd.count_accepted() == before + 2


@pytest.mark.slow
def test_remote_path_puts_chosen_dirs_first(sshd: SshServer, tmp_path: Path) -> None:
    default = ssh_run(sshd, 'echo "$PATH"', shell=True).stdout.strip()
    assert default.split(":")[0] == str(sshd.remote_bin)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "far-side-tool"
    tool.write_text("#!/bin/sh\necho far side \"$@\"\n")
    tool.chmod(0o755)
    result = ssh_run(sshd, "far-side-tool", "ok", remote_path=[bin_dir])
    assert (result.returncode, result.stdout) == (0, "far side ok\n")
    chosen = ssh_run(sshd, 'echo "$PATH"', shell=True, remote_path=[bin_dir]).stdout.strip()
    assert chosen.split(":")[:2] == [str(bin_dir), str(sshd.remote_bin)]


@pytest.mark.slow
def test_remote_home(sshd: SshServer, tmp_path: Path) -> None:
    result = ssh_run(sshd, 'echo "$HOME"; pwd', shell=True, remote_home=tmp_path)
    assert result.stdout.split() == [str(tmp_path), str(tmp_path)]


@pytest.mark.slow
def test_install_home_files(sshd: SshServer, tmp_path: Path) -> None:
    dot_ssh = sshd.install_home(tmp_path / "home")
    assert stat.S_IMODE(dot_ssh.stat().st_mode) == 0o700
    for name in ("config", "id_ed25519", "known_hosts"):
        assert stat.S_IMODE((dot_ssh / name).stat().st_mode) == 0o600
    result = subprocess.run(["ssh", "-F", str(dot_ssh / "config"), "testhost", "echo", "hi"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, "hi\n")


@pytest.mark.slow
def test_openssh_ignores_home(sshd: SshServer, tmp_path: Path) -> None:
    """Documents why install_home() alone is not enough: ssh reads ~ from passwd."""
    home = tmp_path / "home"
    sshd.install_home(home)
    result = subprocess.run(["ssh", "-G", "testhost"], env={**os.environ, "HOME": str(home)},
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert f"port {sshd.port}\n" not in result.stdout


@pytest.mark.slow
def test_plain_ssh_via_client_bin_wrapper(sshd: SshServer, tmp_path: Path) -> None:
    env = sshd.client_env(home=tmp_path)
    result = subprocess.run(["sh", "-c", "ssh testhost echo hi"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hi\n", "")


def _read_line(stream: object, timeout: float) -> bytes:
    assert hasattr(stream, "fileno") and hasattr(stream, "readline")
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output in time"
    return stream.readline()  # type: ignore[no-any-return]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
def test_stop_kills_sessions_and_detached_children() -> None:
    if not os.path.isdir("/proc"):
        pytest.skip("process discovery needs /proc")
    server = SshServer.start()
    try:
        client = subprocess.Popen(
            [*server.ssh_command(), "testhost", "echo started; exec sleep 300"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert _read_line(client.stdout, 10) == b"started\n"
        detached = ssh_run(server, "setsid sleep 301 </dev/null >/dev/null 2>&1 & echo $!",
                           shell=True)
        detached_pid = int(detached.stdout)
        pids = server.session_processes()
        assert detached_pid in pids
        assert len(pids) >= 3  # connection sshd, sleep 300, detached sleep 301
        workdir, port = server.workdir, server.port
    finally:
        server.stop()
    assert [pid for pid in pids if _alive(pid)] == []
    assert client.wait(timeout=5) == 255
    assert client.stdout is not None
    client.stdout.close()
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.stop()  # idempotent


# --------------------------------------------------------------------- smtp


@pytest.mark.slow
def test_smtp_server_receives_mail(smtp_server: SmtpServer) -> None:
    smtp_server.clear()
    with smtplib.SMTP(*smtp_server.address, timeout=5) as client:
        code, _ = client.noop()
        assert code == 250
        client.sendmail("a@example.org", ["b@example.org", "c@example.org"],
                        b"Subject: hi\r\n\r\nbody\r\n")
    [received] = smtp_server.wait_for_messages(1)
    assert received.mail_from == "a@example.org"
    assert received.rcpt_tos == ("b@example.org", "c@example.org")
    assert b"Subject: hi" in received.content and b"body" in received.content
    assert smtp_server.connections == 1
    smtp_server.clear()
    assert (smtp_server.messages, smtp_server.connections) == ([], 0)


@pytest.mark.slow
def test_smtp_server_greets_220_and_can_refuse_data(smtp_server: SmtpServer) -> None:
    smtp_server.clear()
    with socket.create_connection(smtp_server.address, timeout=5) as sock:
        assert sock.recv(1024).startswith(b"220 ")
    smtp_server.data_response = "451 4.3.0 try later"
    with smtplib.SMTP(*smtp_server.address, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["b@example.org"], b"\r\nbody\r\n")
    assert refused.value.smtp_code == 451
    assert smtp_server.messages == []
    smtp_server.clear()
    assert smtp_server.data_response == "250 OK"


@pytest.mark.slow
def test_greets_554(smtp_greets_554: ScriptedServer) -> None:
    before = smtp_greets_554.connections
    with socket.create_connection(smtp_greets_554.address, timeout=5) as sock:
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(1024)
            if not chunk:
                break
            data += chunk
    assert data == b"554 no service\r\n"
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(*smtp_greets_554.address, timeout=5)
    assert refused.value.smtp_code == 554
    assert smtp_greets_554.connections == before + 2


@pytest.mark.slow
def test_silent_times_out(smtp_silent: ScriptedServer) -> None:
    before = smtp_silent.connections
    with socket.create_connection(smtp_silent.address, timeout=0.3) as sock:
        sock.sendall(b"EHLO me\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(1024)
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(*smtp_silent.address, timeout=0.3)
    assert smtp_silent.connections == before + 2


@pytest.mark.slow
def test_multiline_220(smtp_multiline_220: ScriptedServer) -> None:
    with socket.create_connection(smtp_multiline_220.address, timeout=5) as sock:
        greeting = b""
        while not greeting.endswith(b"220 ready\r\n"):
            chunk = sock.recv(1024)
            assert chunk, f"closed after {greeting!r}"
            greeting += chunk
        assert greeting == b"220-first\r\n220-second\r\n220 ready\r\n"
    client = smtplib.SMTP(timeout=5)
    assert client.connect(*smtp_multiline_220.address) == (220, b"first\nsecond\nready")
    assert client.ehlo()[0] == 250
    assert client.quit()[0] == 221
    assert smtp_multiline_220.connections >= 2


def test_closed_port_refuses(closed_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port), timeout=2).close()


@pytest.mark.slow
def test_servers_bind_other_loopback_addresses() -> None:
    with start_greets_554("127.0.0.2") as server:
        assert server.address[0] == "127.0.0.2"
        with socket.create_connection(server.address, timeout=5) as sock:
            assert sock.recv(1024).startswith(b"554 ")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    with start_smtp_server("127.0.0.3") as smtp:
        with smtplib.SMTP(*smtp.address, timeout=5) as client:
            client.sendmail("a@example.org", ["b@example.org"], b"\r\nx\r\n")
        assert len(smtp.wait_for_messages(1)) == 1
        assert smtp.connections == 1


@pytest.mark.slow
def test_stop_closes_open_connections_quickly() -> None:
    silent = start_silent()
    smtp = start_smtp_server()
    socks = [socket.create_connection(silent.address, timeout=5) for _ in range(3)]
    socks.append(socket.create_connection(smtp.address, timeout=5))
    assert socks[-1].recv(1024).startswith(b"220 ")
    started = time.monotonic()
    silent.stop()
    smtp.stop()
    assert time.monotonic() - started < 2
    try:
        for sock in socks:
            # The server closed it: an orderly EOF, or a reset when the
            # close raced our unread data; both end the connection.
            try:
                assert sock.recv(1024) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in socks:
            sock.close()
    silent.stop()
    smtp.stop()  # idempotent


# ----------------------------------------------------------------- maildirs


def test_make_maildir_layout(tmp_path: Path) -> None:
    base = make_maildir(tmp_path / "Mail", folders=["Sent", "lists/roam"])
    for directory in (base, base / ".Sent", base / ".lists.roam"):
        assert sorted(p.name for p in directory.iterdir() if p.name in ("cur", "new", "tmp")) \
            == ["cur", "new", "tmp"]
    assert (base / ".Sent" / "maildirfolder").is_file()
    assert not (base / "maildirfolder").exists()
    assert folder_path(base, "lists.roam") == base / ".lists.roam"


def test_add_message_and_messages(maildir_factory: MaildirFactory) -> None:
    base = maildir_factory("Mail", folders=["Sent"])
    first = add_message(base, body=b"one")
    second = add_message(base, body=b"two", subdir="cur", flags="SF")
    sent = add_message(base, "Sent", name="fixed-name", raw=b"Subject: raw\n\nraw body\n")
    assert sent == base / ".Sent" / "new" / "fixed-name"
    assert first.parent == base / "new" and second.parent == base / "cur"
    assert second.name.endswith(":2,FS")
    assert first.name != second.name.split(":")[0]
    inbox = messages(base)
    assert set(inbox) == {first.name, second.name}
    assert inbox[first.name].endswith(b"\n\none\n")
    assert b"\nSubject: test message\n" in inbox[first.name]
    assert messages(base, "Sent") == {"fixed-name": b"Subject: raw\n\nraw body\n"}
    assert messages(base, "Sent", subdirs=["cur"]) == {}
    assert list((base / "tmp").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        add_message(base, "NoSuchFolder")
