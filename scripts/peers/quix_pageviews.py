"""Quix Streams peer of scripts/bench_peers.py (run with the peers' virtualenv).

A `StreamingDataFrame` over `pageviews` (JSON values, consumer group, at-least-once, offsets
committed every 5 s as Quix does by default); `.update()` counts views per (domain, hour, title) in
a Python dict (not Quix state: no RocksDB, no changelog topic, so nothing is fault-tolerant; a
group_by on (domain, title) would repartition every record through another topic). When the N-th
view is counted the app stops, and the top 25 per (domain, hour) minus the blacklist are produced
to the output topic with the application's producer.
"""
import sys
import time
from collections import defaultdict

sys.path.insert(0, __import__("os").path.dirname(__file__))
import common  # noqa: E402

import quixstreams  # noqa: E402
from quixstreams import Application  # noqa: E402


def main():
    a = common.args()
    blacklist = common.load_blacklist(a.blacklist)
    meter = common.Meter(a.n)
    counts = defaultdict(lambda: defaultdict(int))
    app = Application(
        broker_address=a.brokers,
        consumer_group=a.group,
        auto_offset_reset="earliest",
        consumer_extra_config=dict(common.CONSUMER_TUNING),
        use_changelog_topics=False,
        auto_create_topics=False,
        loglevel="WARNING",
    )
    topic = app.topic(a.topic, value_deserializer="json", key_deserializer="bytes")
    sdf = app.dataframe(topic)

    def count(v):
        domain = v.get("domain")
        if domain is None:  # a `!file` control record
            return
        ts = v["ts"]
        counts[(domain, ts - ts % common.HOUR_MS)][v["title"]] += v.get("views", 1)
        if meter.tick():
            app.stop()

    sdf.update(count)
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
