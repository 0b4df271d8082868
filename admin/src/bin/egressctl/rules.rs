//! `rule list`, `rule get NAME` and `version`: reads of what the gateway serves.

use super::commands::Ctl;
use super::show;
use super::{Failure, Output};

impl Ctl {
    /// The rules of the policy in force, from `GET /policy` as JSON.
    async fn rules(&self) -> Result<Vec<serde_json::Value>, Failure> {
        let reply = self.get("/policy", "application/json").await?;
        let doc: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|e| Failure::new(format!("the gateway's policy is not JSON: {e}")))?;
        Ok(doc["rules"].as_array().cloned().unwrap_or_default())
    }

    pub(super) async fn rule_list(&self) -> Result<(), Failure> {
        let rules = self.rules().await?;
        if self.output != Output::Table {
            self.emit(&serde_json::Value::Array(rules));
            return Ok(());
        }
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
            serde_json::Value::Null => "any".to_owned(),
            other => other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned),
        };
        let rows: Vec<Vec<String>> = rules
            .iter()
            .map(|r| {
                vec![
                    text(&r["name"]),
                    r["action"].as_str().unwrap_or("allow").to_owned(),
                    text(&r["hosts"]),
                    text(&r["ports"]),
                ]
            })
            .collect();
        print!(
            "{}",
            show::table(&["NAME", "ACTION", "HOSTS", "PORTS"], &rows)
        );
        Ok(())
    }

    pub(super) async fn rule_get(&self, name: &str) -> Result<(), Failure> {
        let rules = self.rules().await?;
        let Some(rule) = rules.into_iter().find(|r| r["name"] == name) else {
            return Err(Failure::new(format!(
                "no rule named {name:?}; `egressctl rule list` lists them"
            )));
        };
        match self.output {
            Output::Json => self.emit(&rule),
            Output::Table | Output::Yaml => {
                print!("{}", serde_yaml::to_string(&rule).unwrap_or_default());
            }
        }
        Ok(())
    }

    /// This client's version and the gateway's (`egress_build_info` on `/metrics`).
    pub(super) async fn version(&self) -> Result<(), Failure> {
        let client = env!("CARGO_PKG_VERSION");
        let server = match self.get_open("/metrics").await {
            Ok(reply) => build_version(&reply.text()),
            Err(failure) => {
                eprintln!("egressctl: the gateway did not answer: {}", failure.message);
                None
            }
        };
        match self.output {
            Output::Table => {
                println!("client: egressctl {client}");
                println!(
                    "server: {}",
                    server
                        .as_deref()
                        .map_or_else(|| "unknown".to_owned(), |v| format!("egress-gateway {v}"))
                );
            }
            _ => self.emit(&serde_json::json!({"client": client, "server": server})),
        }
        Ok(())
    }
}

/// The `version` label of `egress_build_info` in an exposition.
fn build_version(exposition: &str) -> Option<String> {
    let line = exposition
        .lines()
        .find(|l| l.starts_with("egress_build_info{"))?;
    let labels = &line[line.find('{')? + 1..line.find('}')?];
    labels.split(',').find_map(|label| {
        let value = label.strip_prefix("version=\"")?;
        Some(value.trim_end_matches('"').to_owned())
    })
}
