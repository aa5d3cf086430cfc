"""A gRPC greeter, server and client, with Python's grpcio (Debian's python3-grpcio).

    python3 greeter.py server --listen 127.0.0.1:50051 [--unavailable-every 2]
    python3 greeter.py client --target 127.0.0.1:15151 --authority greeter [--count 5]

`weft.example.Greeter/SayHello` takes {"name": ...} and answers {"message": ...,
"caller": ...}; messages are JSON through grpcio's generic handlers, so no stubs are
generated (the wire is gRPC all the same: framing, HTTP/2, status in trailers). The
server answers UNAVAILABLE to every `--unavailable-every`th call, as a server that
sheds load does; the client's sidecar retries those, so the client sees none. The
server echoes who called as its sidecar proved it (`x-forwarded-client-cert`).

The client knows its sidecar as the channel's target and names the service in the
authority, as a client of a sidecar without traffic capture does.
"""
import argparse
import json
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "weft.example.Greeter"
METHOD = f"/{SERVICE}/SayHello"


def encode(message):
    return json.dumps(message).encode()


def decode(data):
    return json.loads(data)


def serve(listen, unavailable_every):
    lock = threading.Lock()
    calls = [0]

    def say_hello(request, context):
        with lock:
            calls[0] += 1
            n = calls[0]
        metadata = dict(context.invocation_metadata())
        if unavailable_every and n % unavailable_every == 1 % unavailable_every:
            print(f"greeter: call {n}: UNAVAILABLE (shedding load)", flush=True)
            context.abort(grpc.StatusCode.UNAVAILABLE, "shedding load, try again")
        caller = metadata.get("x-forwarded-client-cert")
        print(f"greeter: call {n}: hello {request.get('name')} (caller {caller})", flush=True)
        return {"message": f"hello, {request.get('name', 'stranger')}", "caller": caller, "call": n}

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "SayHello": grpc.unary_unary_rpc_method_handler(
            say_hello, request_deserializer=decode, response_serializer=encode),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        sys.exit(f"greeter: cannot listen on {listen}")
    server.start()
    print(f"greeter listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)


def call(target, authority, count):
    options = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel(target, options=options) as channel:
        say_hello = channel.unary_unary(
            METHOD, request_serializer=encode, response_deserializer=decode)
        for i in range(count):
            try:
                reply = say_hello({"name": f"weft-{i}"}, timeout=10)
            except grpc.RpcError as e:
                sys.exit(f"call {i}: {e.code().name}: {e.details()}")
            print(json.dumps(reply), flush=True)
    print("ok", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("server")
    s.add_argument("--listen", default="127.0.0.1:50051")
    s.add_argument("--unavailable-every", type=int, default=2,
                   help="answer UNAVAILABLE to every Nth call (0: never)")
    c = sub.add_parser("client")
    c.add_argument("--target", default="127.0.0.1:15151", help="the client's sidecar")
    c.add_argument("--authority", default="greeter", help="the service, by name")
    c.add_argument("--count", type=int, default=5)
    args = p.parse_args()
    if args.command == "server":
        serve(args.listen, args.unavailable_every)
    else:
        call(args.target, args.authority, args.count)


if __name__ == "__main__":
    main()
