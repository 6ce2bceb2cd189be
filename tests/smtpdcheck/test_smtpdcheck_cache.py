"""The cache of servers found down.

A server found down is not probed again for --cache-ttl seconds (seen at
the server: its connection counter does not move), and is probed again
after.  Many runs at once (rule files run per SMTP transaction) never
corrupt the file nor lose each other's entries (flock + atomic replace); a
corrupt or unwritable cache is ignored, never fatal.
"""

from __future__ import annotations

import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roammail.smtpdcheck.cache import (
    CACHE_HEADER,
    default_cache_path,
    format_cache,
    fresh_down,
    parse_cache,
    read_cache,
    update_cache,
)

# ------------------------------------------------------------ black box


@pytest.mark.slow
def test_a_server_found_down_is_not_probed_again_within_the_ttl(check, cluster, tmp_path):
    cache = tmp_path / "cache"
    peers = cluster({"127.0.0.71": "554", "127.0.0.72": "up"})
    args = ["--cache", str(cache), "--cache-ttl", "2", "--port", str(peers.port),
            "127.0.0.71", "127.0.0.72"]
    down, up = peers["127.0.0.71"], peers["127.0.0.72"]
    first = check(*args, cache=True)
    assert (first.status, first.out) == (1, "127.0.0.72\n")
    assert (down.connections, up.connections) == (1, 1)
    entries = read_cache(str(cache))
    assert set(entries) == {("127.0.0.71", peers.port)}

    second = check(*args, cache=True)
    assert (second.status, second.out) == (1, "127.0.0.72\n")
    assert (down.connections, up.connections) == (1, 2)  # an up server is always probed

    time.sleep(2.2)
    third = check(*args, cache=True)
    assert (third.status, third.out) == (1, "127.0.0.72\n")
    assert (down.connections, up.connections) == (2, 3)


@pytest.mark.slow
def test_the_cache_is_per_port(check, cluster, tmp_path):
    cache = tmp_path / "cache"
    peers = cluster({"127.0.0.73": "554"})
    check("--cache", str(cache), "--port", str(peers.port), "127.0.0.73", cache=True)
    other = cluster({"127.0.0.73": "up"})
    run = check("--cache", str(cache), "--port", str(other.port), "127.0.0.73", cache=True)
    assert (run.status, run.out) == (1, "127.0.0.73\n")


@pytest.mark.slow
def test_the_default_cache_is_under_xdg_cache_home(check, check_env, cluster):
    peers = cluster({"127.0.0.74": "closed"})
    run = check("--port", str(peers.port), "127.0.0.74", cache=True)
    assert (run.status, run.out, run.err) == (0, "", "")
    path = Path(check_env["XDG_CACHE_HOME"]) / "roammail" / "smtpdcheck"
    assert read_cache(str(path)) == {("127.0.0.74", peers.port): pytest.approx(time.time(),
                                                                               abs=30)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.slow
def test_no_cache_neither_reads_nor_writes(check, check_env, cluster):
    peers = cluster({"127.0.0.75": "554"})
    for expected in (1, 2):
        run = check("--port", str(peers.port), "127.0.0.75")  # --no-cache by default here
        assert run.status == 0
        assert peers["127.0.0.75"].connections == expected
    assert not (Path(check_env["XDG_CACHE_HOME"]) / "roammail").exists()


@pytest.mark.slow
@pytest.mark.parametrize("content", [
    b"garbage\n",
    b"",
    b"\x00\xff\xfe" * 100,
    (CACHE_HEADER + "\nnot three fields\n").encode(),
    (CACHE_HEADER + "\nnan 25 host\n").encode(),
    (CACHE_HEADER + "\n1.0 25 host").encode(),  # no final newline: cut short
    b"x" * (2 << 20),
])
def test_a_corrupt_cache_is_ignored_and_replaced(check, cluster, tmp_path, content):
    cache = tmp_path / "cache"
    cache.write_bytes(content)
    peers = cluster({"127.0.0.76": "554", "127.0.0.77": "up"})
    args = ["--cache", str(cache), "--port", str(peers.port), "127.0.0.76", "127.0.0.77"]
    run = check(*args, cache=True)
    assert (run.status, run.out, run.err) == (1, "127.0.0.77\n", "")
    assert set(read_cache(str(cache))) == {("127.0.0.76", peers.port)}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_a_cache_that_cannot_be_written_is_not_fatal(check, cluster, tmp_path, where):
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        cache = tmp_path / "file" / "cache"
    else:
        cache = tmp_path / "cache"
        cache.mkdir()
    peers = cluster({"127.0.0.78": "554"})
    for expected in (1, 2):
        run = check("--cache", str(cache), "--port", str(peers.port), "127.0.0.78",
                    cache=True)
        assert (run.status, run.out, run.err) == (0, "", "")
        assert peers["127.0.0.78"].connections == expected


@pytest.mark.slow
def test_a_symlinked_cache_is_not_followed_for_reading(check, cluster, tmp_path):
    target = tmp_path / "elsewhere"
    peers = cluster({"127.0.0.79": "554"})
    target.write_text(format_cache({("127.0.0.79", peers.port): time.time()}))
    cache = tmp_path / "cache"
    cache.symlink_to(target)
    run = check("--cache", str(cache), "--port", str(peers.port), "127.0.0.79", cache=True)
    assert run.status == 0
    assert peers["127.0.0.79"].connections == 1  # the symlink was not trusted


@pytest.mark.slow
def test_twenty_runs_at_once_never_corrupt_the_cache(installed, check_env, tmp_path):
    """Each run finds its own server down (a refused connection on its own
    address and port); all write the same cache at once.  A reader checks
    the file all along; at the end every run's entry is there."""
    from peers.smtp import find_closed_port

    cache = tmp_path / "cache"
    servers = [(f"127.0.1.{i + 1}", find_closed_port(f"127.0.1.{i + 1}")) for i in range(20)]
    bad_reads: list[bytes] = []
    stop_reading = threading.Event()

    def reader() -> None:
        while not stop_reading.is_set():
            try:
                data = cache.read_bytes()
            except FileNotFoundError:
                continue
            if parse_cache(data.decode("utf-8", "replace")) is None:
                bad_reads.append(data)

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    try:
        procs = [subprocess.Popen([installed.tool("smtpdcheck"), "--cache", str(cache),
                                   "--port", str(port), address], env=check_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for address, port in servers]
        results = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
        for p in procs:
            p.stdout.close()
            p.stderr.close()
    finally:
        stop_reading.set()
        watcher.join(10)
    assert results == [(0, b"", b"")] * 20
    assert bad_reads == []
    assert set(read_cache(str(cache))) == set(servers)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("cache", "cache.lock",
                                                                      "home")]
    assert leftovers == []


# ------------------------------------------------------------------ units


def test_default_cache_path(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ann")
    assert default_cache_path({"XDG_CACHE_HOME": "/x"}, euid=1000) == "/x/roammail/smtpdcheck"
    assert default_cache_path({"XDG_CACHE_HOME": "/x"}, euid=0) == "/x/roammail/smtpdcheck"
    assert default_cache_path({}, euid=0) == "/var/cache/roammail/smtpdcheck"
    assert default_cache_path({"XDG_CACHE_HOME": "rel"}, euid=1000) == \
        "/home/ann/.cache/roammail/smtpdcheck"
    assert default_cache_path({}, euid=1000) == "/home/ann/.cache/roammail/smtpdcheck"


hosts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
                min_size=1, max_size=20).filter(lambda h: h.isprintable() and " " not in h)


@given(st.dictionaries(st.tuples(hosts, st.integers(1, 65535)),
                       st.floats(min_value=0, max_value=4e9, allow_nan=False)))
def test_cache_text_round_trip(entries):
    parsed = parse_cache(format_cache(entries))
    assert parsed is not None
    assert set(parsed) == set(entries)
    for key, stamp in entries.items():
        assert parsed[key] == pytest.approx(stamp, abs=0.001)


def test_fresh_down_keeps_the_port_and_the_ttl():
    entries = {("a", 25): 100.0, ("b", 25): 50.0, ("c", 2525): 100.0, ("d", 25): 200.0,
               ("e", 25): 121.0}
    # e: stamped by a run whose clock reading came a little later than ours
    assert fresh_down(entries, 25, 60, 120.0) == {"a", "e"}
    assert fresh_down(entries, 2525, 60, 120.0) == {"c"}
    assert fresh_down(entries, 25, 0, 120.0) == set()


def test_update_merges_expires_and_forgets_servers_found_up(tmp_path):
    path = str(tmp_path / "sub" / "cache")
    assert update_cache(path, 25, 60, 1000.0, {"a", "b"}, set())
    assert update_cache(path, 25, 60, 1030.0, {"c"}, {"a"})
    assert read_cache(path) == {("b", 25): 1000.0, ("c", 25): 1030.0}
    assert update_cache(path, 25, 60, 1070.0, {"d"}, set())
    assert read_cache(path) == {("c", 25): 1030.0, ("d", 25): 1070.0}
    # an entry stamped a moment "after" our reading (another run) is kept
    assert update_cache(path, 25, 60, 1075.0, {"f"}, set())
    assert update_cache(path, 25, 60, 1074.0, {"g"}, set())
    assert set(read_cache(path)) == {("c", 25), ("d", 25), ("f", 25), ("g", 25)}
    assert update_cache(path, 26, 60, 1071.0, {"name with space", "tab\there", "e"}, set())
    assert set(read_cache(path)) == {("c", 25), ("d", 25), ("f", 25), ("g", 25), ("e", 26)}


def test_update_gives_up_when_the_lock_is_held(tmp_path, monkeypatch):
    import fcntl

    from roammail.smtpdcheck import cache

    monkeypatch.setattr(cache, "CACHE_LOCK_WAIT_S", 0.2)
    path = str(tmp_path / "cache")
    with open(path + ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        assert not update_cache(path, 25, 60, 1000.0, {"a"}, set())
        assert time.monotonic() - started < 2.0
    assert update_cache(path, 25, 60, 1000.0, {"a"}, set())


@pytest.mark.slow
def test_servers_abandoned_after_the_answer_are_not_cached_down(check, cluster, tmp_path):
    """The answer came before the later server had its chance: that server
    is not known to be down.  (The first greets "220-" at once and the rest
    later, so the run lingers, politely, until the deadline.)"""
    cache = tmp_path / "cache"
    peers = cluster({"127.0.0.81": "slow-multiline", "127.0.0.82": "silent"})
    run = check("--cache", str(cache), "--timeout", "0.4", "--port", str(peers.port),
                "127.0.0.81", "127.0.0.82", cache=True)
    assert (run.status, run.out) == (1, "127.0.0.81\n")
    assert peers["127.0.0.82"].connections == 1
    assert read_cache(str(cache)) == {}
