//! The control plane, built inside the end-to-end test crate so that its tests can start it as a
//! child process (`CARGO_BIN_EXE_vexil-e2e-server`); the same code as `vexil-server`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vexil_server::cli::main().await
}
