//! Memory at rest: the gateway's resident size once it listens with its default
//! policy, and what each idle CONNECT tunnel adds (RSS with N tunnels open, less RSS
//! before, over N), from `/proc/PID/status`.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::scenario::{Scenario, ALLOWED_HOST};
use crate::targets::{Running, StartEnv, TargetKind};
use crate::upstream::{UpstreamConfig, Upstreams};

/// Descriptors kept free for everything but the tunnels.
const SPARE_FDS: u64 = 200;

/// What an idle measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Tunnels asked for.
    pub asked: usize,
    /// Tunnels open (`200` to CONNECT, a byte echoed through) when memory was read.
    pub open: usize,
    /// Tunnels that failed to open.
    pub failed: usize,
    /// Gateway RSS once listening, KiB.
    pub rss_start_kib: u64,
    /// Gateway RSS just before the tunnels opened, KiB.
    pub rss_before_kib: u64,
    /// Gateway RSS with the tunnels open and idle, KiB.
    pub rss_with_tunnels_kib: u64,
}

impl IdleReport {
    /// (RSS with tunnels − RSS before) / open tunnels, KiB.
    pub fn per_tunnel_kib(&self) -> f64 {
        self.rss_with_tunnels_kib
            .saturating_sub(self.rss_before_kib) as f64
            / self.open.max(1) as f64
    }

    /// The report for people.
    pub fn human(&self) -> String {
        format!(
            "gateway RSS once listening (default policy): {:.1} MiB\n\
             idle CONNECT tunnels: {} open of {} asked ({} failed)\n\
             gateway RSS before {:.1} MiB, with the tunnels {:.1} MiB: {:.2} KiB per tunnel\n",
            self.rss_start_kib as f64 / 1024.0,
            self.open,
            self.asked,
            self.failed,
            self.rss_before_kib as f64 / 1024.0,
            self.rss_with_tunnels_kib as f64 / 1024.0,
            self.per_tunnel_kib()
        )
    }
}

/// The descriptors `tunnels` need in this process (each holds the client socket and the
/// echo stub's socket) checked against `limit`.
///
/// Fails when they do not fit, naming both.
pub fn check_descriptors(tunnels: usize, limit: u64) -> anyhow::Result<()> {
    let need = tunnels as u64 * 2 + SPARE_FDS;
    if need > limit {
        anyhow::bail!(
            "{tunnels} tunnels need about {need} open files here (client and echo ends), over the limit of {limit}; \
             lower --tunnels or raise the hard limit (ulimit -Hn)"
        );
    }
    Ok(())
}

/// Starts the stubs and a gateway with a connect listener, reads its memory, opens
/// `tunnels` CONNECT tunnels to the echo stub, waits `settle`, reads it again.
///
/// Fails when the gateway does not start or the descriptors do not fit.
pub async fn measure(
    tunnels: usize,
    settle: Duration,
    env: StartEnv,
) -> anyhow::Result<IdleReport> {
    let limit = crate::proc_stat::raise_nofile();
    check_descriptors(tunnels, limit)?;
    let upstreams = Upstreams::start(UpstreamConfig::default()).await?;
    let addrs = upstreams.addrs();
    let gateway = tokio::task::spawn_blocking(move || {
        Running::start(TargetKind::Gateway, Scenario::ConnectEcho, addrs, &env)
    })
    .await??;
    let rss = || gateway.rss_kib().unwrap_or(0);
    let rss_start_kib = rss();
    let proxy = gateway
        .address(Scenario::ConnectEcho)
        .ok_or_else(|| anyhow::anyhow!("the gateway has no connect listener"))?;
    tokio::time::sleep(settle).await;
    let rss_before_kib = rss();
    let echo_port = addrs.echo.port();
    let mut open = Vec::with_capacity(tunnels);
    let mut failed = 0;
    // Opened in batches: a burst of 10k connects overflows the listen backlog.
    for batch in (0..tunnels).collect::<Vec<_>>().chunks(200) {
        let opening: Vec<_> = batch
            .iter()
            .map(|_| tokio::spawn(open_tunnel(proxy, echo_port)))
            .collect();
        for task in opening {
            match task.await {
                Ok(Ok(stream)) => open.push(stream),
                _ => failed += 1,
            }
        }
    }
    tokio::time::sleep(settle).await;
    let rss_with_tunnels_kib = rss();
    let report = IdleReport {
        asked: tunnels,
        open: open.len(),
        failed,
        rss_start_kib,
        rss_before_kib,
        rss_with_tunnels_kib,
    };
    drop(open);
    tokio::task::spawn_blocking(move || drop(gateway)).await?;
    Ok(report)
}

/// `CONNECT allowed.test:PORT`, the `200`, then one byte echoed through, so the
/// gateway holds both ends of the tunnel.
async fn open_tunnel(proxy: std::net::SocketAddr, port: u16) -> std::io::Result<TcpStream> {
    let work = async {
        let mut stream = crate::client::connect(proxy).await?;
        let head = format!(
            "CONNECT {ALLOWED_HOST}:{port} HTTP/1.1\r\nHost: {ALLOWED_HOST}:{port}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::with_capacity(128);
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") && answer.len() < 4096 {
            stream.read_exact(&mut byte).await?;
            answer.push(byte[0]);
        }
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(std::io::Error::other("CONNECT refused"));
        }
        stream.write_all(b"x").await?;
        stream.read_exact(&mut byte).await?;
        Ok(stream)
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("tunnel timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_tunnel_memory_is_the_growth_over_open_tunnels() {
        let r = IdleReport {
            asked: 100,
            open: 100,
            failed: 0,
            rss_start_kib: 9000,
            rss_before_kib: 10_000,
            rss_with_tunnels_kib: 11_000,
        };
        assert!((r.per_tunnel_kib() - 10.0).abs() < 1e-9);
        assert!(r.human().contains("10.00 KiB per tunnel"));
        let none = IdleReport { open: 0, ..r };
        assert!(none.per_tunnel_kib().is_finite());
    }

    #[test]
    fn descriptors_must_fit_the_limit() {
        assert!(check_descriptors(9000, 20_000).is_ok());
        let e = check_descriptors(10_000, 20_000).unwrap_err().to_string();
        assert!(e.contains("20200") && e.contains("20000"), "{e}");
    }
}
