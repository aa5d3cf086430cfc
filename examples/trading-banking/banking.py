"""Banking: accounts and their balances; Trading debits them.

    python3 banking.py --listen 127.0.0.1:8002

    POST /accounts/ID/debit  {"amount": 125.0, "order": "..."}  (idempotency-key: ORDER)
      -> 200 {"account": ID, "debited": 125.0, "balance": 875.0, "caller": ..., "trace_id": ...}
      -> 409 when the balance is short
    GET /accounts/ID  -> 200 {"account": ID, "balance": ...}

An unchanged app: it does no TLS and checks no certificate. Its sidecar proved the
caller's identity over mutual TLS, let only Trading through, and names the caller in
`x-forwarded-client-cert` (`By=<banking's ID>;URI=<the caller's ID>`), which Banking
echoes as `caller`. A debit whose idempotency key was seen gets the first answer again,
so a retried debit is never taken twice. Python's standard library only.
"""
import argparse
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPENING_BALANCE = 1000.0
DEBIT = re.compile(r"^/accounts/([A-Za-z0-9_-]{1,64})/debit$")
ACCOUNT = re.compile(r"^/accounts/([A-Za-z0-9_-]{1,64})$")


def trace_id(traceparent):
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.balances = {}
        self.seen = {}  # idempotency key -> (status, answer)

    def debit(self, account, amount, key):
        with self.lock:
            if key and key in self.seen:
                return self.seen[key]
            balance = self.balances.get(account, OPENING_BALANCE)
            if amount <= 0 or amount > balance:
                result = (409, {"account": account, "error": "insufficient funds", "balance": balance})
            else:
                self.balances[account] = balance - amount
                result = (200, {"account": account, "debited": amount, "balance": balance - amount})
            if key:
                self.seen[key] = result
            return result


LEDGER = Ledger()


class Banking(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a head and a body in two writes must not wait 40 ms

    def reply(self, status, body):
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            return self.reply(200, {"ok": True})
        m = ACCOUNT.match(self.path)
        if not m:
            return self.reply(404, {"error": f"no such path {self.path}"})
        with LEDGER.lock:
            balance = LEDGER.balances.get(m[1], OPENING_BALANCE)
        self.reply(200, {"account": m[1], "balance": balance})

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        m = DEBIT.match(self.path)
        if not m:
            return self.reply(404, {"error": f"no such path {self.path}"})
        try:
            amount = float(json.loads(body or b"{}")["amount"])
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": f"not a debit: {e}"})
        status, answer = LEDGER.debit(m[1], amount, self.headers.get("idempotency-key"))
        # Who called, as the sidecar proved it; and the trace this debit is part of.
        caller = self.headers.get("x-forwarded-client-cert")
        trace = trace_id(self.headers.get("traceparent"))
        print(f"banking: debit account={m[1]} amount={amount} -> {status} "
              f"caller={caller} trace={trace}", flush=True)
        self.reply(status, dict(answer, caller=caller, trace_id=trace))

    def log_message(self, fmt, *args):
        pass  # one line per debit, above


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:8002")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Banking)
    print(f"banking listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
