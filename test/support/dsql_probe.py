#!/usr/bin/python3
"""Minimal PostgreSQL wire client for poking at the DSQL emulator (and at real servers).

Usage:
    dsql_probe.py --port PORT [--addr 127.0.0.1] [--sni NAME | --no-sni] [--ca FILE]
                  [--direct [--no-alpn] | --plaintext] [--user admin] [--database postgres]
                  [--password-env PGPASSWORD] [--query SQL] [--idle SECONDS]

Prints one line per event, e.g.
    tls TLSv1.3 alpn=postgresql
    auth 3                                   (AuthenticationCleartextPassword; password sent)
    error FATAL 28P01 unable to accept connection, access denied
    login ok
    row admin
    error FATAL 57P01 terminating connection: maximum connection age exceeded (after 2.1s idle)
    closed by server (after 2.1s idle)
Exit status 0 when the conversation ran to an end the probe understands (an error from the
server included), 1 on a local failure (TLS verification, unexpected message, timeout).
The password is read from the environment variable named by --password-env, never from argv.
"""

import argparse
import os
import socket
import ssl
import struct
import sys
import time


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_message(sock):
    head = recv_exact(sock, 5)
    length = struct.unpack("!I", head[1:])[0]
    return head[:1], recv_exact(sock, length - 4)


def error_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def print_error(body, suffix=""):
    f = error_fields(body)
    print(f"error {f.get('V', f.get('S'))} {f.get('C')} {f.get('M')}{suffix}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sni", default="testcluster.dsql.us-east-1.on.aws")
    ap.add_argument("--no-sni", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--direct", action="store_true", help="TLS first, no SSLRequest (libpq 17)")
    ap.add_argument("--no-alpn", action="store_true")
    ap.add_argument("--plaintext", action="store_true")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--database", default="postgres")
    ap.add_argument("--password-env", default="PGPASSWORD")
    ap.add_argument("--query")
    ap.add_argument("--idle", type=float, default=0.0,
                    help="after login (and query), wait this long for the server to speak")
    ap.add_argument("--timeout", type=float, default=15.0)
    args = ap.parse_args()

    sock = socket.create_connection((args.addr, args.port), timeout=args.timeout)
    if not args.plaintext:
        if not args.direct:
            sock.sendall(struct.pack("!II", 8, 80877103))
            answer = recv_exact(sock, 1)
            if answer != b"S":
                print(f"sslrequest answered {answer!r}")
                return 1
        ctx = ssl.create_default_context(cafile=args.ca) if args.ca else \
            ssl.create_default_context()
        if args.no_sni or not args.ca:
            ctx.check_hostname = False
        if not args.ca:
            ctx.verify_mode = ssl.CERT_NONE
        if args.direct and not args.no_alpn:
            ctx.set_alpn_protocols(["postgresql"])
        sock = ctx.wrap_socket(sock, server_hostname=None if args.no_sni else args.sni)
        print(f"tls {sock.version()} alpn={sock.selected_alpn_protocol()}", flush=True)

    body = struct.pack("!I", 196608)
    for key, value in (("user", args.user), ("database", args.database)):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    sock.sendall(struct.pack("!I", len(body) + 4) + body)

    try:
        while True:
            msg_type, body = read_message(sock)
            if msg_type == b"R":
                code = struct.unpack("!I", body[:4])[0]
                print(f"auth {code}", flush=True)
                if code == 3:
                    password = os.environ.get(args.password_env, "").encode() + b"\0"
                    sock.sendall(b"p" + struct.pack("!I", len(password) + 4) + password)
                elif code != 0:
                    return 1
            elif msg_type == b"E":
                print_error(body)
                return 0
            elif msg_type == b"Z":
                print("login ok", flush=True)
                break
        if args.query:
            q = args.query.encode() + b"\0"
            sock.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
            while True:
                msg_type, body = read_message(sock)
                if msg_type == b"D":
                    n = struct.unpack("!H", body[:2])[0]
                    if n:
                        length = struct.unpack("!i", body[2:6])[0]
                        print(f"row {body[6:6 + length].decode() if length >= 0 else 'NULL'}",
                              flush=True)
                elif msg_type == b"E":
                    print_error(body)
                elif msg_type == b"Z":
                    break
        if args.idle > 0:
            sock.settimeout(args.idle)
            start = time.monotonic()
            try:
                while True:
                    msg_type, body = read_message(sock)
                    took = time.monotonic() - start
                    if msg_type == b"E":
                        print_error(body, f" (after {took:.1f}s idle)")
                    else:
                        print(f"message {msg_type!r} (after {took:.1f}s idle)")
            except EOFError:
                print(f"closed by server (after {time.monotonic() - start:.1f}s idle)")
            except (TimeoutError, socket.timeout):
                print(f"still open after {args.idle:.1f}s idle")
        else:
            sock.sendall(b"X\0\0\0\4")
    except EOFError:
        print("closed by server")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ssl.SSLError) as e:
        print(f"probe failed: {e.__class__.__name__}: {e}")
        sys.exit(1)
