#!/usr/bin/env python3
"""Fans memory and restore, as a user sees them: the resident memory of `pagepulse run` fed
through the broker, and how long an instance takes to come back with a million pages.

On this machine, side by side: a tansu broker (in memory) and `pagepulse run` (release build,
fans pipeline; pages polling off).

  memory   Feeds `fans.observations` in stages with `pagepulse demo observations` (the simulator's
           fan counts, every page at its own phase plus a 0..JITTER ms delay, as the poller stamps
           them): DAYS of history per page, every 10 minutes for the last FINE_HOURS and hourly
           before (the state kept is the same as for 10-minute samples throughout: beyond 7 days
           only one point per hour is kept). After each stage, once every observation is
           processed, it reads VmRSS and `pagepulse_memory_bytes{area}`: resident, rust_heap
           (mimalloc committed), c_heap (glibc malloc: librdkafka), kafka_fetch_queue and
           kafka_produce_queue. Prints the growth per page between stages and what the first
           stage added beyond its pages.
  restore  Writes the fans changelog of PAGES pages x HOURS of 10-minute samples
           (`pagepulse demo fans-changelog`, the pipeline's own series code), starts
           `pagepulse run`, and times: start -> /readyz 200 (every partition restored), and
           start -> one new observation of each of 1,000 pages processed (`fans.stats` written
           and acknowledged: processing again). Also RSS after the restore.

usage: [PAGEPULSE_BIN=path] scripts/bench_fans_memory.py memory [--pages N] [--stages N,N,...] [--days D] [--fine-hours H]
                                           [--jitter-ms J] [--no-build]
       scripts/bench_fans_memory.py restore [--pages N] [--hours H] [--jitter-ms J] [--no-build]
Not part of the test suite.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pageviews import free_port, metrics  # noqa: E402
from bench_state import ready  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PP = os.environ.get("PAGEPULSE_BIN", os.path.join(ROOT, "target", "release", "pagepulse"))
AREAS = ["resident", "rust_heap", "c_heap", "kafka_fetch_queue", "kafka_produce_queue"]


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def areas(http):
    m = metrics(http)
    return {a: int(m.get(f'pagepulse_memory_bytes{{area="{a}"}}', 0)) for a in AREAS}


def wait_processed(http, n, timeout=3600):
    """Waits until n observations are consumed, every fans inbox is empty and the end-to-end
    histogram (observed once a batch's outputs and state are acknowledged) counted n records."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            m = metrics(http)
        except OSError:
            time.sleep(0.2)
            continue
        consumed = m.get('pagepulse_records_consumed_total{topic="fans.observations"}', 0)
        inbox = sum(v for k, v in m.items() if k.startswith("pagepulse_mailbox_depth{") and 'pipeline="fans"' in k)
        done = m.get('pagepulse_end_to_end_latency_seconds_count{pipeline="fans"}', 0)
        if consumed >= n and inbox == 0 and done >= n:
            return
        time.sleep(0.2)
    raise SystemExit(f"{n} observations not processed within {timeout} s")


def demo(env, what, *args):
    r = subprocess.run([PP, "demo", what, *map(str, args)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"demo {what} failed: {r.stderr}")
    return r.stderr.strip()


def memory(env, http, args, work):
    run = subprocess.Popen([PP, "run"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/run.log", "w"))
    try:
        t = time.time()
        while not ready(http):
            if time.time() - t > 120:
                raise SystemExit("pagepulse not ready in 120 s")
            time.sleep(0.1)
        time.sleep(3)  # idle figures once the clients have settled; not waiting for a result
        rows = [{"pages": 0, "vmrss": vm(run.pid, "VmRSS"), **areas(http)}]
        print(json.dumps(rows[-1]), flush=True)
        end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() // 3600 * 3600))
        end_coarse = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() // 3600 * 3600 - args.fine_hours * 3600))
        first, sent = 1, 0
        for total in args.stages:
            pages = total - first + 1
            t = time.time()
            coarse_hours = args.days * 24 - args.fine_hours
            if coarse_hours > 0:
                print(demo(env, "observations", "--first", first, "--pages", pages, "--hours", coarse_hours,
                           "--interval-s", 3600, "--jitter-ms", args.jitter_ms, "--end", end_coarse), flush=True)
                sent += pages * coarse_hours
            print(demo(env, "observations", "--first", first, "--pages", pages, "--hours", args.fine_hours,
                       "--interval-s", 600, "--jitter-ms", args.jitter_ms, "--end", end), flush=True)
            sent += pages * args.fine_hours * 6
            wait_processed(http, sent)
            row = {"pages": total, "observations": sent, "seconds": round(time.time() - t, 1),
                   "vmrss": vm(run.pid, "VmRSS"), **areas(http)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            first = total + 1
        print("\n| pages | VmRSS MB | rust_heap MB | c_heap MB | fetch queue MB | produce queue MB | RSS growth per page since previous row |")
        print("|---|---|---|---|---|---|---|")
        for prev, row in zip([None] + rows, rows):
            per = "" if prev is None else f"{(row['vmrss'] - prev['vmrss']) / (row['pages'] - prev['pages']):,.0f} B"
            print(f"| {row['pages']:,} | {row['vmrss'] / 2**20:,.0f} | {row['rust_heap'] / 2**20:,.0f} | "
                  f"{row['c_heap'] / 2**20:,.0f} | {row['kafka_fetch_queue'] / 2**20:,.1f} | "
                  f"{row['kafka_produce_queue'] / 2**20:,.1f} | {per} |")
        return rows
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)


def restore(env, http, args, work):
    t = time.time()
    print(demo(env, "fans-changelog", "--pages", args.pages, "--hours", args.hours, "--interval-s", 600,
               "--jitter-ms", args.jitter_ms), flush=True)
    print(f"changelog written in {time.time() - t:.1f} s", flush=True)
    t0 = time.time()
    run = subprocess.Popen([PP, "run"], env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/run.log", "w"))
    try:
        while not ready(http):
            if time.time() - t0 > 600:
                raise SystemExit("not ready within 10 minutes")
            time.sleep(0.02)
        t_ready = time.time() - t0
        # One new slot for 1,000 of the restored pages, produced once the instance is ready.
        demo(env, "observations", "--pages", 1000, "--hours", 1, "--interval-s", 3600, "--jitter-ms", 100,
             "--end", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)))
        wait_processed(http, 1000, timeout=600)
        t_processing = time.time() - t0
        m = metrics(http)
        out = {
            "pages": args.pages,
            "hours": args.hours,
            "start_to_ready_s": round(t_ready, 2),
            "start_to_new_observations_processed_s": round(t_processing, 2),
            "restored_records": m.get('pagepulse_state_restored_records_total{store="fans"}', 0),
            "restored_mb": round(m.get('pagepulse_state_restored_bytes_total{store="fans"}', 0) / 1e6, 1),
            "vmrss_mb": round(vm(run.pid, "VmRSS") / 2**20),
            "vmhwm_mb": round(vm(run.pid, "VmHWM") / 2**20),
            "rss_bytes_per_page": round(vm(run.pid, "VmRSS") / args.pages),
            **{k: round(v / 2**20) for k, v in areas(http).items()},
        }
        print(json.dumps(out, indent=2), flush=True)
        return out
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["memory", "restore"])
    ap.add_argument("--pages", type=int, default=None)
    ap.add_argument("--stages", default="2000,6000,10000")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--fine-hours", type=int, default=169)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--jitter-ms", type=int, default=100)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    args.stages = [int(s) for s in args.stages.split(",")] if args.pages is None else [args.pages]
    args.pages = args.pages or 1_000_000
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-fans-")
    kport, hport = free_port(), free_port()
    broker = int(subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), str(kport), f"{work}/tansu.log"],
                                check=True, capture_output=True, text=True).stdout.strip())
    http = f"127.0.0.1:{hport}"
    env = dict(os.environ, PAGEPULSE_BROKERS=f"127.0.0.1:{kport}", PAGEPULSE_TOPIC_PREFIX=f"fm{os.getpid()}.",
               PAGEPULSE_GROUP_ID=f"fm{os.getpid()}", PAGEPULSE_HTTP_LISTEN=http,
               PAGEPULSE_LOG="info,librdkafka=warn", PAGEPULSE__kafka__session_timeout='"6s"',
               PAGEPULSE__pipelines__pages__enabled="false", PAGEPULSE__platforms__facebook__enabled="false",
               PAGEPULSE__platforms__mastodon__enabled="false")
    try:
        subprocess.run([PP, "topics", "create"], env=env, check=True, capture_output=True)
        if args.mode == "memory":
            memory(env, http, args, work)
        else:
            restore(env, http, args, work)
    finally:
        os.kill(broker, signal.SIGTERM)
        print(f"logs in {work}")


if __name__ == "__main__":
    main()
