"""Both hooks as they are really run: by our runner and the way smd runs them.

* roammail.core.hookdirs.run_hooks(): the hooks are symlinks to the installed
  files in BASE/WHEN-WHAT.d, ROAMMAIL_HOOK_LOG and ROAMMAIL_SSH_HOST come in
  extra_env, the output is appended to the log of the run.
* smd: ~/.smd/hooks/{pre,post}-pull.d, argv `pre|post pull default STATUS`,
  working directory $HOME, output appended to ~/.smd/log/client.default.log.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import pytest
from hook_helpers import HOOK_TIMEOUT_S, SEED_CONFIG, Mailbox, SshHome

from roammail.core import hookdirs

# smd's loop over a hook directory (smd-common's run_hooks), as a script:
# every executable, in name order, argv WHEN WHAT ENDPOINT STATUS, output
# appended to the client log, working directory $HOME; a failing hook
# fails the run.
SMD_RUN_HOOKS = r"""
cd || exit 1
for hook in "$HOME/.smd/hooks/$1-$2.d/"*; do
    [ -x "$hook" ] || continue
    "$hook" "$1" "$2" "$3" "$4" >> "$HOME/.smd/log/client.$3.log" 2>&1 || exit 1
done
"""


def link_hook(directory: Path, name: str, target: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).symlink_to(target)


def smd_run_hooks(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", SMD_RUN_HOOKS, "smd", *argv], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=HOOK_TIMEOUT_S)


@pytest.mark.slow
def test_runner_runs_mail_on_failure_with_the_log_of_the_run(
        hooks, home, mailbox: Mailbox, monkeypatch, tmp_path):
    home_dir, env = home
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ROAMMAIL_HOOK_LOG", raising=False)
    endpoint = f"inbox {uuid.uuid4().hex[:10]}; $(touch pwned)"
    mailbox.markers.append(endpoint)
    base = tmp_path / "roammail-hooks"
    link_hook(base / "post-sync.d", "50-mail-on-failure", hooks["mail-on-failure"])
    log = tmp_path / "sync.log"
    log.write_text("syncmail: 3 messages left on the server: ssh timed out\n")

    results = hookdirs.run_hooks(str(base), "post", "sync", endpoint, 75, log_path=str(log),
                                 extra_env={"ROAMMAIL_HOOK_LOG": str(log)}, timeout=30)
    assert [(r.ok, r.status) for r in results] == [(True, "exit status 0")]
    [message] = mailbox.wait_for(endpoint, 1)
    assert message["Subject"] == f"[smd] sync with {endpoint} failed"
    body = message.get_content()
    assert "  syncmail: 3 messages left on the server: ssh timed out\n" in body
    assert "status:    75" in body and "what:      sync" in body
    assert log.read_text() == "syncmail: 3 messages left on the server: ssh timed out\n"

    results = hookdirs.run_hooks(str(base), "post", "sync", endpoint, 0, log_path=str(log),
                                 extra_env={"ROAMMAIL_HOOK_LOG": str(log)}, timeout=30)
    assert all(r.ok for r in results)
    messages = mailbox.wait_for(endpoint, 2)
    assert messages[-1]["Subject"] == f"[smd] sync with {endpoint} succeeded"
    assert not (home_dir / "pwned").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_smd_runs_mail_on_failure(hooks, home, mailbox: Mailbox):
    home_dir, env = home
    tag = uuid.uuid4().hex[:12]
    mailbox.markers.append(tag)
    link_hook(home_dir / ".smd" / "hooks" / "post-pull.d", "mail-on-failure",
              hooks["mail-on-failure"])
    client_log = home_dir / ".smd" / "log" / "client.default.log"
    client_log.parent.mkdir(parents=True)
    client_log.write_text(f"smd-client: lost the server ({tag})\n")

    result = smd_run_hooks(env, "post", "pull", "default", "1")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    [message] = mailbox.wait_for(tag, 1)
    assert message["Subject"] == "[smd] sync with default failed"
    assert f"  smd-client: lost the server ({tag})\n" in message.get_content()
    # The hook wrote nothing into the log it reports.
    assert client_log.read_text() == f"smd-client: lost the server ({tag})\n"
    assert (home_dir / ".smd" / "hooks" / "mail-on-failure-default").is_file()


@pytest.mark.slow
def test_runner_runs_persistent_ssh(hooks, ssh_home: SshHome, sshd, monkeypatch, tmp_path):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    for name, value in ssh_home.env.items():
        monkeypatch.setenv(name, value)
    base = tmp_path / "roammail-hooks"
    link_hook(base / "pre-sync.d", "10-persistent-ssh", hooks["persistent-ssh"])
    log = tmp_path / "sync.log"
    before = sshd.count_accepted()

    started = time.monotonic()
    results = hookdirs.run_hooks(str(base), "pre", "sync", "inbox; $(touch pwned)", 0,
                                 log_path=str(log),
                                 extra_env={"ROAMMAIL_SSH_HOST": "smd-server-foo",
                                            "ROAMMAIL_HOOK_LOG": str(log)},
                                 timeout=30)
    # The master lives on, but holds none of the runner's pipes.
    assert time.monotonic() - started < 15
    assert [(r.ok, r.status) for r in results] == [(True, "exit status 0")]
    assert not log.exists()  # nothing to say
    assert ssh_home.master_pid("smd-server-foo") is not None
    for _ in range(3):
        assert ssh_home.ssh("smd-server-foo", "true").returncode == 0
    sshd.wait_for_log("Accepted publickey for ", before + 1)
    assert sshd.count_accepted() == before + 1
    assert not (ssh_home.home / "pwned").exists()


@pytest.mark.slow
def test_smd_runs_persistent_ssh(hooks, ssh_home: SshHome, sshd):
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    ssh_home.write_smd_config("default", "# smd config\nSERVERNAME=smd-server-foo\n"
                              "CLIENTNAME=laptop-default\nMAILBOX=\"Mail/\"\n")
    link_hook(ssh_home.home / ".smd" / "hooks" / "pre-pull.d", "persistent-ssh",
              hooks["persistent-ssh"])
    (ssh_home.home / ".smd" / "log").mkdir()
    before = sshd.count_accepted()

    started = time.monotonic()
    result = smd_run_hooks(ssh_home.env, "pre", "pull", "default", "0")
    assert time.monotonic() - started < 15
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert ssh_home.master_pid("smd-server-foo") is not None
    assert ssh_home.ssh("smd-server-foo", "true").returncode == 0
    sshd.wait_for_log("Accepted publickey for ", before + 1)
    assert sshd.count_accepted() == before + 1
    assert (ssh_home.home / ".smd" / "log" / "client.default.log").read_text() == ""


@pytest.mark.parametrize("hook", ["mail-on-failure", "persistent-ssh"])
def test_hooks_answer_version_and_help(installed, hook) -> None:
    from roammail import __version__

    path = installed.prefix / "share" / "roammail" / "hooks" / hook
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=30)
    assert (version.returncode, version.stdout) == (0, f"{hook} (roammail) {__version__}\n")
    usage = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {hook} WHEN WHAT")


@pytest.mark.slow
def test_smd_config_computing_servername_starts_a_master(hooks, ssh_home: SshHome, sshd):
    # smd sources its configuration before every run: so does the hook.
    ssh_home.write_ssh_config(SEED_CONFIG, "smd-server-foo")
    ssh_home.write_smd_config("default", "ALIAS=smd-server-foo\nSERVERNAME=$ALIAS\n"
                              "CLIENTNAME=`hostname`-$REPNAME\nMAILBOX=\"Mail/\"\n")
    link_hook(ssh_home.home / ".smd" / "hooks" / "pre-pull.d", "persistent-ssh",
              hooks["persistent-ssh"])
    (ssh_home.home / ".smd" / "log").mkdir()
    result = smd_run_hooks(ssh_home.env, "pre", "pull", "default", "0")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert (ssh_home.home / ".smd" / "log" / "client.default.log").read_text() == ""
    assert ssh_home.master_pid("smd-server-foo") is not None


@pytest.mark.slow
def test_smd_failure_mail_names_ssh_once(hooks, ssh_home: SshHome, sshd, mailbox: Mailbox,
                                         closed_port):
    """persistent-ssh's lines in smd's log, as the failure mail shows them."""
    endpoint = f"ep{uuid.uuid4().hex[:10]}"
    mailbox.markers.append(endpoint)
    ssh_home.write_ssh_config(SEED_CONFIG, f"smd-server-{endpoint}", port=closed_port)
    smd = ssh_home.home / ".smd"
    link_hook(smd / "hooks" / "pre-pull.d", "persistent-ssh", hooks["persistent-ssh"])
    link_hook(smd / "hooks" / "post-pull.d", "mail-on-failure", hooks["mail-on-failure"])
    (smd / "log").mkdir()

    assert smd_run_hooks(ssh_home.env, "pre", "pull", endpoint, "0").returncode == 0
    assert smd_run_hooks(ssh_home.env, "post", "pull", endpoint, "1").returncode == 0
    [message] = mailbox.wait_for(endpoint, 1)
    body = message.get_content()
    refused = (f"  persistent-ssh: ssh: connect to host {sshd.host} port {closed_port}:"
               " Connection refused\n")
    assert refused in body
    assert ": ssh: ssh:" not in body
