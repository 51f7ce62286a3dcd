//! Metrics as operators see them: a real Prometheus server scrapes pagepulse and its query API
//! returns the counts pagepulse processed; the shipped Prometheus config is valid; the Grafana
//! dashboard queries only metrics pagepulse defines.

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
fn dashboard_queries_only_defined_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/grafana/dashboards/pagepulse.json")).expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let defined = std::fs::read_to_string(format!("{ROOT}/src/metrics.rs")).expect("metrics.rs");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
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
        (query("sum(pagepulse_records_consumed_total)") == Some(300.0)).then_some(())
    });
    support::wait_for("Prometheus to see the dead letters", Duration::from_secs(30), || {
        (query("sum(pagepulse_records_deadlettered_total)") == Some(30.0)).then_some(())
    });
    assert_eq!(query("up%7Bjob%3D%22pagepulse%22%7D"), Some(1.0), "the scrape target is up");
    support::wait_for("analyses acknowledged, as Prometheus sees them", Duration::from_secs(30), || {
        (query("sum(pagepulse_records_produced_total%7Btopic%3D%22posts.analysis%22%7D)") == Some(270.0)).then_some(())
    });
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}
