//! The Prometheus endpoint on a real node: its text parses as Prometheus
//! exposition (with the prometheus-parse crate, not our own code), the
//! stage histograms and log counters move when puts are made, and the
//! probes beside it answer. (A member whose groups lost their leaders
//! failing `/readyz` is in tests/dead_member.rs.)

mod common;

use common::pki::{client_tls_section, path_text, Authority};
use common::*;
use prometheus_parse::{Sample, Scrape, Value};

fn scrape(port: u16) -> Scrape {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("Prometheus text")
}

fn find<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> &'a Sample {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name && labels.iter().all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?} among {} samples", scrape.samples.len()))
}

/// The number of observations of a histogram sample.
fn observations(sample: &Sample) -> u64 {
    match &sample.value {
        Value::Histogram(buckets) => buckets.iter().map(|bucket| bucket.count as u64).max().unwrap_or(0),
        other => panic!("{} is not a histogram: {other:?}", sample.metric),
    }
}

fn counter(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(value) | Value::Gauge(value) | Value::Untyped(value) => value,
        ref other => panic!("{} is not a number: {other:?}", sample.metric),
    }
}

#[test]
fn the_endpoint_parses_as_prometheus_text_and_its_histograms_move_with_puts() {
    let metrics_port = common::cluster::free_ports(1);
    // One shard, so every put passes its stages.
    let setup =
        Setup::new(&format!("[reactor]\nshards = 1\n\n[metrics]\naddress = \"127.0.0.1:{metrics_port}\""));
    let mut daemon = Daemon::start(&setup.config);
    let port = ready_port(&daemon.wait_ready());

    let before = scrape(metrics_port);
    let shard = [("shard", "0"), ("stage", "end_to_end")];
    let writes_before = counter(find(&before, "nvkv_log_writes_total", &[("shard", "0")]));
    let ends_before = observations(find(&before, "nvkv_stage_duration_seconds", &shard));
    for index in 0..20 {
        client(port, &["put", &format!("/metrics/{index}"), "v"]).expect("put");
    }
    let after = scrape(metrics_port);
    let ends = observations(find(&after, "nvkv_stage_duration_seconds", &shard));
    assert!(ends >= ends_before + 20, "20 puts went end to end: {ends_before} then {ends}");
    let device = observations(find(
        &after,
        "nvkv_stage_duration_seconds",
        &[("shard", "0"), ("stage", "device_write")],
    ));
    assert!(device > 0, "the device write stage has observations");
    let writes_after = counter(find(&after, "nvkv_log_writes_total", &[("shard", "0")]));
    assert!(writes_after >= writes_before + 1.0, "log writes: {writes_before} then {writes_after}");
    let revisions: f64 =
        after.samples.iter().filter(|sample| sample.metric == "nvkv_group_revision").map(counter).sum();
    assert!(revisions >= 20.0, "the groups' revisions count the 20 puts: {revisions}");
    assert!(counter(find(&after, "nvkv_reactor_busy_seconds_total", &[("shard", "0")])) > 0.0);
    assert_eq!(counter(find(&after, "nvkv_device_errors_total", &[("shard", "0")])), 0.0);
    let written = counter(find(&after, "nvkv_device_written_bytes_total", &[("shard", "0")]));
    assert!(written > 0.0, "the log wrote to the device: {written} bytes");
    let leader_changes: Vec<f64> = after
        .samples
        .iter()
        .filter(|sample| sample.metric == "nvkv_group_leader_changes_total")
        .map(counter)
        .collect();
    assert!(!leader_changes.is_empty(), "every group has a leader-change counter");
    assert!(
        leader_changes.iter().all(|changes| *changes >= 1.0),
        "each group elected a leader: {leader_changes:?}"
    );

    // `nvkv status` shows a person the same counters.
    let status: serde_json::Value =
        serde_json::from_str(&client(port, &["status", "-w", "json"]).expect("status"))
            .expect("status is JSON");
    let node = &status.as_array().expect("one status per endpoint")[0];
    let shard0 = &node["shards"][0];
    assert!(shard0["device_written_bytes"].as_u64().expect("device_written_bytes") >= written as u64);
    assert_eq!(shard0["device_errors"].as_u64(), Some(0));
    assert!(shard0["reactor_busy_seconds"].as_f64().expect("reactor_busy_seconds") > 0.0);
    let groups = node["groups"].as_array().expect("groups");
    assert!(groups.iter().all(|group| group["leader_changes"].as_u64() >= Some(1)), "{groups:?}");
    let human = client(port, &["status"]).expect("status");
    assert!(human.contains("leader changes") && human.contains("device errors"), "{human}");

    // The probes beside the metrics: a node alone leads every group.
    let (status, body) = http_get(metrics_port, "/livez");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok: 1 shards answer\n"));
    let (status, body) = http_get(metrics_port, "/readyz");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.starts_with("ok: 1 shards serve, every group of "), "{body}");
    let (status, body) = http_get(metrics_port, "/health");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", r#"{"health":"true","reason":""}"#));

    let (status, body) = http_get(metrics_port, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "/ is not served here; GET /metrics, /livez, /readyz and /health are served here\n");
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
}

/// Runs curl (scripts/setup.sh installs it) with `args`: its stdout, or its
/// stderr when it fails.
fn curl(args: &[&str]) -> Result<String, String> {
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs (scripts/setup.sh installs it)");
    stdout_or_stderr(output)
}

/// Off loopback the endpoint speaks TLS with the client port's keys and
/// asks for a client certificate of `tls.client_ca_file`; without TLS keys
/// a node refuses such an address.
#[test]
fn off_loopback_the_endpoint_speaks_tls_and_asks_for_a_client_certificate() {
    let metrics_port = common::cluster::free_ports(1);
    let address = format!("[metrics]\naddress = \"0.0.0.0:{metrics_port}\"");
    let plain = Setup::new(&address);
    let refusal = refused(&plain.config);
    assert!(refusal.contains("metrics.address") && refusal.contains("tls.client_cert_file"), "{refusal}");

    let directory = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new(directory.path(), "ca");
    let clients = Authority::new(directory.path(), "clients-ca");
    let server = ca.issue("server", &["127.0.0.1"]);
    let scraper = clients.issue("scraper", &["scraper"]);
    let tls = client_tls_section(&server, Some(&clients.certificate_file()));
    let setup = Setup::new(&format!("{tls}\n{address}"));
    let mut daemon = Daemon::start(&setup.config);
    daemon.wait_ready();
    let (ca_file, cert, key) =
        (path_text(&ca.certificate_file()), path_text(&scraper.0), path_text(&scraper.1));
    let url = format!("https://127.0.0.1:{metrics_port}/metrics");

    let body = curl(&["--cacert", &ca_file, "--cert", &cert, "--key", &key, &url])
        .expect("a scrape with a certificate");
    assert!(body.contains("nvkv_log_writes_total"), "{body}");
    let error = curl(&["--cacert", &ca_file, &url]).expect_err("no client certificate");
    assert!(!error.is_empty(), "curl says why");
    let error =
        curl(&[&format!("http://127.0.0.1:{metrics_port}/metrics")]).expect_err("plain HTTP is not served");
    assert!(!error.is_empty(), "curl says why");
    daemon.signal(libc::SIGTERM);
    let (status, stderr) = daemon.wait_exit();
    assert!(status.success(), "clean stop: {stderr}");
}
