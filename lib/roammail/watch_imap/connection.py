"""connection.py: the client side of IMAP4rev1 (RFC 3501) that watch-imap speaks.

Owns `ImapConnection`, on the wire format of wire.py: one asyncio client
connection over TLS (IMAPS), STARTTLS, plain TCP or a tunnel command (a
PREAUTH session such as `ssh host /usr/lib/dovecot/imap`), with LOGIN,
AUTHENTICATE PLAIN, XOAUTH2 or OAUTHBEARER (RFC 7628), IDLE (RFC 2177), a
deadline on every exchange with the server, and a handler that sees every untagged response.

It never prints, never decides what to watch or when, and never retries.
Every failure is one of the typed exceptions below:

  LinkError      the link broke, timed out, or the server closed it (BYE,
                 bytes that are not IMAP): a new connection may work
  AuthError      the server refused the credentials (exit 77)
  TlsError       TLS refused: certificate not verified, STARTTLS not offered
                 or answered with plaintext after it (exit 76)
  CommandFailed  a NO or BAD answer to a command the caller may live without
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl

from ..core.child import kill_group_async
from ..core.errors import RoammailError
from .wire import (
    LinkError,
    Literal,
    ProtocolError,
    Response,
    _literal_size,
    astring,
    capabilities_of,
    parse_response,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Awaitable, Callable, Optional, Sequence

EX_PROTOCOL = 76  # sysexits: remote error in protocol (TLS refused)
EX_NOPERM = 77    # sysexits: permission denied (credentials refused)

# One response (a line and its literals) longer than this is not a
# response watch-imap asked for: it never fetches messages.
MAX_RESPONSE = 4 << 20  # bytes
# The reader's line buffer: a LIST or STATUS line never comes near it.
READ_LIMIT = 1 << 20  # bytes
# How long a tunnel command has to end by itself once its input closed,
# then after SIGTERM (before SIGKILL), then to be reaped after SIGKILL.
TUNNEL_EOF_WAIT = 0.5  # seconds
TUNNEL_STOP_GRACE = 2.0  # seconds
TUNNEL_REAP_WAIT = 2.0  # seconds
# A polite goodbye (DONE, LOGOUT) takes a round trip or two; a link that
# needs longer is not worth waiting for when told to stop.
LOGOUT_GRACE = 2.0  # seconds
# Synchronizing literals up to this size may go without waiting for "+"
# when the server announces LITERAL- (RFC 7888).
LITERAL_MINUS_MAX = 4096  # bytes


# ------------------------------------------------------------ deadlines


async def within(awaitable: Awaitable, seconds: float) -> Any:
    """`await awaitable` for at most `seconds`: its result, else it is
    cancelled and asyncio.TimeoutError raised.

    asyncio.wait_for, except that a cancellation of the caller is never
    lost: before Python 3.12 wait_for returns the result instead when the
    awaitable finished in the same turn of the loop as the cancel came, and
    a task told to stop (a signal, the reader gone) then runs on.
    """
    inner = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({inner}, timeout=seconds)
    except asyncio.CancelledError:
        inner.cancel()
        raise
    if not done:
        inner.cancel()
        await asyncio.wait({inner})  # it ends at once: nothing runs on after the timeout
        raise asyncio.TimeoutError
    return inner.result()


async def run_to_end(awaitable: Awaitable) -> Any:
    """`await awaitable`, letting it finish even if the caller is cancelled
    meanwhile (the cancellation is raised once it has): for clean-up that
    must not stop half way, such as closing a connection and ending its
    tunnel command.  The awaitable must be bounded in time itself."""
    inner = asyncio.ensure_future(awaitable)
    cancelled = False
    while not inner.done():
        try:
            await asyncio.wait({inner})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return inner.result()


class AuthError(RoammailError):
    """The server refused the user name, the password or the token."""

    exit_code = EX_NOPERM


class TlsError(RoammailError):
    """TLS could not be set up as configured (certificate, STARTTLS)."""

    exit_code = EX_PROTOCOL


class CommandFailed(RoammailError):
    """NO or BAD in answer to a command; `response` is the tagged answer."""

    def __init__(self, command: str, response: Response) -> None:
        super().__init__(f"{command}: {response.kind} {response.text}".rstrip())
        self.response = response


# ------------------------------------------------------------ the connection


class Endpoint:
    """Where and how to connect: TCP (tls "imaps", "starttls" or "none") or
    a tunnel, a /bin/sh command line speaking IMAP on its stdin/stdout."""

    __slots__ = ("host", "port", "tls", "tunnel", "ssl_context", "label")

    def __init__(self, *, host: str = "", port: int = 0, tls: str = "imaps",
                 tunnel: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, label: str = "") -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.tunnel = tunnel
        self.ssl_context = ssl_context
        self.label = label or (f"tunnel {tunnel!r}" if tunnel else f"{host}:{port}")


def make_ssl_context(ca_files: Sequence[str] = (),
                     system_certificates: bool = True) -> ssl.SSLContext:
    """A client context that verifies the server and its name: the system's
    CAs (unless told not to) and the certificates in ca_files, where a
    server's own certificate is trusted as it stands (as mbsync's
    CertificateFile does); TlsError when a file is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
    if system_certificates:
        context.load_default_certs()
    for ca_file in ca_files:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot load certificates from {ca_file}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    return context


class ImapConnection:
    """One IMAP connection.  open() connects and reads the greeting;
    login() authenticates (unless PREAUTH); command() runs one command;
    idle_start()/idle_done() bracket IDLE.  `on_untagged` is called with
    every untagged response, from the reader, in order.  Any failure of
    the link fails every waiting call with LinkError and sets `failure`;
    `closed` is an asyncio.Event set when the link is gone."""

    def __init__(self, endpoint: Endpoint, timeout: float,
                 on_untagged: Optional[Callable[[Response], None]] = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.on_untagged = on_untagged
        self.capabilities: frozenset = frozenset()
        self.preauth = False
        self.failure: Optional[BaseException] = None
        self.closed = asyncio.Event()
        self._reader: Optional[asyncio.StreamReader] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._proc: Optional[asyncio.subprocess.Process] = None
        self._reader_task: Optional[asyncio.Task] = None
        self._tag_number = 0
        self._pending: dict[str, asyncio.Future] = {}
        self._continuation: Optional[asyncio.Future] = None
        self._continuation_tag: Optional[str] = None  # the command awaiting "+"
        self._collect: Optional[list] = None
        self._greeting: Optional[asyncio.Future] = None
        self._idle_future: Optional[asyncio.Future] = None
        self._bye: Optional[str] = None
        self._last_auth_code: tuple = ()

    # -- opening -------------------------------------------------------------

    async def open(self) -> None:
        """Connect and read the greeting; LinkError, TlsError on failure."""
        ep = self.endpoint
        try:
            if ep.tunnel:
                await self._open_tunnel(ep.tunnel)
            elif ep.tls == "starttls":
                await self._open_starttls()
            else:
                await self._open_tcp(ep.ssl_context if ep.tls == "imaps" else None)
        except ssl.SSLCertVerificationError as exc:
            await self.close()
            raise TlsError(f"{ep.label}: certificate refused: "
                           f"{exc.verify_message or exc.reason}") from None
        except ssl.SSLError as exc:
            await self.close()
            raise LinkError(f"{ep.label}: TLS failed: {exc.reason or exc}") from None
        except asyncio.TimeoutError:
            await self.close()
            raise LinkError(f"{ep.label}: no answer within {self.timeout:g} s") from None
        except OSError as exc:
            await self.close()
            raise LinkError(f"{ep.label}: cannot connect: {os_error_text(exc)}") from None
        except BaseException:
            await self.close()
            raise
        if ep.tls != "starttls" or ep.tunnel:
            await self._await_greeting()
        if not self.capabilities:
            await self.refresh_capabilities()

    async def _open_tcp(self, context: Optional[ssl.SSLContext], sock=None) -> None:
        ep = self.endpoint
        kwargs: dict = {"limit": READ_LIMIT}
        if context is not None:
            kwargs.update(ssl=context, server_hostname=ep.host,
                          ssl_handshake_timeout=self.timeout)
        if sock is not None:
            connect = asyncio.open_connection(sock=sock, **kwargs)
        else:
            connect = asyncio.open_connection(ep.host, ep.port, **kwargs)
        self._reader, self._writer = await within(connect, self.timeout)
        self._start_reader(expect_greeting=sock is None)

    async def _open_tunnel(self, command: str) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True, limit=READ_LIMIT)
        self._reader, self._writer = self._proc.stdout, self._proc.stdin
        self._start_reader(expect_greeting=True)

    async def _open_starttls(self) -> None:
        """Greeting and STARTTLS in plaintext, on a socket of our own, so
        that not one byte sent after the server's OK is read as plaintext."""
        ep = self.endpoint
        loop = asyncio.get_running_loop()
        sock = await within(self._plain_socket(loop), self.timeout)
        try:
            plain = _PlainSocket(sock, loop)
            greeting = parse_response(await within(plain.line(), self.timeout))
            if greeting.kind == "PREAUTH":
                raise TlsError(f"{ep.label}: the server skipped authentication (PREAUTH) "
                               "before STARTTLS: refusing to go on without TLS")
            self._check_greeting(greeting)
            if "STARTTLS" not in self.capabilities:
                await plain.send(b"S0 CAPABILITY\r\n")
                while True:
                    response = parse_response(await within(plain.line(), self.timeout))
                    if response.kind == "CAPABILITY":
                        self.capabilities = capabilities_of(response.data)
                    if response.tag == "S0":
                        break
            if "STARTTLS" not in self.capabilities:
                raise TlsError(f"{ep.label}: the server does not offer STARTTLS")
            await plain.send(b"S1 STARTTLS\r\n")
            while True:
                response = parse_response(await within(plain.line(), self.timeout))
                if response.tag == "S1":
                    break
            if response.kind != "OK":
                raise TlsError(f"{ep.label}: STARTTLS refused: {response.text}")
            if plain.buffered():
                raise TlsError(f"{ep.label}: plaintext after the answer to STARTTLS")
        except BaseException:
            sock.close()
            raise
        self.capabilities = frozenset()  # what was said before TLS counts for nothing
        await self._open_tcp(ep.ssl_context, sock=sock)

    async def _plain_socket(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        ep = self.endpoint
        infos = await loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
        last: Optional[OSError] = None
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, address)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(f"no address for {ep.host}")

    def _start_reader(self, *, expect_greeting: bool) -> None:
        loop = asyncio.get_running_loop()
        self._greeting = loop.create_future() if expect_greeting else None
        self._reader_task = loop.create_task(self._read_loop())

    async def _await_greeting(self) -> None:
        assert self._greeting is not None
        greeting = await self._wait(self._greeting, "the greeting")
        self._check_greeting(greeting)

    def _check_greeting(self, greeting: Response) -> None:
        ep = self.endpoint
        if greeting.tag != "*" or greeting.kind not in ("OK", "PREAUTH", "BYE"):
            raise ProtocolError(f"{ep.label}: not an IMAP greeting: {greeting.kind} "
                                f"{greeting.text}")
        if greeting.kind == "BYE":
            raise LinkError(f"{ep.label}: the server refused the connection: {greeting.text}")
        self.preauth = greeting.kind == "PREAUTH"
        if greeting.code_name == "CAPABILITY":
            self.capabilities = capabilities_of((greeting.code or [])[1:])

    # -- reading -------------------------------------------------------------

    async def _read_response(self) -> bytes:
        assert self._reader is not None
        buf = bytearray()
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if buf or exc.partial:
                    raise ProtocolError("the connection ended in the middle of a response") \
                        from None
                raise EOFError from None
            except asyncio.LimitOverrunError:
                raise ProtocolError("a response line is too long") from None
            buf += line
            size = _literal_size(line)
            if size < 0:
                return bytes(buf)
            if len(buf) + size > MAX_RESPONSE:
                raise ProtocolError("a response is too long")
            try:
                buf += await self._reader.readexactly(size)
            except asyncio.IncompleteReadError:
                raise ProtocolError("the connection ended in the middle of a literal") from None

    async def _read_loop(self) -> None:
        label = self.endpoint.label
        try:
            while True:
                try:
                    raw = await self._read_response()
                except EOFError:
                    raise LinkError(f"{label}: {self._ended_text()}") from None
                try:
                    response = parse_response(raw)
                except ProtocolError:
                    if self._greeting is not None and not self._greeting.done():
                        raise ProtocolError(f"not an IMAP greeting: {raw[:60]!r}") from None
                    raise
                self._dispatch(response)
        except asyncio.CancelledError:
            self._fail(LinkError(f"{label}: connection closed"))
            raise
        except (ssl.SSLError, OSError) as exc:
            self._fail(LinkError(f"{label}: connection lost: "
                                 f"{getattr(exc, 'strerror', None) or exc}"))
        except RoammailError as exc:
            if isinstance(exc, ProtocolError) and label not in str(exc):
                exc = ProtocolError(f"{label}: {exc}")
            self._fail(exc)
        except Exception as exc:  # a bug in a handler: the link is unusable now
            self._fail(exc)

    def _ended_text(self) -> str:
        if self._bye is not None:
            return f"the server closed the connection: {self._bye}"
        if self._proc is not None:
            return "the tunnel command closed the connection"
        return "the server closed the connection"

    def _dispatch(self, response: Response) -> None:
        if self._greeting is not None and not self._greeting.done():
            self._greeting.set_result(response)
            return
        if response.tag == "+":
            if self._continuation is not None and not self._continuation.done():
                self._continuation.set_result(response)
                return
            raise ProtocolError(f"{self.endpoint.label}: unexpected continuation request")
        if response.tag != "*":
            future = self._pending.pop(response.tag, None)
            if future is None:
                raise ProtocolError(f"{self.endpoint.label}: answer to a command never sent "
                                    f"({response.tag})")
            if response.tag == self._continuation_tag:
                # Refused before the "+" it was waiting for.
                self._continuation_tag = None
                if self._continuation is not None and not self._continuation.done():
                    self._continuation.set_result(response)
            if not future.done():
                future.set_result(response)
            return
        if response.kind == "CAPABILITY":
            self.capabilities = capabilities_of(response.data)
        elif response.kind == "BYE":
            self._bye = response.text or "BYE"
        elif response.code_name == "CAPABILITY" and response.kind == "OK":
            self.capabilities = capabilities_of((response.code or [])[1:])
        if self._collect is not None:
            self._collect.append(response)
        if self.on_untagged is not None:
            self.on_untagged(response)

    def _fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        for future in [*self._pending.values(), self._continuation, self._greeting]:
            if future is not None and not future.done():
                future.set_exception(self.failure)
                future.exception()  # retrieved: no "never retrieved" warning
        self._pending.clear()
        self.closed.set()

    async def _wait(self, future: asyncio.Future, what: str) -> Response:
        try:
            return await within(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            exc = LinkError(f"{self.endpoint.label}: no answer to {what} within "
                            f"{self.timeout:g} s")
            self._fail(exc)
            raise exc from None

    # -- commands ------------------------------------------------------------

    def _next_tag(self) -> str:
        self._tag_number += 1
        return f"W{self._tag_number}"

    async def _send(self, data: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        assert self._writer is not None
        try:
            self._writer.write(data)
            await within(self._writer.drain(), self.timeout)
        except asyncio.TimeoutError:
            exc = LinkError(f"{self.endpoint.label}: cannot send within {self.timeout:g} s")
            self._fail(exc)
            raise exc from None
        except (OSError, RuntimeError) as exc:
            failure = LinkError(f"{self.endpoint.label}: connection lost: "
                                f"{getattr(exc, 'strerror', None) or exc}")
            self._fail(failure)
            raise failure from None

    async def _send_command(self, tag: str, parts: Sequence) -> None:
        """Send `tag parts...`; a Literal waits for the server's "+" unless
        LITERAL+ (or LITERAL- for a small one) lets it go at once."""
        chunk = bytearray(tag.encode())
        for part in parts:
            chunk += b" "
            if isinstance(part, Literal):
                size = len(part.data)
                plus = ("LITERAL+" in self.capabilities
                        or ("LITERAL-" in self.capabilities and size <= LITERAL_MINUS_MAX))
                if plus:
                    chunk += b"{%d+}\r\n" % size + part.data
                    continue
                chunk += b"{%d}\r\n" % size
                await self._await_continuation(bytes(chunk), tag, "a literal")
                chunk = bytearray(part.data)
            else:
                chunk += part if isinstance(part, bytes) else str(part).encode()
        chunk += b"\r\n"
        await self._send(bytes(chunk))

    async def _await_continuation(self, data: bytes, tag: str, what: str) -> Response:
        loop = asyncio.get_running_loop()
        self._continuation = loop.create_future()
        self._continuation_tag = tag
        await self._send(data)
        response = await self._wait(self._continuation, what)
        self._continuation = None
        self._continuation_tag = None
        if response.tag != "+":
            raise CommandFailed(what, response)
        return response

    async def command(self, *parts, name: str = "") -> tuple[Response, list[Response]]:
        """Run one command; its tagged OK and the untagged responses that came
        while it ran.  NO/BAD: CommandFailed; a lost link: LinkError."""
        (done, untagged), = await self.commands([parts], name=name)
        return done, untagged

    async def commands(self, batch: Sequence[Sequence], *, name: str = "",
                       check: bool = True) -> list[tuple[Response, list[Response]]]:
        """Send several commands at once (pipelined) and wait for all their
        answers; the untagged responses of the whole batch are given with
        each.  check: CommandFailed for the first NO/BAD, else returned."""
        loop = asyncio.get_running_loop()
        collected: list[Response] = []
        previous, self._collect = self._collect, collected
        try:
            futures = []
            for parts in batch:
                tag = self._next_tag()
                future = loop.create_future()
                self._pending[tag] = future
                futures.append((parts, future))
                await self._send_command(tag, parts)
            results = []
            for parts, future in futures:
                what = name or _command_name(parts)
                done = await self._wait(future, what)
                if check and done.kind != "OK":
                    raise CommandFailed(what, done)
                results.append((done, collected))
            return results
        finally:
            self._collect = previous

    async def refresh_capabilities(self) -> frozenset:
        await self.command("CAPABILITY")
        return self.capabilities

    async def login(self, user: str, password: str, mechanisms: Sequence[str] = ()) -> None:
        """Authenticate (nothing to do after PREAUTH): choose_mechanism(),
        then authenticate() with `password` (an access token for OAuth)."""
        if self.preauth:
            return
        await self.authenticate(self.choose_mechanism(mechanisms), user, password)

    def choose_mechanism(self, mechanisms: Sequence[str] = ()) -> str:
        """The first of `mechanisms` (what the user allows, in order of
        preference) the server offers: "PLAIN" (AUTHENTICATE PLAIN),
        "LOGIN" (the LOGIN command), "XOAUTH2", "OAUTHBEARER" (RFC 7628);
        empty: PLAIN when offered, else LOGIN.  AuthError when none is."""
        caps = self.capabilities
        allowed = [m.upper() for m in mechanisms] or ["PLAIN", "LOGIN"]
        for mechanism in allowed:
            if mechanism == "LOGIN":
                if "LOGINDISABLED" not in caps:
                    return mechanism
            elif f"AUTH={mechanism}" in caps:
                return mechanism
        offered = sorted(c[5:] for c in caps if c.startswith("AUTH="))
        if "LOGINDISABLED" not in caps:
            offered.append("LOGIN")
        raise AuthError(f"{self.endpoint.label}: no authentication method in common "
                        f"(allowed: {' '.join(allowed)}; offered: "
                        f"{' '.join(offered) or 'none'})")

    async def authenticate(self, mechanism: str, user: str, secret: str) -> None:
        """Log in with `mechanism` (from choose_mechanism()); `secret` is the
        password, or the access token for XOAUTH2 and OAUTHBEARER.  A
        refusal is AuthError, and the connection may try again."""
        if mechanism == "PLAIN":
            await self._authenticate_plain(user, secret)
        elif mechanism == "LOGIN":
            await self._auth_command(("LOGIN", astring(user), astring(secret)), "LOGIN")
        elif mechanism == "XOAUTH2":
            # Google's and Microsoft's format; an error is answered with an empty line.
            await self._authenticate_oauth(
                mechanism, b"user=%s\x01auth=Bearer %s\x01\x01" % (user.encode(), secret.encode()),
                b"")
        elif mechanism == "OAUTHBEARER":
            # RFC 7628: a GS2 header naming the user, then key=value pairs;
            # an error is answered with a lone %x01.
            authzid = user.replace("=", "=3D").replace(",", "=2C")
            fields = b""
            if self.endpoint.host and not self.endpoint.tunnel:
                fields = b"host=%s\x01port=%d\x01" % (self.endpoint.host.encode(),
                                                       self.endpoint.port)
            message = (b"n,a=%s,\x01" % authzid.encode() + fields
                       + b"auth=Bearer %s\x01\x01" % secret.encode())
            await self._authenticate_oauth(mechanism, message, base64.b64encode(b"\x01"))
        else:
            raise AuthError(f"{self.endpoint.label}: unknown mechanism {mechanism}")
        if "CAPABILITY" not in self._last_auth_code:
            await self.refresh_capabilities()

    async def _authenticate_oauth(self, mechanism: str, message: bytes, abort: bytes) -> None:
        """AUTHENTICATE with one client message (SASL-IR when offered, else
        after the server's "+"); a server that refuses the token sends its
        error (JSON, base64) in a continuation, which `abort` answers
        before the tagged NO."""
        name = f"AUTHENTICATE {mechanism}"
        encoded = base64.b64encode(message)
        tag = self._next_tag()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[tag] = future
        if "SASL-IR" in self.capabilities:
            first = f"{tag} {name} ".encode() + encoded + b"\r\n"
        else:
            try:
                await self._await_continuation(f"{tag} {name}\r\n".encode(), tag, name)
            except CommandFailed as exc:
                self._auth_refused(exc.response)
            first = encoded + b"\r\n"
        self._continuation = loop.create_future()
        self._continuation_tag = tag
        await self._send(first)
        answer = await self._wait(self._continuation, name)
        self._continuation = None
        self._continuation_tag = None
        detail = ""
        if answer.tag == "+":
            detail = sasl_error_text(answer.text)
            await self._send(abort + b"\r\n")
            answer = await self._wait(future, name)
        if answer.kind != "OK":
            self._auth_refused(answer, detail)
        self._auth_done(answer)

    async def _authenticate_plain(self, user: str, password: str) -> None:
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
        if "SASL-IR" in self.capabilities:
            await self._auth_command(("AUTHENTICATE", "PLAIN", token), "AUTHENTICATE PLAIN")
            return
        tag = self._next_tag()
        future = asyncio.get_running_loop().create_future()
        self._pending[tag] = future
        try:
            await self._await_continuation(f"{tag} AUTHENTICATE PLAIN\r\n".encode(), tag,
                                           "AUTHENTICATE PLAIN")
        except CommandFailed as exc:
            self._auth_refused(exc.response)
        await self._send(token + b"\r\n")
        self._auth_done(await self._wait(future, "AUTHENTICATE PLAIN"))

    async def _auth_command(self, parts: tuple, name: str) -> None:
        try:
            done, _ = await self.command(*parts, name=name)
        except CommandFailed as exc:
            self._auth_refused(exc.response)
        self._auth_done(done)

    def _auth_done(self, response: Response) -> None:
        if response.kind != "OK":
            self._auth_refused(response)
        self._last_auth_code = tuple(response.code or ())
        if response.code_name == "CAPABILITY":
            self.capabilities = capabilities_of((response.code or [])[1:])

    def _auth_refused(self, response: Response, detail: str = "") -> None:
        label = self.endpoint.label
        if response.code_name in ("UNAVAILABLE", "INUSE", "LIMIT"):
            raise LinkError(f"{label}: login not possible now: {response.text}")
        why = f" ({detail})" if detail else ""
        raise AuthError(f"{label}: login refused: {response.text or response.kind}{why}")

    async def idle_start(self) -> None:
        """Send IDLE and wait for the server's "+"; CommandFailed if refused.

        From the moment IDLE is sent, idle_done() is what ends it: a caller
        cancelled while waiting for the "+" leaves the server in IDLE, and
        logout() must say DONE before LOGOUT (the server would take LOGOUT
        for a bad DONE, and leave it unanswered)."""
        tag = self._next_tag()
        future = asyncio.get_running_loop().create_future()
        self._pending[tag] = future
        self._idle_future = future
        try:
            await self._await_continuation(f"{tag} IDLE\r\n".encode(), tag, "IDLE")
        except CommandFailed:
            self._idle_future = None
            raise

    async def idle_done(self) -> Response:
        """End IDLE (DONE) and wait for its tagged answer."""
        future, self._idle_future = self._idle_future, None
        assert future is not None, "idle_done() without idle_start()"
        if self._continuation is not None:
            # idle_start() did not see its "+" (it was cancelled): DONE
            # may only follow it.
            started = await self._wait(self._continuation, "IDLE")
            self._continuation = None
            self._continuation_tag = None
            if started.tag != "+":
                raise CommandFailed("IDLE", started)
        await self._send(b"DONE\r\n")
        response = await self._wait(future, "DONE")
        if response.kind != "OK":
            raise CommandFailed("IDLE", response)
        return response

    # -- closing -------------------------------------------------------------

    async def logout(self) -> None:
        """End IDLE and LOGOUT, within LOGOUT_GRACE and best effort, then close."""
        if self.failure is None and self._writer is not None:
            try:
                await within(self._goodbye(), min(self.timeout, LOGOUT_GRACE))
            except asyncio.TimeoutError:
                # A silent link: closing TLS politely would wait on it too.
                self._writer.transport.abort()
            except (RoammailError, OSError):
                pass
        await self.close()

    async def _goodbye(self) -> None:
        if self._idle_future is not None:
            try:
                await self.idle_done()
            except CommandFailed:
                pass  # not in IDLE, then: LOGOUT is welcome
        await self.command("LOGOUT")

    async def close(self) -> None:
        """Close the link and end a tunnel command; never raises (but a
        cancellation, once the link is closed all the same)."""
        await run_to_end(self._close())

    async def _close(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None and not task.done():
            task.cancel()
            # Its end, whatever it was; and a cancellation of the caller
            # is not swallowed, as `await task` in a try would.
            await asyncio.wait({task})
        if self.failure is None:
            self._fail(LinkError(f"{self.endpoint.label}: connection closed"))
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass
            try:
                await within(writer.wait_closed(), 1.0)
            except (OSError, RuntimeError, asyncio.TimeoutError, ssl.SSLError):
                pass
        proc, self._proc = self._proc, None
        if proc is not None:
            await _end_tunnel(proc)
        self.closed.set()


def os_error_text(exc: OSError) -> str:
    """"Connection refused", not asyncio's "Multiple exceptions: [Errno 111] ..."."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)


def sasl_error_text(challenge: str) -> str:
    """What an OAuth error continuation says, in a few words: RFC 7628's
    and Google's JSON {"status": ..., "scope": ...}, base64 encoded."""
    try:
        decoded = base64.b64decode(challenge.strip(), validate=True).decode("utf-8")
        error = json.loads(decoded)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(error, dict) or "status" not in error:
        return ""
    words = [f"token status {error['status']}"]
    if error.get("scope"):
        words.append(f"scope {error['scope']}")
    return ", ".join(str(w)[:200] for w in words)


def _command_name(parts: Sequence) -> str:
    words = [p for p in parts[:2] if isinstance(p, str)]
    return " ".join(words) or "command"


async def _end_tunnel(proc: asyncio.subprocess.Process) -> None:
    """The tunnel's group: a moment to end by itself once its input closed,
    then TERM -> TUNNEL_STOP_GRACE -> KILL (core.child) of what is left of
    it, the shell's leftovers included; then reaped, if it lets itself be."""
    try:
        await within(proc.wait(), TUNNEL_EOF_WAIT)
    except asyncio.TimeoutError:
        pass
    await kill_group_async(proc.pid, TUNNEL_STOP_GRACE)
    try:
        await within(proc.wait(), TUNNEL_REAP_WAIT)
    except asyncio.TimeoutError:
        pass


class _PlainSocket:
    """Lines from a non-blocking socket, reading no byte past the one asked for."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.loop = loop
        self.buf = bytearray()

    async def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line
            if len(self.buf) > READ_LIMIT:
                raise ProtocolError("a response line is too long")
            data = await self.loop.sock_recv(self.sock, 4096)
            if not data:
                raise LinkError("the server closed the connection")
            self.buf += data

    def buffered(self) -> bool:
        return bool(self.buf)

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)
