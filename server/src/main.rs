//! `vexil-server`: the control plane (see [`vexil_server::cli::main`]).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vexil_server::cli::main().await
}
