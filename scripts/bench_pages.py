#!/usr/bin/env python3
"""Pages polling benchmark: how many pages pagepulse keeps polling on schedule, and at what cost.

Runs on this machine, side by side: a tansu broker (in memory), `pagepulse simulate graph-api`
with PAGES pages, and `pagepulse run` (pages, fans and posts pipelines as configured by default;
the Graph API pointed at the simulator). `pagepulse demo pages` tracks PAGES pages at INTERVAL
seconds; once every page is in a schedule, the benchmark measures over WINDOW seconds (one full
interval plus a minute by default, so every page is polled at least once in it):

- schedule delay (request sent minus slot due) percentiles, from the deltas of pagepulse's own
  `pagepulse_schedule_delay_seconds` histogram over the window (so each is an upper bound: the
  bucket bound the percentile falls in);
- pages polled per second, requests per second, and the outcomes;
- pagepulse's CPU (utime + stime over the window, as a share of one core) and RSS (VmRSS at the
  end, VmHWM peak), and the simulator's and broker's CPU for context.

Not part of the test suite. A run takes about INTERVAL + 2 minutes.

usage: [PAGEPULSE_BIN=path] scripts/bench_pages.py [--pages N] [--interval S] [--window S] [--no-build]
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PP = os.environ.get("PAGEPULSE_BIN", os.path.join(ROOT, "target", "release", "pagepulse"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def mem_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def metrics(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


def buckets(m, platform):
    """The cumulative schedule-delay buckets of one platform: [(le, count)]."""
    pat = re.compile(r'pagepulse_schedule_delay_seconds_bucket\{platform="%s",le="([^"]+)"\}' % platform)
    out = []
    for k, v in m.items():
        g = pat.fullmatch(k)
        if g:
            le = float("inf") if g.group(1) == "+Inf" else float(g.group(1))
            out.append((le, v))
    return sorted(out)


def percentile(delta, q):
    n = delta[-1][1]
    for le, c in delta:
        if c >= q * n:
            return le
    return float("inf")


def wait(what, timeout, cond, every=0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            v = cond()
        except OSError:  # not listening yet
            v = None
        if v:
            return v
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--interval", type=int, default=600)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    window = args.window or args.interval + 60
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-pages-")
    procs = []

    def stop_all():
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        kport, sport, hport = free_port(), free_port(), free_port()
        broker_pid = int(subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), str(kport), f"{work}/tansu.log"],
                                        check=True, capture_output=True, text=True).stdout.strip())
        env = dict(os.environ,
                   PAGEPULSE_BROKERS=f"127.0.0.1:{kport}",
                   PAGEPULSE_TOPIC_PREFIX=f"bench{os.getpid()}.",
                   PAGEPULSE_GROUP_ID=f"bench{os.getpid()}",
                   PAGEPULSE_HTTP_LISTEN=f"127.0.0.1:{hport}",
                   PAGEPULSE_FACEBOOK_TOKEN="bench-token",
                   PAGEPULSE__platforms__facebook__base_url=f"http://127.0.0.1:{sport}",
                   # The benchmark measures pagepulse, not a platform's quota.
                   PAGEPULSE__platforms__facebook__rate_per_sec="100000",
                   PAGEPULSE__platforms__facebook__burst="10000",
                   # One instance holds every page: its per-partition bounds must allow them all.
                   PAGEPULSE__pipelines__pages__max_pages_per_partition=str(max(args.pages, 2_000_000)),
                   PAGEPULSE__pipelines__fans__max_pages_per_partition=str(max(args.pages, 1_000_000)),
                   PAGEPULSE_LOG="info,librdkafka=warn,rdkafka::client=warn")
        subprocess.run([PP, "topics", "create"], env=env, check=True, capture_output=True)
        sim = subprocess.Popen([PP, "simulate", "graph-api", "--listen", f"127.0.0.1:{sport}", "--pages",
                                str(min(args.pages, 20_000_000))], env=env, stdout=subprocess.PIPE,
                               stderr=open(f"{work}/sim.log", "w"), text=True)
        procs.append(sim)
        sim.stdout.readline()
        t = time.time()
        subprocess.run([PP, "demo", "pages", "--count", str(args.pages), "--interval-s", str(args.interval)],
                       env=env, check=True, capture_output=True)
        print(f"tracked {args.pages:,} pages in the pages topic in {time.time() - t:.1f} s", flush=True)
        run = subprocess.Popen([PP, "run"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/pagepulse.log", "w"))
        procs.append(run)
        http = f"127.0.0.1:{hport}"
        t = time.time()
        wait("all pages scheduled", 600,
             lambda: total(metrics(http), "pagepulse_pages_tracked") >= args.pages, every=1)
        print(f"all pages scheduled {time.time() - t:.1f} s after start; measuring for {window} s", flush=True)
        m0, c0, s0, b0, t0 = metrics(http), cpu_seconds(run.pid), cpu_seconds(sim.pid), cpu_seconds(broker_pid), time.time()
        time.sleep(window)
        m1, c1, s1, b1, t1 = metrics(http), cpu_seconds(run.pid), cpu_seconds(sim.pid), cpu_seconds(broker_pid), time.time()
        rss, hwm = mem_kb(run.pid, "VmRSS"), mem_kb(run.pid, "VmHWM")
        el = t1 - t0
        b_0, b_1 = dict(buckets(m0, "facebook")), buckets(m1, "facebook")
        delta = [(le, c - b_0.get(le, 0)) for le, c in b_1]
        polled = delta[-1][1]
        def by_outcome(name):
            return {k.split('outcome="')[1].split('"')[0]: m1[k] - m0.get(k, 0)
                    for k in m1 if k.startswith(name + "{") and 'platform="facebook"' in k}

        outcomes = by_outcome("pagepulse_polls_total")
        requests = by_outcome("pagepulse_poll_requests_total")
        result = {
            "pages": args.pages,
            "interval_s": args.interval,
            "window_s": round(el, 1),
            "pages_polled": int(polled),
            "pages_polled_per_s": round(polled / el, 1),
            "expected_per_s": round(args.pages / args.interval, 1),
            "poll_outcomes": outcomes,
            "requests": requests,
            "schedule_delay_upper_bound_s": {q: percentile(delta, p) for q, p in
                                             [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999),
                                              ("max", 1.0)]},
            "delays_over_1s": int(polled - dict(delta).get(1.0, 0)),
            "pagepulse_cpu_core_share": round((c1 - c0) / el, 4),
            "simulator_cpu_core_share": round((s1 - s0) / el, 4),
            "broker_cpu_core_share": round((b1 - b0) / el, 4),
            "pagepulse_rss_mb": round(rss / 1024, 1),
            "pagepulse_peak_rss_mb": round(hwm / 1024, 1),
            "rss_bytes_per_page": round(rss * 1024 / args.pages),
        }
        print(json.dumps(result, indent=2))
        if window >= args.interval and polled < args.pages:
            print(f"WARNING: only {polled:,.0f} of {args.pages:,} pages polled in the window", file=sys.stderr)
    finally:
        stop_all()
        try:
            os.kill(broker_pid, signal.SIGTERM)
        except Exception:
            pass
    print(f"logs in {work}")


if __name__ == "__main__":
    main()
