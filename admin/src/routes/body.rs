//! Reading what a write sends: the body (size-limited, YAML or JSON by `Content-Type`),
//! `If-Match`, and `?dry_run`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};

use crate::api::{Format, PolicyText};
use crate::error::ApiError;

/// Reads the whole body, refusing more than `limit` bytes (413).
pub async fn read(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
        }
    }
}

/// The format a `Content-Type` names: YAML for the YAML media types (and when absent:
/// YAML parses JSON too), JSON for `application/json`.
///
/// Fails with 415 for any other media type.
pub fn format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Yaml);
    };
    let media = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(Format::Yaml),
        "application/json" => Ok(Format::Json),
        _ => Err(unsupported(&media)),
    }
}

fn unsupported(media: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "content type {media:?} is neither YAML nor JSON; send Content-Type: application/yaml or application/json"
        ),
    )
}

/// The body as policy text.
///
/// Fails with 415 for a media type other than YAML or JSON, or a body that is not UTF-8.
pub fn policy_text(bytes: Vec<u8>, headers: &HeaderMap) -> Result<PolicyText, ApiError> {
    let format = format(headers)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body is not UTF-8 text, so neither YAML nor JSON",
        )
    })?;
    Ok(PolicyText { text, format })
}

/// `If-Match`: a version as the `ETag` gives it (`"7"`), bare (`7`) or weak (`W/"7"`);
/// `*` is no condition.
///
/// Fails with 400 when it is not a version.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = value.to_str().unwrap_or_default().trim();
    if raw == "*" {
        return Ok(None);
    }
    let bare = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "If-Match {raw:?} is not a policy version; send the ETag of GET /policy, e.g. \"7\""
        ))
    })
}

/// The `ETag` of a version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// `?dry_run`, `?dry_run=true` or `?dry_run=1`.
pub fn dry_run(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key == "dry_run" && matches!(value, "" | "true" | "1" | "yes")
    })
}

/// The value of `key` in a query string, percent-decoded.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_preconditions_read_as_sent() {
        assert!(dry_run(Some("dry_run")));
        assert!(dry_run(Some("a=b&dry_run=true")));
        assert!(!dry_run(Some("dry_run=false")));
        assert!(!dry_run(None));
        assert_eq!(
            query_value(Some("filter=api.example.com%3A443&x=1"), "filter").as_deref(),
            Some("api.example.com:443")
        );
        assert_eq!(
            query_value(Some("filter=a+b%"), "filter").as_deref(),
            Some("a b%")
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, "W/\"7\"".parse().unwrap());
        assert_eq!(if_match(&headers).unwrap(), Some(7));
        headers.insert(header::IF_MATCH, "seven".parse().unwrap());
        assert!(if_match(&headers).is_err());
    }
}
