"""--offline-ok and `offline_ok`: a server that cannot be reached at all
(connection refused, a name that does not resolve, no route) is exit 0
and silent under -q; a server that answers and refuses stays a loud 75.
Every case is real ssh against the test sshd, a closed port, a .invalid
name, or a network namespace without a default route."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from syncmail_helpers import fill_server

NETNS_TIMEOUT = 30
# TEST-NET-1 (RFC 5737): reached by no route in the namespaces below.
UNROUTED = "192.0.2.1"


def ssh_with(world, tmp_path: Path, *options: str) -> str:
    """A PATH that runs the test ssh with `options` added; the PATH."""
    bindir = tmp_path / "ssh-bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "ssh"
    words = " ".join([world.sshd.ssh_path, "-F", str(world.sshd.config_path), *options])
    wrapper.write_text(f'#!/bin/sh\nexec {words} "$@"\n')
    wrapper.chmod(0o755)
    return f"{bindir}:{world.env()['PATH']}"


def hook_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A post-pull hook that records its arguments and ROAMMAIL_OFFLINE."""
    hooks = tmp_path / "hooks"
    (hooks / "post-pull.d").mkdir(parents=True)
    out = tmp_path / "hook.out"
    hook = hooks / "post-pull.d" / "record"
    hook.write_text(f'#!/bin/sh\necho "$* offline=${{ROAMMAIL_OFFLINE-unset}}" >> {out}\n')
    hook.chmod(0o755)
    return hooks, out


def test_closed_port_is_silent_and_0_with_offline_ok(world, tmp_path, closed_port):
    fill_server(world, 2, sizes=[10, 20])
    world.basic_config()
    path = ssh_with(world, tmp_path, "-p", str(closed_port))
    hooks, out = hook_recorder(tmp_path)
    result = world.run("-q", "--offline-ok", "--hooks", str(hooks), PATH=path, timeout=60)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")
    assert len(world.server_new()) == 2
    # The post hook is told: the status a run without the option has, and
    # that the server was out of reach.
    assert out.read_text() == "post pull laptop 75 offline=1\n"
    # Without -q (cron), one line says so; still exit 0.
    result = world.run("--offline-ok", PATH=path, timeout=60)
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("syncmail: laptop: offline, nothing moved: cannot connect "
                                    "to testhost: ")
    assert "Connection refused" in result.stderr
    # Without the option it is the failure it always was.
    result = world.run("-q", PATH=path, timeout=60)
    assert result.returncode == 75
    assert "cannot connect to testhost" in result.stderr


def test_unresolvable_name_with_the_config_setting(world):
    fill_server(world, 1, sizes=[10])
    world.write_config('source laptop {\n    host = "mail.roammail.invalid"\n'
                       f'    remote = "{world.server}"\n    local = "{world.local}"\n'
                       '    offline_ok = "yes"\n}\n')
    result = world.run("-q", timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert len(world.server_new()) == 1
    world.write_config('source laptop {\n    host = "mail.roammail.invalid"\n'
                       f'    remote = "{world.server}"\n    local = "{world.local}"\n'
                       '    offline_ok = "no"\n}\n')
    result = world.run("-q", timeout=60)
    assert result.returncode == 75
    assert "Could not resolve hostname mail.roammail.invalid" in result.stderr


def test_offline_ok_takes_yes_or_no(world):
    path = world.write_config('source laptop {\n    host = "testhost"\n    remote = "M"\n'
                              '    local = "L"\n    offline_ok = "sometimes"\n}\n')
    result = world.run()
    assert result.returncode == 78
    assert f"'offline_ok' must be \"yes\" or \"no\", not 'sometimes' ({path}:5)" \
        in result.stderr


def test_one_shot_form_and_an_unreachable_jump_host(world, tmp_path, closed_port):
    """A ProxyJump that cannot connect: ssh's own line is the jump's."""
    fill_server(world, 1, sizes=[10])
    path = ssh_with(world, tmp_path, "-o", f"ProxyJump=127.0.0.1:{closed_port}")
    result = world.run("-q", "--offline-ok", f"testhost:{world.server}", str(world.local),
                       PATH=path, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert len(world.server_new()) == 1


@pytest.mark.parametrize("options, says", [
    (("-l", "roammail-no-such-user"), "Permission denied"),
    (("-o", "UserKnownHostsFile=/dev/null"), "Host key verification failed"),
])
def test_a_server_that_refuses_is_still_loud(world, tmp_path, options, says):
    fill_server(world, 1, sizes=[10])
    world.basic_config()
    hooks, out = hook_recorder(tmp_path)
    path = ssh_with(world, tmp_path, *options)
    result = world.run("-q", "--offline-ok", "--hooks", str(hooks), PATH=path, timeout=60)
    assert result.returncode == 75, result.stderr
    assert "syncmail: cannot connect to testhost: " in result.stderr
    assert says in result.stderr
    assert out.read_text() == "post pull laptop 75 offline=unset\n"
    assert len(world.server_new()) == 1


@pytest.fixture
def netns():
    """A fresh network namespace with only a loopback (no default route);
    its name.  Removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and ip(8)")
    name = f"roammail-test-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                          timeout=NETNS_TIMEOUT)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       timeout=NETNS_TIMEOUT)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], timeout=NETNS_TIMEOUT)


@pytest.mark.parametrize("route, says", [
    (None, "Network is unreachable"),
    ("unreachable", "No route to host"),
])
def test_no_route_in_a_network_namespace(world, tmp_path, netns, route, says):
    if route is not None:
        subprocess.run(["ip", "-n", netns, "route", "add", route, "default"], check=True,
                       timeout=NETNS_TIMEOUT)
    fill_server(world, 1, sizes=[10])
    world.basic_config()
    env = world.env(PATH=ssh_with(world, tmp_path, "-o", f"HostName={UNROUTED}"))
    inside = ["ip", "netns", "exec", netns]
    argv = [*inside, *world.argv("-q", "--offline-ok")]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, "")
    result = subprocess.run([*inside, *world.argv("-q")], env=env, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 75
    assert f"ssh: connect to host {UNROUTED} port " in result.stderr
    assert says in result.stderr
    assert len(world.server_new()) == 1


def test_mail_on_failure_mails_a_refusal_but_not_offline(world, tmp_path, closed_port):
    """The installed mail-on-failure as syncmail's post-pull hook, with a
    recording `mail`: offline runs mail nothing, with or without
    --offline-ok; a refused login mails "failed"."""
    hook_source = world.installed.prefix / "share" / "roammail" / "hooks" / "mail-on-failure"
    hooks = tmp_path / "hooks"
    (hooks / "post-pull.d").mkdir(parents=True)
    (hooks / "post-pull.d" / "mail-on-failure").symlink_to(hook_source)
    calls = tmp_path / "mail-calls"
    calls.mkdir()
    mail = tmp_path / "mail-bin" / "mail"
    mail.parent.mkdir()
    mail.write_text(f'#!/bin/sh\nf=$(mktemp {calls}/call.XXXXXX)\nprintf "%s\\n" "$2" > "$f"\n'
                    'cat > /dev/null\n')
    mail.chmod(0o755)
    fill_server(world, 1, sizes=[10])
    world.basic_config()

    def run(*ssh_options: str, offline_ok: bool) -> int:
        path = f"{mail.parent}:{ssh_with(world, tmp_path, *ssh_options)}"
        args = ["-q", "--hooks", str(hooks)] + (["--offline-ok"] if offline_ok else [])
        return world.run(*args, PATH=path, USER="roammail-test", timeout=60).returncode

    def subjects() -> list[str]:
        found = [p.read_text().strip() for p in sorted(calls.iterdir())]
        for p in calls.iterdir():
            p.unlink()
        return found

    assert run("-p", str(closed_port), offline_ok=True) == 0
    assert run("-p", str(closed_port), offline_ok=False) == 75
    assert subjects() == []
    assert run("-l", "roammail-no-such-user", offline_ok=True) == 75
    assert subjects() == ["[smd] sync with laptop failed"]
    assert run("-p", str(closed_port), offline_ok=True) == 0
    assert subjects() == []
    assert run(offline_ok=True) == 0
    assert subjects() == ["[smd] sync with laptop succeeded"]
    assert world.server_new() == set()
