"""Quix Streams peer of scripts/bench_peers.py (run with the peers' virtualenv).

A `StreamingDataFrame` over `pageviews` (JSON values, consumer group, at-least-once, offsets
committed every 5 s as Quix does by default), in one of two variants:

- `--variant dict` (default): `.update()` counts views per (domain, hour, title) in a Python dict:
  not Quix state (no RocksDB, no changelog topic), so nothing survives a restart. The fastest way
  Quix can do it.
- `--variant state`: what Quix's documentation does for per-key counts: `group_by` (domain, hour,
  title), which writes every record to a repartition topic and reads it back, then a stateful
  `apply` that adds the views in Quix state (RocksDB, every change in a changelog topic). Quix
  creates both topics itself (tansu supports CreateTopics). The counts it emits are also kept in
  a dict for the top 25, as a downstream step would.

When the N-th view is counted the app stops, and the top 25 per (domain, hour) minus the
blacklist are produced to the output topic with the application's producer.
"""
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import quixstreams  # noqa: E402
from quixstreams import Application  # noqa: E402


def main():
    a = common.args()
    stateful = a.variant == "state"
    blacklist = common.load_blacklist(a.blacklist)
    meter = common.Meter(a.n)
    counts = defaultdict(lambda: defaultdict(int))
    app = Application(
        broker_address=a.brokers,
        consumer_group=a.group,
        auto_offset_reset="earliest",
        consumer_extra_config=dict(common.CONSUMER_TUNING),
        use_changelog_topics=stateful,
        auto_create_topics=stateful,
        state_dir=a.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(a.topic, value_deserializer="json", key_deserializer="bytes")
    sdf = app.dataframe(topic)
    sdf = sdf.update(lambda v: meter.saw())  # the clock starts at the first record read

    if stateful:
        def add(v, state):
            n = state.get("views", 0) + v.get("views", 1)
            state.set("views", n)
            ts = v["ts"]
            counts[(v["domain"], ts - ts % common.HOUR_MS)][v["title"]] = n
            if meter.tick():
                app.stop()
            return n

        sdf = sdf.filter(lambda v: "domain" in v)  # `!file` control records have no domain
        sdf = sdf.group_by(lambda v: f"{v['domain']}|{v['ts'] - v['ts'] % common.HOUR_MS}|{v['title']}", name="dht")
        sdf = sdf.apply(add, stateful=True)
    else:
        def count(v):
            domain = v.get("domain")
            if domain is None:  # a `!file` control record
                return
            ts = v["ts"]
            counts[(domain, ts - ts % common.HOUR_MS)][v["title"]] += v.get("views", 1)
            if meter.tick():
                app.stop()

        sdf = sdf.update(count)
    app.run()
    tops = common.top_records(counts, blacklist)
    with app.get_producer() as producer:
        for k, v in tops:
            producer.produce(topic=a.out_topic, key=k.encode(), value=v.encode())
        producer.flush()
    done = time.time()
    common.report(a, meter, tops, done, version=quixstreams.__version__)


if __name__ == "__main__":
    main()
