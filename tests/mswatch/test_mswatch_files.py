"""mswatch's own files (the pid file, --log-file): one that cannot be
opened is a one-line error, exit 74, before anything starts."""

from __future__ import annotations

import os

import pytest

from roammail.mswatch import cli as mswatch

RC = "sync true\nstore a { watch true }\nstore b { watch true }\n"


@pytest.mark.parametrize("option, where", [
    ("--pid-file", "adir"),          # a directory
    ("--pid-file", "file/x"),        # below a file
    ("--pid-file", "n" * 300),       # a name too long
    ("--log-file", "adir"),
    ("--log-file", "file/x"),
    ("--log-file", "adir/" + "n" * 300),
])
def test_an_unusable_pid_or_log_file_is_one_line_not_an_internal_error(
        tmp_path, monkeypatch, capsys, option, where):
    (tmp_path / "adir").mkdir()
    (tmp_path / "file").write_text("")
    (tmp_path / "rc").write_text(RC)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("ROAMMAIL_DEBUG", raising=False)
    status = mswatch.main(["-c", str(tmp_path / "rc"), option, str(tmp_path / where)])
    err = capsys.readouterr().err
    assert status == 74, err
    assert err.startswith("mswatch: cannot open the ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists() or option == "--pid-file"


def test_the_pid_file_goes_when_we_stop_and_its_lock_file_stays(tmp_path):
    from roammail.core.errors import AlreadyRunning

    path = str(tmp_path / "run" / "mswatch.pid")
    fd = mswatch.hold_pid_file(path)
    try:
        assert (tmp_path / "run" / "mswatch.pid").read_text() == f"{os.getpid()}\n"
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}, "):
            mswatch.hold_pid_file(path)
    finally:
        mswatch.release_pid_file(path, fd)
    assert not (tmp_path / "run" / "mswatch.pid").exists()
    assert (tmp_path / "run" / "mswatch.pid.lock").exists()  # never removed: see core.lockfile
    mswatch.release_pid_file(path, mswatch.hold_pid_file(path))  # free again
