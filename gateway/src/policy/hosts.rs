//! Host patterns → rules: exact names in a hash map, wildcards by reversed labels.

/// Finds the rules whose host patterns match a host, most specific first.
#[derive(Debug, Default)]
pub struct HostMatcher {}
