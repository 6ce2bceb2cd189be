"""An OAuth 2.0 token introspection endpoint (RFC 7662) on 127.0.0.1 for the
test Dovecot's oauth2 passdb, and a token helper script for watch-imap.

`Introspection()` serves POST token=... in a thread: 200
{"active": true, "username": USER} for a token in `good`, 200
{"active": false} for any other (expired, revoked, unknown); `asked` lists
the tokens it was asked about, in order.  Use it as a context manager.

`token_helper(directory, tokens)` writes a /bin/sh script printing the
first of the tokens queued in `directory/tokens` and dropping it unless it
is the last (so the last is printed from then on, as pizauth or oama print
the current token), logging each run to `directory/helper.log`: the command
line for pass_cmd.  `set_tokens(directory, tokens)` queues new ones (a
token refreshed).
"""

from __future__ import annotations

import http.server
import json
import shlex
import threading
import urllib.parse
from pathlib import Path


class Introspection:
    def __init__(self, user: str) -> None:
        self.user = user
        self.good: set[str] = set()
        self.asked: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                size = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(size).decode())
                token = (form.get("token") or [""])[0]
                owner.asked.append(token)
                answer: dict = {"active": False}
                if token in owner.good:
                    answer = {"active": True, "username": owner.user}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> Introspection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def token_helper(directory: Path, tokens: list[str]) -> str:
    """pass_cmd for a helper printing `tokens` in turn (see the module docstring)."""
    set_tokens(directory, tokens)
    script = directory / "token-helper"
    script.write_text(f"""#!/bin/sh
cd {shlex.quote(str(directory))} || exit 1
echo run >> helper.log
head -n 1 tokens
if [ "$(wc -l < tokens)" -gt 1 ]; then
    sed 1d tokens > tokens.new && mv tokens.new tokens
fi
""")
    script.chmod(0o755)
    return shlex.quote(str(script))


def set_tokens(directory: Path, tokens: list[str]) -> None:
    new = directory / "tokens.set"
    new.write_text("".join(t + "\n" for t in tokens))
    new.replace(directory / "tokens")


def helper_runs(directory: Path) -> int:
    log = directory / "helper.log"
    return len(log.read_text().splitlines()) if log.exists() else 0
