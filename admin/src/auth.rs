//! Bearer tokens: the token file (one token per line, optionally `name:token`), its
//! creation with a random token when missing, the constant-time check, and the
//! middleware that guards every route but the open ones.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Tokens shorter than this are refused: a guessable admin token is no token.
pub const MIN_TOKEN_LEN: usize = 16;
/// The name recorded for a line without `name:`.
pub const UNNAMED: &str = "admin";

/// The accepted tokens, each with the name recorded with the changes it makes.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

/// Who made a request: the name of the token it presented. Handlers find it in the
/// request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author(pub String);

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading or creating the file failed.
    #[error("admin token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `token` or `name:token`.
    #[error("admin token file {path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong (never the token itself).
        message: String,
    },
    /// Nothing but blank lines and comments.
    #[error(
        "admin token file {0}: no token in it; add a line, or delete the file to have one created"
    )]
    Empty(PathBuf),
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a token must never reach a log.
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// Parses a token file's text; `path` is only used in errors. Blank lines and lines
    /// starting with `#` are skipped.
    ///
    /// Fails on an empty name or token, a token shorter than [`MIN_TOKEN_LEN`], or a
    /// file without any token.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokenError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => (name.trim(), token.trim()),
                None => (UNNAMED, line),
            };
            let fail = |message: String| TokenError::Line {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            if name.is_empty() {
                return Err(fail("empty name before ':'; write name:token".into()));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(fail(format!(
                    "the token of {name} is {} characters; use at least {MIN_TOKEN_LEN}",
                    token.len()
                )));
            }
            entries.push((name.to_owned(), token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err(TokenError::Empty(path.to_owned()));
        }
        Ok(Self { entries })
    }

    /// Reads the token file at `path`, or creates it (mode 0600) holding one random
    /// token when it does not exist. Returns the tokens and whether the file was created.
    ///
    /// Fails when the file cannot be read or created, or does not parse.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(path = %path.display(), "the admin token file is readable by others; chmod 600 it");
                    }
                }
                Ok((Self::parse(&text, path)?, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = random_token().map_err(io)?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(format!("{UNNAMED}:{token}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok((Self::parse(&format!("{UNNAMED}:{token}"), path)?, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The name of the token `presented` is, if any. Every token is compared, each in
    /// time independent of where the bytes differ, so timing tells nothing.
    pub fn verify(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.entries {
            if constant_time_eq(token, presented) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The token names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }
}

/// Compares without an early exit: the time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// 32 bytes from the kernel's random source, as hex.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Why a request's token was refused, as [`crate::Control::admin_auth_failed`] is told:
/// no `Authorization` header, one that is not a bearer token, or an unknown token.
pub const FAILURE_REASONS: [&str; 3] = ["missing", "not_bearer", "refused"];

/// What the token check needs: the tokens, and where to report refusals.
#[derive(Clone)]
pub struct TokenCheck {
    /// The accepted tokens.
    pub tokens: Arc<Tokens>,
    /// Told of every refusal ([`crate::Control::admin_auth_failed`]).
    pub control: Arc<dyn crate::Control>,
}

/// Lets a request through when it carries `Authorization: Bearer <token>` of a known
/// token, recording the token's name as its [`Author`]; answers 401 otherwise, logging
/// the peer (never the token).
pub async fn require_token(
    State(check): State<TokenCheck>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(str::trim)
        });
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "-".to_owned());
    let path = request.uri().path().to_owned();
    let [missing, not_bearer, unknown] = FAILURE_REASONS;
    let (reason, refused) = match presented {
        None => (missing, "missing bearer token: send Authorization: Bearer <token> (the token is in the gateway's admin.token_file)"),
        Some(None) => (not_bearer, "the Authorization header is not a bearer token: send Authorization: Bearer <token>"),
        Some(Some(token)) => match check.tokens.verify(token.as_bytes()) {
            Some(name) => {
                let author = Author(name.to_owned());
                request.extensions_mut().insert(author);
                return next.run(request).await;
            }
            None => (unknown, "the bearer token was refused: use a token from the gateway's admin.token_file"),
        },
    };
    check.control.admin_auth_failed(reason);
    // Every refusal is counted (egress_admin_auth_failures_total); the log gets one a
    // second, saying how many it left out.
    static REFUSED: crate::throttle::Throttle =
        crate::throttle::Throttle::new(std::time::Duration::from_secs(1));
    if let Some(suppressed) = REFUSED.allow() {
        tracing::warn!(%peer, %path, reason = refused, suppressed, "admin request refused");
    }
    ApiError::unauthorized(refused).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_their_tokens_and_bad_lines_are_explained() {
        let tokens = Tokens::parse(
            "# operators\nalice:aaaaaaaaaaaaaaaaaaaa\n\nbbbbbbbbbbbbbbbbbbbb\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(tokens.verify(b"aaaaaaaaaaaaaaaaaaaa"), Some("alice"));
        assert_eq!(tokens.verify(b"bbbbbbbbbbbbbbbbbbbb"), Some(UNNAMED));
        assert_eq!(tokens.verify(b"aaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(tokens.verify(b""), None);
        let short = Tokens::parse("bob:short\n", Path::new("t")).unwrap_err();
        assert_eq!(
            short.to_string(),
            "admin token file t:1: the token of bob is 5 characters; use at least 16"
        );
        assert!(matches!(
            Tokens::parse("# nothing\n", Path::new("t")),
            Err(TokenError::Empty(_))
        ));
        assert!(!format!("{tokens:?}").contains("aaaa"), "never printed");
    }

    #[test]
    fn a_missing_file_is_created_private_with_a_random_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let (tokens, created) = Tokens::load_or_create(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let token = text.trim().split_once(':').unwrap().1;
        assert_eq!(token.len(), 64);
        assert_eq!(tokens.verify(token.as_bytes()), Some(UNNAMED));
        let (again, created) = Tokens::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.verify(token.as_bytes()), Some(UNNAMED));
    }
}
