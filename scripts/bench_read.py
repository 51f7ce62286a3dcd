#!/usr/bin/env python3
"""Independent raw-read reference for scripts/bench-posts.sh (not part of the test suite).

Reads N records from the beginning of every partition of TOPIC with a confluent-kafka (librdkafka)
Consumer using assign() (no group membership, nothing committed) and batch consume(), then prints
one line like the one `pagepulse consume -f quiet` prints:

    read N records (X MB) in T s: R records/s, M MB/s

The clock runs from the first batch received to the last one (as `pagepulse consume` times from the
first record to the last); the records of that first batch arrived before the clock started, so the
rate counts only the records after it: R = (N - first batch) / T.

usage: bench_read.py BROKERS TOPIC N [--timeout SECONDS] [-X librdkafka.property=value ...]
"""
import argparse
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition


def main() -> int:
    ap = argparse.ArgumentParser(description="Raw read rate of a topic (confluent-kafka).")
    ap.add_argument("brokers")
    ap.add_argument("topic")
    ap.add_argument("n", type=int)
    ap.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    ap.add_argument("-X", dest="props", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka consumer property (repeatable)")
    args = ap.parse_args()
    brokers, topic, want, timeout = args.brokers, args.topic, args.n, args.timeout
    # The same settings `pagepulse consume` uses on top of librdkafka's defaults.
    conf = {
        "bootstrap.servers": brokers,
        "group.id": f"bench-read-py-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.queue.backoff.ms": 10,
        "queued.min.messages": 1000000,
    }
    for kv in args.props:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"-X expects KEY=VALUE, got {kv!r}")
        conf[k] = v
    c = Consumer(conf)
    md = c.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        print(f"topic {topic} not found: {t.error if t else 'no metadata'}", file=sys.stderr)
        return 1
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(t.partitions)])
    n = nbytes = n0 = 0
    first = last = None
    deadline = time.monotonic() + timeout
    while n < want:
        if time.monotonic() > deadline:
            print(f"timed out after {timeout} s with {n} of {want} records", file=sys.stderr)
            break
        msgs = c.consume(num_messages=10000, timeout=1.0)
        if not msgs:
            continue
        now = time.monotonic()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == -191:  # _PARTITION_EOF (only if enabled); not an error
                    continue
                raise KafkaException(err)
            n += 1
            v = m.value()
            nbytes += len(v) if v is not None else 0
        if first is None:
            first, n0 = now, n
        last = now
    c.close()
    secs = max((last - first) if first is not None else 0.0, 1e-9)
    per = nbytes / n if n else 0.0
    print(
        f"read {n} records ({nbytes / 1e6:.1f} MB; first batch {n0}) in {secs:.3f} s: "
        f"{(n - n0) / secs:.0f} records/s, {(n - n0) * per / 1e6 / secs:.1f} MB/s"
    )
    return 0 if n >= want else 1


if __name__ == "__main__":
    sys.exit(main())
