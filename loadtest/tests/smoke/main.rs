//! Every scenario, small: a few hundred subscribers and a few seconds each, through the real
//! `vexil-loadtest` binary against the real `vexil-server` and `vexil-relay` binaries (found
//! beside the test binary, or built; see `vexil_loadtest::system`). The figures are not
//! asserted (speed is measured, never asserted); correctness is: no missed versions, every
//! subscriber held or back, successful evaluations.
//!
//! Subscribers are spread over two worker processes and three source addresses so those
//! paths run too.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `vexil-loadtest <args> --out <tmp>`; returns the JSON report.
fn run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_vexil-loadtest"))
        .args(args)
        .args(["--flags", "5", "--max-duration-s", "240", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    report(&out)
}

fn report(path: &Path) -> Value {
    let report: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(report["passed"], true, "{report:#}");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);
    report
}

const SPREAD: [&str; 4] = ["--per-worker", "150", "--per-address", "100"];

#[test]
fn propagation_reaches_every_subscriber_without_missing_a_version() {
    // Two relay processes share the port: the kernel spreads the 300 streams over them.
    let mut args = vec![
        "propagation",
        "--subscribers",
        "300",
        "--changes",
        "4",
        "--interval-ms",
        "20",
        "--relays",
        "2",
        "--floor-rounds",
        "3",
    ];
    args.extend(SPREAD);
    let r = run(&args);
    let d = &r["details"];
    assert_eq!(d["subscribers"], 300);
    assert_eq!(d["changes"], 4);
    assert_eq!(d["subscribers_missed_version"], 0);
    assert_eq!(d["receipts_missing"], 0);
    assert_eq!(
        d["final_version"].as_u64().unwrap(),
        d["initial_version"].as_u64().unwrap() + 4
    );
    assert_eq!(d["write_to_receipt_ms"]["count"], 300 * 4);
    assert_eq!(
        (d["workers"].as_u64(), d["source_addresses"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(d["relays"], 2);
    let descriptors = d["relay_descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), 2, "{d:#}");
    // Both relays hold streams (300 connections never all hash to one of two listeners).
    assert!(
        descriptors.iter().all(|n| n.as_u64().unwrap() >= 50),
        "{d:#}"
    );
    // The floor was measured on the relay's own change frame, on as many sockets.
    let floor = &d["write_floor"];
    assert_eq!(floor["sockets"], 300, "{d:#}");
    assert!(floor["frame_bytes"].as_u64().unwrap() > 20, "{d:#}");
    assert!(floor["cpu_us_per_write"].as_f64().unwrap() > 0.0, "{d:#}");
    assert!(
        d["relay_cpu_us_per_change_per_subscriber"]
            .as_f64()
            .is_some()
    );
}

#[test]
fn a_run_the_machine_cannot_hold_fails_at_once_naming_the_numbers() {
    // More ports per source address than any ephemeral range holds: refused before anything
    // starts.
    let output = Command::new(env!("CARGO_BIN_EXE_vexil-loadtest"))
        .args([
            "propagation",
            "--subscribers",
            "70000",
            "--per-address",
            "70000",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--per-address 70000 needs that many ephemeral ports"),
        "{stderr}"
    );
}

#[test]
fn client_streams_receive_every_change_of_their_contexts_values() {
    let mut args = vec![
        "propagation",
        "--client-stream",
        "--subscribers",
        "300",
        "--changes",
        "4",
        "--interval-ms",
        "20",
    ];
    args.extend(SPREAD);
    let d = &run(&args)["details"];
    assert_eq!(d["client_stream"], true);
    assert_eq!(d["subscribers_missed_version"], 0);
    assert_eq!(d["receipts_missing"], 0);
    assert_eq!(d["write_to_receipt_ms"]["count"], 300 * 4);
}

#[test]
fn segment_key_edits_reach_every_subscriber_as_deltas() {
    let d = &run(&[
        "propagation",
        "--delta",
        "--segment-keys",
        "2000",
        "--subscribers",
        "100",
        "--changes",
        "3",
        "--interval-ms",
        "20",
    ])["details"];
    assert_eq!(d["delta"], true);
    assert_eq!(d["segment"]["keys"], 2000);
    assert_eq!(d["segment"]["key_bytes"], 2000 * 10);
    assert!(d["segment"]["relay_rss_grown_bytes"].is_u64(), "{d:#}");
    assert_eq!(d["subscribers_missed_version"], 0);
    assert_eq!(d["receipts_missing"], 0);
    assert_eq!(
        d["final_version"].as_u64().unwrap(),
        d["initial_version"].as_u64().unwrap() + 3
    );
}

#[test]
fn capacity_holds_every_idle_subscriber_and_measures_memory() {
    let mut args = vec!["capacity", "--subscribers", "300", "--hold-s", "1"];
    args.extend(SPREAD);
    let d = &run(&args)["details"];
    assert_eq!(d["subscribers_held"], 300);
    assert!(d["relay_rss_after_kib"].as_u64().unwrap() > 0);
}

#[test]
fn ofrep_evaluates_on_the_relay_and_the_server() {
    let r = run(&[
        "ofrep",
        "--connections",
        "4",
        "--duration-s",
        "2",
        "--warmup-s",
        "1",
        "--sdk-keys",
        "2",
        "--targets",
        "relay,server",
    ]);
    // The scenario sets the rate limit itself (off), and loads both endpoints.
    assert_eq!(r["details"]["ofrep_rate_limit"], 0);
    let results = r["details"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "relay and server × single and bulk");
    for result in results {
        assert_eq!(result["available"], true, "{result:#}");
        assert!(result["ok"].as_u64().unwrap() > 0, "{result:#}");
        assert!(
            result["latency"]["p99_ms"].as_f64().unwrap() > 0.0,
            "{result:#}"
        );
    }
}

#[test]
fn refusals_are_not_throughput_a_rate_limited_run_is_invalid() {
    // One request per second per key: nearly every answer is a 429.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_vexil-loadtest"))
        .args([
            "ofrep",
            "--connections",
            "2",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
        ])
        .args([
            "--sdk-keys",
            "1",
            "--targets",
            "relay",
            "--endpoints",
            "single",
        ])
        .args(["--ofrep-rate-limit", "1", "--flags", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a rate-limited run passed:\n{stderr}"
    );
    assert!(stderr.contains("the run is invalid"), "{stderr}");
    assert!(stderr.contains("non-2xx answers"), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["passed"], false);
    let result = &report["details"]["results"][0];
    assert!(result["refused"]["429"].as_u64().unwrap() > 0, "{result:#}");
    assert!(
        report["failures"][0]
            .as_str()
            .unwrap()
            .contains("rate limit"),
        "{report:#}"
    );
}

#[test]
fn reconnect_storm_brings_every_subscriber_back_current() {
    let mut args = vec![
        "reconnect-storm",
        "--subscribers",
        "200",
        "--down-ms",
        "200",
        "--backoff-initial-ms",
        "200",
        "--backoff-max-ms",
        "1000",
        "--recover-timeout-s",
        "60",
    ];
    args.extend(SPREAD);
    let d = &run(&args)["details"];
    assert_eq!(d["not_back"], 0);
    assert!(d["kill_to_all_current_s"].as_f64().unwrap() > 0.0);
    assert!(
        d["disconnections"].as_u64().unwrap() >= 200,
        "every subscriber lost its stream"
    );
}
