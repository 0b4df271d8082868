//! Every shape error of a document at once: unknown fields and wrong types.
//!
//! serde stops at the first error of a document. When a document does not deserialize,
//! each part of it (the defaults, each listener, each rule) is deserialized on its own,
//! and after each error the offending field is taken out and the part tried again, so
//! one answer lists every misspelt key and every wrong type, each with its path (the
//! caller adds lines from the [`LineIndex`](super::document::LineIndex)). When every part
//! could be read once its bad fields were taken out, that document is returned too, so
//! the values in it are checked in the same answer.

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::document::{DefaultsDoc, Document, ListenerDoc, RuleDoc};
use super::values::serde_error;

/// The most errors looked for in one part: a part is a handful of fields.
const MAX_PER_PART: usize = 64;
const SECTIONS: [&str; 3] = ["defaults", "listeners", "rules"];

/// What is left of a document once its shape errors are taken out.
#[derive(Debug, Default)]
pub struct Shaped {
    /// `(path, message)` of every shape error.
    pub errors: Vec<(String, String)>,
    /// The document without the bad fields, when every part could be read so.
    pub rest: Option<Document>,
}

/// Every shape error of `text` and what is left without them; `None` when `text` is not
/// YAML at all.
pub fn shape(text: &str) -> Option<Shaped> {
    let value: Value = serde_yaml::from_str(text).ok()?;
    let mut out = Vec::new();
    let mut rest = Some(Document::default());
    let top = match value {
        Value::Null => return Some(Shaped { errors: out, rest }),
        Value::Mapping(top) => top,
        other => {
            out.push((
                String::new(),
                format!(
                    "a policy document is a mapping of {}, not {}",
                    SECTIONS.join(", "),
                    kind(&other)
                ),
            ));
            return Some(Shaped {
                errors: out,
                rest: None,
            });
        }
    };
    for (key, value) in top {
        let name = key.as_str().unwrap_or("?").to_owned();
        match name.as_str() {
            "defaults" => {
                let defaults = part::<DefaultsDoc>(value, "defaults", &mut out);
                match (&mut rest, defaults) {
                    (Some(doc), Some(d)) => doc.defaults = Some(d),
                    _ => rest = None,
                }
            }
            "listeners" | "rules" => match value {
                Value::Sequence(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        let path = format!("{name}[{i}]");
                        if name == "listeners" {
                            match (&mut rest, part::<ListenerDoc>(item, &path, &mut out)) {
                                (Some(doc), Some(l)) => doc.listeners.push(l),
                                _ => rest = None,
                            }
                        } else {
                            match (&mut rest, part::<RuleDoc>(item, &path, &mut out)) {
                                (Some(doc), Some(r)) => doc.rules.push(r),
                                _ => rest = None,
                            }
                        }
                    }
                }
                Value::Null => {}
                other => {
                    out.push((name, format!("expected a list, not {}", kind(&other))));
                    rest = None;
                }
            },
            _ => out.push((
                name.clone(),
                format!(
                    "unknown field `{name}`, expected one of `{}`",
                    SECTIONS.join("`, `")
                ),
            )),
        }
    }
    Some(Shaped { errors: out, rest })
}

/// Deserializes one part again and again, taking out the field of each error; the part
/// once it deserializes.
fn part<T: DeserializeOwned>(
    value: Value,
    path: &str,
    out: &mut Vec<(String, String)>,
) -> Option<T> {
    let Value::Mapping(mut fields) = value else {
        return match reparse::<T>(&value) {
            Ok(part) => Some(part),
            Err(e) => {
                out.push((path.to_owned(), serde_error("", &e).message));
                None
            }
        };
    };
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_PER_PART {
        let e = match reparse::<T>(&Value::Mapping(fields.clone())) {
            Ok(part) => return Some(part),
            Err(e) => e,
        };
        let error = serde_error("", &e);
        // A required field taken out for a wrong type is reported already.
        if let Some(field) = missing_field(&error.message) {
            if removed.iter().any(|r| r == field) {
                return None;
            }
        }
        let field = error
            .path
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_owned();
        let full = if error.path.is_empty() {
            path.to_owned()
        } else {
            format!("{path}.{}", error.path)
        };
        out.push((full, error.message));
        if field.is_empty() || !take(&mut fields, &field) {
            return None;
        }
        removed.push(field);
    }
    None
}

fn reparse<T: DeserializeOwned>(value: &Value) -> Result<T, serde_yaml::Error> {
    // Through text, so that errors carry the path inside the part.
    let text = serde_yaml::to_string(value).unwrap_or_default();
    serde_yaml::from_str(&text)
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn take(fields: &mut Mapping, name: &str) -> bool {
    fields.remove(name).is_some()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_field_and_wrong_type_is_listed() {
        let text = "listeners:\n  - {name: http, port: 8080, protocol: htp}\nrules:\n  - {name: a, hosts: [x.example], request_timout: 3s}\n  - {name: b, hosts: x.example, tls_origination: maybe}\nextra: 1\n";
        let errors = shape(text).unwrap().errors;
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "listeners[0].protocol",
                "rules[0].request_timout",
                "rules[1].hosts",
                "rules[1].tls_origination",
                "extra"
            ],
            "{errors:?}"
        );
        assert!(errors[0].1.contains("htp"), "{errors:?}");
    }

    #[test]
    fn a_valid_document_has_none() {
        let text = "listeners: [{name: http, port: 8080, protocol: http}]\nrules: [{name: a, hosts: [x.example]}]\n";
        assert_eq!(shape(text).unwrap().errors, Vec::<(String, String)>::new());
        assert!(shape("rules: [\n").is_none());
    }

    #[test]
    fn bad_values_come_in_the_same_answer_as_bad_fields() {
        let text = "listeners: [{name: http, port: 8080, protocol: http}]\nrules:\n  - name: a\n    hosts: [x.example]\n    request_timout: 3s\n    ports: [70000]\n";
        let files = [crate::policy::PolicyFile {
            name: "p.yaml".into(),
            text: text.into(),
        }];
        let errors = crate::policy::compile(&files).unwrap_err().0;
        let found: Vec<(Option<usize>, &str)> =
            errors.iter().map(|e| (e.line, e.path.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(5), "rules[0].request_timout"),
                (Some(6), "rules[0].ports[0]")
            ],
            "{errors:?}"
        );
    }
}
