#!/usr/bin/env python3
"""The data of the HTTP API benchmarks (scripts/bench_api.sh, scripts/bench_api_cpu.sh): one page
with a day of 10-minute samples (`facebook:bench`), so its figures and chart are a realistic
answer, and a final hour's top 25 of domain `en` (2026-12-05T10) as the pageviews pipeline writes
it to `pageviews.top`.

    usage: scripts/bench_api_seed.py BOOTSTRAP TOPIC_PREFIX
"""
import datetime
import json
import sys

from confluent_kafka import Producer

bootstrap, prefix = sys.argv[1], sys.argv[2]
p = Producer({"bootstrap.servers": bootstrap})
t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=24)
for i in range(145):
    at = (t0 + datetime.timedelta(minutes=10 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    p.produce(prefix + "fans.observations", key=b"facebook:bench",
              value=json.dumps({"platform": "facebook", "page_id": "bench", "fans": 1000 + i,
                                "followers": 1200 + i, "observed_at": at}))
arts = [{"rank": r + 1, "title": "Article_%d_(disambiguation)" % r, "views": 100000 - 997 * r} for r in range(25)]
top = {"domain": "en", "hour_start": "2026-12-05T10:00:00Z", "final": True,
       "total_views": sum(a["views"] for a in arts) + 123456, "late_events": 0, "articles": arts}
p.produce(prefix + "pageviews.top", key=b"en|2026-12-05T10", value=json.dumps(top))
p.flush()
