//! Proves evaluation allocates nothing, with a counting global allocator (`stats_alloc`).
//!
//! A dedicated test binary because the allocator counts every thread, and without the libtest
//! harness (`harness = false`): libtest's main thread allocates while it waits for a test
//! thread, which made the count flaky. Here the process has one thread.

use std::alloc::System;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vexil_eval::CompiledSnapshot;
use vexil_schema::Context;
use vexil_schema::fixture::load_bench_fixtures;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    evaluation_allocates_nothing();
    println!("alloc: 1 passed, 0 failed");
}

fn evaluation_allocates_nothing() {
    let fixtures = load_bench_fixtures().expect("bench fixtures load");
    assert_eq!(fixtures.len(), 3);
    for fixture in &fixtures {
        let compiled = CompiledSnapshot::compile(&fixture.snapshot);
        // Anonymous and unknown-flag paths too.
        let anonymous = Context::anonymous();
        let calls: [(&str, &Context); 3] = [
            (&fixture.flag, &fixture.context),
            (&fixture.flag, &anonymous),
            ("no-such-flag", &fixture.context),
        ];
        for (flag, ctx) in calls {
            let warm = compiled.evaluate(flag, ctx);
            let region = Region::new(GLOBAL);
            let mut same = true;
            for _ in 0..1000 {
                let e = compiled.evaluate(std::hint::black_box(flag), std::hint::black_box(ctx));
                same &= e == warm;
                std::hint::black_box(e.as_str("default"));
                std::hint::black_box(e.openfeature_reason());
            }
            let stats = region.change();
            assert!(same, "{}: results changed between calls", fixture.name);
            assert_eq!(
                (stats.allocations, stats.reallocations),
                (0, 0),
                "{} / {flag}: {stats:?}",
                fixture.name
            );
        }
        // The counter does count: an explanation allocates.
        let region = Region::new(GLOBAL);
        std::hint::black_box(compiled.explain(&fixture.flag, &fixture.context));
        assert!(
            region.change().allocations > 0,
            "the allocator is not counting"
        );
    }
}
