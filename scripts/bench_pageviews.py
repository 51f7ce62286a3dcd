#!/usr/bin/env python3
"""Page views benchmark: a real-size hour through the broker, next to the raw read of the same topic.

On this machine, side by side: a tansu broker (in memory) and pagepulse.
1. `pagepulse demo pageviews-dump` writes one gzipped hour of LINES lines (Zipf over DOMAINS).
2. `pagepulse ingest pageviews` produces it (its summary: lines/s, MB/s; peak RSS by /usr/bin/time).
3. raw read #1: `pagepulse consume pageviews -b -n LINES -f quiet` (the same consumer settings as
   `pagepulse run`, no group, nothing committed).
4. `pagepulse run` with a fresh group: /metrics polled every 0.1 s; the rate is LINES over the time
   from the first poll that saw records consumed to the first that saw all LINES consumed and
   processed (`pagepulse_records_consumed_total{topic="pageviews"}` and the tasks' inboxes empty).
   Then it waits for the hour's final `pageviews.top` records (idle_timeout 5 s here).
5. raw read #2, for drift; the ratio uses the mean of both raw reads.
Peak RSS of `pagepulse run` from /proc (VmHWM). Not part of the test suite.

usage: scripts/bench_pageviews.py [--lines N] [--domains D] [--no-build]
(PAGEPULSE_BIN=path: measure that binary, e.g. an older build for a before/after pair, with --no-build)
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
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The binary measured: PAGEPULSE_BIN, else the release build (in CARGO_TARGET_DIR if set).
PP = os.environ.get("PAGEPULSE_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"),
                                                     "release", "pagepulse")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(http):
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def get(m, name):
    return m.get(name, 0.0)


def raw_read(env, n):
    out = subprocess.run([PP, "consume", "pageviews", "-b", "-n", str(n), "-f", "quiet"], env=env,
                         capture_output=True, text=True, check=True)
    text = out.stderr + out.stdout
    rate = re.search(r"([\d.]+) records/s", text)
    return float(rate.group(1)) if rate else None, text.strip().splitlines()[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=6_000_000)
    ap.add_argument("--domains", type=int, default=20)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="bench-pageviews-")
    kport, hport = free_port(), free_port()
    broker = int(subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), str(kport), f"{work}/tansu.log"],
                                check=True, capture_output=True, text=True).stdout.strip())
    env = dict(os.environ, PAGEPULSE_BROKERS=f"127.0.0.1:{kport}", PAGEPULSE_TOPIC_PREFIX=f"pv{os.getpid()}.",
               PAGEPULSE_GROUP_ID=f"pv{os.getpid()}", PAGEPULSE_HTTP_LISTEN=f"127.0.0.1:{hport}",
               PAGEPULSE__pipelines__pageviews__idle_timeout='"5s"', PAGEPULSE_LOG="info,librdkafka=warn")
    run = None
    try:
        subprocess.run([PP, "topics", "create"], env=env, check=True, capture_output=True)
        t = time.time()
        subprocess.run([PP, "demo", "pageviews-dump", "--out", work, "--hours", "1", "--lines", str(args.lines),
                        "--domains", str(args.domains), "--gzip", "--start", "2026-11-23T09"],
                       env=env, check=True, capture_output=True)
        dump = [os.path.join(work, f) for f in os.listdir(work) if f.startswith("pageviews-")]
        print(f"generated {args.lines:,} lines in {time.time() - t:.1f} s: {dump[0]} "
              f"({os.path.getsize(dump[0]) / 1e6:.0f} MB)", flush=True)
        ing = subprocess.run(["/usr/bin/time", "-v", PP, "ingest", "pageviews", "--quiet"] + dump, env=env,
                             capture_output=True, text=True, check=True)
        summary = [l for l in ing.stderr.splitlines() if "lines/s" in l or "produced" in l]
        peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", ing.stderr)
        print("ingest:", " | ".join(summary), f"| peak RSS {int(peak.group(1)) / 1024:.0f} MB" if peak else "",
              flush=True)
        raw1 = raw_read(env, args.lines)
        print("raw read #1:", raw1[1], flush=True)
        run = subprocess.Popen([PP, "run"], env=env, stdout=subprocess.DEVNULL,
                               stderr=open(f"{work}/pagepulse.log", "w"))
        http = f"127.0.0.1:{hport}"
        first = last = None
        deadline = time.time() + 900
        while time.time() < deadline:
            try:
                m = metrics(http)
            except OSError:
                time.sleep(0.1)
                continue
            consumed = get(m, 'pagepulse_records_consumed_total{topic="pageviews"}')
            inbox = sum(v for k, v in m.items()
                        if k.startswith("pagepulse_mailbox_depth{") and 'pipeline="pageviews"' in k)
            now = time.time()
            if consumed > 0 and first is None:
                first = (now, consumed)
            if consumed >= args.lines and inbox == 0:
                last = (now, consumed)
                break
            time.sleep(0.1)
        rate = (last[1] - first[1]) / (last[0] - first[0]) if first and last and last[0] > first[0] else None
        # The hour's final records: one per domain once the partition is idle.
        while time.time() < deadline:
            m = metrics(http)
            if get(m, 'pagepulse_records_produced_total{topic="pageviews.top"}') >= args.domains:
                break
            time.sleep(0.2)
        with open(f"/proc/{run.pid}/status") as f:
            hwm = int(next(l for l in f if l.startswith("VmHWM")).split()[1])
        with open(f"/proc/{run.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        run.send_signal(signal.SIGTERM)
        run.wait(30)
        raw2 = raw_read(env, args.lines)
        print("raw read #2:", raw2[1], flush=True)
        raw = [r for r in (raw1[0], raw2[0]) if r]
        mean = sum(raw) / len(raw) if raw else None
        print(json.dumps({
            "binary": PP,
            "lines": args.lines,
            "pagepulse_records_per_s": round(rate) if rate else None,
            "raw_read_records_per_s": [round(r) for r in raw],
            "ratio_to_raw_read": round(rate / mean, 3) if rate and mean else None,
            "pagepulse_peak_rss_mb": round(hwm / 1024),
            "pagepulse_cpu_s": round(cpu, 1),
            "final_top_records": get(m, 'pagepulse_records_produced_total{topic="pageviews.top"}'),
        }, indent=2))
    finally:
        if run and run.poll() is None:
            run.kill()
        os.kill(broker, signal.SIGTERM)
        print(f"logs in {work}")


if __name__ == "__main__":
    main()
