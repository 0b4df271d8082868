//! Parsing a format string into pieces: `%NAME[(ARGS)][:N]%`, `%%`, literal text.

use http::HeaderName;

use super::{Address, FormatError, Header, Operator, Piece, Side};
use crate::audit::strftime::TimeFormat;

/// Parses `spec` into literal and operator pieces.
///
/// Fails on an unknown operator, an unterminated `%`, a bad argument or `:N`, or a
/// control character (other than tab) anywhere, operator arguments included.
pub(super) fn pieces(spec: &str) -> Result<Vec<Piece>, FormatError> {
    // Checked on the whole string, operator arguments too: START_TIME(...) copies the
    // literal text of its argument into every line.
    if let Some(c) = spec.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(FormatError(format!(
            "format holds the control character {c:?}: an audit record is one line"
        )));
    }
    let bytes = spec.as_bytes();
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let Some(pct) = spec[i..].find('%').map(|p| i + p) else {
            literal.push_str(&spec[i..]);
            break;
        };
        literal.push_str(&spec[i..pct]);
        if bytes.get(pct + 1) == Some(&b'%') {
            literal.push('%');
            i = pct + 2;
            continue;
        }
        let (op, max, end) = parse_operator(spec, pct)?;
        if !literal.is_empty() {
            pieces.push(Piece::Literal(
                std::mem::take(&mut literal).into_boxed_str(),
            ));
        }
        pieces.push(Piece::Operator { op, max });
        i = end;
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal.into_boxed_str()));
    }
    Ok(pieces)
}

/// Parses `%NAME[(ARGS)][:N]%` starting at the `%` at `start`; returns the operator,
/// its length limit and the index after the closing `%`.
fn parse_operator(
    spec: &str,
    start: usize,
) -> Result<(Operator, Option<usize>, usize), FormatError> {
    let bytes = spec.as_bytes();
    let shown = || {
        let rest = &spec[start..];
        let end = rest.char_indices().nth(40).map_or(rest.len(), |(i, _)| i);
        format!("`{}`", &rest[..end])
    };
    let unterminated = || {
        FormatError(format!(
            "unterminated command operator at byte {start}: {}",
            shown()
        ))
    };
    let mut i = start + 1;
    while i < bytes.len()
        && (bytes[i].is_ascii_uppercase() || bytes[i].is_ascii_digit() || bytes[i] == b'_')
    {
        i += 1;
    }
    let name = &spec[start + 1..i];
    if name.is_empty() {
        return Err(FormatError(format!(
            "expected a command operator after % at byte {start}: {} (write %% for a percent sign)",
            shown()
        )));
    }
    let mut args = None;
    if bytes.get(i) == Some(&b'(') {
        let close = spec[i..]
            .find(')')
            .map(|p| i + p)
            .ok_or_else(unterminated)?;
        args = Some(&spec[i + 1..close]);
        i = close + 1;
    }
    let mut max = None;
    if bytes.get(i) == Some(&b':') {
        let digits_start = i + 1;
        i = digits_start;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &spec[digits_start..i];
        max = Some(digits.parse::<usize>().map_err(|_| {
            FormatError(format!(
                "bad length `:{digits}` of %{name}% at byte {start}: expected a number"
            ))
        })?);
    }
    if bytes.get(i) != Some(&b'%') {
        return Err(unterminated());
    }
    let op = operator(name, args)?;
    Ok((op, max, i + 1))
}

fn operator(name: &str, args: Option<&str>) -> Result<Operator, FormatError> {
    let header_side = match name {
        "REQ" | "REQUEST_HEADER" => Some(Side::Request),
        "RESP" | "RESPONSE_HEADER" => Some(Side::Response),
        _ => None,
    };
    if let Some(side) = header_side {
        let Some(args) = args else {
            return Err(FormatError(format!(
                "%{name}% needs a header name: %{name}(NAME)%"
            )));
        };
        return header_operator(name, side, args);
    }
    if name == "START_TIME" {
        return Ok(Operator::StartTime(TimeFormat::parse(args.unwrap_or(""))?));
    }
    let address = |which, port| Operator::Address { which, port };
    let op = match name {
        "PROTOCOL" => Operator::Protocol,
        "RESPONSE_CODE" => Operator::ResponseCode,
        "RESPONSE_FLAGS" => Operator::ResponseFlags,
        "RESPONSE_CODE_DETAILS" => Operator::ResponseCodeDetails,
        "CONNECTION_TERMINATION_DETAILS" => Operator::ConnectionTerminationDetails,
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => Operator::UpstreamTransportFailureReason,
        "BYTES_RECEIVED" => Operator::BytesReceived,
        "BYTES_SENT" => Operator::BytesSent,
        "DURATION" => Operator::Duration,
        "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => address(Address::UpstreamHost, true),
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => address(Address::UpstreamHost, false),
        "UPSTREAM_LOCAL_ADDRESS" => address(Address::UpstreamLocal, true),
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => address(Address::UpstreamLocal, false),
        "DOWNSTREAM_LOCAL_ADDRESS" => address(Address::DownstreamLocal, true),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => address(Address::DownstreamLocal, false),
        "DOWNSTREAM_REMOTE_ADDRESS" => address(Address::DownstreamRemote, true),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => address(Address::DownstreamRemote, false),
        "UPSTREAM_CLUSTER" | "UPSTREAM_CLUSTER_RAW" => Operator::UpstreamCluster,
        "DOWNSTREAM_PEER_URI_SAN" => Operator::DownstreamPeerUriSan,
        "REQUESTED_SERVER_NAME" => Operator::RequestedServerName,
        "ROUTE_NAME" => Operator::RouteName,
        _ => return Err(FormatError(format!("unknown command operator %{name}%"))),
    };
    if args.is_some() {
        return Err(FormatError(format!(
            "command operator %{name}% takes no argument"
        )));
    }
    Ok(op)
}

fn header_operator(name: &str, side: Side, args: &str) -> Result<Operator, FormatError> {
    let mut names = args.split('?');
    let main = names.next().unwrap_or_default();
    let alt = names.next();
    if names.next().is_some() {
        return Err(FormatError(format!(
            "%{name}({args})% has more than one `?`: expected NAME or NAME?ALTERNATIVE"
        )));
    }
    let main = header(name, side, main)?;
    let alt = alt.map(|alt| header(name, side, alt)).transpose()?;
    Ok(Operator::Header { side, main, alt })
}

fn header(op: &str, side: Side, raw: &str) -> Result<Header, FormatError> {
    let lower = raw.trim().to_ascii_lowercase();
    let header = match (lower.as_str(), side) {
        (":method", _) => Header::Method,
        (":path", _) => Header::Path,
        (":authority", _) => Header::Authority,
        (":status", Side::Response) => Header::Status,
        (":scheme" | ":protocol" | ":status", _) => Header::Unknown,
        ("host", Side::Request) => Header::Host,
        ("x-envoy-upstream-service-time", Side::Response) => Header::UpstreamServiceTime,
        (other, _) => Header::Named(HeaderName::from_bytes(other.as_bytes()).map_err(|_| {
            FormatError(format!("%{op}({raw})%: `{raw}` is not a valid header name"))
        })?),
    };
    Ok(header)
}
