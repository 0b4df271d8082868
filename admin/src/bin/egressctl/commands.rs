//! What each command asks the admin API, and how its answer is judged.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use egress_admin::api::{
    Applied, CheckAnswer, CheckRequest, Connections, DrainReport, ErrorBody, History,
};
use egress_admin::client::{Client, Reply};
use http_body_util::BodyExt;
use hyper::header::{HeaderName, ACCEPT, IF_MATCH};
use hyper::{Method, StatusCode};

use super::input::{encode, parse, read_file, read_token, split_destination};
use super::show;
use super::{Cli, Command, Failure, ImportCommand, Output, PolicyCommand, RuleCommand};

pub(super) const TIMEOUT: Duration = Duration::from_secs(30);
/// A drain waits for work in flight, up to the gateway's drain timeout.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// The exit status of `check` when the answer is deny (or would-deny in audit mode).
const DENIED: u8 = 3;

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    // Needs no gateway and no token.
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "egressctl", &mut std::io::stdout());
        return Ok(());
    }
    let token_file = cli.token_file.clone().or_else(|| {
        let default = PathBuf::from("admin.token");
        default.exists().then_some(default)
    });
    let token = match &token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let ctl = Ctl {
        client: Client::new(&cli.admin, token.clone())?,
        output: cli.output,
        has_token: token.is_some(),
    };
    match cli.command {
        Command::Status => ctl.status().await,
        Command::Policy(PolicyCommand::Get) => ctl.policy_get().await,
        Command::Policy(PolicyCommand::Apply { file, if_match }) => {
            ctl.apply(&file, if_match, false).await
        }
        Command::Policy(PolicyCommand::Diff { file }) => ctl.apply(&file, None, true).await,
        Command::Policy(PolicyCommand::History) => ctl.history().await,
        Command::Policy(PolicyCommand::Suggest {
            from,
            min_count,
            group_wildcards,
            since,
        }) => {
            ctl.suggest(&from, min_count, group_wildcards, since.as_deref())
                .await
        }
        Command::Policy(PolicyCommand::Rollback { version, if_match }) => {
            let path = format!("/policy/rollback/{version}");
            ctl.write(Method::POST, &path, None, if_match, false).await
        }
        Command::Rule(RuleCommand::Set { file, if_match }) => ctl.rule_set(&file, if_match).await,
        Command::Rule(RuleCommand::Delete { name, if_match }) => {
            let path = format!("/rules/{}", encode(&name));
            ctl.write(Method::DELETE, &path, None, if_match, false)
                .await
        }
        Command::Check {
            destination,
            source,
            listener,
            no_resolve,
        } => ctl.check(&destination, source, listener, !no_resolve).await,
        Command::Connections => ctl.connections().await,
        Command::Logs { follow: _, filter } => ctl.logs(filter).await,
        Command::Drain => ctl.drain().await,
        Command::Fleet { wait } => ctl.fleet(wait).await,
        Command::Dns => ctl.dns().await,
        Command::Version => ctl.version().await,
        Command::Rule(RuleCommand::List) => ctl.rule_list().await,
        Command::Rule(RuleCommand::Get { name }) => ctl.rule_get(&name).await,
        Command::Completions { .. } => Ok(()),
        Command::Import(ImportCommand::Istio { files, check }) => {
            ctl.import_istio(&files, check).await
        }
    }
}

pub(super) struct Ctl {
    pub(super) client: Client,
    pub(super) output: Output,
    has_token: bool,
}

impl Ctl {
    /// `GET path` with no token, as the open routes are asked.
    pub(super) async fn get_open(&self, path: &str) -> Result<Reply, Failure> {
        let reply = self
            .client
            .send(Method::GET, path, &[], None, TIMEOUT)
            .await?;
        self.judge(reply)
    }

    /// POSTs JSON and judges the answer.
    pub(super) async fn post_json(&self, path: &str, body: Vec<u8>) -> Result<Reply, Failure> {
        let reply = self
            .client
            .send(
                Method::POST,
                path,
                &[],
                Some((body, "application/json")),
                TIMEOUT,
            )
            .await?;
        self.judge(reply)
    }

    pub(super) async fn get(&self, path: &str, accept: &str) -> Result<Reply, Failure> {
        let headers = [(ACCEPT, accept.to_owned())];
        let reply = self
            .client
            .send(Method::GET, path, &headers, None, TIMEOUT)
            .await?;
        self.judge(reply)
    }

    /// Turns an error answer into a failure that says what to do.
    pub(super) fn judge(&self, reply: Reply) -> Result<Reply, Failure> {
        if reply.status.is_success() {
            return Ok(reply);
        }
        let body: ErrorBody = serde_json::from_slice(&reply.body).unwrap_or(ErrorBody {
            error: reply.text().trim().to_owned(),
            details: Vec::new(),
        });
        let code = reply.status.as_u16();
        let mut message = match reply.status {
            StatusCode::UNAUTHORIZED if self.has_token => format!(
                "401: the token was refused; pass --token-file (or set EGRESS_TOKEN_FILE) naming the gateway's admin.token_file ({})",
                body.error
            ),
            StatusCode::UNAUTHORIZED => "401: no token was sent; pass --token-file (or set EGRESS_TOKEN_FILE) naming the gateway's admin.token_file".to_owned(),
            StatusCode::PRECONDITION_FAILED => format!(
                "412: {}; see it with `egressctl policy get`, then apply again",
                body.error
            ),
            StatusCode::CONFLICT => format!(
                "409: {}; change the policy where it comes from (the mounted ConfigMap or the repository)",
                body.error
            ),
            _ => format!("{code}: {}", body.error),
        };
        for detail in &body.details {
            message.push_str("\n  ");
            if let Some(line) = detail.line {
                message.push_str(&format!("line {line}: "));
            }
            if !detail.path.is_empty() {
                message.push_str(&format!("{}: ", detail.path));
            }
            message.push_str(&detail.message);
        }
        Err(Failure::new(message))
    }

    /// An answer's JSON as it came (`-o json`) or as YAML (`-o yaml`).
    fn print_json(&self, reply: &Reply) {
        match serde_json::from_slice::<serde_json::Value>(&reply.body) {
            Ok(value) if self.output == Output::Yaml => self.emit(&value),
            _ => println!("{}", reply.text().trim_end()),
        }
    }

    /// A value as JSON or YAML, by `-o`.
    pub(super) fn emit(&self, value: &serde_json::Value) {
        match self.output {
            Output::Yaml => print!("{}", serde_yaml::to_string(value).unwrap_or_default()),
            _ => println!("{value}"),
        }
    }

    async fn status(&self) -> Result<(), Failure> {
        let ready = self
            .client
            .send(Method::GET, "/readyz", &[], None, TIMEOUT)
            .await?;
        let is_ready = ready.status == StatusCode::OK;
        // Lines after the first say how the policy store is and what was refused.
        let details: Vec<String> = ready.text().lines().skip(1).map(str::to_owned).collect();
        let mut history = None;
        let mut connections = None;
        if self.has_token {
            let reply = self.get("/policy/history", "application/json").await?;
            history = Some(parse::<History>(&reply)?);
            let reply = self.get("/connections", "application/json").await?;
            connections = Some(parse::<Connections>(&reply)?.connections.len());
        }
        match self.output {
            Output::Json | Output::Yaml => self.emit(&serde_json::json!({
                    "admin": self.client.authority(),
                    "ready": is_ready,
                    "version": history.as_ref().map(|h| h.current),
                    "connections": connections,
                    "details": details,
            })),
            Output::Table => print!(
                "{}",
                show::status(
                    self.client.authority(),
                    is_ready,
                    history.as_ref(),
                    connections,
                    &details,
                )
            ),
        }
        if is_ready {
            Ok(())
        } else {
            Err(Failure::new(format!(
                "{}: not ready ({}): draining or no policy loaded",
                self.client.authority(),
                ready.status.as_u16()
            )))
        }
    }

    async fn policy_get(&self) -> Result<(), Failure> {
        let accept = match self.output {
            Output::Json => "application/json",
            Output::Table | Output::Yaml => "application/yaml",
        };
        let reply = self.get("/policy", accept).await?;
        let text = reply.text();
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
        Ok(())
    }

    async fn apply(
        &self,
        file: &Path,
        if_match: Option<u64>,
        dry_run: bool,
    ) -> Result<(), Failure> {
        let body = read_file(file)?;
        self.write(Method::PUT, "/policy", Some(body), if_match, dry_run)
            .await
    }

    async fn rule_set(&self, file: &Path, if_match: Option<u64>) -> Result<(), Failure> {
        let (bytes, media) = read_file(file)?;
        let value: serde_yaml::Value = serde_yaml::from_slice(&bytes)
            .map_err(|e| Failure::new(format!("{}: not YAML or JSON: {e}", file.display())))?;
        let name = value
            .get("name")
            .and_then(serde_yaml::Value::as_str)
            .ok_or_else(|| {
                Failure::new(format!(
                    "{}: the rule has no name; add `name: ...`",
                    file.display()
                ))
            })?
            .to_owned();
        let path = format!("/rules/{}", encode(&name));
        self.write(Method::PUT, &path, Some((bytes, media)), if_match, false)
            .await
    }

    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
        if_match: Option<u64>,
        dry_run: bool,
    ) -> Result<(), Failure> {
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        if let Some(version) = if_match {
            headers.push((IF_MATCH, format!("\"{version}\"")));
        }
        let path = if dry_run {
            format!("{path}?dry_run=true")
        } else {
            path.to_owned()
        };
        let reply = self
            .client
            .send(method, &path, &headers, body, TIMEOUT)
            .await?;
        let reply = self.judge(reply)?;
        match self.output {
            Output::Json | Output::Yaml => self.print_json(&reply),
            Output::Table => print!("{}", show::applied(&parse::<Applied>(&reply)?)),
        }
        Ok(())
    }

    async fn history(&self) -> Result<(), Failure> {
        let reply = self.get("/policy/history", "application/json").await?;
        match self.output {
            Output::Json | Output::Yaml => self.print_json(&reply),
            Output::Table => print!("{}", show::history(&parse::<History>(&reply)?)),
        }
        Ok(())
    }

    async fn check(
        &self,
        destination: &str,
        source: Option<String>,
        listener: Option<String>,
        resolve: bool,
    ) -> Result<(), Failure> {
        let (host, port) = split_destination(destination)?;
        let request = CheckRequest {
            host,
            port,
            source,
            listener,
            resolve,
        };
        let body = serde_json::to_vec(&request).map_err(|e| Failure::new(e.to_string()))?;
        let reply = self
            .client
            .send(
                Method::POST,
                "/policy/check",
                &[],
                Some((body, "application/json")),
                TIMEOUT,
            )
            .await?;
        let reply = self.judge(reply)?;
        let answer: CheckAnswer = parse(&reply)?;
        match self.output {
            Output::Json | Output::Yaml => self.print_json(&reply),
            Output::Table => print!("{}", show::check(&answer)),
        }
        if answer.decision == "allow" {
            Ok(())
        } else {
            Err(Failure {
                message: String::new(),
                code: DENIED,
            })
        }
    }

    async fn connections(&self) -> Result<(), Failure> {
        let reply = self.get("/connections", "application/json").await?;
        match self.output {
            Output::Json | Output::Yaml => self.print_json(&reply),
            Output::Table => print!("{}", show::connections(&parse::<Connections>(&reply)?)),
        }
        Ok(())
    }

    async fn logs(&self, filter: Option<String>) -> Result<(), Failure> {
        let path = match &filter {
            Some(f) => format!("/audit/tail?filter={}", encode(f)),
            None => "/audit/tail".to_owned(),
        };
        let response = self.client.stream(&path).await?;
        if !response.status().is_success() {
            self.judge(self.client.read(response).await?)?;
            return Ok(());
        }
        let mut body = response.into_body();
        let mut pending = Vec::new();
        let mut stdout = std::io::stdout();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failure::new(format!("the audit tail broke: {e}")))?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.starts_with(b"# egress-gateway:") {
                    let note = String::from_utf8_lossy(&line[17..]).trim().to_owned();
                    return Err(Failure::new(format!(
                        "{note}; reading slower than the gateway writes? use --filter"
                    )));
                }
                let written = stdout.write_all(&line).and_then(|()| stdout.flush());
                if written.is_err() {
                    // The reader of our output has gone (e.g. `| head`): done.
                    return Ok(());
                }
            }
        }
        Err(Failure::new(
            "the gateway ended the audit tail (shutting down?)",
        ))
    }

    async fn drain(&self) -> Result<(), Failure> {
        let reply = self
            .client
            .send(Method::POST, "/drain", &[], None, DRAIN_TIMEOUT)
            .await?;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            self.judge_ref(&reply)?;
        }
        let report: DrainReport = parse(&reply)?;
        match self.output {
            Output::Json | Output::Yaml => self.print_json(&reply),
            Output::Table => print!("{}", show::drain(&report)),
        }
        if report.drained {
            Ok(())
        } else {
            Err(Failure::new(format!(
                "the drain timeout passed with {} connections still open",
                report.in_flight
            )))
        }
    }

    fn judge_ref(&self, reply: &Reply) -> Result<(), Failure> {
        if reply.status.is_success() {
            return Ok(());
        }
        self.judge(Reply {
            status: reply.status,
            headers: reply.headers.clone(),
            body: reply.body.clone(),
        })
        .map(|_| ())
    }
}
