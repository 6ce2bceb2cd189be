"""core/digest.py: SHA-256 without hashlib, and the names hashed with it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from roammail.core import health
from roammail.core.digest import sha256_hex

LIB = Path(__file__).resolve().parents[2] / "lib"


@pytest.mark.parametrize("data", [b"", b"abc", b"testhost:/m\0/l", bytes(range(256)) * 40])
def test_same_digest_as_hashlib(data):
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_health_file_name_hashes_without_hashlib():
    # syncmail's one-shot key ("host:/path") is hashed on every run: that
    # must not load OpenSSL through hashlib.
    probe = ("import sys; sys.path[:0] = [sys.argv[1]]\n"
             "from roammail.core import health\n"
             "print(health.file_name('syncmail', 'testhost:/srv/Maildir'))\n"
             "print(' '.join(m for m in ('hashlib', '_hashlib') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", probe, str(LIB)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    name, loaded = (result.stdout.split("\n") + [""])[:2]
    assert loaded == ""
    digest = hashlib.sha256(b"testhost:/srv/Maildir").hexdigest()[:16]
    assert name == health.file_name("syncmail", "testhost:/srv/Maildir")
    assert name.endswith(f"-{digest}.json")
