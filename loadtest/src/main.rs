//! `egress-loadtest`: load generator and stub upstreams for measuring egress-gateway
//! against the direct path and its peers. The scenarios are being built; for now it
//! serves a stub upstream so a gateway can be tried by hand.

use clap::Parser;

/// Measure egress-gateway against the direct path and its peers.
#[derive(Debug, Parser)]
#[command(version, about)]
enum Cli {
    /// Serve a stub HTTP upstream on 127.0.0.1 (echo, /status/N, /delay/N, /bytes/N).
    Upstream,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Upstream => {
            let upstream = egress_testkit::StubUpstream::try_start().await?;
            println!("stub upstream on {}", upstream.addr());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
    }
}
