#!/usr/bin/env python3
"""Durable state benchmark: what changelogging costs, and how fast state comes back.

On this machine, side by side: a tansu broker (in memory) and pagepulse (release build). For each
workload the same input is processed twice in one run, each time by a fresh group:
  A. `engine.durable_state = false` (state in memory only),
  B. `engine.durable_state = true` (changelogs);
the rate of each is input records over the time from the first poll of /metrics that saw records
consumed to the first that saw all consumed and every inbox empty. Run B is then killed with
SIGKILL (a crash) once its state is flushed, and restarted with the same group: the restore is
timed from the restart to /readyz answering 200, and per partition from the "state restored" log
lines; changelog records and bytes come from `pagepulse_state_restored_{records,bytes}_total`.

Workloads:
  pageviews  one generated hour of LINES lines over DOMAINS domains (`demo pageviews-dump`,
             `ingest pageviews`); the windows stay open (idle_timeout 1 h), so the restore carries
             the whole hour.
  fans       PAGES pages x SAMPLES observations 10 minutes apart, produced with confluent-kafka.

usage: scripts/bench_state.py [pageviews|fans|all] [--lines N] [--domains D] [--pages N]
                              [--samples S] [--no-build]
Not part of the test suite.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PP = os.path.join(ROOT, "target", "release", "pagepulse")


# Shared with the page-views benchmark (same directory).
from bench_pageviews import free_port, metrics  # noqa: E402


def ready(http):
    try:
        with urllib.request.urlopen(f"http://{http}/readyz", timeout=5) as r:
            return r.status == 200
    except (urllib.error.HTTPError, OSError):
        return False


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_since(log, offset):
    with open(log, errors="replace") as f:
        f.seek(offset)
        return ANSI.sub("", f.read())


def start(env, log):
    return subprocess.Popen([PP, "run"], env=env, stdout=subprocess.DEVNULL, stderr=open(log, "a"))


def measure_rate(env, http, topic, n, pipeline, deadline_s=1800):
    """Starts pagepulse; returns (process, records/s) once all n input records are processed."""
    run = start(env, env["BENCH_LOG"])
    first = last = None
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        try:
            m = metrics(http)
        except OSError:
            time.sleep(0.1)
            continue
        consumed = m.get(f'pagepulse_records_consumed_total{{topic="{topic}"}}', 0.0)
        inbox = sum(v for k, v in m.items()
                    if k.startswith("pagepulse_mailbox_depth{") and f'pipeline="{pipeline}"' in k)
        now = time.time()
        if consumed > 0 and first is None:
            first = (now, consumed)
        if consumed >= n and inbox == 0:
            last = (now, consumed)
            break
        time.sleep(0.1)
    rate = (last[1] - first[1]) / (last[0] - first[0]) if first and last and last[0] > first[0] else None
    return run, rate


def rss_cpu(pid):
    with open(f"/proc/{pid}/status") as f:
        hwm = int(next(l for l in f if l.startswith("VmHWM")).split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return round(hwm / 1024), round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def wait_flushed(http, pipeline, n, timeout=600):
    """Waits until the state covering all n records is durable: the end-to-end latency histogram
    (observed when a batch's offsets may be committed, i.e. after its flush) counted n records."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = metrics(http)
        if m.get(f'pagepulse_end_to_end_latency_seconds_count{{pipeline="{pipeline}"}}', 0) >= n:
            return True
        time.sleep(0.2)
    return False


def restore(env, http, store):
    """Restarts pagepulse after a crash; returns restore figures."""
    log = env["BENCH_LOG"]
    offset = os.path.getsize(log)
    t0 = time.time()
    run = start(env, log)
    # No help to the broker's group coordinator: pagepulse's membership watchdog rejoins by
    # itself when tansu leaves the crashed member's partitions orphaned.
    while not ready(http):
        if time.time() - t0 > 600:
            raise SystemExit("not ready within 10 minutes")
        time.sleep(0.05)
    wall = time.time() - t0
    m = metrics(http)
    per_partition = []
    for line in log_since(log, offset).splitlines():
        if "state restored" in line and f'store="{store}"' in line:
            took = re.search(r"took=([\d.]+)(ms|s|µs|ns)", line)
            if took:
                v = float(took.group(1)) * {"ms": 1e-3, "s": 1.0, "µs": 1e-6, "ns": 1e-9}[took.group(2)]
                per_partition.append(round(v, 2))
    figures = {
        "restart_to_ready_s": round(wall, 2),
        "watchdog_rejoins": m.get('pagepulse_group_rejoins_total{reason="orphaned_partitions"}', 0),
        "restore_s_per_partition": per_partition,
        "restored_records": m.get(f'pagepulse_state_restored_records_total{{store="{store}"}}', 0),
        "restored_mb": round(m.get(f'pagepulse_state_restored_bytes_total{{store="{store}"}}', 0) / 1e6, 1),
    }
    return run, figures


def kill(run):
    if run and run.poll() is None:
        run.kill()
        run.wait(30)


def workload(name, base_env, http, work, topic, pipeline, n, store):
    results = {}
    for durable in (False, True):
        tag = "changelog" if durable else "memory_only"
        env = dict(base_env, PAGEPULSE_GROUP_ID=f"{name}-{tag}-{os.getpid()}",
                   PAGEPULSE__engine__durable_state="true" if durable else "false",
                   BENCH_LOG=f"{work}/{name}-{tag}.log")
        run, rate = measure_rate(env, http, topic, n, pipeline)
        rss, cpu = rss_cpu(run.pid)
        results[tag] = {"records_per_s": round(rate) if rate else None, "peak_rss_mb": rss, "cpu_s": cpu}
        print(name, tag, results[tag], flush=True)
        if durable:
            if not wait_flushed(http, pipeline, n):
                raise SystemExit("state not flushed within 10 minutes")
            kill(run)  # the crash
            run, figures = restore(env, http, store)
            results["restore"] = figures
            print(name, "restore", figures, flush=True)
        kill(run)
    a, b = results["memory_only"]["records_per_s"], results["changelog"]["records_per_s"]
    results["changelog_throughput_ratio"] = round(b / a, 3) if a and b else None
    return results


def pageviews(base_env, http, work, lines, domains):
    subprocess.run([PP, "demo", "pageviews-dump", "--out", work, "--hours", "1", "--lines", str(lines),
                    "--domains", str(domains), "--gzip", "--start", "2026-11-23T09"],
                   env=base_env, check=True, capture_output=True)
    dump = [os.path.join(work, f) for f in os.listdir(work) if f.startswith("pageviews-")]
    subprocess.run([PP, "ingest", "pageviews", "--quiet"] + dump, env=base_env, check=True, capture_output=True)
    env = dict(base_env, PAGEPULSE__pipelines__pageviews__idle_timeout='"1h"')
    return workload("pageviews", env, http, work, "pageviews", "pageviews", lines, "pageviews")


def fans(base_env, http, work, pages, samples):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": base_env["PAGEPULSE_BROKERS"], "linger.ms": 20,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    topic = base_env["PAGEPULSE_TOPIC_PREFIX"] + "fans.observations"
    t = time.time()
    base = 1_795_420_800  # 2026-11-23T00:00:00Z
    for s in range(samples):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + s * 600))
        for i in range(pages):
            key = f"facebook:page{i}"
            value = f'{{"platform":"facebook","page_id":"page{i}","fans":{1000 + i * 7 + s * (i % 13)},"observed_at":"{at}"}}'
            while True:
                try:
                    p.produce(topic, value.encode(), key.encode())
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
    p.flush(300)
    print(f"produced {pages * samples:,} observations in {time.time() - t:.0f} s", flush=True)
    return workload("fans", base_env, http, work, "fans.observations", "fans", pages * samples, "fans")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("which", nargs="?", default="all", choices=["pageviews", "fans", "all"])
    ap.add_argument("--lines", type=int, default=6_000_000)
    ap.add_argument("--domains", type=int, default=20)
    ap.add_argument("--pages", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-state-")
    kport, hport = free_port(), free_port()
    broker = int(subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), str(kport), f"{work}/tansu.log"],
                                check=True, capture_output=True, text=True).stdout.strip())
    http = f"127.0.0.1:{hport}"
    env = dict(os.environ, PAGEPULSE_BROKERS=f"127.0.0.1:{kport}", PAGEPULSE_TOPIC_PREFIX=f"st{os.getpid()}.",
               PAGEPULSE_HTTP_LISTEN=http, PAGEPULSE_LOG="info,librdkafka=warn",
               PAGEPULSE__kafka__session_timeout='"6s"',
               PAGEPULSE__pipelines__pages__enabled="false", PAGEPULSE__platforms__facebook__enabled="false",
               PAGEPULSE__platforms__mastodon__enabled="false")
    out = {}
    try:
        subprocess.run([PP, "topics", "create"], env=env, check=True, capture_output=True)
        if args.which in ("pageviews", "all"):
            out["pageviews"] = pageviews(env, http, work, args.lines, args.domains)
        if args.which in ("fans", "all"):
            out["fans"] = fans(env, http, work, args.pages, args.samples)
        print(json.dumps(out, indent=2))
    finally:
        os.kill(broker, signal.SIGTERM)
        print(f"logs in {work}")


if __name__ == "__main__":
    main()
