//! The stub's raw TCP services: echo (every byte back) and sink (every byte dropped).

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Sends back everything received until the client closes.
pub async fn echo(mut tcp: TcpStream) {
    let (reader, mut writer) = tcp.split();
    // tokio's `copy` moves 8 KiB at a time: then the stub, not the proxy, limits runs of
    // large transfers.
    let mut reader = tokio::io::BufReader::with_capacity(256 * 1024, reader);
    let _ = tokio::io::copy_buf(&mut reader, &mut writer).await;
}

/// Reads and drops everything until the client closes.
pub async fn sink(mut tcp: TcpStream) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}
