"""A pod's application calling another by plain HTTP, as nobody (not the sidecar's
uid): `client.py HOST PORT PATH` prints one JSON line, the response's status,
headers and body, or the error."""

import http.client
import json
import os
import sys

os.setgroups([])
os.setgid(65534)
os.setuid(65534)
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    print(
        json.dumps(
            {
                "status": resp.status,
                "headers": {k.lower(): v for k, v in resp.getheaders()},
                "body": resp.read().decode("utf-8", "replace"),
            }
        )
    )
except Exception as e:  # the test reads what went wrong
    print(json.dumps({"error": repr(e)}))
