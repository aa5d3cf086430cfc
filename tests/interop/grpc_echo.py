"""gRPC through Weft with Python's grpcio, a client and server Weft did not write.

    python3 grpc_echo.py server        # serve on 127.0.0.1, print the port, run until stdin closes
    python3 grpc_echo.py client ADDR   # call every method through ADDR; exit 0 when all pass

Messages are raw bytes (no protobuf), through grpcio's generic handlers.
"""
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "demo.Echo"


def say(request, context):
    # Echo, with metadata both ways.
    peer_meta = dict(context.invocation_metadata())
    context.send_initial_metadata((("x-initial", "hello"),))
    context.set_trailing_metadata((("x-trailer", "bye"), ("x-seen", peer_meta.get("x-token", "none"))))
    return b"echo:" + request


def count(request, context):
    n = int(request.decode())
    for i in range(n):
        yield str(i).encode()


def chat(request_iterator, context):
    for message in request_iterator:
        yield b"re:" + message


def slow(request, context):
    # Longer than the client's deadline.
    threading.Event().wait(5)
    return b"late"


FLAKY = {}
FLAKY_LOCK = threading.Lock()


def flaky(request, context):
    # UNAVAILABLE the first time for each key, in the trailers, then an answer.
    key = request.decode()
    with FLAKY_LOCK:
        FLAKY[key] = FLAKY.get(key, 0) + 1
        seen = FLAKY[key]
    if seen == 1:
        # Headers first, so the status comes in trailers of their own.
        context.send_initial_metadata((("x-warming", "1"),))
        context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
    return f"ok after {seen}".encode()


def server():
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Count": grpc.unary_stream_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Flaky": grpc.unary_unary_rpc_method_handler(flaky),
    }
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = s.add_insecure_port("127.0.0.1:0")
    s.start()
    print(port, flush=True)
    sys.stdin.read()  # until the test closes our stdin
    s.stop(0)


def check(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got!r}, want {want!r}")


def client(addr):
    with grpc.insecure_channel(addr) as ch:
        unary = ch.unary_unary(f"/{SERVICE}/Say")
        reply, call = unary.with_call(b"hi", metadata=(("x-token", "t1"),), timeout=10)
        check("unary reply", reply, b"echo:hi")
        check("initial metadata", dict(call.initial_metadata()).get("x-initial"), "hello")
        trailers = dict(call.trailing_metadata())
        check("trailing metadata", trailers.get("x-trailer"), "bye")
        check("metadata reached the server", trailers.get("x-seen"), "t1")

        stream = ch.unary_stream(f"/{SERVICE}/Count")
        check("server streaming", list(stream(b"5", timeout=10)), [b"0", b"1", b"2", b"3", b"4"])

        bidi = ch.stream_stream(f"/{SERVICE}/Chat")
        check("bidi", list(bidi(iter([b"a", b"b", b"c"]), timeout=10)), [b"re:a", b"re:b", b"re:c"])

        try:
            ch.unary_unary(f"/{SERVICE}/Slow")(b"x", timeout=0.3)
            raise SystemExit("deadline: the slow call returned")
        except grpc.RpcError as e:
            check("deadline", e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

        # Cancellation: a streaming call cancelled early ends as CANCELLED.
        call = stream(b"1000000", timeout=10)
        next(call)
        call.cancel()
        check("cancelled", call.code(), grpc.StatusCode.CANCELLED)

        # UNAVAILABLE in the trailers, retried by Weft's retry filter: the client sees OK.
        reply = ch.unary_unary(f"/{SERVICE}/Flaky")(b"k1", timeout=10)
        check("retried UNAVAILABLE", reply, b"ok after 2")
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server()
    else:
        client(sys.argv[2])
