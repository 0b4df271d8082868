//! Pure parsers of untrusted bytes and strings. Nothing here does I/O.

pub mod connect;
mod der;
pub mod expiry;
pub mod host;
pub mod proxy;
pub mod san;
pub mod sni;
