"""digest.py: SHA-256 as hex, without importing hashlib.

hashlib loads OpenSSL's libcrypto and reads its configuration: about 6 ms
of a run that only hashes a name or two (a state file's name, a health
file's).  CPython's own SHA-256 module is what hashlib falls back on
anyway, and gives the same digest.
"""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of `data`, in lowercase hex."""
    try:
        from _sha2 import sha256  # Python 3.12 and later
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11 and earlier
        except ImportError:  # a build without them: hashlib has OpenSSL's
            from hashlib import sha256
    return sha256(data).hexdigest()
