"""The smallest round trip through the installed tools: extsmail queues,
extsmaild -m batch delivers through a real recording sendmail."""

from __future__ import annotations

from extsmail.conftest import simple_message


def test_queue_then_batch_delivers_argv_and_bytes(ext_home):
    rec = ext_home.recorder("home")
    ext_home.write_externals(f'group {{ external home {{ sendmail = "{rec.path} -i" }} }}\n')
    message = simple_message()
    queued = ext_home.run("extsmail", "-oi", "two words", "rcpt@example.org", input=message)
    assert queued.returncode == 0, queued.stderr
    assert len(ext_home.queued()) == 1
    sent = ext_home.run("extsmaild", "-m", "batch")
    assert sent.returncode == 0, sent.stderr
    assert ext_home.queued() == []
    assert rec.received() == [([b"-i", b"-oi", b"two words", b"rcpt@example.org"], message)]
