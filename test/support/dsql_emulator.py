#!/usr/bin/python3
"""Loopback stand-in for the Aurora DSQL front door, for pqxxpool's tests and demo.

Speaks the PostgreSQL wire protocol on 127.0.0.1 with mandatory TLS and SNI, authenticates the
cleartext password as a DSQL IAM token (re-signed independently with botocore), then relays the
session to a real PostgreSQL server over its Unix socket (trust auth, same user). Enforces a
maximum connection age and, optionally, connection-rate and connection-count limits.

See docs/dsql-emulator.md for the behaviour, every option and the SQLSTATEs. Needs Python 3.11
and Debian's python3-botocore; run it with /usr/bin/python3.
"""

import argparse
import asyncio
import datetime
import hmac
import itertools
import logging
import os
import re
import signal
import socket
import ssl
import struct
import sys
import time
from urllib.parse import parse_qsl

import botocore
from botocore.credentials import Credentials

log = logging.getLogger("dsql-emulator")

# ---------------------------------------------------------------------------------------------
# Messages and codes

MSG_SNI_MISSING = "unable to accept connection, sni was not received"
MSG_SNI_INVALID = "unable to accept connection, invalid sni"
MSG_TLS_REQUIRED = "unable to accept connection, TLS is required"
MSG_ACCESS_DENIED = "unable to accept connection, access denied"
MSG_TOO_MANY = "Unable to accept connection, too many open connections."
MSG_RATE = "Unable to accept connection, rate exceeded."
MSG_MAX_AGE = "terminating connection: maximum connection age exceeded"
MSG_SHUTDOWN = "terminating connection due to administrator command"
MSG_NO_ALPN = ("received direct SSL connection request without ALPN protocol negotiation "
               "extension")
MSG_BACKEND_DOWN = "unable to accept connection, dsql emulator cannot reach its PostgreSQL backend"

SQLSTATE_SNI = "08006"            # connection_failure
SQLSTATE_TLS_REQUIRED = "08P01"   # protocol_violation
SQLSTATE_ACCESS_DENIED = "28P01"  # invalid_password
SQLSTATE_TOO_MANY = "53300"       # too_many_connections
SQLSTATE_RATE = "53400"           # configuration_limit_exceeded
SQLSTATE_MAX_AGE = "57P01"        # admin_shutdown
SQLSTATE_PROTOCOL = "08P01"       # protocol_violation
SQLSTATE_BACKEND_DOWN = "08006"   # connection_failure
SQLSTATE_NO_USER = "28000"        # invalid_authorization_specification
SQLSTATE_INTERNAL = "XX000"       # internal_error

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
MAX_STARTUP_PACKET = 10000        # as PostgreSQL's MAX_STARTUP_PACKET_LENGTH
MAX_PASSWORD_PACKET = 65535       # as PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH
TLS_HANDSHAKE_RECORD = 0x16

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
REGION_RE = re.compile(r"\.dsql[^.]*\.([^.]+)\.on\.aws$")
MAX_TOKEN_EXPIRES = 604800
MAX_CLOCK_SKEW = 900              # a token dated further in the future than this is refused
TOKEN_PARAMS = {"Action", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"}


class Refused(Exception):
    """Refuse the connection: send FATAL sqlstate/message (if possible) and close."""

    def __init__(self, sqlstate, message, reason):
        super().__init__(reason)
        self.sqlstate = sqlstate
        self.message = message
        self.reason = reason


class Dropped(Exception):
    """Close the connection without sending anything."""


def error_response(sqlstate, message, severity="FATAL"):
    fields = b""
    for code, value in ((b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message)):
        fields += code + value.encode() + b"\0"
    fields += b"\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


def auth_request(code):
    return b"R" + struct.pack("!II", 8, code)


def parse_startup_params(body):
    parts = body.split(b"\0")
    # body is key\0value\0...key\0value\0\0 -> parts ends with '', ''
    if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
        raise Refused(SQLSTATE_PROTOCOL, "invalid startup packet layout: expected terminator as "
                      "last byte", "malformed startup packet")
    parts = parts[:-2]
    if len(parts) % 2:
        raise Refused(SQLSTATE_PROTOCOL, "invalid startup packet layout: expected terminator as "
                      "last byte", "malformed startup packet")
    params = {}
    for key, value in zip(parts[0::2], parts[1::2]):
        params[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return params


def build_startup(protocol, params):
    body = struct.pack("!I", protocol)
    for key, value in params.items():
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


# ---------------------------------------------------------------------------------------------
# Token verification (independent of pqxxpool's signer: botocore's SigV4QueryAuth)

# One signer for the emulator and the token tool: botocore's SigV4QueryAuth at a fixed timestamp.
from dsql_token import make_token as sign_token  # noqa: E402  (a sibling file of this script)


def self_test_signer():
    """Known-answer test with published vectors; refuse to start if the signer is off."""
    vectors = [
        (Credentials("access_key", "secret_key"), "DbConnectAdmin",
         "a08adc4c84a490014ce374b90c98ba9ed015b77b451c0d9f9fb3f8ca8c6f9c36"),
        (Credentials("ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN"), "DbConnect",
         "57fe03e060348aaa21405c239bf02572bbc911076e94dcd65c12ae569dd8fcf4"),
    ]
    for creds, action, want in vectors:
        token = sign_token("test.dsql.us-east-1.on.aws", "us-east-1", action, 900, creds,
                           "20241107T173933Z")
        if not token.endswith("&X-Amz-Signature=" + want):
            raise SystemExit(f"dsql-emulator: botocore {botocore.__version__} signer failed its "
                             "known-answer test; refusing to start")


class TokenVerifier:
    def __init__(self, access_key_id, secret_access_key, session_token, region, clock):
        self.creds = Credentials(access_key_id, secret_access_key, session_token or None)
        self.region = region
        self.clock = clock

    def verify(self, token, user, sni):
        """Return None if TOKEN admits USER on SNI, else the name of the failed check."""
        if "/?" not in token:
            return "malformed token (no '/?')"
        host, _, query = token.partition("/?")
        if host.startswith(("https://", "http://")):
            return "malformed token (has a URL scheme)"
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return "malformed token (query string)"
        params = dict(pairs)
        if len(params) != len(pairs):
            return "malformed token (repeated parameter)"
        unknown = sorted(set(params) - TOKEN_PARAMS)
        if unknown:
            return f"unexpected token parameter(s) {', '.join(unknown)}"
        missing = sorted(TOKEN_PARAMS - {"X-Amz-Security-Token"} - set(params))
        if missing:
            return f"missing token parameter(s) {', '.join(missing)}"

        action = params["Action"]
        want_action = "DbConnectAdmin" if user == "admin" else "DbConnect"
        if action != want_action:
            return f"action {action!r} does not fit user {user!r} (needs {want_action})"
        if host.lower() != (sni or "").lower():
            return f"token host {host!r} does not match sni {sni!r}"
        if params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            return "X-Amz-Algorithm is not AWS4-HMAC-SHA256"
        if params["X-Amz-SignedHeaders"] != "host":
            return "X-Amz-SignedHeaders is not 'host'"

        scope = params["X-Amz-Credential"].split("/")
        if len(scope) != 5 or scope[4] != "aws4_request":
            return "malformed X-Amz-Credential"
        akid, scope_date, scope_region, scope_service, _ = scope
        if scope_service != "dsql":
            return f"credential scope service {scope_service!r} is not 'dsql'"
        if scope_region != self.region:
            return f"credential scope region {scope_region!r} is not {self.region!r}"
        if akid != self.creds.access_key:
            return "unknown access key id"

        stamp = params["X-Amz-Date"]
        try:
            signed_at = datetime.datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            return "malformed X-Amz-Date"
        if scope_date != stamp[:8]:
            return "credential scope date differs from X-Amz-Date"
        expires_text = params["X-Amz-Expires"]
        if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_TOKEN_EXPIRES:
            return f"X-Amz-Expires must be an integer in 1..{MAX_TOKEN_EXPIRES}"
        expires = int(expires_text)
        now = self.clock()
        if now >= signed_at + expires:
            return (f"token expired {now - signed_at - expires:.0f}s ago "
                    f"(signed {stamp}, expires {expires}s)")
        if signed_at > now + MAX_CLOCK_SKEW:
            return f"token dated {signed_at - now:.0f}s in the future (signed {stamp})"

        session = params.get("X-Amz-Security-Token")
        if self.creds.token is None and session is not None:
            return "token carries a session token, emulator has none configured"
        if self.creds.token is not None and session is None:
            return "token lacks the session token"
        if session is not None and not hmac.compare_digest(session.encode(),
                                                           self.creds.token.encode()):
            return "session token mismatch"

        expected = sign_token(host, self.region, action, expires, self.creds, stamp)
        want_sig = expected.rsplit("&X-Amz-Signature=", 1)[1]
        if not hmac.compare_digest(want_sig.encode(), params["X-Amz-Signature"].encode()):
            return "signature mismatch"
        return None


# ---------------------------------------------------------------------------------------------
# Message framing on the relayed streams (after login every message is type + int32 length)

class Framer:
    """Follows message boundaries in a byte stream; calls on_message(type, first_body_bytes)."""

    CAPTURE = 8

    def __init__(self, on_message):
        self.on_message = on_message
        self.header = bytearray()
        self.in_body = False
        self.remaining = 0
        self.msg_type = 0
        self.capture = bytearray()

    @property
    def at_boundary(self):
        return not self.in_body and not self.header

    def feed(self, data):
        i, n = 0, len(data)
        while i < n:
            if not self.in_body:
                take = min(5 - len(self.header), n - i)
                self.header += data[i:i + take]
                i += take
                if len(self.header) == 5:
                    self.msg_type = self.header[0]
                    length = struct.unpack("!I", self.header[1:5])[0]
                    self.header.clear()
                    if length < 4:
                        raise ValueError("invalid message length")
                    self.remaining = length - 4
                    self.capture = bytearray()
                    if self.remaining == 0:
                        self.on_message(self.msg_type, b"")
                    else:
                        self.in_body = True
            else:
                take = min(self.remaining, n - i)
                if len(self.capture) < self.CAPTURE:
                    self.capture += data[i:i + min(take, self.CAPTURE - len(self.capture))]
                self.remaining -= take
                i += take
                if self.remaining == 0:
                    self.in_body = False
                    self.on_message(self.msg_type, bytes(self.capture))


# ---------------------------------------------------------------------------------------------
# Connections

class RateLimiter:
    def __init__(self, rate, burst):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def allow(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def sni_callback(ssl_object, server_name, _context):
    # Runs inside the handshake; just remember what the client sent (None without SNI).
    ssl_object.pqxxpool_sni = server_name


async def peek_first_byte(sock):
    loop = asyncio.get_running_loop()
    while True:
        ready = loop.create_future()
        loop.add_reader(sock.fileno(), lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_reader(sock.fileno())
        try:
            return sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue


async def open_accepted(sock, ssl_context=None, handshake_timeout=None):
    """Stream pair for an accepted socket; server-side, so that StreamWriter.start_tls works."""
    loop = asyncio.get_running_loop()
    connected = loop.create_future()
    reader = asyncio.StreamReader(limit=1 << 16)

    def on_connected(_reader, writer):
        if not connected.done():
            connected.set_result(writer)

    protocol = asyncio.StreamReaderProtocol(reader, on_connected)
    await loop.connect_accepted_socket(lambda: protocol, sock=sock, ssl=ssl_context,
                                       ssl_handshake_timeout=handshake_timeout)
    writer = await connected
    return reader, writer


async def read_startup_packet(reader):
    length = struct.unpack("!I", await reader.readexactly(4))[0]
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise Refused(SQLSTATE_PROTOCOL, "invalid length of startup packet",
                      f"invalid startup packet length {length}")
    body = await reader.readexactly(length - 4)
    return struct.unpack("!I", body[:4])[0], body[4:]


async def read_message(reader, limit):
    msg_type = await reader.readexactly(1)
    length = struct.unpack("!I", await reader.readexactly(4))[0]
    if length < 4 or length - 4 > limit:
        raise Refused(SQLSTATE_PROTOCOL, "invalid message length",
                      f"invalid length {length} of message {msg_type!r}")
    return msg_type, await reader.readexactly(length - 4)


async def close_writer(writer, timeout=1.0):
    # A TLS close sends close_notify and waits for the peer's; an idle client may not answer
    # until it next reads, so give up after TIMEOUT and drop the TCP connection.
    if writer is None:
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (asyncio.TimeoutError, OSError, ssl.SSLError, ConnectionError):
        writer.transport.abort()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise


class Connection:
    def __init__(self, emulator, conn_id, sock, peer, refusal):
        self.em = emulator
        self.cfg = emulator.cfg
        self.id = conn_id
        self.sock = sock
        self.peer = peer
        self.refusal = refusal            # (sqlstate, message, reason) decided at accept
        self.accepted = time.monotonic()
        self.c_reader = self.c_writer = None
        self.b_reader = self.b_writer = None
        self.sni = None
        self.negotiation = None
        self.tls_version = None
        self.user = None
        self.database = None
        self.relaying = False
        self.stop_requested = asyncio.Event()
        # relay state
        self.pending_ready = 0            # client Q/S/F messages not yet answered by a 'Z'
        self.msgs_since_ready = 0         # client messages since the last 'Z'
        self.tx_status = None             # status byte of the last 'Z'
        self.backend_key = None           # 8 bytes of BackendKeyData: pid, secret
        self.age_exceeded = False

    def info(self, fmt, *args):
        log.info("conn %d " + fmt, self.id, *args)

    def age(self):
        return time.monotonic() - self.accepted

    # -- phase 1: negotiation, TLS, startup, authentication -----------------------------------

    async def run(self):
        reason = "?"
        closed_age = None
        try:
            async with asyncio.timeout(self.cfg.handshake_timeout):
                await self.negotiate()
                await self.authenticate_and_connect_backend()
            reason = await self.relay()
        except Refused as r:
            reason = f"refused: {r.reason}"
            await self.refuse(r)
        except Dropped as d:
            reason = f"dropped: {d}"
        except TimeoutError:
            reason = "dropped: login not completed within --handshake-timeout"
        except asyncio.IncompleteReadError:
            reason = "client closed during login"
        except (ssl.SSLError, ssl.CertificateError) as e:
            reason = f"dropped: TLS error: {e.__class__.__name__}: {getattr(e, 'reason', e)}"
        except (ConnectionError, OSError) as e:
            reason = f"dropped: {e.__class__.__name__}: {e}"
        except asyncio.CancelledError:
            reason = "cancelled (emulator shutting down)"
            raise
        except Exception as e:  # noqa: BLE001 -- a test tool must log, not die
            log.exception("conn %d internal error", self.id)
            reason = f"internal error: {e.__class__.__name__}"
        finally:
            closed_age = self.age()
            if self.c_writer is not None:
                await close_writer(self.c_writer)
            else:
                self.sock.close()
            if self.b_writer is not None:
                await close_writer(self.b_writer)
            self.em.connection_done(self)
            details = [f"age {closed_age:.1f}s"]
            if self.tls_version:
                details.append(f"{self.tls_version}/{self.negotiation}")
                details.append(f"sni={self.sni or '(none)'}")
            if self.user:
                details.append(f"user={self.user}")
            self.info("closed: %s (%s)", reason, ", ".join(details))

    async def refuse(self, r):
        if self.c_writer is None or self.c_writer.is_closing():
            return
        try:
            self.c_writer.write(error_response(r.sqlstate, r.message))
            await asyncio.wait_for(self.c_writer.drain(), 2.0)
        except (OSError, ConnectionError, ssl.SSLError, asyncio.TimeoutError):
            pass

    async def negotiate(self):
        first = await peek_first_byte(self.sock)
        if not first:
            raise Dropped("client closed before sending anything")
        if first[0] == TLS_HANDSHAKE_RECORD:
            self.negotiation = "direct"
            self.c_reader, self.c_writer = await open_accepted(
                self.sock, self.em.ssl_context, self.cfg.handshake_timeout)
            alpn = self.c_writer.get_extra_info("ssl_object").selected_alpn_protocol()
            self.sni = getattr(self.c_writer.get_extra_info("ssl_object"), "pqxxpool_sni", None)
            if alpn != "postgresql":
                raise Refused(SQLSTATE_PROTOCOL, MSG_NO_ALPN, "direct TLS without ALPN postgresql")
        else:
            self.c_reader, self.c_writer = await open_accepted(self.sock)
            while True:
                code, body = await read_startup_packet(self.c_reader)
                if code == GSSENC_REQUEST_CODE:
                    self.c_writer.write(b"N")
                    await self.c_writer.drain()
                    continue
                if code == SSL_REQUEST_CODE:
                    break
                if code == CANCEL_REQUEST_CODE:
                    raise Dropped("plaintext CancelRequest ignored (TLS is required)")
                raise Refused(SQLSTATE_TLS_REQUIRED, MSG_TLS_REQUIRED,
                              "plaintext startup (no SSLRequest)")
            # Anything already buffered after the SSLRequest would bypass TLS (CVE-2021-23214).
            if len(self.c_reader._buffer):  # noqa: SLF001
                raise Dropped("data received after SSLRequest before the TLS handshake")
            self.negotiation = "sslrequest"
            self.c_writer.write(b"S")
            await self.c_writer.drain()
            await self.c_writer.start_tls(self.em.ssl_context,
                                          ssl_handshake_timeout=self.cfg.handshake_timeout)
            self.sni = getattr(self.c_writer.get_extra_info("ssl_object"), "pqxxpool_sni", None)
        self.tls_version = self.c_writer.get_extra_info("ssl_object").version()

    async def authenticate_and_connect_backend(self):
        code, body = await read_startup_packet(self.c_reader)
        if code == CANCEL_REQUEST_CODE:
            if self.sni_problem() is None and len(body) == 8:
                await self.em.forward_cancel(body)
                raise Dropped("CancelRequest forwarded to the backend")
            raise Dropped("CancelRequest refused (sni)")
        if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
            raise Refused(SQLSTATE_PROTOCOL, "encryption request inside TLS",
                          "SSLRequest/GSSENCRequest received inside TLS")
        major, minor = code >> 16, code & 0xFFFF
        if major != 3:
            raise Refused("0A000", f"unsupported frontend protocol {major}.{minor}: server "
                          "supports 3.0 to 3.0", f"protocol {major}.{minor}")
        params = parse_startup_params(body)
        self.user = params.get("user")
        self.database = params.get("database") or self.user

        problem = self.sni_problem()
        if problem:
            raise Refused(SQLSTATE_SNI, problem, problem.rsplit(", ", 1)[-1])
        if self.refusal:
            raise Refused(*self.refusal)
        if not self.user:
            raise Refused(SQLSTATE_NO_USER, "no PostgreSQL user name specified in startup packet",
                          "no user in startup packet")

        self.c_writer.write(auth_request(3))   # AuthenticationCleartextPassword
        await self.c_writer.drain()
        try:
            msg_type, body = await read_message(self.c_reader, MAX_PASSWORD_PACKET)
        except asyncio.IncompleteReadError:
            raise Dropped("client closed instead of sending a password") from None
        if msg_type != b"p":
            raise Refused(SQLSTATE_PROTOCOL, f"expected password response, got message type "
                          f"{msg_type[0]}", f"expected PasswordMessage, got {msg_type!r}")
        token = body.rstrip(b"\0").decode("utf-8", "replace").strip()
        failed = self.em.verifier.verify(token, self.user, self.sni)
        if failed:
            raise Refused(SQLSTATE_ACCESS_DENIED, MSG_ACCESS_DENIED,
                          f"access denied for user {self.user!r}: {failed}")

        # Backend login as the same user, by trust over the Unix socket.
        try:
            self.b_reader, self.b_writer = await asyncio.open_unix_connection(
                self.em.backend_socket)
        except OSError as e:
            raise Refused(SQLSTATE_BACKEND_DOWN, MSG_BACKEND_DOWN,
                          f"backend connect failed: {e}") from None
        self.b_writer.write(build_startup(code, params))
        await self.b_writer.drain()
        forwarded = b""
        while True:
            try:
                msg_type, body = await read_message(self.b_reader, 1 << 20)
            except asyncio.IncompleteReadError:
                raise Refused(SQLSTATE_BACKEND_DOWN, MSG_BACKEND_DOWN,
                              "backend closed during login") from None
            raw = msg_type + struct.pack("!I", len(body) + 4) + body
            if msg_type == b"E":
                self.c_writer.write(forwarded + raw)
                await self.c_writer.drain()
                raise Dropped("backend refused the login (its ErrorResponse was forwarded)")
            if msg_type == b"v":            # NegotiateProtocolVersion
                forwarded += raw
                continue
            if msg_type == b"R":
                auth_code = struct.unpack("!I", body[:4])[0]
                if auth_code != 0:
                    raise Refused(SQLSTATE_INTERNAL, "dsql emulator: the PostgreSQL backend asked "
                                  "for a password; it must trust Unix-socket logins",
                                  f"backend wants authentication code {auth_code}")
                forwarded += raw
                break
            raise Refused(SQLSTATE_INTERNAL, "dsql emulator: unexpected backend message",
                          f"backend sent {msg_type!r} before AuthenticationOk")
        self.c_writer.write(forwarded)      # AuthenticationOk (after the 'R' 3 we sent)
        await self.c_writer.drain()
        self.info("token accepted, relaying to the backend: user=%s database=%s %s/%s",
                  self.user, self.database, self.tls_version, self.negotiation)

    def sni_problem(self):
        if not self.sni:
            return MSG_SNI_MISSING
        if self.sni.lower() != self.cfg.cluster_name.lower():
            return MSG_SNI_INVALID
        return None

    # -- phase 2: relay -----------------------------------------------------------------------

    def is_idle(self):
        return (self.pending_ready == 0 and self.msgs_since_ready == 0 and self.tx_status == "I"
                and self.client_framer.at_boundary and self.backend_framer.at_boundary)

    def on_client_message(self, msg_type, _head):
        self.msgs_since_ready += 1
        if msg_type in (ord("Q"), ord("S"), ord("F")):
            self.pending_ready += 1

    def on_backend_message(self, msg_type, head):
        if msg_type == ord("Z") and head:
            self.pending_ready = max(0, self.pending_ready - 1)
            self.msgs_since_ready = 0
            self.tx_status = chr(head[0])
        elif msg_type == ord("K") and len(head) == 8:
            self.backend_key = head

    async def pump_client_to_backend(self):
        while True:
            data = await self.c_reader.read(1 << 16)
            if not data:
                return "client closed"
            self.client_framer.feed(data)
            self.b_writer.write(data)
            await self.b_writer.drain()

    async def pump_backend_to_client(self):
        while True:
            data = await self.b_reader.read(1 << 16)
            if not data:
                return "backend closed"
            self.c_writer.write(data)
            self.backend_framer.feed(data)
            await self.c_writer.drain()
            if self.age_exceeded and self.is_idle():
                return "max age exceeded while idle"

    async def age_watch(self):
        await asyncio.sleep(max(0.0, self.cfg.max_age - self.age()))
        self.age_exceeded = True
        if self.is_idle():
            return "max age exceeded while idle"
        self.info("max age exceeded while busy; closing when idle or after %.0fs grace",
                  self.cfg.max_age_grace)
        await asyncio.sleep(max(0.0, self.cfg.max_age + self.cfg.max_age_grace - self.age()))
        return "max age + grace exceeded while busy (forced)"

    async def stop_watch(self):
        await self.stop_requested.wait()
        return "emulator shutting down"

    async def relay(self):
        self.relaying = True
        self.client_framer = Framer(self.on_client_message)
        self.backend_framer = Framer(self.on_backend_message)
        tasks = {
            asyncio.create_task(self.pump_client_to_backend()),
            asyncio.create_task(self.pump_backend_to_client()),
            asyncio.create_task(self.age_watch()),
            asyncio.create_task(self.stop_watch()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        task = done.pop()
        try:
            reason = task.result()
        except (ConnectionError, OSError, ssl.SSLError, ValueError) as e:
            reason = f"{e.__class__.__name__}: {e}"

        if reason.startswith("max age") or reason.startswith("emulator shutting down"):
            idle = self.is_idle()
            message = MSG_SHUTDOWN if reason.startswith("emulator") else MSG_MAX_AGE
            if self.backend_framer.at_boundary:
                try:
                    self.c_writer.write(error_response(SQLSTATE_MAX_AGE, message))
                    await asyncio.wait_for(self.c_writer.drain(), 2.0)
                except (OSError, ConnectionError, ssl.SSLError, asyncio.TimeoutError):
                    pass
            if idle:
                try:
                    self.b_writer.write(b"X\0\0\0\4")      # Terminate
                    await asyncio.wait_for(self.b_writer.drain(), 2.0)
                except (OSError, ConnectionError, asyncio.TimeoutError):
                    pass
            elif self.backend_key:
                await self.em.forward_cancel(self.backend_key)
        return reason


# ---------------------------------------------------------------------------------------------
# Server

class Emulator:
    def __init__(self, cfg):
        self.cfg = cfg
        self.ids = itertools.count(1)
        self.connections = set()
        self.open_count = 0
        self.rate = (RateLimiter(cfg.max_connect_rate, cfg.max_connect_burst)
                     if cfg.max_connect_rate > 0 else None)
        self.backend_socket = os.path.join(cfg.pg_socket_dir, f".s.PGSQL.{cfg.pg_port}")
        self.verifier = TokenVerifier(cfg.access_key_id, cfg.secret_access_key, cfg.session_token,
                                      cfg.region, lambda: time.time() + cfg.clock_offset)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cfg.cert, cfg.key)
        ctx.set_alpn_protocols(["postgresql"])
        ctx.sni_callback = sni_callback
        self.ssl_context = ctx

    def check_certificate(self):
        """In-memory handshake: the certificate must verify for the cluster name against the CA."""
        client_ctx = ssl.create_default_context(cafile=self.cfg.ca)
        c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=self.cfg.cluster_name)
        server = self.ssl_context.wrap_bio(s_in, s_out, server_side=True)
        done = {"client": False, "server": False}
        for _ in range(20):
            for name, obj, out_bio, peer_in in (("client", client, c_out, s_in),
                                                ("server", server, s_out, c_in)):
                if not done[name]:
                    try:
                        obj.do_handshake()
                        done[name] = True
                    except ssl.SSLWantReadError:
                        pass
                    except ssl.SSLError as e:
                        raise SystemExit(f"dsql-emulator: {self.cfg.cert} does not verify for "
                                         f"{self.cfg.cluster_name} against {self.cfg.ca}: {e}")
                data = out_bio.read()
                if data:
                    peer_in.write(data)
            if all(done.values()):
                return
        raise SystemExit("dsql-emulator: certificate self-check handshake did not finish")

    def connection_done(self, conn):
        self.connections.discard(conn)
        if conn.refusal is None:
            self.open_count -= 1

    async def forward_cancel(self, key):
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.backend_socket), 2.0)
            writer.write(struct.pack("!II", 16, CANCEL_REQUEST_CODE) + key)
            await writer.drain()
            writer.close()
        except (OSError, asyncio.TimeoutError) as e:
            log.info("could not forward a CancelRequest to the backend: %s", e)

    async def serve(self):
        loop = asyncio.get_running_loop()
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((self.cfg.listen, self.cfg.port))
        lsock.listen(512)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]

        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        if self.cfg.port_file:
            tmp = f"{self.cfg.port_file}.tmp.{os.getpid()}"
            with open(tmp, "w", encoding="ascii") as f:
                f.write(f"{port}\n")
            os.replace(tmp, self.cfg.port_file)
        print(f"listening on {self.cfg.listen}:{port}", flush=True)
        log.info("listening on %s:%d cluster=%s region=%s backend=%s max-age=%gs grace=%gs "
                 "clock-offset=%gs max-connections=%s max-connect-rate=%s", self.cfg.listen, port,
                 self.cfg.cluster_name, self.cfg.region, self.backend_socket, self.cfg.max_age,
                 self.cfg.max_age_grace, self.cfg.clock_offset, self.cfg.max_connections or "off",
                 self.cfg.max_connect_rate or "off")

        accept_task = asyncio.create_task(self.accept_loop(lsock))
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({accept_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down (%d open connections)", len(self.connections))
        accept_task.cancel()
        await asyncio.gather(accept_task, return_exceptions=True)
        lsock.close()
        for conn in list(self.connections):
            conn.stop_requested.set()
        tasks = [c.task for c in self.connections]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=5.0)
            for t in still:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.cfg.port_file:
            try:
                os.unlink(self.cfg.port_file)
            except FileNotFoundError:
                pass
        log.info("stopped")

    async def accept_loop(self, lsock):
        loop = asyncio.get_running_loop()
        while True:
            sock, addr = await loop.sock_accept(lsock)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn_id = next(self.ids)
            refusal = None
            if self.cfg.max_connections and self.open_count >= self.cfg.max_connections:
                refusal = (SQLSTATE_TOO_MANY, MSG_TOO_MANY,
                           f"too many open connections ({self.open_count})")
            elif self.rate is not None and not self.rate.allow():
                refusal = (SQLSTATE_RATE, MSG_RATE, "connection rate exceeded")
            if refusal is None:
                self.open_count += 1
            conn = Connection(self, conn_id, sock, addr, refusal)
            log.info("conn %d accepted from %s:%d%s", conn_id, addr[0], addr[1],
                     f" (will refuse: {refusal[2]})" if refusal else "")
            self.connections.add(conn)
            conn.task = asyncio.create_task(conn.run())


# ---------------------------------------------------------------------------------------------
# Configuration

def read_env_file(path):
    values = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^export ([A-Z0-9_]+)='([^']*)'$", line.strip())
            if m:
                values[m.group(1)] = m.group(2)
    return values


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="dsql_emulator.py",
        description="Loopback stand-in for the Aurora DSQL front door (see docs/dsql-emulator.md).")
    ap.add_argument("--dir", help="pgcluster.sh DIR: default for --cert/--key/--ca, "
                    "--pg-socket-dir and (from DIR/env) --pg-port")
    ap.add_argument("--listen", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="TCP port, 0 = a free one (0)")
    ap.add_argument("--port-file", help="write the port here once listening (removed on exit)")
    ap.add_argument("--cert", help="server certificate (DIR/server.crt)")
    ap.add_argument("--key", help="server private key (DIR/server.key)")
    ap.add_argument("--ca", help="CA to check --cert against at startup (DIR/ca.crt if present)")
    ap.add_argument("--cluster-name", default="testcluster.dsql.us-east-1.on.aws",
                    help="the only SNI accepted (testcluster.dsql.us-east-1.on.aws)")
    ap.add_argument("--region", help="credential-scope region (default: from --cluster-name)")
    ap.add_argument("--access-key-id", help="(env PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID)")
    ap.add_argument("--secret-access-key", help="(env PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY; "
                    "prefer the environment: options show up in ps)")
    ap.add_argument("--session-token", help="require this X-Amz-Security-Token "
                    "(env PQXXPOOL_DSQL_TEST_SESSION_TOKEN; default: tokens must carry none)")
    ap.add_argument("--pg-socket-dir", help="PostgreSQL Unix socket directory (DIR)")
    ap.add_argument("--pg-port", type=int, help="PostgreSQL port (PQXXPOOL_TEST_PORT in DIR/env)")
    ap.add_argument("--clock-offset", type=float, default=0.0,
                    help="seconds added to the clock for token expiry checks (0)")
    ap.add_argument("--max-age", type=float, default=3600.0,
                    help="maximum connection age in seconds (3600)")
    ap.add_argument("--max-age-grace", type=float, default=300.0,
                    help="after max-age, close even a busy connection after this many s (300)")
    ap.add_argument("--max-connect-rate", type=float, default=0.0,
                    help="new connections per second, 0 = unlimited (0)")
    ap.add_argument("--max-connect-burst", type=float,
                    help="token-bucket burst for --max-connect-rate (max(1, rate))")
    ap.add_argument("--max-connections", type=int, default=0,
                    help="open connections at most, 0 = unlimited (0)")
    ap.add_argument("--handshake-timeout", type=float, default=15.0,
                    help="seconds from accept to a completed login (15)")
    ap.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    cfg = ap.parse_args(argv)

    if cfg.dir:
        cfg.dir = os.path.abspath(cfg.dir)
        cfg.cert = cfg.cert or os.path.join(cfg.dir, "server.crt")
        cfg.key = cfg.key or os.path.join(cfg.dir, "server.key")
        if cfg.ca is None and os.path.exists(os.path.join(cfg.dir, "ca.crt")):
            cfg.ca = os.path.join(cfg.dir, "ca.crt")
        cfg.pg_socket_dir = cfg.pg_socket_dir or cfg.dir
        if cfg.pg_port is None and os.path.exists(os.path.join(cfg.dir, "env")):
            port = read_env_file(os.path.join(cfg.dir, "env")).get("PQXXPOOL_TEST_PORT")
            cfg.pg_port = int(port) if port else None
    for name in ("cert", "key", "pg_socket_dir", "pg_port"):
        if getattr(cfg, name) is None:
            ap.error(f"--{name.replace('_', '-')} is required (or give --dir)")
    cfg.cluster_name = cfg.cluster_name.lower()
    if not cfg.region:
        m = REGION_RE.search(cfg.cluster_name)
        if not m:
            ap.error(f"cannot read a region from {cfg.cluster_name!r}; give --region")
        cfg.region = m.group(1)
    cfg.access_key_id = cfg.access_key_id or os.environ.get("PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID")
    cfg.secret_access_key = (cfg.secret_access_key
                             or os.environ.get("PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY"))
    cfg.session_token = cfg.session_token or os.environ.get("PQXXPOOL_DSQL_TEST_SESSION_TOKEN")
    if not cfg.access_key_id or not cfg.secret_access_key:
        ap.error("credentials needed: --access-key-id/--secret-access-key or "
                 "PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID/PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY")
    if cfg.max_age <= 0 or cfg.max_age_grace < 0:
        ap.error("--max-age must be > 0 and --max-age-grace >= 0")
    if cfg.max_connect_burst is None:
        cfg.max_connect_burst = max(1.0, cfg.max_connect_rate)
    return cfg


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
            f".{int(record.msecs):03d}Z"


def main(argv=None):
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)s dsql-emulator[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(cfg.log_level)
    self_test_signer()
    emulator = Emulator(cfg)
    if cfg.ca:
        emulator.check_certificate()
    asyncio.run(emulator.serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
