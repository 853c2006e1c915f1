//! `vexil-eval`, LaunchDarkly's and Unleash's evaluators on the three benchmark flags, in
//! one run: ns per evaluation (criterion), heap allocations per evaluation (a counting
//! global allocator), and the ratios to Vexil.
//!
//! ```text
//! cargo bench --manifest-path loadtest/peers/Cargo.toml [-- <filter>]
//! ```
//!
//! Before measuring, every peer's answer is checked against Vexil's (same variation), so a
//! translation that takes another path cannot be measured. Nothing here asserts a time.

use std::alloc::System;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::Criterion;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use vexil_eval::CompiledSnapshot;
use vexil_peers::{launchdarkly, unleash, vexil_outcome};
use vexil_schema::fixture::{BenchFixture, load_bench_fixtures};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Evaluations per allocation count (the counts are exact; this only averages).
const ALLOC_RUNS: u64 = 10_000;

const ENGINES: [&str; 3] = ["vexil", "launchdarkly", "unleash"];

struct Case {
    fixture: BenchFixture,
    vexil: CompiledSnapshot,
    launchdarkly: launchdarkly::Prepared,
    unleash: unleash::Prepared,
}

impl Case {
    fn new(fixture: BenchFixture) -> Self {
        let vexil = CompiledSnapshot::compile(&fixture.snapshot);
        let launchdarkly = launchdarkly::Prepared::prepare(&fixture)
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        let unleash = unleash::Prepared::prepare(&fixture)
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        let expected = vexil_outcome(&fixture).variation;
        assert_eq!(
            expected, fixture.expected.variation,
            "vexil, {}",
            fixture.name
        );
        assert_eq!(
            launchdarkly.variation(),
            expected,
            "launchdarkly, {}",
            fixture.name
        );
        assert_eq!(unleash.variation(), expected, "unleash, {}", fixture.name);
        Self {
            fixture,
            vexil,
            launchdarkly,
            unleash,
        }
    }

    /// One evaluation with `engine`, its result dropped inside the call.
    fn run(&self, engine: &str) {
        match engine {
            "vexil" => {
                black_box(self.vexil.evaluate(
                    black_box(&self.fixture.flag),
                    black_box(&self.fixture.context),
                ));
            }
            "launchdarkly" => {
                black_box(black_box(&self.launchdarkly).evaluate());
            }
            "unleash" => {
                black_box(black_box(&self.unleash).evaluate());
            }
            other => unreachable!("unknown engine {other}"),
        }
    }

    /// Heap allocations and bytes per evaluation.
    fn allocations(&self, engine: &str) -> (f64, f64) {
        self.run(engine); // warm any lazily initialised state first
        let region = Region::new(GLOBAL);
        for _ in 0..ALLOC_RUNS {
            self.run(engine);
        }
        let stats = region.change();
        let count = (stats.allocations + stats.reallocations) as f64 / ALLOC_RUNS as f64;
        let bytes = stats.bytes_allocated as f64 / ALLOC_RUNS as f64;
        (count, bytes)
    }
}

fn main() {
    let fixtures = load_bench_fixtures().unwrap_or_else(|e| panic!("benchmark fixtures: {e}"));
    let cases: Vec<Case> = fixtures.into_iter().map(Case::new).collect();

    let out_dir = criterion_dir();
    let mut criterion = Criterion::default()
        .output_directory(&out_dir)
        .configure_from_args();
    for case in &cases {
        let mut group = criterion.benchmark_group(format!("peers/{}", case.fixture.name));
        for engine in ENGINES {
            // Direct calls per engine so the engine choice is not inside the measured loop.
            match engine {
                "vexil" => group.bench_function(engine, |b| {
                    b.iter(|| {
                        case.vexil.evaluate(
                            black_box(&case.fixture.flag),
                            black_box(&case.fixture.context),
                        )
                    })
                }),
                "launchdarkly" => group.bench_function(engine, |b| {
                    b.iter(|| black_box(&case.launchdarkly).evaluate())
                }),
                _ => {
                    group.bench_function(engine, |b| b.iter(|| black_box(&case.unleash).evaluate()))
                }
            };
        }
        group.finish();
    }
    criterion.final_summary();

    println!();
    println!(
        "| flag | engine | ns / evaluation | × Vexil | allocations / evaluation | bytes / evaluation |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for case in &cases {
        let name = &case.fixture.name;
        let base = estimate_ns(&out_dir, name, "vexil");
        for engine in ENGINES {
            let (allocs, bytes) = case.allocations(engine);
            let ns = estimate_ns(&out_dir, name, engine);
            let ns_text = ns.map_or_else(|| "(not measured)".to_owned(), |ns| format!("{ns:.1}"));
            let ratio = match (ns, base) {
                (Some(ns), Some(base)) if base > 0.0 => format!("{:.1}", ns / base),
                _ => "—".to_owned(),
            };
            println!("| {name} | {engine} | {ns_text} | {ratio} | {allocs:.1} | {bytes:.0} |");
        }
    }
}

/// Where criterion writes its estimates (its own rule: `CRITERION_HOME`, then
/// `CARGO_TARGET_DIR/criterion`, then the target directory this bench was built in).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    // <target>/release/deps/peers-<hash>
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .map_or_else(
            || PathBuf::from("target/criterion"),
            |t| t.join("criterion"),
        )
}

/// Criterion's point estimate (slope when sampled linearly, else mean) in ns, if this run
/// or an earlier one measured it.
fn estimate_ns(dir: &Path, flag: &str, engine: &str) -> Option<f64> {
    let path = dir
        .join(format!("peers_{flag}"))
        .join(engine)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    ["slope", "mean"]
        .iter()
        .find_map(|k| doc.get(k)?.get("point_estimate")?.as_f64())
}
