//! `egressctl import istio`: the files go to the gateway's `POST /policy/import/istio`;
//! the policy comes back on stdout, the report on stderr.

use std::path::PathBuf;

use egress_admin::api::ImportAnswer;
use hyper::Method;

use super::commands::{Ctl, TIMEOUT};
use super::input::{parse, read_file};
use super::{Failure, Output};

/// The exit status of `import istio --check` when something was not translated.
const DROPPED: u8 = 4;

impl Ctl {
    pub(super) async fn import_istio(&self, files: &[PathBuf], check: bool) -> Result<(), Failure> {
        let mut text = Vec::new();
        for file in files {
            let (bytes, _) = read_file(file)?;
            if !text.is_empty() {
                text.extend_from_slice(b"\n---\n");
            }
            text.extend_from_slice(&bytes);
        }
        let reply = self
            .client
            .send(
                Method::POST,
                "/policy/import/istio",
                &[],
                Some((text, "application/yaml")),
                TIMEOUT,
            )
            .await?;
        let reply = self.judge(reply)?;
        let answer: ImportAnswer = parse(&reply)?;
        match self.output {
            Output::Json => println!("{}", reply.text().trim_end()),
            Output::Table | Output::Yaml => {
                print!("{}", answer.policy);
                eprint!("{}", report(&answer));
            }
        }
        if check && answer.dropped > 0 {
            return Err(Failure {
                message: format!(
                    "{} fields of the input were not translated (see above); --check fails",
                    answer.dropped
                ),
                code: DROPPED,
            });
        }
        Ok(())
    }
}

/// The report for people: what was dropped first, then the remarks.
fn report(answer: &ImportAnswer) -> String {
    let mut out = format!(
        "# imported {} rules and {} listeners; {} fields not translated, {} remarks\n",
        answer.rules,
        answer.listeners,
        answer.dropped,
        answer.notes.len() - answer.dropped
    );
    for dropped in [true, false] {
        for n in answer.notes.iter().filter(|n| n.dropped == dropped) {
            let label = if dropped { "not translated" } else { "note" };
            let place = match (n.resource.is_empty(), n.field.is_empty()) {
                (false, false) => format!("{} {}", n.resource, n.field),
                (false, true) => n.resource.clone(),
                (true, _) => n.field.clone(),
            };
            out.push_str(&format!("{label}: {place}: {}\n", n.message));
        }
    }
    out
}
