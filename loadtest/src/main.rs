//! `egress-loadtest`: parse flags, pin the process when asked (before the runtime makes
//! its threads), run the subcommand, print.

mod cli;

use anyhow::Context as _;
use clap::Parser;

use cli::{Cli, CompareArgs, ConvergeArgs, IdleArgs, RunArgs, UpstreamArgs};
use egress_loadtest::{compare, converge, idle, run, targets::StartEnv, upstream};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut proxy_cpus = None;
    let mut generator_cpus = None;
    match &cli {
        Cli::Run(args) => {
            generator_cpus = args
                .cpus
                .as_deref()
                .map(cli::check_cpu_list)
                .transpose()?
                .map(str::to_owned)
        }
        Cli::Compare(args) if !args.no_pin => {
            let (p, g) = cli::split_cpus(&args.cpus)?;
            proxy_cpus = Some(p);
            generator_cpus = Some(g);
        }
        _ => {}
    }
    if let Some(cpus) = &generator_cpus {
        cli::pin_self(cpus)?;
    }
    // Worker threads follow the CPUs this process may use (one when pinned to one).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli {
            Cli::Upstream(args) => serve_upstream(args).await,
            Cli::Run(args) => run_one(args).await,
            Cli::Compare(args) => compare_all(args, proxy_cpus, generator_cpus).await,
            Cli::Idle(args) => idle_memory(args).await,
            Cli::Converge(args) => fleet_convergence(args).await,
        }
    })
}

async fn serve_upstream(args: UpstreamArgs) -> anyhow::Result<()> {
    let stubs = upstream::Upstreams::start(upstream::UpstreamConfig {
        body_bytes: args.body_bytes,
        http: args.http,
        tls: args.tls,
        echo: args.echo,
        sink: args.sink,
    })
    .await?;
    if let Some(path) = &args.ca_out {
        std::fs::write(path, &stubs.ca_pem).with_context(|| format!("write {}", path.display()))?;
    }
    println!(
        "stub upstreams: http+h2c {}  tls {}  echo {}  sink {}  (body {} bytes; Ctrl-C stops)",
        stubs.http, stubs.tls, stubs.echo, stubs.sink, args.body_bytes
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn run_one(args: RunArgs) -> anyhow::Result<()> {
    let mut plan = run::RunPlan {
        label: if args.direct {
            format!("direct {}", args.target)
        } else {
            args.target.to_string()
        },
        workload: args.workload.workload(args.connect_port),
        target: args.target,
        direct: args.direct,
        connections: args.load.connections,
        rate: args.load.rate,
        duration: args.load.duration,
        max_requests: None,
        timeout: args.load.timeout,
        progress: false,
    };
    plan.validate()?;
    if !args.load.warmup.is_zero() {
        plan.duration = args.load.warmup;
        run::execute(&plan).await?;
        plan.duration = args.load.duration;
    }
    plan.max_requests = args.requests;
    plan.progress = !args.quiet;
    let report = run::execute(&plan).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

async fn compare_all(
    args: CompareArgs,
    proxy_cpus: Option<String>,
    generator_cpus: Option<String>,
) -> anyhow::Result<()> {
    let plan = compare::ComparePlan {
        workload: args.workload.workload(0),
        targets: args.targets,
        connections: args.load.connections,
        rate: args.load.rate,
        duration: args.load.duration,
        warmup: args.load.warmup,
        repetitions: args.repetitions.max(1),
        timeout: args.load.timeout,
        env: StartEnv {
            gateway_bin: args.gateway,
            proxy_cpus,
            policy_rules: args.policy_rules,
        },
        generator_cpus,
        keep_logs: args.keep_logs,
        reload_every: args.reload_every,
    };
    let comparison = compare::compare(&plan).await?;
    let out = args.out.unwrap_or_else(|| {
        let stamp = comparison.machine.date.replace([':', '-'], "");
        let stamp = stamp.split('.').next().unwrap_or_default().to_owned();
        format!(
            "target/loadtest-results/{}-{stamp}",
            args.workload.scenario.name()
        )
        .into()
    });
    let files = comparison.write(&out)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", comparison.markdown());
    }
    for file in files {
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}

async fn idle_memory(args: IdleArgs) -> anyhow::Result<()> {
    let env = StartEnv {
        gateway_bin: args.gateway,
        proxy_cpus: None,
        policy_rules: 0,
    };
    let report = idle::measure(args.tunnels, args.settle, env).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    Ok(())
}

async fn fleet_convergence(args: ConvergeArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for &rules in &args.rules {
        for &replicas in &args.replicas {
            if replicas == 0 || replicas > 200 {
                anyhow::bail!("--replicas: {replicas} is not between 1 and 200");
            }
            let plan = converge::Plan {
                replicas,
                changes: args.changes,
                rules,
                gateway: args.gateway.clone(),
            };
            let report = converge::measure(&plan).await?;
            if !args.json {
                print!("{}", report.human());
            }
            reports.push(report);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}
