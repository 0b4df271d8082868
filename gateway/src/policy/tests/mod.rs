//! Tests of the policy module: compilation, decisions, and the store.

mod compile;
mod decide;
mod store;

use super::*;

fn files(docs: &[(&str, &str)]) -> Vec<PolicyFile> {
    docs.iter()
        .map(|(name, text)| PolicyFile {
            name: (*name).to_owned(),
            text: (*text).to_owned().into(),
        })
        .collect()
}

fn errors(docs: &[(&str, &str)]) -> Vec<String> {
    match compile(&files(docs)) {
        Ok(_) => panic!("compiled, expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn one_error(text: &str) -> String {
    let mut all = errors(&[("p/a.yaml", text)]);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn policy(text: &str) -> Policy {
    compile(&files(&[("a.yaml", text)])).unwrap_or_else(|e| panic!("{e}"))
}

const LISTENERS: &str = "listeners:
  - name: http
    port: 8080
    protocol: http
  - name: tls
    port: 8443
    protocol: tls
";
