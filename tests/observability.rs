//! Metrics as operators see them: a real Prometheus server scrapes pagepulse, its query API
//! returns the counts pagepulse processed, and every dashboard query returns data from the whole
//! job (pages, posts, page views, messages, apps) with values equal to the pipelines' output
//! records; the shipped Prometheus config and alert rules are valid and the rules' unit tests
//! pass; every dashboard panel has a datasource, a unit, a description and queries that
//! `promtool` parses, over metrics pagepulse defines.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, http_get, TestEnv};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn shipped_prometheus_config_is_valid() {
    let out = Command::new("promtool")
        .args(["check", "config", &format!("{ROOT}/grafana/prometheus.yml")])
        .output()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn alert_rules_are_valid_and_every_alert_is_unit_tested() {
    let rules = format!("{ROOT}/grafana/alerts.yml");
    let out = Command::new("promtool").args(["check", "rules", &rules]).output().expect("promtool is installed");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = Command::new("promtool")
        .args(["test", "rules", &format!("{ROOT}/grafana/alerts_test.yml")])
        .output()
        .expect("promtool is installed");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Every alert has a firing case in the unit tests.
    let text = std::fs::read_to_string(&rules).expect("alerts.yml");
    let tests = std::fs::read_to_string(format!("{ROOT}/grafana/alerts_test.yml")).expect("alerts_test.yml");
    let alerts: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 7, "the issue's seven alerts at least: {alerts:?}");
    for alert in alerts {
        let firing = tests
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(alert) && case.lines().nth(1).is_some_and(|l| l.trim() == "exp_alerts:"));
        assert!(firing, "alert {alert} has no firing case in grafana/alerts_test.yml");
    }
}

/// Every shipped dashboard: (file name, its JSON).
fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("{ROOT}/grafana/dashboards")).expect("grafana/dashboards") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let d =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard is JSON");
            out.push((path.file_name().expect("name").to_string_lossy().into_owned(), d));
        }
    }
    assert!(!out.is_empty(), "no dashboards");
    out
}

/// Every template variable of every shipped dashboard: (dashboard file, name, query).
fn variables() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).expect("a variable query");
            out.push((name.clone(), v["name"].as_str().expect("name").to_string(), q.to_string()));
        }
    }
    out
}

/// `expr` with the dashboards' variables set to `values` (`name`, value), each as Grafana puts it.
fn filled(expr: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(as_sent(expr), |e, (name, value)| {
        e.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value)
    })
}

/// Every panel of every shipped dashboard, with the dashboard's file name.
fn panels() -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for p in d["panels"].as_array().expect("panels") {
            out.push((name.clone(), p.clone()));
        }
    }
    out
}

/// `expr` with Grafana's variables replaced the way Grafana would before sending it.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
}

#[test]
fn every_panel_has_a_datasource_a_unit_a_description_and_queries_promtool_parses() {
    let datasources = std::fs::read_to_string(format!("{ROOT}/grafana/provisioning/datasources/prometheus.yml"))
        .expect("datasource provisioning");
    let uid = datasources.lines().find_map(|l| l.trim().strip_prefix("uid: ")).expect("a provisioned datasource uid");
    let mut rules = String::from("groups:\n  - name: panels\n    rules:\n");
    let mut n = 0;
    for (file, panel) in panels() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        assert_eq!(
            panel["datasource"]["uid"].as_str(),
            Some(uid),
            "{file}: panel {title:?} has no provisioned datasource"
        );
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        assert!(!unit.is_empty(), "{file}: panel {title:?} has no unit");
        let description = panel["description"].as_str().unwrap_or("");
        assert!(description.len() > 20, "{file}: panel {title:?} has no description");
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for f in ["rate(", "increase(", "irate("] {
                for (i, _) in expr.match_indices(f) {
                    let window = &expr[i..expr[i..].find(')').map_or(expr.len(), |j| i + j)];
                    assert!(
                        window.contains("[$__rate_interval]"),
                        "{file}: panel {title:?} takes a rate over a fixed window: {expr}"
                    );
                }
            }
            n += 1;
            rules.push_str(&format!(
                "      - record: panel_query_{n}\n        expr: {}\n",
                serde_json::json!(as_sent(expr))
            ));
        }
    }
    // promtool parses each query as it parses a rule's: a query it cannot parse fails the check.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("panels.yml");
    std::fs::write(&file, &rules).expect("write rules");
    let out = Command::new("promtool").args(["check", "rules"]).arg(&file).output().expect("promtool is installed");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{n} rules found")), "every query checked");
}

#[test]
fn dashboard_queries_only_defined_metrics() {
    // Metrics are defined in src/metrics/ and, for the pipelines' results, in their export.rs.
    let mut defined = String::new();
    let mut dirs = vec![std::path::PathBuf::from(format!("{ROOT}/src"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                defined.push_str(&std::fs::read_to_string(&path).expect("source"));
            }
        }
    }
    let mut checked = 0;
    for (_, panel) in panels() {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| t.starts_with("pagepulse_"))
            {
                let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(
                    defined.contains(&format!("\"{base}\"")),
                    "panel {:?} queries undefined metric {name}",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "the dashboard should chart the engine's metrics");
}

/// Kills the child when dropped.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // Already-exited children make these fail harmlessly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn real_prometheus_scrapes_what_pagepulse_processed() {
    let env = TestEnv::new();
    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(60));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pagepulse\n    static_configs:\n      - targets: [\"{}\"]\n", pp.addr),
    )
    .expect("write config");
    let web = format!("127.0.0.1:{}", free_port());
    let _prom = Guard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs Debian's prometheus)"),
    );

    let out = env
        .cli(&["demo", "posts", "--rate", "0", "--count", "300", "--bad-every", "10"])
        .output()
        .expect("demo producer");
    assert!(out.status.success());

    let query = |q: &str| -> Option<f64> {
        let (status, body) = http_get(&web, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    support::wait_for("Prometheus to scrape 300 consumed posts", Duration::from_secs(90), || {
        // Of `posts` only: the instance also reads its own `*.shares` topics whole.
        (query("sum(pagepulse_records_consumed_total%7Btopic%3D%22posts%22%7D)") == Some(300.0)).then_some(())
    });
    support::wait_for("Prometheus to see the dead letters", Duration::from_secs(30), || {
        (query("sum(pagepulse_records_deadlettered_total)") == Some(30.0)).then_some(())
    });
    assert_eq!(query("up%7Bjob%3D%22pagepulse%22%7D"), Some(1.0), "the scrape target is up");
    support::wait_for("analyses acknowledged, as Prometheus sees them", Duration::from_secs(30), || {
        (query("sum(pagepulse_records_produced_total%7Btopic%3D%22posts.analysis%22%7D)") == Some(270.0)).then_some(())
    });

    // Prometheus itself parses and evaluates every query of every dashboard; the panels that chart
    // what just happened have data.
    let evaluate = |expr: &str| -> Option<Vec<serde_json::Value>> {
        let q = percent_encoding::utf8_percent_encode(&as_sent(expr), percent_encoding::NON_ALPHANUMERIC).to_string();
        let (status, body) = http_get(&web, &format!("/api/v1/query?query={q}"))?;
        assert_eq!(status, 200, "Prometheus refused {expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(v["status"], "success", "{expr}: {body}");
        v["data"]["result"].as_array().cloned()
    };
    let with_data =
        ["Records per second", "Dead letters per second by reason", "Partitions and tasks", "HTTP API requests"];
    for (file, panel) in panels() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            if with_data.contains(&title.as_str()) {
                support::wait_for(&format!("{file}: data for {title:?}: {expr}"), Duration::from_secs(30), || {
                    evaluate(expr).filter(|r| !r.is_empty()).map(|_| ())
                });
            } else {
                evaluate(expr).expect("an answer from Prometheus");
            }
        }
    }
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}

/// A Prometheus server scraping `target` every second, with its data in `dir`; its HTTP address.
fn prometheus(dir: &std::path::Path, target: &str) -> (Guard, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: pagepulse\n    static_configs:\n      - targets: [\"{target}\"]\n"),
    )
    .expect("write config");
    let web = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (scripts/test.sh installs Debian's prometheus)");
    (Guard(child), web)
}

/// The series of instant query `q` at Prometheus `web`: (labels, value).
fn series(web: &str, q: &str) -> Vec<(serde_json::Value, f64)> {
    let q = percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string();
    let Some((200, body)) = http_get(web, &format!("/api/v1/query?query={q}")) else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"]
        .as_array()
        .map(|r| r.iter().filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?))).collect())
        .unwrap_or_default()
}

#[test]
fn watched_pages_from_the_config_and_from_page_records_and_the_top_pages_reach_prometheus() {
    const H: i64 = 3_600_000;
    let env = TestEnv::new();
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = now - now % H - 30 * H;
    let rfc = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339();
    // Five pages, two samples 25 h apart each; page k gains 100 * k * k fans.
    let fans = |k: i64, later: bool| 1000 + k + if later { 100 * k * k } else { 0 };
    let mut records = Vec::new();
    for k in 1..=5i64 {
        for later in [false, true] {
            let v = serde_json::json!({"platform": "facebook", "page_id": format!("w{k}"), "fans": fans(k, later),
                "followers": fans(k, later) * 2, "observed_at": rfc(t0 + if later { 25 * H } else { 0 })});
            records.push((Some(format!("facebook:w{k}")), Some(v.to_string().into_bytes())));
        }
    }
    env.produce_python("fans.observations", &records);
    // Watched: w2 and w5 in the config; w1 and w3 marked in their `pages` records, w4 marked
    // then unmarked. At most three exported: the config's, then the marked in key order.
    let mark = |id: &str, watch: bool| {
        let v = serde_json::json!({"platform": "facebook", "page_id": id, "interval_s": 3600, "watch": watch});
        (Some(format!("facebook:{id}")), Some(v.to_string().into_bytes()))
    };
    env.produce_python("pages", &[mark("w4", true), mark("w1", true), mark("w3", true), mark("w4", false)]);
    let mut pp = env.start_with(&[
        ("PAGEPULSE__pipelines__fans__watch", r#"["facebook:w2", "facebook:w5"]"#),
        ("PAGEPULSE__pipelines__fans__watch_max", "3"),
        // Nothing polls: the observations above are the input.
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
    ]);
    pp.wait_ready(Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prom, web) = prometheus(dir.path(), &pp.addr.to_string());

    // The watched pages up to the bound: their figures are the test's own latest samples.
    for k in [2, 5, 1] {
        let q = format!("pagepulse_page_fans{{platform=\"facebook\",page_id=\"w{k}\"}}");
        support::wait_for(&format!("w{k}'s fans in Prometheus"), Duration::from_secs(60), || {
            (series(&web, &q).first().map(|s| s.1) == Some(fans(k, true) as f64)).then_some(())
        });
        let q = format!("pagepulse_page_followers{{page_id=\"w{k}\"}}");
        assert_eq!(series(&web, &q).first().map(|s| s.1), Some(2.0 * fans(k, true) as f64));
        let q = format!("pagepulse_page_delta{{page_id=\"w{k}\",window=\"24h\"}}");
        assert_eq!(series(&web, &q).first().map(|s| s.1), Some((fans(k, true) - fans(k, false)) as f64));
    }
    assert!(series(&web, "pagepulse_page_fans{page_id=\"w3\"}").is_empty(), "over the bound: not exported");
    assert!(series(&web, "pagepulse_page_fans{page_id=\"w4\"}").is_empty(), "unmarked: not exported");
    assert_eq!(
        series(&web, "pagepulse_results_over_bound{metric=\"pagepulse_page_fans\"}").first().map(|s| s.1),
        Some(1.0)
    );

    // The rankings equal the latest fans.top record, rank by rank.
    let top = env.read_until("fans.top", Duration::from_secs(60), |recs| {
        recs.last().and_then(|r| r.value.as_ref()).is_some_and(|v| {
            serde_json::from_slice::<serde_json::Value>(v)
                .is_ok_and(|t| t["by_delta_24h"].as_array().is_some_and(|a| a.len() == 5))
        })
    });
    let top: serde_json::Value =
        serde_json::from_slice(top.last().and_then(|r| r.value.as_ref()).expect("a ranking")).expect("json");
    // The test's own ranking: w5 gained most.
    assert_eq!(top["by_delta_24h"][0]["page_id"], "w5");
    for (ranking, metric, field) in [
        ("by_delta_24h", "pagepulse_top_pages_delta_24h", "delta_24h"),
        ("by_growth_24h_pct", "pagepulse_top_pages_growth_24h_percent", "growth_24h_pct"),
    ] {
        for entry in top[ranking].as_array().expect("ranking") {
            let q = format!("{metric}{{rank=\"{}\"}}", entry["rank"]);
            let (page, value) =
                (entry["page_id"].as_str().expect("page").to_string(), entry[field].as_f64().expect("value"));
            support::wait_for(&format!("{q} = {page} {value}"), Duration::from_secs(30), || {
                series(&web, &q)
                    .first()
                    .filter(|(labels, v)| labels["page_id"] == page.as_str() && (v - value).abs() < 1e-9)
                    .map(|_| ())
            });
        }
    }
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn every_dashboard_query_returns_data_from_the_whole_job_and_chosen_values_equal_the_outputs() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // The simulated platform, and pagepulse polling it; page-000001 watched, results soon.
    let sim = format!("127.0.0.1:{}", free_port());
    let _sim = Guard(
        env.cli(&["simulate", "graph-api", "--listen", &sim, "--pages", "40"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator"),
    );
    let base = format!("http://{sim}");
    let mut pp = env.start_with(&[
        ("PAGEPULSE__platforms__facebook__base_url", &base),
        ("PAGEPULSE__platforms__mastodon__base_url", &base),
        ("PAGEPULSE_FACEBOOK_TOKEN", "test-token"),
        ("PAGEPULSE__pipelines__fans__watch", r#"["facebook:page-000001"]"#),
        ("PAGEPULSE__pipelines__pageviews__provisional_interval", "\"2s\""),
        ("PAGEPULSE__pipelines__messages__totals_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__messages__idle_timeout", "\"1s\""),
        ("PAGEPULSE__pipelines__apps__mentions_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__pageviews__idle_timeout", "\"1s\""),
        ("PAGEPULSE__pipelines__pageviews__allowed_lateness", "\"1s\""),
    ]);
    pp.wait_ready(Duration::from_secs(60));
    let (_prom, web) = prometheus(dir.path(), &pp.addr.to_string());
    // Every input of the job: pages, the app catalogue, posts mentioning its apps, messages, an
    // hour of page views.
    env.run(&["demo", "pages", "--count", "20", "--interval-s", "20", "--mastodon-every", "5"]);
    env.load_demo_catalogue(dir.path(), 300);
    env.run(&["demo", "posts", "--rate", "0", "--count", "400", "--mention-every", "3", "--bad-every", "50"]);
    env.run(&["demo", "messages", "--rate", "0", "--count", "300", "--bad-every", "50"]);
    let hour = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H").to_string();
    env.ingest_demo_hour(dir.path(), &hour, 3000, 3);
    // What the error panels chart: a malformed page view and message (dead letters), and a late
    // page view and message once their window is final.
    env.produce_python("pageviews", &[(Some("en".into()), Some(b"{not json".to_vec()))]);
    env.produce_python("messages", &[(Some("x".into()), Some(b"[]".to_vec()))]);
    let is_final = |r: &support::Rec| {
        r.value
            .as_ref()
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .is_some_and(|v| v["final"] == true)
    };
    let en_hour = format!("en|{hour}");
    env.read_until("pageviews.top", Duration::from_secs(90), |r| {
        r.iter().any(|r| r.key.as_deref() == Some(en_hour.as_bytes()) && is_final(r))
    });
    let hour_ms = chrono::NaiveDateTime::parse_from_str(&format!("{hour}:00:00"), "%Y-%m-%dT%H:%M:%S")
        .expect("hour")
        .and_utc()
        .timestamp_millis();
    let late = serde_json::json!({"domain": "en", "title": "Late_article", "views": 1, "ts": hour_ms});
    env.produce_python("pageviews", &[(Some("en".into()), Some(late.to_string().into_bytes()))]);
    let minutes = env.read_until("messages.stats", Duration::from_secs(90), |r| r.iter().any(is_final));
    let minute: serde_json::Value =
        serde_json::from_slice(minutes.iter().find(|r| is_final(r)).and_then(|r| r.value.as_ref()).expect("a minute"))
            .expect("json");
    let late = serde_json::json!({"username": "late", "city": "Albany", "state": "NY", "message": "late",
        "ts": minute["minute_start"]});
    env.produce_python("messages", &[(Some("late".into()), Some(late.to_string().into_bytes()))]);

    // Every template variable has options, and every panel query, with them filled in, has data.
    let values = [("page", "page-000001"), ("domain", "en")];
    for (file, name, q) in variables() {
        let (metric, label) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(", "))
            .unwrap_or_else(|| panic!("{file}: variable {name} is not label_values(metric, label): {q}"));
        let want = values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).expect("a test value for every variable");
        support::wait_for(&format!("{file}: ${name} offers {want}"), Duration::from_secs(120), || {
            series(&web, metric).iter().any(|(l, _)| l[label] == want).then_some(())
        });
    }
    for (file, panel) in panels() {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().expect("targets") {
            let expr = filled(target["expr"].as_str().expect("expr"), &values);
            if file == "pagepulse.json" {
                continue; // the engine's overview: evaluated in real_prometheus_scrapes_what_pagepulse_processed
            }
            support::wait_for(&format!("{file}: data for {title:?}: {expr}"), Duration::from_secs(120), || {
                (!series(&web, &expr).is_empty()).then_some(())
            });
        }
    }

    // Chosen values equal the pipelines' own output records.
    // The latest record of `key`, once there is one (a result may follow its inputs by a tick, and
    // the cluster-wide ones by their shares' round trip through the broker).
    // A whole read up to the end offsets; when that misses the key (tansu's end offsets can lag
    // its newest records), a read until the key is there.
    let latest = |topic: &str, key: &str| -> serde_json::Value {
        let of_key = |r: &&support::Rec| r.key.as_deref() == Some(key.as_bytes());
        let mut recs = env.read_all(topic, Duration::from_secs(30));
        if !recs.iter().any(|r| of_key(&r)) {
            recs = env.read_until(topic, Duration::from_secs(60), |recs| recs.iter().any(|r| of_key(&r)));
        }
        let rec = recs.iter().rev().find(of_key).expect("read_until waited for one");
        serde_json::from_slice(rec.value.as_ref().expect("a value")).expect("json")
    };
    // The page is polled every 20 s: between two polls, the gauge and the topic agree.
    support::wait_for("the watched page's fans gauge as its latest fans.stats says", Duration::from_secs(60), || {
        let stats = latest("fans.stats", "facebook:page-000001");
        let fans = series(&web, "pagepulse_page_fans{page_id=\"page-000001\"}");
        (fans.first().map(|s| s.1) == stats["fans"].as_f64()).then_some(())
    });
    let totals = latest("messages.totals", "totals");
    support::wait_for("all-time messages as messages.totals says", Duration::from_secs(30), || {
        let now = latest("messages.totals", "totals");
        (series(&web, "pagepulse_messages_all_time{what=\"messages\"}").first().map(|s| s.1) == now["total"].as_f64())
            .then_some(())
    });
    assert!(totals["total"].as_u64().is_some_and(|t| t > 0 && t <= 300));
    let top = latest("pageviews.top", &format!("en|{hour}"));
    support::wait_for("en's latest hour as pageviews.top says", Duration::from_secs(30), || {
        let now = latest("pageviews.top", &format!("en|{hour}"));
        let q = format!("pagepulse_pageviews_hour_views{{domain=\"en\",final=\"{}\"}}", now["final"]);
        (series(&web, &q).first().map(|s| s.1) == now["total_views"].as_f64()).then_some(())
    });
    assert!(top["total_views"].as_u64().is_some_and(|v| v > 0));
    support::wait_for("the top app's mentions as apps.top says", Duration::from_secs(30), || {
        let now = latest("apps.top", "Book+Music");
        let first = &now["apps"][0];
        let q = "pagepulse_app_ranking_mentions{ranking=\"Book+Music\",rank=\"1\",window=\"total\"}";
        series(&web, q)
            .first()
            .filter(|(l, v)| l["app_id"] == first["id"] && Some(*v) == first["mentions_total"].as_f64())
            .map(|_| ())
    });
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}
