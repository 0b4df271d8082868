//! Audit line formats: Envoy command operators, parsed once, rendered per record.

use super::AuditRecord;

/// A parsed audit format: `istio`, `envoy`, `json`, or a format string.
#[derive(Debug, Clone)]
pub struct AuditFormat {}

/// A format string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub String);

impl AuditFormat {
    /// Parses `istio`, `envoy`, `json`, or a string of Envoy command operators.
    ///
    /// Fails on an unknown operator or an unterminated `%`.
    pub fn parse(spec: &str) -> Result<Self, FormatError> {
        let _ = spec;
        Ok(Self {})
    }

    /// Appends the line for `record` (without the newline) to `out`.
    pub fn render(&self, record: &AuditRecord, out: &mut String) {
        let _ = (record, out);
    }
}
