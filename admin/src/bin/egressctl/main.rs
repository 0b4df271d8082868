//! `egressctl`: the command line for the admin API. Tables for people, `-o json` for
//! scripts; every failure exits non-zero with a message that says what to do.

mod commands;
mod fleet;
mod import;
mod input;
mod rules;
mod show;
mod suggest;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Manage an egress-gateway over its admin API.
#[derive(Debug, Parser)]
#[command(name = "egressctl", version, about)]
pub(crate) struct Cli {
    /// The admin API's address (host:port).
    #[arg(
        long,
        global = true,
        env = "EGRESS_ADMIN",
        default_value = "127.0.0.1:15000"
    )]
    admin: String,
    /// The gateway's admin token file (its first token is sent); default ./admin.token.
    #[arg(long, global = true, env = "EGRESS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Output: tables and text for people, or JSON or YAML for scripts (errors then come
    /// as JSON on stderr too, under -o json).
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Output,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Tables and sentences.
    Table,
    /// The API's JSON.
    Json,
    /// The API's answers as YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Is the gateway ready, which policy version does it serve, how busy is it?
    Status,
    /// Read, change and go back in the policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Add, replace or remove one rule.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Would traffic to HOST:PORT be allowed? Exit 0 allowed, 3 denied (or would be).
    Check {
        /// The destination, e.g. api.example.com:443 or [2001:db8::1]:443.
        destination: String,
        /// The source: an IP address or an identity (spiffe://...).
        #[arg(long)]
        source: Option<String>,
        /// The listener (default: the first declared one).
        #[arg(long)]
        listener: Option<String>,
        /// Answer from the policy alone: do not resolve the name nor apply the address
        /// guard (by default the check meets what a real request would).
        #[arg(long)]
        no_resolve: bool,
    },
    /// The connections open now.
    Connections,
    /// Follow the audit log as it is written.
    Logs {
        /// Follow (the admin API only streams; this is the default).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines containing this text (a host, a rule name).
        #[arg(long)]
        filter: Option<String>,
    },
    /// Stop accepting, let work in flight finish, and report.
    Drain,
    /// This egressctl's version and the gateway's.
    Version,
    /// A shell completion script: `egressctl completions bash > /etc/bash_completion.d/egressctl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Translate configuration of other systems into policy.
    #[command(subcommand)]
    Import(ImportCommand),
    /// The address each TCP service got from a dns listener's auto_allocate.
    Dns,
    /// Every replica sharing the etcd policy store, and whether they serve the same
    /// version. Exit 0 once all have converged, 1 when they still disagree after --wait.
    Fleet {
        /// How long replicas may disagree before this fails (e.g. 10s; 0s = no waiting).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the policy set in force (YAML; -o json for JSON).
    Get,
    /// Replace the policy set with FILE (YAML, or JSON when it ends in .json; - = stdin).
    Apply {
        /// The policy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only if this version is still in force (from `policy get` or `history`).
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Show what applying FILE would change, without changing anything.
    Diff {
        /// The policy file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// The versions kept, newest first.
    History,
    /// Rules that would allow what audit logs show was denied (or would be, in audit
    /// mode) and the policy in force still does not allow: the policy with them added,
    /// ready for `policy apply -f` (YAML; -o json for the observations).
    Suggest {
        /// Audit logs (istio, envoy or json format; rotated and .gz files too); without
        /// it, the gateway reads its own audit log (GET /policy/suggest).
        #[arg(long = "from", num_args = 1..)]
        from: Vec<PathBuf>,
        /// Leave out hosts seen fewer times than this.
        #[arg(long, default_value_t = 1)]
        min_count: u64,
        /// Fold two or more hosts under one parent into `*.parent`.
        #[arg(long)]
        group_wildcards: bool,
        /// Only lines from then on: a duration back from now (1h, 30m) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Apply an earlier version's set again, as a new version.
    Rollback {
        /// The version to go back to (see `policy history`).
        version: u64,
        /// Only if this version is still in force.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Istio ServiceEntry, VirtualService, DestinationRule, Gateway and AuthorizationPolicy
    /// YAML → a policy document on stdout (nothing is applied), and on stderr every field
    /// not translated and why. The gateway at --admin translates.
    Istio {
        /// Files of YAML (many documents, List kinds, `kubectl get -o yaml`); - = stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Exit 4 when anything of the input was not translated.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RuleCommand {
    /// The rules in force: name, action, hosts, ports.
    List,
    /// One rule in force, as YAML (-o json for JSON).
    Get {
        /// The rule's name.
        name: String,
    },
    /// Add or replace the rule in FILE (one rule, with its name).
    Set {
        /// The rule file (YAML, or JSON when it ends in .json; - = stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Only if this version is still in force.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Remove a rule.
    Delete {
        /// The rule's name.
        name: String,
        /// Only if this version is still in force.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

/// A failure: what to tell the user, and the exit status.
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl From<egress_admin::client::ClientError> for Failure {
    fn from(e: egress_admin::client::ClientError) -> Self {
        Failure::new(e.to_string())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.output == Output::Json;
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"error": failure.message, "exit": failure.code})
                );
            } else if !failure.message.is_empty() {
                eprintln!("egressctl: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}
