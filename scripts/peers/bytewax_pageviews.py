"""Bytewax peer of scripts/bench_peers.py (run with the peers' virtualenv).

Dataflow: `KafkaSource(tail=False)` (reads every partition from the beginning, no consumer group,
and ends at the end of each partition) -> `filter_map` (json.loads, control records dropped, keyed
by domain) -> `fold_final` per domain: a dict of (hour, title) -> views, emitted when the input
ends -> `flat_map`: the top 25 per hour minus the blacklist -> `KafkaSink` to the output topic.
One worker (`run_main`), no recovery (no state snapshots).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import bytewax.operators as op  # noqa: E402
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.testing import run_main  # noqa: E402


def main():
    a = common.args()
    blacklist = common.load_blacklist(a.blacklist)
    meter = common.Meter(a.n)
    done = {}
    tops_all = []

    def parse(msg):
        meter.saw()
        if msg.key == common.CONTROL_KEY:
            return None
        v = json.loads(msg.value)
        ts = v["ts"]
        return v["domain"], (ts - ts % common.HOUR_MS, v["title"], v.get("views", 1))

    def fold(acc, view):
        hour, title, views = view
        acc[(hour, title)] = acc.get((hour, title), 0) + views
        meter.tick()
        return acc

    def tops(domain_acc):
        domain, acc = domain_acc
        counts = {}
        for (hour, title), views in acc.items():
            counts.setdefault((domain, hour), {})[title] = views
        recs = common.top_records(counts, blacklist)
        tops_all.extend(recs)
        return [KafkaSinkMessage(k.encode(), v.encode()) for k, v in recs]

    flow = Dataflow("pageviews_top")
    src = op.input("in", flow, KafkaSource([a.brokers], [a.topic], tail=False,
                                           add_config={k: str(v) for k, v in common.CONSUMER_TUNING.items()}))
    views = op.filter_map("parse", src, parse)
    counted = op.fold_final("count", views, dict, fold)
    out = op.flat_map("top", counted, tops)
    op.output("out", out, KafkaSink([a.brokers], a.out_topic))
    run_main(flow)
    done = time.time()
    import importlib.metadata
    common.report(a, meter, tops_all, done, version=importlib.metadata.version("bytewax"))


if __name__ == "__main__":
    main()
