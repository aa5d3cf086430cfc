"""A minimal OpenTelemetry collector: receives spans over OTLP/gRPC and prints them.

    python3 collector.py --listen 127.0.0.1:4317 > spans.jsonl   # one JSON line per span
    python3 collector.py show TRACE_ID spans.jsonl               # one trace, hop by hop

It serves `opentelemetry.proto.collector.trace.v1.TraceService/Export` with grpcio
(Debian's python3-grpcio) and reads the request from the protobuf wire format itself,
only the fields it prints, so it needs no generated code. Any OTLP collector (the
OpenTelemetry Collector, Jaeger, Tempo) takes the same spans on the same port.
"""
import argparse
import json
import sys
import threading

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf):
    """(field number, value) of a protobuf message: ints for varints and fixed
    numbers, bytes for length-delimited fields."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = bytes(buf[i:i + n]), i + n
        elif wire == 5:
            value, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"wire type {wire} of field {number}")
        yield number, value


def any_value(buf):
    """An AnyValue: string (1), bool (2), int (3) or double (4, printed as hex)."""
    for number, value in fields(buf):
        if number == 1:
            return value.decode(errors="replace")
        if number in (2, 3):
            return value
        return repr(value)
    return None


def attributes(kvs):
    out = {}
    for kv in kvs:
        key = value = None
        for number, v in fields(kv):
            if number == 1:
                key = v.decode(errors="replace")
            elif number == 2:
                value = any_value(v)
        out[key] = value
    return out


def span(buf, service):
    s = {"service": service, "trace_id": "", "span_id": "", "parent_span_id": "",
         "name": "", "kind": "unspecified", "start_ns": 0, "end_ns": 0, "status": "unset"}
    kvs = []
    for number, v in fields(buf):
        if number == 1:
            s["trace_id"] = v.hex()
        elif number == 2:
            s["span_id"] = v.hex()
        elif number == 4:
            s["parent_span_id"] = v.hex()
        elif number == 5:
            s["name"] = v.decode(errors="replace")
        elif number == 6:
            s["kind"] = KINDS.get(v, str(v))
        elif number == 7:
            s["start_ns"] = v
        elif number == 8:
            s["end_ns"] = v
        elif number == 9:
            kvs.append(v)
        elif number == 15:
            s["status"] = STATUS.get(dict(fields(v)).get(3, 0), "unset")
    s["attributes"] = attributes(kvs)
    return s


def spans(request):
    """Every span of an ExportTraceServiceRequest, with its resource's service.name."""
    for number, rs in fields(request):
        if number != 1:
            continue
        service, scopes = "", []
        for n, v in fields(rs):
            if n == 1:
                service = attributes(v2 for k, v2 in fields(v) if k == 1).get("service.name", "")
            elif n == 2:
                scopes.append(v)
        for scope in scopes:
            for n, v in fields(scope):
                if n == 2:
                    yield span(v, service)


def serve(listen):
    import grpc
    from concurrent import futures

    lock = threading.Lock()

    def export(request, context):
        try:
            got = list(spans(request))
        except (ValueError, IndexError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP export: {e}")
        with lock:
            for s in got:
                print(json.dumps(s), flush=True)
        return b""  # an empty ExportTraceServiceResponse: every span accepted

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(listen)
    if port == 0:
        sys.exit(f"collector: cannot listen on {listen}")
    host = listen.rsplit(":", 1)[0]
    print(f"collector listening on {host}:{port}", file=sys.stderr, flush=True)
    server.start()
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)


def show(trace, path):
    """Print the spans of one trace as a tree: each hop under the one that called it."""
    with open(path) as f:
        lines = (json.loads(line) for line in f if line.startswith("{"))
        found = [s for s in lines if s.get("trace_id") == trace]
    if not found:
        sys.exit(f"no span of trace {trace} in {path}")
    print(f"trace {trace}: {len(found)} spans")
    ids = {s["span_id"] for s in found}
    children = {}
    for s in sorted(found, key=lambda s: s["start_ns"]):
        parent = s["parent_span_id"] if s["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(s)

    def walk(parent, depth):
        for s in children.get(parent, []):
            a = s["attributes"]
            ms = (s["end_ns"] - s["start_ns"]) / 1e6
            print(f"  {'  ' * depth}{s['service']:<8} {s['kind']:<6} {s['name']:<14} "
                  f"{a.get('http.response.status_code', '-'):>3} {ms:7.2f} ms  "
                  f"by {a.get('weft.responder', '-')}, span {s['span_id']}")
            walk(s["span_id"], depth + 1)

    walk(None, 0)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "show":
        return show(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:4317")
    serve(p.parse_args().listen)


if __name__ == "__main__":
    main()
