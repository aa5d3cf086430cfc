#!/usr/bin/env python3
"""Weft against nginx and haproxy, interleaved over several rounds, on loopback.

The load generator runs on CPU 0; the backend and the proxy under test share CPU 1,
so the proxy's core is the bottleneck. Three modes, each selectable with
BENCH_MODES=full,1000,100 (the default is all three):

  full   closed loop (wrk, 50 connections): requests per second, proxy CPU
         microseconds per request (utime + stime from /proc over the requests wrk
         completed), its ratio to nginx's, resident memory.
  1000   open loop at a fixed 1,000 req/s over 10 connections (loadgen): p50, p99,
         p99 added over the backend alone, proxy CPU per request over the paced run
         and the vCPU that takes per 1,000 req/s.
  100    open loop at a fixed 100 req/s over 1 connection: p50, p99, p50 added.

Each Weft process starts afresh for each measurement, with an admin listener: its
`/filters` view counts hook times since the filter was loaded, so the figures read
right after a run belong to that run (and its warm-up at the same load) alone. The
mesh chain's hook medians are printed for each mode side by side. Then a memory
table and a table of the goals, met or missed. Medians with min-max over the rounds.

BENCH_BASELINE=/path/to/an/older/weft adds that binary's rows beside this build's,
marked "(baseline)", measured in the same interleaved rounds: a before/after of a change.
"""
import json
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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "dist")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
WRK_THREADS = int(os.environ.get("BENCH_WRK_THREADS", "1"))
RATE = int(os.environ.get("BENCH_RATE", "1000"))
RATE_CONNS = int(os.environ.get("BENCH_RATE_CONNECTIONS", "10"))
LOW_RATE = int(os.environ.get("BENCH_LOW_RATE", "100"))
# The paced runs: as long as the closed loop at 1,000 req/s, half as long again at
# 100 req/s, where a p99 needs the samples.
SECONDS_RATE = float(os.environ.get("BENCH_SECONDS_RATE", str(SECONDS)))
SECONDS_LOW = float(os.environ.get("BENCH_SECONDS_LOW", str(SECONDS * 1.5)))
PATH = os.environ.get("BENCH_PATH", "/api/bench")
MODES = [m.strip() for m in os.environ.get("BENCH_MODES", "full,1000,100").split(",") if m.strip()]
CLK = os.sysconf("SC_CLK_TCK")
HELLO = os.path.join(ROOT, "target", "wasm32-wasip2", "release", "hello_filter.wasm")
procs = []

for m in MODES:
    if m not in ("full", "1000", "100"):
        raise SystemExit(f"BENCH_MODES: unknown mode {m!r} (full, 1000, 100)")

# The chains. The mesh chain is the demo's (cli/src/demo.yaml): telemetry, fault,
# retry and router, with the demo's routes; its clusters blue and green are both the
# bench backend, and requests go to /api/bench, which the demo's `api` route splits.
FAULT = """      - name: fault
        module: builtin:fault
        config:
          abort: { status: 503, header: { name: x-weft-fault, value: abort } }
          delay: { duration: 500ms, header: { name: x-weft-fault, value: delay } }
"""
ROUTER = """      - name: router
        module: builtin:router
        config:
          routes:
            - match: { path: { prefix: /api } }
              split: [{ cluster: be, weight: 80 }, { cluster: be, weight: 20 }]
            - match: { path: { prefix: / } }
              cluster: be
"""
HELLOS = "".join(f"""      - name: hello{i}
        module: {HELLO}
        config: {{ greeting: hi }}
""" for i in range(3))
RETRY = """      - name: retry
        module: builtin:retry
        config: {}
"""
MESH = """      - name: telemetry
        module: builtin:telemetry
        metrics: { prefix: istio_ }
        config: { workload: bench, service: bench, duration: milliseconds }
      - name: fault
        module: builtin:fault
        config:
          abort: { status: 503, header: { name: x-weft-fault, value: abort } }
          delay: { duration: 500ms, header: { name: x-weft-fault, value: delay } }
      - name: retry
        module: builtin:retry
        config: {}
      - name: router
        module: builtin:router
        config:
          routes:
            - name: api-canary
              match:
                path: { prefix: /api }
                headers: [{ name: x-canary, exact: "1" }]
              cluster: green
            - name: api
              match: { path: { prefix: /api } }
              split: [{ cluster: blue, weight: 80 }, { cluster: green, weight: 20 }]
            - name: old
              match: { path: { prefix: /old/ } }
              cluster: blue
              rewrite: { prefix: /new/ }
            - name: hello
              match: { path: { exact: /hello }, method: GET }
              cluster: blue
"""
NO_FILTER, FAULT_ROUTER, MESH_CHAIN = "weft (no filter)", "weft (fault + router)", "weft (mesh chain)"
CHAINS = {NO_FILTER: "", FAULT_ROUTER: FAULT + ROUTER, MESH_CHAIN: MESH}
# BENCH_CHAINS=all adds these to the full-rate mode.
EXTRA_CHAINS = {"weft (fault + router + retry)": FAULT + ROUTER + RETRY,
                "weft (5 filters)": FAULT + HELLOS + ROUTER}
# What each mode runs besides nginx: the paced modes only the backend alone, no
# filter and the mesh chain.
PACED = ("direct", "nginx", NO_FILTER, MESH_CHAIN)


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


def stop(p):
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
    except OSError:
        pass
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if p in procs:
        procs.remove(p)


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port} after {timeout}s")


def get(addr, path, timeout=5):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as r:
        return r.status, r.read()


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
        ["taskset", "-c", "0", "wrk", f"-t{WRK_THREADS}", f"-c{CONNS}", f"-d{seconds:g}s", url],
        capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        print(f"warning: {url}: {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}", file=sys.stderr)
    return reqs, rps


def loadgen(url, rate, seconds, conns):
    out = subprocess.run(
        ["taskset", "-c", "0", os.path.join(REL, "loadgen"), url, str(rate), f"{seconds:g}", str(conns)],
        capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=") for kv in out.split())
    return {k: int(v) for k, v in fields.items()}


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


class Target:
    """A proxy (or the backend alone) and how to reach it. A Weft target is a config
    and a binary, started afresh for each measurement."""

    def __init__(self, name, addr, proc=None, binary=None, config=None, admin=None):
        self.name, self.addr, self.proc = name, addr, proc
        self.binary, self.config, self.admin = binary, config, admin

    @property
    def weft(self):
        return self.binary is not None

    def up(self, cache):
        if not self.weft:
            return
        env = dict(os.environ, RUST_LOG="warn", WEFT_CACHE_DIR=cache)
        self.proc = start([self.binary, "proxy", "-c", self.config], 1, env=env)
        wait_port(int(self.addr.rsplit(":", 1)[1]))
        if self.admin:
            deadline = time.time() + 30
            while True:
                try:
                    if get(self.admin, "/ready", timeout=1)[0] == 200:
                        break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit(f"{self.name}: not ready after 30 s")
                time.sleep(0.02)

    def down(self):
        if self.weft and self.proc:
            stop(self.proc)
            self.proc = None

    def hooks(self):
        """{(filter, hook): p50 µs} from `/filters`; empty without an admin listener."""
        if not self.admin:
            return {}
        try:
            view = json.loads(get(self.admin, "/filters")[1])
        except (OSError, ValueError) as e:
            print(f"warning: {self.name}: /filters: {e}", file=sys.stderr)
            return {}
        return {(f["name"], h["hook"]): h["p50_us"]
                for f in view.get("filters", []) for h in f.get("hooks", [])
                if h.get("p50_us") is not None}


def weft_config(path, port, admin, backend_addr, chain, with_admin=True, with_metrics=True):
    filters = f"    filters:\n{chain}" if chain else ""
    if not with_metrics:
        filters = "".join(l for l in filters.splitlines(True) if not l.strip().startswith("metrics:"))
    admin_yaml = f"admin:\n  address: {admin}\n" if with_admin else ""
    open(path, "w").write(f"""{admin_yaml}listeners:
  - name: bench
    address: 127.0.0.1:{port}
    default_cluster: be
{filters}clusters:
  - name: be
    endpoints: ["{backend_addr}"]
  - name: blue
    endpoints: ["{backend_addr}"]
  - name: green
    endpoints: ["{backend_addr}"]
""")


def measure_full(t, cache):
    url = f"http://{t.addr}{PATH}"
    t.up(cache)
    try:
        wrk(url, 2)  # warm up: pools, instances, caches
        pids = tree(t.proc.pid) if t.proc else []
        c0 = cpu_ticks(pids)
        reqs, rps = wrk(url, SECONDS)
        c1 = cpu_ticks(pids)
        out = {"rps": rps, "hooks": t.hooks()}
        if t.proc:
            out["cpu"] = (c1 - c0) / CLK * 1e6 / reqs
            out["rss"] = rss_kib(tree(t.proc.pid)) / 1024
        return out
    finally:
        t.down()


def measure_paced(t, cache, rate, conns, seconds):
    url = f"http://{t.addr}{PATH}"
    t.up(cache)
    try:
        loadgen(url, rate, 1, conns)  # warm up at the same load
        pids = tree(t.proc.pid) if t.proc else []
        c0 = cpu_ticks(pids)
        r = loadgen(url, rate, seconds, conns)
        c1 = cpu_ticks(pids)
        if r["errors"]:
            print(f"warning: {t.name}: {r['errors']} errors at {rate} req/s", file=sys.stderr)
        if r.get("reconnects"):
            print(f"note: {t.name}: the server closed {r['reconnects']} connections at {rate} req/s",
                  file=sys.stderr)
        out = {"p50": r["p50_us"], "p99": r["p99_us"], "hooks": t.hooks()}
        if t.proc and r["requests"]:
            out["cpu"] = (c1 - c0) / CLK * 1e6 / r["requests"]
            # CPU seconds per second over (rate / 1,000): at the rate achieved that is
            # the CPU microseconds per request over 1,000.
            out["vcpu"] = out["cpu"] / 1000
            out["rss"] = rss_kib(tree(t.proc.pid)) / 1024
        return out
    finally:
        t.down()


def med(values):
    return statistics.median(values) if values else None


def fmt(values, spec):
    if not values:
        return "-"
    m = statistics.median(values)
    if len(values) == 1:
        return f"{m:{spec}}"
    return f"{m:{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def num(v, spec):
    return "-" if v is None else f"{v:{spec}}"


def main():
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    cache = os.path.join(tmp, "cache")
    idle = idle_check()
    backend = start([os.path.join(REL, "bench-backend"), "127.0.0.1:0"], 1,
                    stdout=subprocess.PIPE, text=True)
    backend_addr = backend.stdout.readline().strip()
    targets = {"direct": Target("direct", backend_addr)}

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
    targets["nginx"] = Target("nginx", f"127.0.0.1:{port}",
                              start(["nginx", "-c", conf], 1, stderr=subprocess.DEVNULL))

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
    if "full" in MODES:
        targets["haproxy"] = Target("haproxy", f"127.0.0.1:{port}",
                                    start(["haproxy", "-db", "-f", cfg], 1, stderr=subprocess.DEVNULL))

    chains = dict(CHAINS)
    if os.environ.get("BENCH_CHAINS") == "all":
        chains.update(EXTRA_CHAINS)
    if "full" not in MODES:
        chains = {name: chain for name, chain in chains.items() if name in PACED}
    binaries = [("", os.path.join(REL, "weft"))]
    if os.environ.get("BENCH_BASELINE"):
        binaries.append((" (baseline)", os.environ["BENCH_BASELINE"]))
    base_of = {}  # a row's name -> the chain's name, for this build's and the baseline's
    for (name, chain), (suffix, binary) in [(c, b) for c in chains.items() for b in binaries]:
        row = name + suffix
        port, admin = free_port(), f"127.0.0.1:{free_port()}"
        path = os.path.join(tmp, re.sub(r"\W+", "-", row) + ".yaml")
        # A baseline runs the chains it can load: it may lack an admin listener's
        # `/filters`, a filter's `metrics` settings or a built-in filter, and a filter
        # built by this tree may speak a contract it does not know.
        loaded = False
        for with_admin, with_metrics in ((True, True), (False, True), (False, False)):
            weft_config(path, port, admin, backend_addr, chain, with_admin, with_metrics)
            if not suffix or subprocess.run([binary, "proxy", "-c", path, "--check"],
                                            capture_output=True).returncode == 0:
                loaded = True
                break
        if not loaded:
            print(f"{row}: the baseline cannot load this chain; skipped", file=sys.stderr)
            continue
        targets[row] = Target(row, f"127.0.0.1:{port}", binary=binary, config=path,
                              admin=admin if with_admin else None)
        base_of[row] = name

    for t in targets.values():
        if not t.weft:
            wait_port(int(t.addr.rsplit(":", 1)[1]))
    # Once each, so that every measured start loads its filters from the disk cache,
    # as a restarted proxy does (the compiler stays out of its resident set).
    for t in targets.values():
        t.up(cache)
        t.down()

    def runs(mode):
        if mode == "full":
            return [n for n in targets if n != "direct"]
        return [n for n in targets if n in PACED or base_of.get(n) in PACED]

    plan = {m: runs(m) for m in MODES}
    results = {m: {n: [] for n in plan[m]} for m in MODES}
    for rnd in range(ROUNDS):
        order = [(m, n) for m in MODES for n in plan[m]]
        random.shuffle(order)
        for i, (mode, name) in enumerate(order):
            t = targets[name]
            if mode == "full":
                r = measure_full(t, cache)
                what = f"{r['rps']:.0f} req/s"
            elif mode == "1000":
                r = measure_paced(t, cache, RATE, RATE_CONNS, SECONDS_RATE)
                what = f"p50 {r['p50']} µs p99 {r['p99']} µs"
            else:
                r = measure_paced(t, cache, LOW_RATE, 1, SECONDS_LOW)
                what = f"p50 {r['p50']} µs p99 {r['p99']} µs"
            results[mode][name].append(r)
            print(f"round {rnd + 1}/{ROUNDS} ({i + 1}/{len(order)}): {mode}: {name}: {what}",
                  file=sys.stderr)

    report(results, targets, base_of, idle)


def col(runs, key):
    return [r[key] for r in runs if r.get(key) is not None]


def report(results, targets, base_of, idle):
    print(f"\n{ROUNDS} rounds, interleaved; load generator on CPU 0, proxy and backend on CPU 1; "
          f"requests to {PATH}; machine {idle:.0%} busy before start; {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    goals = []  # (goal, figure, met, baseline figure)
    baseline = any(n.endswith("(baseline)") for n in targets)

    # 1. Full rate.
    full = results.get("full")
    if full:
        ng_cpu = med(col(full.get("nginx", []), "cpu"))
        print(f"\n### Full rate: closed loop, wrk -t{WRK_THREADS} -c{CONNS}, {SECONDS:g} s "
              f"after a 2 s warm-up\n")
        print("| target | req/s | proxy CPU µs/req | CPU/req ÷ nginx's | RSS MB |")
        print("|---|---|---|---|---|")
        for name, runs in full.items():
            cpu = med(col(runs, "cpu"))
            ratio = cpu / ng_cpu if cpu is not None and ng_cpu else None
            print(f"| {name} | {fmt(col(runs, 'rps'), '.0f')} | {fmt(col(runs, 'cpu'), '.1f')} | "
                  f"{num(ratio, '.2f')} | {fmt(col(runs, 'rss'), '.1f')} |")

    # 2. 1,000 req/s.
    paced = results.get("1000")
    if paced:
        d99 = med(col(paced.get("direct", []), "p99"))
        print(f"\n### {RATE:,} req/s: open loop over {RATE_CONNS} connections (loadgen), "
              f"{SECONDS_RATE:g} s after a 1 s warm-up\n")
        print("| target | p50 µs | p99 µs | p99 added µs | proxy CPU µs/req | vCPU per 1,000 req/s |")
        print("|---|---|---|---|---|---|")
        for name, runs in paced.items():
            added = [p - d99 for p in col(runs, "p99")] if name != "direct" and d99 is not None else []
            print(f"| {name} | {fmt(col(runs, 'p50'), '.0f')} | {fmt(col(runs, 'p99'), '.0f')} | "
                  f"{fmt(added, '.0f')} | {fmt(col(runs, 'cpu'), '.1f')} | {fmt(col(runs, 'vcpu'), '.3f')} |")

    # 3. 100 req/s.
    low = results.get("100")
    if low:
        d50 = med(col(low.get("direct", []), "p50"))
        print(f"\n### {LOW_RATE:,} req/s: open loop over 1 connection (loadgen), "
              f"{SECONDS_LOW:g} s after a 1 s warm-up\n")
        print("| target | p50 µs | p99 µs | p50 added µs |")
        print("|---|---|---|---|")
        for name, runs in low.items():
            added = [p - d50 for p in col(runs, "p50")] if name != "direct" and d50 is not None else []
            print(f"| {name} | {fmt(col(runs, 'p50'), '.0f')} | {fmt(col(runs, 'p99'), '.0f')} | "
                  f"{fmt(added, '.0f')} |")

    # The mesh chain's hooks, in situ: /filters read right after each mode's run.
    hook_modes = [(m, label) for m, label in (("100", f"in situ at {LOW_RATE:,} req/s"),
                                              ("1000", f"in situ at {RATE:,} req/s"),
                                              ("full", "in situ at full rate")) if m in results]
    hook_rows = [n for n in targets if base_of.get(n) == MESH_CHAIN]
    for row in hook_rows:
        per = {m: {} for m, _ in hook_modes}
        for m, _ in hook_modes:
            for r in results[m].get(row, []):
                for k, v in r["hooks"].items():
                    per[m].setdefault(k, []).append(v)
        keys = sorted({k for m in per for k in per[m]}, key=hook_key)
        if not keys:
            continue
        print(f"\n### {row}: each hook's p50 µs from `/filters` (medians of the rounds)\n")
        print("| filter | hook | " + " | ".join(label for _, label in hook_modes) + " |")
        print("|---|---|" + "---|" * len(hook_modes))
        for k in keys:
            print(f"| {k[0]} | {k[1]} | " + " | ".join(fmt(per[m].get(k, []), '.2f') for m, _ in hook_modes) + " |")

    # 4. Memory.
    mem_modes = [(m, label) for m, label in (("full", "after full rate"), ("1000", f"after {RATE:,} req/s"),
                                             ("100", f"after {LOW_RATE:,} req/s")) if m in results]
    mem_rows = [n for n in targets if targets[n].weft and any(n in results[m] for m, _ in mem_modes)]
    if mem_rows:
        print("\n### Memory: RSS MB of each Weft process (one listener) after its run\n")
        print("| target | " + " | ".join(label for _, label in mem_modes) + " |")
        print("|---|" + "---|" * len(mem_modes))
        for name in mem_rows:
            print(f"| {name} | " + " | ".join(fmt(col(results[m].get(name, []), "rss"), '.1f')
                                             for m, _ in mem_modes) + " |")

    # 5. Goals, for this build and, beside it, the baseline.
    def figure(fn, suffix=""):
        try:
            return fn(suffix)
        except (TypeError, KeyError, ZeroDivisionError, ValueError):
            return None

    def goal(text, fn, spec, limit_fn, unit="", why=lambda: ""):
        """fn(suffix) -> the figure; limit_fn() -> the limit (figures at or under it meet
        it); why() -> how the limit was found, when it depends on nginx's figures."""
        this = figure(fn)
        base = figure(fn, " (baseline)") if baseline else None
        limit = figure(lambda _: limit_fn())
        if this is None or limit is None:
            goals.append((text, "not measured", "-", num(base, spec)))
            return
        verdict = "met" if this <= limit else "missed"
        how = figure(lambda _: why()) or ""
        goals.append((text, f"{this:{spec}}{unit} (limit {limit:{spec}}{unit}{how})", verdict,
                      num(base, spec) + (unit if base is not None else "")))

    def unmeasured(*texts):
        for text in texts:
            goals.append((text, "not measured", "-", "-"))

    hooks_goal = f"each built-in hook's p50 in `/filters` at {LOW_RATE:,} req/s ≤ 3 µs"
    added_goal = f"no filter adds ≤ nginx's added p50 + 20 µs at {LOW_RATE:,} req/s"
    vcpu_goal = f"mesh chain ≤ 0.05 vCPU per 1,000 req/s at {RATE:,} req/s"
    p99_goal = f"mesh chain p99 added ≤ 1.5 × nginx's at {RATE:,} req/s"
    mesh_cpu_goal = "full rate: mesh chain CPU/request ≤ 1.3 × nginx's"
    none_cpu_goal = "full rate: no filter CPU/request ≤ 1.05 × nginx's"

    if low:
        per = {}
        for r in low.get(MESH_CHAIN, []):
            for k, v in r["hooks"].items():
                per.setdefault(k, []).append(v)
        for k in sorted(per, key=hook_key):
            def hook_p50(suffix, k=k):
                return med([r["hooks"][k] for r in low[MESH_CHAIN + suffix] if k in r["hooks"]])
            goal(f"{k[0]} `{k[1]}` p50 in `/filters` at {LOW_RATE:,} req/s ≤ 3 µs", hook_p50, ".2f",
                 lambda: 3.0, " µs")
        if not per:
            unmeasured(hooks_goal)
        d50 = med(col(low["direct"], "p50"))
        n50 = med(col(low["nginx"], "p50"))
        goal(added_goal, lambda s: med(col(low[NO_FILTER + s], "p50")) - d50, ".0f",
             lambda: n50 - d50 + 20, " µs", lambda: f" = nginx's {n50 - d50:.0f} + 20")
    else:
        unmeasured(hooks_goal, added_goal)
    if paced:
        d99 = med(col(paced["direct"], "p99"))
        n99 = med(col(paced["nginx"], "p99"))
        goal(vcpu_goal, lambda s: med(col(paced[MESH_CHAIN + s], "vcpu")), ".3f", lambda: 0.05, " vCPU")
        goal(p99_goal, lambda s: med(col(paced[MESH_CHAIN + s], "p99")) - d99, ".0f",
             lambda: 1.5 * (n99 - d99), " µs", lambda: f" = 1.5 × nginx's {n99 - d99:.0f}")
    else:
        unmeasured(vcpu_goal, p99_goal)
    if full:
        ng_cpu = med(col(full["nginx"], "cpu"))
        goal(mesh_cpu_goal, lambda s: med(col(full[MESH_CHAIN + s], "cpu")) / ng_cpu, ".2f",
             lambda: 1.3, "×", lambda: f"; nginx {ng_cpu:.1f} µs/req")
        goal(none_cpu_goal, lambda s: med(col(full[NO_FILTER + s], "cpu")) / ng_cpu, ".2f",
             lambda: 1.05, "×", lambda: f"; nginx {ng_cpu:.1f} µs/req")
    else:
        unmeasured(mesh_cpu_goal, none_cpu_goal)
    if results:
        # The largest resident set the mesh chain's process had after any mode's run.
        def mesh_rss(s):
            vals = [med(col(results[m][MESH_CHAIN + s], "rss")) for m in results
                    if results[m].get(MESH_CHAIN + s)]
            vals = [v for v in vals if v is not None]
            return max(vals) if vals else None
        goal("RSS with the mesh chain on one listener ≤ 20 MB (largest after any mode)",
             mesh_rss, ".1f", lambda: 20.0, " MB")

    if goals:
        print("\n### Goals\n")
        if baseline:
            print("| goal | figure | met? | baseline |")
            print("|---|---|---|---|")
            for g, f, v, b in goals:
                print(f"| {g} | {f} | {v} | {b} |")
        else:
            print("| goal | figure | met? |")
            print("|---|---|---|")
            for g, f, v, _ in goals:
                print(f"| {g} | {f} | {v} |")


def hook_key(k):
    """The mesh chain's order, and each filter's hooks in the order they run."""
    filters = ["telemetry", "fault", "retry", "router"]
    hooks = ["on-request", "on-response", "on-done"]
    return (filters.index(k[0]) if k[0] in filters else len(filters), k[0],
            hooks.index(k[1]) if k[1] in hooks else len(hooks), k[1])


def stop_all():
    """End every process this benchmark started (mtls.py uses it too)."""
    for p in list(procs):
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass
    for p in list(procs):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
