//! A TCP relay on loopback that a test can black-hole: while cut, bytes in both
//! directions are held (connections stay open, nothing arrives), as when a network
//! path silently drops packets; healed, new connections flow again. Connections that
//! were open when it was cut are closed on heal, as a real partition's would time out.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay to `target`.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays 127.0.0.1:<free port> to `target`.
    ///
    /// Fails when no port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(watch::Sender::new(false));
        let state = Arc::clone(&cut);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, target, state.subscribe()));
            }
        });
        Ok(Relay { addr, cut, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL as an etcd endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops passing bytes; connections stay open.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Passes bytes again (connections held while cut are closed).
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if *cut.borrow_and_update() {
        // Accepted but never answered, until healed; then dropped.
        let _ = cut.wait_for(|c| !*c).await;
        return;
    }
    let Ok(mut upstream) = crate::client::connect(target).await else {
        let _ = client.shutdown().await;
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let copy = async {
        tokio::select! {
            _ = tokio::io::copy(&mut cr, &mut uw) => {}
            _ = tokio::io::copy(&mut ur, &mut cw) => {}
        }
    };
    let held = tokio::select! {
        _ = copy => false,
        _ = cut.wait_for(|c| *c) => true,
    };
    if held {
        // Nothing moves until healed, then the connection is dropped.
        let _ = cut.wait_for(|c| !*c).await;
    }
}
