//! What egressctl reads before it asks: the token file, policy and rule files, a
//! destination, and the answers' JSON.

use std::io::Read;
use std::path::Path;

use egress_admin::client::Reply;

use super::Failure;

/// The first token of a token file (`token` or `name:token` lines).
pub fn read_token(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(format!(
            "cannot read the token file {}: {e}; pass --token-file (or set EGRESS_TOKEN_FILE) naming the gateway's admin.token_file",
            path.display()
        ))
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |(_, t)| t).trim().to_owned())
        .ok_or_else(|| Failure::new(format!("the token file {} holds no token", path.display())))
}

/// Percent-encodes a path segment.
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A policy or rule file, with its media type (JSON by extension, else YAML).
pub fn read_file(path: &Path) -> Result<(Vec<u8>, &'static str), Failure> {
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
    let json = path.extension().is_some_and(|e| e == "json");
    Ok((
        bytes,
        if json {
            "application/json"
        } else {
            "application/yaml"
        },
    ))
}

pub fn parse<T: serde::de::DeserializeOwned>(reply: &Reply) -> Result<T, Failure> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        Failure::new(format!(
            "unexpected answer from the admin API ({e}); is --admin the admin address?"
        ))
    })
}

/// `host:port` or `[v6]:port`.
pub fn split_destination(raw: &str) -> Result<(String, u16), Failure> {
    let fail = || {
        Failure::new(format!(
            "{raw:?} is not HOST:PORT; e.g. api.example.com:443 or [2001:db8::1]:443"
        ))
    };
    let (host, port) = raw.rsplit_once(':').ok_or_else(fail)?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
        return Err(fail());
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(fail)?;
    Ok((host.to_owned(), port))
}
