"""What the three peers of scripts/bench_peers.py share: arguments, the meter, the top-N report.

Each peer reads the `pageviews` topic from the start, counts views per (domain, hour, title), and
once all N view records are counted writes, per (domain, hour), the top 25 titles minus a
blacklist to an output topic, in the form of pagepulse's `pageviews.top` records. It prints one
JSON line with its timings; the orchestrator checks the results against a reference computed
from the dump file.

Records (see topics/pageviews.json): key = domain, value
`{"domain","title","views","ts"(epoch ms),"batch"}`; control records have key `!file` and are
skipped here (pagepulse uses them to close the hour).
"""
import argparse
import heapq
import json
import time

HOUR_MS = 3_600_000
TOP_N = 25
CONTROL_KEY = b"!file"

# The consumer settings pagepulse uses (src/kafka/client.rs): tansu 0.6 holds every fetch for
# fetch.wait.max.ms, which caps a reader with librdkafka's 500 ms default at ~150k records/s.
CONSUMER_TUNING = {
    "fetch.wait.max.ms": 10,
    "fetch.queue.backoff.ms": 10,
    "queued.min.messages": 200000,
    "session.timeout.ms": 6000,
}


def args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out-topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--n", type=int, required=True, help="view records to count (control records excluded)")
    ap.add_argument("--blacklist", required=True, help="file of `domain title` lines")
    ap.add_argument("--result", required=True, help="where to write the report as JSON, for the check")
    ap.add_argument("--variant", default="", help="a peer's variant of the work (see its docstring)")
    ap.add_argument("--state-dir", default=None, help="where a peer keeps local state (Quix's RocksDB)")
    return ap.parse_args()


def load_blacklist(path):
    out = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                domain, title = line.split(" ", 1)
                out.add((domain, title))
    return out


class Meter:
    """First input record seen to the N-th view counted: the rate each peer is measured by."""

    def __init__(self, n):
        self.n = n
        self.count = 0
        self.first = None
        self.last = None
        self.start = time.time()

    def saw(self):
        """An input record arrived (called before any processing of it)."""
        if self.first is None:
            self.first = time.time()

    def tick(self):
        """A view was counted; true for the N-th."""
        self.count += 1
        if self.first is None:
            self.first = time.time()
        if self.count == self.n:
            self.last = time.time()
            return True
        return False


def hour_name(hour_ms):
    return time.strftime("%Y-%m-%dT%H", time.gmtime(hour_ms / 1000))


def top_records(counts, blacklist):
    """counts: {(domain, hour_ms): {title: views}} -> [(key, value)] like `pageviews.top`.

    Top TOP_N by views, ties by title in ascending byte order (Python's str order is code point
    order, the same as UTF-8 byte order), blacklisted pairs excluded (but counted in total)."""
    out = []
    for (domain, hour), titles in counts.items():
        ranked = heapq.nsmallest(TOP_N, ((t, v) for t, v in titles.items() if (domain, t) not in blacklist),
                                 key=lambda tv: (-tv[1], tv[0]))
        value = {
            "domain": domain,
            "hour_start": time.strftime("%Y-%m-%dT%H:00:00.000Z", time.gmtime(hour / 1000)),
            "final": True,
            "total_views": sum(titles.values()),
            "late_events": 0,
            "articles": [{"rank": i + 1, "title": t, "views": v} for i, (t, v) in enumerate(ranked)],
        }
        out.append((f"{domain}|{hour_name(hour)}", json.dumps(value, ensure_ascii=False)))
    return out


def report(a, meter, tops, done, **extra):
    """Writes the results (for the check) and prints the timings as one JSON line."""
    with open(a.result, "w", encoding="utf-8") as f:
        json.dump({"tops": {k: json.loads(v) for k, v in tops}}, f, ensure_ascii=False)
    line = {
        "counted": meter.count,
        "first_to_last_s": (meter.last - meter.first) if meter.last and meter.first else None,
        "first_to_results_s": (done - meter.first) if meter.first else None,
        "start_to_first_s": (meter.first - meter.start) if meter.first else None,
        "records_per_s": round(meter.count / (meter.last - meter.first)) if meter.last and meter.last > meter.first else None,
        "results": len(tops),
    }
    line.update(extra)
    print(json.dumps(line), flush=True)
