"""Exit statuses 0/1/66/75/78, dry run, hooks."""

from __future__ import annotations

import os
import stat

from syncmail_helpers import fill_server


def test_exit_0_and_1_on_a_name_already_here(world):
    made = fill_server(world, 3, sizes=[10, 20, 30])
    name = sorted(made)[0]
    for sub in ("cur", "new", "tmp"):
        (world.local / sub).mkdir(parents=True, exist_ok=True)
    (world.local / "cur" / f"{name}:2,S").write_bytes(b"mine\n")
    world.basic_config()
    result = world.run()
    assert result.returncode == 1
    assert f"{name} left on the server: a message of that name is here already" in result.stderr
    assert world.server_new() == {name}
    assert (world.local / "cur" / f"{name}:2,S").read_bytes() == b"mine\n"
    (world.local / "cur" / f"{name}:2,S").unlink()
    assert world.run().returncode == 0


def test_exit_75_when_the_server_cannot_be_reached(world, tmp_path):
    bad = tmp_path / "badssh"
    bad.mkdir()
    wrapper = bad / "ssh"
    ssh = f"{world.sshd.ssh_path} -F {world.sshd.config_path} -p 1"
    wrapper.write_text(f'#!/bin/sh\nexec {ssh} "$@"\n')
    wrapper.chmod(0o755)
    fill_server(world, 1, sizes=[10])
    world.basic_config()
    env_path = f"{bad}:{world.env()['PATH']}"
    result = world.run(PATH=env_path, timeout=60)
    assert result.returncode == 75, result.stderr
    assert "cannot connect to testhost" in result.stderr
    assert len(world.server_new()) == 1


def test_exit_78_with_file_and_line(world):
    path = world.write_config('source a {\n  host = "testhost"\n  remote = "x"\n'
                              '  local = "y"\n  match header "(" inbox\n}\n')
    result = world.run()
    assert result.returncode == 78
    assert f"({path}:5)" in result.stderr
    world.write_config('source a {\n  host = "h"\n  bogus = "x"\n}\n')
    result = world.run()
    assert result.returncode == 78 and f"({path}:3)" in result.stderr
    result = world.run("-c", str(world.root / "missing.conf"))
    assert result.returncode == 78
    assert world.run("nosuchsource").returncode == 78


def test_remote_maildir_missing_names_the_config_line(world):
    world.write_config(f'source a {{\n  host = "testhost"\n  remote = "{world.root}/none"\n'
                       f'  local = "{world.local}"\n}}\n')
    result = world.run()
    assert result.returncode == 66
    assert "syncmail.conf:3)" in result.stderr


def test_dry_run_changes_nothing(world):
    made = fill_server(world, 4, sizes=[200, 300, 400, 500])
    world.basic_config('    match header "^Subject: message 1$" discard\n')
    result = world.run("-n")
    assert result.returncode == 0, result.stderr
    assert world.server_new() == set(made)
    assert not world.local.exists()
    assert result.stdout.count("would move") == 3
    assert result.stdout.count("would discard") == 1


def test_hooks_run_with_smd_argv(world, tmp_path):
    hooks = tmp_path / "hooks"
    out = tmp_path / "hook.out"
    for when in ("pre", "post"):
        d = hooks / f"{when}-pull.d"
        d.mkdir(parents=True)
        hook = d / "10-record"
        hook.write_text('#!/bin/sh\nprintf "%s|" "$@" >> "$OUT"; '
                        'printf "%s\\n" "$ROAMMAIL_SSH_HOST" >> "$OUT"\n')
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    fill_server(world, 1, sizes=[10])
    world.basic_config()
    result = world.run("--hooks", str(hooks), OUT=str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == ["pre|pull|laptop|0|testhost",
                                            "post|pull|laptop|0|testhost"]
    # A collision makes the post hook see status 1.
    (world.local / "new" / "x.host").write_bytes(b"a")
    world.deliver_remote("x.host", b"b")
    out.unlink()
    world.run("--hooks", str(hooks), OUT=str(out))
    assert out.read_text().splitlines()[-1] == "post|pull|laptop|1|testhost"


def test_default_hook_base(world):
    d = world.home / ".config" / "roammail" / "hooks" / "pre-pull.d"
    d.mkdir(parents=True)
    flag = world.root / "ran"
    (d / "h").write_text(f"#!/bin/sh\ntouch {flag}\n")
    os.chmod(d / "h", 0o755)
    world.basic_config()
    assert world.run().returncode == 0
    assert flag.exists()


def test_bad_batch_size_is_a_usage_error(world):
    world.basic_config()
    result = world.run(ROAMMAIL_SYNCMAIL_BATCH="0")
    assert result.returncode == 64
    assert result.stderr == ("syncmail: ROAMMAIL_SYNCMAIL_BATCH must be a positive number, "
                             "not '0'\n")
