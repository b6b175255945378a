#!/usr/bin/env python3
"""Cross-check a DSQL or RDS IAM token made by pqxxpool against botocore (developer tool, not run by CI).

Usage:
    AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [AWS_SESSION_TOKEN=...] \\
        python3 scripts/check_token_with_botocore.py TOKEN

Re-signs the token's own parameters with botocore's SigV4QueryAuth at the token's X-Amz-Date and,
for a DSQL token when this botocore has it, also calls botocore's
generate_db_connect[_admin]_auth_token at that time; each result must equal TOKEN byte for byte
(parameter order included). Needs botocore (Debian: python3-botocore). Exit 0 when all match.
"""

import datetime
import os
import sys
from unittest import mock
from urllib.parse import parse_qsl, unquote

import botocore.auth
import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    token = sys.argv[1].strip()
    host, _, query = token.partition("/?")
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    params = dict(pairs)
    auth_start = next(i for i, (k, _) in enumerate(pairs) if k.startswith("X-Amz-"))
    operation = dict(pairs[:auth_start])
    akid, date, region, service, _ = unquote(params["X-Amz-Credential"]).split("/")
    when = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    expires = int(params["X-Amz-Expires"])
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"],
                        os.environ.get("AWS_SESSION_TOKEN") or None)
    if creds.access_key != akid:
        print(f"X-Amz-Credential names access key {akid!r}, not the one in the environment", file=sys.stderr)
        return 1

    if hasattr(botocore.auth, "get_current_datetime"):
        clock = mock.patch.object(botocore.auth, "get_current_datetime", return_value=when)
    else:  # older botocore (Debian 12's 1.29) calls datetime.datetime.utcnow()
        fake = mock.Mock(wraps=datetime)
        fake.datetime = mock.Mock(wraps=datetime.datetime)
        fake.datetime.utcnow.return_value = when
        clock = mock.patch.object(botocore.auth, "datetime", fake)

    results = {}
    with clock:
        request = AWSRequest(method="GET", url=f"https://{host}/", params=operation)
        botocore.auth.SigV4QueryAuth(creds, service, region, expires=expires).add_auth(request)
        results["SigV4QueryAuth re-sign"] = request.prepare().url.removeprefix("https://")

        session = botocore.session.get_session()
        if service == "dsql" and "dsql" in session.get_available_services():  # botocore ≥ 1.35.x
            client = session.create_client(
                "dsql", region_name=region, aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key, aws_session_token=creds.token)
            admin = operation.get("Action") == "DbConnectAdmin"
            name = "generate_db_connect_admin_auth_token" if admin else "generate_db_connect_auth_token"
            if hasattr(client, name):
                results[f"botocore {name}"] = getattr(client, name)(Hostname=host, Region=region, ExpiresIn=expires)

    ok = True
    for what, expected in results.items():
        same = expected == token
        ok = ok and same
        print(f"{'match' if same else 'MISMATCH'}: {what}")
        if not same:
            print(f"  botocore: {expected}\n  pqxxpool: {token}")
    print(f"botocore {botocore.__version__}, signature {params['X-Amz-Signature']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
