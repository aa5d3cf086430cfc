#!/usr/bin/env python3
"""What mutual TLS between two Weft sidecars costs against clear text, beside nginx
doing the same, and what `builtin:encryption-policy` adds; on loopback, interleaved
over rounds, pinned as compare.py pins: the client on CPU 0, the proxies and the
backend on CPU 1, so the proxies' core is the bottleneck.

  handshake  new mutual-TLS connections per second, and the server's CPU per
             connection: `openssl s_time -new -www /` (a client this project did
             not write; BENCH_HS_CLIENTS of them at once, 2 by default) presents a
             workload certificate, completes a full handshake and one GET per
             connection, against a Weft mesh listener and against nginx with
             `ssl_verify_client on`, on the same certificates. The client's core
             may be the limit: the server's CPU per handshake is its cost either
             way, and 10⁶ over it the handshakes one core of it could complete.
  full       two sidecars on kept-alive connections, closed loop (wrk): wrk -> A's
             plain outbound listener -> clear text | mutual TLS -> B's mesh inbound
             listener -> the backend; both proxies' CPU per request. Beside them two
             nginx in the same shape (A `proxy_pass https://` with a client
             certificate, the server's verified; B `ssl_verify_client on`), the Weft
             pair speaking HTTP/2 between the sidecars, and the Weft pair with the
             encryption policy on B (strict, one allow rule naming A, the caller's
             identity forwarded).
  1000       the HTTP/1.1 pairs paced at 1,000 req/s over 10 connections (loadgen):
             p50, p99, what the two hops add over the backend alone, CPU per request.

Settings: BENCH_MTLS_MODES=handshake,full,1000 (the default: all three), BENCH_ROUNDS
(3), BENCH_SECONDS (5 here: a round has 13 measurements), BENCH_SECONDS_RATE (1.5 ×
BENCH_SECONDS), BENCH_CONNECTIONS, BENCH_RATE, BENCH_RATE_CONNECTIONS, BENCH_PATH as
in compare.py; BENCH_CERTS=openssl makes the certificates with openssl rather than
`weft certs`.
"""
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error

import compare as c
import micro_goals

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
# At 1,000 req/s the CPU figure counts clock ticks of 10 ms: a longer run, more ticks.
SECONDS_RATE = float(os.environ.get("BENCH_SECONDS_RATE", str(SECONDS * 1.5)))
# Long enough for wrk's connections, the pools between the sidecars and the filter's
# instances to be in place before the measured run.
WARM = 1
MODES = [m.strip() for m in os.environ.get("BENCH_MTLS_MODES", "handshake,full,1000").split(",")
         if m.strip()]
WEFT = os.path.join(c.REL, "weft")
TRUST = "bench.example"
A, B = "sidecar-a", "sidecar-b"
POLICY_FILTER = "policy"
# s_time makes one connection after another, so one alone leaves both cores waiting
# on each other half the time; two at once keep the client's core busy.
HS_CLIENTS = int(os.environ.get("BENCH_HS_CLIENTS", "2"))

for mode in MODES:
    if mode not in ("handshake", "full", "1000"):
        raise SystemExit(f"BENCH_MTLS_MODES: unknown mode {mode!r} (handshake, full, 1000)")

# The rows. Each runs in the modes it names.
HS_WEFT, HS_NGINX = "weft (mesh listener)", "nginx (ssl_verify_client on)"
DIRECT = "backend alone"
W_PLAIN, W_MTLS = "weft → weft, clear text", "weft → weft, mTLS"
W_H2, W_POLICY = "weft → weft, mTLS, HTTP/2 between", "weft → weft, mTLS + encryption-policy on B"
N_PLAIN, N_MTLS = "nginx → nginx, clear text", "nginx → nginx, mTLS"
RUNS = {
    "handshake": [HS_WEFT, HS_NGINX],
    "full": [W_PLAIN, W_MTLS, W_H2, W_POLICY, N_PLAIN, N_MTLS],
    "1000": [DIRECT, W_PLAIN, W_MTLS, N_PLAIN, N_MTLS],
}


def spiffe(name):
    return f"spiffe://{TRUST}/ns/default/sa/{name}"


def pem(d, name):
    """(certificate chain, key) of workload `name` in `d`."""
    return os.path.join(d, f"{name}.pem"), os.path.join(d, f"{name}-key.pem")


def make_certs(d):
    """A CA, both workloads' certificates (their SPIFFE ID, and localhost for nginx,
    which checks a server by name) and bundle.pem in `d`; says what made them."""
    if os.environ.get("BENCH_CERTS") != "openssl":
        r = subprocess.run([WEFT, "certs", "--out", d, "--trust-domain", TRUST, "--workload", A,
                            "--workload", B, "--dns", "localhost,127.0.0.1"],
                           capture_output=True, text=True)
        files = [*pem(d, A), *pem(d, B), os.path.join(d, "bundle.pem")]
        if r.returncode == 0 and all(os.path.exists(f) for f in files):
            return "weft certs"
        why = (r.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"note: `weft certs` did not make them ({why}); openssl does", file=sys.stderr)
    openssl_certs(d)
    return "openssl"


def openssl_certs(d):
    """The same with openssl: ECDSA P-256, as `weft certs` makes them."""
    os.makedirs(d, mode=0o700, exist_ok=True)

    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca-key.pem")
    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    ossl("genpkey", *ec, "-out", ca_key)
    ext = os.path.join(d, "ca.ext")
    open(ext, "w").write("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                         "subjectKeyIdentifier=hash\n")
    csr = os.path.join(d, "ca.csr")
    ossl("req", "-new", "-key", ca_key, "-subj", "/CN=Weft bench CA", "-out", csr)
    ossl("x509", "-req", "-in", csr, "-signkey", ca_key, "-days", "2", "-sha256",
         "-extfile", ext, "-out", ca)
    for name in (A, B):
        cert, key = pem(d, name)
        ossl("genpkey", *ec, "-out", key)
        ossl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        open(ext, "w").write(f"subjectAltName=URI:{spiffe(name)},DNS:localhost,IP:127.0.0.1\n"
                             "extendedKeyUsage=serverAuth,clientAuth\n"
                             "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"
                             "authorityKeyIdentifier=keyid\n")
        ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", ext, "-out", cert)
    shutil.copy(ca, os.path.join(d, "bundle.pem"))


class Setup:
    """What one row measures: the address requests enter at and the proxies whose CPU
    counts (compare.Target each: Weft started afresh per measurement, nginx running
    throughout). The last proxy is B, whose `/filters` the policy row reads."""

    def __init__(self, name, front, members):
        self.name, self.front, self.members = name, front, members

    def up(self, cache):
        # B first: A's first request finds it listening.
        for t in reversed(self.members):
            t.up(cache)

    def down(self):
        for t in self.members:
            t.down()

    def ticks(self):
        return [c.cpu_ticks(c.tree(t.proc.pid)) for t in self.members]

    def hooks(self):
        return self.members[-1].hooks() if self.members else {}


def identity_yaml(d, name):
    cert, key = pem(d, name)
    return f"identity:\n  cert: {cert}\n  key: {key}\n  bundle: {os.path.join(d, 'bundle.pem')}\n"


def weft_b(tmp, d, row, backend, policy):
    """Sidecar B: a mesh inbound listener (mutual TLS and clear text on one port) in
    front of the backend; with the encryption policy when `policy`."""
    port, admin = c.free_port(), f"127.0.0.1:{c.free_port()}"
    filters = f"""    filters:
      - name: {POLICY_FILTER}
        module: builtin:encryption-policy
        config:
          mode: strict
          rules:
            - action: allow
              principals: ["{spiffe(A)}"]
          forward_identity: {{ header: x-forwarded-client-cert }}
""" if policy else ""
    path = os.path.join(tmp, re.sub(r"\W+", "-", row) + "-b.yaml")
    open(path, "w").write(f"""admin:
  address: {admin}
{identity_yaml(d, B)}listeners:
  - name: inbound
    address: 127.0.0.1:{port}
    default_cluster: app
    tls: {{ mode: mesh }}
{filters}clusters:
  - name: app
    endpoints: ["{backend}"]
""")
    return c.Target(row + " (B)", f"127.0.0.1:{port}", binary=WEFT, config=path, admin=admin)


def weft_a(tmp, d, row, b_addr, tls, protocol="http1"):
    """Sidecar A: a plain outbound listener whose cluster is B, in clear text or in
    mutual TLS (A's certificate presented, B's SPIFFE ID verified)."""
    port, admin = c.free_port(), f"127.0.0.1:{c.free_port()}"
    tls_yaml = f'    tls: {{ mode: mesh, identity: "{spiffe(B)}" }}\n' if tls else ""
    path = os.path.join(tmp, re.sub(r"\W+", "-", row) + "-a.yaml")
    open(path, "w").write(f"""admin:
  address: {admin}
{identity_yaml(d, A)}listeners:
  - name: outbound
    address: 127.0.0.1:{port}
    default_cluster: b
clusters:
  - name: b
    endpoints: ["{b_addr}"]
    protocol: {protocol}
{tls_yaml}""")
    return c.Target(row + " (A)", f"127.0.0.1:{port}", binary=WEFT, config=path, admin=admin)


def weft_pair(tmp, d, row, backend, tls, protocol="http1", policy=False):
    b = weft_b(tmp, d, row, backend, policy)
    a = weft_a(tmp, d, row, b.addr, tls, protocol)
    return Setup(row, a.addr, [a, b])


NGINX_HTTP = """worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}-t/body; proxy_temp_path {tmp}/{name}-t/proxy;
  fastcgi_temp_path {tmp}/{name}-t/fastcgi; uwsgi_temp_path {tmp}/{name}-t/uwsgi;
  scgi_temp_path {tmp}/{name}-t/scgi;
  # Kept-alive connections are what is measured: no closing after 1,000 requests
  # (nginx's default), as Weft does not close them either.
  keepalive_requests 1000000;
  # TLS 1.3, as Weft speaks it: nginx 1.22 leaves it out of its defaults.
  ssl_protocols TLSv1.2 TLSv1.3; proxy_ssl_protocols TLSv1.2 TLSv1.3;
{body}}}
"""
KEEPALIVE = "keepalive 64; keepalive_requests 1000000;"
PROXY_HTTP11 = 'proxy_http_version 1.1; proxy_set_header Connection "";'


def nginx(tmp, name, body):
    os.makedirs(os.path.join(tmp, f"{name}-t"), exist_ok=True)
    conf = os.path.join(tmp, f"{name}.conf")
    open(conf, "w").write(NGINX_HTTP.format(tmp=tmp, name=name, body=body))
    return c.start(["nginx", "-c", conf], 1, stderr=subprocess.DEVNULL)


def nginx_pair(tmp, d, backend):
    """Two nginx, one worker each: B terminates mutual TLS (`ssl_verify_client on`)
    on one port and clear text on another; A sends to either over kept-alive
    upstream connections, to the TLS port with A's certificate, B's verified by the
    CA and the name localhost (nginx cannot check a SPIFFE ID). Returns the setups
    (clear text, mTLS) and B's TLS address for the handshake rows."""
    b_tls, b_plain, a_tls, a_plain = (c.free_port() for _ in range(4))
    (b_cert, b_key), (a_cert, a_key) = pem(d, B), pem(d, A)
    bundle = os.path.join(d, "bundle.pem")
    location = f"location / {{ proxy_pass http://app; {PROXY_HTTP11} }}"
    b = nginx(tmp, "nginx-b", f"""  upstream app {{ server {backend}; {KEEPALIVE} }}
  server {{
    listen 127.0.0.1:{b_tls} ssl;
    ssl_certificate {b_cert}; ssl_certificate_key {b_key};
    ssl_client_certificate {bundle}; ssl_verify_client on;
    {location}
  }}
  server {{ listen 127.0.0.1:{b_plain}; {location} }}
""")
    a = nginx(tmp, "nginx-a", f"""  upstream b_plain {{ server 127.0.0.1:{b_plain}; {KEEPALIVE} }}
  upstream b_tls {{ server 127.0.0.1:{b_tls}; {KEEPALIVE} }}
  server {{ listen 127.0.0.1:{a_plain}; location / {{ proxy_pass http://b_plain; {PROXY_HTTP11} }} }}
  server {{
    listen 127.0.0.1:{a_tls};
    location / {{
      proxy_pass https://b_tls; {PROXY_HTTP11}
      proxy_ssl_certificate {a_cert}; proxy_ssl_certificate_key {a_key};
      proxy_ssl_trusted_certificate {bundle}; proxy_ssl_verify on; proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }}
  }}
""")
    ta, tb = c.Target("nginx A", "", a), c.Target("nginx B", "", b)
    for port in (b_tls, b_plain, a_tls, a_plain):
        c.wait_port(port)
    return (Setup(N_PLAIN, f"127.0.0.1:{a_plain}", [ta, tb]),
            Setup(N_MTLS, f"127.0.0.1:{a_tls}", [ta, tb]),
            Setup(HS_NGINX, f"127.0.0.1:{b_tls}", [tb]))


def s_time(addr, seconds, d):
    """Run HS_CLIENTS `openssl s_time -new` at once on CPU 0: (connections, bytes read
    per connection, the clients' CPU seconds)."""
    cert, key = pem(d, A)
    cmd = ["taskset", "-c", "0", "openssl", "s_time", "-connect", addr, "-new", "-www", "/",
           "-time", str(seconds), "-cert", cert, "-key", key, "-CAfile", os.path.join(d, "bundle.pem")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(HS_CLIENTS)]
    outs = [(p.communicate(), p.returncode) for p in runs]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    conns = per = 0
    for (out, err), rc in outs:
        found = re.search(r"(\d+) connections in [\d.]+s", out)
        read = re.search(r"(\d+) bytes read per connection", out)
        if rc != 0 or not found:
            raise SystemExit(f"openssl s_time {addr} failed: {out[-300:]} {err[-300:]}")
        conns += int(found.group(1))
        per = max(per, int(read.group(1)) if read else 0)
    client = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return conns, per, client


def measure_handshake(s, cache, d):
    s.up(cache)
    try:
        s_time(s.front, WARM, d)
        c0, t0 = s.ticks(), time.monotonic()
        conns, per, client = s_time(s.front, max(1, round(SECONDS)), d)
        wall, c1 = time.monotonic() - t0, s.ticks()
        if not per:
            print(f"warning: {s.name}: s_time read no answer", file=sys.stderr)
        server = sum(b - a for a, b in zip(c0, c1)) / c.CLK
        return {"hs": conns / wall, "cpu": server * 1e6 / max(1, conns), "busy": server / wall,
                "client": client / wall}
    finally:
        s.down()


def per_request(s, c0, c1, reqs):
    """{cpu_a, cpu_b, cpu}: µs of CPU per request of each proxy and of both."""
    per = [(b - a) / c.CLK * 1e6 / reqs for a, b in zip(c0, c1)]
    if not per or not reqs:
        return {}
    out = {"cpu": sum(per), "cpu_a": per[0]}
    if len(per) > 1:
        out["cpu_b"] = per[1]
    return out


def measure_full(s, cache):
    url = f"http://{s.front}{c.PATH}"
    s.up(cache)
    try:
        c.wrk(url, WARM)
        c0 = s.ticks()
        reqs, rps = c.wrk(url, SECONDS)
        c1 = s.ticks()
        return {"rps": rps, "hooks": s.hooks(), **per_request(s, c0, c1, reqs)}
    finally:
        s.down()


def measure_paced(s, cache):
    url = f"http://{s.front}{c.PATH}"
    s.up(cache)
    try:
        c.loadgen(url, c.RATE, WARM, c.RATE_CONNS)
        c0 = s.ticks()
        r = c.loadgen(url, c.RATE, SECONDS_RATE, c.RATE_CONNS)
        c1 = s.ticks()
        if r["errors"]:
            print(f"warning: {s.name}: {r['errors']} errors at {c.RATE} req/s", file=sys.stderr)
        return {"p50": r["p50_us"], "p99": r["p99_us"], **per_request(s, c0, c1, r["requests"])}
    finally:
        s.down()


def status(addr, path):
    """The HTTP status of GET path at addr, or the error."""
    try:
        return c.get(addr, path)[0]
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return str(e)


def tls_facts(addr, d):
    """What `openssl s_client` agreed with the server at addr: version and suite."""
    cert, key = pem(d, A)
    r = subprocess.run(["openssl", "s_client", "-connect", addr, "-brief", "-cert", cert, "-key", key,
                        "-CAfile", os.path.join(d, "bundle.pem")],
                       input="", capture_output=True, text=True, timeout=30)
    version = re.search(r"Protocol version: (\S+)", r.stderr)
    suite = re.search(r"Ciphersuite: (\S+)", r.stderr)
    return f"{version.group(1)} {suite.group(1)}" if version and suite else "no handshake"


def check(setups, cache, d):
    """Each setup once before the rounds: its filters compiled into the cache (every
    measured start then loads them from it, as a restarted proxy does), a request
    through it answered, and the policy seen to refuse a caller without identity."""
    facts = {}
    for name, s in setups.items():
        s.up(cache)
        try:
            got = status(s.front, c.PATH) if name not in RUNS["handshake"] else tls_facts(s.front, d)
            if name in RUNS["handshake"]:
                facts[name] = got
            elif got != 200:
                raise SystemExit(f"{name}: GET {c.PATH} through it answered {got}")
            if name == W_POLICY:
                plain = status(s.members[-1].addr, c.PATH)
                if plain != 403:
                    raise SystemExit(f"{name}: B answered a clear-text request with {plain}, not 403")
        finally:
            s.down()
    return facts


def setups_for(tmp, d, backend):
    """Every row's setup, for the modes asked for."""
    n_plain, n_mtls, n_hs = nginx_pair(tmp, d, backend)
    hs_b = weft_b(tmp, d, HS_WEFT, backend, False)
    all_setups = {
        HS_WEFT: Setup(HS_WEFT, hs_b.addr, [hs_b]),
        HS_NGINX: n_hs,
        DIRECT: Setup(DIRECT, backend, []),
        W_PLAIN: weft_pair(tmp, d, W_PLAIN, backend, tls=False),
        W_MTLS: weft_pair(tmp, d, W_MTLS, backend, tls=True),
        W_H2: weft_pair(tmp, d, W_H2, backend, tls=True, protocol="auto"),
        W_POLICY: weft_pair(tmp, d, W_POLICY, backend, tls=True, policy=True),
        N_PLAIN: n_plain,
        N_MTLS: n_mtls,
    }
    wanted = {n for mode in MODES for n in RUNS[mode]}
    return {n: s for n, s in all_setups.items() if n in wanted}


def main(tmp):
    cache, d = os.path.join(tmp, "cache"), os.path.join(tmp, "certs")
    idle, load = c.idle_check(), open("/proc/loadavg").read().split()[0]
    made_by = make_certs(d)
    backend = c.start([os.path.join(c.REL, "bench-backend"), "127.0.0.1:0"], 1,
                      stdout=subprocess.PIPE, text=True)
    backend_addr = backend.stdout.readline().strip()
    setups = setups_for(tmp, d, backend_addr)
    facts = check(setups, cache, d)
    results = {m: {n: [] for n in RUNS[m]} for m in MODES}
    for rnd in range(ROUNDS):
        order = [(mode, n) for mode in MODES for n in RUNS[mode]]
        random.shuffle(order)
        for i, (mode, name) in enumerate(order):
            s = setups[name]
            if mode == "handshake":
                r = measure_handshake(s, cache, d)
                what = f"{r['hs']:.0f} handshakes/s, server {r['cpu']:.0f} µs each"
            elif mode == "full":
                r = measure_full(s, cache)
                what = f"{r['rps']:.0f} req/s, {r.get('cpu', 0):.1f} µs/req"
            else:
                r = measure_paced(s, cache)
                what = f"p50 {r['p50']} µs p99 {r['p99']} µs"
            results[mode][name].append(r)
            print(f"round {rnd + 1}/{ROUNDS} ({i + 1}/{len(order)}): {mode}: {name}: {what}",
                  file=sys.stderr)
    report(results, facts, made_by, idle, load)


def col(results, mode, name, key):
    return c.col(results.get(mode, {}).get(name, []), key)


def median(results, mode, name, key):
    return c.med(col(results, mode, name, key))


def diff(x, y):
    return None if x is None or y is None else x - y


def report(results, facts, made_by, idle, load):
    print(f"\n{ROUNDS} rounds, interleaved; clients on CPU 0, the proxies and the backend on "
          f"CPU 1; requests to {c.PATH}; certificates (ECDSA P-256) by {made_by}; machine "
          f"{idle:.0%} busy before start, load average {load}; {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    if "handshake" in results:
        report_handshakes(results, facts)
    if "full" in results:
        report_full(results)
    if "1000" in results:
        report_paced(results)
    if "full" in results or "1000" in results:
        report_cost(results)
    if "full" in results:
        report_policy(results)


def report_handshakes(results, facts):
    print(f"\n### Handshakes: {HS_CLIENTS} × `openssl s_time -new -www /` with a client "
          f"certificate, {max(1, round(SECONDS))} s after a {WARM} s warm-up\n")
    print("| server | handshakes/s | server CPU µs per handshake | per server core (10⁶ ÷ CPU µs) | "
          "server core busy | client core busy | agreed |")
    print("|---|---|---|---|---|---|---|")
    for name in RUNS["handshake"]:
        runs = results["handshake"][name]
        busy = [100 * v for v in c.col(runs, "busy")]
        client = [100 * v for v in c.col(runs, "client")]
        core = [1e6 / v for v in c.col(runs, "cpu") if v]
        print(f"| {name} | {c.fmt(c.col(runs, 'hs'), '.0f')} | {c.fmt(c.col(runs, 'cpu'), '.0f')} | "
              f"{c.fmt(core, '.0f')} | {c.fmt(busy, '.0f')} % | {c.fmt(client, '.0f')} % | "
              f"{facts.get(name, '-')} |")


def nginx_row(name):
    """The nginx pair a row is held against: the one of its transport."""
    return N_PLAIN if name in (W_PLAIN, N_PLAIN) else N_MTLS


def report_full(results):
    full = results["full"]
    print(f"\n### Two sidecars, full rate: wrk -t{c.WRK_THREADS} -c{c.CONNS} → A → B → backend, "
          f"{SECONDS:g} s after a {WARM} s warm-up\n")
    print("| pair | req/s | A CPU µs/req | B CPU µs/req | both µs/req | both ÷ nginx pair's |")
    print("|---|---|---|---|---|---|")
    for name in RUNS["full"]:
        runs = full[name]
        both, ng = c.med(c.col(runs, "cpu")), median(results, "full", nginx_row(name), "cpu")
        ratio = both / ng if both is not None and ng else None
        print(f"| {name} | {c.fmt(c.col(runs, 'rps'), '.0f')} | {c.fmt(c.col(runs, 'cpu_a'), '.1f')} | "
              f"{c.fmt(c.col(runs, 'cpu_b'), '.1f')} | {c.fmt(c.col(runs, 'cpu'), '.1f')} | "
              f"{c.num(ratio, '.2f')} |")


def report_paced(results):
    paced = results["1000"]
    d50, d99 = median(results, "1000", DIRECT, "p50"), median(results, "1000", DIRECT, "p99")
    print(f"\n### Two sidecars, {c.RATE:,} req/s: open loop over {c.RATE_CONNS} connections "
          f"(loadgen), {SECONDS_RATE:g} s after a {WARM} s warm-up\n")
    print("| pair | p50 µs | p99 µs | p50 added µs | p99 added µs | both CPU µs/req | "
          "vCPU per 1,000 req/s |")
    print("|---|---|---|---|---|---|---|")
    for name in RUNS["1000"]:
        runs = paced[name]
        a50 = [p - d50 for p in c.col(runs, "p50")] if name != DIRECT and d50 is not None else []
        a99 = [p - d99 for p in c.col(runs, "p99")] if name != DIRECT and d99 is not None else []
        vcpu = [v / 1000 for v in c.col(runs, "cpu")]
        print(f"| {name} | {c.fmt(c.col(runs, 'p50'), '.0f')} | {c.fmt(c.col(runs, 'p99'), '.0f')} | "
              f"{c.fmt(a50, '.0f')} | {c.fmt(a99, '.0f')} | {c.fmt(c.col(runs, 'cpu'), '.1f')} | "
              f"{c.fmt(vcpu, '.3f')} |")


def report_cost(results):
    """Each proxy's mTLS against its own clear text: the headline."""
    d50, d99 = median(results, "1000", DIRECT, "p50"), median(results, "1000", DIRECT, "p99")

    def change(mode, plain, mtls, key, spec, base=None):
        x, y = median(results, mode, plain, key), median(results, mode, mtls, key)
        if base is not None:
            x, y = diff(x, base), diff(y, base)
        if x is None or y is None:
            return "-"
        return f"{x:{spec}} → {y:{spec}} ({y - x:+{spec}})"

    print("\n### What mutual TLS costs: clear text → mTLS between the two sidecars "
          "(medians; the change in brackets)\n")
    print(f"| proxies | both CPU µs/req, full rate | both CPU µs/req, {c.RATE:,} req/s | "
          f"p50 added µs, {c.RATE:,} req/s | p99 added µs, {c.RATE:,} req/s |")
    print("|---|---|---|---|---|")
    for label, plain, mtls in (("Weft", W_PLAIN, W_MTLS), ("nginx", N_PLAIN, N_MTLS)):
        print(f"| {label} | {change('full', plain, mtls, 'cpu', '.1f')} | "
              f"{change('1000', plain, mtls, 'cpu', '.1f')} | "
              f"{change('1000', plain, mtls, 'p50', '.0f', d50)} | "
              f"{change('1000', plain, mtls, 'p99', '.0f', d99)} |")


def report_policy(results):
    full = results["full"]
    crit = {k: v for k, v in micro_goals.medians().items() if k.startswith("hook/encryption-policy")}
    print(f"\n### The encryption policy on B (strict, one allow rule naming A, the caller's "
          f"identity forwarded), full rate\n")
    print("| pair | req/s | B CPU µs/req | both CPU µs/req | the policy adds µs/req | "
          "its on-request p50 in situ µs |")
    print("|---|---|---|---|---|---|")
    base = median(results, "full", W_MTLS, "cpu")
    for name in (W_MTLS, W_POLICY):
        runs = full[name]
        added = [v - base for v in c.col(runs, "cpu")] if name == W_POLICY and base is not None else []
        in_situ = [r["hooks"][(POLICY_FILTER, "on-request")] for r in runs
                   if (POLICY_FILTER, "on-request") in r.get("hooks", {})]
        print(f"| {name} | {c.fmt(c.col(runs, 'rps'), '.0f')} | {c.fmt(c.col(runs, 'cpu_b'), '.1f')} | "
              f"{c.fmt(c.col(runs, 'cpu'), '.1f')} | {c.fmt(added, '.1f')} | {c.fmt(in_situ, '.2f')} |")
    for k, v in sorted(crit.items()):
        print(f"\nCriterion (`bench/run micro`, warm instance, tight loop): {k.removeprefix('hook/')}: "
              f"median {v:.2f} µs.")
    if not crit:
        print("\nNo criterion figure for the policy's hook yet: `bench/run micro` makes it.")


if __name__ == "__main__":
    workdir = tempfile.mkdtemp(prefix="weft-bench-mtls-")
    try:
        main(workdir)
    finally:
        c.stop_all()
        # Keys, configs and the compile cache: nothing to keep.
        shutil.rmtree(workdir, ignore_errors=True)
