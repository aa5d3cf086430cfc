#!/usr/bin/env python3
"""Weft against nginx and haproxy, interleaved over several rounds, on loopback.

The load generator runs on CPU 0; the backend and the proxy under test share CPU 1,
so the proxy's core is the bottleneck. Figures per target: closed-loop requests per
second (wrk, 50 connections), proxy CPU microseconds per request (utime + stime from
/proc over the requests wrk completed), latency at a fixed 1,000 req/s (p50, p99,
open loop), and resident memory. Medians with min-max over the rounds.

BENCH_BASELINE=/path/to/an/older/weft adds that binary's rows beside this build's,
marked "(baseline)", measured in the same interleaved rounds: a before/after of a change.
"""
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "dist")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
CLK = os.sysconf("SC_CLK_TCK")
HELLO = os.path.join(ROOT, "target", "wasm32-wasip2", "release", "hello_filter.wasm")
procs = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd, cpu, **kw):
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, **kw)
    procs.append(p)
    return p


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def tree(pid):
    """pid and its descendants (nginx's worker is a child of its master)."""
    out = [pid]
    try:
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            out += tree(int(child))
    except OSError:
        pass
    return out


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def wrk(url, seconds):
    out = subprocess.run(
        ["taskset", "-c", "0", "wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s", url],
        capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        print(f"warning: {url}: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}", file=sys.stderr)
    return reqs, rps


def loadgen(url):
    out = subprocess.run(
        ["taskset", "-c", "0", os.path.join(REL, "loadgen"), url, str(RATE), "5", "16"],
        capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=") for kv in out.split())
    return int(fields["p50_us"]), int(fields["p99_us"]), int(fields["errors"])


def idle_check():
    def busy():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = busy()
    time.sleep(1)
    b1, t1 = busy()
    share = (b1 - b0) / max(1, t1 - t0)
    if share > 0.10:
        print(f"warning: the machine is {share:.0%} busy before the benchmark; figures will be noisy",
              file=sys.stderr)
    return share


def main():
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    idle = idle_check()
    backend = start([os.path.join(REL, "bench-backend"), "127.0.0.1:0"], 1,
                    stdout=subprocess.PIPE, text=True)
    backend_addr = backend.stdout.readline().strip()
    targets = {"direct": (None, backend_addr)}

    # nginx: one worker, keep-alive to the upstream.
    port = free_port()
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    conf = os.path.join(tmp, "nginx.conf")
    open(conf, "w").write(f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream be {{ server {backend_addr}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    targets["nginx"] = (start(["nginx", "-c", conf], 1, stderr=subprocess.DEVNULL), f"127.0.0.1:{port}")

    # haproxy: one thread, connection reuse.
    port = free_port()
    cfg = os.path.join(tmp, "haproxy.cfg")
    open(cfg, "w").write(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server s1 {backend_addr}
""")
    targets["haproxy"] = (start(["haproxy", "-db", "-f", cfg], 1, stderr=subprocess.DEVNULL),
                          f"127.0.0.1:{port}")

    fault = """      - name: fault
        module: builtin:fault
        config:
          abort: { status: 503, header: { name: x-weft-fault, value: abort } }
          delay: { duration: 500ms, header: { name: x-weft-fault, value: delay } }
"""
    router = """      - name: router
        module: builtin:router
        config:
          routes:
            - match: { path: { prefix: /api } }
              split: [{ cluster: be, weight: 80 }, { cluster: be, weight: 20 }]
            - match: { path: { prefix: / } }
              cluster: be
"""
    hellos = "".join(f"""      - name: hello{i}
        module: {HELLO}
        config: {{ greeting: hi }}
""" for i in range(3))
    retry = """      - name: retry
        module: builtin:retry
        config: {}
"""
    telemetry = """      - name: telemetry
        module: builtin:telemetry
        config: { workload: bench }
"""
    chains = {"weft (no filter)": "", "weft (fault + router)": fault + router,
              "weft (fault + router + retry)": fault + router + retry,
              "weft (telemetry + fault + router + retry)": telemetry + fault + router + retry,
              "weft (5 filters)": fault + hellos + router}
    binaries = [("", os.path.join(REL, "weft"))]
    if os.environ.get("BENCH_BASELINE"):
        binaries.append((" (baseline)", os.environ["BENCH_BASELINE"]))
    for (suffix, binary), (name, chain) in [(b, c) for c in chains.items() for b in binaries]:
        name += suffix
        port = free_port()
        path = os.path.join(tmp, re.sub(r"\W+", "-", name) + ".yaml")
        filters = f"    filters:\n{chain}" if chain else ""
        open(path, "w").write(f"""listeners:
  - name: bench
    address: 127.0.0.1:{port}
    default_cluster: be
{filters}clusters:
  - name: be
    endpoints: ["{backend_addr}"]
""")
        # A baseline runs the chains it can load: its built-ins may lack a filter,
        # and a filter built by this tree may speak a contract it does not know.
        if suffix and subprocess.run([binary, "proxy", "-c", path, "--check"],
                                     capture_output=True).returncode != 0:
            print(f"{name}: the baseline cannot load this chain; skipped", file=sys.stderr)
            continue
        env = dict(os.environ, RUST_LOG="warn")
        targets[name] = (start([binary, "proxy", "-c", path], 1, env=env),
                         f"127.0.0.1:{port}")

    for _, addr in targets.values():
        wait_port(int(addr.rsplit(":", 1)[1]))

    results = {name: {"rps": [], "cpu": [], "p50": [], "p99": [], "rss": []} for name in targets}
    for rnd in range(ROUNDS):
        order = list(targets)
        random.shuffle(order)
        for name in order:
            proc, addr = targets[name]
            url = f"http://{addr}/"
            wrk(url, 2)  # warm up: pools, instances, caches
            pids = tree(proc.pid) if proc else []
            c0 = cpu_ticks(pids)
            reqs, rps = wrk(url, SECONDS)
            c1 = cpu_ticks(pids)
            p50, p99, errors = loadgen(url)
            if errors:
                print(f"warning: {name}: {errors} errors at {RATE} req/s", file=sys.stderr)
            r = results[name]
            r["rps"].append(rps)
            if proc:
                r["cpu"].append((c1 - c0) / CLK * 1e6 / reqs)
                r["rss"].append(rss_kib(tree(proc.pid)) / 1024)
            r["p50"].append(p50)
            r["p99"].append(p99)
            print(f"round {rnd + 1}/{ROUNDS}: {name}: {rps:.0f} req/s", file=sys.stderr)

    def fmt(values, spec):
        if not values:
            return "-"
        med = statistics.median(values)
        return f"{med:{spec}} ({min(values):{spec}}-{max(values):{spec}})"

    direct = results["direct"]
    print(f"\n{ROUNDS} rounds of {SECONDS} s, {CONNS} connections (wrk on CPU 0; proxy and backend on CPU 1); "
          f"latency at {RATE} req/s open loop; machine {idle:.0%} busy before start; "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    print("| target | req/s | proxy CPU µs/req | p50 µs @1k | p99 µs @1k | p99 added µs | RSS MB |")
    print("|---|---|---|---|---|---|---|")
    d99 = statistics.median(direct["p99"])
    for name, r in results.items():
        added = [p - d99 for p in r["p99"]] if name != "direct" else []
        print(f"| {name} | {fmt(r['rps'], '.0f')} | {fmt(r['cpu'], '.1f')} | {fmt(r['p50'], '.0f')} | "
              f"{fmt(r['p99'], '.0f')} | {fmt(added, '.0f')} | {fmt(r['rss'], '.1f')} |")
    ng = results["nginx"]
    print("\n| Weft / nginx | req/s | CPU/req | p99 added |")
    print("|---|---|---|---|")
    n_rps, n_cpu = statistics.median(ng["rps"]), statistics.median(ng["cpu"])
    n_add = statistics.median(ng["p99"]) - d99
    for name in chains:
        r = results[name]
        add = statistics.median(r["p99"]) - d99
        print(f"| {name} | {statistics.median(r['rps']) / n_rps:.2f} | "
              f"{statistics.median(r['cpu']) / n_cpu:.2f} | {add:.0f} µs vs {n_add:.0f} µs |")


try:
    main()
finally:
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
