"""hookdirs.py: smd-style hook directories run for real, as argv."""

from __future__ import annotations

import os
import time
from pathlib import Path

from roammail.core import hookdirs


def make_hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def test_hooks_run_in_name_order_with_the_smd_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    d = tmp_path / "hooks" / "post-pull.d"
    record = tmp_path / "record"
    for name in ("20-b", "10-a", "30-c"):
        make_hook(d, name, f'echo "{name} $*" >> {record}; echo "$(pwd)" >> {record}.cwd')
    make_hook(d, "40-not-executable", f"echo never >> {record}", mode=0o644)
    make_hook(d, ".hidden", f"echo never >> {record}")
    make_hook(d, "50-backup~", f"echo never >> {record}")
    results = hookdirs.run_hooks(str(tmp_path / "hooks"), "post", "pull", "default", 1)
    assert [Path(r.path).name for r in results] == ["10-a", "20-b", "30-c"]
    assert all(r.ok for r in results)
    assert record.read_text().splitlines() == [
        "10-a post pull default 1", "20-b post pull default 1", "30-c post pull default 1"]
    assert set(Path(f"{record}.cwd").read_text().split()) == {str(tmp_path)}


def test_an_endpoint_is_data_never_shell_text(tmp_path):
    d = tmp_path / "hooks" / "pre-sync.d"
    out = tmp_path / "out"
    make_hook(d, "h", f'printf "%s\\n" "$3" > {out}')
    hostile = 'a b; touch pwned $(touch pwned2) `touch pwned3`'
    [result] = hookdirs.run_hooks(str(tmp_path / "hooks"), "pre", "sync", hostile)
    assert result.ok
    assert out.read_text() == hostile + "\n"
    assert not any((tmp_path / n).exists() for n in ("pwned", "pwned2", "pwned3"))
    assert not any(Path(n).exists() for n in ("pwned", "pwned2", "pwned3"))


def test_output_is_appended_to_the_log_and_failures_are_reported(tmp_path):
    d = tmp_path / "hooks" / "post-sync.d"
    log = tmp_path / "log"
    log.write_text("earlier\n")
    make_hook(d, "a", "echo out; echo err >&2; exit 3")
    make_hook(d, "b", 'echo "env=$ROAMMAIL_HOOK_LOG"')
    results = hookdirs.run_hooks(str(tmp_path / "hooks"), "post", "sync", "x", 0,
                                 log_path=str(log), extra_env={"ROAMMAIL_HOOK_LOG": str(log)})
    assert [(r.ok, r.status) for r in results] == [(False, "exit status 3"),
                                                   (True, "exit status 0")]
    assert log.read_text() == f"earlier\nout\nerr\nenv={log}\n"


def test_a_hanging_hook_is_killed_and_reported(tmp_path):
    d = tmp_path / "hooks" / "pre-pull.d"
    make_hook(d, "hang", "sleep 1000")
    start = time.monotonic()
    [result] = hookdirs.run_hooks(str(tmp_path / "hooks"), "pre", "pull", "x", timeout=0.5)
    assert time.monotonic() - start < 10
    assert not result.ok


def test_a_missing_directory_runs_nothing(tmp_path):
    assert hookdirs.run_hooks(str(tmp_path / "nothing"), "pre", "pull", "x") == []
    assert hookdirs.list_hooks(os.devnull) == []
