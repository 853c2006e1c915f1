//! Proves the client's evaluation methods allocate nothing beyond what their return type
//! needs, with a counting global allocator (`stats_alloc`).
//!
//! A dedicated test binary because the allocator is global; one `#[test]`, and the client's
//! background thread is idle (its initial notification delivered) before anything is
//! measured, so nothing else allocates meanwhile.

use std::alloc::System;
use std::sync::mpsc;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vexil_schema::fixture::load_bench_fixtures;
use vexil_sdk::{Client, Context, EventSink, EventsConfig, TestData};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CALLS: usize = 1000;

/// Allocations and reallocations made during `CALLS` calls of `f`. The counter is global, so
/// the client's background thread (still starting its runtime, or answering a change) can
/// add a few of its own; the least of five windows is kept. Allocating in `f` itself shows
/// up in every window (at least `CALLS`), so it cannot be hidden this way.
fn measure(f: impl Fn()) -> (usize, usize) {
    f(); // warm up (thread-local state of the ArcSwap, lazily built caches)
    (0..5)
        .map(|_| {
            let region = Region::new(GLOBAL);
            for _ in 0..CALLS {
                f();
            }
            let stats = region.change();
            (stats.allocations, stats.reallocations)
        })
        .min()
        .unwrap_or((usize::MAX, usize::MAX))
}

#[test]
fn evaluations_allocate_only_what_they_return() {
    // Not ready yet: defaults, without allocating either.
    let td = TestData::new();
    let (tx, rx) = mpsc::channel();
    let empty = Client::builder("unused").offline().build().unwrap();
    let ctx = Context::new("u");
    assert_eq!(
        measure(|| assert!(empty.bool_variation("f", &ctx, true))),
        (0, 0)
    );
    drop(empty);

    let fixtures = load_bench_fixtures().unwrap();
    let client = Client::builder("unused")
        .data_source(td.clone())
        .build()
        .unwrap();
    client.on_flag_change(move |c| {
        let _ = tx.send(c.version);
    });
    for fixture in &fixtures {
        let version = td.load(fixture.snapshot.clone());
        // The background thread has dispatched this update: it is idle again.
        while rx.recv_timeout(Duration::from_secs(10)).unwrap() != version {}

        let (flag, ctx) = (fixture.flag.as_str(), &fixture.context);
        let expected = &fixture.expected.value;
        let name = &fixture.name;
        match expected {
            serde_json::Value::Bool(b) => {
                let got = measure(|| {
                    assert_eq!(
                        std::hint::black_box(client.bool_variation(flag, ctx, !b)),
                        *b
                    )
                });
                assert_eq!(got, (0, 0), "{name}: bool_variation");
                assert_eq!(
                    measure(|| {
                        client.is_enabled(flag, ctx);
                    }),
                    (0, 0),
                    "{name}"
                );
            }
            serde_json::Value::String(s) => {
                let got = measure(|| {
                    assert_eq!(
                        std::hint::black_box(client.string_variation(flag, ctx, "")),
                        *s
                    )
                });
                // The returned String, nothing else.
                assert_eq!(got, (CALLS, 0), "{name}: string_variation");
                // Another type: the default, with no allocation.
                let got = measure(|| assert!(client.bool_variation(flag, ctx, true)));
                assert_eq!(got, (0, 0), "{name}: bool_variation on a string flag");
            }
            other => panic!("{name}: unexpected bench value {other}"),
        }
        assert_eq!(
            measure(|| assert_eq!(client.number_variation(flag, ctx, 1.5), 1.5)),
            (0, 0),
            "{name}: number_variation"
        );
        assert_eq!(
            measure(|| assert_eq!(client.int_variation("no-such-flag", ctx, 3), 3)),
            (0, 0),
            "{name}: unknown flag"
        );
    }

    // With events on (to a sink, flushed only on demand): counting the evaluation for the
    // summary, and an exposure already sent (the experiment fixture, after the warm-up
    // call), allocate nothing either.
    let sink = EventSink::new();
    let (tx, rx) = mpsc::channel();
    let td = TestData::new();
    let events_client = Client::builder("unused")
        .data_source(td.clone())
        .events(EventsConfig::default().flush_interval(Duration::from_secs(3600)))
        .event_sink(sink.clone())
        .build()
        .unwrap();
    events_client.on_flag_change(move |c| {
        let _ = tx.send(c.version);
    });
    for fixture in &fixtures {
        let version = td.load(fixture.snapshot.clone());
        while rx.recv_timeout(Duration::from_secs(10)).unwrap() != version {}
        let (flag, ctx) = (fixture.flag.as_str(), &fixture.context);
        assert_eq!(
            measure(|| {
                std::hint::black_box(events_client.number_variation(flag, ctx, 1.5));
            }),
            (0, 0),
            "{}: number_variation with events on",
            fixture.name
        );
    }
    events_client.flush();
    assert_eq!(
        sink.exposures().len(),
        1,
        "the experiment fixture's exposure, once"
    );
    assert!(!sink.summaries().is_empty());

    // The counter does count.
    let region = Region::new(GLOBAL);
    std::hint::black_box(client.all_flags(&Context::new("u")));
    assert!(
        region.change().allocations > 0,
        "the allocator is not counting"
    );
}
