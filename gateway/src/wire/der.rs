//! A reader of DER (X.509's encoding), one element at a time, that treats every
//! length as hostile: the certificate walks of [`super::san`] and [`super::expiry`].

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    /// The DER ended inside an element, or a length points past its container.
    #[error("certificate DER is truncated")]
    Truncated,
    /// A tag or length form DER does not allow (multi-byte tags, indefinite lengths),
    /// or an element that is not the one X.509 puts there.
    #[error("certificate DER is malformed: {0}")]
    Malformed(&'static str),
}

/// The tag of a SEQUENCE.
pub(super) const SEQUENCE: u8 = 0x30;

/// One DER element at a time from a byte slice.
pub(super) struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element's tag and contents.
    pub(super) fn next(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::Malformed("multi-byte tag"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError::Truncated)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 {
                return Err(DerError::Malformed("indefinite length"));
            }
            if count > 4 {
                return Err(DerError::Malformed("length longer than 4 bytes"));
            }
            let bytes = after_len.get(..count).ok_or(DerError::Truncated)?;
            after_len = &after_len[count..];
            bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
        };
        let contents = after_len.get(..len).ok_or(DerError::Truncated)?;
        self.rest = &after_len[len..];
        Ok((tag, contents))
    }

    /// The next element, which must have `tag`.
    pub(super) fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        match self.next()? {
            (t, contents) if t == tag => Ok(contents),
            _ => Err(DerError::Malformed(what)),
        }
    }
}
