//! The TLS ClientHello, read without terminating TLS: the server name (SNI) and the
//! ALPN protocols a client offers, from bytes that may arrive split across TCP segments
//! and across several TLS records.
//!
//! Pure: the caller keeps reading into one buffer and calls [`parse_client_hello`] again
//! on [`SniError::Incomplete`]; the bytes are never consumed, so the caller replays them
//! to the upstream as they came. The parser is strict where leniency would let two
//! readers of the same hello disagree on the destination (duplicate extensions, several
//! host names, trailing bytes), because the gateway's decision rests on the answer.

use std::collections::HashSet;

/// The largest ClientHello handshake message accepted (its body, after the 4-byte
/// handshake header). Real ones are well under 2 KiB, or about 3 KiB with post-quantum
/// key shares; this is one full TLS record.
pub const MAX_CLIENT_HELLO_LEN: usize = 16 * 1024;

/// The most bytes read before the ClientHello must be complete: the largest hello plus
/// room for record headers when a client splits it into many small records.
pub const MAX_CLIENT_HELLO_BYTES: usize = MAX_CLIENT_HELLO_LEN + 2 * 1024;

/// TLS record header: content type, legacy version, length.
const RECORD_HEADER_LEN: usize = 5;
/// The largest plaintext record fragment (RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 16 * 1024;
/// Record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Handshake header: message type and a 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Extension `server_name` (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;
/// Extension `application_layer_protocol_negotiation` (RFC 7301).
const EXT_ALPN: u16 = 16;
/// `NameType` `host_name`, the only one defined.
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What a ClientHello says about where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The host name of the `server_name` extension, as sent (not canonicalised: the
    /// caller runs it through [`crate::wire::host::parse_host`]); `None` without one.
    pub server_name: Option<String>,
    /// The ALPN protocol names offered, in the client's order; empty without ALPN.
    pub alpn: Vec<Vec<u8>>,
}

/// Why the bytes so far give no ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SniError {
    /// The bytes so far are a valid beginning: read more and parse again. `needed` is
    /// the total buffer length at which parsing can go further, when known.
    #[error("incomplete client hello")]
    Incomplete {
        /// The buffer needs at least this many bytes in all before the next attempt.
        needed: Option<usize>,
    },
    /// The first bytes are not a TLS handshake record (plain HTTP, SSLv2, garbage).
    #[error("not a tls handshake")]
    NotTls,
    /// A TLS handshake record, but not a well-formed ClientHello; names what is wrong.
    #[error("malformed client hello: {0}")]
    Malformed(&'static str),
    /// The ClientHello is over [`MAX_CLIENT_HELLO_LEN`], or its records over
    /// [`MAX_CLIENT_HELLO_BYTES`].
    #[error("client hello over {MAX_CLIENT_HELLO_LEN} bytes")]
    TooLarge,
}

/// Parses the ClientHello at the start of `buf`: the first handshake message, gathered
/// from as many handshake records as it spans. Bytes after it are ignored.
///
/// Fails with [`SniError::Incomplete`] while `buf` is a valid but unfinished beginning,
/// [`SniError::NotTls`] when the first record is not a TLS handshake record,
/// [`SniError::TooLarge`] past the size bounds, and [`SniError::Malformed`] for anything
/// else that is not a well-formed ClientHello.
pub fn parse_client_hello(buf: &[u8]) -> Result<ClientHello, SniError> {
    check_first_record_header(buf)?;
    let message = gather_handshake_message(buf)?;
    parse_body(message)
}

/// Says `NotTls` as early as the first bytes allow, so a plain-text client is told at
/// once instead of waiting for five bytes it may never send.
fn check_first_record_header(buf: &[u8]) -> Result<(), SniError> {
    match buf {
        [] => Err(SniError::Incomplete {
            needed: Some(RECORD_HEADER_LEN),
        }),
        [kind, ..] if *kind != CONTENT_HANDSHAKE => Err(SniError::NotTls),
        [_, major, ..] if *major != 3 => Err(SniError::NotTls),
        // Legacy record versions in the wild are 3.0 to 3.4; anything above is not TLS.
        [_, _, minor, ..] if *minor > 4 => Err(SniError::NotTls),
        _ => Ok(()),
    }
}

/// Reassembles the first handshake message from the records at the start of `buf`.
fn gather_handshake_message(buf: &[u8]) -> Result<Vec<u8>, SniError> {
    let mut message = Vec::new();
    let mut at = 0;
    loop {
        if let Some(expected) = expected_message_len(&message)? {
            if message.len() >= expected {
                message.truncate(expected);
                return Ok(message);
            }
        }
        let header_end = at + RECORD_HEADER_LEN;
        let Some(header) = buf.get(at..header_end) else {
            return incomplete(header_end);
        };
        if header[0] != CONTENT_HANDSHAKE {
            return Err(SniError::Malformed("non-handshake record inside the hello"));
        }
        if header[1] != 3 {
            return Err(SniError::Malformed("record version is not tls"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(SniError::Malformed("empty handshake record"));
        }
        if len > MAX_RECORD_LEN {
            return Err(SniError::Malformed("record over 16384 bytes"));
        }
        let end = header_end + len;
        // Checked before the bytes are there, so the bound holds whatever the caller
        // buffered.
        if end > MAX_CLIENT_HELLO_BYTES {
            return Err(SniError::TooLarge);
        }
        let Some(fragment) = buf.get(header_end..end) else {
            return incomplete(end);
        };
        message.extend_from_slice(fragment);
        at = end;
    }
}

/// The handshake message's full length (header included) once its header is in, after
/// checking that it is a ClientHello within bounds.
fn expected_message_len(message: &[u8]) -> Result<Option<usize>, SniError> {
    let Some(header) = message.get(..HANDSHAKE_HEADER_LEN) else {
        return Ok(None);
    };
    if header[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(SniError::Malformed(
            "first handshake message is not a client hello",
        ));
    }
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    if len > MAX_CLIENT_HELLO_LEN {
        return Err(SniError::TooLarge);
    }
    Ok(Some(HANDSHAKE_HEADER_LEN + len))
}

/// Asks for more bytes, unless that would pass the bound on what is buffered.
fn incomplete<T>(needed: usize) -> Result<T, SniError> {
    if needed > MAX_CLIENT_HELLO_BYTES {
        return Err(SniError::TooLarge);
    }
    Err(SniError::Incomplete {
        needed: Some(needed),
    })
}

/// Parses a complete ClientHello message (handshake header included).
fn parse_body(message: Vec<u8>) -> Result<ClientHello, SniError> {
    let mut r = Reader::new(&message[HANDSHAKE_HEADER_LEN..]);
    r.take(2, "truncated legacy version")?;
    r.take(32, "truncated random")?;
    let session_id = r.vec8("truncated session id")?;
    if session_id.len() > 32 {
        return Err(SniError::Malformed("session id over 32 bytes"));
    }
    let suites = r.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(SniError::Malformed("bad cipher suites length"));
    }
    if r.vec8("truncated compression methods")?.is_empty() {
        return Err(SniError::Malformed("no compression methods"));
    }
    let mut hello = ClientHello::default();
    // A hello from before extensions ends here; it names no server.
    if r.is_empty() {
        return Ok(hello);
    }
    let mut extensions = Reader::new(r.vec16("truncated extensions")?);
    if !r.is_empty() {
        return Err(SniError::Malformed("bytes after the extensions"));
    }
    let mut seen = HashSet::new();
    while !extensions.is_empty() {
        let kind = extensions.u16("truncated extension type")?;
        let data = extensions.vec16("truncated extension")?;
        if !seen.insert(kind) {
            return Err(SniError::Malformed("duplicate extension"));
        }
        match kind {
            EXT_SERVER_NAME => hello.server_name = Some(parse_server_name(data)?),
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// The `server_name` extension: a list holding exactly one `host_name`.
fn parse_server_name(data: &[u8]) -> Result<String, SniError> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec16("truncated server name list")?);
    if !outer.is_empty() {
        return Err(SniError::Malformed("bytes after the server name list"));
    }
    let mut name = None;
    while !list.is_empty() {
        if list.u8("truncated server name type")? != NAME_TYPE_HOST_NAME {
            return Err(SniError::Malformed("server name type is not host_name"));
        }
        let host = list.vec16("truncated server name")?;
        if name.is_some() {
            return Err(SniError::Malformed("more than one server name"));
        }
        name = Some(host);
    }
    let host = name.ok_or(SniError::Malformed("empty server name list"))?;
    if host.is_empty() {
        return Err(SniError::Malformed("empty server name"));
    }
    if !host.iter().all(|b| b.is_ascii_graphic()) {
        return Err(SniError::Malformed("server name is not printable ascii"));
    }
    // All bytes are ASCII, so this never fails; no lossy path is needed.
    String::from_utf8(host.to_vec()).map_err(|_| SniError::Malformed("server name is not ascii"))
}

/// The ALPN extension: a non-empty list of non-empty protocol names.
fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, SniError> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec16("truncated alpn list")?);
    if !outer.is_empty() {
        return Err(SniError::Malformed("bytes after the alpn list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let protocol = list.vec8("truncated alpn protocol")?;
        if protocol.is_empty() {
            return Err(SniError::Malformed("empty alpn protocol"));
        }
        protocols.push(protocol.to_vec());
    }
    if protocols.is_empty() {
        return Err(SniError::Malformed("empty alpn list"));
    }
    Ok(protocols)
}

/// A cursor over a complete message; every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SniError> {
        if self.rest.len() < n {
            return Err(SniError::Malformed(what));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, SniError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, SniError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let len = usize::from(self.u8(what)?);
        self.take(len, what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], SniError> {
        let len = usize::from(self.u16(what)?);
        self.take(len, what)
    }
}

#[cfg(test)]
mod tests;
