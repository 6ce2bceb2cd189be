"""Black-box: what counts as up, against real SMTP peers on loopback.

Up: a TCP connection whose greeting is 220 (a multi-line 220- greeting
too).  Not up: 554 or 421, silence until the timeout, a refused
connection, a name that does not resolve.  The tool says QUIT after a
complete greeting and never talks before the greeting is complete.
Every address of a host is tried, IPv6 and IPv4 (happy eyeballs).
"""

from __future__ import annotations

import pytest
from smtpdcheck_peers import LATE_S, SLOW_LINE_S, ipv6_loopback_works

pytestmark = pytest.mark.slow  # real SMTP peers on loopback

# ------------------------------------------------------- the shared peers


def test_aiosmtpd_greeting_220_is_up(check, smtp_server):
    smtp_server.clear()
    run = check("--port", str(smtp_server.port), "127.0.0.1")
    assert (run.status, run.out, run.err) == (1, "127.0.0.1\n", "")
    assert smtp_server.connections == 1
    assert smtp_server.messages == []


def test_greeting_554_is_not_up(check, smtp_greets_554):
    smtp_greets_554.reset_connections()
    run = check("--port", str(smtp_greets_554.port), "127.0.0.1")
    assert (run.status, run.out, run.err) == (0, "", "")
    assert smtp_greets_554.connections == 1


def test_a_server_that_never_speaks_is_not_up_after_the_timeout(check, smtp_silent):
    run = check("--timeout", "1", "--port", str(smtp_silent.port), "127.0.0.1")
    assert (run.status, run.out, run.err) == (0, "", "")
    assert 0.9 <= run.seconds < 3.0


def test_a_refused_connection_is_not_up(check, closed_port):
    run = check("--port", str(closed_port), "127.0.0.1")
    assert (run.status, run.out, run.err) == (0, "", "")
    assert run.seconds < 2.0


def test_a_multiline_220_greeting_is_up(check, smtp_multiline_220):
    run = check("--port", str(smtp_multiline_220.port), "127.0.0.1")
    assert (run.status, run.out, run.err) == (1, "127.0.0.1\n", "")


def test_an_unresolvable_server_is_not_up(check, smtp_server):
    run = check("--timeout", "5", "--port", str(smtp_server.port), "no-such-host.invalid")
    assert (run.status, run.out, run.err) == (0, "", "")


def test_the_name_is_printed_as_given_without_the_priority(check, smtp_server):
    run = check("--port", str(smtp_server.port), "10:LocalHost")
    assert (run.status, run.out) == (1, "LocalHost\n")


# ------------------------------------------------ politeness, greetings


@pytest.mark.parametrize("behaviour, up", [
    ("up", True), ("multiline", True), ("slow-multiline", True),
    ("554", False), ("421", False),
])
def test_quit_after_a_complete_greeting_and_never_before(check, cluster, behaviour, up):
    peers = cluster({"127.0.0.31": behaviour})
    run = check("--timeout", "5", "--port", str(peers.port), "127.0.0.31")
    assert run.status == (1 if up else 0)
    peer = peers["127.0.0.31"]
    assert peer.connections == 1
    assert peer.early_talkers == 0
    if behaviour in ("up", "multiline", "slow-multiline"):
        assert peer.quits == 1


def test_a_multiline_greeting_is_up_at_its_first_line(check, cluster):
    """The answer does not wait for the rest of a slow multi-line greeting
    (postscreen's pregreet test sends "220-" and waits); the QUIT does."""
    peers = cluster({"127.0.0.32": "slow-multiline"})
    run = check("--timeout", "5", "--port", str(peers.port), "127.0.0.32")
    assert (run.status, run.out) == (1, "127.0.0.32\n")
    assert peers["127.0.0.32"].quits == 1  # after the last line, SLOW_LINE_S later
    assert run.seconds >= SLOW_LINE_S * 0.9


def test_a_late_greeting_within_the_timeout_is_up(check, cluster):
    peers = cluster({"127.0.0.33": "late"})
    run = check("--timeout", "5", "--port", str(peers.port), "127.0.0.33")
    assert (run.status, run.out) == (1, "127.0.0.33\n")
    assert run.seconds >= LATE_S * 0.9
    assert peers["127.0.0.33"].early_talkers == 0


def test_a_late_greeting_after_the_timeout_is_not_up(check, cluster):
    peers = cluster({"127.0.0.34": "late"})
    run = check("--timeout", str(LATE_S / 2), "--port", str(peers.port), "127.0.0.34")
    assert (run.status, run.out) == (0, "")


# ------------------------------------------ every address of a host


def test_every_address_of_a_name_is_tried(check, cluster, names):
    peers = cluster({"127.0.0.41": "554", "127.0.0.42": "closed", "127.0.0.43": "up"})
    env = names({"multi.test": ["127.0.0.41", "127.0.0.42", "127.0.0.43"]})
    run = check("--timeout", "5", "--port", str(peers.port), "multi.test", env=env)
    assert (run.status, run.out) == (1, "multi.test\n")
    assert peers["127.0.0.41"].connections == 1
    assert peers["127.0.0.43"].connections == 1


def test_a_silent_address_does_not_hide_a_later_one(check, cluster, names):
    """Happy eyeballs: the next address starts 250 ms after the previous
    one, without waiting for it to fail."""
    peers = cluster({"127.0.0.44": "silent", "127.0.0.45": "up"})
    env = names({"halfdead.test": ["127.0.0.44", "127.0.0.45"]})
    run = check("--timeout", "5", "--port", str(peers.port), "halfdead.test", env=env)
    assert (run.status, run.out) == (1, "halfdead.test\n")
    assert run.seconds < 2.0


def test_a_name_with_every_address_down_is_down(check, cluster, names):
    peers = cluster({"127.0.0.46": "silent", "127.0.0.47": "554"})
    env = names({"alldead.test": ["127.0.0.46", "127.0.0.47"]})
    run = check("--timeout", "1", "--port", str(peers.port), "alldead.test", env=env)
    assert (run.status, run.out) == (0, "")
    assert run.seconds < 3.0


# ------------------------------------------------------------------ IPv6

needs_ipv6 = pytest.mark.skipif(
    not ipv6_loopback_works(),
    reason="this host has no IPv6 loopback (::1): a property of the host, not a failure")


@needs_ipv6
def test_ipv6_loopback_address(check, cluster):
    peers = cluster({"::1": "up"})
    run = check("--timeout", "5", "--port", str(peers.port), "::1")
    assert (run.status, run.out) == (1, "::1\n")
    assert peers["::1"].quits == 1


@needs_ipv6
def test_ipv6_address_with_a_priority_in_brackets(check, cluster):
    peers = cluster({"::1": "up"})
    run = check("--timeout", "5", "--port", str(peers.port), "10:[::1]")
    assert (run.status, run.out) == (1, "::1\n")


@needs_ipv6
@pytest.mark.parametrize("v6, v4", [("silent", "up"), ("up", "silent"), ("closed", "up"),
                                    ("up", "closed"), ("554", "up")])
def test_ipv6_and_ipv4_addresses_of_one_name(check, cluster, names, v6, v4):
    peers = cluster({"::1": v6, "127.0.0.48": v4})
    env = names({"dual.test": ["::1", "127.0.0.48"]})
    run = check("--timeout", "5", "--port", str(peers.port), "dual.test", env=env)
    assert (run.status, run.out) == (1, "dual.test\n")
    assert run.seconds < 2.0


@needs_ipv6
def test_ipv6_down_and_ipv4_down_is_down(check, cluster, names):
    peers = cluster({"::1": "554", "127.0.0.49": "closed"})
    env = names({"dualdead.test": ["::1", "127.0.0.49"]})
    run = check("--timeout", "2", "--port", str(peers.port), "dualdead.test", env=env)
    assert (run.status, run.out) == (0, "")
    assert run.seconds < 1.5


@needs_ipv6
@pytest.mark.parametrize("stop", ["::1", "0:0::1", "127.0.0.48"])
def test_stop_matches_any_address_of_a_dual_stack_server(check, cluster, names, stop):
    peers = cluster({"::1": "up", "127.0.0.48": "up", "127.0.0.50": "up"})
    env = names({"dual.test": ["::1", "127.0.0.48"], "other.test": ["127.0.0.50"]})
    run = check("--timeout", "5", "--port", str(peers.port), "--stop", stop,
                "10:other.test", "10:dual.test", env=env)
    assert (run.status, run.out, run.err) == (0, "", "")
    run = check("--timeout", "5", "--port", str(peers.port), "--stop", stop,
                "5:other.test", "10:dual.test", env=env)
    assert (run.status, run.out, run.err) == (1, "other.test\n", "")
