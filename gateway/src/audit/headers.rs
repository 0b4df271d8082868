//! The headers a record keeps: only those its audit format prints.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Header values kept by a record, in the order they were added.
///
/// A format prints a handful of headers, so a list searched by name serves better than a
/// [`HeaderMap`]: one allocation per record instead of a map's index and entries.
#[derive(Debug, Clone, Default)]
pub struct RecordedHeaders(Vec<(HeaderName, HeaderValue)>);

impl RecordedHeaders {
    /// No headers.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// The first value of `name`: a [`HeaderName`], or a `str` compared without case.
    pub fn get<N: ?Sized>(&self, name: &N) -> Option<&HeaderValue>
    where
        HeaderName: PartialEq<N>,
    {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets `name` to `value` alone.
    pub fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value));
    }

    /// Adds every value of `names` found in `from`.
    pub fn copy_from(&mut self, names: &[HeaderName], from: &HeaderMap) {
        for name in names {
            for value in from.get_all(name) {
                // Room for every name at the first value found; a record that finds
                // none allocates nothing.
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(names.len());
                }
                self.0.push((name.clone(), value.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_names_asked_for_first_value_first() {
        let mut from = HeaderMap::new();
        from.append("user-agent", HeaderValue::from_static("curl"));
        from.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        from.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        from.append("cookie", HeaderValue::from_static("secret"));
        let names = [
            HeaderName::from_static("x-forwarded-for"),
            HeaderName::from_static("user-agent"),
            HeaderName::from_static("x-request-id"),
        ];
        let mut kept = RecordedHeaders::new();
        kept.copy_from(&names, &from);
        assert_eq!(kept.get("X-Forwarded-For").unwrap(), "10.0.0.1");
        assert_eq!(kept.get("user-agent").unwrap(), "curl");
        assert!(kept.get("cookie").is_none());
        assert!(kept.get("x-request-id").is_none());

        kept.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("10.0.0.3"),
        );
        assert_eq!(kept.get("x-forwarded-for").unwrap(), "10.0.0.3");
        assert_eq!(kept.get(&names[1]).unwrap(), "curl");
    }
}
