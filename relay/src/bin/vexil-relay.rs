//! `vexil-relay`: the edge relay ([`vexil_relay::cli::main`]).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vexil_relay::cli::main().await
}
