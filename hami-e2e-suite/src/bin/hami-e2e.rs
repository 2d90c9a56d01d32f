//! `hami-e2e`: HAMi's end-to-end suite as a command, to validate a HAMi installation on
//! your cluster after an install or an upgrade (`cargo install --path hami-e2e-suite`).
//!
//! ```text
//! hami-e2e run --kubeconfig ~/.kube/config --label-filter smoke   # the suite, same flags as the test binary
//! hami-e2e list                                                   # what would run
//! hami-e2e sweep --kubeconfig ~/.kube/config                      # delete namespaces crashed runs left
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hami_e2e_k8s::{Cluster, ClusterArgs, ClusterSource, SweepOptions};
use hami_e2e_suite::{Suite, SuiteArgs};

/// HAMi's end-to-end tests against a cluster (the one of --kubeconfig / KUBECONFIG, else a
/// local one the command starts).
#[derive(Debug, Parser)]
#[command(name = "hami-e2e", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the suite (filters, labels, reports: the flags of the test binary).
    Run(SuiteArgs),
    /// List the scenarios, as `--list` does.
    List(SuiteArgs),
    /// Delete the namespaces earlier runs left behind (hami-e2e's labels only).
    Sweep {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => Suite::new()
            .verdict(true)
            .runner(&args)
            .main_with_args(&args.core),
        Command::List(mut args) => {
            args.core.list = true;
            Suite::new().runner(&args).main_with_args(&args.core)
        }
        Command::Sweep { cluster } => sweep(&cluster),
    }
}

fn sweep(args: &ClusterArgs) -> ExitCode {
    let source = ClusterSource::from_args(args);
    if matches!(source, ClusterSource::Local(_)) {
        eprintln!(
            "error: `hami-e2e sweep` needs a cluster: --kubeconfig PATH or KUBECONFIG (a new local cluster has nothing to sweep)"
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = SweepOptions::default().older_than(args.sweep_older_than);
    let result = runtime.block_on(async {
        let cluster = Cluster::connect(source).await?;
        hami_e2e_k8s::sweep(&cluster.client(), &options).await
    });
    match result {
        Ok(swept) => {
            for name in &swept {
                println!("deleted namespace {name}");
            }
            println!("swept {} namespace(s)", swept.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", hami_e2e_core::Failure::from(e).report());
            ExitCode::FAILURE
        }
    }
}
