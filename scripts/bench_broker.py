#!/usr/bin/env python3
"""Produce and consume throughput of one broker, for scripts/bench_broker.sh (not a test).

Creates TOPIC with PARTITIONS partitions, produces N keyed JSON records of about SIZE bytes with an
idempotent producer (acks=all, as pagepulse's and the tests' producers are), waits until every one
is acknowledged, then reads them all back from the beginning with assign() and batch consume(),
and commits the consumer's offsets once. The records are the same for every broker (they depend
only on N and SIZE). Prints one JSON line:

    {"produced": N, "produce_s": .., "produce_rps": .., "consumed": N, "consume_s": .., "consume_rps": .., "commit_s": ..}

usage: bench_broker.py BROKERS TOPIC N [--size BYTES] [--partitions P] [--timeout SECONDS]
"""
import argparse
import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def record(i: int, size: int) -> tuple[bytes, bytes]:
    key = f"page-{i % 1000:04d}".encode()
    body = {"id": i, "page": key.decode(), "fans": 1000 + i % 977, "pad": ""}
    base = len(json.dumps(body, separators=(",", ":")))
    body["pad"] = "x" * max(0, size - base)
    return key, json.dumps(body, separators=(",", ":")).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description="Produce+consume throughput of a broker (confluent-kafka).")
    ap.add_argument("brokers")
    ap.add_argument("topic")
    ap.add_argument("n", type=int)
    ap.add_argument("--size", type=int, default=100, help="approximate value size in bytes")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.brokers})
    fs = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)])
    fs[args.topic].result(timeout=30)

    records = [record(i, args.size) for i in range(args.n)]
    failed = 0

    def delivered(err, _msg):
        nonlocal failed
        if err is not None:
            failed += 1

    p = Producer({
        "bootstrap.servers": args.brokers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "none",
    })
    t0 = time.monotonic()
    for k, v in records:
        while True:
            try:
                p.produce(args.topic, value=v, key=k, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(args.timeout)
    produce_s = time.monotonic() - t0
    if left or failed:
        print(f"{left} records unacknowledged, {failed} refused", file=sys.stderr)
        return 1

    c = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"bench-broker-{time.time_ns()}",
        "enable.auto.commit": False,
        "fetch.queue.backoff.ms": 10,
        "queued.min.messages": 1000000,
    })
    c.assign([TopicPartition(args.topic, q, OFFSET_BEGINNING) for q in range(args.partitions)])
    n = 0
    next_offsets = {}
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    while n < args.n:
        if time.monotonic() > deadline:
            print(f"timed out with {n} of {args.n} records", file=sys.stderr)
            return 1
        for m in c.consume(num_messages=10000, timeout=1.0):
            if m.error() is not None:
                raise KafkaException(m.error())
            n += 1
            next_offsets[m.partition()] = m.offset() + 1
    consume_s = time.monotonic() - t0
    t0 = time.monotonic()
    c.commit(offsets=[TopicPartition(args.topic, q, o) for q, o in next_offsets.items()], asynchronous=False)
    commit_s = time.monotonic() - t0
    c.close()
    print(json.dumps({
        "produced": args.n, "produce_s": round(produce_s, 3), "produce_rps": round(args.n / produce_s),
        "consumed": n, "consume_s": round(consume_s, 3), "consume_rps": round(n / consume_s),
        "commit_s": round(commit_s, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
