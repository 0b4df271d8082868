//! `egressctl`: the command line for the admin API.

use clap::Parser;

/// Manage an egress-gateway over its admin API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The admin API's address.
    #[arg(long, env = "EGRESS_ADMIN", default_value = "http://127.0.0.1:15000")]
    admin: String,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Is the gateway alive and ready?
    Status,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Status => match status(&cli.admin).await {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("egressctl: {e}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// GET /readyz with a plain HTTP/1.1 request; the full client comes with the admin API.
#[expect(
    clippy::disallowed_methods,
    reason = "the admin API is the operator's own endpoint, not an egress destination"
)]
async fn status(admin: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot reach the admin API at {authority}: {e}; pass --admin")
        })?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status_line = response.lines().next().unwrap_or_default();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    if status_line.contains(" 200 ") {
        Ok(format!("{authority}: {body}"))
    } else {
        anyhow::bail!("{authority}: {status_line}: {body}")
    }
}
