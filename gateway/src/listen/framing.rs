//! The framing headers of every HTTP/1 request head on a connection, noted from the raw
//! bytes as they arrive, beside the parser.
//!
//! hyper drops `Content-Length` silently when `Transfer-Encoding` is present; a gateway
//! must refuse the pair, since another hop may frame the body by the other one. So the
//! scan follows the byte stream from the connection's first byte: a head ends at its
//! empty line (empty lines before a request line are skipped, as parsers skip them),
//! its body is skipped by its own framing, and the next head starts after it. Each head
//! gives one entry, in order, heads pipelined into one read included.
//!
//! The scan does not parse: the start of each header line up to `:` is compared with
//! the two names, and a `Content-Length` value is read as digits only when the body has
//! to be skipped by it. Framing it cannot follow (a length that is not digits, lengths
//! that differ, a chunk size that is not hex) is framing hyper refuses too; the scan
//! then stops noting until it is restarted.

/// A head named `Content-Length`.
pub(super) const CONTENT_LENGTH: u8 = 1;
/// A head named `Transfer-Encoding`.
pub(super) const TRANSFER_ENCODING: u8 = 2;

/// The longest header name compared (`transfer-encoding` has 17 bytes).
const NAME_LEN: usize = 18;

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a request line: empty lines are skipped.
    Start,
    /// In the request line.
    RequestLine,
    /// In the header lines.
    Headers,
    /// In a body of this many more bytes.
    Body(u64),
    /// In a chunk-size line, the size so far and whether it has a digit.
    ChunkSize(u64, bool),
    /// After a chunk size: extensions up to the end of the line.
    ChunkExtension(u64),
    /// In a chunk's data, this many more bytes.
    ChunkData(u64),
    /// After a chunk's data, up to the end of its line.
    ChunkEnd,
    /// In the trailer lines after the last chunk.
    Trailers,
    /// Framing the scan does not follow: nothing is noted until a restart.
    Lost,
}

/// A `Content-Length` value as it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Digits {
    /// Spaces before the value.
    Leading,
    /// The digits so far.
    Value(u64),
    /// Spaces after the value.
    Trailing(u64),
    /// Not a length.
    Bad,
}

/// The scan of one connection's inbound bytes.
#[derive(Debug)]
pub(super) struct HeadScan {
    state: State,
    /// Nothing but CR on the current line so far.
    empty_line: bool,
    /// Still in the current line's name (before `:`).
    in_name: bool,
    name: [u8; NAME_LEN],
    name_len: usize,
    /// The current line's `Content-Length` value, while one is read.
    digits: Option<Digits>,
    /// The current head's framing headers.
    framing: u8,
    /// The current head's `Content-Length`: `Err` when it cannot frame a body.
    length: Option<Result<u64, ()>>,
}

impl Default for HeadScan {
    fn default() -> Self {
        Self {
            state: State::Start,
            empty_line: true,
            in_name: false,
            name: [0; NAME_LEN],
            name_len: 0,
            digits: None,
            framing: 0,
            length: None,
        }
    }
}

impl HeadScan {
    /// Whether the scan lost track of the framing.
    pub(super) fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Starts anew, at what must be the first byte of a request head.
    pub(super) fn restart(&mut self) {
        *self = HeadScan::default();
    }

    /// Scans `bytes`; `head` gets the framing headers of each head that ends in them
    /// ([`CONTENT_LENGTH`] | [`TRANSFER_ENCODING`]) and says whether it was kept: when
    /// it was not, nothing more is noted.
    pub(super) fn feed(&mut self, mut bytes: &[u8], mut head: impl FnMut(u8) -> bool) {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.state {
                State::Lost => return,
                State::Body(n) | State::ChunkData(n) => {
                    let skip = usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[skip..];
                    let left = n - skip as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Start,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkEnd,
                        (_, left) => State::ChunkData(left),
                    };
                    continue;
                }
                _ => {}
            }
            bytes = rest;
            self.byte(b, &mut head);
        }
    }

    fn byte(&mut self, b: u8, head: &mut impl FnMut(u8) -> bool) {
        match self.state {
            State::Start => {
                if b != b'\r' && b != b'\n' {
                    self.framing = 0;
                    self.length = None;
                    self.state = State::RequestLine;
                }
            }
            State::RequestLine => {
                if b == b'\n' {
                    self.new_line();
                    self.state = State::Headers;
                }
            }
            State::Headers => self.header_byte(b, head),
            State::ChunkSize(size, digit) => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let d = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                    self.state = match size.checked_mul(16).and_then(|s| s.checked_add(d)) {
                        Some(size) => State::ChunkSize(size, true),
                        None => State::Lost,
                    };
                }
                b'\r' => {}
                b'\n' if digit => self.chunk(size),
                b';' | b' ' | b'\t' if digit => self.state = State::ChunkExtension(size),
                _ => self.state = State::Lost,
            },
            State::ChunkExtension(size) => {
                if b == b'\n' {
                    self.chunk(size);
                }
            }
            State::ChunkEnd => match b {
                b'\r' => {}
                b'\n' => self.state = State::ChunkSize(0, false),
                _ => self.state = State::Lost,
            },
            State::Trailers => match b {
                b'\r' => {}
                b'\n' if self.empty_line => self.state = State::Start,
                b'\n' => self.empty_line = true,
                _ => self.empty_line = false,
            },
            State::Body(_) | State::ChunkData(_) | State::Lost => {}
        }
    }

    fn header_byte(&mut self, b: u8, head: &mut impl FnMut(u8) -> bool) {
        match b {
            b'\n' if self.empty_line => self.end_of_head(head),
            b'\n' => {
                self.end_of_value();
                self.new_line();
            }
            b'\r' => {}
            _ => {
                self.empty_line = false;
                if self.in_name {
                    self.name_byte(b);
                } else if let Some(digits) = self.digits {
                    self.digits = Some(match (digits, b) {
                        (Digits::Leading, b' ' | b'\t') => Digits::Leading,
                        (Digits::Leading, b'0'..=b'9') => Digits::Value(u64::from(b - b'0')),
                        (Digits::Value(n), b'0'..=b'9') => n
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(u64::from(b - b'0')))
                            .map_or(Digits::Bad, Digits::Value),
                        (Digits::Value(n) | Digits::Trailing(n), b' ' | b'\t') => {
                            Digits::Trailing(n)
                        }
                        _ => Digits::Bad,
                    });
                }
            }
        }
    }

    fn name_byte(&mut self, b: u8) {
        if b == b':' {
            self.in_name = false;
            match &self.name[..self.name_len] {
                b"content-length" => {
                    self.framing |= CONTENT_LENGTH;
                    self.digits = Some(Digits::Leading);
                }
                b"transfer-encoding" => self.framing |= TRANSFER_ENCODING,
                _ => {}
            }
        } else if self.name_len < NAME_LEN {
            self.name[self.name_len] = b.to_ascii_lowercase();
            self.name_len += 1;
        } else {
            self.in_name = false;
        }
    }

    fn new_line(&mut self) {
        self.empty_line = true;
        self.in_name = true;
        self.name_len = 0;
        self.digits = None;
    }

    /// A `Content-Length` line ended: its value joins the head's.
    fn end_of_value(&mut self) {
        let Some(digits) = self.digits.take() else {
            return;
        };
        let value = match digits {
            Digits::Value(n) | Digits::Trailing(n) => Ok(n),
            Digits::Leading | Digits::Bad => Err(()),
        };
        self.length = Some(match self.length {
            None => value,
            Some(Ok(n)) if value == Ok(n) => Ok(n),
            Some(_) => Err(()),
        });
    }

    fn end_of_head(&mut self, head: &mut impl FnMut(u8) -> bool) {
        if !head(self.framing) {
            self.state = State::Lost;
            return;
        }
        self.state = if self.framing & TRANSFER_ENCODING != 0 {
            // hyper frames by Transfer-Encoding (chunked last, or it refuses the head).
            State::ChunkSize(0, false)
        } else {
            match self.length {
                None | Some(Ok(0)) => State::Start,
                Some(Ok(n)) => State::Body(n),
                Some(Err(())) => State::Lost,
            }
        };
    }

    /// The end of a chunk-size line.
    fn chunk(&mut self, size: u64) {
        if size == 0 {
            self.empty_line = true;
            self.state = State::Trailers;
        } else {
            self.state = State::ChunkData(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framing of each head in `chunks`, fed one after the other.
    fn heads(chunks: &[&[u8]]) -> Vec<u8> {
        let mut scan = HeadScan::default();
        let mut heads = Vec::new();
        for chunk in chunks {
            scan.feed(chunk, |framing| {
                heads.push(framing);
                true
            });
        }
        heads
    }

    const BOTH: u8 = CONTENT_LENGTH | TRANSFER_ENCODING;

    #[test]
    fn both_framing_headers_are_noticed_in_any_case_and_split() {
        let head: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCONTENT-length: 5\r\n\r\n";
        assert_eq!(heads(&[head]), [BOTH]);
        let split: Vec<&[u8]> = head.chunks(1).collect();
        assert_eq!(heads(&split), [BOTH]);
    }

    #[test]
    fn body_bytes_and_values_are_not_headers() {
        let head = b"POST / HTTP/1.1\r\nX-Note: content-length: 1\r\nContent-Length: 19\r\n\r\ntransfer-encoding: x";
        assert_eq!(heads(&[head]), [CONTENT_LENGTH]);
        assert_eq!(
            heads(&[b"GET http://a:80/ HTTP/1.1\r\nHost: a\r\n\r\n"]),
            [0]
        );
    }

    #[test]
    fn empty_lines_before_the_request_line_do_not_end_the_head() {
        // Parsers skip them; the head that follows is still this head.
        let head = b"\r\n\r\n\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(heads(&[head]), [BOTH]);
    }

    #[test]
    fn pipelined_heads_are_each_noted_past_their_bodies() {
        // A body that looks like a head is skipped by its length, and chunks by theirs.
        let lookalike = "GET /x HTTP/1.1\r\nTransfer-Encoding: y\r\n\r\n";
        let stream = format!(
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /2 HTTP/1.1\r\nContent-Length: {}\r\n\r\n{lookalike}\
             PUT /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             5;ext=1\r\nhello\r\nA\r\n\r\ncontent-\r\n0\r\nx-trailer: 1\r\n\r\n\
             POST /4 HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            lookalike.len()
        );
        let stream = stream.as_bytes();
        let want = [0, CONTENT_LENGTH, TRANSFER_ENCODING, BOTH];
        assert_eq!(heads(&[stream]), want);
        let split: Vec<&[u8]> = stream.chunks(3).collect();
        assert_eq!(heads(&split), want);
    }

    #[test]
    fn framing_it_cannot_follow_stops_the_scan() {
        for stream in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4x\r\n\r\nGET / HTTP/1.1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let mut scan = HeadScan::default();
            let mut heads = Vec::new();
            scan.feed(stream, |framing| {
                heads.push(framing);
                true
            });
            assert_eq!(heads.len(), 1, "{:?}", String::from_utf8_lossy(stream));
            assert!(scan.is_lost());
            scan.restart();
            scan.feed(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", |framing| {
                heads.push(framing);
                true
            });
            assert_eq!(heads[1], CONTENT_LENGTH);
        }
    }
}
