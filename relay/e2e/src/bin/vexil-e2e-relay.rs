//! The edge relay, built inside the end-to-end test crate so that its tests can start it as a
//! child process (`CARGO_BIN_EXE_vexil-e2e-relay`); the same code as `vexil-relay`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vexil_relay::cli::main().await
}
