#!/usr/bin/env python3
"""Scale-out benchmark (issue 16): query latency local vs forwarded, fail-over time, and the
throughput of one, two and three instances on the same input. Not part of the test suite.

Everything runs on this machine, side by side in one run: a tansu broker (in memory) and
`target/release/pagepulse run` instances on loopback ports, in one consumer group per phase.

1. Latency. Two instances (fans pipeline only) and PAGES pages observed. For each instance,
   REQUESTS reads of pages held locally and REQUESTS reads of pages held by the other instance
   (forwarded, `http.forward = "proxy"`, with the cluster secret), over keep-alive connections,
   one at a time: p50 / p99 / max in milliseconds.
2. Fail-over. One of the two instances is SIGKILLed; a new observation of a page it held is
   written every 50 ms. Reported: the time from the kill until the survivor answers that page
   with the newest value (its partitions processed elsewhere), and the time until the survivor
   holds every partition.
3. Throughput. N posts (the demo generator) are written once to a fresh topic prefix; then, for
   K in 1, 2, 3, a fresh consumer group of K instances (posts pipeline only) processes all of
   them: records/s from the first analysis acknowledged to the last (the sum of
   `pagepulse_records_produced_total{topic="posts.analysis"}` over the instances), and the CPU
   the instances and the broker used.

usage: scripts/bench_cluster.py [--pages N] [--requests N] [--posts N] [--no-build]
"""
import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PP = os.path.join(ROOT, "target", "release", "pagepulse")
TICKS = os.sysconf("SC_CLK_TCK")
CLUSTER = "bench-cluster-secret-0123456789"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except OSError:
        return 0.0


def metrics(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def wait(what, timeout, f, every=0.05):
    deadline = time.time() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.time() > deadline:
            sys.exit(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Env:
    def __init__(self, brokers, prefix, group):
        self.brokers, self.prefix, self.group = brokers, prefix, group

    def env(self, extra=None):
        e = dict(os.environ)
        e.update({
            "PAGEPULSE_BROKERS": self.brokers,
            "PAGEPULSE_TOPIC_PREFIX": self.prefix,
            "PAGEPULSE_GROUP_ID": self.group,
            "PAGEPULSE_LOG": "warn",
            "PAGEPULSE__http__public_reads": "true",
            "PAGEPULSE__kafka__session_timeout": '"6s"',
            "PAGEPULSE_CLUSTER_TOKEN": CLUSTER,
        })
        e.update(extra or {})
        return e

    def run(self, *args):
        subprocess.run([PP, *args], env=self.env(), check=True, stdout=subprocess.DEVNULL)

    def start(self, only, logdir):
        port = free_port()
        addr = f"127.0.0.1:{port}"
        extra = {"PAGEPULSE_HTTP_LISTEN": addr}
        for p in ["pages", "fans", "posts", "pageviews", "messages", "apps"]:
            if p not in only:
                extra[f"PAGEPULSE__pipelines__{p}__enabled"] = "false"
        log = open(os.path.join(logdir, f"pp-{port}.log"), "w")
        proc = subprocess.Popen([PP, "run"], env=self.env(extra), stdout=subprocess.DEVNULL, stderr=log)
        return proc, addr


def ready(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def produce(brokers, topic, records):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 5, "partitioner": "murmur2_random",
                  "enable.idempotence": True})
    for k, v in records:
        while True:
            try:
                p.produce(topic, key=k.encode(), value=v.encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return r.status, dict(r.getheaders()), body


def latency_and_failover(brokers, args, logdir):
    env = Env(brokers, f"bc{os.getpid()}a.", f"bc{os.getpid()}a")
    env.run("topics", "create")
    now = int(time.time() * 1000)
    topic = env.prefix + "fans.observations"
    recs = []
    for i in range(args.pages):
        key = f"facebook:bench-{i}"
        for k, at in [(0, now - 86_400_000), (1, now - 60_000)]:
            recs.append((key, json.dumps({"platform": "facebook", "page_id": f"bench-{i}", "fans": 1000 + i + k * 7,
                                          "observed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))})))
    produce(brokers, topic, recs)
    insts = [env.start({"fans"}, logdir) for _ in range(2)]
    for _, addr in insts:
        wait(f"{addr} ready", 120, lambda: ready(addr))
    wait("both instances hold partitions", 120,
         lambda: all(metrics(a).get("pagepulse_assigned_partitions", 0) >= 1 for _, a in insts))
    # A page is held locally or forwarded: the `X-Pagepulse-Served-By` header tells which.
    results = {}
    for idx, (_, addr) in enumerate(insts):
        host, port = addr.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        local, forwarded = [], []
        wait(f"{addr} answers every page", 120,
             lambda: all(get(conn, f"/api/v1/pages/facebook:bench-{i}?series=false")[0] == 200 for i in range(0, args.pages, 97)))
        i = 0
        while len(local) < args.requests or len(forwarded) < args.requests:
            key = f"facebook:bench-{i % args.pages}"
            t = time.perf_counter()
            status, headers, _ = get(conn, f"/api/v1/pages/{key}?series=false")
            dt = (time.perf_counter() - t) * 1000
            i += 1
            if status != 200:
                continue
            (forwarded if "x-pagepulse-served-by" in {k.lower() for k in headers} else local).append(dt)
        results[addr] = (local[:args.requests], forwarded[:args.requests])
        conn.close()
    print("\n## Query latency (GET /api/v1/pages/{key}?series=false, one at a time, keep-alive)")
    print(f"{'instance':<22} {'kind':<10} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for addr, (local, fwd) in results.items():
        for kind, xs in [("local", local), ("forwarded", fwd)]:
            print(f"{addr:<22} {kind:<10} {len(xs):>6} {pct(xs, .5):>8.2f} {pct(xs, .99):>8.2f} {max(xs):>8.2f}")

    # Fail-over: kill instance 1; watch a page it held, through instance 0.
    victim_proc, victim = insts[1]
    survivor = insts[0][1]
    host, port = survivor.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    moved = None
    for i in range(args.pages):
        status, headers, _ = get(conn, f"/api/v1/pages/facebook:bench-{i}?series=false")
        if status == 200 and "x-pagepulse-served-by" in {k.lower() for k in headers}:
            moved = i
            break
    assert moved is not None, "no page held by the victim"
    from confluent_kafka.admin import AdminClient
    md = AdminClient({"bootstrap.servers": brokers}).list_topics(topic, timeout=10)
    total_parts = len(md.topics[topic].partitions)
    victim_proc.send_signal(signal.SIGKILL)
    killed = time.time()
    victim_proc.wait()
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 0, "partitioner": "murmur2_random"})
    seq = 0
    answered = None
    held_all = None
    while time.time() - killed < 120 and (answered is None or held_all is None):
        seq += 1
        fans = 500_000 + seq
        p.produce(topic, key=f"facebook:bench-{moved}".encode(), value=json.dumps(
            {"platform": "facebook", "page_id": f"bench-{moved}", "fans": fans,
             "observed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        p.poll(0)
        try:
            status, _, body = get(conn, f"/api/v1/pages/facebook:bench-{moved}?series=false")
        except (OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            continue
        if answered is None and status == 200 and json.loads(body)["stats"]["fans"] >= 500_000:
            answered = time.time() - killed
        if held_all is None and metrics(survivor).get("pagepulse_assigned_partitions", 0) >= total_parts:
            held_all = time.time() - killed
        time.sleep(0.05)
    p.flush(10)
    conn.close()
    print("\n## Fail-over (SIGKILL of one of two instances, kafka.session_timeout = 6s)")
    print(f"survivor holds every fans.observations partition: {held_all:.1f} s after the kill" if held_all else "survivor never held every partition")
    print(f"a page of the dead instance answered with a new observation by the survivor: {answered:.1f} s after the kill" if answered else "never answered")
    for proc, _ in insts:
        proc.kill()
        proc.wait()


def throughput(brokers, args, logdir):
    env = Env(brokers, f"bc{os.getpid()}b.", "unused")
    env.run("topics", "create")
    env.run("demo", "posts", "--rate", "0", "--count", str(args.posts))
    broker_pid = int(open(os.path.join(logdir, "broker.pid")).read())
    print(f"\n## Throughput: {args.posts} demo posts, posts pipeline only, a fresh group per row")
    print(f"{'instances':>9} {'records/s':>10} {'ratio':>6} {'pagepulse CPU s':>16} {'broker CPU s':>13} {'seconds':>8}")
    base = None
    for k in (1, 2, 3):
        env.group = f"bc{os.getpid()}b{k}"
        insts = [env.start({"posts"}, logdir) for _ in range(k)]
        cpu0 = [cpu_seconds(p.pid) for p, _ in insts]
        b0 = cpu_seconds(broker_pid)

        def done():
            return sum(metrics(a).get('pagepulse_records_produced_total{topic="posts.analysis"}', 0) for _, a in insts)
        first = wait("first analyses", 180, lambda: done() > 0 and time.time())
        start_count = done()
        last = wait("every analysis", 900, lambda: done() >= args.posts and time.time(), every=0.1)
        rate = (args.posts - start_count) / max(last - first, 1e-6)
        cpu = sum(cpu_seconds(p.pid) - c for (p, _), c in zip(insts, cpu0))
        bcpu = cpu_seconds(broker_pid) - b0
        base = base or rate
        print(f"{k:>9} {rate:>10.0f} {rate / base:>6.2f} {cpu:>16.1f} {bcpu:>13.1f} {last - first:>8.1f}")
        for p, _ in insts:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--posts", type=int, default=300_000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated phases to skip: latency, throughput")
    args = ap.parse_args()
    print(f"# {' '.join(sys.argv)}  ({time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    logdir = tempfile.mkdtemp(prefix="pagepulse-bench-cluster.")
    port = free_port()
    pid = subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), str(port), os.path.join(logdir, "tansu.log")],
                         check=True, capture_output=True, text=True).stdout.strip()
    open(os.path.join(logdir, "broker.pid"), "w").write(pid)
    brokers = f"127.0.0.1:{port}"
    try:
        if "latency" not in args.skip:
            latency_and_failover(brokers, args, logdir)
        if "throughput" not in args.skip:
            throughput(brokers, args, logdir)
    finally:
        os.kill(int(pid), signal.SIGTERM)
    print(f"\nlogs: {logdir}")


if __name__ == "__main__":
    main()
