"""Real peers for tests: an OpenSSH server, SMTP servers, maildirs.

Modules: require (skip or, in CI, fail when a program is missing), sshd,
smtp, maildirs, dovecot, oauth (a token introspection endpoint and token
helper scripts for it), and fixtures (the pytest fixtures; tests/conftest.py
loads them with `pytest_plugins = ["peers.fixtures"]`).
"""
