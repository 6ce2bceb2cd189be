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
    # BatchMode=no: Debian's ssh reports ServerAliveInterval 300 under
    # BatchMode when none is set; without it, 0 unless the user set one.
    # Keepalives every 10 s, 2 more allowed: dead after 30 s, the default.
    assert fake_ssh.calls() == [
        ["-G", "-o", "BatchMode=no", "--", host],
        ["-O", "check", "--", host],
        ["-fN", "-o", "ControlMaster=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
         "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=2", "--", host],
        ["-O", "check", "--", host],
    ]


@pytest.mark.parametrize(("value", "interval", "warning"), [
    ("9", "3", False), ("3", "1", False), ("31", "10", False),
    ("2", "10", True), ("abc", "10", True), ("-5", "10", True), ("030", "10", True),
    ("", "10", False),
])
def test_dead_after_sets_the_keepalives(hooks, home, fake_ssh, tmp_path,
                                        value, interval, warning):
    _, env = home
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "sock"),
                       PERSISTENT_SSH_DEAD_AFTER=value)
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "default", "0", env=env)
    assert result.returncode == 0
    assert ("PERSISTENT_SSH_DEAD_AFTER must be" in result.stderr) == warning
    [start] = fake_ssh.starts()
    assert f"ServerAliveInterval={interval}" in start and "ServerAliveCountMax=2" in start


def test_the_default_bound_is_documented():
    man = (Path(__file__).resolve().parents[2] / "man" / "roammail-hooks.7").read_text()
    text = " ".join(man.split())
    assert ".Ev PERSISTENT_SSH_DEAD_AFTER" in man
    assert "default 30" in text.split("PERSISTENT_SSH_DEAD_AFTER", 2)[2][:400]


def test_a_live_master_is_left_alone(hooks, home, fake_ssh, tmp_path):
    _, env = home
    fake_ssh.log.with_name(fake_ssh.log.name + ".started").touch()
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "default", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "sock")))
    assert (result.returncode, result.stderr) == (0, "")
    assert fake_ssh.starts() == []
    # It was asked, and the server through it.
    assert fake_ssh.calls()[1:] == [
        ["-O", "check", "--", "smd-server-default"],
        ["-o", "ControlMaster=no", "-o", "BatchMode=yes", "-T", "--", "smd-server-default",
         "true"],
    ]


@pytest.mark.parametrize(("config", "expected"), [
    ("SERVERNAME=plain\n", "plain"),
    ('MAILBOX="Mail/"\nSERVERNAME="double-quoted"  # the server\n', "double-quoted"),
    ("SERVERNAME='single$quoted`x`'\n", "single$quoted`x`"),
    ("  export SERVERNAME=exported;\n", "exported"),
    ("SERVERNAME=first\nSERVERNAME=second\n", "second"),
    ("# SERVERNAME=commented\nCLIENTNAME=`hostname`-x\n", "smd-server-ep"),
    ("SERVERNAME=no-final-newline", "no-final-newline"),
    ("SERVERNAME=\n", "smd-server-ep"),
    # What smd's own template and users write: smd sources the file.
    ("SERVERNAME=smd-server-$REPNAME\n", "smd-server-ep"),
    ("ALIAS=mail.example.org\nSERVERNAME=$ALIAS\n", "mail.example.org"),
    ("SERVERNAME=$FROM_THE_ENVIRONMENT\n", "set-by-the-caller"),
    ('[ "$DEBUG" = false ] && SERVERNAME=debug-is-false\n', "debug-is-false"),
    ("echo noise\nSERVERNAME=$(echo computed)\n", "computed"),
])
def test_servername_is_what_smd_gets_from_its_config(hooks, home, fake_ssh, tmp_path,
                                                     config, expected):
    home_dir, env = home
    write_smd_config(home_dir, "ep", config)
    env = fake_ssh.env(env, FAKE_SSH_CONTROLPATH=str(tmp_path / "s"),
                       FROM_THE_ENVIRONMENT="set-by-the-caller")
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "ep", "0", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert started_host(fake_ssh) == expected


@pytest.mark.parametrize(("config", "why"), [
    ("exit 3\nSERVERNAME=never\n", "it stopped with status 3 before setting it"),
    ('SERVERNAME="unterminated\n', "before setting it"),
])
def test_a_config_that_fails_starts_nothing(hooks, home, fake_ssh, config, why):
    home_dir, env = home
    write_smd_config(home_dir, "ep", config)
    result = run_hook(hooks["persistent-ssh"], "pre", "pull", "ep", "0",
                      env=fake_ssh.env(env, FAKE_SSH_CONTROLPATH="/x"))
    assert result.returncode == 0
    assert (f"persistent-ssh: cannot learn SERVERNAME from {home_dir}/.smd/config.ep: "
            in result.stderr)
    assert why in result.stderr
    assert fake_ssh.calls() == []


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
        "persistent-ssh: ssh: connect to host x port 22: Connection refused",
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


# The --exec command roammail-hooks(7) gives for watch-network.
EXEC_LINE = 'exec "$HOME/.local/share/roammail/hooks/persistent-ssh" --network-event "$1"'

# A short bound for the tests (the default, 30 s, is checked above):
# keepalives every 3 s, the server asked for 3 s at most.
DEAD_AFTER_S = 9
# What a loaded machine may add to it.
SLACK_S = 5.0


def start_frozen_master(hooks, ssh_home: SshHome, sshd, alias: str) -> tuple[int, list[int]]:
    """Start a master with the hook, then freeze the sshd processes serving it.

    SIGSTOP of the server side is what a laptop sees when its network goes
    away under a connection: nothing answers, nothing is closed.
    """
    before = sshd.session_processes()
    result = run_pre(hooks, ssh_home, PERSISTENT_SSH_DEAD_AFTER=str(DEAD_AFTER_S))
    assert (result.returncode, result.stderr) == (0, "")
    pid = ssh_home.master_pid(alias)
    assert pid is not None
    serving = sorted(sshd.session_processes() - before)
    assert serving, "no sshd process serves the master"
    for server_pid in serving:
        os.kill(server_pid, signal.SIGSTOP)
    return pid, serving


def kill_frozen(pids: list[int]) -> None:
    for pid in pids:
        for signum in (signal.SIGKILL, signal.SIGCONT):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def master_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.mark.slow
def test_a_master_whose_peer_froze_ends_within_the_bound(hooks, ssh_home: SshHome, sshd):
    # BatchMode yes, as smd's layout has it: Debian's ssh then takes
    # ServerAliveInterval 300 unless told otherwise.
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    pid, serving = start_frozen_master(hooks, ssh_home, sshd, "smd-server-foo")
    try:
        argv = master_argv(pid)
        assert "ServerAliveInterval=3" in argv and "ServerAliveCountMax=2" in argv
        frozen_at = time.monotonic()
        assert wait_until(lambda: not alive(pid), DEAD_AFTER_S + SLACK_S), \
            "the master outlived its bound"
        assert time.monotonic() - frozen_at <= DEAD_AFTER_S + SLACK_S
        assert ssh_home.ssh_processes() == []
        assert not (ssh_home.dot_ssh / "master-socket-smd-server-foo").resolve().exists()
    finally:
        kill_frozen(serving)


@pytest.mark.slow
def test_a_keepalive_the_user_set_is_kept(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG + "    ServerAliveInterval 60\n", "smd-server-foo")
    assert run_pre(hooks, ssh_home).returncode == 0
    pid = ssh_home.master_pid("smd-server-foo")
    assert pid is not None
    assert not any(a.startswith("ServerAlive") for a in master_argv(pid))


@pytest.mark.slow
def test_the_next_sync_replaces_a_master_whose_peer_froze(hooks, ssh_home: SshHome, sshd):
    # The user's own long keepalive: only the hook can notice in time.
    ssh_home.write_ssh_config(SEED_CONFIG + "    ServerAliveInterval 300\n",
                              "smd-server-foo")
    old, serving = start_frozen_master(hooks, ssh_home, sshd, "smd-server-foo")
    try:
        before = sshd.count_accepted()
        started = time.monotonic()
        # The next sync: the pre hook, then a session of the sync.
        result = run_pre(hooks, ssh_home, PERSISTENT_SSH_DEAD_AFTER=str(DEAD_AFTER_S))
        session = ssh_home.ssh("smd-server-foo", "echo", "synced",
                               timeout=DEAD_AFTER_S + SLACK_S)
        elapsed = time.monotonic() - started
        assert (session.returncode, session.stdout) == (0, "synced\n"), session.stderr
        assert elapsed < DEAD_AFTER_S, f"the sync took {elapsed:.1f}s"
        assert result.returncode == 0
        assert result.stderr == (
            f"persistent-ssh: the master connection to smd-server-foo (pid {old}) got no"
            f" answer from the server within 3s; replacing it\n")
        assert not alive(old)  # ended, not only its socket removed
        new = ssh_home.master_pid("smd-server-foo")
        assert new is not None and new != old
        assert logins_become(sshd, before + 1) == before + 1
        assert ssh_home.ssh_processes() == [new]
    finally:
        kill_frozen(serving)


@pytest.mark.slow
def test_a_stopped_master_is_ended_and_replaced(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    assert run_pre(hooks, ssh_home).returncode == 0
    old = ssh_home.master_pid("smd-server-foo")
    assert old is not None
    os.kill(old, signal.SIGSTOP)  # the laptop's ssh itself stuck
    started = time.monotonic()
    result = run_pre(hooks, ssh_home, PERSISTENT_SSH_DEAD_AFTER=str(DEAD_AFTER_S))
    assert time.monotonic() - started < DEAD_AFTER_S
    assert result.returncode == 0
    assert "does not answer within 3s; replacing it" in result.stderr
    assert wait_until(lambda: not alive(old), 2)
    new = ssh_home.master_pid("smd-server-foo")
    assert new is not None and new != old
    assert ssh_home.ssh_processes() == [new]


@pytest.mark.slow
def test_a_network_event_ends_the_masters_the_hook_started(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    ssh_home.write_ssh_config(PLAIN_CONFIG, "plainhost", append=True)
    ssh_home.write_ssh_config(PLAIN_CONFIG.replace("cm-%C", "own-%C"), "ownhost", append=True)
    # A master the user started: not the hook's to end.
    own = ssh_home.ssh("-fN", "-o", "ControlMaster=yes", "ownhost")
    assert own.returncode == 0, own.stderr
    own_pid = ssh_home.master_pid("ownhost")
    assert own_pid is not None
    event = [str(hooks["persistent-ssh"]), "--network-event"]

    for event_name in ("changed", "resumed"):
        assert run_pre(hooks, ssh_home).returncode == 0
        assert run_pre(hooks, ssh_home, ROAMMAIL_SSH_HOST="plainhost").returncode == 0
        masters = [ssh_home.master_pid("smd-server-foo"), ssh_home.master_pid("plainhost")]
        assert None not in masters
        for ignored in ("online", "offline"):
            result = subprocess.run([*event, ignored], env=ssh_home.env, capture_output=True,
                                    text=True, timeout=HOOK_TIMEOUT_S)
            assert (result.returncode, result.stderr) == (0, "")
        assert all(alive(pid) for pid in masters if pid is not None)

        result = subprocess.run([*event, event_name], env=ssh_home.env, capture_output=True,
                                text=True, timeout=HOOK_TIMEOUT_S)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        assert not any(alive(pid) for pid in masters if pid is not None)
        assert ssh_home.master_pid("smd-server-foo") is None
        assert ssh_home.master_pid("plainhost") is None
        assert not any(p.name.startswith("cm-") for p in ssh_home.dot_ssh.iterdir())
        assert ssh_home.master_pid("ownhost") == own_pid


@pytest.mark.slow
def test_watch_network_exec_line_ends_the_masters_on_resume(hooks, installed,
                                                            ssh_home: SshHome, sshd, tmp_path):
    """The line of roammail-hooks(7), with a sleep made up.

    Fault injection: no test can suspend the machine, so watch-network's
    test hook adds the seconds in ROAMMAIL_TEST_BOOTTIME_FILE to the boot
    clock, as a sleep would.
    """
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    assert run_pre(hooks, ssh_home).returncode == 0
    pid = ssh_home.master_pid("smd-server-foo")
    assert pid is not None
    shift = tmp_path / "boottime-shift"
    shift.write_text("0\n")
    env = dict(ssh_home.env, ROAMMAIL_TEST_BOOTTIME_FILE=str(shift),
               PATH=os.pathsep.join([str(installed.prefix / "bin"), ssh_home.env["PATH"]]))
    # The hook where the man page has it.
    installed_dir = ssh_home.home / ".local" / "share" / "roammail" / "hooks"
    installed_dir.mkdir(parents=True)
    (installed_dir / "persistent-ssh").symlink_to(hooks["persistent-ssh"])
    man = (Path(__file__).resolve().parents[2] / "man" / "roammail-hooks.7").read_text()
    assert f"watch-network -q --exec='{EXEC_LINE}'" in man
    watcher = subprocess.Popen(["watch-network", "--settle=0", f"--exec={EXEC_LINE}"],
                               env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert first in ("online\n", "offline\n")
        assert alive(pid)  # the first line ends nothing
        shift.write_text("60\n")  # a minute asleep
        # watch-network looks at the clocks every five seconds.
        assert wait_until(lambda: not alive(pid), 15), "the resume did not end the master"
        assert ssh_home.master_pid("smd-server-foo") is None
    finally:
        watcher.terminate()
        try:
            watcher.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait()
    assert watcher.stderr is not None
    assert watcher.stderr.read() == ""
