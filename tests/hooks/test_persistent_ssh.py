"""persistent-ssh, the installed hook.

Fast tests put a scripted `ssh` first on PATH and look at the argv the hook
gives it.  The slow ones run the real ssh against the test sshd, with
~/.ssh/config in the layout of the seed in a home that ssh itself takes
for `~` (nss_wrapper, see hook_helpers.SshHome), and count logins in the
sshd log: N sessions after the hook must cost one login.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hook_helpers import (
    HOOK_TIMEOUT_S,
    NO_CONTROL_PATH_CONFIG,
    PLAIN_CONFIG,
    SEED_CONFIG,
    SshHome,
    alive,
    env_with_path_first,
    run_hook,
    wait_until,
    write_program,
)

FAKE_SSH = r"""
# A scripted `ssh`: the argv of each call goes to $FAKE_SSH_LOG (arguments
# end with \037, calls with \036).  -G prints FAKE_SSH_CONTROLPATH (none if
# empty) or fails with FAKE_SSH_G_STATUS; -O check answers 0 once a -fN
# call has "started a master"; -fN exits FAKE_SSH_START (default 0) after
# printing FAKE_SSH_START_ERR, leaving `sleep 30` behind (its pid in
# FAKE_SSH_BACKGROUND) when that is set.
{ for a; do printf '%s\037' "$a"; done; printf '\036'; } >> "$FAKE_SSH_LOG"
case " $* " in
    *" -G "*)
        if [ "${FAKE_SSH_G_STATUS:-0}" != 0 ]; then
            echo "fake ssh: bad configuration line 3" >&2
            exit "$FAKE_SSH_G_STATUS"
        fi
        [ -z "${FAKE_SSH_CONTROLPATH:-}" ] || printf 'controlpath %s\n' "$FAKE_SSH_CONTROLPATH"
        printf 'connecttimeout none\nserveraliveinterval 0\n'
        exit 0 ;;
    *" -O check "*)
        [ -e "$FAKE_SSH_LOG.started" ] && exit 0
        echo "Control socket connect(x): No such file or directory" >&2
        exit 255 ;;
    *" -fN "*)
        if [ -n "${FAKE_SSH_BACKGROUND:-}" ]; then
            sleep 30 &
            echo $! > "$FAKE_SSH_BACKGROUND"
        fi
        [ -z "${FAKE_SSH_START_ERR:-}" ] || echo "$FAKE_SSH_START_ERR" >&2
        status=${FAKE_SSH_START:-0}
        [ "$status" != 0 ] || : > "$FAKE_SSH_LOG.started"
        exit "$status" ;;
esac
exit 0
"""


class FakeSsh:
    def __init__(self, root: Path) -> None:
        self.bin = root / "fake-ssh-bin"
        self.program = write_program(self.bin, "ssh", FAKE_SSH)
        self.log = root / "fake-ssh.log"

    def env(self, env: dict[str, str], **extra: str) -> dict[str, str]:
        result = env_with_path_first(env, self.bin)
        result["FAKE_SSH_LOG"] = str(self.log)
        result.update(extra)
        return result

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [call.split("\037")[:-1]
                for call in self.log.read_bytes().decode().split("\036")[:-1]]

    def starts(self) -> list[list[str]]:
        return [c for c in self.calls() if "-fN" in c]


@pytest.fixture
def fake_ssh(tmp_path: Path) -> FakeSsh:
    return FakeSsh(tmp_path)


def write_smd_config(home_dir: Path, endpoint: str, text: str) -> None:
    (home_dir / ".smd").mkdir(exist_ok=True)
    (home_dir / ".smd" / f"config.{endpoint}").write_text(text)


def started_host(fake_ssh: FakeSsh) -> str:
    [start] = fake_ssh.starts()
    assert start[-2] == "--"
    return start[-1]


# ---------------------------------------------------------------- fast tier


def test_only_pre_acts(hooks, home, fake_ssh):
    _, env = home
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH="/nonexistent/socket")
    for argv in (("post", "pull", "default", "0"), ("post", "push", "default", "1")):
        result = run_hook(hooks["persistent-ssh"], *argv, env=env)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert fake_ssh.calls() == []


def test_too_few_arguments_warn_and_exit_0(hooks, home, fake_ssh):
    _, env = home
    result = run_hook(hooks["persistent-ssh"], "pre", env=fake_ssh.env(env))
    assert result.returncode == 0 and "usage: persistent-ssh" in result.stderr
    assert fake_ssh.calls() == []


def test_the_calls_to_ssh(hooks, home, fake_ssh, tmp_path):
    _, env = home
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "default", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "sock")))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    host = "smd-server-default"
    assert fake_ssh.calls() == [
        ["-G", "--", host],
        ["-O", "check", "--", host],
        ["-fN", "-o", "ControlMaster=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=3", "--", host],
        ["-O", "check", "--", host],
    ]


def test_a_live_master_is_left_alone(hooks, home, fake_ssh, tmp_path):
    _, env = home
    fake_ssh.log.with_name(fake_ssh.log.name + ".started").touch()
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "default", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "sock")))
    assert (result.returncode, result.stderr) == (0, "")
    assert fake_ssh.starts() == []


@pytest.mark.parametrize(("config", "expected"), [
    ("SERVERNAME=plain\n", "plain"),
    ('MAILBOX="Mail/"\nSERVERNAME="double-quoted"  # the server\n', "double-quoted"),
    ("SERVERNAME='single$quoted`x`'\n", "single$quoted`x`"),
    ("  export SERVERNAME=exported;\n", "exported"),
    ("\tSERVERNAME=tabbed # comment\n", "tabbed"),
    ("SERVERNAME=first\nSERVERNAME=second\n", "second"),
    ("# SERVERNAME=commented\nCLIENTNAME=`hostname`-x\n", "smd-server-ep"),
    ("SERVERNAME=no-final-newline", "no-final-newline"),
    ("SERVERNAME=\n", "smd-server-ep"),
    ("touch pwned\nSERVERNAME=after-a-command\n$(touch pwned2)\n", "after-a-command"),
])
def test_servername_is_read_from_the_smd_config(hooks, home, fake_ssh, tmp_path,
                                                config, expected):
    home_dir, env = home
    write_smd_config(home_dir, "ep", config)
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "ep", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s")))
    assert (result.returncode, result.stderr) == (0, "")
    assert started_host(fake_ssh) == expected
    assert not any((home_dir / n).exists() for n in ("pwned", "pwned2"))


@pytest.mark.parametrize("config", [
    "SERVERNAME=$(touch pwned)\n",
    'SERVERNAME="`touch pwned`"\n',
    "SERVERNAME=smd-server-$REPNAME\n",
    'SERVERNAME="unterminated\n',
    'SERVERNAME=a"b"\n',
])
def test_a_servername_needing_the_shell_is_refused(hooks, home, fake_ssh, config):
    home_dir, env = home
    write_smd_config(home_dir, "ep", config)
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "ep", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH="/x"))
    assert result.returncode == 0
    assert "cannot read SERVERNAME in" in result.stderr
    assert fake_ssh.calls() == []
    assert not (home_dir / "pwned").exists()


def test_roammail_ssh_host_comes_first(hooks, home, fake_ssh, tmp_path):
    home_dir, env = home
    write_smd_config(home_dir, "ep", "SERVERNAME=from-config\n")
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s"),
                       ROAMMAIL_SSH_HOST="mail.example.org")
    assert run_hook(hooks["persistent-ssh"], "pre", "sync", "ep", "0", env=env).returncode == 0
    assert started_host(fake_ssh) == "mail.example.org"


@pytest.mark.parametrize("endpoint", [
    "a b", "q'uote\"d", "$(touch pwned)", "`touch pwned`", "x; touch pwned", "new\nline",
    "-oProxyCommand=touch pwned", "../../etc/passwd",
])
def test_hostile_endpoints_are_one_argument(hooks, home, fake_ssh, tmp_path, endpoint):
    home_dir, env = home
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", endpoint, "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s")))
    assert (result.returncode, result.stderr) == (0, "")
    assert started_host(fake_ssh) == f"smd-server-{endpoint}"
    assert not (home_dir / "pwned").exists() and not (tmp_path / "pwned").exists()


def test_a_host_name_starting_with_a_dash_is_refused(hooks, home, fake_ssh):
    _, env = home
    env = fake_ssh.env(env, ROAMMAIL_SSH_HOST="-oProxyCommand=touch pwned")
    result = run_hook(hooks["persistent-ssh"], "pre", "sync", "x", "0", env=env)
    assert result.returncode == 0 and "starts with '-'" in result.stderr
    assert fake_ssh.calls() == []


def test_ssh_variable_names_the_command(hooks, home, fake_ssh, tmp_path):
    _, env = home
    (tmp_path / "my-config").write_text("")  # what the glob would match
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s"),
                       SSH=f"{fake_ssh.program} -F {tmp_path}/my*config")
    env["PATH"] = env["PATH"].split(os.pathsep, 1)[1]  # not found through PATH
    assert run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0", env=env).returncode == 0
    calls = fake_ssh.calls()
    assert len(calls) == 4
    assert all(c[:2] == ["-F", f"{tmp_path}/my*config"] for c in calls)  # split, not globbed


def test_a_stale_socket_is_removed(hooks, home, fake_ssh, tmp_path):
    _, env = home
    path = tmp_path / "master-socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the file stays, nobody answers: a dead master's socket
    link = tmp_path / "master-link"
    link.symlink_to(tmp_path / "gone")
    for control_path in (path, link):
        assert os.path.lexists(control_path)
        result = run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0",
                          env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(control_path)))
        assert (result.returncode, result.stderr) == (0, "")
        assert not os.path.lexists(control_path)
        assert len(fake_ssh.starts()) == 1
        fake_ssh.log.unlink()
        fake_ssh.log.with_name(fake_ssh.log.name + ".started").unlink()


def test_a_regular_file_at_the_control_path_stops_the_hook(hooks, home, fake_ssh, tmp_path):
    _, env = home
    precious = tmp_path / "precious"
    precious.write_text("not a socket\n")
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(precious)))
    assert result.returncode == 0
    assert f"no master answers on {precious}, and it cannot be replaced" in result.stderr
    assert precious.read_text() == "not a socket\n"
    # ssh would only say "already exists, disabling multiplexing" and linger.
    assert fake_ssh.starts() == []


def test_no_control_path_starts_nothing(hooks, home, fake_ssh):
    _, env = home
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0", env=fake_ssh.env(env))
    assert result.returncode == 0
    assert "no ControlPath for smd-server-d" in result.stderr
    assert fake_ssh.starts() == []


def test_ssh_dash_g_failing_is_reported(hooks, home, fake_ssh):
    _, env = home
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0",
                      env=fake_ssh.env(env, FAKE_SSH_G_STATUS="255"))
    assert result.returncode == 0
    assert "'ssh -G smd-server-d' failed (status 255)" in result.stderr
    assert "persistent-ssh: ssh: fake ssh: bad configuration line 3" in result.stderr
    assert fake_ssh.starts() == []


def test_ssh_failing_to_start_is_reported(hooks, home, fake_ssh, tmp_path):
    _, env = home
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s"), FAKE_SSH_START="255",
                       FAKE_SSH_START_ERR="ssh: connect to host x port 22: Connection refused")
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0", env=env)
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr.splitlines() == [
        "persistent-ssh: cannot start a master connection to smd-server-d (ssh exit status"
        " 255); the sync will log in on its own",
        "persistent-ssh: ssh: ssh: connect to host x port 22: Connection refused",
    ]


def test_the_master_does_not_hold_the_callers_pipes(hooks, home, fake_ssh, tmp_path):
    _, env = home
    pid_file = tmp_path / "background.pid"
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s"),
                       FAKE_SSH_BACKGROUND=str(pid_file))
    started = time.monotonic()
    try:
        result = run_hook(hooks["persistent-ssh"], "pre", "pull", "d", "0", env=env, timeout=20)
        assert result.returncode == 0
        assert time.monotonic() - started < 10  # not the 30 s of the process left behind
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


# ------------------------------------------------- slow tier: the real sshd

def run_pre(hooks, ssh_home: SshHome, endpoint: str = "foo",
            **extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(ssh_home.env, **extra)
    return run_hook(hooks["persistent-ssh"], "pre", "pull", endpoint, "0", env=env)


def sessions(ssh_home: SshHome, alias: str, count: int = 3) -> None:
    for i in range(count):
        result = ssh_home.ssh(alias, "echo", f"session-{i}")
        assert (result.returncode, result.stdout) == (0, f"session-{i}\n"), result.stderr


def logins_become(sshd, count: int) -> int:
    sshd.wait_for_log("Accepted publickey for ", count, timeout=5)
    return sshd.count_accepted()


@pytest.mark.slow
def test_seed_layout_one_login_for_many_sessions(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    ssh_home.write_smd_config("foo", "SERVERNAME=smd-server-foo\n")
    before = sshd.count_accepted()

    result = run_pre(hooks, ssh_home)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    pid = ssh_home.master_pid("smd-server-foo")
    assert pid is not None and alive(pid)
    assert logins_become(sshd, before + 1) == before + 1
    # The LocalCommand of the seed made the stable name point at the socket.
    stable = ssh_home.dot_ssh / "master-socket-smd-server-foo"
    assert stable.is_symlink() and stable.resolve().is_socket()

    sessions(ssh_home, "smd-server-foo", 3)
    result = run_pre(hooks, ssh_home)  # a master is alive: nothing to do
    assert (result.returncode, result.stderr) == (0, "")
    sessions(ssh_home, "smd-server-foo", 2)
    assert sshd.count_accepted() == before + 1
    assert ssh_home.master_pid("smd-server-foo") == pid


@pytest.mark.slow
def test_a_killed_master_is_replaced(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    assert run_pre(hooks, ssh_home).returncode == 0
    old = ssh_home.master_pid("smd-server-foo")
    assert old is not None
    socket_path = (ssh_home.dot_ssh / "master-socket-smd-server-foo").resolve()

    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not alive(old), 5)
    assert socket_path.is_socket()  # left behind: the case the original hook missed
    assert ssh_home.master_pid("smd-server-foo") is None
    before = sshd.count_accepted()

    result = run_pre(hooks, ssh_home)
    assert (result.returncode, result.stderr) == (0, "")
    new = ssh_home.master_pid("smd-server-foo")
    assert new is not None and new != old
    assert logins_become(sshd, before + 1) == before + 1
    sessions(ssh_home, "smd-server-foo", 3)
    assert sshd.count_accepted() == before + 1


@pytest.mark.slow
def test_an_unreachable_server_leaves_exit_0_and_a_line(hooks, ssh_home: SshHome, sshd,
                                                        closed_port):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo", port=closed_port)
    before = sshd.count_accepted()
    started = time.monotonic()
    result = run_pre(hooks, ssh_home)
    assert time.monotonic() - started < 8
    assert (result.returncode, result.stdout) == (0, "")
    assert "persistent-ssh: cannot start a master connection to smd-server-foo" in result.stderr
    assert "Connection refused" in result.stderr
    assert ssh_home.master_pid("smd-server-foo") is None
    assert wait_until(lambda: not ssh_home.ssh_processes(), 5)
    assert sshd.count_accepted() == before


@pytest.mark.slow
def test_plain_control_path_layout(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(PLAIN_CONFIG, "plainhost")
    ssh_home.write_smd_config("work", 'SERVERNAME="plainhost"  # see ~/.ssh/config\n')
    before = sshd.count_accepted()
    result = run_pre(hooks, ssh_home, "work")
    assert (result.returncode, result.stderr) == (0, "")
    assert ssh_home.master_pid("plainhost") is not None
    assert any(p.name.startswith("cm-") and p.is_socket() for p in ssh_home.dot_ssh.iterdir())
    sessions(ssh_home, "plainhost", 3)
    assert logins_become(sshd, before + 1) == before + 1
    time.sleep(0.2)
    assert sshd.count_accepted() == before + 1


@pytest.mark.slow
def test_no_control_path_starts_no_background_ssh(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(NO_CONTROL_PATH_CONFIG, "smd-server-foo")
    before = sshd.count_accepted()
    result = run_pre(hooks, ssh_home)
    assert result.returncode == 0 and "no ControlPath for smd-server-foo" in result.stderr
    assert ssh_home.ssh_processes() == []
    assert sshd.count_accepted() == before


@pytest.mark.slow
def test_concurrent_pre_hooks_start_one_master(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    before = sshd.count_accepted()
    procs = [subprocess.Popen([str(hooks["persistent-ssh"]), "pre", "pull", "foo", "0"],
                              env=ssh_home.env, cwd=ssh_home.home, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=HOOK_TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == [(b"", b"")] * 3
    assert logins_become(sshd, before + 1) == before + 1
    time.sleep(0.2)
    assert sshd.count_accepted() == before + 1
    assert len(ssh_home.ssh_processes()) == 1
