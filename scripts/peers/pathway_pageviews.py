"""Pathway peer of scripts/bench_peers.py (run with the peers' virtualenv).

`pw.io.kafka.read(format="json", mode="static")` (Pathway's own rdkafka: reads what the topic holds
when it starts, then the run ends) -> filter out control records -> groupby (domain, hour, title)
reduce sum(views), and per (domain, hour) the total; then, in one of two variants:

- `--variant top` (default): left join with the blacklist, keep the unmatched -> groupby (domain,
  hour) reduce `sorted_tuple((-views, title))`, its first 25 -> `pw.io.kafka.write(format="json")`
  to the output topic (Pathway writes each change of the result table, with `time` and `diff`).
  Pathway keeps results exact at every step: each input batch re-sorts the changed groups.
- `--variant count`: only the counts and the totals (less work: no blacklist, no top 25, nothing
  written to Kafka; the totals are checked).

Incremental dataflow on Pathway's engine threads (PATHWAY_THREADS, default 1), no persistence.
The rate is measured from the first update of a running count of the input rows to the update
that reaches N (Pathway reads and commits in batches every `autocommit_duration_ms`, 100 ms here),
so the first batch's reading time is not in it; `start_to_first_s` in the report says how long
that was.
"""
import json
import os
import sys
import time as clock

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import pathway as pw  # noqa: E402


class View(pw.Schema):
    domain: str = pw.column_definition(default_value="")
    title: str = pw.column_definition(default_value="")
    views: int = pw.column_definition(default_value=1)
    ts: int = pw.column_definition(default_value=0)


class Banned(pw.Schema):
    domain: str
    title: str
    banned: bool


def main():
    a = common.args()
    blacklist = common.load_blacklist(a.blacklist)
    meter = common.Meter(a.n)
    settings = {"bootstrap.servers": a.brokers, "group.id": a.group, "auto.offset.reset": "earliest"}
    settings.update({k: str(v) for k, v in common.CONSUMER_TUNING.items()})
    raw = pw.io.kafka.read(settings, topic=a.topic, schema=View, format="json", mode="static",
                           autocommit_duration_ms=100)
    views = raw.filter(pw.this.domain != "").select(
        pw.this.domain, pw.this.title, pw.this.views, hour=pw.this.ts - pw.this.ts % common.HOUR_MS)

    # The meter: a running count of the input rows.
    def on_count(key, row, time, is_addition):
        if is_addition:
            now = clock.time()
            if meter.first is None:
                meter.first = now
            meter.count = row["n"]
            if row["n"] >= a.n and meter.last is None:
                meter.last = now

    pw.io.subscribe(views.reduce(n=pw.reducers.count()), on_change=on_count)

    counts = views.groupby(pw.this.domain, pw.this.hour, pw.this.title).reduce(
        pw.this.domain, pw.this.hour, pw.this.title, views=pw.reducers.sum(pw.this.views))
    totals = counts.groupby(pw.this.domain, pw.this.hour).reduce(
        pw.this.domain, pw.this.hour, total_views=pw.reducers.sum(pw.this.views))
    final = {}

    def on_result(key, row, time, is_addition):
        if is_addition:
            final[key] = row
        elif final.get(key) == row:
            del final[key]

    if a.variant == "count":
        pw.io.subscribe(totals, on_change=on_result)
        pw.run(monitoring_level=pw.MonitoringLevel.NONE)
        done = clock.time()
        tops = [(f"{row['domain']}|{common.hour_name(row['hour'])}",
                 json.dumps({"domain": row["domain"], "total_views": row["total_views"], "articles": None}))
                for row in final.values()]
        common.report(a, meter, tops, done, version=pw.__version__, threads=int(os.environ.get("PATHWAY_THREADS", "1")))
        return
    banned = pw.debug.table_from_rows(Banned, [(d, t, True) for d, t in sorted(blacklist)])
    kept = counts.join_left(banned, pw.left.domain == pw.right.domain, pw.left.title == pw.right.title).select(
        pw.left.domain, pw.left.hour, pw.left.title, pw.left.views, banned=pw.right.banned).filter(
        pw.this.banned.is_none())
    ranked = kept.groupby(pw.this.domain, pw.this.hour).reduce(
        pw.this.domain, pw.this.hour,
        top=pw.apply(lambda t: tuple(t[:common.TOP_N]),
                     pw.reducers.sorted_tuple(pw.make_tuple(-pw.this.views, pw.this.title))))
    result = ranked.join(totals, pw.left.domain == pw.right.domain, pw.left.hour == pw.right.hour).select(
        pw.left.domain, pw.left.hour, pw.left.top, pw.right.total_views)
    pw.io.kafka.write(result, {"bootstrap.servers": a.brokers}, topic_name=a.out_topic, format="json")

    pw.io.subscribe(result, on_change=on_result)
    pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    done = clock.time()
    counts_py = {}
    for row in final.values():
        counts_py[(row["domain"], row["hour"])] = row
    tops = []
    for (domain, hour), row in counts_py.items():
        value = {
            "domain": domain,
            "hour_start": clock.strftime("%Y-%m-%dT%H:00:00.000Z", clock.gmtime(hour / 1000)),
            "final": True,
            "total_views": row["total_views"],
            "late_events": 0,
            "articles": [{"rank": i + 1, "title": t, "views": -v} for i, (v, t) in enumerate(row["top"])],
        }
        tops.append((f"{domain}|{common.hour_name(hour)}", json.dumps(value, ensure_ascii=False)))
    common.report(a, meter, tops, done, version=pw.__version__,
                  threads=int(os.environ.get("PATHWAY_THREADS", "1")))


if __name__ == "__main__":
    main()
