//! `egressctl fleet`: every replica sharing the policy store, polled until they serve
//! the same version or the wait is over, so scripts can wait on convergence; and
//! `egressctl dns`, the addresses every replica answers alike.

use std::time::{Duration, Instant};

use egress_admin::api::{DnsAllocations, Fleet};

use super::commands::Ctl;
use super::input::parse;
use super::show;
use super::{Failure, Output};

/// How often the fleet is asked again while it disagrees.
const POLL: Duration = Duration::from_millis(250);

impl Ctl {
    pub(super) async fn fleet(&self, wait: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + wait;
        let fleet = loop {
            let reply = self.get("/fleet", "application/json").await?;
            let fleet: Fleet = parse(&reply)?;
            if converged(&fleet) || Instant::now() >= deadline {
                break fleet;
            }
            tokio::time::sleep(POLL).await;
        };
        match self.output {
            Output::Json | Output::Yaml => {
                self.emit(&serde_json::to_value(&fleet).unwrap_or_default())
            }
            Output::Table => print!("{}", render(&fleet)),
        }
        if converged(&fleet) {
            Ok(())
        } else {
            let behind: Vec<String> = fleet
                .members
                .iter()
                .filter(|m| !m.converged)
                .map(|m| format!("{} (version {})", m.id, m.version))
                .collect();
            Err(Failure::new(format!(
                "the fleet has not converged on version {} after {wait:?}: {}",
                fleet.latest,
                if behind.is_empty() {
                    "no replica is registered".to_owned()
                } else {
                    behind.join(", ")
                }
            )))
        }
    }
}

impl Ctl {
    /// `egressctl dns`: host → address, as every replica answers it.
    pub(super) async fn dns(&self) -> Result<(), Failure> {
        let reply = self.get("/dns/allocations", "application/json").await?;
        let list: DnsAllocations = parse(&reply)?;
        match self.output {
            Output::Json | Output::Yaml => {
                self.emit(&serde_json::to_value(&list).unwrap_or_default())
            }
            Output::Table if list.allocations.is_empty() => println!(
                "no address allocated (policy version {}): no dns listener has auto_allocate, or no rule lists a port of a tcp listener with route_by: destination_address",
                list.version
            ),
            Output::Table => {
                let rows: Vec<Vec<String>> = list
                    .allocations
                    .iter()
                    .map(|a| vec![a.host.clone(), a.address.clone(), a.range.clone()])
                    .collect();
                print!("{}", show::table(&["HOST", "ADDRESS", "RANGE"], &rows));
            }
        }
        Ok(())
    }
}

/// Every live replica serves the latest version (and there is at least one).
fn converged(fleet: &Fleet) -> bool {
    !fleet.members.is_empty() && fleet.members.iter().all(|m| m.converged)
}

fn render(fleet: &Fleet) -> String {
    let rows: Vec<Vec<String>> = fleet
        .members
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                m.version.to_string(),
                if m.converged { "yes" } else { "no" }.to_owned(),
                if m.draining { "draining" } else { "serving" }.to_owned(),
                m.admin.clone(),
                m.listeners
                    .iter()
                    .map(|(name, addr)| format!("{name}={addr}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    let mut out = format!(
        "store:   {}\nlatest:  version {} (seen by {})\n",
        fleet.store, fleet.latest, fleet.answered_by
    );
    out.push_str(&show::table(
        &["ID", "VERSION", "CONVERGED", "STATE", "ADMIN", "LISTENERS"],
        &rows,
    ));
    out
}
