//! The container deployment as shipped: `docker-compose.yml` is valid for Compose (checked by
//! Debian's `docker-compose`, which validates a file without a Docker engine) and runs the whole
//! job, every service has a health check, Prometheus loads the alert rules, Grafana
//! gets its provisioning, the broker keeps its data in a named volume, and the image runs as a
//! non-root user with CA certificates.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f", &format!("{ROOT}/docker-compose.yml"), "config", "-q"])
        .output()
        .expect("docker-compose is installed (scripts/test.sh installs Debian's docker-compose)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_compose_stack_runs_the_whole_job_with_health_checks() {
    // The resolved file, as Compose reads it, checked by Python (PyYAML comes with docker-compose).
    let check = r#"
import subprocess, sys, yaml
cfg = yaml.safe_load(subprocess.run(["docker-compose", "-f", sys.argv[1], "config"], check=True, capture_output=True, text=True).stdout)
s = cfg["services"]
for name in ["kafka", "topics", "simulator", "pagepulse", "pages", "apps", "pageviews", "posts", "messages", "prometheus", "grafana"]:
    assert name in s, f"service {name} is missing"
for name, svc in s.items():
    assert "healthcheck" in svc and svc["healthcheck"].get("test"), f"{name} has no health check"
cmd = lambda n: " ".join(map(str, (s[n].get("entrypoint") or []) + (s[n].get("command") or [])))
assert "simulate graph-api" in cmd("simulator")
assert "demo pages" in cmd("pages")
assert "ingest apps" in cmd("apps")
assert "ingest pageviews" in cmd("pageviews") and "ingest blacklist" in cmd("pageviews")
assert "demo posts" in cmd("posts") and "demo messages" in cmd("messages")
vols = " ".join(v if isinstance(v, str) else f'{v["source"]}:{v["target"]}' for v in s["prometheus"]["volumes"])
assert "alerts.yml" in vols and "prometheus.yml" in vols, vols
vols = " ".join(v if isinstance(v, str) else f'{v["source"]}:{v["target"]}' for v in s["grafana"]["volumes"])
assert "grafana/provisioning" in vols and "grafana/dashboards" in vols, vols
env = s["pagepulse"]["environment"]
assert env["PAGEPULSE__platforms__facebook__base_url"] == "http://simulator:8787"
assert "PAGEPULSE__pipelines__fans__watch" in env
# The broker keeps its data across restarts: its log directory is a named volume.
logdir = s["kafka"]["environment"]["KAFKA_LOG_DIRS"]
mounts = [v.split(":")[:2] if isinstance(v, str) else [v["source"], v["target"]] for v in s["kafka"].get("volumes", [])]
assert any(target == logdir and source in (cfg.get("volumes") or {}) for source, target in mounts), (logdir, mounts)
print("ok")
"#;
    let out =
        Command::new("python3").args(["-c", check, &format!("{ROOT}/docker-compose.yml")]).output().expect("python3");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_image_runs_as_a_non_root_user_with_ca_certificates_and_a_small_context() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/scripts/Dockerfile")).expect("scripts/Dockerfile");
    let runtime = dockerfile.rsplit("FROM ").next().expect("a runtime stage");
    let user = runtime
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("a USER in the runtime stage");
    assert!(!["root", "0"].contains(&user.trim()), "the image runs as {user}");
    assert!(runtime.contains("ca-certificates"), "the runtime stage installs CA certificates");
    let ignore = std::fs::read_to_string(format!("{ROOT}/.dockerignore")).expect(".dockerignore");
    for path in ["target/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == path), ".dockerignore leaves {path} in the build context");
    }
}
