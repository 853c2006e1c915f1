//! Measurement loops for machines too busy for criterion's wall-clock figures.
//!
//! ```text
//! cargo build --release -p vexil-sdk --example client_loop
//! # CPU time of an evaluation through the client API (task-clock ÷ iterations):
//! perf stat -e task-clock target/release/examples/client_loop simple-bool 30000000
//! # the same with events on (summary counts; exposures deduplicated), to an in-memory sink:
//! perf stat -e task-clock target/release/examples/client_loop experiment 30000000 events
//! # build() to first evaluation against a local hub serving 10,000 flags, N times:
//! target/release/examples/client_loop init 30 [polling]
//! ```
//!
//! The evaluation loop prints the wall-clock time per evaluation; the init loop prints the
//! minimum, median and maximum (the minimum is the least disturbed by other processes).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vexil_schema::fixture::load_bench_fixtures;
use vexil_sdk::{Client, Context, EventSink, EventsConfig, PollingConfig, TestData};

#[path = "../benches/support/mod.rs"]
mod support;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        eprintln!(
            "usage: client_loop <simple-bool|targeting|experiment|init> <count> [polling|events]"
        );
        return ExitCode::FAILURE;
    };
    if name == "init" {
        init(n, args.get(2).is_some_and(|a| a == "polling"))
    } else {
        evaluate(name, n, args.get(2).is_some_and(|a| a == "events"))
    }
}

fn evaluate(name: &str, iterations: u64, events: bool) -> ExitCode {
    let fixture = match load_bench_fixtures() {
        Ok(f) => f.into_iter().find(|f| f.name == name),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(fixture) = fixture else {
        eprintln!("no benchmark fixture named {name:?}");
        return ExitCode::FAILURE;
    };
    let td = TestData::new();
    td.load(fixture.snapshot.clone());
    let mut builder = Client::builder("loop").data_source(td);
    if events {
        // Flushed only at exit: the loop measures recording alone.
        builder = builder
            .events(EventsConfig::default().flush_interval(Duration::from_secs(3600)))
            .event_sink(EventSink::new());
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let (flag, ctx) = (fixture.flag.as_str(), &fixture.context);
    let start = Instant::now();
    if fixture.expected.value.is_boolean() {
        for _ in 0..iterations {
            black_box(client.bool_variation(black_box(flag), black_box(ctx), false));
        }
    } else {
        for _ in 0..iterations {
            black_box(client.string_variation(black_box(flag), black_box(ctx), ""));
        }
    }
    let per_eval = start.elapsed().as_secs_f64() * 1e9 / iterations.max(1) as f64;
    println!("{name}: {per_eval:.1} ns per evaluation through the client (wall clock)");
    ExitCode::SUCCESS
}

fn init(reps: u64, polling: bool) -> ExitCode {
    let hub = support::local_hub();
    let user = Context::builder("user-1")
        .set("email", "someone@example.com")
        .set("country", "FR")
        .build();
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let mut builder = Client::builder(support::KEY).base_url(&hub.url);
        if polling {
            builder = builder.polling(PollingConfig::default());
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = client.wait_for_initialization_blocking(Duration::from_secs(30)) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        if !client.bool_variation("flag-09999", &user, false) {
            eprintln!("unexpected value");
            return ExitCode::FAILURE;
        }
        times.push(start.elapsed());
        drop(client);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "init with 10,000 flags ({}): min {:.1} ms, median {:.1} ms, max {:.1} ms over {} runs",
        if polling { "polling" } else { "streaming" },
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
    ExitCode::SUCCESS
}
