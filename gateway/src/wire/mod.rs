//! Pure parsers of untrusted bytes and strings. Nothing here does I/O.

pub mod host;
pub mod sni;
