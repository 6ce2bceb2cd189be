"""Black-box: --stop, priorities, the man page's examples, a rule file.

Host names come from nss_wrapper (a hosts file of the test's own, through
LD_PRELOAD; /etc/hosts is never touched): s1/s2/s3.domain.com, as in the
man page, on 127.0.0.21-23, and a few more.  Every case runs in both
modes, parallel (the default) and --sequential (the original's walk).
"""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.slow  # real SMTP peers, nss_wrapper names

S1, S2, S3, S4 = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"
HOSTS = {
    "s1.domain.com": [S1],
    "s2.domain.com": [S2],
    "s3.domain.com": [S3],
    "s4.domain.com": [S4],
    # another name of s2's address: --stop by a name whose addresses meet s2's
    "me.domain.com": [S2],
    # the local host with two addresses, one of them s3's
    "multi.domain.com": ["127.0.0.29", S3],
}
MODES = [[], ["--sequential"]]
MODE_IDS = ["parallel", "sequential"]


# ------------------------------------------------------- the two examples


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_man_page_first_example_always_succeeds(check, cluster, names, mode):
    """--stop s2.domain.com 10:s1 10:s2 20:s3: exit 0 whether s1 is up or not."""
    for s1 in ("up", "silent"):
        peers = cluster({S1: s1, S2: "up", S3: "up"})
        run = check("--timeout", "2", "--port", str(peers.port), *mode,
                    "--stop", "s2.domain.com",
                    "10:s1.domain.com", "10:s2.domain.com", "20:s3.domain.com",
                    env=names(HOSTS))
        assert (run.status, run.out, run.err) == (0, "", ""), s1
        # nothing after the stop server, nor the stop server, is probed
        assert peers[S2].connections == 0 and peers[S3].connections == 0


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_man_page_second_example_reports_s1_when_up(check, cluster, names, mode):
    """--stop s2.domain.com 10:s1 20:s2 30:s3: "s1.domain.com", exit 1."""
    args = ["--stop", "s2.domain.com", "10:s1.domain.com", "20:s2.domain.com",
            "30:s3.domain.com"]
    peers = cluster({S1: "up", S2: "up", S3: "up"})
    run = check("--timeout", "2", "--port", str(peers.port), *mode, *args, env=names(HOSTS))
    assert (run.status, run.out, run.err) == (1, "s1.domain.com\n", "")
    peers = cluster({S1: "554", S2: "up", S3: "up"})
    run = check("--timeout", "2", "--port", str(peers.port), *mode, *args, env=names(HOSTS))
    assert (run.status, run.out, run.err) == (0, "", "")
    assert peers[S3].connections == 0


# ------------------------------------------------------------ the table

# (--stop, servers, which are up, expected output or None)
CASES = {
    # no --stop: the first up in argument order, priorities do not sort
    "no-stop": (None, ["s1", "s2"], {"s2"}, "s2"),
    "no-stop-order-not-priority": (None, ["30:s3", "10:s1"], {"s1", "s3"}, "s3"),
    "no-stop-none-up": (None, ["s1", "s2"], set(), None),
    # unpriorised lists: stop before the stop server
    "plain-before": ("s2.domain.com", ["s1", "s2", "s3"], {"s1", "s2", "s3"}, "s1"),
    "plain-down-before": ("s2.domain.com", ["s1", "s2", "s3"], {"s2", "s3"}, None),
    "plain-stop-first": ("s1.domain.com", ["s1", "s2"], {"s1", "s2"}, None),
    "plain-stop-absent": ("127.0.0.99", ["s1", "s2"], {"s2"}, "s2"),
    # equal priorities: never reported, even listed first
    "equal-before": ("s2.domain.com", ["10:s1", "10:s2", "20:s3"], {"s1", "s3"}, None),
    "equal-after": ("s2.domain.com", ["10:s2", "10:s1"], {"s1"}, None),
    "three-equal": ("s3.domain.com", ["10:s1", "10:s2", "10:s3"], {"s1", "s2"}, None),
    "better-then-equal": ("s3.domain.com", ["5:s1", "10:s2", "10:s3"], {"s1", "s2"}, "s1"),
    "better-down-equal-up": ("s3.domain.com", ["5:s1", "10:s2", "10:s3"], {"s2"}, None),
    # different priorities
    "more-preferred": ("s2.domain.com", ["10:s1", "20:s2", "30:s3"], {"s1"}, "s1"),
    "second-more-preferred": ("s3.domain.com", ["10:s1", "20:s2", "30:s3"], {"s2"}, "s2"),
    "unsorted-worse-before": ("s2.domain.com", ["30:s3", "10:s1", "20:s2"], {"s3"}, None),
    "unsorted-better-after-stop": ("s2.domain.com", ["20:s2", "10:s1"], {"s1"}, None),
    # a priority on one side only: position alone decides
    "stop-without-prio": ("s2.domain.com", ["10:s1", "s2"], {"s1"}, "s1"),
    "server-without-prio": ("s2.domain.com", ["s1", "10:s2"], {"s1"}, "s1"),
    # --stop by address, and by another name of the address
    "by-address-more-preferred": (S2, ["10:s1", "20:s2", "30:s3"], {"s1"}, "s1"),
    "by-address-equal": (S2, ["10:s1", "10:s2", "20:s3"], {"s1", "s3"}, None),
    "by-address-plain": (S2, ["s1", "s2", "s3"], {"s3"}, None),
    "by-other-name": ("me.domain.com", ["10:s1", "20:s2"], {"s1"}, "s1"),
    "by-other-name-equal": ("me.domain.com", ["10:s1", "10:s2"], {"s1"}, None),
    # the local host has several addresses: any of them matches
    "multi-address-local-host": ("multi.domain.com", ["10:s1", "10:s3", "20:s2"], {"s1"}, None),
    "multi-address-better": ("multi.domain.com", ["5:s1", "10:s3"], {"s1"}, "s1"),
    # server names are compared without case and final dot
    "name-case": ("S2.Domain.COM.", ["10:s1", "10:s2"], {"s1"}, None),
    # the stop server named by its address among the servers
    "address-argument": ("s2.domain.com", ["10:" + S1, "10:" + S2], {"s1"}, None),
    "address-argument-better": ("s2.domain.com", ["5:" + S1, "10:" + S2], {"s1"}, S1),
}

ADDRESS = {"s1": S1, "s2": S2, "s3": S3, "s4": S4}


def full_name(arg: str) -> str:
    prio, colon, host = arg.rpartition(":")
    if host in ADDRESS:
        host += ".domain.com"
    return f"{prio}{colon}{host}"


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("case", list(CASES))
def test_stop_table(check, cluster, names, case, mode):
    stop, servers, up, expected = CASES[case]
    peers = cluster({address: ("up" if short in up else "554")
                     for short, address in ADDRESS.items()})
    args = ["--stop", stop] if stop else []
    args += [full_name(arg) for arg in servers]
    run = check("--timeout", "5", "--port", str(peers.port), *mode, *args, env=names(HOSTS))
    if expected is None:
        assert (run.status, run.out, run.err) == (0, "", "")
    else:
        if expected in ADDRESS:
            expected += ".domain.com"
        assert (run.status, run.out, run.err) == (1, expected + "\n", "")


# --------------------------------------------------------- the rule file

RULE = """
MYIP={myip}
RECIP_MXES="10:s1.domain.com 20:s2.domain.com 30:s3.domain.com"
server=`smtpdcheck --port {port} --stop $MYIP $RECIP_MXES`
test -n "$server" && echo "defer Please use server $server"
echo "status $?"
"""


@pytest.mark.parametrize("s1, myip, said", [
    ("up", S2, "defer Please use server s1.domain.com\nstatus 0\n"),
    ("silent", S2, "status 1\n"),
    ("up", S1, "status 1\n"),
    ("554", S3, "defer Please use server s2.domain.com\nstatus 0\n"),
])
def test_mail_avenger_rule_file_idiom_in_bash(installed, check_env, cluster, names,
                                              s1, myip, said):
    """The rule-file lines of the man page, run by a real bash: defer when a
    more preferred server is up, accept (say nothing) when none is."""
    peers = cluster({S1: s1, S2: "up", S3: "up"})
    env = {**check_env, **names(HOSTS)}
    # rule files cannot pass options through the environment: use the
    # default cache, but in this test's own XDG_CACHE_HOME; the timeout is
    # short because s1 may never greet.
    script = RULE.format(myip=myip, port=peers.port).replace(
        "smtpdcheck --port", "smtpdcheck --timeout 2 --port")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.stderr == ""
    assert proc.stdout == said
