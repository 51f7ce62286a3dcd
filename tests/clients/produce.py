#!/usr/bin/env python3
"""Produces records to Kafka with confluent-kafka: an independent client, not pagepulse's own.

usage: produce.py BROKERS TOPIC FILE
FILE holds one JSON object per line: {"key": str|null, "value_b64": str|null, "timestamp": int?}.
Values are base64 so that tests can send invalid UTF-8 and tombstones; `timestamp` (epoch ms)
sets the record's timestamp (default: now). Prints the number of acknowledged records.
"""
import base64
import json
import sys

from confluent_kafka import Producer


def main() -> int:
    brokers, topic, path = sys.argv[1:4]
    # Kafka's default partitioner (what pagepulse's producers and lookups use), not librdkafka's CRC32.
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5, "enable.idempotence": True,
                         "partitioner": "murmur2_random"})
    failures = []
    acked = [0]

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(str(err))
        else:
            acked[0] += 1

    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            value = None if rec["value_b64"] is None else base64.b64decode(rec["value_b64"])
            key = None if rec["key"] is None else rec["key"].encode()
            timestamp = rec.get("timestamp") or 0
            while True:
                try:
                    producer.produce(topic, value=value, key=key, timestamp=timestamp, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
    left = producer.flush(60)
    if failures or left:
        print(f"delivery failures: {failures[:5]}, unflushed: {left}", file=sys.stderr)
        return 1
    print(acked[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
