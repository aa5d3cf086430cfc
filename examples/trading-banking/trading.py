"""Trading: takes orders; a BUY debits the buyer's account at Banking.

    python3 trading.py --listen 127.0.0.1:8001 [--banking http://banking]

    POST /orders  {"account": "42", "side": "BUY", "symbol": "WEFT", "quantity": 10, "price": 12.5}
      -> 201 {"order": ID, "status": "filled", "trace_id": ..., "debit": <Banking's answer>}
    GET /healthz  -> 200

An unchanged app: it names Banking by its service name (http://banking) and knows
nothing of TLS or identities. Its sidecar is its HTTP proxy (`http_proxy=`, which
urllib and most HTTP clients honour), so the call arrives at the sidecar's outbound
listener with the authority `banking`. Like any instrumented app it passes on the
trace context it was given (traceparent, tracestate), so one trace follows an order.
Python's standard library only.
"""
import argparse
import json
import sys
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TRACE_HEADERS = ("traceparent", "tracestate")


def trace_id(traceparent):
    """The trace id of a W3C traceparent (00-TRACE-SPAN-FLAGS), or None."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


class Trading(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive with the sidecar
    disable_nagle_algorithm = True  # a head and a body in two writes must not wait 40 ms
    banking = "http://banking"

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
        self.reply(404, {"error": f"no such path {self.path}"})

    def do_POST(self):
        if self.path != "/orders":
            return self.reply(404, {"error": f"no such path {self.path}"})
        length = int(self.headers.get("content-length") or 0)
        try:
            order = json.loads(self.rfile.read(length) or b"{}")
            account, side = str(order["account"]), order["side"].upper()
            amount = float(order["quantity"]) * float(order["price"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return self.reply(400, {"error": f"not an order: {e}"})
        order_id = uuid.uuid4().hex[:12]
        trace = trace_id(self.headers.get("traceparent"))
        answer = {"order": order_id, "side": side, "status": "filled", "trace_id": trace}
        if side == "BUY":
            status, debit = self.debit(account, amount, order_id)
            if status != 200:
                answer.update(status="rejected", debit=debit)
                return self.reply(502 if status >= 500 else status, answer)
            answer["debit"] = debit
        self.reply(201, answer)

    def debit(self, account, amount, order_id):
        """Ask Banking to debit `amount`; its status and JSON answer."""
        headers = {"content-type": "application/json", "idempotency-key": order_id}
        # Propagate the trace context, as an instrumented app does.
        for name in TRACE_HEADERS:
            if self.headers.get(name):
                headers[name] = self.headers[name]
        body = json.dumps({"amount": amount, "order": order_id}).encode()
        request = urllib.request.Request(
            f"{self.banking}/accounts/{account}/debit", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"error": text.strip()}
        except OSError as e:
            return 503, {"error": f"banking unreachable: {e}"}

    def log_message(self, fmt, *args):
        print(f"trading: {self.command} {self.path} {args[1] if len(args) > 1 else ''} "
              f"trace={trace_id(self.headers.get('traceparent'))}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:8001")
    p.add_argument("--banking", default="http://banking", help="Banking's URL, by service name")
    args = p.parse_args()
    host, port = args.listen.rsplit(":", 1)
    Trading.banking = args.banking.rstrip("/")
    server = ThreadingHTTPServer((host, int(port)), Trading)
    print(f"trading listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
