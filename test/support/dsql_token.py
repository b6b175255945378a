#!/usr/bin/python3
"""Print an Aurora DSQL IAM auth token made with botocore (test helper for pqxxpool).

Usage:
    dsql_token.py --host HOST [--user USER] [--region REGION] [--expires SECONDS]
                  [--action DbConnect|DbConnectAdmin] [--date YYYYMMDDTHHMMSSZ]
                  [--access-key-id ID] [--secret-access-key SECRET] [--session-token TOKEN]
    dsql_token.py --check-vectors

The token is botocore's SigV4 query presign of GET https://HOST/?Action=ACTION, service `dsql`,
printed without the `https://` prefix, parameters in botocore's order. ACTION is DbConnectAdmin
iff USER is exactly `admin` (override with --action, e.g. to make a deliberately wrong token).
REGION defaults to the one in HOST (`\\.dsql[^.]*\\.([^.]+)\\.on\\.aws$`). --date signs at a
fixed time instead of now (to reproduce published test vectors).

Credentials: the options, else PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID / _SECRET_ACCESS_KEY /
_SESSION_TOKEN, else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.

--check-vectors re-computes the SDKs' published DSQL test vectors (AWS SDK for Java v2,
botocore, smithy-rs, aws-dsql-auth) and exits 0 iff every signature matches.

Uses Debian's python3-botocore (1.29 has no DSQL signer of its own; this uses
botocore.auth.SigV4QueryAuth, which is what botocore's later DSQL signer calls).
"""

import argparse
import datetime
import os
import re
import sys

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
REGION_RE = re.compile(r"\.dsql[^.]*\.([^.]+)\.on\.aws$")


class _FixedTimeQueryAuth(botocore.auth.SigV4QueryAuth):
    """SigV4QueryAuth signing at a given timestamp instead of utcnow()."""

    def __init__(self, credentials, service_name, region_name, expires, timestamp):
        super().__init__(credentials, service_name, region_name, expires=expires)
        self._fixed_timestamp = timestamp

    def add_auth(self, request):
        # Same steps as SigV4Auth.add_auth, minus reading the clock.
        request.context["timestamp"] = self._fixed_timestamp
        self._modify_request_before_signing(request)
        canonical_request = self.canonical_request(request)
        string_to_sign = self.string_to_sign(request, canonical_request)
        signature = self.signature(string_to_sign, request)
        self._inject_signature_to_request(request, signature)


def make_token(host, region, action, expires, credentials, timestamp=None):
    """Return the token (URL without https://) for HOST, signed at TIMESTAMP (default now)."""
    if timestamp is None:
        timestamp = datetime.datetime.now(datetime.timezone.utc).strftime(SIGV4_TIMESTAMP)
    request = AWSRequest(method="GET", url=f"https://{host}/", params={"Action": action})
    _FixedTimeQueryAuth(credentials, "dsql", region, expires, timestamp).add_auth(request)
    return request.prepare().url[len("https://"):]


# (access key, secret, session token, timestamp, host, expires, action, expected signature)
VECTORS = [
    ("access_key", "secret_key", None, "20241107T173933Z", "test.dsql.us-east-1.on.aws", 900,
     "DbConnect", "e319d85380261f643d78a558f76257f05aacea758a6ccd42a2510e2ae0854a47"),
    ("access_key", "secret_key", None, "20241107T173933Z", "test.dsql.us-east-1.on.aws", 900,
     "DbConnectAdmin", "a08adc4c84a490014ce374b90c98ba9ed015b77b451c0d9f9fb3f8ca8c6f9c36"),
    ("access_key", "secret_key", None, "20241107T173933Z", "test.dsql.us-east-1.on.aws", 3600,
     "DbConnect", "63987ab6908fe81bfcaa5a5120444a8d012751992bcdfec351522db555232c51"),
    ("access_key", "secret_key", None, "20241107T173933Z", "test.dsql.us-east-1.on.aws", 3600,
     "DbConnectAdmin", "46e02dfc8d6d07289b9e5910ccd9a50f1c3b798e48ccd92153255df508bd0b82"),
    ("ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", "20241107T173933Z", "test.dsql.us-east-1.on.aws",
     900, "DbConnect", "57fe03e060348aaa21405c239bf02572bbc911076e94dcd65c12ae569dd8fcf4"),
    ("ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", "20241107T173933Z", "test.dsql.us-east-1.on.aws",
     900, "DbConnectAdmin", "5ac084bc7cabccc19a52a5d1b5c24b50d3ce143f43b659bd484c91aaf555e190"),
    ("akid", "secret", None, "20240827T000000Z", "peccy.dsql.us-east-1.on.aws", 450,
     "DbConnect", "f5f2ad764ca5df44045d4ab6ccecba0eef941b0007e5765885a0b6ed3702a3f8"),
    ("akid", "secret", None, "20240827T000000Z", "peccy.dsql.us-east-1.on.aws", 450,
     "DbConnectAdmin", "267cf8d04d84444f7a62d5bdb40c44bfc6cb13dd6c64fa7f772df6bbaa90fff1"),
    ("akid", "secret", "token", "20240827T000000Z", "peccy.dsql.us-east-1.on.aws", 450,
     "DbConnect", "9fdb9de7ca6822832943d5a4e1b02411d302a2b8204bd7e8193aa4875fbd5a58"),
    ("akid", "secret", "token", "20240827T000000Z", "peccy.dsql.us-east-1.on.aws", 450,
     "DbConnectAdmin", "dd5373133b347f82a6e8a710e5fbd367f5e1d84824dc148b96d5f45089cb47f0"),
]

FULL_TOKEN_A = (
    "test.dsql.us-east-1.on.aws/?Action=DbConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=access_key%2F20241107%2Fus-east-1%2Fdsql%2Faws4_request"
    "&X-Amz-Date=20241107T173933Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=e319d85380261f643d78a558f76257f05aacea758a6ccd42a2510e2ae0854a47")


def check_vectors():
    failures = 0
    for akid, secret, session, ts, host, expires, action, want in VECTORS:
        token = make_token(host, "us-east-1", action, expires, Credentials(akid, secret, session), ts)
        got = token.rsplit("X-Amz-Signature=", 1)[1]
        ok = got == want
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {host} {action} {expires}s"
              f"{' +session' if session else ''}: {got}")
    token = make_token("test.dsql.us-east-1.on.aws", "us-east-1", "DbConnect", 900,
                       Credentials("access_key", "secret_key"), "20241107T173933Z")
    ok = token == FULL_TOKEN_A
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} full token A byte for byte")
    print(f"botocore {botocore.__version__}: {len(VECTORS) + 1 - failures}/{len(VECTORS) + 1} match")
    return 0 if failures == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--region")
    ap.add_argument("--expires", type=int, default=900)
    ap.add_argument("--action", choices=["DbConnect", "DbConnectAdmin"])
    ap.add_argument("--date", help="sign at this UTC time, YYYYMMDDTHHMMSSZ")
    ap.add_argument("--access-key-id")
    ap.add_argument("--secret-access-key")
    ap.add_argument("--session-token")
    ap.add_argument("--check-vectors", action="store_true")
    args = ap.parse_args()

    if args.check_vectors:
        return check_vectors()
    if not args.host:
        ap.error("--host is required")
    region = args.region
    if not region:
        m = REGION_RE.search(args.host)
        if not m:
            ap.error(f"cannot read a region from {args.host!r}; give --region")
        region = m.group(1)
    if not 1 <= args.expires <= 604800:
        ap.error("--expires must be in 1..604800")
    if args.date:
        datetime.datetime.strptime(args.date, SIGV4_TIMESTAMP)  # validate

    def pick(option, name):
        return (option or os.environ.get(f"PQXXPOOL_DSQL_TEST_{name}")
                or os.environ.get(f"AWS_{name}") or None)

    akid = pick(args.access_key_id, "ACCESS_KEY_ID")
    secret = pick(args.secret_access_key, "SECRET_ACCESS_KEY")
    session = pick(args.session_token, "SESSION_TOKEN")
    if not akid or not secret:
        ap.error("no credentials (see --help)")
    action = args.action or ("DbConnectAdmin" if args.user == "admin" else "DbConnect")
    print(make_token(args.host.lower(), region, action, args.expires,
                     Credentials(akid, secret, session), args.date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
