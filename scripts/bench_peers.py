#!/usr/bin/env python3
"""pagepulse's page-view pipeline against the stream processors a user would pick instead.

One command, one generated topic, everything on this machine:
1. a tansu broker in memory (scripts/broker.sh) and the topics (`pagepulse topics create`);
2. `pagepulse demo pageviews-dump` writes one hour of LINES distinct (domain, title) lines over
   DOMAINS Zipf-weighted domains, `pagepulse ingest pageviews` produces them to `pageviews`
   (4 partitions, key = domain, JSON value; plus one `!file` begin and end control record per
   partition), and `pagepulse ingest blacklist` a blacklist (`Main_Page` of every domain);
3. a reference result computed here from the dump file: per (domain, hour) the top 25 titles by
   views minus the blacklist, ties by title;
4. raw read #1: `pagepulse consume pageviews -b -n LINES -f quiet`;
5. `pagepulse run` with only the pageviews pipeline and a fresh group: records/s from the first
   record consumed to all LINES consumed and processed (its /metrics polled every 0.1 s, as
   scripts/bench_pageviews.py), and the time to the hour's final `pageviews.top` records; once with
   `engine.durable_state=false` (state in memory only, as the peers keep it), then with durable
   state (the default: every window change goes to a changelog topic) before, between and after
   the peers: the machine is shared, so each peer is compared with the pagepulse runs just before
   and after it;
6. the peers, from a throwaway virtualenv (created on first use, PyPI versions pinned below), each
   reading the same topic from the start in a process of its own: Quix Streams (with and without
   its state store), Bytewax, Pathway (and Pathway only counting); scripts/peers/*.py say exactly
   what each does; records/s from the first record read to the LINES-th counted;
7. raw read #2; then a table (system, version, records/s, ratio to pagepulse, time to results,
   CPU, result check against the reference), printed and written as Markdown.
Not part of the test suite or CI.

usage: scripts/bench_peers.py [--lines N] [--domains D] [--peers quix,bytewax,pathway]
                              [--venv DIR] [--markdown FILE] [--no-build]
"""
import argparse
import gzip
import heapq
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_pageviews import free_port, metrics  # noqa: E402  (shared with the page-views benchmark)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
PP = os.path.join(TARGET, "release", "pagepulse")
PEERS_DIR = os.path.join(ROOT, "scripts", "peers")
# The versions measured for the README; override with PEERS_PIP="quixstreams bytewax pathway".
PEERS_PIP = os.environ.get("PEERS_PIP", "quixstreams==3.28.1 bytewax==0.21.1 pathway==0.33.0").split()
HOUR = "2026-11-23T09"
TOP_N = 25
OTHER_PIPELINES = ["posts", "fans", "pages", "apps", "messages"]

# key: (name in the table, PyPI package, script in scripts/peers, variant, what it does)
PEERS = {
    "quix": ("Quix Streams", "quixstreams", "quix", "dict",
             "consumer group; `StreamingDataFrame.update()` counts per (domain, hour, title) in a Python "
             "dict (no Quix state, no changelog); at the N-th record, top 25 minus blacklist produced to a "
             "topic; 1 Python thread"),
    "quix-state": ("Quix Streams, stateful", "quixstreams", "quix", "state",
                   "as Quix's docs count per key: `group_by` (domain, hour, title) through a repartition "
                   "topic, then a stateful `apply` adding views in Quix state (RocksDB + changelog topic); "
                   "top 25 minus blacklist produced to a topic at the end"),
    "bytewax": ("Bytewax", "bytewax", "bytewax", "",
                "1 worker; `KafkaSource` (partitions read directly, stops at their ends) → `json.loads` → "
                "`fold_final` per domain: dict (hour, title) → views → top 25 per hour minus blacklist → "
                "`KafkaSink`; no recovery snapshots"),
    "pathway": ("Pathway", "pathway", "pathway", "top",
                "`pw.io.kafka.read` json, static mode → groupby (domain, hour, title) sum → anti-join "
                "blacklist → groupby (domain, hour) `sorted_tuple`, first 25 → `pw.io.kafka.write` (every "
                "change, kept exact after each input batch); 1 engine thread, no persistence"),
    "pathway-count": ("Pathway, counting only", "pathway", "pathway", "count",
                      "less work: the same read and groupby (domain, hour, title) sum, plus totals per "
                      "(domain, hour); no blacklist, no top 25, nothing written to Kafka"),
}


def log(*a):
    print(*a, flush=True)


def ensure_venv(venv):
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "peers-installed.txt")
    want = " ".join(PEERS_PIP)
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        return py
    if not os.path.exists(py):
        log(f"creating the peers' virtualenv in {venv}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    log(f"pip install {want} (a few minutes the first time)")
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q"] + PEERS_PIP, check=True)
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return py


def reference(dump, blacklist):
    """The expected `pageviews.top` articles, computed from the dump file alone."""
    counts = {}
    with gzip.open(dump, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ")
            if len(parts) < 3:
                continue
            d, t, v = parts[0], parts[1], int(parts[2])
            m = counts.setdefault(d, {})
            m[t] = m.get(t, 0) + v
    out = {}
    for d, m in counts.items():
        top = heapq.nsmallest(TOP_N, ((t, v) for t, v in m.items() if (d, t) not in blacklist),
                              key=lambda tv: (-tv[1], tv[0]))
        out[f"{d}|{HOUR}"] = {"total_views": sum(m.values()), "articles": [[t, v] for t, v in top]}
    return out


def check(tops, ref):
    """'ok' when every (domain, hour) has the reference's top 25 and total, else what differs.
    A result without articles (a peer that only counts) is checked on its totals."""
    got = {k: {"total_views": v["total_views"],
               "articles": None if v["articles"] is None else [[a["title"], a["views"]] for a in v["articles"]]}
           for k, v in tops.items()}
    totals_only = all(v["articles"] is None for v in got.values())
    if totals_only:
        ref = {k: {"total_views": v["total_views"], "articles": None} for k, v in ref.items()}
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    wrong = sorted(k for k in set(ref) & set(got) if ref[k] != got[k])
    if not (missing or extra or wrong):
        return f"ok ({len(ref)} windows{', totals only' if totals_only else ''})"
    return f"DIFFERS: {len(missing)} missing, {len(extra)} extra, {len(wrong)} wrong" + (
        f" (e.g. {wrong[0]})" if wrong else "")


def raw_read(env, n):
    out = subprocess.run([PP, "consume", "pageviews", "-b", "-n", str(n), "-f", "quiet"], env=env,
                         capture_output=True, text=True, check=True)
    text = out.stderr + out.stdout
    rate = re.search(r"([\d.]+) records/s", text)
    return float(rate.group(1)) if rate else None, text.strip().splitlines()[-1]


def read_top(env, topic="pageviews.top"):
    """The latest record per key of a results topic (pagepulse's consume, JSON lines)."""
    out = subprocess.run([PP, "consume", topic, "-b", "-f", "json", "--idle-timeout", "3s"], env=env,
                         capture_output=True, text=True, check=True)
    tops = {}
    for line in out.stdout.splitlines():
        rec = json.loads(line)
        if rec.get("value"):
            tops[rec["key"]] = json.loads(rec["value"])
    return tops


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pagepulse(env, n, domains, work, label):
    """pagepulse run until all n records are processed and the hour's final tops are out."""
    hport = free_port()
    env = dict(env, PAGEPULSE_HTTP_LISTEN=f"127.0.0.1:{hport}")
    run = subprocess.Popen([PP, "run"], env=env, stdout=subprocess.DEVNULL,
                           stderr=open(f"{work}/pagepulse-{label}.log", "w"))
    http = f"127.0.0.1:{hport}"
    first = last = final = None
    deadline = time.time() + 900
    m = {}
    try:
        while time.time() < deadline:
            try:
                m = metrics(http)
            except OSError:
                time.sleep(0.1)
                continue
            consumed = m.get('pagepulse_records_consumed_total{topic="pageviews"}', 0.0)
            inbox = sum(v for k, v in m.items()
                        if k.startswith("pagepulse_mailbox_depth{") and 'pipeline="pageviews"' in k)
            produced = m.get('pagepulse_records_produced_total{topic="pageviews.top"}', 0.0)
            now = time.time()
            if consumed > 0 and first is None:
                first = (now, consumed)
            if last is None and consumed >= n and inbox == 0:
                last = (now, consumed)
            if last and produced >= domains:
                final = now
                break
            time.sleep(0.1)
        if not (first and last):
            raise RuntimeError(f"pagepulse ({label}) did not process {n} records in time; log {work}")
        cpu = cpu_of(run.pid)
        with open(f"/proc/{run.pid}/status") as f:
            hwm = int(next(l for l in f if l.startswith("VmHWM")).split()[1])
    finally:
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
    rate = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else None
    return {
        "records_per_s": round(rate) if rate else None,
        "first_to_results_s": round(final - first[0], 2) if final else None,
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(hwm / 1024),
    }


def run_peer(py, name, script, variant, brokers, topic, out_topic, group, n, blacklist_file, work):
    """One peer in a process of its own: its report line, CPU and results."""
    result = f"{work}/{name}.json"
    cmd = [py, os.path.join(PEERS_DIR, f"{script}_pageviews.py"), "--brokers", brokers, "--topic", topic,
           "--out-topic", out_topic, "--group", group, "--n", str(n), "--blacklist", blacklist_file,
           "--result", result, "--variant", variant, "--state-dir", f"{work}/{name}-state"]
    errlog = open(f"{work}/{name}.log", "w")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, text=True, env=env)
    timer = threading.Timer(1200, p.kill)
    timer.start()
    out = p.stdout.read()
    # wait4: the child's own CPU (user + system, all its threads).
    _, status, usage = os.wait4(p.pid, 0)
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t
    if p.returncode != 0:
        tail = open(f"{work}/{name}.log").read().strip().splitlines()[-5:]
        return {"error": f"exit {p.returncode}: " + " / ".join(tail)[-400:]}
    line = json.loads(out.strip().splitlines()[-1])
    line["wall_s"] = round(wall, 1)
    line["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    with open(result, encoding="utf-8") as f:
        line["tops"] = json.load(f)["tops"]
    return line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--domains", type=int, default=20)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/pagepulse/peers-venv"))
    ap.add_argument("--markdown", help="where to write the table (default: the work directory)")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}: one of {', '.join(PEERS)}")
    py = ensure_venv(args.venv) if peers else None
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    load_start = os.getloadavg()[0]
    work = tempfile.mkdtemp(prefix="bench-peers-")
    kport = free_port()
    brokers = f"127.0.0.1:{kport}"
    broker = int(subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), str(kport), f"{work}/tansu.log"],
                                check=True, capture_output=True, text=True).stdout.strip())
    prefix = f"pp{os.getpid()}."
    env = dict(os.environ, PAGEPULSE_BROKERS=brokers, PAGEPULSE_TOPIC_PREFIX=prefix,
               PAGEPULSE_LOG="info,librdkafka=warn")
    for p in OTHER_PIPELINES:
        env[f"PAGEPULSE__pipelines__{p}__enabled"] = "false"
    rows = []
    try:
        subprocess.run([PP, "topics", "create"], env=env, check=True, capture_output=True)
        # The peers' output topics (tansu creates no topic on produce).
        out_topics = {p: f"{prefix}peers.{p}.top" for p in peers}
        if py and out_topics:
            subprocess.run([py, "-c", (
                "import sys; from confluent_kafka.admin import AdminClient, NewTopic;"
                "a = AdminClient({'bootstrap.servers': sys.argv[1]});"
                "[f.result() for f in a.create_topics([NewTopic(t, 4, 1) for t in sys.argv[2:]]).values()]")
                , brokers] + list(out_topics.values()), check=True)
        t = time.time()
        subprocess.run([PP, "demo", "pageviews-dump", "--out", work, "--hours", "1", "--lines", str(args.lines),
                        "--domains", str(args.domains), "--gzip", "--start", HOUR],
                       env=env, check=True, capture_output=True)
        dump = next(os.path.join(work, f) for f in os.listdir(work) if f.startswith("pageviews-"))
        log(f"generated {args.lines:,} lines in {time.time() - t:.1f} s ({os.path.getsize(dump) / 1e6:.0f} MB gzip)")
        domains = sorted({line.split(" ", 1)[0] for line in gzip.open(dump, "rt", encoding="utf-8", errors="replace")})
        blacklist = {(d, "Main_Page") for d in domains}
        blacklist_file = f"{work}/blacklist.txt"
        with open(blacklist_file, "w") as f:
            f.writelines(f"{d} {t}\n" for d, t in sorted(blacklist))
        subprocess.run([PP, "ingest", "blacklist", "--quiet", blacklist_file], env=env, check=True, capture_output=True)
        ing = subprocess.run([PP, "ingest", "pageviews", "--quiet", dump], env=env, capture_output=True, text=True,
                             check=True)
        log("ingest:", " | ".join(l for l in ing.stderr.splitlines() + ing.stdout.splitlines() if "lines/s" in l))
        ref = reference(dump, blacklist)
        log(f"reference: {len(ref)} windows, {len(blacklist)} blacklisted pairs")

        raw1 = raw_read(env, args.lines)
        log("raw read #1:", raw1[1])
        runs = []

        def pagepulse(label, **extra):
            """One `pagepulse run` with a fresh group. Every run writes the same keys of the
            compacted `pageviews.top`; run_pagepulse waited for this run's own final records (its
            produced counter), so the latest per key are this run's."""
            e = dict(env, PAGEPULSE_GROUP_ID=f"pp{os.getpid()}-{label}", **extra)
            r = run_pagepulse(e, args.lines, len(domains), work, label)
            r["check"] = check(read_top(env), ref)
            log(f"pagepulse run ({label}):", json.dumps(r))
            return r

        memory = pagepulse("memory", PAGEPULSE__engine__durable_state="false")
        # pagepulse (durable state) runs before, between and after the peers: the machine is
        # shared, so each peer's ratio uses the mean of the pagepulse runs just before and after it.
        runs.append(pagepulse("durable-0"))
        peer_rows = []
        for i, p in enumerate(peers):
            name, _, script, variant, work_done = PEERS[p]
            r = run_peer(py, p, script, variant, brokers, f"{prefix}pageviews", out_topics[p], f"{prefix}{p}",
                         args.lines, blacklist_file, work)
            if "tops" in r:
                r["check"] = check(r.pop("tops"), ref)
                if r.get("counted") != args.lines:
                    r["check"] += f"; counted {r.get('counted')} of {args.lines}"
            log(f"{name}:", json.dumps(r))
            runs.append(pagepulse(f"durable-{i + 1}"))
            around = [x["records_per_s"] for x in runs[-2:] if x["records_per_s"]]
            r["base"] = sum(around) / len(around) if around else None
            peer_rows.append((name, r.get("version", "?"), work_done, r))
        rates = sorted(x["records_per_s"] for x in runs if x["records_per_s"])
        durable = dict(runs[0])
        durable["records_per_s"] = rates[len(rates) // 2]
        durable["cpu_s"] = sorted(x["cpu_s"] for x in runs)[len(runs) // 2]
        durable["first_to_results_s"] = sorted(x["first_to_results_s"] or 0 for x in runs)[len(runs) // 2]
        durable["check"] = "ok" if all(x["check"].startswith("ok") for x in runs) else "DIFFERS in a run"
        durable["check"] += f" ({len(runs)} runs)"
        durable["base"] = durable["records_per_s"]
        memory["base"] = runs[0]["records_per_s"]
        version = subprocess.run([PP, "--version"], capture_output=True, text=True).stdout.split()[-1]
        rows = [("pagepulse (durable state, the default)", version,
                 "decode + validate, hourly counts per (domain, title), trending skipped (file batch), every "
                 "window change to a changelog topic, top 25 minus blacklist (a global table read from its "
                 "topic) to `pageviews.top` when the file's end record is in; 2 cores. Run before, between "
                 f"and after the peers ({len(runs)} runs: {', '.join(f'{x / 1e3:.0f}k' for x in rates)} records/s; "
                 "the table shows the median, each peer's ratio uses the runs just before and after it)",
                 durable),
                ("pagepulse, `engine.durable_state=false`", version,
                 "the same without the changelog (state in memory only, as the peers), run once before the "
                 "first durable run (its ratio is to that run)", memory)] + peer_rows
        raw2 = raw_read(env, args.lines)
        log("raw read #2:", raw2[1])
        raw = [x for x in (raw1[0], raw2[0]) if x]
        rows.insert(0, ("raw read (`pagepulse consume -f quiet`)", version,
                        "read every record, no decoding (librdkafka, pagepulse's consumer settings); "
                        f"runs before and after: {', '.join(f'{x / 1e3:.0f}k' for x in raw)}",
                        {"records_per_s": round(sum(raw) / len(raw)) if raw else None,
                         "base": rows[0][3]["records_per_s"]}))
    finally:
        os.kill(broker, signal.SIGTERM)
    args.load = (load_start, os.getloadavg()[0])
    md = table(rows, args)
    log("\n" + md)
    path = args.markdown or f"{work}/peers.md"
    with open(path, "w") as f:
        f.write(md + "\n")
    log(f"table in {path}; logs in {work}")


def table(rows, args):
    out = [f"{args.lines:,} page views (one hour, {args.domains} domains, 4 partitions), tansu in memory, "
           f"{os.cpu_count()} cores; records/s from the first record read to the last one counted; CPU: the "
           "process's user + system seconds, all threads (the broker's not included); load average "
           f"{args.load[0]:.1f} at the start, {args.load[1]:.1f} at the end.",
           "",
           "| system | version | records/s | ratio to pagepulse | first record → results | CPU s (µs per record) "
           "| results |",
           "|---|---|---|---|---|---|---|"]
    for name, version, _, r in rows:
        if "error" in r:
            out.append(f"| {name} | {version} | could not run: {r['error']} | | | | |")
            continue
        rate = r.get("records_per_s")
        base = r.get("base")
        ratio = f"{rate / base:.2f}" if rate and base else ""
        res = r.get("first_to_results_s")
        out.append(f"| {name} | {version} | {rate:,} | {ratio} | "
                   f"{f'{res:.1f} s' if res is not None else ''} | "
                   f"{f'{cpu} ({cpu / args.lines * 1e6:.1f})' if (cpu := r.get('cpu_s')) else ''} | "
                   f"{r.get('check', '')} |")
    out += ["", "What each does:", ""]
    out += [f"- **{name}**: {work}" for name, _, work, _ in rows]
    return "\n".join(out)


if __name__ == "__main__":
    main()
