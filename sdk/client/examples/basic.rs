//! Evaluates one flag against a running Vexil server (or relay), then prints its new value
//! every time it changes.
//!
//! ```sh
//! VEXIL_SDK_KEY=<an SDK key of the environment> \
//!   cargo run -p vexil-sdk --example basic -- new-checkout user-42 plan=pro country=FR
//! ```
//!
//! `VEXIL_URL` sets the server (default `http://127.0.0.1:8080`), `VEXIL_LKG` a
//! last-known-good file (try stopping the server and starting the example again), and
//! `RUST_LOG` the log level (default `vexil_sdk=info`).

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use vexil_sdk::{Client, Context, DEFAULT_BASE_URL, EvaluationDetail};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vexil_sdk=info".into()),
        )
        .init();

    let mut args = std::env::args().skip(1);
    let Some(flag) = args.next() else {
        bail!("usage: basic <flag-key> [user-key] [attribute=value ...]");
    };
    let user = args.next().unwrap_or_else(|| "user-1".to_owned());
    let mut ctx = Context::builder(user);
    for pair in args {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("{pair:?}: expected attribute=value"))?;
        // Numbers and booleans as such, anything else as a string.
        let value: serde_json::Value = serde_json::from_str(value).unwrap_or_else(|_| value.into());
        ctx = ctx.set(name, value);
    }
    let ctx = ctx.build();

    let sdk_key = std::env::var("VEXIL_SDK_KEY").context("set VEXIL_SDK_KEY to an SDK key")?;
    let url = std::env::var("VEXIL_URL").unwrap_or_else(|_| DEFAULT_BASE_URL.to_owned());
    let mut builder = Client::builder(sdk_key).base_url(url);
    if let Ok(path) = std::env::var("VEXIL_LKG") {
        builder = builder.last_known_good(path);
    }
    let client = builder.build()?;

    match client.wait_for_initialization_blocking(Duration::from_secs(5)) {
        Ok(()) => println!("ready: {:?}", client.status()),
        Err(e) => println!("starting anyway: {e}"),
    }
    print_detail(
        &flag,
        &client.json_variation_detail(&flag, &ctx, serde_json::Value::Null),
    );

    let (tx, rx) = mpsc::channel();
    client.on_flag_change(move |change| {
        let _ = tx.send(change.clone());
    });
    println!("watching {flag:?}; change it in Vexil, Ctrl-C to stop");
    for change in rx {
        if change.contains(&flag) {
            println!("version {}:", change.version);
            print_detail(
                &flag,
                &client.json_variation_detail(&flag, &ctx, serde_json::Value::Null),
            );
        }
    }
    Ok(())
}

fn print_detail(flag: &str, d: &EvaluationDetail<serde_json::Value>) {
    println!(
        "  {flag} = {} (variation {}, reason {})",
        d.value,
        d.variation_name
            .clone()
            .or_else(|| d.variation.map(|v| v.to_string()))
            .unwrap_or_else(|| "-".into()),
        serde_json::to_string(&d.reason).unwrap_or_default(),
    );
}
