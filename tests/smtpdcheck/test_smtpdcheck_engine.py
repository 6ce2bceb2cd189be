"""The probing engine's timers: a deadline already past when a step
begins ends the probe at once; no step waits with nothing to wake it."""

from __future__ import annotations

import socket
import threading

from roammail.smtpdcheck import cli as smtpdcheck
from roammail.smtpdcheck import probe as smtpdcheck_probe

BOUND_S = 10.0  # a step that has not returned by then waits for ever


def test_a_deadline_passed_between_steps_ends_the_probe_without_waiting():
    """`--timeout 0.000001` once hung smtpdcheck for ever: the deadline
    passed before the first step, which gave the probe up and then
    waited with no timer left and a server that never greets."""
    now = [0.0]
    engine = smtpdcheck_probe.Engine(25, clock=lambda: now[0])
    with socket.socket() as listener:  # accepts, never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        probe = engine.probe("k", [(socket.AF_INET, listener.getsockname())], deadline=1.0)
        now[0] = 2.0
        ended = threading.Event()

        def run() -> None:
            engine.run_until(lambda: probe.up is not None)
            engine.finish(None)
            ended.set()

        threading.Thread(target=run, daemon=True).start()
        assert ended.wait(BOUND_S), "the engine waited past its deadline"
    assert probe.up is False


def test_a_tiny_timeout_ends_the_whole_check(monkeypatch, capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        ended = threading.Event()
        status = []

        def run() -> None:
            status.append(smtpdcheck.main(["--no-cache", "--timeout", "0.000001",
                                           "--port", port, "127.0.0.1"]))
            ended.set()

        threading.Thread(target=run, daemon=True).start()
        assert ended.wait(BOUND_S), "smtpdcheck --timeout 0.000001 did not end"
    assert status == [0]
    assert capsys.readouterr().out == ""
