"""extsmaild's shared ssh connection: one connection for a queue run,
against the real test sshd; the user's own sharing left alone."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import pytest
from test_extsmaild_batch import batch, queue, script

from extsmail.conftest import simple_message
from roammail.core import child
from roammail.extsmail.sshshare import SshSharing, configured_sharing, manages_sharing, private_dir

pytestmark = pytest.mark.slow


def masters() -> dict[int, str]:
    """pid -> title of every ssh master (OpenSSH titles one "ssh: PATH [mux]")."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                title = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ssh: ") and title.endswith(b" [mux]"):
                found[int(entry)] = title.decode(errors="replace")
    return found


def external(ext_home, sshd, sink: Path, extra: str = "") -> None:
    ssh = shlex.join(sshd.ssh_command())
    ext_home.write_externals(
        f'group {{ external s {{ sendmail = "{ssh} {extra}{sshd.host_alias} {sink}" }} }}\n')


@pytest.fixture
def sink(ext_home) -> Path:
    """A sendmail on the far side that keeps each message in its own file."""
    store = ext_home.tmp / "received"
    store.mkdir()
    return script(ext_home, "sink", f'cat > {store}/$$.$(date +%s%N)\n')


def test_one_connection_for_a_queue_run(ext_home, sshd, sink) -> None:
    external(ext_home, sshd, sink)
    for i in range(5):
        queue(ext_home, simple_message(subject=f"m{i}"))
    before_masters = set(masters())
    logins = sshd.count_accepted()
    res = batch(ext_home)
    assert res.returncode == 0, res.stderr
    assert ext_home.queued() == []
    assert len(list((ext_home.tmp / "received").iterdir())) == 5
    assert sshd.count_accepted() - logins == 1  # five messages, one login
    # The master ended with the run: none of ours is left.
    time.sleep(0.2)
    assert set(masters()) - before_masters == set()


def test_the_commands_own_sharing_is_left_alone(ext_home, sshd, sink) -> None:
    external(ext_home, sshd, sink, extra="-o ControlMaster=no ")
    for i in range(3):
        queue(ext_home, simple_message(subject=f"m{i}"))
    logins = sshd.count_accepted()
    assert batch(ext_home).returncode == 0
    assert sshd.count_accepted() - logins == 3


def test_a_master_holds_none_of_our_pipes(sshd, tmp_path) -> None:
    sink = tmp_path / "sink"
    sink.write_text("#!/bin/sh\ncat >/dev/null\n")
    sink.chmod(0o755)
    sharing = SshSharing()
    argv = sharing.argv("s", [*sshd.ssh_command(), sshd.host_alias, str(sink)])
    before = set(masters())
    try:
        result = child.run_child(argv, b"hello\n", stall_timeout=20, grace=1)
        assert result.ok, result.stderr
        ours = set(masters()) - before
        assert len(ours) == 1
        pid = ours.pop()
        targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert not any(t.startswith("pipe:") for t in targets), targets
        assert {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in ("0", "1", "2")} == {"/dev/null"}
    finally:
        sharing.close()
    time.sleep(0.2)
    assert set(masters()) - before == set()


@pytest.mark.parametrize("argv,managed", [
    (["ssh", "-q", "host", "/usr/sbin/sendmail", "-t"], False),
    (["ssh", "-p", "22", "-o", "ControlMaster=no", "host", "sendmail"], True),
    (["ssh", "-oControlPath=/x", "host"], True),
    (["ssh", "-o", "controlpersist 5", "host"], True),
    (["ssh", "-S", "/x", "host"], True),
    (["ssh", "-qM", "host"], True),
    (["ssh", "host", "-o", "ControlMaster=no", "sendmail"], True),  # ssh reads both sides
    (["ssh", "host", "sendmail", "-o", "ControlMaster=no"], False),  # the remote command's
    (["ssh", "-p22", "-F", "cfg", "host", "sendmail", "-t"], False),
])
def test_which_commands_manage_their_own_sharing(argv, managed) -> None:
    assert manages_sharing(argv) is managed


def test_sharing_set_in_the_users_ssh_config(tmp_path) -> None:
    config = tmp_path / "config"
    config.write_text("Host shared\n  ControlMaster auto\n  ControlPath /tmp/cm-%C\n")
    assert configured_sharing(["ssh", "-F", str(config), "shared", "sendmail"])
    assert not configured_sharing(["ssh", "-F", str(config), "other", "sendmail"])


def test_the_socket_directory_is_private(tmp_path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    path = private_dir({"XDG_RUNTIME_DIR": str(runtime)})
    assert path == str(runtime / "roammail")
    assert os.stat(path).st_mode & 0o777 == 0o700
    os.chmod(path, 0o755)
    with pytest.raises(OSError, match="not a private directory"):
        private_dir({"XDG_RUNTIME_DIR": str(runtime)})
