"""Unit tests of maildir.py: layout, folder names, message names, delivery,
and delivery interrupted by kill -9."""

from __future__ import annotations

import errno
import os
import posix
import random
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roammail.core.errors import DataError, IOFailure
from roammail.core.maildir import (
    base_name,
    check_message_name,
    deliver,
    folder_to_path,
    is_maildir,
    is_safe_message,
    list_folders,
    make_maildir,
    message_exists,
    path_to_folder,
    unique_name,
)

LIB = str(Path(__file__).resolve().parents[2] / "lib")
BASE = "/home/u/Maildir"

CONTROL_CHARACTERS = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = tmp_path / "Maildir"
    make_maildir(str(path))
    return path


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# ------------------------------------------------------------ folder names

@pytest.mark.parametrize("name, leaf", [
    ("foo", ".foo"), ("foo.bar", ".foo.bar"), ("Sent Items", ".Sent Items"),
    ("INBOX.x", ".INBOX.x"), ("inbox", ".inbox"), ("caf\u00e9", ".caf\u00e9"),
])
def test_folder_to_path(name: str, leaf: str) -> None:
    assert folder_to_path(BASE, name) == f"{BASE}/{leaf}"
    assert path_to_folder(BASE, f"{BASE}/{leaf}") == name


def test_inbox_is_the_base() -> None:
    assert folder_to_path(BASE, "INBOX") == BASE
    assert path_to_folder(BASE, BASE) == "INBOX"
    assert path_to_folder(BASE + "/", BASE + "//") == "INBOX"
    assert path_to_folder(BASE, BASE + "/./.foo/") == "foo"


@pytest.mark.parametrize("name", [
    "", ".", "..", ".foo", "foo.", "a..b", "a/b", "../x", "a\nb", "nul\0", "x" * 255,
])
def test_bad_folder_names(name: str) -> None:
    with pytest.raises(DataError):
        folder_to_path(BASE, name)


@pytest.mark.parametrize("path", [
    "/elsewhere", f"{BASE}/foo", f"{BASE}/.foo/cur", f"{BASE}/..foo", f"{BASE}/.foo.",
    f"{BASE}/.INBOX", f"{BASE}/.a/.b", "/home/u",
])
def test_paths_that_are_not_folders(path: str) -> None:
    with pytest.raises(DataError):
        path_to_folder(BASE, path)


def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_to_folder("Maildir", str(tmp_path / "Maildir" / ".a.b")) == "a.b"
    assert path_to_folder(str(tmp_path / "Maildir"), "Maildir/.a") == "a"


folder_component = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="./\x7f"),
    min_size=1, max_size=12)
folder_names = st.lists(folder_component, min_size=1, max_size=4).map(".".join).filter(
    lambda name: len(name.encode()) < 255)


@given(folder_names)
def test_folder_round_trip(name: str) -> None:
    path = folder_to_path(BASE, name)
    assert path_to_folder(BASE, path) == name
    if name != "INBOX":
        assert os.path.dirname(path) == BASE


@given(st.text(max_size=30))
def test_any_accepted_folder_name_round_trips(name: str) -> None:
    try:
        path = folder_to_path(BASE, name)
    except DataError:
        return
    assert path_to_folder(BASE, path) == name
    assert "\n" not in path and "\0" not in path


@given(st.text(max_size=30))
def test_any_accepted_path_round_trips(leaf: str) -> None:
    path = os.path.join(BASE, leaf)
    try:
        name = path_to_folder(BASE, path)
    except DataError:
        return
    assert folder_to_path(BASE, name) == os.path.normpath(path)


# ------------------------------------------------------- layout and listing

def test_make_maildir(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "Maildir"
    assert not is_maildir(str(path))
    make_maildir(str(path))
    assert is_maildir(str(path))
    for directory in (path, path / "cur", path / "new", path / "tmp"):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    (path / "new" / "m").write_bytes(b"mail")
    make_maildir(str(path))  # idempotent, keeps what is there
    assert (path / "new" / "m").read_bytes() == b"mail"


def test_make_maildir_completes_a_partial_one(tmp_path: Path) -> None:
    (tmp_path / "M" / "new").mkdir(parents=True)
    make_maildir(str(tmp_path / "M"), mode=0o750)
    assert is_maildir(str(tmp_path / "M"))
    assert stat.S_IMODE(os.stat(tmp_path / "M" / "cur").st_mode) == 0o750


def test_make_maildir_over_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "M").mkdir()
    (tmp_path / "M" / "cur").write_bytes(b"")
    with pytest.raises(IOFailure, match="cur exists and is not a directory"):
        make_maildir(str(tmp_path / "M"))


def test_is_maildir_needs_all_three(tmp_path: Path) -> None:
    for sub in ("cur", "new"):
        (tmp_path / sub).mkdir()
    assert not is_maildir(str(tmp_path))
    (tmp_path / "tmp").write_bytes(b"")
    assert not is_maildir(str(tmp_path))


def test_list_folders(maildir: Path, tmp_path: Path) -> None:
    make_maildir(str(maildir / ".b"))
    make_maildir(str(maildir / ".a.sub"))
    make_maildir(str(maildir / ".a"))
    (maildir / ".notmaildir" / "cur").mkdir(parents=True)
    (maildir / ".file").write_bytes(b"")
    make_maildir(str(maildir / "noleadingdot"))
    make_maildir(str(maildir / "..bad"))
    make_maildir(str(maildir / ".INBOX"))
    make_maildir(str(tmp_path / "elsewhere"))
    os.symlink(tmp_path / "elsewhere", maildir / ".linked")
    os.symlink(tmp_path / "nowhere", maildir / ".dangling")
    assert list_folders(str(maildir)) == ["INBOX", "a", "a.sub", "b", "linked"]


def test_list_folders_of_a_base_that_is_no_maildir(tmp_path: Path) -> None:
    make_maildir(str(tmp_path / ".x"))
    assert list_folders(str(tmp_path)) == ["x"]
    with pytest.raises(IOFailure, match="^cannot list .*missing: No such file"):
        list_folders(str(tmp_path / "missing"))


# ----------------------------------------------------------- message names

UNIQUE = re.compile(r"^(\d+)\.M(\d{1,6})P(\d+)Q(\d+)R([0-9a-f]{16})\.(.+)$")


def test_unique_name_format() -> None:
    before = int(time.time())
    name = unique_name("host.example.org")
    match = UNIQUE.match(name)
    assert match, name
    assert before <= int(match[1]) <= time.time() + 1
    assert int(match[3]) == os.getpid()
    assert match[6] == "host.example.org"
    check_message_name(name)


def test_unique_name_default_host_and_escapes() -> None:
    assert unique_name().endswith("." + os.uname().nodename.replace("/", "\\057")
                                  .replace(":", "\\072"))
    assert unique_name("a/b:c").endswith(".a\\057b\\072c")
    assert ":" not in unique_name("x:y") and "/" not in unique_name("x/y")


def test_unique_names_are_unique() -> None:
    names = [unique_name() for _ in range(2000)]
    assert len(set(names)) == len(names)
    counters = [int(UNIQUE.match(name)[4]) for name in names]  # type: ignore[index]
    assert counters == sorted(counters)


@pytest.mark.parametrize("name", [
    "1.M2P3Q4R5.host", "1.M2P3.host:2,S", "x", "caf\u00e9", "a" * 255, "with space",
])
def test_good_message_names(name: str) -> None:
    check_message_name(name)


@pytest.mark.parametrize("name", [
    "", "a/b", "/", "nul\0", "new\nline", "cr\r", "tab\t", "del\x7f", "c1\x85",
    ".hidden", ".", "..", "a" * 256, "\u00e9" * 128, "bad\udc00surrogate",
])
def test_bad_message_names(name: str) -> None:
    with pytest.raises(DataError) as caught:
        check_message_name(name)
    assert "\n" not in str(caught.value)


@given(st.text(max_size=20), st.sampled_from(["/"] + CONTROL_CHARACTERS), st.text(max_size=20))
def test_names_with_slash_or_control_never_pass(before: str, bad: str, after: str) -> None:
    with pytest.raises(DataError):
        check_message_name(before + bad + after)


@given(st.text(max_size=300))
def test_accepted_names_are_safe(name: str) -> None:
    try:
        check_message_name(name)
    except DataError:
        return
    assert "/" not in name and not name.startswith(".")
    assert all(ch not in name for ch in CONTROL_CHARACTERS)
    assert 0 < len(os.fsencode(name)) <= 255


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60))
def test_unique_names_pass_the_check(host: str) -> None:
    check_message_name(unique_name(host))


def test_base_name() -> None:
    assert base_name("123.M4P5.host") == "123.M4P5.host"
    assert base_name("123.M4P5.host:2,FRS") == "123.M4P5.host"
    assert base_name("123.M4P5.host:2,") == "123.M4P5.host"
    assert base_name("a\\072b:2,S") == "a\\072b"


# ---------------------------------------------------------------- delivery

def test_deliver_into_new(maildir: Path) -> None:
    path = deliver(str(maildir), b"Subject: hi\n\nbody\n")
    name = os.path.basename(path)
    assert path == str(maildir / "new" / name)
    assert UNIQUE.match(name)
    assert (maildir / "new" / name).read_bytes() == b"Subject: hi\n\nbody\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert files(maildir / "tmp") == [] and files(maildir / "cur") == []


def test_deliver_named_into_cur_with_mtime(maildir: Path) -> None:
    path = deliver(str(maildir), [b"a", b"b"], name="m1:2,S", subdir="cur",
                   mtime=1_234_567_890)
    assert path == str(maildir / "cur" / "m1:2,S")
    assert os.stat(path).st_mtime == 1_234_567_890
    assert files(maildir / "new") == []


def test_deliver_never_replaces(maildir: Path) -> None:
    (maildir / "new" / "m1").write_bytes(b"first")
    with pytest.raises(FileExistsError):
        deliver(str(maildir), b"second", name="m1")
    assert (maildir / "new" / "m1").read_bytes() == b"first"
    assert files(maildir / "new") == ["m1"] and files(maildir / "tmp") == []


@pytest.mark.parametrize("name", ["../../etc/passwd", ".hidden", "a\nb", ""])
def test_deliver_refuses_bad_names(maildir: Path, name: str) -> None:
    with pytest.raises(DataError):
        deliver(str(maildir), b"x", name=name)
    for sub in ("cur", "new", "tmp"):
        assert files(maildir / sub) == []


def test_deliver_refuses_other_subdirs(maildir: Path) -> None:
    with pytest.raises(ValueError):
        deliver(str(maildir), b"x", subdir="tmp")


def test_failed_delivery_leaves_nothing(maildir: Path) -> None:
    def source() -> Iterator[bytes]:
        yield b"x" * 10_000
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    with pytest.raises(IOFailure, match="Connection reset by peer$"):
        deliver(str(maildir), source(), name="m1")
    for sub in ("cur", "new", "tmp"):
        assert files(maildir / sub) == []


def test_disk_full_delivery_leaves_nothing(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    budget = [50_000]

    def filling_write(fd: int, data) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(posix, "write", filling_write)  # durable calls posix, not os
    with pytest.raises(IOFailure) as caught:
        deliver(str(maildir), [b"y" * 20_000] * 5, name="m1")
    assert str(caught.value) == f"cannot write {maildir / 'new' / 'm1'}: No space left on device"
    for sub in ("cur", "new", "tmp"):
        assert files(maildir / sub) == []


def test_message_exists(maildir: Path) -> None:
    assert not message_exists(str(maildir), "m1")
    (maildir / "new" / "m1").write_bytes(b"")
    (maildir / "cur" / "m2").write_bytes(b"")
    (maildir / "cur" / "m3:2,RS").write_bytes(b"")
    os.symlink("/nowhere", maildir / "new" / "m4")
    for name in ("m1", "m2", "m3", "m3:2,RS", "m3:2,", "m4"):
        assert message_exists(str(maildir), name), name
    for name in ("m", "m30", "m5", "m1x"):
        assert not message_exists(str(maildir), name), name
    assert not message_exists(str(maildir / "missing"), "m1")
    with pytest.raises(DataError):
        message_exists(str(maildir), "../new/m1")


def test_is_safe_message(maildir: Path, tmp_path: Path) -> None:
    new = maildir / "new"
    (new / "good").write_bytes(b"mail")
    (tmp_path / "secret").write_bytes(b"")
    os.symlink(tmp_path / "secret", new / "link")
    os.mkfifo(new / "fifo")
    (new / "dir").mkdir()
    (new / ".hidden").write_bytes(b"")
    assert is_safe_message(str(new), "good") is True
    for name, why in [("link", "symbolic link"), ("fifo", "not a regular file"),
                      ("dir", "not a regular file"), (".hidden", "starts with '.'"),
                      ("missing", "no such file"), ("a\nb", "control character"),
                      ("../new/good", "'/'")]:
        verdict = is_safe_message(str(new), name)
        assert not verdict, name
        assert why in str(verdict), (name, verdict)
        assert "\n" not in str(verdict)


def test_is_safe_message_refuses_devices(tmp_path: Path) -> None:
    os.symlink(os.devnull, tmp_path / "null")
    assert not is_safe_message(str(tmp_path), "null")
    assert not is_safe_message(os.path.dirname(os.devnull), os.path.basename(os.devnull))


# ------------------------------------------------------ kill -9 mid-delivery

MESSAGE_BYTES = 5 * 1024 * 1024
CHUNK_BYTES = 128 * 1024
CHUNK_PAUSE_SECONDS = 0.005   # 40 chunks: ~0.2 s of writing to kill into
KILLS = 30
KILL_BUDGET_SECONDS = 12.0    # stop early rather than exceed it

DELIVERING_CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from roammail.core.maildir import deliver

maildir, message = sys.argv[2], sys.argv[3]
chunk_bytes, pause = int(sys.argv[4]), float(sys.argv[5])

def slowly():
    with open(message, "rb") as source:
        while True:
            chunk = source.read(chunk_bytes)
            if not chunk:
                return
            yield chunk
            time.sleep(pause)

sys.stdout.write("go\n")
sys.stdout.flush()
deliver(maildir, slowly())
"""


def start_delivery(maildir: Path, message: Path) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-I", "-c", DELIVERING_CHILD, LIB, str(maildir), str(message),
         str(CHUNK_BYTES), str(CHUNK_PAUSE_SECONDS)],
        stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == b"go\n"
    return child


def test_kill_9_leaves_no_message_or_the_whole_message(maildir: Path, tmp_path: Path) -> None:
    message = tmp_path / "message"
    content = b"Subject: big\n\n" + os.urandom(MESSAGE_BYTES)
    message.write_bytes(content)

    # How long one delivery takes, from "go" to exit: the window to kill in.
    child = start_delivery(maildir, message)
    began = time.monotonic()
    assert child.wait(timeout=30) == 0
    window = time.monotonic() - began
    [delivered] = files(maildir / "new")
    assert (maildir / "new" / delivered).read_bytes() == content
    checked = {delivered}

    # Delays spread evenly over the whole window (and a little past it).
    rng = random.Random()
    delays = [(i + rng.random()) * window * 1.1 / KILLS for i in range(KILLS)]
    rng.shuffle(delays)
    deadline = time.monotonic() + KILL_BUDGET_SECONDS
    killed = nothing_delivered = 0
    for delay in delays:
        if time.monotonic() > deadline:
            break
        child = start_delivery(maildir, message)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        status = child.wait(timeout=30)
        assert status in (0, -signal.SIGKILL), status
        killed += status == -signal.SIGKILL
        new = set(files(maildir / "new"))
        nothing_delivered += not (new - checked)
        for name in new - checked:
            assert (maildir / "new" / name).read_bytes() == content, (
                f"partial message after kill -9 at {delay:.3f}s of {window:.3f}s")
        checked |= new
        for leftover in files(maildir / "tmp"):
            assert leftover.startswith(".tmp."), leftover
        assert files(maildir / "cur") == []

    print(f"window {window:.3f}s, {killed} killed, {nothing_delivered} left nothing")
    assert killed >= 10, f"only {killed} deliveries were killed"
    assert nothing_delivered >= 5, "the kills did not land inside the write"
