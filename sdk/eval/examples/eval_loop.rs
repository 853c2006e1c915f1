//! Evaluates one benchmark fixture in a tight loop, for profilers and CPU-time measurement
//! on machines too busy for criterion's wall-clock figures:
//!
//! ```text
//! cargo build --release -p vexil-eval --example eval_loop
//! perf stat -e task-clock target/release/examples/eval_loop targeting 3000000
//! ```
//!
//! Prints the wall-clock time per evaluation; `task-clock / iterations` is the CPU time.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use vexil_eval::CompiledSnapshot;
use vexil_schema::fixture::load_bench_fixtures;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(iterations)) = (args.next(), args.next()) else {
        eprintln!("usage: eval_loop <simple-bool|targeting|experiment> <iterations>");
        return ExitCode::FAILURE;
    };
    let Ok(iterations) = iterations.parse::<u64>() else {
        eprintln!("iterations must be a number");
        return ExitCode::FAILURE;
    };
    let fixtures = match load_bench_fixtures() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(fixture) = fixtures.into_iter().find(|f| f.name == name) else {
        eprintln!("no benchmark fixture named {name:?}");
        return ExitCode::FAILURE;
    };
    let compiled = CompiledSnapshot::compile(&fixture.snapshot);
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(compiled.evaluate(black_box(&fixture.flag), black_box(&fixture.context)));
    }
    let per_eval = start.elapsed().as_secs_f64() * 1e9 / iterations.max(1) as f64;
    println!("{name}: {per_eval:.1} ns per evaluation (wall clock)");
    ExitCode::SUCCESS
}
