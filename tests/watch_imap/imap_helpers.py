"""Helpers of the watch-imap tests (imported by the tests)."""

from __future__ import annotations


def render_value(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text[:-1].isdigit() and text[-1:] in "smhd" and len(text) > 1:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def account(server, name: str = "t", **settings: object) -> str:
    """An account block for `server`: IMAPS on its TLS port, its CA alone
    trusted, user and password set.  Keyword arguments add or replace
    settings (a str is written quoted, an int bare, "5s" as a TIME, a list
    as the key repeated, None leaves the key out)."""
    values: dict[str, object] = {
        "host": server.host, "port": server.imaps_port, "tls": "imaps",
        "user": server.user, "pass": server.password, "ca_file": str(server.ca_file),
        "system_certificates": "no", "keepalive": "2m", "timeout": "10s",
    }
    values.update(settings)
    lines = [f"account {name} {{"]
    for key, value in values.items():
        if value is None:
            continue
        for one in (value if isinstance(value, (list, tuple)) else [value]):
            lines.append(f"    {key} = {render_value(one)}")
    lines.append("}")
    return "\n".join(lines) + "\n"
