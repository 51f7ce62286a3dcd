//! The HTTP API over TLS (issue 13, security): with `http.tls_cert` and `http.tls_key` set,
//! pagepulse serves HTTPS only, with that certificate; a client that trusts it reads and writes
//! as over plain HTTP; a plain-HTTP request to the port gets no HTTP answer; a client that does not
//! trust the certificate is refused by its own TLS check; a certificate that cannot be read stops
//! the start with an error naming the field.

mod support;

use std::time::{Duration, Instant};

use support::TestEnv;

const WRITE: &str = "write-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";

#[test]
fn the_api_is_served_over_tls_with_the_configured_certificate() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, generated.cert.pem()).expect("write cert");
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).expect("write key");
    let (cert, key) = (cert_path.to_str().expect("UTF-8 path"), key_path.to_str().expect("UTF-8 path"));
    let pp = env.start_with(&[
        ("PAGEPULSE_WRITE_TOKEN", WRITE),
        ("PAGEPULSE_READ_TOKEN", READ),
        ("PAGEPULSE__http__public_reads", "false"),
        ("PAGEPULSE__http__tls_cert", cert),
        ("PAGEPULSE__http__tls_key", key),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__fans__enabled", "false"),
    ]);
    let base = format!("https://{}", pp.addr);
    let trusted = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).expect("PEM")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let untrusting = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(async {
        // Ready over HTTPS (a condition with a deadline, not a sleep).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = trusted.get(format!("{base}/readyz")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "not ready over HTTPS within 60 s; log:\n{}", pp.log_text());
            tokio::time::sleep(support::POLL_INTERVAL).await;
        }
        // A write over TLS, acknowledged and in the topic.
        let r = trusted
            .post(format!("{base}/api/v1/posts"))
            .bearer_auth(WRITE)
            .header("Content-Type", "application/json")
            .body(r#"{"id":"tls-1","content":"over #tls"}"#)
            .send()
            .await
            .expect("HTTPS write");
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        // A read with the token; without it, a problem document.
        let r = trusted.get(format!("{base}/api/v1/openapi.json")).send().await.expect("HTTPS read");
        assert_eq!(r.status(), 200);
        let analysis = format!("{base}/api/v1/posts/tls-1/analysis");
        let r = trusted.get(&analysis).send().await.expect("HTTPS read");
        assert_eq!(r.status(), 401, "{:?}", r.text().await);
        let deadline = Instant::now() + Duration::from_secs(60);
        let v: serde_json::Value = loop {
            let r = trusted.get(&analysis).bearer_auth(READ).send().await.expect("HTTPS read");
            if r.status() == 200 {
                break serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON analysis");
            }
            assert!(Instant::now() < deadline, "no analysis over HTTPS within 60 s: {}", r.status());
            tokio::time::sleep(support::POLL_INTERVAL).await;
        };
        assert_eq!(v["word_count"], 2, "{v}");
        // A client that does not trust the certificate fails its own check: nothing is sent.
        let refused = untrusting.get(format!("{base}/readyz")).send().await;
        assert!(refused.is_err(), "an untrusted certificate was accepted: {refused:?}");
    });
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = support::http(&pp.addr, "GET", "/readyz", &[], b"").map(|a| a.status);
    assert!(plain.is_none_or(|s| s != 200), "plain HTTP answered: {plain:?}");
    let recs = env.read_until("posts", Duration::from_secs(30), |r| !r.is_empty());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].key.as_deref(), Some(&b"tls-1"[..]));
}

#[test]
fn a_certificate_that_cannot_be_read_stops_the_start_naming_the_field() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().expect("UTF-8 path");
    let out = env
        .cli(&["run"])
        .env("PAGEPULSE__http__tls_cert", missing)
        .env("PAGEPULSE__http__tls_key", missing)
        .env("PAGEPULSE_WRITE_TOKEN", WRITE)
        .output()
        .expect("run pagepulse");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.tls_cert"), "{err}");
}
