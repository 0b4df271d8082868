//! The command line that starts each proxy: its configuration rendered into the
//! target's directory, and the binary with its flags.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{GatewayPolicy, Running, StartEnv, TargetError, TargetKind};
use crate::peers::{self, GatewayListeners};
use crate::policy_load;
use crate::scenario::{Listener, Scenario, ALLOWED_HOST, DENIED_HOST};

impl Running {
    pub(super) fn command(
        &mut self,
        scenario: Scenario,
        env: &StartEnv,
    ) -> Result<Command, TargetError> {
        let dir = self.dir.path();
        let dir_text = dir.display().to_string();
        let values = peers::values(&self.addresses, &dir_text);
        let write = |name: &str, text: &str| -> Result<PathBuf, TargetError> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| TargetError::Write {
                path: path.display().to_string(),
                source,
            })?;
            Ok(path)
        };
        let command = match self.kind {
            TargetKind::Direct => Command::new("true"),
            TargetKind::Gateway => {
                if !env.gateway_bin.is_file() {
                    return Err(TargetError::Missing {
                        what: env.gateway_bin.display().to_string(),
                        hint: "build it with `cargo build --release -p egress-gateway` or pass --gateway PATH",
                    });
                }
                let policies = dir.join("policies");
                std::fs::create_dir_all(&policies).map_err(|source| TargetError::Write {
                    path: policies.display().to_string(),
                    source,
                })?;
                let listener = scenario.listener();
                let listeners = GatewayListeners {
                    http: matches!(listener, Listener::Http | Listener::H2c),
                    tls: listener == Listener::Tls,
                    connect: listener == Listener::Connect,
                };
                let mut policy = peers::gateway_policy(&self.addresses, listeners);
                let names = listeners.names();
                policy.push_str(&policy_load::filler_rules(env.policy_rules, &names));
                let path = write("policies/policy.yaml", &policy)?;
                let admin = super::free_port();
                self.policy = Some(GatewayPolicy {
                    path,
                    text: policy,
                    listeners: names,
                    admin,
                });
                let mut c = Command::new(&env.gateway_bin);
                c.arg("--policies")
                    .arg(&policies)
                    .arg("--admin-address")
                    .arg(admin.to_string())
                    .args(["--stats-address", "127.0.0.1:0"])
                    .arg("--audit-path")
                    .arg(dir.join("audit.log"))
                    .args([
                        "--dns-server",
                        "127.0.0.1:9",
                        "--drain-timeout",
                        "1s",
                        "--drain-delay",
                        "0s",
                    ])
                    .env("RUST_LOG", "warn");
                c
            }
            TargetKind::Nginx => {
                let conf = write("nginx.conf", &peers::render(peers::NGINX, &values)?)?;
                let mut c = Command::new(peer_binary("nginx")?);
                c.arg("-p")
                    .arg(dir)
                    .arg("-c")
                    .arg(conf)
                    .arg("-e")
                    .arg(dir.join("error.log"));
                c
            }
            TargetKind::Haproxy => {
                let conf = write("haproxy.cfg", &peers::render(peers::HAPROXY, &values)?)?;
                let mut c = Command::new(peer_binary("haproxy")?);
                c.arg("-f").arg(conf).arg("-db");
                c
            }
            TargetKind::Squid => {
                let conf = write("squid.conf", &peers::render(peers::SQUID, &values)?)?;
                write(
                    "hosts",
                    &format!("127.0.0.1 {} {}\n", ALLOWED_HOST, DENIED_HOST),
                )?;
                // Squid drops root for its `proxy` user, which must write its logs here.
                allow_everyone(dir);
                let mut c = Command::new(peer_binary("squid")?);
                c.arg("-N").arg("-f").arg(conf);
                c
            }
        };
        Ok(command)
    }
}

fn peer_binary(name: &str) -> Result<PathBuf, TargetError> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(TargetError::Missing {
        what: name.to_owned(),
        hint: "install the peers with loadtest/peers/install.sh",
    })
}

fn allow_everyone(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
}
